"""Bootstrap CIs (coverage by simulation, group resampling) and the paired sign-flip permutation test."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats as sps

from xlprobe.errors import ConfigError, DataError
from xlprobe.probes.stats import bootstrap_ci, paired_permutation_test


# ----------------------------------------------------------------------------- bootstrap
def test_percentile_ci_covers_the_true_mean():
    """95 % nominal: coverage over 200 seeded simulations (n = 40, normal) is >= 0.9."""
    hits = 0
    for s in range(200):
        x = np.random.default_rng(s).normal(2.0, 1.0, 40)
        r = bootstrap_ci(np.mean, x, n_boot=400, seed=s)
        hits += r.low <= 2.0 <= r.high
    assert hits / 200 >= 0.9


def test_bca_ci_covers_on_skewed_data():
    hits = 0
    for s in range(100):
        x = np.random.default_rng(500 + s).exponential(1.0, 30)
        r = bootstrap_ci(np.mean, x, n_boot=400, seed=s, method="bca")
        assert r.low <= r.value <= r.high
        hits += r.low <= 1.0 <= r.high
    assert hits / 100 >= 0.88


def test_group_resampling_is_needed_for_clustered_items():
    """Items in parallel groups share an effect: resampling items is overconfident, resampling groups is not."""
    item_hits = group_hits = 0
    for s in range(200):
        rng = np.random.default_rng(1000 + s)
        g = np.repeat(np.arange(15), 4)  # 15 verses x 4 languages
        x = rng.normal(0, 1, 15)[g] + rng.normal(0, 0.5, 60)
        a = bootstrap_ci(np.mean, x, n_boot=300, seed=s)
        b = bootstrap_ci(np.mean, x, groups=g, n_boot=300, seed=s)
        item_hits += a.low <= 0 <= a.high
        group_hits += b.low <= 0 <= b.high
    assert item_hits / 200 < 0.8
    assert group_hits / 200 >= 0.88


def test_groups_are_resampled_whole_and_arrays_together():
    g = np.array(["a", "a", "b", "b", "b", "c"])
    sizes = {"a": 2, "b": 3, "c": 1}
    seen = []

    def stat(labels, rows):
        values, counts = np.unique(labels, return_counts=True)
        assert all(c % sizes[v] == 0 for v, c in zip(values, counts))  # only whole groups
        assert np.array_equal(g[rows], labels)  # both arrays take the same rows
        seen.append(len(labels))
        return float(len(labels))

    bootstrap_ci(stat, g, np.arange(6), groups=g, n_boot=50, seed=0)
    assert len(set(seen)) > 1  # group sizes differ, so resample sizes vary


def test_seeded_and_reproducible():
    x = np.random.default_rng(0).normal(size=50)
    assert bootstrap_ci(np.mean, x, seed=3) == bootstrap_ci(np.mean, x, seed=3)
    assert bootstrap_ci(np.mean, x, seed=3) != bootstrap_ci(np.mean, x, seed=4)
    state = np.random.get_state()[1].copy()
    bootstrap_ci(np.mean, x, n_boot=10)
    assert np.array_equal(np.random.get_state()[1], state)  # the global RNG is untouched


def test_paired_statistic_on_two_arrays():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((80, 3))
    r = bootstrap_ci(lambda a, b: float(np.mean(a - b)), X, X.copy(), n_boot=100)
    assert (r.value, r.low, r.high) == (0.0, 0.0, 0.0)
    r = bootstrap_ci(lambda a: float(np.mean(a)), X[:, 0], ci=0.5, n_boot=200)
    w50 = r.high - r.low
    r95 = bootstrap_ci(lambda a: float(np.mean(a)), X[:, 0], ci=0.95, n_boot=200)
    assert r95.high - r95.low > w50


def test_non_finite_resamples_are_dropped():
    x = np.array([0.0, 1.0, 2.0, 3.0])
    r = bootstrap_ci(lambda a: np.nan if a.min() == 0 else a.mean(), x, n_boot=100, seed=0)
    assert np.isfinite(r.low) and r.low >= 1.0
    r = bootstrap_ci(lambda a: np.nan, x, n_boot=10)
    assert np.isnan(r.low) and np.isnan(r.high)


def test_bootstrap_bad_arguments():
    x = np.arange(10.0)
    with pytest.raises(DataError, match="first"):
        bootstrap_ci(np.mean, x, x[:-1])
    with pytest.raises(DataError, match="at least one"):
        bootstrap_ci(np.mean)
    with pytest.raises(DataError, match="groups"):
        bootstrap_ci(np.mean, x, groups=[0, 1])
    with pytest.raises(DataError, match="2 groups"):
        bootstrap_ci(np.mean, x, groups=np.zeros(10))
    with pytest.raises(ConfigError, match="ci"):
        bootstrap_ci(np.mean, x, ci=95)
    with pytest.raises(ConfigError, match="n_boot"):
        bootstrap_ci(np.mean, x, n_boot=0)
    with pytest.raises(ConfigError, match="method"):
        bootstrap_ci(np.mean, x, method="basic")
    with pytest.raises(ConfigError, match="callable"):
        bootstrap_ci(x, x)


# ----------------------------------------------------------------------------- permutation test
def test_clear_shift_is_significant():
    rng = np.random.default_rng(0)
    b = rng.normal(0.6, 0.1, 50)
    a = b + 0.05 + rng.normal(0, 0.05, 50)
    r = paired_permutation_test(a, b, n_perm=2000, seed=0)
    assert r.p_value < 0.05 and r.difference == pytest.approx(np.mean(a - b))
    assert not r.exact and r.p_value >= 1 / 2001  # Monte Carlo p-values are never 0
    assert paired_permutation_test(a, b, alternative="greater").p_value < 0.05
    assert paired_permutation_test(a, b, alternative="less").p_value > 0.5


def test_p_values_are_uniform_without_a_shift():
    ps = np.array([paired_permutation_test(*np.random.default_rng(s).normal(size=(2, 25)), n_perm=500,
                                           seed=s).p_value for s in range(200)])
    assert 0.01 <= np.mean(ps < 0.05) <= 0.10
    assert sps.kstest(ps, "uniform").statistic < 0.12


def test_exact_enumeration_matches_brute_force():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=8), rng.normal(size=8)
    d = a - b
    null = np.array([np.mean(np.array(s) * d) for s in itertools.product([1, -1], repeat=8)])
    expected = np.mean(np.abs(null) >= abs(d.mean()) - 1e-12)
    r = paired_permutation_test(a, b, n_perm=10_000)
    assert r.exact and r.n_perm == 256 and r.p_value == pytest.approx(expected, abs=1e-12)


def test_groups_flip_together():
    rng = np.random.default_rng(3)
    g = np.repeat(np.arange(6), 5)
    shift = rng.normal(0, 1, 6)[g]  # a per-group effect, no overall difference
    a, b = shift + rng.normal(0, 0.1, 30), rng.normal(0, 0.1, 30)
    r = paired_permutation_test(a, b, groups=g)
    assert r.exact and r.n_perm == 2**6
    d = a - b
    sums = np.bincount(g, weights=d)
    null = np.array([np.dot(s, sums) / 30 for s in itertools.product([1, -1], repeat=6)])
    assert r.p_value == pytest.approx(np.mean(np.abs(null) >= abs(d.mean()) - 1e-12))


def test_permutation_bad_arguments():
    with pytest.raises(DataError, match="same length"):
        paired_permutation_test([1.0, 2.0], [1.0])
    with pytest.raises(DataError, match="NaN"):
        paired_permutation_test([1.0, np.nan], [1.0, 2.0])
    with pytest.raises(ConfigError, match="alternative"):
        paired_permutation_test([1.0], [2.0], alternative="bigger")
    with pytest.raises(ConfigError, match="n_perm"):
        paired_permutation_test([1.0], [2.0], n_perm=0)
