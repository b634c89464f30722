"""Capture points: names mirror module paths, aliases, globs, predicates, errors that help."""
from __future__ import annotations

import pytest

from xlprobe.errors import CapturePointError, ConfigError, ModelFamilyError
from xlprobe.hooks.families import FAMILIES, Family, register_family
from xlprobe.hooks.points import capture_points, resolve_points
from xlprobe.tiny import FAMILY_NAMES


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_every_point_is_a_real_module(tiny_model, family):
    model, _ = tiny_model(family)
    modules = dict(model.named_modules())
    points = capture_points(model)
    assert points, family
    for p in points:
        assert p.module in modules
        assert p.name == (p.module + ":input" if p.where == "embeddings" else p.module)


def test_mbart_names_and_final_norm_listed_separately(tiny_model):
    model, _ = tiny_model("mbart")
    by_alias = {p.alias: p for p in capture_points(model)}
    assert by_alias["encoder.1"].name == "model.encoder.layers.1"
    assert by_alias["encoder.final_norm"].name == "model.encoder.layer_norm"
    # the last block is before the final layer_norm: no hidden_states entry equals it
    assert by_alias["encoder.1"].hidden_state is None
    assert by_alias["encoder.final_norm"].hidden_state == 2
    assert by_alias["encoder.embeddings"].hidden_state == 0


def test_post_ln_family_has_no_final_norm(tiny_model):
    model, _ = tiny_model("bert")
    aliases = [p.alias for p in capture_points(model)]
    assert aliases == ["encoder.embeddings", "encoder.0", "encoder.1"]
    assert capture_points(model)[-1].hidden_state == 2


def test_resolve_globs_lists_and_predicates(tiny_model):
    model, _ = tiny_model("mbart")
    assert [p.alias for p in resolve_points(model, "decoder.*")] == [
        "decoder.embeddings", "decoder.0", "decoder.1", "decoder.final_norm"]
    both = resolve_points(model, ["decoder.0", "model.encoder.layers.1"])
    assert [p.alias for p in both] == ["encoder.1", "decoder.0"]  # execution order
    assert len(resolve_points(model, "all")) == len(capture_points(model))
    assert [p.alias for p in resolve_points(model, lambda p: p.index == 0)] == ["encoder.0", "decoder.0"]


def test_typo_lists_nearest_names(tiny_model):
    model, _ = tiny_model("mbart")
    with pytest.raises(CapturePointError) as err:
        resolve_points(model, "model.encoder.layer.1")
    msg = str(err.value)
    assert "is not a capture point of MBartForConditionalGeneration" in msg
    assert "model.encoder.layers.1" in msg and "xlprobe layers" in msg


def test_empty_and_blank_layer_requests(tiny_model):
    model, _ = tiny_model("bert")
    with pytest.raises(ConfigError, match="empty"):
        resolve_points(model, [])
    with pytest.raises(ConfigError, match="non-empty"):
        resolve_points(model, ["  "])


def test_unknown_architecture_discovered_or_refused():
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            return self.lin(x)

    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([Block(), Block()])

        def forward(self, x):
            for b in self.layers:
                x = b(x)
            return x

    pts = capture_points(Odd())
    assert [p.name for p in pts] == ["layers.0:input", "layers.0", "layers.1"]
    assert all(p.hidden_state is None for p in pts)
    with pytest.raises(ModelFamilyError, match="register_family"):
        capture_points(nn.Linear(3, 3))
    assert torch.is_tensor(Odd()(torch.zeros(1, 4)))


def test_register_family_guards_overwrites():
    row = Family("X", ("mbart",), encoder_layers="encoder.layers")
    with pytest.raises(ConfigError, match="already"):
        register_family(row)
    with pytest.raises(ConfigError, match="encoder_layers"):
        register_family(Family("Y", ("yy",)))
    assert FAMILIES["mbart"].name == "MBart"
