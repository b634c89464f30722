"""Alignment vs isomorphism (probes/alignment.py): neighbour overlap against its definition and on planted
cases (aligned, one language rotated, unrelated), and cross-language CKA blind to a rotation that breaks P@1."""
from __future__ import annotations

import numpy as np
import pytest

from xlprobe.errors import ConfigError, DataError
from xlprobe.probes.alignment import cross_language_cka, neighbour_overlap, neighbour_overlaps
from xlprobe.probes.retrieval import retrieval_p_at_1
from xlprobe.registry import get_measure


def _orth(d: int, seed: int) -> np.ndarray:
    Q, R = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return Q * np.sign(np.diag(R))


def _parallel(reps: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack one [m, d] block per language (row i of every block is group i): X, langs, groups."""
    m = reps[0].shape[0]
    return np.vstack(reps), np.repeat(list("abcdefgh"[:len(reps)]), m), np.tile(np.arange(m), len(reps))


def _partial(seed: int = 0):
    """Three languages covering different subsets of 50 groups, shuffled; shared signal plus noise."""
    rng = np.random.default_rng(seed)
    S = rng.standard_normal((50, 12))
    X, langs, groups = [], [], []
    for lang, cover in zip("xyz", (1.0, 0.7, 0.5)):
        gs = np.flatnonzero(rng.random(50) < cover)
        X.append(S[gs] + rng.standard_normal(12) + 0.7 * rng.standard_normal((gs.size, 12)))
        langs += [lang] * gs.size
        groups += gs.tolist()
    order = rng.permutation(len(langs))
    return np.vstack(X)[order], np.array(langs)[order], np.array(groups)[order]


def _reference(X, langs, groups, k, center):
    """Per item: summed overlap over the languages holding its translation, and their number (sets, full matrices)."""
    X = np.array(X, dtype=np.float64)
    if center == "language":
        for lang in set(langs):
            X[langs == lang] -= X[langs == lang].mean(0)
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    sums, counts = np.zeros(len(X)), np.zeros(len(X))
    for i in range(len(X)):
        for b in sorted(set(langs) - {langs[i]}):
            (j,) = np.flatnonzero((langs == b) & (groups == groups[i])) if groups[i] in groups[langs == b] else (None,)
            if j is None:
                continue
            cand = np.flatnonzero((langs == b) & (np.arange(len(X)) != j))

            def nearest(v, cand=cand):
                return set(cand[np.lexsort((cand, -(U[cand] @ v)))][:k])  # nearest first, then lower row
            sums[i] += len(nearest(U[i]) & nearest(U[j])) / k
            counts[i] += 1
    return sums, counts


# ------------------------------------------------------------------------------------------ definition
@pytest.mark.parametrize("center", ["none", "language"])
@pytest.mark.parametrize("k", [1, 5])
def test_matches_the_definition_blocked_or_not(center, k):
    X, langs, groups = _partial()
    sums, counts = _reference(X, langs, groups, k, center)
    expected = sums * len(X) / counts.sum()
    for block in (4, 2048):
        got = neighbour_overlaps(X, langs, groups, k=k, center=center, block=block)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)
    value = neighbour_overlap(X, langs, groups, k=k, center=center)
    assert value == pytest.approx(got.mean(), abs=1e-14) and value == pytest.approx(sums.sum() / counts.sum())
    assert (got[counts == 0] == 0).all() and 0.1 < value < 0.9


# ------------------------------------------------------------------------------------------ planted cases
def test_aligned_languages_overlap_near_one():
    rng = np.random.default_rng(1)
    S = rng.standard_normal((100, 32))
    X, langs, groups = _parallel([S + 0.05 * rng.standard_normal((100, 32)) for _ in range(3)])
    per_item = neighbour_overlaps(X, langs, groups)
    assert neighbour_overlap(X, langs, groups) > 0.9
    assert per_item.min() >= 0.5 and per_item.max() <= 1.0  # fully parallel: each item's mean over 2 languages


@pytest.mark.parametrize("case", ["rotated", "independent"])
def test_rotated_or_unrelated_language_overlaps_at_chance(case):
    # chance: k of the m - 1 = 199 other items of b are the translation's neighbours, so k / 199 = 0.050
    rng = np.random.default_rng(2)
    S = rng.standard_normal((200, 32))
    other = S @ _orth(32, 3) if case == "rotated" else rng.standard_normal((200, 32))
    X, langs, groups = _parallel([S + 0.05 * rng.standard_normal((200, 32)), other])
    value = neighbour_overlap(X, langs, groups, k=10)
    assert abs(value - 10 / 199) < 0.02


def test_a_rotation_of_one_language_keeps_cka_and_breaks_alignment():
    """Isomorphism vs alignment: rotate one language; CKA stays, P@1 and the neighbour overlap collapse."""
    rng = np.random.default_rng(4)
    S = rng.standard_normal((120, 24))
    noisy = [S + 0.05 * rng.standard_normal((120, 24)) for _ in range(2)]
    X, langs, groups = _parallel(noisy)
    Xr, _, _ = _parallel([noisy[0], noisy[1] @ _orth(24, 5)])
    (_, before), (_, after) = cross_language_cka(X, langs, groups), cross_language_cka(Xr, langs, groups)
    assert before[0, 1] == pytest.approx(after[0, 1], abs=1e-10) and before[0, 1] > 0.99
    assert retrieval_p_at_1(X, langs, groups) == 1.0 and retrieval_p_at_1(Xr, langs, groups) < 0.05
    assert neighbour_overlap(X, langs, groups) > 0.9 and neighbour_overlap(Xr, langs, groups) < 0.15


def test_language_centring_removes_an_offset():
    rng = np.random.default_rng(6)
    S = rng.standard_normal((80, 16))
    X, langs, groups = _parallel([S + 0.05 * rng.standard_normal((80, 16)), S + 6.0 * rng.standard_normal(16)])
    assert neighbour_overlap(X, langs, groups, center="language") > 0.9
    assert neighbour_overlap(X, langs, groups) < neighbour_overlap(X, langs, groups, center="language") - 0.2


# ------------------------------------------------------------------------------------------ inputs, registry
def test_bad_inputs():
    X, langs, groups = _parallel([np.eye(6), np.eye(6)])
    with pytest.raises(DataError, match=r"k=6 needs more than k items per language; 'a' has 6"):
        neighbour_overlaps(X, langs, groups, k=6)
    with pytest.raises(ConfigError, match=r"center must be one of"):
        neighbour_overlaps(X, langs, groups, center="lang")
    with pytest.raises(DataError, match="groups is None"):
        neighbour_overlap(X, langs, None)
    with pytest.raises(DataError, match="no two languages share"):
        neighbour_overlaps(X, langs, np.arange(12), k=2)


def test_registered():
    spec = get_measure("alignment.neighbour_overlap")
    assert (spec.kind, spec.direction, spec.reads, spec.fn) == ("labelled", "higher_better", "languages",
                                                                neighbour_overlap)
    assert spec.summary and dict(spec.defaults) == {}
    X, langs, groups = _partial(1)
    assert spec(X, langs, groups, seed=0, k=3) == pytest.approx(neighbour_overlaps(X, langs, groups, k=3).mean())
