"""Cross-lingual retrieval (P@1, cosine and ratio margin) and CKA between languages: known answers."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from xlprobe.errors import ConfigError, DataError
from xlprobe.probes.alignment import cross_language_cka
from xlprobe.probes.cka import cka
from xlprobe.probes.parallel import pair_rows
from xlprobe.probes.retrieval import RetrievalResult, retrieval_hits, retrieval_matrix, retrieval_p_at_1
from xlprobe.registry import get_measure

OPTIONS = [("none", "cosine"), ("language", "cosine"), ("none", "margin"), ("language", "margin")]


def _orth(d: int, seed: int) -> np.ndarray:
    Q, R = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return Q * np.sign(np.diag(R))


def _parallel(reps: list[np.ndarray], names: str = "abcdefgh") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack one [m, d] block per language (row i of every block is group i): X, langs, groups."""
    m = reps[0].shape[0]
    return (np.vstack(reps), np.repeat(list(names[:len(reps)]), m), np.tile(np.arange(m), len(reps)))


def _reference(X, langs, groups, *, center, scoring, k):
    """P@1 by the definition, with full matrices and Python sets (no blocks, no running maxima)."""
    X = np.array(X, dtype=np.float64)
    names = sorted(set(langs))
    if center == "language":
        for lang in names:
            X[langs == lang] -= X[langs == lang].mean(0)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    row = {(lang, g): i for i, (lang, g) in enumerate(zip(langs, groups))}
    P = np.full((len(names), len(names)), np.nan)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            shared = sorted(set(groups[langs == a]) & set(groups[langs == b]))
            if i == j or not shared:
                continue
            Q, C = X[[row[a, g] for g in shared]], X[[row[b, g] for g in shared]]
            S = Q @ C.T
            if scoring == "margin":
                kk = min(k, len(shared))
                rq = np.sort(S, axis=1)[:, -kk:].mean(1)
                rc = np.sort(S, axis=0)[-kk:].mean(0)
                S = S / np.maximum((rq[:, None] + rc[None, :]) / 2, 1e-12)  # the documented floor
            P[i, j] = np.mean(S.argmax(1) == np.arange(len(shared)))
    return names, P


def _partial_data(seed: int = 0):
    """Four languages covering different subsets of 40 groups, shuffled: signal, a component common to
    all languages (anisotropy, as in transformer states), a language offset and noise."""
    rng = np.random.default_rng(seed)
    S = rng.standard_normal((40, 16)) + 2.0 * rng.standard_normal(16)
    langs, groups, rows = [], [], []
    for lang, cover in zip("wxyz", (1.0, 0.8, 0.6, 0.35)):
        gs = np.flatnonzero(rng.random(40) < cover)
        offset = 3.0 * rng.standard_normal(16)
        rows.append(S[gs] + offset + 0.9 * rng.standard_normal((gs.size, 16)))
        langs += [lang] * gs.size
        groups += gs.tolist()
    order = rng.permutation(len(langs))
    return np.vstack(rows)[order], np.array(langs)[order], np.array(groups)[order]


# ------------------------------------------------------------------------------------------ correctness
@pytest.mark.filterwarnings("ignore:ratio margin")  # k = 1000 averages all cosines; centred, some are <= 0
@pytest.mark.parametrize("center,scoring", OPTIONS)
@pytest.mark.parametrize("k", [1, 4, 1000])
def test_matches_the_definition_blocked_or_not(center, scoring, k):
    X, langs, groups = _partial_data()
    names, P = _reference(X, langs, groups, center=center, scoring=scoring, k=k)
    for block in (3, 2048):  # blocks smaller than k, and one block per pair
        res = retrieval_matrix(X, langs, groups, center=center, scoring=scoring, k=k, block=block)
        assert isinstance(res, RetrievalResult) and list(res.langs) == names
        np.testing.assert_array_equal(res.p_at_1, P)
    assert 0.1 < np.nanmean(P) < 0.95  # informative data: neither chance nor perfect


def test_counts_shapes_mean_and_immutability():
    X, langs, groups = _partial_data()
    res = retrieval_matrix(X, langs, groups)
    L = len(res.langs)
    assert res.p_at_1.shape == res.n.shape == (L, L)
    assert np.isnan(np.diag(res.p_at_1)).all() and (np.diag(res.n) == 0).all()
    for i, a in enumerate(res.langs):
        for j, b in enumerate(res.langs):
            if i != j:
                shared = set(groups[langs == a]) & set(groups[langs == b])
                assert res.n[i, j] == len(shared) == len(pair_rows(langs, groups, a, b)[0])
    np.testing.assert_array_equal(res.n, res.n.T)
    np.testing.assert_allclose(res.chance[0, 1], 1 / res.n[0, 1])
    off = ~np.eye(L, dtype=bool)
    expected = (res.p_at_1[off] * res.n[off]).sum() / res.n[off].sum()  # total correct / total queries
    assert res.mean() == pytest.approx(expected, abs=1e-15)
    assert retrieval_p_at_1(X, langs, groups) == pytest.approx(expected, abs=1e-15)
    with pytest.raises(ValueError):
        res.p_at_1[0, 1] = 0.5
    with pytest.raises(AttributeError):
        res.k = 3


def _reference_hits(X, langs, groups, *, center, scoring, k):
    """Per item: correct retrievals and target languages, by the definition (full matrices, Python sets)."""
    X = np.array(X, dtype=np.float64)
    names = sorted(set(langs))
    if center == "language":
        for lang in names:
            X[langs == lang] -= X[langs == lang].mean(0)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    row = {(lang, g): i for i, (lang, g) in enumerate(zip(langs, groups))}
    correct, targets = np.zeros(len(X)), np.zeros(len(X))
    for a in names:
        for b in names:
            shared = sorted(set(groups[langs == a]) & set(groups[langs == b]))
            if a == b or not shared:
                continue
            qa, cb = [row[a, g] for g in shared], [row[b, g] for g in shared]
            S = X[qa] @ X[cb].T
            if scoring == "margin":
                kk = min(k, len(shared))
                S = S / np.maximum((np.sort(S, 1)[:, -kk:].mean(1)[:, None] + np.sort(S, 0)[-kk:].mean(0)) / 2, 1e-12)
            correct[qa] += S.argmax(1) == np.arange(len(shared))
            targets[qa] += 1
    return correct, targets


@pytest.mark.parametrize("center,scoring", OPTIONS)
def test_per_item_hits_follow_the_definition_and_average_to_the_registered_value(center, scoring):
    X, langs, groups = _partial_data(3)
    correct, targets = _reference_hits(X, langs, groups, center=center, scoring=scoring, k=4)
    hits = retrieval_hits(X, langs, groups, center=center, scoring=scoring, block=7)
    assert hits.shape == (len(X),) and hits.dtype == np.float64
    np.testing.assert_allclose(hits, correct * len(X) / targets.sum(), rtol=1e-15)
    value = retrieval_p_at_1(X, langs, groups, center=center, scoring=scoring)
    assert hits.mean() == pytest.approx(value, abs=1e-14)
    assert value == pytest.approx(retrieval_matrix(X, langs, groups, center=center, scoring=scoring).mean(), abs=1e-14)
    assert (hits[targets == 0] == 0).all()


def test_per_item_hits_on_fully_parallel_data_are_the_fraction_of_languages():
    rng = np.random.default_rng(11)
    S = rng.standard_normal((30, 12))
    X, langs, groups = _parallel([S + 0.8 * rng.standard_normal((30, 12)) for _ in range(4)])
    correct, _ = _reference_hits(X, langs, groups, center="none", scoring="cosine", k=4)
    hits = retrieval_hits(X, langs, groups)
    np.testing.assert_array_equal(hits, correct / 3)  # 3 other languages: the share that retrieve i's translation
    assert 0.2 < hits.mean() < 0.9 and set(np.unique(hits)) <= {0, 1 / 3, 2 / 3, 1}


# ------------------------------------------------------------------------------------------ known answers
@pytest.mark.parametrize("center,scoring", OPTIONS)
def test_identical_vectors_across_languages_give_one(center, scoring):
    S = np.random.default_rng(1).standard_normal((50, 24))
    X, langs, groups = _parallel([S, S, S])
    res = retrieval_matrix(X, langs, groups, center=center, scoring=scoring)
    off = ~np.eye(3, dtype=bool)
    assert (res.p_at_1[off] == 1.0).all() and (res.n[off] == 50).all()


@pytest.mark.parametrize("center,scoring", OPTIONS)
def test_pure_noise_gives_chance(center, scoring):
    # 4 languages x 50 independent Gaussian items: 12 directed pairs, 600 queries, chance 1/50. The two
    # directions of a pair share a score matrix, so about 300 independent-ish queries: the binomial sd
    # of the mean is about sqrt(0.02 * 0.98 / 300) = 0.008; 0.03 is more than 3.5 sd.
    rng = np.random.default_rng(2)
    X, langs, groups = _parallel([rng.standard_normal((50, 32)) for _ in range(4)])
    assert abs(retrieval_p_at_1(X, langs, groups, center=center, scoring=scoring) - 1 / 50) < 0.03


def test_language_offsets_hurt_raw_cosine_and_centring_removes_them():
    # x = s_i + o_a + noise, s ~ N(0, I_64) so ||s||^2 ~ d = 64. Querying with x_i among y_j = s_j + o_b,
    # the cosine ranks by <s_i, s_j> + <o_a, s_j> (over the nearly constant ||y_j||): the true match leads
    # by ||s_i||^2 ~ d, while the offset adds <o_a, s_j> ~ N(0, R^2) to every candidate. So an offset as
    # large as the signal (R = ||s|| = 8 << d) hurts only mildly, one of R ~ 3 ||s|| already halves P@1,
    # and R = 20 ||s|| >> d leaves it near chance. Subtracting each language's mean removes o_a exactly.
    rng = np.random.default_rng(3)
    m, d = 100, 64
    S = rng.standard_normal((m, d))
    dirs = rng.standard_normal((3, d))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)

    def data(offsets):
        return _parallel([S + o + 0.1 * rng.standard_normal((m, d)) for o in offsets])

    mild = data(8.0 * dirs)
    assert retrieval_p_at_1(*mild) > 0.95
    strong = data(160.0 * dirs)
    assert retrieval_p_at_1(*strong) < 0.1  # chance is 0.01
    assert retrieval_p_at_1(*strong, center="language") == 1.0
    assert get_measure("retrieval.p_at_1.centered")(*strong) == 1.0
    # An offset common to every language cancels to first order: <o, s_j> in the numerator against the
    # same term in ||y_j||, leaving the Euclidean neighbours of the components orthogonal to o.
    common = data(np.repeat(400.0 * dirs[:1], 3, axis=0))
    assert retrieval_p_at_1(*common) == 1.0


def test_language_specific_rotation_defeats_cosine_but_not_cka():
    # Cosine compares coordinates, which a per-language rotation scrambles (centring removes shifts, not
    # rotations), so P@1 falls to chance (1/60); CKA is invariant to orthogonal maps of either side.
    rng = np.random.default_rng(4)
    S = rng.standard_normal((60, 20))
    X, langs, groups = _parallel([S @ _orth(20, 10 + i) + 0.05 * rng.standard_normal((60, 20)) for i in range(3)])
    for center in ("none", "language"):
        assert retrieval_p_at_1(X, langs, groups, center=center) < 0.08
    _, M = cross_language_cka(X, langs, groups)
    assert (M > 0.99).all()


def test_margin_beats_cosine_under_hubs():
    # Queries x_i = mu + s_i; translations y_i = mu + s_i + 1.3 noise, so cos(x_i, y_i) ~ 0.76. Three hub
    # groups sit near mu in both languages: cos(x_i, hub) ~ ||mu|| / ||x_i|| ~ 0.7 for every query, so
    # plain cosine sends many queries to a hub. The ratio margin divides by the hubs' large mean
    # similarity to their k nearest queries and sends them back.
    rng = np.random.default_rng(0)
    m, d, h = 60, 32, 3
    S = rng.standard_normal((m, d))
    mu = rng.standard_normal(d)
    mu *= np.sqrt(d) / np.linalg.norm(mu)
    A, B = mu + S, mu + S + 1.3 * rng.standard_normal((m, d))
    no_hubs = retrieval_matrix(*_parallel([A, B])).p_at_1[0, 1]
    A[-h:], B[-h:] = mu + 0.3 * rng.standard_normal((h, d)), mu + 0.3 * rng.standard_normal((h, d))
    X, langs, groups = _parallel([A, B])
    cos = retrieval_matrix(X, langs, groups).p_at_1[0, 1]
    margin = retrieval_matrix(X, langs, groups, scoring="margin").p_at_1[0, 1]
    assert cos < no_hubs - 0.1  # the hubs do the damage
    assert margin > cos + 0.2 and margin > 0.9


@pytest.mark.parametrize("center,scoring", OPTIONS)
def test_invariant_to_a_common_rotation_and_row_scaling(center, scoring):
    X, langs, groups = _partial_data(5)
    res = retrieval_matrix(X, langs, groups, center=center, scoring=scoring)
    Q = _orth(16, 6)
    rotated = retrieval_matrix(X @ Q, langs, groups, center=center, scoring=scoring)
    np.testing.assert_array_equal(rotated.p_at_1, res.p_at_1)
    if center == "none":  # the cosine ignores each row's length (centring would not: the means change)
        scale = np.random.default_rng(7).uniform(0.1, 10.0, size=(X.shape[0], 1))
        scaled = retrieval_matrix(X * scale, langs, groups, center=center, scoring=scoring)
        np.testing.assert_array_equal(scaled.p_at_1, res.p_at_1)


# ------------------------------------------------------------------------------------------ pairs, CKA
def test_pair_rows_aligns_by_group():
    assert [r.tolist() for r in pair_rows(["en", "fr", "fr", "en"], [1, 2, 1, 2], "en", "fr")] == [[0, 3], [2, 1]]
    X, langs, groups = _partial_data()
    ra, rb = pair_rows(langs, groups, "x", "z")
    assert (langs[ra] == "x").all() and (langs[rb] == "z").all()
    assert groups[ra].tolist() == groups[rb].tolist() == sorted(set(groups[langs == "x"]) & set(groups[langs == "z"]))
    with pytest.raises(DataError, match=r"b='de' is not one of the languages"):
        pair_rows(langs, groups, "x", "de")


@pytest.mark.parametrize("kernel,debiased", [("linear", False), ("linear", True), ("rbf", False)])
def test_cross_language_cka_is_cka_on_aligned_rows(kernel, debiased):
    X, langs, groups = _partial_data()
    names, M = cross_language_cka(X, langs, groups, kernel=kernel, debiased=debiased)
    assert names == ["w", "x", "y", "z"]
    np.testing.assert_array_equal(M, M.T)
    np.testing.assert_array_equal(np.diag(M), 1.0)
    for i, a in enumerate(names):
        for j, b in enumerate(names[i + 1:], start=i + 1):
            ra, rb = pair_rows(langs, groups, a, b)
            assert M[i, j] == pytest.approx(cka(X[ra], X[rb], kernel=kernel, debiased=debiased), abs=1e-12)


def test_cross_language_cka_skips_pairs_with_too_few_shared_groups():
    rng = np.random.default_rng(8)
    langs = np.array(["a"] * 10 + ["b"] * 10 + ["c"] * 3)
    groups = np.r_[np.arange(10), np.arange(10), [0, 1, 2]]
    X = rng.standard_normal((23, 5))
    with pytest.warns(RuntimeWarning, match=r"2 language pair\(s\) share fewer than 4"):
        _, M = cross_language_cka(X, langs, groups, debiased=True)
    assert np.isnan(M[0, 2]) and np.isnan(M[2, 1]) and np.isfinite(M[0, 1])
    X[20:] = 1.0  # language c constant: CKA undefined, and the error names the pair
    with pytest.raises(DataError, match=r"CKA between 'a' and 'c' \(3 shared groups\)"):
        cross_language_cka(X, langs, groups)


# ------------------------------------------------------------------------------------------ bad inputs
def test_pair_without_shared_groups_is_nan_and_skipped_in_the_mean():
    rng = np.random.default_rng(9)
    langs = np.array(["a"] * 10 + ["b"] * 10 + ["c"] * 20)
    groups = np.r_[np.arange(10), np.arange(10, 20), np.arange(20)]
    S = rng.standard_normal((20, 8))
    X = np.vstack([S[:10], S[10:], S]) + 0.01 * rng.standard_normal((40, 8))
    with pytest.warns(RuntimeWarning, match=r"1 language pair\(s\) share no parallel group.*'a'-'b'"):
        res = retrieval_matrix(X, langs, groups)
    assert np.isnan(res.p_at_1[0, 1]) and np.isnan(res.p_at_1[1, 0]) and res.n[0, 1] == 0
    assert res.n[0, 2] == res.n[1, 2] == 10 and res.mean() == 1.0
    with pytest.raises(DataError, match="no two languages share a parallel group"):
        retrieval_matrix(X[:20], langs[:20], groups[:20])


def test_degenerate_margin_denominator_warns():
    # Every item of a language identical: centred, its rows are zero, so every cosine and every
    # neighbourhood mean is 0 and the ratio margin's denominator has to be floored.
    X, langs, groups = _parallel([np.ones((5, 3)), np.random.default_rng(10).standard_normal((5, 3))])
    with pytest.warns(RuntimeWarning, match="floored"):
        res = retrieval_matrix(X, langs, groups, center="language", scoring="margin")
    assert np.isfinite(res.p_at_1[0, 1])


def _good():
    return _parallel([np.eye(4), np.eye(4)])


@pytest.mark.parametrize("change,exc,match", [
    (lambda X, lg, g: (X, np.array(["en"] * 8), g), DataError, r"langs has 1 distinct label.*at least 2"),
    (lambda X, lg, g: (X, lg, None), DataError, "groups is None"),
    (lambda X, lg, g: (X, np.array(["en", "en", "fr", "fr", "en", "en", "fr", "fr"]), np.array([3, 3, 1, 1, 2, 5, 1, 6])),
     DataError, r"2 \(language, group\) pair\(s\) occur more than once, e\.g\. \('en', 3\) x2, \('fr', 1\) x3"),
    (lambda X, lg, g: (X, lg[:-1], g), DataError, r"langs must be 1-D with one label per item \(8\)"),
    (lambda X, lg, g: (X, lg, g[:-1]), DataError, r"groups must be 1-D with one entry per item \(8\)"),
    (lambda X, lg, g: (np.where(np.eye(8, 4) > 0, np.nan, 0.0), lg, g), DataError, "NaN or inf"),
    (lambda X, lg, g: (X[:, :, None], lg, g), DataError, "2-D"),
])
def test_bad_data_raises(change, exc, match):
    X, langs, groups = change(*_good())
    with pytest.raises(exc, match=match):
        retrieval_matrix(X, langs, groups)
    with pytest.raises(exc, match=match.replace("langs", "y")):
        retrieval_p_at_1(X, langs, groups)


@pytest.mark.parametrize("kw,match", [
    ({"center": "lang"}, r"center must be one of \['none', 'language'\]; got 'lang'"),
    ({"scoring": "csls"}, r"scoring must be one of \['cosine', 'margin'\]; got 'csls'"),
    ({"k": 0}, r"k must be an integer >= 1; got 0"),
    ({"block": 2.5}, r"block must be an integer >= 1; got 2.5"),
])
def test_bad_options_raise(kw, match):
    with pytest.raises(ConfigError, match=match):
        retrieval_matrix(*_good(), **kw)
    with pytest.raises(ConfigError, match="kernel must be one of"):
        cross_language_cka(*_good(), kernel="poly")
    with pytest.raises(ConfigError, match="debiased must be True or False"):
        cross_language_cka(*_good(), debiased="yes")


# ------------------------------------------------------------------------------------------ registry
@pytest.mark.filterwarnings("ignore:ratio margin")  # uncentred offsets leave a pair with negative neighbourhoods
def test_registered_names_resolve():
    X, langs, groups = _partial_data()
    plain, centred = get_measure("retrieval.p_at_1"), get_measure("retrieval.p_at_1.centered")
    margin = get_measure("retrieval.p_at_1.margin")
    for spec in (plain, centred, margin):
        assert (spec.kind, spec.direction, spec.reads, spec.fn) == \
            ("labelled", "higher_better", "languages", retrieval_p_at_1)
        assert spec.summary
    assert dict(plain.defaults) == {} and dict(centred.defaults) == {"center": "language"}
    assert dict(margin.defaults) == {"scoring": "margin"}
    assert margin(X, langs, groups) == pytest.approx(retrieval_hits(X, langs, groups, scoring="margin", k=4).mean())
    assert centred(X, langs, groups) == pytest.approx(retrieval_hits(X, langs, groups, center="language").mean())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert plain(X, langs, groups, seed=3) == retrieval_p_at_1(X, langs, groups)
        assert centred(X, langs, groups) == retrieval_p_at_1(X, langs, groups, center="language")
        assert centred(X, langs, groups, scoring="margin") == \
            retrieval_p_at_1(X, langs, groups, center="language", scoring="margin")
