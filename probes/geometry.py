"""The shape of one representation X [n, d], without labels: effective rank, anisotropy, norms.

* :func:`effective_rank`: Roy & Vetterli 2007, exp of the entropy of the normalised singular values.
* :func:`anisotropy`: mean cosine of random pairs of rows (Ethayarajh 2019).
* :func:`norm_stats` / :func:`norm_mean`: row L2 norm statistics.

Separability of a labelling (Fisher, silhouette, kNN, nearest centroid) is in
:mod:`xlprobe.probes.separability`. Everything is float64.
"""
from __future__ import annotations

import logging

import numpy as np

from xlprobe.errors import DataError
from xlprobe.probes.arrays import as_rep, check_int
from xlprobe.probes.pairwise import unit_norm_rows
from xlprobe.registry import register_measure

__all__ = ["effective_rank", "anisotropy", "norm_stats", "norm_mean"]

logger = logging.getLogger(__name__)

#: The metrics a pairwise measure accepts.


@register_measure("geometry.effective_rank", kind="unlabelled", direction="higher_better")
def effective_rank(X: np.ndarray, *, seed: int = 0) -> float:
    """Effective rank (Roy & Vetterli 2007): how many directions the centred cloud really spreads over.

    exp(H(p)) with p_i = s_i / sum_j s_j the normalised singular values of the column-centred X and
    H the Shannon entropy (natural log, 0 log 0 = 0). Between 1 (rank one) and min(n - 1, d), which it
    reaches when all singular values are equal. Invariant to rotation, translation and scale. When
    n > d the singular values come from the d x d Gram matrix, whose eigenvalues below d eps lam_max
    are rounding noise and count as zero (below max(n, d) eps s_max on the SVD path, the tolerance of
    ``np.linalg.matrix_rank``), so a rank-r input scores r to ~1e-12, not r + 1e-6.

    Parameters
    ----------
    X : array [n, d]
        Representation, one row per item (at least 2).
    seed : int, default 0
        Unused (deterministic); every measure takes ``seed``.

    Returns
    -------
    float
        The effective rank.
    """
    A = as_rep(X, min_rows=2)
    A = A - A.mean(axis=0)
    eps = np.finfo(np.float64).eps
    if A.shape[0] > A.shape[1]:
        lam = np.linalg.eigvalsh(A.T @ A)
        s = np.sqrt(lam[lam > lam[-1] * A.shape[1] * eps])  # rounding noise of the Gram is ~ d eps lam_max
    else:
        s = np.linalg.svd(A, compute_uv=False)
        s = s[s > s[0] * max(A.shape) * eps]  # np.linalg.matrix_rank's tolerance
    if s.size == 0 or not np.all(np.isfinite(s)):
        raise DataError("X is constant across rows, so its effective rank is undefined",
                        hint="a constant representation (e.g. a dead layer) spans no direction")
    p = s / s.sum()
    return float(np.exp(-np.sum(p * np.log(p))))


@register_measure("geometry.anisotropy", kind="unlabelled", direction="lower_better")
def anisotropy(X: np.ndarray, *, n_pairs: int | None = None, seed: int = 0) -> float:
    """Mean cosine similarity of random pairs of distinct rows (Ethayarajh 2019): do all rows point alike?

    Near 0 for directions spread evenly around the origin, near 1 when a common offset dominates
    (the anisotropy baseline of Ethayarajh 2019, "How Contextual are Contextualized Word
    Representations?", EMNLP). By default the mean over all pairs is computed exactly, in O(n d):
    (|sum_i u_i|^2 - n) / (n (n - 1)) for unit rows u, which is cheaper than sampling pairs and has
    no sampling error. With ``n_pairs``, that many pairs (i, j), i != j, are drawn uniformly with a
    seeded generator instead (the estimate Ethayarajh reports), unless there are no more distinct
    pairs than that.

    Parameters
    ----------
    X : array [n, d]
        Representation, one row per item (at least 2, none of zero norm).
    n_pairs : int or None, default None
        Pairs to sample; None for the exact mean over all pairs.
    seed : int, default 0
        Seeds the pairs.

    Returns
    -------
    float
        In [-1, 1].
    """
    if n_pairs is not None:
        n_pairs = check_int("n_pairs", n_pairs, 1)
    U = unit_norm_rows(as_rep(X, min_rows=2))
    n = U.shape[0]
    if n_pairs is None or n * (n - 1) // 2 <= n_pairs:
        total = U.sum(axis=0)
        return float((total @ total - n) / (n * (n - 1)))
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, size=n_pairs)
    j = (i + rng.integers(1, n, size=n_pairs)) % n  # uniform over the other n - 1 rows
    return float(np.mean(np.einsum("ij,ij->i", U[i], U[j])))


def norm_stats(X: np.ndarray) -> dict[str, float]:
    """Summary of the rows' L2 norms: how large the vectors are, and how unevenly.

    Parameters
    ----------
    X : array [n, d]
        Representation, one row per item.

    Returns
    -------
    dict
        ``mean``, ``std`` (population, ddof=0), ``min``, ``max`` and ``median`` of the row norms.
    """
    norms = np.linalg.norm(as_rep(X), axis=1)
    return {"mean": float(norms.mean()), "std": float(norms.std()), "min": float(norms.min()),
            "max": float(norms.max()), "median": float(np.median(norms))}


@register_measure("geometry.norm_mean", kind="unlabelled", direction="lower_better")
def norm_mean(X: np.ndarray, *, seed: int = 0) -> float:
    """Mean L2 norm of the rows: the scale of the representation at this layer.

    Descriptive rather than a score. It is registered as lower_better because norm growth across
    layers is the thing to watch: it comes with outlier dimensions and anisotropy, and risks float16
    overflow.

    Parameters
    ----------
    X : array [n, d]
        Representation, one row per item.
    seed : int, default 0
        Unused (deterministic); every measure takes ``seed``.

    Returns
    -------
    float
        The mean row norm (see :func:`norm_stats` for the rest).
    """
    return norm_stats(X)["mean"]
