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
from typing import Any

import numpy as np
import torch
from scipy.special import log_softmax
from sklearn.exceptions import ConvergenceWarning
from torch import nn

from xlprobe.errors import DataError
from xlprobe.probes.arrays import check_float, check_int
from xlprobe.probes.estimator import TorchProbe

__all__ = ["LinearProbe"]


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
    tol : float, default 1e-6
        Stop when the largest gradient entry of the mean loss falls below ``tol``.
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
                 max_iter: int = 500, tol: float = 1e-6, random_state: int | None = None,
                 device: str = "cpu") -> None:
        self.C = C
        self.standardize = standardize
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.device = device

    def fit(self, X: Any, y: Any, groups: Any = None) -> LinearProbe:
        """Fit on X [n, d] and labels y [n] (``groups`` is accepted for a common signature and ignored)."""
        self._check_common()
        C = check_float("C", self.C, 0.0, math.inf, open_low=True, open_high=True)
        max_iter = check_int("max_iter", self.max_iter, 1)
        tol = check_float("tol", self.tol, 0.0, math.inf, open_low=True)
        Z, codes = self._fit_input(X, y)
        w_np = self._sample_weights(codes)
        n, d = Z.shape
        K = len(self.classes_)
        out = 1 if K == 2 else K  # scikit-learn's binary model: one weight vector, sigmoid
        Zt = torch.from_numpy(Z).to(self.device)
        w = torch.from_numpy(w_np).to(self.device)
        yt = torch.from_numpy(codes).to(self.device)
        yf = yt.to(torch.float32)
        W = torch.zeros(d, out, device=self.device, requires_grad=True)
        b = torch.zeros(out, device=self.device, requires_grad=True)
        lam = 1.0 / (C * n)  # scikit-learn's objective divided by C * n
        opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-10,
                                history_size=20, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            logits = Zt @ W + b
            if out == 1:
                ce = nn.functional.binary_cross_entropy_with_logits(logits[:, 0], yf, reduction="none")
            else:
                ce = nn.functional.cross_entropy(logits, yt, reduction="none")
            # summed in float64: a float32 total rounds small late decreases to zero, and L-BFGS stops
            # on 'no change' with gradients ~20x above tol (logits 1e-3 off scikit-learn's optimum)
            loss = (w * ce).double().sum() / n + 0.5 * lam * W.double().square().sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)  # returns the loss of the first closure call, not the final one
        state = opt.state[opt._params[0]]
        self.n_iter_ = int(state.get("n_iter", 0))
        if self.n_iter_ >= max_iter:
            warnings.warn(f"LinearProbe: L-BFGS reached max_iter={max_iter} before the gradient fell below "
                          f"tol={tol:g}; increase max_iter or lower C", ConvergenceWarning, stacklevel=2)
        self.coef_ = W.detach().T.cpu().numpy().astype(np.float64)
        self.intercept_ = b.detach().cpu().numpy().astype(np.float64)
        if not (np.isfinite(self.coef_).all() and np.isfinite(self.intercept_).all()):
            raise DataError("LinearProbe diverged (non-finite weights)",
                            hint="check X for extreme values, or use standardize=True")
        self.loss_ = self._objective(Z.astype(np.float64), codes, w_np.astype(np.float64), C)
        return self

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


