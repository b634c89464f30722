"""LinearProbe takes torch tensors (any device, any float dtype) and fits on ``device=``: the same probe as numpy."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone

from xlprobe.probes.linear import LinearProbe, fit_many

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _data(seed: int = 0, k: int = 3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((120, 16)).astype(np.float32)
    y = (X[:, :k].argmax(1) if k > 2 else (X[:, 0] > 0)).astype(np.int64)
    return X, y


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("k", [2, 3])
def test_tensor_input_equals_numpy_input(device, k):
    X, y = _data(k=k)
    ref = LinearProbe(C=0.5, device="cpu").fit(X, y)
    got = LinearProbe(C=0.5, device=device).fit(torch.from_numpy(X).to(device), torch.from_numpy(y).to(device))
    np.testing.assert_allclose(got.coef_, ref.coef_, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.intercept_, ref.intercept_, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got.classes_, ref.classes_)
    Xt = torch.from_numpy(X).to(device)
    np.testing.assert_allclose(got.predict_proba(Xt), ref.predict_proba(X), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(got.predict(Xt), ref.predict(X))
    assert got.score(Xt, torch.from_numpy(y)) == ref.score(X, y)


def test_device_is_a_plain_parameter():
    """scikit-learn's contract: __init__ stores it, get_params / clone carry it."""
    p = LinearProbe(device="cpu")
    assert p.get_params()["device"] == "cpu"
    assert clone(LinearProbe(device="cuda:1")).device == "cuda:1"


def test_grad_and_half_tensors_are_accepted():
    X, y = _data(1)
    x = torch.from_numpy(X).requires_grad_(True)
    np.testing.assert_allclose(LinearProbe().fit(x, y).coef_, LinearProbe().fit(X, y).coef_, rtol=1e-6, atol=1e-7)
    half = torch.from_numpy(X).to(torch.bfloat16)
    ref = LinearProbe().fit(half.float().numpy(), y)
    np.testing.assert_allclose(LinearProbe().fit(half, y).coef_, ref.coef_, rtol=1e-6, atol=1e-7)


def test_fit_many_takes_tensors():
    problems = [_data(s) for s in range(3)]
    ref = fit_many(LinearProbe(), problems)
    got = fit_many(LinearProbe(), [(torch.from_numpy(X), torch.from_numpy(y)) for X, y in problems])
    for a, b in zip(ref, got):
        np.testing.assert_allclose(b.coef_, a.coef_, rtol=1e-6, atol=1e-7)
