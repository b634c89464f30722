"""Interventions: interpolation ends, transplants move only their group, LEACE leaves a probe at chance."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from xlprobe.errors import ConfigError, DataError
from xlprobe.probes import LinearProbe
from xlprobe.probes.interventions import erase_concept, interpolate, transplant
from xlprobe.probes.weights import compare_weights

FC1 = "model.encoder.layers.0.fc1.weight"


@pytest.fixture(scope="module")
def pair():
    from xlprobe.tiny import build

    return build("mbart", seed=0)[0], build("mbart", seed=1)[0]


def _same(m1, m2) -> bool:
    return all(torch.equal(p, dict(m2.named_parameters())[n]) for n, p in m1.named_parameters())


def test_interpolation_ends_are_the_checkpoints_and_its_middle_the_mean(pair):
    a, b = pair
    assert _same(interpolate(a, b, 0.0), a) and _same(interpolate(a, b, 1.0), b)
    mid = dict(interpolate(a, b, 0.5).named_parameters())[FC1]
    expect = (dict(a.named_parameters())[FC1] + dict(b.named_parameters())[FC1]) / 2
    assert torch.allclose(mid, expect, atol=1e-6)
    rel = compare_weights(a, interpolate(a, b, 0.25))
    full = compare_weights(a, b)
    pick = lambda df: df[(df.param == FC1) & (df.measure == "weights.rel_change")].value.iloc[0]  # noqa: E731
    assert pick(rel) == pytest.approx(0.25 * pick(full), rel=1e-5)


def test_a_transplant_moves_its_group_and_nothing_else(pair):
    a, b = pair
    moved, names = transplant(a, b, "ffn")
    assert names and all(".fc1." in n or ".fc2." in n for n in names)
    pm, pa, pb = (dict(m.named_parameters()) for m in (moved, a, b))
    assert all(torch.equal(pm[n], pb[n]) for n in names)
    assert all(torch.equal(pm[n], pa[n]) for n in pm if n not in names)
    layer, names = transplant(a, b, "encoder.1")
    assert names and all(".encoder.layers.1." in n for n in names)
    with pytest.raises(ConfigError, match="selects no parameter"):
        transplant(a, b, "encoder.9")
    _, names = transplant(a, b, "encoder.1:fc1")  # an attribution row's layer_module group
    assert sorted(names) == ["model.encoder.layers.1.fc1.bias", "model.encoder.layers.1.fc1.weight"]


def test_after_leace_a_linear_probe_is_at_chance_on_the_erased_label():
    rng = np.random.default_rng(0)
    y = np.tile(np.arange(4), 150)
    X = rng.normal(size=(600, 20)) + 3 * rng.normal(size=(4, 20))[y]
    other = (rng.random(600) < 0.5).astype(int)
    X[:, 0] += 4 * other  # a second concept the erasure must leave
    tr = np.arange(600) < 400
    erased = erase_concept(X[tr], y[tr], X)
    acc = LinearProbe().fit(erased[tr], y[tr]).score(erased[~tr], y[~tr])
    assert abs(acc - 0.25) < 0.08, acc
    kept = LinearProbe().fit(erased[tr], other[tr]).score(erased[~tr], other[~tr])
    assert kept > 0.9
    with pytest.raises(DataError, match="features"):
        erase_concept(X[tr], y[tr], X[:, :5])


def test_erasing_a_language_offset_that_blocks_transfer_closes_the_gap():
    """The label on axis 0 everywhere, and on axis 1 in English only, where the languages sit apart:
    the English probe leans on axis 1 and fails elsewhere; erasing the language removes axis 1."""
    from xlprobe.probes.interventions import erased_transfer

    rng = np.random.default_rng(1)
    G, langs_ = 150, np.array(["en", "fr", "de"])
    groups = np.repeat(np.arange(G), 3)
    langs = np.tile(langs_, G)
    y = np.repeat(rng.integers(0, 2, G), 3)
    X = rng.normal(size=(3 * G, 12))
    X[:, 0] += 1.0 * y
    X[:, 1] += 3.0 * y * (langs == "en") + np.select([langs == "fr", langs == "de"], [4.0, -4.0], 0.0)
    df = erased_transfer({"l": X}, y, langs, groups, train_lang="en", n_boot=0, task="label")
    gap = df[df.measure == "transfer.gap"].groupby("intervention").value.mean()
    acc = df[(df.measure == "transfer.accuracy") & df.control.isna()].groupby(["intervention", "lang"]).value.mean()
    assert gap["none"] > 0.15 and gap["leace-language"] < gap["none"] - 0.1
    assert acc["leace-language", "fr"] > 0.65  # the label survives: only the language's axis went
