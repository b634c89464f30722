"""Every registered per-layer and paired measure takes torch tensors (any device, bf16 included): one copy
to the host through the shared input checks, the same value as on the numpy array."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from xlprobe.probes.arrays import as_groups, as_labels, as_rep, to_host
from xlprobe.registry import list_measures


def _data(seed: int = 0):
    """24 parallel groups in two languages; a label shared by a group; a language offset."""
    rng = np.random.default_rng(seed)
    y = np.repeat(rng.integers(0, 2, 24), 2)
    g = np.repeat(np.arange(24), 2)
    langs = np.tile(np.array(["en", "fr"]), 24)
    X = rng.standard_normal((48, 6)) + y[:, None] * 1.5 + (langs == "en")[:, None] * 0.7
    return X.astype(np.float32), y, g, langs


def _call(spec, X, Y, y, g, langs):
    """The measure on (X[, Y]) as the runners call it."""
    kw: dict = {}
    if spec.kind == "paired":
        return spec(X, Y, **kw)
    if spec.kind == "unlabelled":
        return spec(X, seed=0, **kw)
    return spec(X, langs if spec.reads == "languages" else y, g, seed=0, **kw)


@pytest.mark.parametrize("spec", [s for s in list_measures() if s.kind in ("labelled", "unlabelled", "paired")
                                  and s.name != "probe.estimator"], ids=lambda s: s.name)
def test_a_measure_on_tensors_equals_the_measure_on_arrays(spec):
    X, y, g, langs = _data()
    Y = (X @ np.random.default_rng(1).standard_normal((6, 5))).astype(np.float32)
    Xb, Yb = torch.from_numpy(X).bfloat16(), torch.from_numpy(Y).bfloat16()  # what a bf16 capture hands over
    want = _call(spec, Xb.float().numpy(), Yb.float().numpy(), y, g, langs)
    got = _call(spec, Xb, Yb, torch.from_numpy(y), torch.from_numpy(g), langs)
    assert np.asarray(got, dtype=float) == pytest.approx(np.asarray(want, dtype=float), abs=1e-9)


def test_bf16_and_grad_tensors_come_to_the_host_as_float32():
    t = torch.randn(5, 3, requires_grad=True)
    assert to_host(t).dtype == np.float32 and np.array_equal(to_host(t), t.detach().numpy())
    b = t.detach().to(torch.bfloat16)
    assert to_host(b).dtype == np.float32 and np.array_equal(as_rep(b), b.float().numpy().astype(np.float64))
    codes, classes = as_labels(torch.tensor([3, 1, 3, 1]), 4)
    assert codes.tolist() == [1, 0, 1, 0] and classes.tolist() == [1, 3]
    assert as_groups(torch.tensor([7, 7, 2]), 3).tolist() == [1, 1, 0]
    assert to_host([1, 2]) == [1, 2]  # not a tensor: as is


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this machine")
def test_cuda_tensors_are_accepted():  # pragma: no cover (runs where a GPU is lent)
    X, y, g, _ = _data()
    from xlprobe.registry import get_measure

    sep = get_measure("separability.knn")
    assert sep(torch.from_numpy(X).cuda(), torch.from_numpy(y).cuda(), g, seed=0) == sep(X, y, g, seed=0)
