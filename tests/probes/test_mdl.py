"""Online MDL codelength (Voita & Titov 2020): known bounds, block bookkeeping, fallbacks, registry."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from xlprobe.errors import ConfigError, DataError
from xlprobe.probes.classifiers import LinearProbe, MLPProbe
from xlprobe.probes.mdl import (
    DEFAULT_FRACTIONS,
    MDLResult,
    mdl_codelength,
    mdl_compression,
    online_codelength,
)
from xlprobe.registry import get_measure


def _blobs(n: int, d: int, k: int, sep: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Uniform labels; unit Gaussian classes around sep * e_label (sep = 0: X independent of y)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    X = rng.standard_normal((n, d))
    X[np.arange(n), y] += sep
    return X.astype(np.float32), y


def _check_bookkeeping(r: MDLResult, n: int, k: int) -> None:
    assert r.n == n and r.n_classes == k
    assert sum(r.block_sizes) == n and min(r.block_sizes) >= 1
    assert len(r.block_bits) == len(r.block_sizes) == len(r.block_code) == len(r.block_unseen) >= 2
    assert r.boundaries[-1] == n and all(a < b for a, b in zip(r.boundaries, r.boundaries[1:]))
    assert r.block_code[0] == "uniform" and r.block_bits[0] == pytest.approx(r.block_sizes[0] * math.log2(k),
                                                                               rel=1e-12)
    assert r.uniform_bits == pytest.approx(n * math.log2(k), rel=1e-12)
    assert r.codelength_bits == pytest.approx(sum(r.block_bits), rel=1e-12)
    assert r.compression == pytest.approx(r.uniform_bits / r.codelength_bits, rel=1e-12)
    assert all(math.isfinite(b) and b >= 0 for b in r.block_bits)
    assert sorted(r.order.tolist()) == list(range(n)) and not r.order.flags.writeable


# ----------------------------------------------------------------------------- what the code measures
def test_random_labels_cost_about_the_uniform_code():
    """X independent of uniform labels: compression in [0.9, 1 + 20 / uniform_bits].

    Upper end, a theorem: the online code is a proper code (every item's K probabilities sum to 1, and
    the order does not depend on y), so for uniform i.i.d. labels P(codelength <= uniform - b) <= 2^-b
    (Kraft / Markov); saving 20 bits has probability < 1e-6. Lower end, the price of overfitting the
    small early blocks: with d = 8 and n = 2000 it is about 5% here (it grows with d / n)."""
    for seed in range(2):
        X, y = _blobs(2000, 8, 4, 0.0, seed)
        r = online_codelength(X, y, seed=seed)
        _check_bookkeeping(r, 2000, 4)
        assert r.codelength_bits >= r.uniform_bits - 20
        assert 0.9 <= r.compression <= 1 + 20 / r.uniform_bits


def test_learnable_labels_compress():
    X, y = _blobs(2000, 16, 4, 4.0, 0)
    r = online_codelength(X, y)
    _check_bookkeeping(r, 2000, 4)
    assert r.compression > 3
    assert r.block_bits[-1] / r.block_sizes[-1] < 0.2 * math.log2(4)  # the last block: < 0.4 bit per item


def test_more_separable_classes_give_a_shorter_code():
    lengths = [online_codelength(*_blobs(1500, 16, 4, sep, 1)).codelength_bits for sep in (0.5, 1.5, 3.0)]
    assert lengths[0] > lengths[1] > lengths[2]
    assert lengths[0] > 1.5 * lengths[1] and lengths[1] > 1.5 * lengths[2]  # clearly, not by noise


# ----------------------------------------------------------------------------- blocks
def test_small_n_merges_boundaries_and_says_so():
    """n = 100: floor(f n) of the default fractions is 0,0,0,0,1,3,6,12,25,50,100 -> blocks at 1,3,...,100."""
    X, y = _blobs(100, 4, 3, 2.0, 0)
    r = online_codelength(X, y)
    _check_bookkeeping(r, 100, 3)
    assert r.boundaries == (1, 3, 6, 12, 25, 50, 100) and r.block_sizes == (1, 2, 3, 6, 13, 25, 50)
    assert r.n_merged == len(DEFAULT_FRACTIONS) - 7 == 4
    big = online_codelength(*_blobs(4000, 4, 3, 2.0, 0))
    assert big.n_merged == 0 and big.block_sizes[0] == 4
    tiny = online_codelength([[0.0], [1.0]], ["a", "b"])  # the smallest input: two blocks of one item
    _check_bookkeeping(tiny, 2, 2)
    assert tiny.block_sizes == (1, 1) and tiny.block_code == ("uniform", "counts")
    assert tiny.codelength_bits == pytest.approx(1 + math.log2(3))  # 1 bit, then p = 1/3 for the unseen label


def test_custom_fractions():
    X, y = _blobs(300, 4, 2, 2.0, 0)
    r = online_codelength(X, y, fractions=[0.1, 0.5, 1.0])
    assert r.block_sizes == (30, 120, 150) and r.block_bits[0] == pytest.approx(30.0)


def test_seed_fixes_the_result():
    X, y = _blobs(600, 8, 3, 1.5, 0)
    a, b, c = (online_codelength(X, y, seed=s) for s in (7, 7, 8))
    assert np.array_equal(a.order, b.order) and a.block_bits == b.block_bits
    assert a.codelength_bits == b.codelength_bits
    assert not np.array_equal(a.order, c.order) and a.codelength_bits != c.codelength_bits
    assert a.block_sizes == c.block_sizes


def test_groups_stay_whole_and_contiguous():
    """Groups of 5 items: each group's items are adjacent in the order and never split by a boundary."""
    X, y = _blobs(500, 8, 3, 2.0, 3)
    groups = np.repeat(np.arange(100), 5)[np.random.default_rng(0).permutation(500)]
    r = online_codelength(X, y, groups, seed=1)
    _check_bookkeeping(r, 500, 3)
    g = groups[r.order]
    assert np.count_nonzero(np.diff(g)) == 99  # 100 runs: every group contiguous
    assert all(t % 5 == 0 for t in r.boundaries)
    block = np.repeat(np.arange(len(r.block_sizes)), r.block_sizes)
    assert all(np.unique(block[g == k]).size == 1 for k in range(100))
    assert r.block_sizes[0] == 5  # 0.1% of 500 snaps to the first group edge, not to 0
    with pytest.raises(DataError, match="single block"):
        online_codelength(X, y, np.zeros(500, dtype=int))


# ----------------------------------------------------------------------------- fallbacks
def test_unseen_classes_get_the_laplace_mass():
    """A rare class missing from early prefixes: finite bits, equal to the documented mixture."""
    rng = np.random.default_rng(0)
    y = np.array([0] * 195 + [1] * 195 + [2] * 10)
    X = rng.standard_normal((400, 6))
    X[np.arange(400), y] += 2.0
    fr = (0.01, 0.05, 0.25, 1.0)
    r = online_codelength(X, y, fractions=fr, seed=2, select_C=None)  # the hand check refits LinearProbe()
    _check_bookkeeping(r, 400, 3)
    blocks = [i for i, (c, u) in enumerate(zip(r.block_code, r.block_unseen)) if c == "probe" and u > 0]
    assert blocks, "the test needs a probe block whose prefix lacks a class"
    i = blocks[0]
    start, stop = r.boundaries[i - 1], r.boundaries[i]
    pre, blk = r.order[:start], r.order[start:stop]
    est = LinearProbe().fit(X[pre].astype(np.float32), y[pre])
    seen = est.classes_
    unseen = 3 - seen.size
    p = np.full((blk.size, 3), 1 / (start + 3))
    p[:, seen] = np.exp(est.predict_log_proba(X[blk].astype(np.float32))) * (1 - unseen / (start + 3))
    assert np.allclose(p.sum(1), 1)
    assert r.block_bits[i] == pytest.approx(-np.log2(p[np.arange(blk.size), y[blk]]).sum(), rel=1e-6)


def test_single_class_prefix_uses_laplace_counts():
    y = np.array([0] * 196 + [1] * 2 + [2] * 2)
    X = np.random.default_rng(1).standard_normal((200, 3))
    r = online_codelength(X, y, fractions=(0.01, 0.02, 0.05, 1.0), seed=0)
    _check_bookkeeping(r, 200, 3)
    counts_blocks = [i for i, c in enumerate(r.block_code) if c == "counts"]
    assert counts_blocks, "the test needs a prefix with one class"
    for i in counts_blocks:
        start, stop = r.boundaries[i - 1], r.boundaries[i]
        counts = np.bincount(y[r.order[:start]], minlength=3)
        expect = -np.log2((counts[y[r.order[start:stop]]] + 1) / (start + 3)).sum()
        assert r.block_bits[i] == pytest.approx(expect, rel=1e-12)
        assert r.block_unseen[i] == 2


# ----------------------------------------------------------------------------- other probes
def test_mlp_probe_with_groups():
    X, y = _blobs(600, 8, 3, 3.0, 0)
    groups = np.arange(600) // 3
    r = online_codelength(X, y, groups, probe=MLPProbe(hidden=16, lr=1e-2, max_epochs=5, patience=2))
    _check_bookkeeping(r, 600, 3)
    assert r.compression > 1.5  # 5 epochs underfit the small prefixes (one minibatch each): ~1.9 here
    assert online_codelength(X[:200], y[:200], probe="mlp").n == 200


def test_any_sklearn_classifier_is_a_probe():
    """A scikit-learn pipeline (its fit takes no groups) fitting LinearProbe's model with another solver."""
    X, y = _blobs(800, 8, 3, 3.0, 0)
    groups = np.arange(800) // 4
    sk = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    r = online_codelength(X, y, groups, probe=sk)
    _check_bookkeeping(r, 800, 3)
    assert not hasattr(sk, "classes_")  # the given probe is cloned, never fitted
    assert r.compression == pytest.approx(online_codelength(X, y, groups, select_C=None).compression, rel=0.01)


@pytest.mark.parametrize("k", [2, 3])
def test_linear_probe_blocks_are_logistic_regression_blocks(k):
    """Every probe block costs what scikit-learn's LogisticRegression at the same C makes it cost, for two
    classes as for three (two-class blocks used to be those of C = 2c: a weaker penalty)."""
    X, y = _blobs(600, 6, k, 1.0, 0)
    ours = online_codelength(X, y, probe=LinearProbe(C=0.1, tol=1e-7), select_C=None)

    def sk(C):
        return make_pipeline(StandardScaler(), LogisticRegression(C=C, tol=1e-10, max_iter=5000))

    ref = online_codelength(X, y, probe=sk(0.1))
    assert ours.block_code == ref.block_code and "probe" in ours.block_code
    np.testing.assert_allclose(ours.block_bits, ref.block_bits, rtol=1e-4)
    twice = online_codelength(X, y, probe=sk(0.2))
    assert abs(ours.codelength_bits - twice.codelength_bits) > 100 * abs(ours.codelength_bits - ref.codelength_bits)


# ----------------------------------------------------------------------------- errors and registry
@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"X": np.zeros(10)}, DataError, "2-D"),
    ({"X": np.full((10, 2), np.nan)}, DataError, "NaN"),
    ({"X": np.zeros((1, 2)), "y": [0]}, DataError, "at least 2"),
    ({"y": np.arange(9)}, DataError, "one label per item"),
    ({"y": np.zeros(10)}, DataError, "distinct label"),
    ({"groups": np.arange(9)}, DataError, "one entry per item"),
    ({"fractions": (0.5, 0.2, 1.0)}, ConfigError, "strictly increasing"),
    ({"fractions": (0.1, 0.5)}, ConfigError, "the last"),
    ({"fractions": (0.0, 1.0)}, ConfigError, r"\(0, 1\]"),
    ({"fractions": (1.0,)}, ConfigError, "at least two"),
    ({"fractions": "0.5,1"}, ConfigError, "sequence"),
    ({"probe": "svm"}, ConfigError, "probe must be"),
    ({"probe": object()}, ConfigError, "predict_log_proba"),
    ({"seed": -1}, ConfigError, "seed"),
])
def test_bad_inputs_raise(kwargs, error, match):
    args = {"X": np.random.default_rng(0).standard_normal((10, 2)), "y": np.arange(10) % 2, **kwargs}
    with pytest.raises(error, match=match):
        online_codelength(args.pop("X"), args.pop("y"), **args)


def test_registered_measures():
    X, y = _blobs(400, 8, 3, 2.0, 0)
    r = online_codelength(X, y, seed=3)
    spec = get_measure("mdl.codelength")
    assert (spec.kind, spec.direction, spec.reads, spec.fn) == ("labelled", "lower_better", "labels",
                                                                       mdl_codelength)
    assert spec(X, y, None, seed=3) == pytest.approx(r.codelength_bits / 1000, rel=1e-12) == r.codelength_kbits
    spec = get_measure("mdl.compression")
    assert (spec.kind, spec.direction, spec.fn) == ("labelled", "higher_better", mdl_compression)
    assert spec(X, y, None, seed=3) == pytest.approx(r.compression, rel=1e-12)
    assert spec.summary.startswith("MDL compression")


def test_choosing_C_on_each_prefix_keeps_random_labels_near_the_uniform_code():
    """Wide representation, random labels: a fixed C = 1 overfits the early blocks; choosing C does not."""
    rng = np.random.default_rng(7)
    X = rng.standard_normal((1500, 256))
    y = rng.integers(0, 4, 1500)
    fixed = online_codelength(X, y, select_C=None)
    chosen = online_codelength(X, y)
    assert fixed.compression < 0.9  # confident mistakes on the small early prefixes
    assert 0.93 < chosen.compression <= 1 + 20 / chosen.uniform_bits
    probe_blocks = [c for c, code in zip(chosen.block_C, chosen.block_code) if code == "probe"]
    assert probe_blocks and set(probe_blocks) <= {0.001, 0.01, 0.1, 1.0} and fixed.block_C is None
    Xs, ys = _blobs(1500, 16, 4, 3.0, 0)
    assert online_codelength(Xs, ys).compression > 3  # learnable labels still compress
    with pytest.raises(ConfigError, match="select_C"):
        online_codelength(Xs, ys, select_C=(0.1, -1.0))
