"""Linear and MLP probes as scikit-learn classifiers (``fit`` / ``predict`` / ``predict_proba`` / ``score``).

Both are torch models behind the estimator contract: parameters in ``__init__`` and stored as given,
learned state ending in ``_``, so ``sklearn.base.clone``, ``Pipeline`` and ``cross_val_score`` work.

* :class:`LinearProbe`: multinomial logistic regression with an L2 penalty, fitted to convergence by
  full-batch L-BFGS (strong-Wolfe line search) in float32. ``C`` means what it means in scikit-learn's
  ``LogisticRegression`` (objective ``C * sum_i w_i CE_i + ||W||^2 / 2``), so the two reach the same
  optimum and can be compared at the same setting.
* :class:`MLPProbe`: Dropout -> Linear(d, hidden) -> GELU -> Linear(hidden, K), the probe of the
  follow-up study; AdamW (decoupled L2 as ``weight_decay``), minibatches, early stopping on a held-out
  part of the training data (split by group when groups are given), the best epoch's weights kept.

Features are standardised with the training mean and standard deviation by default (probes then compare
layers whose scales differ by orders of magnitude on the same footing). Randomness (initialisation,
dropout, minibatch order, validation split) comes from ``seed`` alone; the global torch RNG is left
as it was.
"""
from __future__ import annotations

import copy
import math
import warnings
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from torch import nn

from xlprobe.errors import ConfigError, DataError
from xlprobe.probes.arrays import as_rep, check_float, check_int

__all__ = ["LinearProbe", "MLPProbe"]


def _not_fitted(est: Any) -> None:
    """Raise ProbeNotFittedError (a scikit-learn NotFittedError) when ``fit`` has not run."""
    if not hasattr(est, "classes_"):
        from xlprobe.errors import ProbeNotFittedError

        raise ProbeNotFittedError(f"this {type(est).__name__} is not fitted yet",
                                  hint="call fit(X, y) before predict / predict_proba / score")


class _TorchProbe(ClassifierMixin, BaseEstimator):
    """Shared parts: input checks, standardisation, class weights, prediction."""

    def _check_common(self) -> None:
        if not isinstance(self.standardize, bool):
            raise ConfigError(f"standardize must be True or False; got {self.standardize!r}")
        check_int("seed", self.seed, 0)
        cw = self.class_weight
        if not (cw is None or cw == "balanced" or isinstance(cw, dict)):
            raise ConfigError(f"class_weight must be None, 'balanced' or a dict {{class: weight}}; got {cw!r}")

    def _fit_input(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """Validated float32 features and class codes; sets classes_, n_features_in_, mean_, scale_."""
        A = as_rep(X, "X", dtype=np.float64, min_rows=2)
        a = np.asarray(y)
        if a.ndim != 1 or a.shape[0] != A.shape[0]:
            raise DataError(f"y must be 1-D with one label per row of X ({A.shape[0]}); got shape {a.shape}",
                            hint="pass one label per item, in the order of X")
        if a.dtype == object and any(v is None for v in a):
            raise DataError("y contains None", hint="drop unlabelled items before probing")
        classes, codes = np.unique(a, return_inverse=True)
        if classes.size < 2:
            raise DataError(f"y has {classes.size} distinct label(s) ({classes[:3].tolist()}); a probe needs "
                            "at least 2", hint="a labelling with one class says nothing: check the data selection")
        self.classes_ = classes
        self.n_features_in_ = A.shape[1]
        if self.standardize:
            self.mean_ = A.mean(axis=0)
            sd = A.std(axis=0)
            self.scale_ = np.where(sd > 1e-12 * max(1.0, float(np.abs(self.mean_).max())), sd, 1.0)
        else:
            self.mean_ = np.zeros(A.shape[1])
            self.scale_ = np.ones(A.shape[1])
        return ((A - self.mean_) / self.scale_).astype(np.float32), codes.reshape(-1).astype(np.int64)

    def _sample_weights(self, codes: np.ndarray) -> np.ndarray:
        """Per-item weights from ``class_weight`` (balanced: n / (K * count))."""
        K = len(self.classes_)
        cw = self.class_weight
        if cw is None:
            return np.ones(len(codes), np.float32)
        if cw == "balanced":
            per = len(codes) / (K * np.bincount(codes, minlength=K))
        else:
            unknown = [c for c in cw if c not in set(self.classes_.tolist())]
            if unknown:
                raise ConfigError(f"class_weight names classes not in y: {unknown[:5]}",
                                  hint=f"classes are {self.classes_.tolist()[:10]}")
            per = np.array([float(cw.get(c, 1.0)) for c in self.classes_.tolist()])
        return per[codes].astype(np.float32)

    def _input(self, X: Any) -> torch.Tensor:
        _not_fitted(self)
        A = as_rep(X, "X", dtype=np.float64)
        if A.shape[1] != self.n_features_in_:
            raise DataError(f"X has {A.shape[1]} features; this probe was fitted on {self.n_features_in_}",
                            hint="predict on the same layer (same width) the probe was fitted on")
        return torch.from_numpy(((A - self.mean_) / self.scale_).astype(np.float32)).to(self.device)

    def _logits(self, Z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decision_function(self, X: Any) -> np.ndarray:
        """Class scores (logits) [n, K]."""
        with torch.inference_mode():
            return self._logits(self._input(X)).double().cpu().numpy()

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities [n, K], columns in the order of ``classes_``."""
        with torch.inference_mode():
            return torch.softmax(self._logits(self._input(X)).double(), dim=1).cpu().numpy()

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Log class probabilities [n, K] (what MDL codelengths are made of)."""
        with torch.inference_mode():
            return torch.log_softmax(self._logits(self._input(X)).double(), dim=1).cpu().numpy()

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each row."""
        scores = self.decision_function(X)
        return self.classes_[np.argmax(scores, axis=1)]


class LinearProbe(_TorchProbe):
    """Multinomial logistic regression probe (L2), fitted by full-batch L-BFGS.

    Parameters
    ----------
    C : float, default 1.0
        Inverse L2 strength, as in scikit-learn's ``LogisticRegression`` (smaller: stronger penalty).
    standardize : bool, default True
        Centre and scale features with the training statistics.
    class_weight : None, "balanced" or dict, default None
        Reweight classes in the loss.
    max_iter : int, default 500
        L-BFGS iterations at most (a ``ConvergenceWarning`` when reached).
    tol : float, default 1e-6
        Stop when the largest gradient entry of the mean loss falls below ``tol``.
    seed : int, default 0
        Unused by the (convex, zero-initialised) fit; kept so every probe takes a seed.
    device : str, default "cpu"

    Attributes
    ----------
    classes_, n_features_in_, mean_, scale_, coef_ [K, d] (on standardised features), intercept_ [K],
    n_iter_, loss_ (final training objective per item).
    """

    def __init__(self, C: float = 1.0, *, standardize: bool = True, class_weight: Any = None,
                 max_iter: int = 500, tol: float = 1e-6, seed: int = 0, device: str = "cpu") -> None:
        self.C = C
        self.standardize = standardize
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.tol = tol
        self.seed = seed
        self.device = device

    def fit(self, X: Any, y: Any, groups: Any = None) -> LinearProbe:
        """Fit on X [n, d] and labels y [n] (``groups`` is accepted for a common signature and ignored)."""
        self._check_common()
        C = check_float("C", self.C, 0.0, math.inf, open_low=True, open_high=True)
        max_iter = check_int("max_iter", self.max_iter, 1)
        tol = check_float("tol", self.tol, 0.0, math.inf, open_low=True)
        Z, codes = self._fit_input(X, y)
        w = torch.from_numpy(self._sample_weights(codes)).to(self.device)
        n, d = Z.shape
        K = len(self.classes_)
        Zt = torch.from_numpy(Z).to(self.device)
        yt = torch.from_numpy(codes).to(self.device)
        W = torch.zeros(d, K, device=self.device, requires_grad=True)
        b = torch.zeros(K, device=self.device, requires_grad=True)
        lam = 1.0 / (C * n)  # scikit-learn's objective divided by C * n
        opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-10,
                                history_size=20, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            ce = nn.functional.cross_entropy(Zt @ W + b, yt, reduction="none")
            loss = (w * ce).sum() / n + 0.5 * lam * (W * W).sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            loss = opt.step(closure)
        state = opt.state[opt._params[0]]
        self.n_iter_ = int(state.get("n_iter", 0))
        if self.n_iter_ >= max_iter:
            warnings.warn(f"LinearProbe: L-BFGS reached max_iter={max_iter} before the gradient fell below "
                          f"tol={tol:g}; increase max_iter or lower C", ConvergenceWarning, stacklevel=2)
        self.coef_ = W.detach().T.cpu().numpy().astype(np.float64)
        self.intercept_ = b.detach().cpu().numpy().astype(np.float64)
        self.loss_ = float(loss.detach())
        if not np.isfinite(self.coef_).all():
            raise DataError("LinearProbe diverged (non-finite weights)",
                            hint="check X for extreme values, or use standardize=True")
        self._W, self._b = W.detach(), b.detach()
        return self

    def _logits(self, Z: torch.Tensor) -> torch.Tensor:
        return Z @ self._W + self._b

    def __sklearn_tags__(self):  # noqa: D105
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags


class _MLP(nn.Module):
    def __init__(self, d: int, hidden: int, k: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MLPProbe(_TorchProbe):
    """Dropout -> Linear(d, hidden) -> GELU -> Linear(hidden, K) probe, AdamW, early stopping.

    Parameters
    ----------
    hidden : int, default 256
    dropout : float, default 0.1
        Dropout on the input features.
    lr : float, default 1e-3
    weight_decay : float, default 1e-2
        AdamW's decoupled L2.
    batch_size : int, default 64
    max_epochs : int, default 100
    early_stopping : bool, default True
        Hold out ``validation_fraction`` of the training items (whole groups when ``fit`` gets groups)
        and keep the weights of the epoch with the lowest validation loss; stop after ``patience``
        epochs without improvement.
    validation_fraction : float, default 0.1
    patience : int, default 10
    standardize, class_weight, seed, device : as :class:`LinearProbe`.

    Attributes
    ----------
    classes_, n_features_in_, mean_, scale_, n_epochs_, best_epoch_, best_val_loss_ (NaN without early
    stopping), train_loss_ (per epoch), val_loss_ (per epoch).
    """

    def __init__(self, hidden: int = 256, *, dropout: float = 0.1, lr: float = 1e-3, weight_decay: float = 1e-2,
                 batch_size: int = 64, max_epochs: int = 100, early_stopping: bool = True,
                 validation_fraction: float = 0.1, patience: int = 10, standardize: bool = True,
                 class_weight: Any = None, seed: int = 0, device: str = "cpu") -> None:
        self.hidden = hidden
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.standardize = standardize
        self.class_weight = class_weight
        self.seed = seed
        self.device = device

    def _check(self) -> None:
        self._check_common()
        check_int("hidden", self.hidden, 1)
        check_float("dropout", self.dropout, 0.0, 1.0, open_high=True)
        check_float("lr", self.lr, 0.0, math.inf, open_low=True)
        check_float("weight_decay", self.weight_decay, 0.0, math.inf)
        check_int("batch_size", self.batch_size, 1)
        check_int("max_epochs", self.max_epochs, 1)
        check_int("patience", self.patience, 1)
        check_float("validation_fraction", self.validation_fraction, 0.0, 1.0, open_low=True, open_high=True)
        if not isinstance(self.early_stopping, bool):
            raise ConfigError(f"early_stopping must be True or False; got {self.early_stopping!r}")

    def _split(self, n: int, groups: Any, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Train / validation item indices (whole groups on one side when groups are given)."""
        if groups is None:
            perm = rng.permutation(n)
            k = max(1, int(round(self.validation_fraction * n)))
            return np.sort(perm[k:]), np.sort(perm[:k])
        g = np.asarray(groups)
        if g.ndim != 1 or g.shape[0] != n:
            raise DataError(f"groups must be 1-D with one entry per row of X ({n}); got shape {g.shape}")
        units, inv = np.unique(g, return_inverse=True)
        inv = inv.reshape(-1)
        if units.size < 2:
            raise DataError("early stopping by groups needs at least 2 groups",
                            hint="pass more groups or early_stopping=False")
        order = rng.permutation(units.size)
        k = max(1, int(round(self.validation_fraction * units.size)))
        is_val = np.isin(inv, order[:k])
        return np.flatnonzero(~is_val), np.flatnonzero(is_val)

    def fit(self, X: Any, y: Any, groups: Any = None) -> MLPProbe:
        """Fit on X [n, d] and labels y [n]; ``groups`` (optional) keeps groups whole in the validation split."""
        self._check()
        Z, codes = self._fit_input(X, y)
        weights = self._sample_weights(codes)
        rng = np.random.default_rng(self.seed)
        n = len(codes)
        if self.early_stopping:
            tr, va = self._split(n, groups, rng)
        else:
            tr, va = np.arange(n), np.empty(0, np.int64)
        dev = self.device
        Zt, yt, wt = (torch.from_numpy(a).to(dev) for a in (Z, codes, weights))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            net = _MLP(Z.shape[1], self.hidden, len(self.classes_), self.dropout).to(dev)
            opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            best = (math.inf, -1, None)
            self.train_loss_, self.val_loss_ = [], []
            bad = 0
            for epoch in range(self.max_epochs):
                net.train()
                perm = tr[rng.permutation(len(tr))]
                total = 0.0
                for s in range(0, len(perm), self.batch_size):
                    idx = torch.from_numpy(perm[s:s + self.batch_size]).to(dev)
                    ce = nn.functional.cross_entropy(net(Zt[idx]), yt[idx], reduction="none")
                    loss = (wt[idx] * ce).sum() / len(idx)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(idx)
                self.train_loss_.append(total / len(perm))
                if not len(va):
                    continue
                net.eval()
                with torch.no_grad():
                    vi = torch.from_numpy(va).to(dev)
                    ce = nn.functional.cross_entropy(net(Zt[vi]), yt[vi], reduction="none")
                    vloss = float((wt[vi] * ce).sum() / len(va))
                self.val_loss_.append(vloss)
                if vloss < best[0] - 1e-6:
                    best, bad = (vloss, epoch, copy.deepcopy(net.state_dict())), 0
                else:
                    bad += 1
                    if bad >= self.patience:
                        break
        if best[2] is not None:
            net.load_state_dict(best[2])
        self.n_epochs_ = len(self.train_loss_)
        self.best_epoch_ = best[1] if best[2] is not None else self.n_epochs_ - 1
        self.best_val_loss_ = best[0] if best[2] is not None else float("nan")
        if not all(np.isfinite(self.train_loss_)):
            raise DataError("MLPProbe diverged (non-finite training loss)",
                            hint="lower lr, or use standardize=True")
        self._net = net.eval()
        return self

    def _logits(self, Z: torch.Tensor) -> torch.Tensor:
        return self._net(Z)
