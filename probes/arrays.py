"""Input checks shared by every measure: representations, labels, groups and integer options.

Each check returns the normalised array or raises :class:`~xlprobe.errors.DataError` /
:class:`~xlprobe.errors.ConfigError` naming the argument, what was wrong and how to fix it.
"""
from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from xlprobe.errors import ConfigError, DataError

__all__ = ["as_rep", "as_pair", "as_labels", "as_groups", "check_int", "check_float", "to_host"]


def to_host(a: Any) -> Any:
    """A torch tensor as a numpy array (detached, on the CPU; float16 / bfloat16 as float32); anything else as is.

    Every measure's input check goes through it, so measures take tensors on any device (one copy to the
    host; the probes and CKA can also compute on the device: ``device=``). Torch is not imported here.
    """
    if type(a).__module__.startswith("torch") and hasattr(a, "detach"):
        a = a.detach()
        if a.is_floating_point() and str(a.dtype) not in ("torch.float32", "torch.float64"):
            a = a.float()
        return a.cpu().numpy()
    return a


def as_rep(X: Any, name: str = "X", *, copy: bool = False, dtype: Any = np.float64, min_rows: int = 1
           ) -> np.ndarray:
    """A finite 2-D float array [n items, d >= 1 features] (a private copy if ``copy``)."""
    X = to_host(X)
    try:
        A = np.array(X, dtype=dtype) if copy else np.asarray(X, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name} must be a numeric array [n, d]; got {type(X).__name__} ({exc})",
                        hint="pass a numpy float array, one row per item") from None
    if A.ndim != 2:
        raise DataError(f"{name} must be 2-D [n items, d features]; got shape {A.shape}",
                        hint="reshape a single feature to X[:, None]; pool token states to one row per item")
    if A.shape[1] == 0:
        raise DataError(f"{name} has 0 features (shape {A.shape}); a minimum of 1 is required")
    if A.shape[0] < min_rows:
        raise DataError(f"{name} has {A.shape[0]} row(s); this measure needs at least {min_rows}",
                        hint="capture more items")
    if not np.isfinite(A).all():
        raise DataError(f"{name} contains NaN or inf ({int((~np.isfinite(A)).sum())} values)",
                        hint="check the activations (float16 overflow?) or drop those rows")
    return A


def as_pair(X: Any, Y: Any, *, copy: bool = False, min_rows: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Two representations of the same items: ``as_rep`` each, and the same number of rows."""
    A, B = as_rep(X, "X", copy=copy), as_rep(Y, "Y", copy=copy)
    if A.shape[0] != B.shape[0]:
        raise DataError(f"X and Y must have the same rows (items); got X {A.shape} and Y {B.shape}",
                        hint="take both representations on the same items, in the same order")
    if A.shape[0] < min_rows:
        raise DataError(f"this measure needs at least {min_rows} rows; got {A.shape[0]}")
    return A, B


def as_labels(y: Any, n: int, name: str = "y", *, min_classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes 0..K-1 of a 1-D label array with one entry per item, and the class values."""
    a = np.asarray(to_host(y))
    if a.ndim != 1 or a.shape[0] != n:
        raise DataError(f"{name} must be 1-D with one label per item ({n}); got shape {a.shape}",
                        hint="pass one label per row of X, in the same order")
    if a.dtype == object and any(v is None for v in a):
        raise DataError(f"{name} contains None", hint="drop unlabelled items before probing")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise DataError(f"{name} contains NaN", hint="drop unlabelled items before probing")
    classes, codes = np.unique(a, return_inverse=True)
    if classes.size < min_classes:
        raise DataError(f"{name} has {classes.size} distinct label(s) ({classes[:5].tolist()}); "
                        f"at least {min_classes} are needed",
                        hint="a labelling with one class says nothing: check the data selection")
    return codes.reshape(-1).astype(np.int64), classes


def as_groups(groups: Any, n: int, name: str = "groups") -> np.ndarray | None:
    """Integer codes 0..G-1 of a 1-D group array (None stays None)."""
    if groups is None:
        return None
    g = np.asarray(to_host(groups))
    if g.ndim != 1 or g.shape[0] != n:
        raise DataError(f"{name} must be 1-D with one entry per item ({n}); got shape {g.shape}",
                        hint="pass the parallel-group id of every item, in the order of the data")
    if g.dtype == object and any(v is None for v in g):
        raise DataError(f"{name} contains None", hint=f"give every item a group, or pass {name}=None")
    return np.unique(g, return_inverse=True)[1].reshape(-1).astype(np.int64)


def check_int(name: str, v: Any, low: int, high: int | None = None) -> int:
    """An integer option in [low, high]."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low or (high is not None and v > high):
        span = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(f"{name} must be an integer {span}; got {v!r}")
    return int(v)


def check_float(name: str, v: Any, low: float, high: float, *, open_low: bool = False,
                open_high: bool = False) -> float:
    """A finite float option in the interval [low, high] (ends open where asked)."""
    ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and np.isfinite(v)
    if ok:
        ok = (v > low if open_low else v >= low) and (v < high if open_high else v <= high)
    if not ok:
        lo, hi = "(" if open_low else "[", ")" if open_high else "]"
        raise ConfigError(f"{name} must be a number in {lo}{low}, {high}{hi}; got {v!r}")
    return float(v)
