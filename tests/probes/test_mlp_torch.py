"""MLPProbe takes torch tensors (any device, any float dtype) and fits on ``device=``: the same probe as numpy."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from xlprobe.probes.mlp import MLPProbe

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _data(seed: int = 0, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((90, 8)).astype(np.float32)
    y = (X[:, :k].argmax(1) if k > 2 else (X[:, 0] > 0)).astype(np.int64)
    return X, y


def _probe(device: str = "cpu") -> MLPProbe:
    return MLPProbe(hidden=16, lr=1e-2, max_epochs=15, patience=5, random_state=3, device=device)


def _same(got: MLPProbe, ref: MLPProbe, X: np.ndarray) -> None:
    assert got.train_loss_ == pytest.approx(ref.train_loss_, rel=1e-5)
    assert got.val_loss_ == pytest.approx(ref.val_loss_, rel=1e-5)
    assert got.best_epoch_ == ref.best_epoch_
    np.testing.assert_allclose(got.mean_, ref.mean_, rtol=1e-6)
    np.testing.assert_allclose(got.scale_, ref.scale_, rtol=1e-6)
    np.testing.assert_allclose(got.predict_proba(X), ref.predict_proba(X), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("k", [2, 3])
def test_tensor_input_equals_numpy_input(device, k):
    X, y = _data(k=k)
    ref = _probe().fit(X, y)
    got = _probe(device).fit(torch.from_numpy(X).to(device), torch.from_numpy(y).to(device))
    np.testing.assert_array_equal(got.classes_, ref.classes_)
    _same(got, ref, X)
    Xt = torch.from_numpy(X).to(device)
    np.testing.assert_allclose(got.predict_proba(Xt), ref.predict_proba(X), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(got.predict(Xt), ref.predict(X))
    np.testing.assert_allclose(got.decision_function(Xt), ref.decision_function(X), rtol=1e-4, atol=1e-5)
    assert got.score(Xt, torch.from_numpy(y).to(device)) == ref.score(X, y)


def test_cpu_tensor_fit_is_identical():
    """On the CPU the tensor fit is the numpy fit, bit for bit."""
    X, y = _data(2)
    ref = _probe().fit(X, y)
    got = _probe().fit(torch.from_numpy(X), torch.from_numpy(y))
    assert got.train_loss_ == ref.train_loss_ and got.val_loss_ == ref.val_loss_
    np.testing.assert_array_equal(got.predict_proba(X), ref.predict_proba(X))


def test_bfloat16_and_grad_tensors_are_accepted():
    X, y = _data(1)
    half = torch.from_numpy(X).to(torch.bfloat16)
    ref = _probe().fit(half.float().numpy(), y)
    _same(_probe().fit(half, torch.from_numpy(y)), ref, X)
    _same(_probe().fit(torch.from_numpy(X).requires_grad_(True), y), _probe().fit(X, y), X)
    fp16 = torch.from_numpy(X).half()
    np.testing.assert_array_equal(ref.predict(half), ref.predict(half.float().numpy()))
    assert ref.predict_proba(fp16).dtype == np.float64


def test_groups_may_be_a_tensor():
    X, y = _data(4)
    groups = np.repeat(np.arange(30), 3)
    ref = _probe().fit(X, y, groups=groups)
    got = _probe().fit(torch.from_numpy(X), torch.from_numpy(y), groups=torch.from_numpy(groups))
    assert got.val_loss_ == ref.val_loss_
