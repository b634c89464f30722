"""The shared base of xlprobe's probes: a torch model behind scikit-learn's classifier contract.

:class:`TorchProbe` holds what :class:`~xlprobe.probes.linear.LinearProbe` and
:class:`~xlprobe.probes.mlp.MLPProbe` share: input checks through scikit-learn's public
``validate_data`` and ``check_is_fitted``, standardisation (with the noise floor below), class weights,
the seed (``random_state``) and predictions from float64 logits on the CPU.

Both are torch models behind the estimator contract: parameters in ``__init__`` and stored as given,
learned state ending in ``_``, so ``sklearn.base.clone``, ``Pipeline``, ``cross_val_score`` and
scikit-learn's ``check_estimator`` all work (``tests/probes/test_estimator_checks.py`` runs every check).

Features are standardised with the training mean and standard deviation by default (probes then compare
layers whose scales differ by orders of magnitude on the same footing). A column whose spread is at
the float noise floor of the layer (standard deviation below :data:`NOISE_FLOOR` times the layer's
typical column scale) is treated as constant: centred, never scaled up to unit variance.

Randomness (initialisation, dropout, minibatch order, validation split) comes from ``random_state``
alone (``None``: 0, or the ``seed`` of the function that runs the probe, such as ``probe_layers``);
the global torch RNG is left as it was. ``X`` and ``y`` may be torch tensors on any device and of any
float dtype (bfloat16, float16): they are read once onto the host (:func:`to_host`) and checked as numpy
arrays, so a fit on tensors equals the fit on the same arrays; the fit then runs on ``device``. Predictions are computed in float64 on the CPU, so a row's
prediction does not depend on the other rows it is predicted with.
"""
from __future__ import annotations

import numbers
import warnings
from typing import Any, ClassVar

import numpy as np
from scipy.special import log_softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from xlprobe.errors import ConfigError, DataError
from xlprobe.probes.arrays import to_host

__all__ = ["TorchProbe", "NOISE_FLOOR", "check_random_state"]

#: A column whose standard deviation is at most this fraction of the layer's typical column scale (the
#: median over columns of the root mean square) is constant for standardisation. float32 activations
#: carry a relative rounding error of about 1.2e-7 of the values they are computed with, so a spread
#: below ~8 ulps of the layer's scale is noise (MiniLM layer 5 has a column with sd 1.5e-9 around
#: -1e-7); scaled to unit variance, it would weigh as much as a real feature.
NOISE_FLOOR = 1e-6


def check_random_state(v: Any) -> int:
    """The seed of ``random_state``: an integer >= 0, or 0 for None."""
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
        raise ConfigError(f"random_state must be None or an integer >= 0; got {v!r}",
                          hint="pass e.g. random_state=0 (None means 0, or the seed of probe_layers)")
    return int(v)


class TorchProbe(ClassifierMixin, BaseEstimator):
    """Shared parts: input checks, standardisation, class weights, prediction from float64 logits."""

    #: ``fit`` takes ``groups=`` (the MLP keeps them whole in its validation split): :func:`fit_probe`
    #: passes groups to an estimator whose class says so, and to no other. Another estimator opts in
    #: with the same class attribute.
    fit_takes_groups: ClassVar[bool] = True

    def _check_common(self) -> None:
        if not isinstance(self.standardize, bool):
            raise ConfigError(f"standardize must be True or False; got {self.standardize!r}")
        check_random_state(self.random_state)
        cw = self.class_weight
        if not (cw is None or (isinstance(cw, str) and cw == "balanced") or isinstance(cw, dict)):
            raise ConfigError(f"class_weight must be None, 'balanced' or a dict {{class: weight}}; got {cw!r}")

    def _validate(self, X: Any, y: Any = "no_validation", *, reset: bool) -> Any:
        """scikit-learn's ``validate_data`` on the host copy of torch tensors (:func:`to_host`); its
        ValueErrors (same text) become DataError with a hint."""
        X, y = to_host(X), (y if isinstance(y, str) else to_host(y))
        try:
            if reset:  # float32 stays float32 (standardised in float32 below: no float64 copy of a layer)
                return validate_data(self, X, y, dtype=(np.float64, np.float32), ensure_min_samples=2)
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
        if not self.standardize:
            self.mean_, self.scale_ = np.zeros(A.shape[1]), np.ones(A.shape[1])
            return A.astype(np.float32), codes.reshape(-1).astype(np.int64)
        self.mean_ = A.mean(axis=0, dtype=np.float64)
        Z = A - self.mean_.astype(A.dtype)  # in the input's precision (float32 in: float32 work)
        sd = np.sqrt(np.square(Z).sum(axis=0, dtype=np.float64) / len(Z))
        typical = float(np.median(np.sqrt(self.mean_ ** 2 + sd ** 2)))
        self.scale_ = np.where(sd > NOISE_FLOOR * typical, sd, 1.0)
        Z /= self.scale_.astype(A.dtype)
        return Z.astype(np.float32, copy=False), codes.reshape(-1).astype(np.int64)

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


