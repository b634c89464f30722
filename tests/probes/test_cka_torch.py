"""CKA on torch tensors runs the same formulas with torch on the tensors' device (here "cpu": CPU-only CI
runs the device code path) and equals the numpy path; GPU tensors run there when a GPU is present."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from xlprobe.errors import DataError
from xlprobe.probes.cka import cka, cka_matrix

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _data(n: int, d1: int, d2: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d1)).astype(np.float32)
    Y = (X @ rng.standard_normal((d1, d2)) + 2.0 * rng.standard_normal((n, d2))).astype(np.float32)
    return X, Y


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("shape", [(80, 12, 20), (9, 30, 40)])  # the feature form, and the Gram form (n < d)
def test_tensors_equal_numpy(device, kernel, debiased, shape):
    X, Y = _data(*shape)
    ref = cka(X, Y, kernel=kernel, debiased=debiased)
    got = cka(torch.from_numpy(X).to(device), torch.from_numpy(Y).to(device), kernel=kernel, debiased=debiased)
    assert isinstance(got, float)
    assert got == pytest.approx(ref, abs=1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_device_argument_runs_numpy_inputs_with_torch(device, monkeypatch):
    """device= asks for torch on that device; mixed numpy / tensor inputs follow the tensor."""
    X, Y = _data(50, 10, 16, seed=1)
    ref = cka(X, Y)
    used = []
    real = torch.einsum
    monkeypatch.setattr(torch, "einsum", lambda *a: used.append(a[1].device.type) or real(*a))
    assert cka(X, Y, device=device) == pytest.approx(ref, abs=1e-12)
    assert cka(X, torch.from_numpy(Y).to(device)) == pytest.approx(ref, abs=1e-12)
    assert used and set(used) == {torch.device(device).type}
    used.clear()
    assert cka(X, Y) == ref and not used  # arrays alone: numpy


def test_float16_and_grad_tensors_are_accepted():
    X, Y = _data(40, 8, 8, seed=2)
    x = torch.from_numpy(X).requires_grad_(True)
    assert cka(x, torch.from_numpy(Y).half()) == pytest.approx(cka(X, torch.from_numpy(Y).half().numpy()), abs=1e-10)


def test_tensor_errors_match_the_array_ones():
    X, _ = _data(10, 4, 4)
    bad = torch.from_numpy(X).clone()
    bad[0, 0] = float("nan")
    with pytest.raises(DataError, match="NaN or inf"):
        cka(bad, torch.from_numpy(X))
    with pytest.raises(DataError, match="2-D"):
        cka(torch.zeros(10), torch.from_numpy(X))
    with pytest.raises(DataError, match="same rows"):
        cka(torch.from_numpy(X), torch.from_numpy(X[:5]))
    with pytest.raises(DataError, match="no variance"):
        cka(torch.ones(10, 3), torch.from_numpy(X))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_cka_matrix_on_tensors_equals_numpy(device, kernel):
    X, Y = _data(60, 10, 14, seed=3)
    Z = X[:, :4] ** 2
    reps = {"x": X, "y": Y, "z": Z}
    ref = cka_matrix(reps, kernel=kernel, debiased=True)
    got = cka_matrix({k: torch.from_numpy(v).to(device) for k, v in reps.items()}, kernel=kernel, debiased=True)
    np.testing.assert_allclose(got.values, ref.values, rtol=0, atol=1e-10)
    ref2 = cka_matrix({"x": X}, {"y": Y, "z": Z}, kernel=kernel)
    got2 = cka_matrix({"x": X}, {"y": Y, "z": torch.from_numpy(Z)}, kernel=kernel, device=device)
    np.testing.assert_allclose(got2.values, ref2.values, rtol=0, atol=1e-10)
    assert list(got2.columns) == ["y", "z"]


def test_cka_matrix_constant_layer_on_tensors():
    X, Y = _data(30, 6, 6, seed=4)
    df = cka_matrix({"x": torch.from_numpy(X), "c": torch.ones(30, 3)}, constant="nan")
    assert np.isnan(df.loc["c", "x"]) and df.loc["x", "x"] == pytest.approx(1.0)
    assert df.attrs["constant"] == ["reps_a['c']"]
