"""The linear probe as a scikit-learn classifier (``fit`` / ``predict`` / ``predict_proba`` / ``score``).

* :class:`LinearProbe`: L2-penalised logistic regression fitted to convergence by full-batch L-BFGS
  (strong-Wolfe line search) in float32 (the objective summed in float64). It is scikit-learn's
  ``LogisticRegression`` model for every number of classes: one weight vector and a sigmoid for two
  classes, multinomial (one weight vector per class) for three or more, objective
  ``C * sum_i w_i CE_i + ||coef||^2 / 2``. So ``C`` means what it means there and the two reach the same
  optimum at the same setting. Shared parts: :mod:`xlprobe.probes.estimator`.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from scipy.special import log_softmax
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from torch import nn

from xlprobe.errors import ConfigError, DataError
from xlprobe.probes.arrays import check_float, check_int
from xlprobe.probes.estimator import TorchProbe

__all__ = ["LinearProbe", "fit_many", "minimize_logistic", "logistic_loss_grad"]


#: L-BFGS memory (pairs kept), as scipy's L-BFGS-B behind scikit-learn's ``lbfgs`` solver.
HISTORY = 10


def logistic_loss_grad(Z: torch.Tensor, codes: torch.Tensor, wn: torch.Tensor, out: int, lam: float,
                       theta: np.ndarray) -> tuple[float, np.ndarray]:
    """Objective ``sum_i wn_i CE_i + lam ||W||^2 / 2`` and its gradient at ``theta`` = [W; b] [d + 1, out].

    Scores and the gradient's one pass over Z run in float32 (``G' Z``: the fast memory order, ~15x
    faster than ``Z' G`` on one CPU core); the total, the penalty and theta are float64 (numpy).
    """
    d = Z.shape[1]
    t32 = torch.from_numpy(theta.astype(np.float32)).to(Z.device)
    S = torch.addmm(t32[d], Z, t32[:d])
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
    W = theta[:d]
    f = float(torch.dot(wn.double(), ce.double())) + 0.5 * lam * float(np.vdot(W, W))
    grad = np.empty_like(theta)
    grad[:d] = (G.T @ Z).T.cpu().numpy()
    grad[:d] += lam * W
    grad[d] = G.sum(0, dtype=torch.float64).cpu().numpy()
    return f, grad


def lbfgs_direction(g: np.ndarray, pairs: list[tuple[np.ndarray, np.ndarray, float]]) -> np.ndarray:
    """-H g by the two-loop recursion over (s, y, 1 / s'y) pairs, oldest first (H0 = s'y / y'y)."""
    if not pairs:
        return -g / max(1.0, float(np.abs(g).sum()))  # first step: at most unit length (as torch's L-BFGS)
    q = g.copy()
    alphas = []
    for s, y, rho in reversed(pairs):
        a = rho * float(np.vdot(s, q))
        q -= a * y
        alphas.append(a)
    s, y, rho = pairs[-1]
    q *= 1.0 / (rho * float(np.vdot(y, y)))
    for (s, y, rho), a in zip(pairs, reversed(alphas)):
        q += (a - rho * float(np.vdot(y, q))) * s
    return -q


def accept_near_noise(f: float, f_new: float, gtp: float, gtp_new: float) -> bool:
    """Hager and Zhang's approximate Wolfe test: the slope along the step fell to under 0.9 of its start in
    size (either sign) and f did not rise beyond its float32 noise (1e-6 relative): the step is good
    though an Armijo test on a noisy f cannot tell."""
    return f_new <= f + 1e-6 * abs(f) and 0.9 * gtp <= gtp_new <= -0.9 * gtp


def minimize_logistic(Z: torch.Tensor, codes: torch.Tensor, w: torch.Tensor, out: int, lam: float, tol: float,
                      max_iter: int, init: np.ndarray | None = None) -> tuple[np.ndarray, int, bool]:
    """L-BFGS (Armijo backtracking) on the per-item objective; (theta [d + 1, out], iterations, converged).

    Stops when the largest gradient entry is at most ``tol`` (scikit-learn's ``lbfgs`` rule, same
    objective scale), after ``max_iter`` iterations, or when no step lowers the float64 objective (the
    float32 scores' noise floor, far below any useful ``tol``).
    """
    n, d = Z.shape
    wn = w / n
    theta = np.zeros((d + 1, out)) if init is None else np.array(init, dtype=np.float64)
    f, g = logistic_loss_grad(Z, codes, wn, out, lam, theta)
    pairs: list[tuple[np.ndarray, np.ndarray, float]] = []
    it = 0
    while np.abs(g).max() > tol and it < max_iter:
        p = lbfgs_direction(g, pairs)
        gtp = float(np.vdot(g, p))
        if gtp >= 0:  # not a descent direction: restart from steepest descent
            pairs.clear()
            p = lbfgs_direction(g, pairs)
            gtp = float(np.vdot(g, p))
        t = 1.0
        for _ in range(40):
            f_new, g_new = logistic_loss_grad(Z, codes, wn, out, lam, theta + t * p)
            if f_new <= f + 1e-4 * t * gtp or accept_near_noise(f, f_new, gtp, float(np.vdot(g_new, p))):
                break
            t *= 0.5 if not math.isfinite(f_new) else min(0.5, max(0.1, -gtp * t / (2 * (f_new - f - gtp * t))))
        else:
            break
        s, y = t * p, g_new - g
        sy = float(np.vdot(s, y))
        if sy > 1e-12 * float(np.vdot(y, y)):
            pairs = [*pairs[-(HISTORY - 1):], (s, y, 1.0 / sy)]
        theta, f, g = theta + s, f_new, g_new
        it += 1
    return theta, it, bool(np.abs(g).max() <= tol)

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
        Where the fit runs (predictions run in float64 on the CPU).

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
        return self._fit(X, y, self._start() if self.warm_start else None)

    def _fit(self, X: Any, y: Any, start: tuple[np.ndarray, np.ndarray] | None) -> LinearProbe:
        """Fit from ``start`` = (classes, [d + 1, out] weights on standardised features); None: zeros."""
        self._check_common()
        C = check_float("C", self.C, 0.0, math.inf, open_low=True, open_high=True)
        max_iter = check_int("max_iter", self.max_iter, 1)
        tol = check_float("tol", self.tol, 0.0, math.inf, open_low=True)
        Z, codes = self._fit_input(X, y)
        w_np = self._sample_weights(codes)
        n, d = Z.shape
        out = 1 if len(self.classes_) == 2 else len(self.classes_)  # scikit-learn's binary model: a sigmoid
        init = None
        if start is not None and start[1].shape == (d + 1, out) and np.array_equal(start[0], self.classes_):
            init = start[1]
        theta, self.n_iter_, converged = minimize_logistic(
            torch.from_numpy(Z).to(self.device), torch.from_numpy(codes).to(self.device),
            torch.from_numpy(w_np).to(self.device), out, 1.0 / (C * n), tol, max_iter, init)
        if not converged and self.n_iter_ >= max_iter:
            warnings.warn(f"LinearProbe: L-BFGS reached max_iter={max_iter} before the gradient fell below "
                          f"tol={tol:g}; increase max_iter or lower C", ConvergenceWarning, stacklevel=2)
        self.coef_ = np.ascontiguousarray(theta[:d].T)
        self.intercept_ = theta[d].copy()
        if not (np.isfinite(self.coef_).all() and np.isfinite(self.intercept_).all()):
            raise DataError("LinearProbe diverged (non-finite weights)",
                            hint="check X for extreme values, or use standardize=True")
        self.loss_ = self._objective(Z.astype(np.float64), codes, w_np.astype(np.float64), C)
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
    """Fit a clone of ``probe`` on each (X, y) in turn, each started from the previous fit's weights.

    For problems that share most of their data (the folds of a cross-validation, control labellings on
    the same items): a fit started from a neighbour's optimum (on standardised features) needs fewer
    L-BFGS steps than one from zeros. A start whose classes or width differ is dropped (zeros). Each
    result reaches its own optimum to ``tol``, as a fit from zeros does.
    """
    out: list[LinearProbe] = []
    for X, y in problems:
        out.append(clone(probe)._fit(X, y, out[-1]._start() if out else None))
    return out
