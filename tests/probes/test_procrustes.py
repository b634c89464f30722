"""Orthogonal Procrustes distance (Ding et al. 2021): zero for rotated copies, the minimum over rotations."""
from __future__ import annotations

import numpy as np
import pytest

from xlprobe.errors import DataError
from xlprobe.probes.procrustes import procrustes_distance
from xlprobe.registry import get_measure


def _orth(d: int, seed: int) -> np.ndarray:
    Q, R = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return Q * np.sign(np.diag(R))


def _normalise(A: np.ndarray) -> np.ndarray:
    A = A - A.mean(0)
    return A / np.linalg.norm(A)


def test_zero_for_rotated_reflected_scaled_shifted_copies():
    X = np.random.default_rng(0).standard_normal((100, 8))
    Q = _orth(8, 1)
    Q[:, 0] *= -1  # a reflection too
    assert procrustes_distance(X, 3.0 * X @ Q + 7.0) < 1e-12
    wide = _orth(12, 2)[:8]  # 8 x 12 with orthonormal rows: an isometric embedding into more columns
    assert procrustes_distance(X, X @ wide) < 1e-12
    assert procrustes_distance(X @ wide, X) < 1e-12


def test_positive_otherwise_and_within_range():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((100, 8))
    noisy = procrustes_distance(X, X + 0.3 * rng.standard_normal(X.shape))
    A = np.diag(np.geomspace(1, 20, 8))  # invertible but not a rotation
    stretched = procrustes_distance(X, X @ A)
    unrelated = procrustes_distance(X, rng.standard_normal((100, 8)))
    assert 0 < noisy < unrelated <= 2
    assert stretched > 0.01


def test_equals_the_minimum_over_orthogonal_maps():
    rng = np.random.default_rng(4)
    X, Y = rng.standard_normal((60, 5)), rng.standard_normal((60, 5))
    Xn, Yn = _normalise(X), _normalise(Y)
    U, _, Vt = np.linalg.svd(Yn.T @ Xn)
    R = U @ Vt  # Schönemann 1966: the minimiser of ||Xn - Yn R||_F
    best = np.linalg.norm(Xn - Yn @ R) ** 2
    d = procrustes_distance(X, Y)
    assert abs(d - best) < 1e-10
    for seed in range(20):
        assert np.linalg.norm(Xn - Yn @ _orth(5, 100 + seed)) ** 2 >= d - 1e-12


def test_symmetric_and_sqrt_is_a_metric():
    rng = np.random.default_rng(5)
    reps = [rng.standard_normal((50, 6)) for _ in range(3)]
    reps[1] = reps[0] + 0.5 * reps[1]
    d = {(i, j): np.sqrt(procrustes_distance(reps[i], reps[j])) for i in range(3) for j in range(3)}
    assert abs(d[0, 1] - d[1, 0]) < 1e-12
    for i, j, k in [(0, 1, 2), (1, 2, 0), (2, 0, 1)]:
        assert d[i, k] <= d[i, j] + d[j, k] + 1e-12


def test_bad_inputs_and_registry():
    X = np.random.default_rng(0).standard_normal((20, 3))
    with pytest.raises(DataError, match="same rows"):
        procrustes_distance(X, X[:-1])
    with pytest.raises(DataError, match="constant"):
        procrustes_distance(X, np.ones((20, 3)))
    spec = get_measure("procrustes")
    assert (spec.kind, spec.direction) == ("paired", "distance")
    assert spec(X, X) < 1e-12
