"""CKA: invariances, agreement with the n x n HSIC definitions, debiasing, streaming, the layer matrix."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xlprobe.errors import ConfigError, DataError
from xlprobe.probes.cka import cka, cka_from_store, cka_matrix, cka_streaming
from xlprobe.registry import get_measure
from xlprobe.store import ActivationStore
from xlprobe.types import StoreKey


# ----------------------------------------------------------------------------- independent references
def _hsic(K: np.ndarray, L: np.ndarray) -> float:
    """Biased HSIC straight from the definition: tr(K H L H) / (n-1)^2 (Gretton et al. 2005)."""
    n = K.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(K @ H @ L @ H)) / (n - 1) ** 2


def _hsic_u(K: np.ndarray, L: np.ndarray) -> float:
    """Unbiased HSIC, Song et al. 2012 Thm. 2, written out term by term on the raw (uncentred) kernels."""
    n = K.shape[0]
    Kt, Lt = K - np.diag(np.diag(K)), L - np.diag(np.diag(L))
    one = np.ones(n)
    return float(np.trace(Kt @ Lt) + (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
                 - 2.0 / (n - 2) * (one @ Kt @ Lt @ one)) / (n * (n - 3))


def _ref_cka(K: np.ndarray, L: np.ndarray, debiased: bool = False) -> float:
    h = _hsic_u if debiased else _hsic
    return h(K, L) / np.sqrt(h(K, K) * h(L, L))


def _rbf(X: np.ndarray) -> np.ndarray:
    """RBF Gram matrix with sigma = median distance between distinct rows, by brute force."""
    D = np.sqrt(((X[:, None, :] - X[None, :, :]) ** 2).sum(-1))
    sigma = np.median(D[np.triu_indices(len(X), 1)])
    return np.exp(-(D**2) / (2 * sigma**2))


def _orth(d: int, seed: int) -> np.ndarray:
    Q, R = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return Q * np.sign(np.diag(R))


def _pair(n: int, d1: int, d2: int, seed: int = 0, noise: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """X and a noisy linear function Y of it, both with non-zero column means."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d1)) + rng.normal(0, 3, d1)
    Y = X @ rng.standard_normal((d1, d2)) + noise * rng.standard_normal((n, d2)) + 5.0
    return X, Y


# ----------------------------------------------------------------------------- definitions and invariances
@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("debiased", [False, True])
def test_identical_inputs_give_one(kernel, debiased):
    X, _ = _pair(120, 16, 4)
    assert cka(X, X, kernel=kernel, debiased=debiased) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("n,d1,d2", [(60, 8, 5), (12, 30, 25)])  # n > d: feature form; n < d: Gram form
@pytest.mark.parametrize("debiased", [False, True])
def test_linear_equals_hsic_definition(n, d1, d2, debiased):
    X, Y = _pair(n, d1, d2, seed=n)
    ref = _ref_cka(X @ X.T, Y @ Y.T, debiased)
    assert abs(cka(X, Y, debiased=debiased) - ref) < 1e-10
    assert abs(cka(X.astype(np.float32), Y, debiased=debiased)
               - _ref_cka(*(A @ A.T for A in (X.astype(np.float32).astype(np.float64), Y)), debiased)) < 1e-10


@pytest.mark.parametrize("debiased", [False, True])
def test_rbf_equals_hsic_definition(debiased):
    X, Y = _pair(40, 6, 5, seed=3)
    assert abs(cka(X, Y, kernel="rbf", debiased=debiased) - _ref_cka(_rbf(X), _rbf(Y), debiased)) < 1e-10


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("debiased", [False, True])
def test_invariant_to_rotation_isotropic_scale_and_shift(kernel, debiased):
    X, Y = _pair(150, 12, 9, seed=1, noise=3.0)
    base = cka(X, Y, kernel=kernel, debiased=debiased)
    assert base < 0.99  # a non-trivial value, so invariance is not 1 == 1
    Xt = 7.5 * X @ _orth(12, 2) - 4.0
    Yt = 0.01 * Y @ _orth(9, 3) + 100.0
    assert abs(cka(Xt, Y, kernel=kernel, debiased=debiased) - base) < 1e-10
    assert abs(cka(X, Yt, kernel=kernel, debiased=debiased) - base) < 1e-10
    assert cka(X, Xt, kernel=kernel, debiased=debiased) == pytest.approx(1.0, abs=1e-10)


def test_not_invariant_to_general_invertible_linear_map():
    """CKA is not invariant to an invertible but non-orthogonal map; CCA-based measures would be."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 10))
    A = _orth(10, 1) @ np.diag(np.geomspace(1, 30, 10)) @ _orth(10, 2)  # invertible, condition number 30
    assert np.linalg.matrix_rank(A) == 10
    v = cka(X, X @ A)
    assert v < 0.9
    assert cka(X @ A, X @ A) == pytest.approx(1.0)


def test_debiased_removes_the_bias_for_independent_data():
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((500, 100)), rng.standard_normal((500, 100))
    assert cka(X, Y) > 0.1  # the biased estimate is pulled up when d is not << n
    assert abs(cka(X, Y, debiased=True)) < 0.05
    assert abs(cka(X, Y, kernel="rbf", debiased=True)) < 0.05


def test_more_shared_signal_gives_higher_cka():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((300, 20))
    values = [cka(X, X + s * rng.standard_normal(X.shape)) for s in (0.1, 1.0, 3.0, 10.0)]
    assert values == sorted(values, reverse=True) and values[0] > 0.95 and values[-1] < 0.2


def test_values_in_unit_interval_and_symmetric():
    X, Y = _pair(80, 7, 11, seed=9, noise=5.0)
    v = cka(X, Y)
    assert 0 <= v <= 1 and abs(v - cka(Y, X)) < 1e-12
    assert abs(cka(X, Y, kernel="rbf") - cka(Y, X, kernel="rbf")) < 1e-12


def test_explicit_sigma():
    X, Y = _pair(50, 5, 5, seed=2)
    auto = cka(X, Y, kernel="rbf")
    D = np.sqrt(((X[:, None] - X[None]) ** 2).sum(-1))
    E = np.sqrt(((Y[:, None] - Y[None]) ** 2).sum(-1))
    med = (np.median(D[np.triu_indices(50, 1)]), np.median(E[np.triu_indices(50, 1)]))
    assert cka(X, Y, kernel="rbf", sigma=med) == pytest.approx(auto, abs=1e-12)
    assert cka(X, Y, kernel="rbf", sigma=1e-3) != pytest.approx(auto, abs=1e-3)


# ----------------------------------------------------------------------------- streaming
@pytest.mark.parametrize("debiased", [False, True])
def test_streaming_equals_in_memory(debiased):
    X, Y = _pair(503, 16, 24, seed=4)
    X = X + 1e3  # large means: the sums must not cancel catastrophically
    ref = cka(X, Y, debiased=debiased)
    for rows in (1, 7, 64, 503, 10_000):
        assert abs(cka_streaming(X, Y, chunk_rows=rows, debiased=debiased) - ref) < 1e-10
    cuts = [0, 3, 100, 101, 350, 503]  # uneven chunks from two iterables in lockstep
    xs = (X[a:b].astype(np.float64) for a, b in zip(cuts, cuts[1:]))
    ys = [Y[a:b] for a, b in zip(cuts, cuts[1:])]
    assert abs(cka_streaming(xs, ys, debiased=debiased) - ref) < 1e-10


def _write_shard(store: ActivationStore, key: StoreKey, X: np.ndarray, size: int) -> None:
    n, d = X.shape
    chunks = [(s, min(s + size, n)) for s in range(0, n, size)]
    with store.writer(key, n_rows=n, dim=d, chunks=chunks) as w:
        for i in w.pending:
            w.write(slice(*chunks[i]), X[slice(*chunks[i])])
            w.commit(i)


@pytest.mark.parametrize("debiased", [False, True])
def test_streaming_from_a_real_store_equals_in_memory(tmp_path: Path, debiased):
    store = ActivationStore.open(tmp_path / "acts")
    X, Y = (A.astype(np.float32) for A in _pair(300, 12, 20, seed=6))
    ka = StoreKey(model="m0", point="encoder.1", pooling="mean", data="d0")
    kb = StoreKey(model="m1", point="encoder.3", pooling="mean", data="d0")
    _write_shard(store, ka, X, 64)
    _write_shard(store, kb, Y, 50)
    ref = cka(X, Y, debiased=debiased)
    for rows in (17, 128, 1000):
        got = cka_from_store(store, ka, kb, chunk_rows=rows, debiased=debiased)
        assert abs(got - ref) < 1e-10
    assert abs(cka(np.asarray(store.read(ka)), store.read(kb), debiased=debiased) - ref) < 1e-12
    kc = StoreKey(model="m1", point="encoder.3", pooling="mean", data="d1")
    _write_shard(store, kc, Y[:200], 64)
    with pytest.raises(DataError, match="different numbers of rows"):
        cka_from_store(store, ka, kc)


def test_streaming_refuses_mismatched_chunks():
    X, Y = _pair(20, 3, 4)
    with pytest.raises(DataError, match="rows of X"):
        cka_streaming([X[:10], X[10:]], [Y[:12], Y[12:]])
    with pytest.raises(DataError, match="different lengths"):
        cka_streaming([X[:10], X[10:]], [Y[:10]])
    with pytest.raises(DataError, match="same rows"):
        cka_streaming(X, Y[:-1])
    with pytest.raises(ConfigError):
        cka_streaming(X, Y, chunk_rows=0)


# ----------------------------------------------------------------------------- layer x layer matrix
@pytest.mark.parametrize("n", [40, 8])  # feature form, Gram form
@pytest.mark.parametrize("kernel,debiased", [("linear", False), ("linear", True), ("rbf", False), ("rbf", True)])
def test_matrix_equals_pairwise_cka(n, kernel, debiased):
    rng = np.random.default_rng(n)
    base = rng.standard_normal((n, 10))
    reps_a = {f"encoder.{i}": base @ rng.standard_normal((10, 10 + i)) + rng.standard_normal((n, 10 + i))
              for i in range(3)}
    reps_b = {f"decoder.{i}": base @ rng.standard_normal((10, 12)) + 2 * rng.standard_normal((n, 12)) for i in range(2)}
    M = cka_matrix(reps_a, reps_b, kernel=kernel, debiased=debiased)
    assert list(M.index) == list(reps_a) and list(M.columns) == list(reps_b)
    for a, Xa in reps_a.items():
        for b, Yb in reps_b.items():
            assert abs(M.loc[a, b] - cka(Xa, Yb, kernel=kernel, debiased=debiased)) < 1e-10
    S = cka_matrix(reps_a, kernel=kernel, debiased=debiased)
    assert np.allclose(S.to_numpy(), S.to_numpy().T, atol=0) and np.allclose(np.diag(S), 1.0)
    assert abs(S.loc["encoder.0", "encoder.2"] - cka(reps_a["encoder.0"], reps_a["encoder.2"], kernel=kernel,
                                                     debiased=debiased)) < 1e-10


def test_matrix_refuses_different_rows():
    with pytest.raises(DataError, match="same rows"):
        cka_matrix({"a": np.ones((5, 2)) * np.arange(5)[:, None]}, {"b": np.zeros((6, 2))})
    with pytest.raises(DataError, match="non-empty"):
        cka_matrix({})


# ----------------------------------------------------------------------------- input checks, registry
def test_bad_inputs_raise_clear_errors():
    X, Y = _pair(10, 3, 3)
    with pytest.raises(DataError, match="same rows"):
        cka(X, Y[:-1])
    with pytest.raises(DataError, match="2-D"):
        cka(X[:, 0], Y)
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        cka(bad, Y)
    with pytest.raises(DataError, match="no variance"):
        cka(np.ones((10, 3)), Y)
    with pytest.raises(DataError, match="at least 4"):
        cka(X[:3], Y[:3], debiased=True)
    with pytest.raises(ConfigError, match="kernel"):
        cka(X, Y, kernel="poly")
    with pytest.raises(ConfigError, match="sigma"):
        cka(X, Y, sigma=1.0)
    with pytest.raises(ConfigError, match="sigma"):
        cka(X, Y, kernel="rbf", sigma=-1.0)


def test_does_not_modify_inputs():
    X, Y = _pair(30, 4, 4)
    X0, Y0 = X.copy(), Y.copy()
    cka(X, Y, debiased=True)
    cka_matrix({"x": X}, {"y": Y})
    assert np.array_equal(X, X0) and np.array_equal(Y, Y0)


def test_registered_names():
    X, Y = _pair(60, 5, 6, seed=8)
    assert get_measure("cka")(X, Y) == cka(X, Y)
    assert get_measure("cka.linear")(X, Y, debiased=True) == cka(X, Y, debiased=True)
    assert get_measure("cka.rbf")(X, Y) == cka(X, Y, kernel="rbf")
    for name in ("cka", "cka.linear", "cka.rbf"):
        spec = get_measure(name)
        assert (spec.kind, spec.direction) == ("paired", "similarity")


def test_cka_matrix_constant_layer_raises_or_gives_nan_cells():
    rng = np.random.default_rng(0)
    reps = {"a": rng.normal(size=(50, 8)), "flat": np.ones((50, 4)), "b": rng.normal(size=(50, 6))}
    with pytest.raises(DataError, match=r"reps_a\['flat'\] has no variance across rows"):
        cka_matrix(reps)
    table = cka_matrix(reps, constant="nan")
    assert table.attrs["constant"] == ["reps_a['flat']"]
    assert table.loc["flat"].isna().all() and table["flat"].isna().all()
    rest = cka_matrix({k: v for k, v in reps.items() if k != "flat"})
    np.testing.assert_array_equal(table.loc[["a", "b"], ["a", "b"]].to_numpy(), rest.to_numpy())
    with pytest.raises(ConfigError, match="constant must be"):
        cka_matrix(reps, constant="skip")
