"""Pooling properties over random lengths and paddings (hypothesis)."""
from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xlprobe.hooks.pooling import first_index, last_index, pool


@st.composite
def batches(draw):
    b = draw(st.integers(1, 5))
    t = draw(st.integers(1, 9))
    lengths = draw(st.lists(st.integers(1, t), min_size=b, max_size=b))
    seed = draw(st.integers(0, 2**31 - 1))
    return t, lengths, seed


def _padded(t, lengths, seed, side):
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(len(lengths), t, 3, generator=g)
    x = torch.full_like(states, 1e6)  # pads hold garbage that must never leak into a pooled value
    mask = torch.zeros(len(lengths), t, dtype=torch.bool)
    for i, n in enumerate(lengths):
        sl = slice(0, n) if side == "right" else slice(t - n, t)
        x[i, sl], mask[i, sl] = states[i, :n], True
    return states, x, mask


@settings(max_examples=60, deadline=None)
@given(batches())
def test_pooling_is_padding_invariant_and_exact(batch):
    t, lengths, seed = batch
    states, right, rmask = _padded(t, lengths, seed, "right")
    _, left, lmask = _padded(t, lengths, seed, "left")
    for method in ("mean", "first", "last", "max"):
        torch.testing.assert_close(pool(right, rmask, method), pool(left, lmask, method))
    for i, n in enumerate(lengths):
        own = states[i, :n].numpy()
        np.testing.assert_allclose(pool(right, rmask, "mean")[i].numpy(), own.mean(0), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(pool(right, rmask, "max")[i].numpy(), own.max(0))
        np.testing.assert_allclose(pool(left, lmask, "last")[i].numpy(), own[-1])
        np.testing.assert_allclose(pool(left, lmask, "first")[i].numpy(), own[0])
    assert (last_index(rmask) == torch.tensor(lengths) - 1).all()
    assert (first_index(lmask) == t - torch.tensor(lengths)).all()
