"""Geometry (probes/geometry.py): effective rank, anisotropy and norms: known answers, invariances."""
from __future__ import annotations

import numpy as np
import pytest

from xlprobe.errors import ConfigError, DataError
from xlprobe.probes.geometry import anisotropy, effective_rank, norm_mean, norm_stats


# ----------------------------------------------------------------------------- data
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


# ----------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("n,d", [(200, 20), (12, 40)])  # the Gram (n > d) and the SVD paths
def test_effective_rank_of_equal_spread_is_r(n, d):
    rng = np.random.default_rng(9)
    r = 5
    A = rng.standard_normal((n, r))
    Q, _ = np.linalg.qr(A - A.mean(0))  # orthonormal columns orthogonal to 1: r equal singular values
    X = Q @ _orth(d, 10)[:r] + 3.0
    assert effective_rank(X) == pytest.approx(r, abs=1e-9)


def test_effective_rank_isotropic_sample_and_rank_one():
    rng = np.random.default_rng(11)
    r, d = 5, 20
    X = rng.standard_normal((3000, r)) @ _orth(d, 12)[:r]  # isotropic in an r-dim subspace of d
    assert abs(effective_rank(X) - r) < 0.02 * r  # singular values spread by ~sqrt(r/n); 2nd order in H
    line = rng.standard_normal((300, 1)) * rng.standard_normal((1, d)) + 1.0
    assert effective_rank(line) == pytest.approx(1.0, abs=1e-9)
    full = rng.standard_normal((50, d))
    assert 1 < effective_rank(full) <= d


def test_anisotropy_known_answers_and_exact_mode():
    rng = np.random.default_rng(13)
    X = rng.standard_normal((2000, 64))
    assert abs(anisotropy(X)) < 0.02  # SE of a cosine between independent directions: 1/sqrt(64 * 10000)
    assert anisotropy(X + 50.0) > 0.99
    small = rng.standard_normal((30, 5)) + 0.5
    U = small / np.linalg.norm(small, axis=1, keepdims=True)
    brute = (U @ U.T)[np.triu_indices(30, 1)].mean()
    assert anisotropy(small, n_pairs=None) == pytest.approx(brute, abs=1e-12)
    assert anisotropy(small, n_pairs=435) == pytest.approx(brute, abs=1e-12)  # 30*29/2 pairs: exact
    sampled = anisotropy(small, n_pairs=400, seed=1)
    assert sampled == anisotropy(small, n_pairs=400, seed=1) != anisotropy(small, n_pairs=400, seed=2)
    assert abs(sampled - brute) < 0.05


def test_norm_stats_known_answer():
    X = np.array([[3.0, 4.0], [0.0, 1.0], [6.0, 8.0]])
    out = norm_stats(X)
    assert out == pytest.approx({"mean": 16 / 3, "std": float(np.std([5, 1, 10])), "min": 1.0,
                                 "max": 10.0, "median": 5.0})
    assert norm_mean(X) == pytest.approx(16 / 3)


# ----------------------------------------------------------------------------- invariances
def test_effective_rank_ignores_rotation():
    X, _ = _blobs((30, 40, 20), d=8, sep=1.5, seed=16)
    X[:, 0] *= 5.0  # anisotropic, so a rotation really changes the coordinates
    moved = 2.5 * X @ _orth(8, 17) + 4.0
    assert effective_rank(X @ _orth(8, 17)) == pytest.approx(effective_rank(X), rel=1e-10)
    assert effective_rank(moved) == pytest.approx(effective_rank(X), rel=1e-10)


# ----------------------------------------------------------------------------- bad inputs, registry
_X, _Y = _blobs((5, 5), d=3, sep=3.0, seed=18)


@pytest.mark.parametrize("call,error,match", [
    (lambda: anisotropy(np.zeros((4, 3))), DataError, "zero norm"),
    (lambda: effective_rank(np.ones((10, 3))), DataError, "constant across rows"),
    (lambda: anisotropy(_X, n_pairs=0), ConfigError, "n_pairs must be"),
    (lambda: anisotropy(_X[:1]), DataError, "at least 2"),
])
def test_bad_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call()
