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


@pytest.mark.parametrize("groups", ["layer", "param"])
def test_vectorised_nodes_give_the_loops_rows_and_delta(tiny, groups):
    model, tok = tiny
    other = _moved(model, {FC1: 0.5, "model.decoder.layers.1.fc2.weight": 0.5, "model.shared.weight": 0.05})
    before = {n: p.detach().clone() for n, p in other.named_parameters()}
    attribution = ParameterPathAttribution(_loss(tok))
    loop, delta = attribution.attribute(model, other, groups=groups, n_steps=8)
    scale = loop.value.abs().max()
    for k in (3, 8, 100):  # a remainder chunk, all nodes in one chunk, more than n_steps (taken as 8)
        vec, vec_delta = attribution.attribute(model, other, groups=groups, n_steps=8, alpha_batch=k)
        assert list(vec.group) == list(loop.group)
        np.testing.assert_allclose(vec.value, loop.value, rtol=1e-4, atol=1e-6 * scale)
        assert vec_delta == pytest.approx(delta, rel=1e-3, abs=1e-6 * scale)
        assert (vec.metric_a == loop.metric_a).all() and (vec.metric_b == loop.metric_b).all()
    assert all(torch.equal(p, before[n]) for n, p in other.named_parameters())  # the model is not touched
    assert model.config._attn_implementation == other.config._attn_implementation  # only the private copy


def test_vectorised_metric_reads_the_nodes_parameters(tiny):
    model, _ = tiny
    other = _moved(model, {FC1: 0.1})
    metric = lambda m: (dict(m.named_parameters())[FC1] ** 2).sum()  # noqa: E731
    loop, _ = ParameterPathAttribution(metric).attribute(model, other, groups="param", n_steps=2)
    vec, delta = ParameterPathAttribution(metric).attribute(model, other, groups="param", n_steps=2, alpha_batch=2)
    fc1 = loop.set_index("group").value[FC1]
    assert fc1 != 0 and vec.set_index("group").value[FC1] == pytest.approx(fc1, rel=1e-5)
    assert delta < 1e-4 * abs(fc1)  # a quadratic is integrated exactly by 2 Gauss-Legendre nodes


def test_bad_alpha_batch_and_unvectorisable_metrics_are_named(tiny):
    model, tok = tiny
    other = _moved(model, {FC1: 0.1})
    for bad in (0, -2, 1.5, True, "4"):
        with pytest.raises(ConfigError, match="alpha_batch"):
            ParameterPathAttribution(_loss(tok)).attribute(model, other, alpha_batch=bad)
    loss = _loss(tok)

    def as_number(m):  # a Python float in the middle: fine in the loop, not under vmap
        return loss(m) * (2.0 if loss(m).item() > 0 else 1.0)

    ParameterPathAttribution(as_number).attribute(model, other, n_steps=1)
    with pytest.raises(ConfigError, match="vmap") as err:
        ParameterPathAttribution(as_number).attribute(model, other, n_steps=2, alpha_batch=2)
    assert "alpha_batch=1" in (err.value.hint or "")
    with pytest.raises(DataError, match="scalar"):
        ParameterPathAttribution(lambda m: torch.ones(2)).attribute(model, other, alpha_batch=2)


def test_path_points_are_built_on_the_difference_device_in_its_dtype():
    from xlprobe.probes.attribution import path_points

    nodes, _ = gauss_legendre(3)
    start, diff = torch.randn(4, 5), torch.randn(4, 5)
    t = torch.as_tensor(nodes, dtype=torch.float64).to(torch.float32).view(-1, 1, 1)
    assert torch.equal(path_points(start, diff, nodes), start + t * diff)  # the CPU values as before
    on_meta = path_points(start.half().to("meta"), diff.half().to("meta"), nodes)
    assert on_meta.device.type == "meta" and on_meta.dtype == torch.float16 and on_meta.shape == (3, 4, 5)


@pytest.mark.parametrize("alpha_batch", [1, 2])
def test_models_on_an_explicit_cpu_device_give_the_same_rows(tiny, alpha_batch):
    model, tok = tiny
    other = _moved(model, {FC1: 0.05})
    attr = ParameterPathAttribution(_loss(tok))
    rows, delta = attr.attribute(model, other, n_steps=2, alpha_batch=alpha_batch)
    cpu = torch.device("cpu")
    again, delta2 = attr.attribute(copy.deepcopy(model).to(cpu), copy.deepcopy(other).to(cpu), n_steps=2,
                                   alpha_batch=alpha_batch)
    assert rows.equals(again) and delta == delta2
