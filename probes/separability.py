"""Separability of a labelling in one representation X [n, d]: how well y (language by default) is told apart.

Each measure is a float where higher means better separated:

* :func:`fisher_ratio`: tr(S_B) / tr(S_W), between- over within-class scatter, each class weighted
  by its size (the trace form of Fisher's criterion; Fukunaga 1990, "Introduction to Statistical
  Pattern Recognition", ch. 10, J = tr(S_B) / tr(S_W) with unnormalised scatter matrices).
* :func:`silhouette`: mean silhouette width (Rousseeuw 1987), on a seeded stratified subsample when n
  is large; the same value as ``sklearn.metrics.silhouette_score``.
* :func:`knn_accuracy` / :func:`nearest_centroid_accuracy`: leave-one-out accuracy of a k-nearest-
  neighbour / nearest-centroid classifier.

:func:`centroid_distances` gives the class-by-class distance matrix. ``metric`` is ``"cosine"`` or
``"euclidean"`` (:data:`~xlprobe.probes.pairwise.METRICS`). Pairwise quantities are computed in row
blocks (:mod:`xlprobe.probes.pairwise`), so memory is O(block x n), never n x n; everything is float64. The label-free shape of the cloud is in
:mod:`xlprobe.probes.geometry`.
"""
from __future__ import annotations

import logging

import numpy as np

from xlprobe.errors import ConfigError, DataError
from xlprobe.probes.arrays import as_groups, as_labels, as_rep, check_int
from xlprobe.probes.pairwise import (
    METRICS,
    check_metric,
    distances,
    one_hot,
    prepare_rows,
    similarities,
    unit_norm_rows,
)
from xlprobe.registry import register_measure

__all__ = ["fisher_ratio", "silhouette", "knn_accuracy", "knn_correct", "nearest_centroid_accuracy", "centroid_distances",
           "METRICS"]

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ separability
@register_measure("separability.fisher", kind="labelled", direction="higher_better")
def fisher_ratio(X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None, *, seed: int = 0) -> float:
    """Fisher ratio tr(S_B) / tr(S_W): how far apart the class means are, relative to the class spreads.

    S_B = sum_k n_k (m_k - m)(m_k - m)' and S_W = sum_i (x_i - m_{y_i})(x_i - m_{y_i})' are the
    unnormalised between- and within-class scatter matrices (each class weighted by its size n_k), so
    tr(S_B) + tr(S_W) is the total scatter. Invariant to rotation, translation and global scale.
    For isotropic Gaussian data and labels unrelated to it the ratio is near (K - 1) / (n - K).

    Parameters
    ----------
    X : array [n, d]
        Representation, one row per item.
    y : array [n]
        Labels (two classes or more).
    groups : array [n], optional
        Accepted for the labelled call shape; unused (the ratio pools all items).
    seed : int, default 0
        Unused (deterministic); every measure takes ``seed``.

    Returns
    -------
    float
        In [0, inf]: ``inf`` when every class is a single point (no within-class scatter).
    """
    A = as_rep(X, min_rows=2)
    codes, classes = as_labels(y, A.shape[0])
    as_groups(groups, A.shape[0])
    A = A - A.mean(axis=0)
    counts = np.bincount(codes, minlength=classes.size).astype(np.float64)
    means = one_hot(codes, classes.size).T @ A / counts[:, None]
    between = float(counts @ np.einsum("ij,ij->i", means, means))
    within = float(np.sum((A - means[codes]) ** 2))
    if between + within == 0:
        raise DataError("X is constant across rows, so the Fisher ratio is undefined (0 / 0)",
                        hint="a constant representation (e.g. a dead layer) separates nothing")
    if between <= 1e-12 * (between + within):  # class means equal up to rounding: exactly no separation
        return 0.0
    return float("inf") if within == 0 else between / within


def _stratified_subsample(codes: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of about m items, each class in proportion to its size (largest remainders),
    at least one per class; so at most m plus one per class too small for a proportional share."""
    counts = np.bincount(codes)
    share = counts * (m / codes.size)
    quota = np.floor(share).astype(np.int64)
    order = np.argsort(-(share - quota), kind="stable")
    quota[order[: m - int(quota.sum())]] += 1
    quota = np.clip(quota, 1, counts)
    picked = [rng.choice(np.flatnonzero(codes == c), size=q, replace=False) for c, q in enumerate(quota)]
    return np.sort(np.concatenate(picked))


@register_measure("separability.silhouette", kind="labelled", direction="higher_better")
def silhouette(X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None, *, metric: str = "cosine",
               max_items: int = 5000, seed: int = 0, block: int = 2048) -> float:
    """Mean silhouette width (Rousseeuw 1987): whether items sit closer to their own class than to the next.

    s_i = (b_i - a_i) / max(a_i, b_i), with a_i the mean distance from i to the other members of its
    class and b_i the smallest mean distance to another class; a singleton class gives s_i = 0. The
    same value as ``sklearn.metrics.silhouette_score(X, y, metric=metric)`` when n <= max_items.
    Above that, a seeded subsample stratified by class (class proportions kept, at least one item per
    class) is scored, so the cost stays bounded; distances are computed ``block`` rows at a time.

    Parameters
    ----------
    X : array [n, d]
        Representation, one row per item.
    y : array [n]
        Labels: at least 2 classes and at most n - 1.
    groups : array [n], optional
        Accepted for the labelled call shape; unused.
    metric : {"cosine", "euclidean"}, default "cosine"
        Cosine distance 1 - cos(x, x') or euclidean distance.
    max_items : int, default 5000
        Score a stratified subsample of about this many items when n is larger.
    seed : int, default 0
        Seeds the subsample.
    block : int, default 2048
        Rows per block of the distance computation (memory O(block x n)).

    Returns
    -------
    float
        In [-1, 1]; higher is better separated.
    """
    metric = check_metric(metric)
    max_items = check_int("max_items", max_items, 2)
    block = check_int("block", block, 1)
    A = as_rep(X, min_rows=2)
    codes, classes = as_labels(y, A.shape[0])
    as_groups(groups, A.shape[0])
    k = classes.size
    if k > A.shape[0] - 1:
        raise DataError(f"the silhouette needs 2 <= classes <= n - 1; got {k} classes for {A.shape[0]} items",
                        hint="with every item in its own class there is no within-class distance")
    if A.shape[0] > max_items:
        if max_items <= k:
            raise ConfigError(f"max_items must exceed the number of classes ({k}); got {max_items!r}",
                              hint="raise max_items; each class needs a share of the subsample")
        idx = _stratified_subsample(codes, max_items, np.random.default_rng(seed))
        logger.debug("silhouette: scoring %d of %d items (stratified, seed=%d)", idx.size, A.shape[0], seed)
        A, codes = A[idx], codes[idx]
    n = A.shape[0]
    P, sq = prepare_rows(A, metric)
    H = one_hot(codes, k)
    counts = np.bincount(codes, minlength=k).astype(np.float64)
    s = np.zeros(n)
    for start in range(0, n, block):
        rows = slice(start, min(start + block, n))
        sums = distances(P, sq, rows, metric) @ H  # [block, K] summed distances to each class
        own = codes[rows]
        r = np.arange(sums.shape[0])
        n_own = counts[own]
        a = sums[r, own] / np.maximum(n_own - 1.0, 1.0)
        mean_to = sums / counts[None, :]
        mean_to[r, own] = np.inf
        b = mean_to.min(axis=1)
        top = np.maximum(a, b)
        with np.errstate(invalid="ignore", divide="ignore"):
            s_rows = np.where((n_own > 1) & (top > 0), (b - a) / top, 0.0)
        s[rows] = s_rows
    return float(s.mean())


@register_measure("separability.knn", kind="labelled", direction="higher_better")
@register_measure("separability.knn.all", kind="labelled", direction="higher_better", exclude_group=False,
                  doc="Leave-one-out kNN accuracy with every other item a candidate, translations included: "
                      "is an item's nearest neighbour (often its own verse in another language) of its class?")
def knn_accuracy(X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None, *, k: int = 1,
                 metric: str = "cosine", seed: int = 0, block: int = 2048, exclude_group: bool = True) -> float:
    """Leave-one-out k-nearest-neighbour accuracy: is an item's neighbourhood made of its own class?

    Two variants, two registered names. ``separability.knn`` (``exclude_group=True``): with ``groups``,
    the items of the item's own group are not candidates either. ``separability.knn.all``
    (``exclude_group=False``): every other item is a candidate. On toy:mt's ``encoder.2`` (language
    labels; en, fr, de, ru; 300 held-out verses each) they give 0.770 and 0.413: the first asks how
    languages are arranged among items of other content, the second whether a verse lies nearer its
    translations than its language (an alignment question). Both are meaningful; say which one. For parallel data (group = verse) this
    matters: the same verse in another language is a near-copy in content, so it would dominate the
    neighbourhood. It counts against a language label although it says nothing about how languages
    are arranged, and it leaks the answer for labels shared within a group (a verse's topic). With
    the group excluded, the score asks whether, among items with *other* content, the nearest ones
    share the label.

    Ties are broken deterministically: among equally near candidates the lower row index is taken,
    and a tied vote goes to the class with the larger summed similarity of its voters, then to the
    class that sorts first.

    Parameters
    ----------
    X : array [n, d]
        Representation, one row per item.
    y : array [n]
        Labels (two classes or more).
    groups : array [n], optional
        Parallel-group id of each item; items of the same group are never neighbours (unless
        ``exclude_group`` is False).
    k : int, default 1
        Number of neighbours; every item needs at least k candidates.
    metric : {"cosine", "euclidean"}, default "cosine"
        Nearest by cosine similarity or by euclidean distance.
    seed : int, default 0
        Unused (deterministic); every measure takes ``seed``.
    block : int, default 2048
        Rows scored at a time (memory O(block x n)).
    exclude_group : bool, default True
        Leave the item's own group out of its candidates (``separability.knn``); False counts every
        other item (``separability.knn.all``; ``groups`` is then not read).

    Returns
    -------
    float
        Accuracy in [0, 1]; near 1/K for labels unrelated to X (K balanced classes).
    """
    return float(np.mean(knn_correct(X, y, groups, k=k, metric=metric, block=block, exclude_group=exclude_group)))


def knn_correct(X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None, *, k: int = 1,
                metric: str = "cosine", block: int = 2048, exclude_group: bool = True) -> np.ndarray:
    """Per item, 1.0 if its leave-one-out kNN vote is its class, else 0.0: the mean is :func:`knn_accuracy`.

    The unit of item-level paired tests (a bootstrap over parallel groups, a sign-flip test between
    checkpoints). Arguments, candidates (``exclude_group``: the item's own parallel group left out,
    ``separability.knn``, or every other item, ``separability.knn.all``) and tie-breaking are those
    of :func:`knn_accuracy`, which is computed through this function.

    Returns
    -------
    ndarray [n], float64
        0.0 or 1.0 per row of ``X``.
    """
    if not exclude_group:
        groups = None
    metric = check_metric(metric)
    k = check_int("k", k, 1)
    block = check_int("block", block, 1)
    A = as_rep(X, min_rows=2)
    n = A.shape[0]
    codes, classes = as_labels(y, n)
    g = as_groups(groups, n)
    own_size = np.ones(n, dtype=np.int64) if g is None else np.bincount(g)[g]
    short = np.flatnonzero(n - own_size < k)
    if short.size:
        raise DataError(f"k={k} but {short.size} item(s) have fewer than {k} candidate neighbours "
                        f"(e.g. row {int(short[0])}: {n - int(own_size[short[0]])} outside "
                        f"{'itself' if g is None else 'its group'})",
                        hint="lower k, or pass more items" + ("" if g is None else " / smaller groups"))
    P, sq = prepare_rows(A, metric)
    if g is not None:  # members of each group, to blank out a block's (row, group mate) pairs
        by_group = np.argsort(g, kind="stable")
        group_start = np.concatenate([[0], np.cumsum(np.bincount(g))])
    correct = np.zeros(n)
    for start in range(0, n, block):
        rows = slice(start, min(start + block, n))
        S = similarities(P, sq, rows, metric)
        b = S.shape[0]
        if g is None:
            S[np.arange(b), np.arange(start, rows.stop)] = -np.inf
        else:
            size = own_size[rows]
            r = np.repeat(np.arange(b), size)
            offset = np.arange(r.size) - np.repeat(np.cumsum(size) - size, size)
            S[r, by_group[group_start[g[rows]][r] + offset]] = -np.inf  # itself and its group mates
        if k == 1:
            pred = codes[np.argmax(S, axis=1)]  # argmax takes the first (lowest index) of tied maxima
        else:
            kth = np.partition(S, n - k, axis=1)[:, n - k]
            r, c = np.nonzero(S >= kth[:, None])  # the k nearest, plus any ties at the k-th
            v = S[r, c]
            order = np.lexsort((c, -v, r))  # by row, nearest first, then lowest index
            r, c, v = r[order], c[order], v[order]
            keep = np.arange(r.size) - np.searchsorted(r, r) < k
            key = r[keep] * classes.size + codes[c[keep]]
            votes = np.bincount(key, minlength=b * classes.size).reshape(b, -1)
            strength = np.bincount(key, weights=v[keep], minlength=b * classes.size).reshape(b, -1)
            strength[votes < votes.max(axis=1, keepdims=True)] = -np.inf
            pred = np.argmax(strength, axis=1)  # most votes, then summed similarity, then first class
        correct[rows] = pred == codes[rows]
    return correct


@register_measure("separability.centroid", kind="labelled", direction="higher_better")
def nearest_centroid_accuracy(X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None, *,
                              metric: str = "cosine", seed: int = 0) -> float:
    """Leave-one-out nearest-centroid accuracy: is each item nearest to its own class's mean?

    Each item is assigned to the class whose centroid is nearest, its own class's centroid being
    recomputed without it (in closed form: m_k^(-i) = (n_k m_k - x_i) / (n_k - 1)). With
    ``metric="cosine"`` the centroid is the sum of the class's unit-normalised rows and nearness is
    cosine similarity (so the score ignores row norms); with ``"euclidean"``, the mean of the rows and
    euclidean distance. An item alone in its class has no centroid left and counts as an error; ties
    go to the class that sorts first.

    Parameters
    ----------
    X : array [n, d]
        Representation, one row per item.
    y : array [n]
        Labels (two classes or more).
    groups : array [n], optional
        Accepted for the labelled call shape; unused: a group's other members shift a centroid of
        n_c items by only 1/n_c each (use :func:`knn_accuracy` to exclude them).
    metric : {"cosine", "euclidean"}, default "cosine"
        See above.
    seed : int, default 0
        Unused (deterministic); every measure takes ``seed``.

    Returns
    -------
    float
        Accuracy in [0, 1]; near 1/K for labels unrelated to X (K balanced classes).
    """
    metric = check_metric(metric)
    A = as_rep(X, min_rows=2)
    n = A.shape[0]
    codes, classes = as_labels(y, n)
    as_groups(groups, n)
    P, sq = prepare_rows(A, metric)
    counts = np.bincount(codes, minlength=classes.size).astype(np.float64)
    sums = one_hot(codes, classes.size).T @ P  # [K, d]
    r = np.arange(n)
    n_own = counts[codes]
    G = P @ sums.T  # [n, K]
    if metric == "cosine":
        size2 = np.einsum("ij,ij->i", sums, sums)
        with np.errstate(invalid="ignore", divide="ignore"):
            score = np.where(size2[None, :] > 0, G / np.sqrt(size2)[None, :], -np.inf)
            g_own = G[r, codes]
            rest2 = size2[codes] - 2.0 * g_own + 1.0  # |s_k - u_i|^2
            ok = (n_own > 1) & (rest2 > 1e-12 * (size2[codes] + 1.0))
            score[r, codes] = np.where(ok, (g_own - 1.0) / np.sqrt(np.where(ok, rest2, 1.0)), -np.inf)
    else:
        means = sums / counts[:, None]
        d2 = np.maximum(sq[:, None] - 2.0 * (P @ means.T) + np.einsum("ij,ij->i", means, means)[None, :], 0.0)
        factor = (n_own / np.maximum(n_own - 1.0, 1.0)) ** 2  # |x_i - m_k^(-i)| = n_k/(n_k - 1) |x_i - m_k|
        d2[r, codes] = np.where(n_own > 1, d2[r, codes] * factor, np.inf)
        score = -d2
    return float(np.mean(np.argmax(score, axis=1) == codes))


def centroid_distances(X: np.ndarray, y: np.ndarray, *, metric: str = "cosine") -> tuple[np.ndarray, np.ndarray]:
    """Distance between every pair of class centroids: which classes (languages) lie close together.

    Centroids as in :func:`nearest_centroid_accuracy`: with ``"cosine"`` the mean of the class's
    unit-normalised rows and the distance 1 - cos between centroids; with ``"euclidean"`` the mean of
    the rows and the euclidean distance between means.

    Parameters
    ----------
    X : array [n, d]
        Representation, one row per item.
    y : array [n]
        Labels (two classes or more).
    metric : {"cosine", "euclidean"}, default "cosine"
        See above.

    Returns
    -------
    classes : array [K]
        The class labels, sorted (the order of the matrix).
    matrix : array [K, K]
        Symmetric float64 distances with a zero diagonal.
    """
    metric = check_metric(metric)
    A = as_rep(X)
    codes, classes = as_labels(y, A.shape[0])
    P, _ = prepare_rows(A, metric)
    counts = np.bincount(codes, minlength=classes.size).astype(np.float64)
    C = one_hot(codes, classes.size).T @ P / counts[:, None]
    if metric == "cosine":
        zero = np.flatnonzero(np.linalg.norm(C, axis=1) == 0)
        if zero.size:
            raise DataError(f"the centroid of class(es) {classes[zero].tolist()} is zero, so its cosine "
                            "distance is undefined", hint="use metric='euclidean'")
        D = np.clip(1.0 - unit_norm_rows(C) @ unit_norm_rows(C).T, 0.0, 2.0)
    else:
        D = np.sqrt(np.maximum(((C[:, None, :] - C[None, :, :]) ** 2).sum(-1), 0.0))
    D = (D + D.T) / 2.0
    np.fill_diagonal(D, 0.0)
    return classes, D


# ------------------------------------------------------------------------------------------ geometry
