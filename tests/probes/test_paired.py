"""Paired comparisons: known answers, a planted effect found only where planted, nominal coverage, null p-values."""
from __future__ import annotations

import numpy as np
import pytest

from xlprobe.errors import ConfigError, DataError
from xlprobe.probes.paired import (
    adjust_pvalues,
    draws_interval,
    half_sample_interval,
    mean_interval,
    paired_item_stats,
    paired_set_stats,
)


def _grouped_scores(rng: np.random.Generator, G: int, per: int, L: int, effect: np.ndarray) -> tuple:
    """Per-item scores of two checkpoints with a shared group effect (correlated within a group)."""
    groups = np.repeat(np.arange(G), per)
    shared = rng.normal(0, 1.0, size=(G, L))[groups]  # what both checkpoints see of the item
    a = shared + rng.normal(0, 0.5, size=(G * per, L)) + effect
    b = shared + rng.normal(0, 0.5, size=(G * per, L))
    return a, b, groups


def test_difference_is_the_mean_difference_and_interval_brackets_it():
    rng = np.random.default_rng(0)
    a, b, g = _grouped_scores(rng, 40, 4, 3, np.array([0.0, 0.3, -0.3]))
    r = paired_item_stats(a, b, g, n_boot=500, n_perm=999, seed=1)
    np.testing.assert_allclose(r.difference, (a - b).mean(axis=0))
    assert np.all(r.low <= r.difference) and np.all(r.difference <= r.high)
    assert r.n_groups == 40 and "sign-flip" in r.test


def test_planted_layer_effect_is_significant_there_and_nowhere_else_after_holm():
    rng = np.random.default_rng(3)
    L, planted = 10, 4
    effect = np.zeros(L)
    effect[planted] = 0.25
    a, b, g = _grouped_scores(rng, 120, 4, L, effect)
    r = paired_item_stats(a, b, g, n_boot=300, n_perm=2000, seed=0)
    p = adjust_pvalues(r.p_value, "holm")
    assert p[planted] < 0.01
    assert np.all(np.delete(p, planted) > 0.05), p
    assert r.low[planted] > 0  # the interval excludes 0 where planted
    assert np.sum((np.delete(r.low, planted) > 0) | (np.delete(r.high, planted) < 0)) <= 1


def test_interval_covers_the_true_difference_at_its_nominal_rate():
    rng = np.random.default_rng(11)
    true = 0.2
    covered = []
    for sim in range(200):
        a, b, g = _grouped_scores(rng, 30, 4, 1, np.array([true]))
        lo, hi = mean_interval(a - b, g, n_boot=400, ci=0.9, seed=sim)[1:]
        covered.append(lo[0] <= true <= hi[0])
    rate = float(np.mean(covered))
    assert 0.82 <= rate <= 0.96, rate  # nominal 0.90; 200 simulations: sd 0.02; percentile slightly liberal


def test_p_values_are_uniform_under_the_null():
    rng = np.random.default_rng(5)
    ps = []
    for sim in range(200):
        a, b, g = _grouped_scores(rng, 25, 3, 1, np.zeros(1))
        ps.append(paired_item_stats(a, b, g, n_boot=10, n_perm=499, seed=sim).p_value[0])
    ps = np.array(ps)
    assert 0.02 <= np.mean(ps < 0.05) <= 0.09
    assert 0.4 <= np.mean(ps) <= 0.6


def test_grouping_matters_correlated_groups_widen_the_interval():
    rng = np.random.default_rng(2)
    G, per = 30, 8
    groups = np.repeat(np.arange(G), per)
    d = rng.normal(0, 1, G)[groups] + rng.normal(0, 0.1, G * per)  # differences shared within a group
    _, lo_g, hi_g = mean_interval(d, groups, n_boot=500, seed=0)
    _, lo_i, hi_i = mean_interval(d, None, n_boot=500, seed=0)
    assert (hi_g - lo_g)[0] > 2 * (hi_i - lo_i)[0]


def test_exact_enumeration_for_few_groups():
    a = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    b = np.zeros(6)
    r = paired_item_stats(a, b, np.array([0, 0, 1, 1, 2, 2]), n_boot=50, n_perm=10_000)
    assert "exact (8 flips)" in r.test
    assert r.p_value[0] == pytest.approx(2 / 8)  # all +, all -: the two extreme flips


def test_identical_scores_give_zero_difference_and_p_one():
    x = np.random.default_rng(0).integers(0, 2, size=(50, 2)).astype(float)
    r = paired_item_stats(x, x.copy(), np.arange(50) // 5, n_boot=50, n_perm=200)
    assert np.all(r.difference == 0) and np.all(r.p_value == 1.0)


def test_nan_column_is_nan_others_computed():
    a = np.random.default_rng(0).normal(size=(40, 2))
    b = a + 0.1
    a[3, 1] = np.nan
    r = paired_item_stats(a, b, np.arange(40) // 4, n_boot=50, n_perm=100)
    assert np.isnan(r.difference[1]) and np.isnan(r.p_value[1]) and np.isfinite(r.difference[0])


def test_holm_and_bh_on_a_known_family():
    p = np.array([0.01, 0.04, 0.03, 0.005, np.nan])
    holm = adjust_pvalues(p, "holm")
    np.testing.assert_allclose(holm[:4], [0.03, 0.06, 0.06, 0.02])
    bh = adjust_pvalues(p, "bh")
    np.testing.assert_allclose(bh[:4], [0.02, 0.04, 0.04, 0.02])
    assert np.isnan(holm[4]) and np.isnan(bh[4])
    np.testing.assert_array_equal(adjust_pvalues(p, "none"), p)
    with pytest.raises(ConfigError, match="holm"):
        adjust_pvalues(p, "bonferoni")


def test_set_statistic_difference_matches_its_planted_value():
    rng = np.random.default_rng(4)
    G, per = 60, 4
    g = np.repeat(np.arange(G), per)
    base = rng.normal(size=(G * per, 8))
    reps_a = [base, base * 2.0]
    reps_b = [base, base]
    r = paired_set_stats(lambda X: float(np.linalg.norm(X, axis=1).mean()), reps_a, reps_b, g, n_half=100, seed=0)
    assert r.difference[0] == 0 and r.p_value[0] == 1.0
    assert r.difference[1] > 0 and r.low[1] > 0 and r.p_value[1] < 0.05
    assert "half-sampling" in r.test


def test_bad_input_is_named():
    with pytest.raises(DataError, match="same items"):
        paired_item_stats(np.zeros(5), np.zeros(6))
    with pytest.raises(DataError, match="at least 2 groups"):
        paired_item_stats(np.zeros(5), np.ones(5), np.zeros(5))
    with pytest.raises(DataError, match="same layers"):
        paired_set_stats(np.mean, [np.zeros((3, 2))], [])


def test_draws_interval_holds_the_spread_between_draws():
    rng = np.random.default_rng(0)
    g = np.arange(200) // 4
    same = np.tile(rng.integers(0, 2, 200)[:, None], (1, 5)).astype(float)
    spread = same.copy()
    spread[:, 0] = 1.0  # one draw far from the others
    _, lo1, hi1 = draws_interval(same, g, n_boot=400, seed=0)
    v, lo2, hi2 = draws_interval(spread, g, n_boot=400, seed=0)
    assert v == pytest.approx(spread.mean())
    assert hi2 - lo2 > 1.5 * (hi1 - lo1)


def test_set_statistic_of_two_arrays_per_layer():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(80, 3))
    corr = lambda A, B: float(np.corrcoef(A[:, 0], B[:, 0])[0, 1])  # noqa: E731
    r = paired_set_stats(corr, [(X, X)], [(X, rng.normal(size=(80, 3)))], np.arange(80) // 2, n_half=50)
    assert r.difference[0] > 0.6 and r.p_value[0] < 0.05


def test_half_sampling_is_unbiased_where_the_bootstrap_is_not():
    """Effective rank falls with duplicated rows: bootstrap resamples sit below the value, half-samples around it."""
    from xlprobe.probes.geometry import effective_rank

    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 128))
    g = np.arange(120) // 4
    value, lo, hi = half_sample_interval(effective_rank, X, groups=g, n_half=60, seed=0)
    assert lo < value < hi and hi - lo < 0.3 * value


def test_half_sample_interval_of_a_mean_matches_the_cluster_bootstrap():
    rng = np.random.default_rng(3)
    g = np.repeat(np.arange(80), 3)
    x = rng.normal(size=80)[g] + rng.normal(size=240)
    _, lo_b, hi_b = mean_interval(x, g, n_boot=2000, seed=0)
    _, lo_h, hi_h = half_sample_interval(np.mean, x, groups=g, n_half=400, seed=0)
    assert (hi_h - lo_h) == pytest.approx((hi_b - lo_b)[0], rel=0.2)


def test_a_layer_the_statistic_cannot_take_is_nan_and_the_others_are_computed():
    from xlprobe.probes.separability import fisher_ratio

    rng = np.random.default_rng(0)
    y = np.tile(np.arange(4), 30)
    g = np.repeat(np.arange(30), 4)
    X = rng.normal(size=(120, 6)) + y[:, None]
    const = np.ones((120, 6))
    r = paired_set_stats(fisher_ratio, [(X, y), (const, y)], [(X * 0.5 + rng.normal(size=X.shape), y), (const, y)],
                         g, n_half=20)
    assert np.isfinite(r.difference[0]) and np.isnan(r.difference[1]) and np.isnan(r.p_value[1])
