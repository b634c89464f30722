"""Weight divergence between checkpoints: known answers, planted updates found where planted, tidy rows."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from xlprobe.errors import DataError
from xlprobe.probes.weights import (
    WEIGHT_MEASURES,
    aggregate_weights,
    compare_weights,
    parameter_place,
    relative_change,
    weight_spectra,
)
from xlprobe.registry import get_measure

FC1 = "model.encoder.layers.0.fc1.weight"


@pytest.fixture(scope="module")
def tiny():
    from xlprobe.tiny import build

    return build("mbart", seed=0)[0]


def _with(model, name: str, fn) -> torch.nn.Module:
    """A copy of the model whose parameter ``name`` is replaced by fn(its float64 value)."""
    other = copy.deepcopy(model)
    p = dict(other.named_parameters())[name]
    with torch.no_grad():
        p.copy_(torch.as_tensor(fn(p.detach().double().numpy()), dtype=p.dtype))
    return other


def _row(df, name: str, measure: str) -> float:
    return float(df[(df.param == name) & (df.measure == measure)].value.iloc[0])


def test_identical_and_rescaled_tensors_have_known_values(tiny):
    same = compare_weights(tiny, copy.deepcopy(tiny))
    rel = same[same.measure == "weights.rel_change"]
    assert (rel.value == 0).all() and np.allclose(same[same.measure == "weights.cosine"].value.dropna(), 1)
    assert np.allclose(same[same.measure == "weights.subspace_overlap"].value, 1)
    assert same[same.measure == "weights.update_in_top_k"].value.isna().all()  # no update at all
    doubled = compare_weights(tiny, _with(tiny, FC1, lambda A: 2 * A), k=4)
    assert _row(doubled, FC1, "weights.rel_change") == pytest.approx(1.0)
    assert _row(doubled, FC1, "weights.cosine") == pytest.approx(1.0)
    A = dict(tiny.named_parameters())[FC1].detach().double().numpy()
    s = np.linalg.svd(A, compute_uv=False)
    assert _row(doubled, FC1, "weights.update_in_top_k") == pytest.approx((s[:4] ** 2).sum() / (s ** 2).sum())
    assert _row(doubled, FC1, "weights.effective_rank.a") == pytest.approx(_row(doubled, FC1, "weights.effective_rank.b"))


def test_a_planted_update_inside_or_outside_the_top_subspace_is_measured_as_such(tiny):
    A = dict(tiny.named_parameters())[FC1].detach().double().numpy()
    U, _, Vt = np.linalg.svd(A, full_matrices=True)
    k = 3
    inside = U[:, :k] @ np.diag([1.0, 0.5, 0.2]) @ Vt[:k]
    outside = U[:, -k:] @ np.diag([1.0, 0.5, 0.2]) @ Vt[-k:]
    rng = np.random.default_rng(0)
    for update, low, high in ((inside, 0.999, 1.0), (outside, 0.0, 1e-9)):
        df = compare_weights(tiny, _with(tiny, FC1, lambda M, u=update: M + 0.01 * u), k=k)
        assert low <= _row(df, FC1, "weights.update_in_top_k") <= high
        assert _row(df, FC1, "weights.effective_rank.delta") < 3.0  # a rank-3 update
    shares = [_row(compare_weights(tiny, _with(tiny, FC1, lambda M: M + 0.01 * rng.normal(size=M.shape)), k=k),
                   FC1, "weights.update_in_top_k") for _ in range(5)]
    chance = k * k / A.size
    assert abs(np.mean(shares) - chance) < 3 * chance  # a random update: near k^2 / (m n)


def test_rows_are_placed_by_side_layer_and_module(tiny):
    df = compare_weights(tiny, _with(tiny, FC1, lambda A: A + 1.0), checkpoint="mt", ref_checkpoint="lm")
    assert set(df.measure) == set(WEIGHT_MEASURES)
    assert set(df.checkpoint) == {"mt"} and set(df.ref_checkpoint) == {"lm"}
    assert df.param.str.startswith("lm_head").sum() == 0  # tied to the shared embeddings: counted once
    row = df[(df.param == FC1) & (df.measure == "weights.rel_change")].iloc[0]
    assert (row.side, row.layer, row.module) == ("encoder", "encoder.0", "fc1") and row.norm_delta > 0
    assert parameter_place("model.decoder.layers.2.encoder_attn.q_proj.weight") == ("decoder", "decoder.2", "cross_q")
    assert parameter_place("model.shared.weight") == ("shared", "embeddings", "embeddings")
    assert parameter_place("model.encoder.layer_norm.weight") == ("encoder", "encoder.final_norm", "layer_norm")
    assert parameter_place("model.encoder.layernorm_embedding.bias") == ("encoder", "encoder.embeddings", "layer_norm")
    assert parameter_place("bert.encoder.layer.5.attention.self.query.weight") == ("encoder", "encoder.5", "q")
    moved = df[(df.measure == "weights.rel_change") & (df.value > 0)]
    assert list(moved.param) == [FC1]


def test_aggregation_pools_energy_and_matches_the_global_change(tiny):
    other = _with(_with(tiny, FC1, lambda A: A * 1.5), "model.decoder.layers.0.fc2.weight", lambda A: A - 0.1)
    df = compare_weights(tiny, other)
    df["all"] = "all"
    total = aggregate_weights(df, "all").value.iloc[0]
    assert total == pytest.approx(relative_change(tiny, other))
    assert get_measure("weights.rel_change")(tiny, other) == pytest.approx(total)
    by_layer = aggregate_weights(df, "layer").set_index("layer").value
    assert by_layer["encoder.0"] > 0 and by_layer["decoder.0"] > 0 and by_layer["encoder.1"] == 0


def test_spectra_hold_every_singular_value(tiny):
    other = _with(tiny, FC1, lambda A: A * 3)
    sp = weight_spectra(tiny, other, params=[FC1])
    A = dict(tiny.named_parameters())[FC1].detach().double().numpy()
    a = sp[sp.which == "a"].sigma.to_numpy()
    assert (sp.which == "b").sum() == a.size == min(A.shape)
    assert (a ** 2).sum() == pytest.approx((A ** 2).sum())
    assert np.allclose(sp[sp.which == "b"].sigma, 3 * a) and np.allclose(sp[sp.which == "delta"].sigma, 2 * a)


def test_different_architectures_are_refused_by_name(tiny):
    from xlprobe.tiny import build

    bart = build("bart", seed=0)[0]
    with pytest.raises(DataError, match="is not in the second|has shape"):
        compare_weights(tiny, bart)


def test_subspace_overlap_is_one_for_the_same_and_zero_for_orthogonal_subspaces(tiny):
    k = 3
    A0 = dict(tiny.named_parameters())[FC1].detach().double().numpy()
    U, _, Vt = np.linalg.svd(np.random.default_rng(0).normal(size=A0.shape), full_matrices=False)
    S = np.diag([3.0, 2.0, 1.0])
    a = _with(tiny, FC1, lambda M: U[:, :k] @ S @ Vt[:k])
    same = _with(tiny, FC1, lambda M: U[:, :k] @ (2 * S) @ Vt[:k])
    orth = _with(tiny, FC1, lambda M: U[:, k:2 * k] @ S @ Vt[k:2 * k])
    assert _row(compare_weights(a, same, k=k), FC1, "weights.subspace_overlap") == pytest.approx(1.0)
    assert _row(compare_weights(a, orth, k=k), FC1, "weights.subspace_overlap") == pytest.approx(0.0, abs=1e-12)
