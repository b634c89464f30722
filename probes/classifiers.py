"""Linear and MLP probes as scikit-learn classifiers (``fit`` / ``predict`` / ``predict_proba`` / ``score``).

Both are torch models behind the estimator contract: parameters in ``__init__`` and stored as given,
learned state ending in ``_``, input checked by scikit-learn's public ``validate_data`` and
``check_is_fitted``, so ``sklearn.base.clone``, ``Pipeline``, ``cross_val_score`` and scikit-learn's
``check_estimator`` all work (``tests/probes/test_estimator_checks.py`` runs every check).

* :class:`LinearProbe`: L2-penalised logistic regression fitted to convergence by full-batch L-BFGS
  (strong-Wolfe line search) in float32 (the objective summed in float64). It is scikit-learn's ``LogisticRegression`` model for every
  number of classes: one weight vector and a sigmoid for two classes, multinomial (one weight vector
  per class) for three or more, objective ``C * sum_i w_i CE_i + ||coef||^2 / 2``. So ``C`` means
  what it means there and the two reach the same optimum at the same setting.
* :class:`MLPProbe`: Dropout -> Linear(d, hidden) -> GELU -> Linear(hidden, K), the probe of the
  follow-up study; AdamW (decoupled L2 as ``weight_decay``), minibatches, early stopping on a held-out
  part of the training data (split by group when groups are given), the best epoch's weights kept.

Features are standardised with the training mean and standard deviation by default (probes then compare
layers whose scales differ by orders of magnitude on the same footing). A column whose spread is at
the float noise floor of the layer (standard deviation below ``1e-6`` times the layer's typical
column scale, see ``_NOISE_FLOOR``) is treated as constant: centred, never scaled up to unit variance.

Randomness (initialisation, dropout, minibatch order, validation split) comes from ``random_state``
alone (``None``: 0, or the ``seed`` of the function that runs the probe, such as ``probe_layers``);
the global torch RNG is left as it was. Predictions are computed in float64 on the CPU, so a row's
prediction does not depend on the other rows it is predicted with.
"""
from __future__ import annotations

import copy
import math
import numbers
import warnings
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np
import torch
from scipy.special import log_softmax
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from xlprobe.errors import ConfigError, DataError
from xlprobe.probes.arrays import check_float, check_int

__all__ = ["LinearProbe", "MLPProbe", "PROBES", "make_probe", "fit_probe", "probe_measure", "probe_name"]

#: A column whose standard deviation is at most this fraction of the layer's typical column scale (the
#: median over columns of the root mean square) is constant for standardisation. float32 activations
#: carry a relative rounding error of about 1.2e-7 of the values they are computed with, so a spread
#: below ~8 ulps of the layer's scale is noise (MiniLM layer 5 has a column with sd 1.5e-9 around
#: -1e-7); scaled to unit variance, it would weigh as much as a real feature.
_NOISE_FLOOR = 1e-6


def _check_random_state(v: Any) -> int:
    """The seed of ``random_state``: an integer >= 0, or 0 for None."""
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
        raise ConfigError(f"random_state must be None or an integer >= 0; got {v!r}",
                          hint="pass e.g. random_state=0 (None means 0, or the seed of probe_layers)")
    return int(v)


class _TorchProbe(ClassifierMixin, BaseEstimator):
    """Shared parts: input checks, standardisation, class weights, prediction from float64 logits."""

    #: ``fit`` takes ``groups=`` (the MLP keeps them whole in its validation split): :func:`fit_probe`
    #: passes groups to an estimator whose class says so, and to no other. Another estimator opts in
    #: with the same class attribute.
    fit_takes_groups: ClassVar[bool] = True

    def _check_common(self) -> None:
        if not isinstance(self.standardize, bool):
            raise ConfigError(f"standardize must be True or False; got {self.standardize!r}")
        _check_random_state(self.random_state)
        cw = self.class_weight
        if not (cw is None or (isinstance(cw, str) and cw == "balanced") or isinstance(cw, dict)):
            raise ConfigError(f"class_weight must be None, 'balanced' or a dict {{class: weight}}; got {cw!r}")

    def _validate(self, X: Any, y: Any = "no_validation", *, reset: bool) -> Any:
        """scikit-learn's ``validate_data``; its ValueErrors (same text) become DataError with a hint."""
        try:
            if reset:
                return validate_data(self, X, y, dtype=np.float64, ensure_min_samples=2)
            return validate_data(self, X, reset=False, dtype=np.float64)
        except ValueError as exc:
            hint = ("pass a finite float array X [n items, d features] and one label per row"
                    if reset else "predict on the same layer (same width) the probe was fitted on")
            raise DataError(str(exc), hint=hint) from exc

    def _fit_input(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """Validated float32 features and class codes; sets classes_, n_features_in_, mean_, scale_."""
        A, a = self._validate(X, y, reset=True)
        if a.dtype == object and any(v is None for v in a):
            raise DataError("y contains None", hint="drop unlabelled items before probing")
        try:
            with warnings.catch_warnings():
                # "more unique classes than 50% of the samples": normal for the small early prefixes of
                # MDL with many classes; the labels are class labels by contract, so only the error stays
                warnings.filterwarnings("ignore", message="The number of unique classes is greater",
                                        category=UserWarning)
                check_classification_targets(a)
        except ValueError as exc:
            raise DataError(str(exc), hint="a probe needs class labels (int, str), not a continuous target"
                            ) from exc
        classes, codes = np.unique(a, return_inverse=True)
        if classes.size < 2:
            raise DataError(f"y has {classes.size} distinct label(s) ({classes[:3].tolist()}); a probe needs "
                            "at least 2 classes",
                            hint="a labelling with one class says nothing: check the data selection")
        self.classes_ = classes
        if self.standardize:
            self.mean_ = A.mean(axis=0)
            sd = A.std(axis=0)
            typical = float(np.median(np.sqrt(self.mean_ ** 2 + sd ** 2)))
            self.scale_ = np.where(sd > _NOISE_FLOOR * typical, sd, 1.0)
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
        if isinstance(cw, str):  # "balanced"
            per = len(codes) / (K * np.bincount(codes, minlength=K))
        else:
            unknown = [c for c in cw if c not in set(self.classes_.tolist())]
            if unknown:
                raise ConfigError(f"class_weight names classes not in y: {unknown[:5]}",
                                  hint=f"classes are {self.classes_.tolist()[:10]}")
            per = np.array([float(cw.get(c, 1.0)) for c in self.classes_.tolist()])
        return per[codes].astype(np.float32)

    def _input(self, X: Any) -> np.ndarray:
        """Checked and standardised float64 features for prediction."""
        try:
            check_is_fitted(self)
        except NotFittedError as exc:
            from xlprobe.errors import ProbeNotFittedError

            raise ProbeNotFittedError(str(exc), hint="call fit(X, y) before predict / predict_proba / score"
                                      ) from None
        A = self._validate(X, reset=False)
        return (A - self.mean_) / self.scale_

    def _scores(self, Z: np.ndarray) -> np.ndarray:
        """float64 scores: [n] (log-odds of classes_[1]) for two classes, [n, K] logits otherwise."""
        raise NotImplementedError

    def decision_function(self, X: Any) -> np.ndarray:
        """Class scores: [n] log-odds of ``classes_[1]`` for two classes, [n, K] logits for more."""
        return self._scores(self._input(X))

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Log class probabilities [n, K], columns in the order of ``classes_`` (MDL codelengths)."""
        s = self._scores(self._input(X))
        if s.ndim == 1:
            return np.stack([-np.logaddexp(0.0, s), -np.logaddexp(0.0, -s)], axis=1)
        return log_softmax(s, axis=1)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities [n, K], columns in the order of ``classes_``."""
        return np.exp(self.predict_log_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each row."""
        s = self.decision_function(X)
        return self.classes_[(s > 0).astype(np.intp) if s.ndim == 1 else np.argmax(s, axis=1)]


class LinearProbe(_TorchProbe):
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
    standardize, class_weight, device : as :class:`LinearProbe`.
    random_state : int or None, default None
        Seeds initialisation, dropout, minibatch order and the validation split (None: 0).

    Attributes
    ----------
    classes_, n_features_in_, mean_, scale_, n_epochs_, best_epoch_, best_val_loss_ (NaN without early
    stopping), train_loss_ (per epoch), val_loss_ (per epoch).

    See Also
    --------
    LinearProbe : the linear probe with the same interface.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.r_[np.zeros((20, 2)), np.ones((20, 2))] + np.random.default_rng(0).normal(0, 0.1, (40, 2))
    >>> m = MLPProbe(hidden=8, lr=1e-2, max_epochs=50, random_state=0).fit(X, [0] * 20 + [1] * 20)
    >>> m.predict([[0.0, 0.0], [1.0, 1.0]]).tolist(), m.decision_function([[1.0, 1.0]]).shape
    ([0, 1], (1,))
    """

    def __init__(self, hidden: int = 256, *, dropout: float = 0.1, lr: float = 1e-3, weight_decay: float = 1e-2,
                 batch_size: int = 64, max_epochs: int = 100, early_stopping: bool = True,
                 validation_fraction: float = 0.1, patience: int = 10, standardize: bool = True,
                 class_weight: Any = None, random_state: int | None = None, device: str = "cpu") -> None:
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
        self.random_state = random_state
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
        seed = _check_random_state(self.random_state)
        rng = np.random.default_rng(seed)
        n = len(codes)
        if self.early_stopping:
            tr, va = self._split(n, groups, rng)
        else:
            tr, va = np.arange(n), np.empty(0, np.int64)
        dev = self.device
        Zt, yt, wt = (torch.from_numpy(a).to(dev) for a in (Z, codes, weights))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
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
        self._net = copy.deepcopy(net).cpu().double().eval()  # float64 on the CPU for prediction
        return self

    def _scores(self, Z: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            s = self._net(torch.from_numpy(np.ascontiguousarray(Z, dtype=np.float64))).numpy()
        return s[:, 1] - s[:, 0] if s.shape[1] == 2 else s


# ------------------------------------------------------------------------------------------ by name
#: Probe names -> classes: the one table that builds a probe by name (:func:`make_probe`) and names a
#: probe's rows (:func:`probe_measure`: ``probe.linear``, ``probe.mlp``).
PROBES: Mapping[str, type] = MappingProxyType({"linear": LinearProbe, "mlp": MLPProbe})


def make_probe(probe: Any = None, *, seed: int | None = None, **params: Any) -> Any:
    """A fresh, unfitted probe, by name or from an estimator: the one way every runner and measure gets one.

    Parameters
    ----------
    probe : {"linear", "mlp"}, estimator or None
        A name of :data:`PROBES` (None is ``"linear"``), or a scikit-learn classifier, which is cloned.
    seed : int, optional
        Sets ``random_state`` where the probe has one and it is None; an explicit ``random_state``
        (0 included) is kept.
    **params
        Parameters of the probe (``make_probe("linear", C=0.1)``), set on the clone of an estimator.

    Raises
    ------
    ConfigError
        An unknown name, or an object that is not a scikit-learn estimator.
    """
    if probe is None:
        probe = "linear"
    if isinstance(probe, str):
        if probe not in PROBES:
            raise ConfigError(f"probe must be one of {list(PROBES)} or a scikit-learn classifier; got {probe!r}",
                              hint="probe names: " + ", ".join(PROBES))
        est = PROBES[probe](**params)
    elif callable(getattr(probe, "fit", None)) and callable(getattr(probe, "get_params", None)):
        est = clone(probe).set_params(**params)
    else:
        raise ConfigError(f"probe must be one of {list(PROBES)} or a scikit-learn classifier; got {probe!r}",
                          hint="pass e.g. probe='mlp' or probe=LinearProbe(C=0.1)")
    if seed is not None and "random_state" in est.get_params() and est.get_params()["random_state"] is None:
        est.set_params(random_state=seed)
    return est


def fit_probe(probe: Any, X: Any, y: Any, groups: Any = None) -> Any:
    """Fit a clone of ``probe``; ``groups`` go to ``fit`` only when the probe's class sets ``fit_takes_groups``."""
    est = clone(probe)
    if groups is not None and getattr(type(est), "fit_takes_groups", False):
        return est.fit(X, y, groups=groups)
    return est.fit(X, y)


def _registered_name(probe: Any) -> str | None:
    """The :data:`PROBES` name of the probe's class or of its nearest base class there (a subclass of
    ``MLPProbe`` is an MLP probe), else None."""
    names = {cls: name for name, cls in PROBES.items()}
    return next((names[c] for c in type(probe).__mro__ if c in names), None)


def probe_measure(probe: Any) -> str:
    """The registered measure name of a probe's rows: ``probe.linear``, ``probe.mlp``, else ``probe.estimator``."""
    name = _registered_name(probe)
    return f"probe.{name}" if name else "probe.estimator"


def probe_name(probe: Any) -> str:
    """What the ``probe`` column says: ``probe.linear``, ``probe.mlp``, else ``probe.<class name, lower case>``."""
    return f"probe.{_registered_name(probe) or type(probe).__name__.lower()}"
