"""The linear probe as a scikit-learn classifier (``fit`` / ``predict`` / ``predict_proba`` / ``score``).

* :class:`LinearProbe`: L2-penalised logistic regression fitted by full-batch L-BFGS (Armijo
  backtracking, or Hager and Zhang's approximate Wolfe test near the float32 noise floor) with an
  analytic gradient: scores and gradient in float32, the objective, weights and L-BFGS algebra in float64.
  It stops at scikit-learn's ``lbfgs`` rule (largest gradient entry <= ``tol``, default 1e-4). It is
  scikit-learn's ``LogisticRegression`` model for every number of classes: one weight vector and a
  sigmoid for two classes, multinomial (one weight vector per class) for three or more, objective
  ``C * sum_i w_i CE_i + ||coef||^2 / 2``. So ``C`` means what it means there and the two reach the same
  optimum at the same setting. Shared parts: :mod:`xlprobe.probes.estimator`.
* :func:`fit_many`: many fits (folds, labellings, layers) with the small ones batched in one L-BFGS
  run (:func:`minimize_logistic` takes B problems at once, each with its own history and line search).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Any, NamedTuple

import numpy as np
import torch
from scipy.special import log_softmax
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from torch import nn

from xlprobe.errors import ConfigError, DataError
from xlprobe.probes.arrays import check_float, check_int
from xlprobe.probes.estimator import TorchProbe

__all__ = ["LinearProbe", "fit_many", "solve_batch", "minimize_logistic", "logistic_loss_grad", "BATCH_MAX"]


#: Largest problem (rows x features) :func:`fit_many` batches with others; a larger one runs alone, its
#: matrix products long enough that a batch saves nothing (measured: 6 MiniLM layers of 6704 x 384
#: took 1.6x their one-by-one time batched, folds of 384 x 128 0.7x).
BATCH_MAX = 1 << 20

#: L-BFGS memory (pairs kept), as scipy's L-BFGS-B behind scikit-learn's ``lbfgs`` solver.
HISTORY = 10


def logistic_loss_grad(Z: torch.Tensor, codes: torch.Tensor, wn: torch.Tensor, out: int, lam: np.ndarray,
                       theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Objectives ``sum_i wn_i CE_i + lam ||W||^2 / 2`` [B] and gradients [B, d + 1, out] of B problems.

    Z [B, n, d] float32, codes [B, n], wn [B, n] (padding rows weigh 0), theta = [W; b] [B, d + 1, out].
    Scores and the gradient's pass over Z run in float32, both as [out, n] x [n, d] products: ``W' Z'``
    and ``G' Z`` are 2-4x faster than ``Z W`` and ~15x faster than autograd's ``Z' G`` for a few
    classes on one CPU core. The totals, the penalty and theta are float64 (numpy).
    """
    d = Z.shape[2]
    t32 = torch.from_numpy(theta.astype(np.float32).transpose(0, 2, 1)).to(Z.device)  # [B, out, d + 1]
    S = torch.baddbmm(t32[:, :, d:], t32[:, :, :d], Z.transpose(1, 2))  # scores [B, out, n]: W'Z' is the fast order
    if out == 1:
        s, yf = S[:, 0], codes.to(S.dtype)
        ce = nn.functional.binary_cross_entropy_with_logits(s, yf, reduction="none")
        G = ((torch.sigmoid(s) - yf) * wn)[:, None]
    else:
        logp = torch.log_softmax(S, dim=1)
        ce = -logp.gather(1, codes[:, None])[:, 0]
        G = logp.exp_()
        G.scatter_add_(1, codes[:, None], torch.full_like(G[:, :1], -1.0))
        G.mul_(wn[:, None])
    W = theta[:, :d]
    f = (wn.double() * ce.double()).sum(1).cpu().numpy() + 0.5 * lam * np.einsum("bij,bij->b", W, W)
    grad = np.empty_like(theta)
    grad[:, :d] = torch.bmm(G, Z).transpose(1, 2).cpu().numpy()
    grad[:, :d] += lam[:, None, None] * W
    grad[:, d] = G.sum(2, dtype=torch.float64).cpu().numpy()
    return f, grad


def lbfgs_direction(g: np.ndarray, S: np.ndarray, Y: np.ndarray, rho: np.ndarray, gamma: np.ndarray,
                    pos: int) -> np.ndarray:
    """-H g [B, P] by the two-loop recursion over the ring of pairs S, Y [B, m, P] whose newest slot is
    ``pos - 1`` (rho 0: an empty slot); H0 = gamma I (s'y / y'y of the newest pair; 0: no pair yet)."""
    q = g.copy()
    m = S.shape[1]
    order = [(pos - 1 - j) % m for j in range(m)]  # newest first
    alpha = np.zeros(rho.shape)
    for j in order:
        alpha[:, j] = rho[:, j] * np.vecdot(S[:, j], q)
        q -= alpha[:, j, None] * Y[:, j]
    first = 1.0 / np.maximum(1.0, np.sqrt(np.vecdot(g, g)))  # no pair yet: a step of length at most 1
    q *= np.where(gamma > 0, gamma, first)[:, None]
    for j in reversed(order):
        beta = rho[:, j] * np.vecdot(Y[:, j], q)
        q += (alpha[:, j] - beta)[:, None] * S[:, j]
    return -q


def accept_step(f: np.ndarray, f_new: np.ndarray, gtp: np.ndarray, gtp_new: np.ndarray, t: np.ndarray
                ) -> np.ndarray:
    """Armijo's sufficient decrease, or Hager and Zhang's approximate Wolfe test: the slope along the step
    fell to under 0.9 of its start in size (either sign) and f did not rise beyond its float32 noise
    (1e-6 relative), where an Armijo test on a noisy f cannot tell a good step."""
    armijo = f_new <= f + 1e-4 * t * gtp
    approx = (f_new <= f + 1e-6 * np.abs(f)) & (0.9 * gtp <= gtp_new) & (gtp_new <= -0.9 * gtp)
    return armijo | approx


def minimize_logistic(Z: torch.Tensor, codes: torch.Tensor, wn: torch.Tensor, out: int, lam: np.ndarray,
                      tol: float, max_iter: int, init: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """L-BFGS on B problems at once (Z [B, n, d]; codes, wn [B, n]: item weight / n); (theta, iterations, converged).

    Each problem keeps its own history and line search (Armijo backtracking); it stops when its largest
    gradient entry is at most ``tol`` (scikit-learn's ``lbfgs`` rule, same objective scale), after
    ``max_iter`` iterations, or when no step lowers its float64 objective (the float32 scores' noise
    floor, far below any useful ``tol``). Stopped problems leave the batch.
    """
    B, n, d = Z.shape
    P = (d + 1) * out
    theta = np.zeros((B, d + 1, out)) if init is None else np.array(init, dtype=np.float64)
    f, g = logistic_loss_grad(Z, codes, wn, out, lam, theta)
    S, Y, rho = np.zeros((B, HISTORY, P)), np.zeros((B, HISTORY, P)), np.zeros((B, HISTORY))
    gamma, pos = np.zeros(B), 0  # a ring shared by the batch: a skipped update leaves an empty slot
    it = np.zeros(B, dtype=np.int64)
    active = np.abs(g).reshape(B, -1).max(1) > tol
    idx = np.arange(0)
    while active.any():
        if not np.array_equal(idx, np.flatnonzero(active)):  # the batch shrank: keep only running problems
            idx = np.flatnonzero(active)
            sel = torch.from_numpy(idx).to(Z.device)
            Za, ca, wa = Z[sel], codes[sel], wn[sel]
        gi = g[idx].reshape(len(idx), P)
        p = lbfgs_direction(gi, S[idx], Y[idx], rho[idx], gamma[idx], pos)
        gtp = np.vecdot(gi, p)
        lost = gtp >= 0  # not a descent direction: forget the history, steepest descent
        if lost.any():
            rho[idx[lost]], gamma[idx[lost]] = 0.0, 0.0
            p[lost] = -gi[lost] / np.maximum(1.0, np.abs(gi[lost]).sum(1))[:, None]
            gtp[lost] = np.vecdot(gi[lost], p[lost])
        t = np.ones(len(idx))
        f_new, g_new = f[idx].copy(), g[idx].copy()
        pending = np.ones(len(idx), dtype=bool)
        for _ in range(40):
            sub = np.flatnonzero(pending)
            sel = torch.from_numpy(sub).to(Z.device) if len(sub) < len(idx) else slice(None)
            step = (t[sub, None] * p[sub]).reshape(len(sub), d + 1, out)
            fs, gs = logistic_loss_grad(Za[sel], ca[sel], wa[sel], out, lam[idx[sub]], theta[idx[sub]] + step)
            ok = accept_step(f[idx[sub]], fs, gtp[sub], np.vecdot(gs.reshape(len(sub), P), p[sub]), t[sub])
            f_new[sub[ok]], g_new[sub[ok]] = fs[ok], gs[ok]
            pending[sub[ok]] = False
            if not pending.any():
                break
            bad = sub[~ok]
            curv = 2 * (fs[~ok] - f[idx[bad]] - gtp[bad] * t[bad])
            shrink = np.clip(np.where(np.isfinite(curv) & (curv > 0), -gtp[bad] * t[bad] / np.where(curv > 0, curv, 1),
                                      0.5), 0.1, 0.5)
            t[bad] *= shrink
        moved = ~pending
        s_new = (t[:, None] * p)[moved]
        y_new = (g_new - g[idx]).reshape(len(idx), P)[moved]
        sy, yy = np.vecdot(s_new, y_new), np.vecdot(y_new, y_new)
        keep = sy > 1e-12 * yy
        done = idx[moved]
        S[done, pos], Y[done, pos] = s_new, y_new
        rho[done, pos] = np.where(keep, 1.0 / np.where(keep, sy, 1.0), 0.0)
        gamma[done[keep]] = sy[keep] / yy[keep]
        pos = (pos + 1) % HISTORY
        theta[done] += s_new.reshape(-1, d + 1, out)
        f[idx], g[idx] = f_new, g_new
        it[done] += 1
        active[idx] = moved & (np.abs(g[idx]).reshape(len(idx), -1).max(1) > tol) & (it[idx] < max_iter)
    return theta, it, np.abs(g).reshape(B, -1).max(1) <= tol


class Problem(NamedTuple):
    """One prepared fit: standardised features, class codes, item weights and the checked settings."""

    Z: np.ndarray
    codes: np.ndarray
    w: np.ndarray
    out: int
    C: float
    tol: float
    max_iter: int

    @property
    def lam(self) -> float:
        """The per-item L2 strength, 1 / (C n): scikit-learn's objective divided by C n."""
        return 1.0 / (self.C * len(self.codes))

    def tensors(self, device: str, rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Z [1, rows, d], codes and weight / n [1, rows] on ``device``, padded with weight-0 rows to ``rows``."""
        n, d = self.Z.shape
        rows = n if rows is None else rows
        if rows == n:  # no padding: the features as they are (no copy on the CPU)
            return tuple(torch.from_numpy(a[None]).to(device) for a in (self.Z, self.codes, self.w / n))
        Z, codes, wn = np.zeros((rows, d), np.float32), np.zeros(rows, np.int64), np.zeros(rows, np.float32)
        Z[:n], codes[:n], wn[:n] = self.Z, self.codes, self.w / n
        return tuple(torch.from_numpy(a[None]).to(device) for a in (Z, codes, wn))


class LinearProbe(TorchProbe):
    """Logistic regression probe (L2), scikit-learn's ``LogisticRegression`` model, fitted by L-BFGS.

    Two classes: one weight vector and a sigmoid; three or more: multinomial (softmax). For every
    number of classes ``LinearProbe(C=c)`` reaches the optimum of ``LogisticRegression(C=c)`` on the
    standardised features.

    Parameters
    ----------
    C : float, default 1.0
        Inverse L2 strength, as in scikit-learn's ``LogisticRegression`` (smaller: stronger penalty).
    standardize : bool, default True
        Centre and scale features with the training statistics (columns at the float noise floor are
        centred only).
    class_weight : None, "balanced" or dict, default None
        Reweight classes in the loss.
    max_iter : int, default 500
        L-BFGS iterations at most (a ``ConvergenceWarning`` when reached).
    tol : float, default 1e-4
        Stop when the largest gradient entry of the mean loss falls below ``tol``: scikit-learn's
        ``lbfgs`` rule and default (the same objective scale), enough for accuracy (the held-out
        accuracy of the optimum to within scikit-learn's own). Pass ``1e-6`` where the loss itself
        matters (codelengths, agreement with the optimum to ~1e-4 in log probability).
    warm_start : bool, default False
        Start ``fit`` from the weights of the previous fit (as ``LogisticRegression(warm_start=True)``)
        when it had the same classes and width; zeros otherwise. :func:`fit_many` does this across
        related problems.
    random_state : int or None, default None
        Unused by the (convex, zero-initialised) fit; kept so every probe takes one.
    device : str, default "cpu"
        Where the fit runs (``"cuda"``, ``"cuda:1"``, ``"mps"``); predictions run in float64 on the CPU.
        ``X`` (and ``y``) may be torch tensors on any device: they are read once onto the host for the
        checks and standardisation, and the fit then runs on ``device``; the result equals the numpy fit.

    Attributes
    ----------
    classes_ : ndarray [K]
    n_features_in_ : int
    mean_, scale_ : ndarray [d]
        The standardisation (zeros and ones when ``standardize=False``).
    coef_ : ndarray [1, d] for two classes, [K, d] otherwise
        Weights on the standardised features, as scikit-learn's ``coef_``.
    intercept_ : ndarray [1] or [K]
    n_iter_ : int
        L-BFGS iterations run.
    loss_ : float
        The training objective at the returned weights, per item:
        ``mean_i w_i CE_i + ||coef_||^2 / (2 C n)`` (scikit-learn's objective divided by ``C * n``).

    See Also
    --------
    MLPProbe : a one-hidden-layer probe with the same interface.
    sklearn.linear_model.LogisticRegression : the same model.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0.0, 1.0], [1.0, 0.0], [0.1, 0.9], [0.9, 0.2]])
    >>> LinearProbe(C=10.0).fit(X, ["a", "b", "a", "b"]).predict([[0.0, 0.8]]).tolist()
    ['a']
    """

    def __init__(self, C: float = 1.0, *, standardize: bool = True, class_weight: Any = None,
                 max_iter: int = 500, tol: float = 1e-4, warm_start: bool = False,
                 random_state: int | None = None, device: str = "cpu") -> None:
        self.C = C
        self.standardize = standardize
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.tol = tol
        self.warm_start = warm_start
        self.random_state = random_state
        self.device = device

    def fit(self, X: Any, y: Any, groups: Any = None) -> LinearProbe:
        """Fit on X [n, d] and labels y [n] (``groups`` is accepted for a common signature and ignored)."""
        if not isinstance(self.warm_start, bool):
            raise ConfigError(f"warm_start must be True or False; got {self.warm_start!r}",
                              hint="warm_start=True starts from the previous fit's weights")
        start = self._start() if self.warm_start else None
        prep = self._prepare(X, y)
        init = None
        if start is not None and start[1].shape == (prep.Z.shape[1] + 1, prep.out) and \
                np.array_equal(start[0], self.classes_):
            init = start[1][None]
        theta, it, conv = minimize_logistic(*prep.tensors(self.device), prep.out, np.array([prep.lam]), prep.tol,
                                            prep.max_iter, init)
        return self._finish(prep, theta[0], int(it[0]), bool(conv[0]))

    def _prepare(self, X: Any, y: Any) -> Problem:
        """Checked settings, standardised float32 features, class codes and item weights (sets classes_ ...)."""
        self._check_common()
        C = check_float("C", self.C, 0.0, math.inf, open_low=True, open_high=True)
        max_iter = check_int("max_iter", self.max_iter, 1)
        tol = check_float("tol", self.tol, 0.0, math.inf, open_low=True)
        Z, codes = self._fit_input(X, y)
        out = 1 if len(self.classes_) == 2 else len(self.classes_)  # scikit-learn's binary model: a sigmoid
        return Problem(Z, codes, self._sample_weights(codes), out, C, tol, max_iter)

    def _finish(self, prep: Problem, theta: np.ndarray, n_iter: int, converged: bool) -> LinearProbe:
        """Set coef_, intercept_, n_iter_ and loss_ from the solver's [d + 1, out] weights."""
        d = prep.Z.shape[1]
        self.n_iter_ = n_iter
        if not converged and n_iter >= prep.max_iter:
            warnings.warn(f"LinearProbe: L-BFGS reached max_iter={prep.max_iter} before the gradient fell below "
                          f"tol={prep.tol:g}; increase max_iter or lower C", ConvergenceWarning, stacklevel=3)
        self.coef_ = np.ascontiguousarray(theta[:d].T)
        self.intercept_ = theta[d].copy()
        if not (np.isfinite(self.coef_).all() and np.isfinite(self.intercept_).all()):
            raise DataError("LinearProbe diverged (non-finite weights)",
                            hint="check X for extreme values, or use standardize=True")
        self.loss_ = self._objective(prep.Z.astype(np.float64), prep.codes, prep.w.astype(np.float64), prep.C)
        return self

    def _start(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(classes, fitted weights as a [d + 1, out] float64 start), or None before a fit."""
        if not hasattr(self, "coef_"):
            return None
        return self.classes_, np.vstack([self.coef_.T, self.intercept_[None, :]]).astype(np.float64)

    def _objective(self, Z: np.ndarray, codes: np.ndarray, w: np.ndarray, C: float) -> float:
        """The per-item training objective at ``coef_`` / ``intercept_``, in float64."""
        s = self._scores(Z)
        if s.ndim == 1:
            ce = np.logaddexp(0.0, np.where(codes == 1, -s, s))
        else:
            ce = -log_softmax(s, axis=1)[np.arange(codes.size), codes]
        n = codes.size
        return float((w * ce).sum() / n + (self.coef_ ** 2).sum() / (2.0 * C * n))

    def _scores(self, Z: np.ndarray) -> np.ndarray:
        s = Z @ self.coef_.T + self.intercept_
        return s[:, 0] if s.shape[1] == 1 else s



def fit_many(probe: LinearProbe, problems: Iterable[tuple[Any, Any]]) -> list[LinearProbe]:
    """Fit a clone of ``probe`` on each (X, y): small problems of the same width and classes in one batched L-BFGS.

    For many small related fits (the folds of a cross-validation, control labellings, layers): one
    solver loop serves them all, so Python's per-step cost is paid once per step rather than once per
    problem (rows padded with weight 0 to the longest problem). Problems above :data:`BATCH_MAX`
    (rows x features) are fitted one by one. Each result is what ``fit`` gives: its
    own optimum to ``tol``, from zeros, with its own standardisation, ``n_iter_`` and ``loss_``.
    """
    ests: list[LinearProbe] = []
    preps: dict[int, Problem] = {}
    groups: dict[tuple, list[int]] = {}
    for i, (X, y) in enumerate(problems):
        est = clone(probe)
        ests.append(est)
        prep = est._prepare(X, y)
        if prep.Z.size > BATCH_MAX:  # large: solved now, alone (its features freed before the next one)
            solve_batch([est], [prep])
        else:
            preps[i] = prep
            groups.setdefault((prep.Z.shape[1], prep.out, tuple(est.classes_.tolist())), []).append(i)
    for members in groups.values():
        solve_batch([ests[i] for i in members], [preps[i] for i in members])
    return ests


def solve_batch(ests: list[LinearProbe], preps: list[Problem]) -> None:
    """One L-BFGS run for prepared problems of the same width and classes; finishes each estimator."""
    rows = max(len(p.codes) for p in preps)
    parts = [p.tensors(ests[0].device, rows) for p in preps]
    Z, codes, wn = (torch.cat([pt[j] for pt in parts]) if len(parts) > 1 else parts[0][j] for j in range(3))
    p0 = preps[0]
    theta, it, conv = minimize_logistic(Z, codes, wn, p0.out, np.array([p.lam for p in preps]), p0.tol, p0.max_iter)
    for b, (est, prep) in enumerate(zip(ests, preps)):
        est._finish(prep, theta[b], int(it[b]), bool(conv[b]))
