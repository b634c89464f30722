"""Separability (probes/separability.py): known answers, brute-force references, sklearn's silhouette, invariances."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import silhouette_score

from xlprobe.errors import ConfigError, DataError
from xlprobe.probes import separability
from xlprobe.probes.separability import (
    centroid_distances,
    fisher_ratio,
    knn_accuracy,
    knn_correct,
    nearest_centroid_accuracy,
    silhouette,
)
from xlprobe.registry import get_measure

METRICS = ("cosine", "euclidean")


# ----------------------------------------------------------------------------- data and references
def _blobs(sizes: tuple[int, ...], d: int, sep: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit Gaussian classes around sep * e_k (distinct directions, so cosine separates them too)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(sizes)), sizes)
    X = rng.standard_normal((y.size, d))
    X[np.arange(y.size), y] += sep
    return X, y


def _orth(d: int, seed: int) -> np.ndarray:
    Q, R = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return Q * np.sign(np.diag(R))


def _knn_reference(X, y, groups, k, metric):
    """LOO kNN from the full n x n distance matrix, with the documented tie rules written out."""
    n = len(y)
    if metric == "cosine":
        U = X / np.linalg.norm(X, axis=1, keepdims=True)
        sim = U @ U.T
    else:
        sim = -((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)  # nearer = larger
    bad = np.eye(n, dtype=bool) if groups is None else groups[:, None] == groups[None, :]
    correct = np.zeros(n)
    for i in range(n):
        cand = np.flatnonzero(~bad[i])
        order = cand[np.lexsort((cand, -sim[i, cand]))][:k]  # nearest first, then lowest index
        classes = np.unique(y)
        votes = np.array([np.sum(y[order] == c) for c in classes])
        strength = np.array([sim[i, order][y[order] == c].sum() for c in classes])
        tied = np.flatnonzero(votes == votes.max())
        pred = classes[tied[np.argmax(strength[tied])]]
        correct[i] = pred == y[i]
    return correct  # per item; the accuracy is its mean


def _centroid_reference(X, y, metric):
    """LOO nearest centroid, each item's class centroids recomputed without it, one item at a time."""
    P = X / np.linalg.norm(X, axis=1, keepdims=True) if metric == "cosine" else X
    classes, correct = np.unique(y), 0
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        scores = []
        for c in classes:
            members = P[keep & (y == c)]
            if len(members) == 0:
                scores.append(-np.inf)
                continue
            m = members.mean(0)
            scores.append(P[i] @ m / np.linalg.norm(m) if metric == "cosine" else -np.linalg.norm(P[i] - m))
        correct += classes[int(np.argmax(scores))] == y[i]
    return correct / len(y)


# ----------------------------------------------------------------------------- separability: known answers
def test_well_separated_classes_are_separated():
    X, y = _blobs((40, 50, 30), d=10, sep=30.0, seed=0)
    for metric in METRICS:
        assert knn_accuracy(X, y, metric=metric) == 1.0
        assert knn_accuracy(X, y, k=5, metric=metric) == 1.0
        assert nearest_centroid_accuracy(X, y, metric=metric) == 1.0
        assert silhouette(X, y, metric=metric) > 0.8
    # between scatter per item ~ 30^2 * 2/3, within ~ d = 10: a ratio of about 60; the null is ~0.02
    assert fisher_ratio(X, y) > 40


def test_random_labels_score_near_chance():
    rng = np.random.default_rng(1)
    n, K, d = 900, 3, 50
    X = rng.standard_normal((n, d))
    y = rng.permutation(np.arange(n) % K)
    # Under the null each LOO prediction is right with probability ~1/K; the binomial SE is
    # sqrt(p(1-p)/n) = 0.016 here. Mutual nearest neighbours make outcomes correlated, which inflates
    # it by at most ~1.4, so 4 binomial SEs (0.063) is still about 3 true SEs.
    tol = 4 * np.sqrt((1 / K) * (1 - 1 / K) / n)
    for metric in METRICS:
        assert abs(knn_accuracy(X, y, metric=metric) - 1 / K) < tol
        assert abs(knn_accuracy(X, y, k=7, metric=metric) - 1 / K) < tol
        assert abs(nearest_centroid_accuracy(X, y, metric=metric) - 1 / K) < tol
    # For isotropic Gaussian X, tr S_B and tr S_W are independent chi-squares with (K-1)d and (n-K)d
    # degrees of freedom, so F (n-K)/(K-1) follows F((K-1)d, (n-K)d) exactly: mean ~1, null F ~ (K-1)/(n-K).
    F = fisher_ratio(X, y)
    assert 0.001 < stats.f.cdf(F * (n - K) / (K - 1), (K - 1) * d, (n - K) * d) < 0.999
    assert abs(F / ((K - 1) / (n - K)) - 1) < 0.5


def test_fisher_ratio_from_the_definition():
    X, y = _blobs((7, 12, 5), d=4, sep=2.0, seed=2)
    m = X.mean(0)
    between = sum((y == c).sum() * np.sum((X[y == c].mean(0) - m) ** 2) for c in range(3))
    within = sum(np.sum((X[y == c] - X[y == c].mean(0)) ** 2) for c in range(3))
    assert fisher_ratio(X, y) == pytest.approx(between / within, rel=1e-12)
    assert fisher_ratio(np.array([[0.0], [0.0], [1.0], [1.0]]), [0, 0, 1, 1]) == np.inf


# ----------------------------------------------------------------------------- silhouette
@pytest.mark.parametrize("metric", METRICS)
def test_silhouette_equals_sklearn(metric):
    X, y = _blobs((25, 20, 15), d=6, sep=1.5, seed=3)
    X, y = np.vstack([X, 3 * np.ones((1, 6))]), np.append(y, 3)  # a singleton class scores 0
    X += 0.5  # off the origin, so cosine and euclidean differ
    expected = silhouette_score(X, y, metric=metric)
    assert silhouette(X, y, metric=metric) == pytest.approx(expected, abs=1e-10)
    assert silhouette(X, y, metric=metric, block=7) == pytest.approx(expected, abs=1e-10)
    assert silhouette(X.astype(np.float32), y.astype(str), metric=metric) == pytest.approx(
        silhouette_score(X.astype(np.float32).astype(np.float64), y, metric=metric), abs=1e-10)


def test_silhouette_subsample_is_seeded_and_stratified():
    X, y = _blobs((2000, 700, 300), d=8, sep=2.0, seed=4)
    idx = separability._stratified_subsample(y, 600, np.random.default_rng(5))
    assert np.bincount(y[idx]).tolist() == [400, 140, 60] and np.unique(idx).size == idx.size
    small = silhouette(X, y, max_items=600, seed=5, metric="euclidean")
    assert small == pytest.approx(silhouette_score(X[idx], y[idx], metric="euclidean"), abs=1e-10)
    assert small == silhouette(X, y, max_items=600, seed=5, metric="euclidean")
    assert small != silhouette(X, y, max_items=600, seed=6, metric="euclidean")
    full = silhouette(X, y, max_items=3000, metric="euclidean", block=512)
    assert abs(small - full) < 0.03
    tiny = separability._stratified_subsample(np.array([0] * 998 + [1, 2]), 10, np.random.default_rng(0))
    assert np.bincount(np.array([0] * 998 + [1, 2])[tiny]).tolist() == [10, 1, 1]  # every class kept


# ----------------------------------------------------------------------------- kNN
@pytest.mark.parametrize("metric", METRICS)
def test_knn_equals_brute_force_reference(metric):
    X, y = _blobs((30, 25, 20), d=5, sep=1.0, seed=6)
    groups = np.arange(y.size) % 20
    for k in (1, 3, 4):
        for g in (None, groups):
            per_item = _knn_reference(X, y, g, k, metric)
            ref = per_item.mean()
            assert knn_accuracy(X, y, g, k=k, metric=metric) == pytest.approx(ref, abs=1e-12)
            assert knn_accuracy(X, y, g, k=k, metric=metric, block=8) == pytest.approx(ref, abs=1e-12)
            np.testing.assert_array_equal(knn_correct(X, y, g, k=k, metric=metric, block=8), per_item)


def test_knn_ties_are_broken_deterministically():
    # item 0 at 0 is equidistant from rows 1 (-1) and 2 (+1): k=1 takes the lower index
    X = np.array([[0.0], [-1.0], [1.0]])
    assert knn_accuracy(X, [0, 0, 1], k=1, metric="euclidean") == pytest.approx(2 / 3)
    assert knn_accuracy(X, [0, 1, 0], k=1, metric="euclidean") == pytest.approx(1 / 3)
    # k=2, one vote each: the class of the nearer voter wins (rows 2, 3); equal strength -> the first class
    # (row 0: labels 1, truth 1, predicted 0); row 1's two nearest are both class 1 (wrong); row 4 right
    X = np.array([[0.0], [-1.0], [1.0], [-10.0], [10.0]])
    assert knn_accuracy(X, [1, 0, 1, 0, 1], k=2, metric="euclidean") == pytest.approx(3 / 5)


@pytest.mark.parametrize("metric", METRICS)
def test_knn_group_exclusion_on_parallel_data(metric):
    # two languages, each verse a content vector c_v plus +/- a small language offset on its own axis:
    # a verse's translation is its nearest row, but among other verses the same language is nearer
    rng = np.random.default_rng(7)
    n_verses, d = 40, 16
    content = np.hstack([rng.standard_normal((n_verses, d - 1)), np.zeros((n_verses, 1))])
    offset = np.zeros(d)
    offset[-1] = 0.05
    X = np.vstack([content + offset, content - offset])
    lang = np.repeat(["en", "fr"], n_verses)
    verse = np.tile(np.arange(n_verses), 2)
    assert knn_accuracy(X, lang, metric=metric) == 0.0
    assert knn_accuracy(X, lang, verse, metric=metric) == 1.0
    assert knn_accuracy(X, lang, verse, k=3, metric=metric) == 1.0


# ----------------------------------------------------------------------------- nearest centroid and distances
@pytest.mark.parametrize("metric", METRICS)
def test_nearest_centroid_equals_refitting_without_each_item(metric):
    X, y = _blobs((20, 15, 10), d=4, sep=1.0, seed=8)
    X, y = np.vstack([X, np.ones((1, 4))]) + 0.3, np.append(y, 3)  # a singleton: always an error
    ref = _centroid_reference(X, y, metric)
    assert 0.3 < ref < 0.95
    assert nearest_centroid_accuracy(X, y, metric=metric) == pytest.approx(ref, abs=1e-12)


def test_centroid_distances_known_answer():
    X = np.array([[1.0, 0.0], [5.0, 0.0], [0.0, 2.0], [0.0, 4.0], [3.0, 3.0]])
    y = np.array(["fr", "fr", "en", "en", "de"])
    classes, D = centroid_distances(X, y, metric="cosine")
    assert classes.tolist() == ["de", "en", "fr"]
    assert np.allclose(D, [[0, 1 - np.sqrt(0.5), 1 - np.sqrt(0.5)], [1 - np.sqrt(0.5), 0, 1],
                           [1 - np.sqrt(0.5), 1, 0]], atol=1e-12)
    _, E = centroid_distances(X, y, metric="euclidean")  # means (3, 3), (0, 3), (3, 0)
    assert np.allclose(E, [[0, 3, 3], [3, 0, np.sqrt(18)], [3, np.sqrt(18), 0]], atol=1e-12)
    assert np.array_equal(D, D.T) and np.all(np.diag(E) == 0)


# ----------------------------------------------------------------------------- invariances
def test_cosine_accuracies_ignore_row_scale():
    X, y = _blobs((60, 60, 60), d=6, sep=1.2, seed=14)
    X += 0.5
    scaled = X * np.random.default_rng(15).uniform(0.1, 10.0, size=(X.shape[0], 1))
    for fn in (knn_accuracy, nearest_centroid_accuracy):
        acc = fn(X, y, metric="cosine")
        assert 0.4 < acc < 0.95 and fn(scaled, y, metric="cosine") == acc
    assert knn_accuracy(scaled, y, k=5) == knn_accuracy(X, y, k=5)


def test_fisher_ratio_ignores_rotation():
    X, y = _blobs((30, 40, 20), d=8, sep=1.5, seed=16)
    X[:, 0] *= 5.0  # anisotropic, so a rotation really changes the coordinates
    moved = 2.5 * X @ _orth(8, 17) + 4.0
    assert fisher_ratio(moved, y) == pytest.approx(fisher_ratio(X, y), rel=1e-10)


# ----------------------------------------------------------------------------- bad inputs, registry
_X, _Y = _blobs((5, 5), d=3, sep=3.0, seed=18)


@pytest.mark.parametrize("call,error,match", [
    (lambda: knn_accuracy(_X, _Y, metric="manhattan"), ConfigError, r"metric must be one of \['cosine', 'euclidean'\]"),
    (lambda: silhouette(_X, _Y, metric="l2"), ConfigError, "metric must be one of"),
    (lambda: centroid_distances(_X, _Y, metric=None), ConfigError, "metric must be one of"),
    (lambda: knn_accuracy(np.vstack([_X[:-1], np.zeros((1, 3))]), _Y), DataError, r"1 row\(s\) with zero norm \(rows \[9\]\)"),
    (lambda: nearest_centroid_accuracy(np.zeros((10, 3)), _Y), DataError, "zero norm"),
    (lambda: knn_accuracy(_X, _Y, k=0), ConfigError, "k must be an integer >= 1; got 0"),
    (lambda: knn_accuracy(_X, _Y, k=10), DataError, "k=10 but 10 item"),
    (lambda: knn_accuracy(_X, _Y, np.arange(10) % 2, k=6), DataError, "fewer than 6 candidate neighbours"),
    (lambda: knn_accuracy(_X, _Y, block=0), ConfigError, "block must be"),
    (lambda: fisher_ratio(_X[:, 0], _Y), DataError, "must be 2-D"),
    (lambda: fisher_ratio(_X, _Y[:-1]), DataError, "one label per item"),
    (lambda: fisher_ratio(_X, np.zeros(10)), DataError, "at least 2 are needed"),
    (lambda: fisher_ratio(np.ones((10, 3)), _Y), DataError, "constant across rows"),
    (lambda: nearest_centroid_accuracy(np.where(_X > 0, np.nan, _X), _Y), DataError, "NaN or inf"),
    (lambda: knn_accuracy(_X, _Y, np.arange(9)), DataError, "groups must be 1-D"),
    (lambda: silhouette(_X, np.arange(10)), DataError, "classes <= n - 1"),
    (lambda: silhouette(_X, _Y, max_items=2), ConfigError, "max_items must exceed the number of classes"),
    (lambda: silhouette(_X, _Y, max_items=1), ConfigError, "max_items must be an integer >= 2"),
])
def test_bad_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_knn_variants_with_and_without_the_own_group():
    rng = np.random.default_rng(0)
    content = rng.normal(size=(60, 16))
    langs = np.repeat([0, 1], 60)
    X = np.vstack([content, content + 0.01 * rng.normal(size=(60, 16))])  # each verse and its near-copy translation
    groups = np.tile(np.arange(60), 2)
    excluded = get_measure("separability.knn")(X, langs, groups, seed=0)
    everyone = get_measure("separability.knn.all")(X, langs, groups, seed=0)
    assert everyone == 0.0  # the nearest item is always the translation, of the other language
    assert everyone == knn_accuracy(X, langs, None)
    assert 0.3 < excluded < 0.7  # among other verses, language says nothing here
    assert get_measure("separability.knn.all").defaults == {"exclude_group": False}


@pytest.mark.parametrize("name,exclude_group", [("separability.knn", True), ("separability.knn.all", False)])
def test_knn_per_item_scores_average_to_both_registered_variants(name, exclude_group):
    X, y = _blobs((30, 25, 20), d=5, sep=0.7, seed=9)
    groups = np.arange(y.size) % 25
    for k in (1, 3):
        per_item = knn_correct(X, y, groups, k=k, exclude_group=exclude_group)
        assert per_item.shape == (y.size,) and set(np.unique(per_item)) == {0.0, 1.0}
        assert per_item.mean() == get_measure(name)(X, y, groups, k=k, seed=0)
        np.testing.assert_array_equal(per_item, _knn_reference(X, y, groups if exclude_group else None, k, "cosine"))


def test_fisher_ratio_is_exactly_zero_when_class_means_agree_up_to_rounding():
    """Translations that a decoder reads as the same target: identical rows across classes, ratio 0, not 1e-32."""
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(50, 8)).astype(np.float32)
    X = np.repeat(rows, 4, axis=0)  # each verse once per language, identical
    y = np.tile(np.arange(4), 50)
    assert fisher_ratio(X, y) == 0.0
