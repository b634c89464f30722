"""Pairwise similarity between the rows of one representation, in row blocks: the kernels of the separability measures.

``metric`` is ``"cosine"`` (rows scaled to unit norm) or ``"euclidean"`` (rows centred, which leaves
distances unchanged and reduces cancellation in |a|^2 - 2ab + |b|^2). Every function works on a
block of rows against all rows, so callers keep memory at O(block x n); everything is float64.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from xlprobe.errors import ConfigError, DataError

__all__ = ["METRICS", "check_metric", "unit_norm_rows", "prepare_rows", "similarities", "distances", "one_hot"]

#: The metrics a pairwise measure accepts.
METRICS = ("cosine", "euclidean")


def check_metric(metric: Any) -> str:
    """``metric`` if it is one of :data:`METRICS`; ConfigError otherwise."""
    if metric not in METRICS:
        raise ConfigError(f"metric must be one of {list(METRICS)}; got {metric!r}",
                          hint="pass metric='cosine' or metric='euclidean'")
    return str(metric)


def unit_norm_rows(A: np.ndarray, name: str = "X") -> np.ndarray:
    """Rows scaled to unit L2 norm; DataError when a row has zero norm (its cosine is undefined)."""
    norms = np.linalg.norm(A, axis=1)
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise DataError(f"{name} has {zero.size} row(s) with zero norm (rows {zero[:5].tolist()}"
                        f"{' ...' if zero.size > 5 else ''}); cosine similarity is undefined for them",
                        hint="drop those rows (padding? an empty text?) or use metric='euclidean'")
    return A / norms[:, None]


def prepare_rows(A: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows to compare and their squared norms: unit rows (cosine) or centred rows (euclidean).

    Centring does not change euclidean distances and reduces cancellation in |a|^2 - 2ab + |b|^2.
    """
    P = unit_norm_rows(A) if metric == "cosine" else A - A.mean(axis=0)
    return P, np.einsum("ij,ij->i", P, P)


def similarities(P: np.ndarray, sq: np.ndarray, rows: slice, metric: str) -> np.ndarray:
    """[block, n] scores whose order is nearest-first: cosine similarity, or -|x_j|^2 + 2 x_i.x_j
    (euclidean: -|x_i - x_j|^2 up to the row's own constant |x_i|^2)."""
    G = P[rows] @ P.T
    return G if metric == "cosine" else 2.0 * G - sq[None, :]


def distances(P: np.ndarray, sq: np.ndarray, rows: slice, metric: str) -> np.ndarray:
    """[block, n] distances as scikit-learn defines them (1 - cos clipped to [0, 2]; euclidean), self 0."""
    G = P[rows] @ P.T
    if metric == "cosine":
        D = np.clip(1.0 - G, 0.0, 2.0)
    else:
        D = np.sqrt(np.maximum(sq[rows, None] - 2.0 * G + sq[None, :], 0.0))
    r = np.arange(rows.start, rows.stop)
    D[r - rows.start, r] = 0.0
    return D


def one_hot(codes: np.ndarray, k: int) -> np.ndarray:
    """[n, k] indicator matrix of integer codes 0..k-1 (class sums and means by a product)."""
    H = np.zeros((codes.size, k))
    H[np.arange(codes.size), codes] = 1.0
    return H
