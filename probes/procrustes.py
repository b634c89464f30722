"""Orthogonal Procrustes distance between two representations of the same items.

Following Ding, Denain & Steinhardt 2021 ("Grounding Representation Similarity with Statistical
Testing", NeurIPS, section 2): centre each representation's columns and scale it to unit Frobenius
norm (X~ = Xc / ||Xc||_F, Y~ likewise); then::

    d_Proc(X, Y) = min_R ||X~ - Y~ R||_F^2 = ||X~||_F^2 + ||Y~||_F^2 - 2 ||X~' Y~||_* = 2 - 2 ||X~' Y~||_*

over orthogonal R (a partial isometry when d1 != d2, i.e. the narrower side is padded with zero
columns), where ||.||_* is the nuclear norm (sum of singular values; Schönemann 1966 for the
minimiser). The value lies in [0, 2]: 0 exactly when one side is a rotation / reflection of the
other up to isotropic scale and a shift, 2 at most. It is the *squared* distance of the paper; its
square root is a metric, and arccos(||X~' Y~||_*) is the angular form of Williams et al. 2021.
Computed in float64 from the d1 x d2 cross-product X~' Y~.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from xlprobe.errors import DataError
from xlprobe.probes.arrays import as_rep
from xlprobe.registry import register_measure

__all__ = ["procrustes_distance"]


def _centred_unit(A: Any, name: str) -> np.ndarray:
    M = as_rep(A, name, copy=True)
    M -= M.mean(axis=0, keepdims=True)
    norm = np.linalg.norm(M)
    if not norm > 0:
        raise DataError(f"{name} is constant across rows, so the normalised Procrustes distance is undefined",
                        hint="a constant representation (e.g. a dead layer) cannot be compared")
    M /= norm
    return M


@register_measure("procrustes", kind="paired", direction="distance")
def procrustes_distance(X: np.ndarray, Y: np.ndarray, *, seed: int = 0) -> float:
    """Orthogonal Procrustes distance (Ding et al. 2021): 2 - 2 ||X~' Y~||_* on centred, unit-norm inputs.

    Parameters
    ----------
    X : array [n, d1]
        First representation, one row per item.
    Y : array [n, d2]
        Second representation, the same items in the same order.
    seed : int, default 0
        Unused (deterministic); every measure takes ``seed``.

    Returns
    -------
    float
        In [0, 2]: 0 for a rotated (and shifted, isotropically scaled) copy.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((50, 6))
    >>> Q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    >>> procrustes_distance(X, 2.0 * X @ Q + 1.0) < 1e-12
    True
    """
    A, B = _centred_unit(X, "X"), _centred_unit(Y, "Y")
    if A.shape[0] != B.shape[0]:
        raise DataError(f"X and Y must have the same rows (items); got X {A.shape} and Y {B.shape}",
                        hint="take both representations on the same items, in the same order")
    nuclear = float(np.linalg.svd(A.T @ B, compute_uv=False).sum())
    return float(min(2.0, max(0.0, 2.0 - 2.0 * nuclear)))
