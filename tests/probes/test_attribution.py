"""Parameter-path attribution: exact for a linear metric, complete, zero where nothing changed."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from xlprobe.errors import ConfigError, DataError
from xlprobe.probes.attribution import ParameterPathAttribution, gauss_legendre

FC1 = "model.encoder.layers.0.fc1.weight"


@pytest.fixture(scope="module")
def tiny():
    from xlprobe.tiny import build

    model, tok = build("mbart", seed=0)
    return model.eval(), tok


def _moved(model, names: dict[str, float], seed: int = 0):
    """A copy of the model with each named parameter shifted by a seeded random direction of that scale."""
    other = copy.deepcopy(model)
    params = dict(other.named_parameters())
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, scale in names.items():
            params[name].add_(scale * torch.randn(params[name].shape, generator=g))
    return other


def _loss(tok):
    """The model's loss on a fixed batch: source and labels of two sentences (denoising-like)."""
    enc = tok(["In the beginning was the Word.", "Au commencement était la Parole."], return_tensors="pt",
              padding=True)

    def metric(model):
        return model(**enc, labels=enc["input_ids"]).loss

    return metric


def test_quadrature_weights_integrate_polynomials_exactly():
    t, w = gauss_legendre(4)
    assert np.all((t > 0) & (t < 1)) and w.sum() == pytest.approx(1.0)
    assert (w * t ** 5).sum() == pytest.approx(1 / 6)  # degree 2n - 1 = 7 is exact


def test_a_linear_metric_is_attributed_exactly_even_with_one_step(tiny):
    model, _ = tiny
    other = _moved(model, {FC1: 0.1})
    metric = lambda m: 3.0 * dict(m.named_parameters())[FC1].sum()  # noqa: E731
    rows, delta = ParameterPathAttribution(metric).attribute(model, other, groups="param", n_steps=1)
    with torch.no_grad():
        change = 3.0 * float((dict(other.named_parameters())[FC1] - dict(model.named_parameters())[FC1]).sum())
    fc1 = rows.set_index("group").value[FC1]
    assert fc1 == pytest.approx(change, rel=1e-5) and delta < 1e-4 * abs(change)
    assert (rows[rows.group != FC1].value == 0).all()


def test_attributions_add_up_and_vanish_where_nothing_changed(tiny):
    model, tok = tiny
    other = _moved(model, {FC1: 0.5, "model.decoder.layers.1.fc2.weight": 0.5})
    rows, delta = ParameterPathAttribution(_loss(tok)).attribute(model, other, groups="layer", n_steps=8)
    change = rows.metric_b.iloc[0] - rows.metric_a.iloc[0]
    assert abs(change) > 1e-3 and delta < 1e-3 * abs(change)
    assert rows.value.sum() == pytest.approx(change, rel=1e-3)
    by = rows.set_index("group").value
    assert set(by[by != 0].index) == {"encoder.0", "decoder.1"}
    assert rows.share.sum() == pytest.approx(1.0, rel=1e-3) and (rows.delta == delta).all()
    by_module = ParameterPathAttribution(_loss(tok)).attribute(model, other, groups="module", n_steps=8,
                                                               return_convergence_delta=False)
    assert set(by_module[by_module.value != 0].group) == {"fc1", "fc2"}


def test_bad_input_is_named(tiny):
    model, tok = tiny
    from xlprobe.tiny import build

    with pytest.raises(ConfigError, match="groups"):
        ParameterPathAttribution(_loss(tok)).attribute(model, model, groups="head")
    with pytest.raises(DataError, match="same parameters|shape"):
        ParameterPathAttribution(_loss(tok)).attribute(model, build("bart", seed=0)[0])
    with pytest.raises(DataError, match="scalar"):
        ParameterPathAttribution(lambda m: torch.ones(2)).attribute(model, model)
