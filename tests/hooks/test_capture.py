"""Capture: hooks go only where asked and are always removed; forwards stop after the last point."""
from __future__ import annotations

import pytest
import torch

from xlprobe.errors import ConfigError
from xlprobe.hooks.capture import Capture
from xlprobe.hooks.extract import extract
from xlprobe.hooks.points import resolve_points


def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_hooks_removed_after_exception(tiny_model):
    model, tok = tiny_model("bert")
    before = _hook_count(model)
    batch = tok(["Jesus wept."], return_tensors="pt")
    with pytest.raises(RuntimeError, match="boom"):
        with Capture(model, resolve_points(model, "all")) as cap:
            assert _hook_count(model) == before + 3
            model(**batch)
            raise RuntimeError("boom")
    assert _hook_count(model) == before
    assert set(cap.outputs) == {"encoder.layer.0:input", "encoder.layer.0", "encoder.layer.1"}


def test_hooks_removed_when_the_forward_itself_fails(tiny_model):
    model, _ = tiny_model("gpt2")
    before = _hook_count(model)
    with pytest.raises(IndexError):
        with Capture(model, resolve_points(model, "decoder.*")):
            model(input_ids=torch.tensor([[10_000]]))  # out of vocabulary
    assert _hook_count(model) == before


def test_extract_leaves_no_hook_behind(tiny_model, texts):
    model, tok = tiny_model("mbart")
    model(**tok(texts[:1], return_tensors="pt"), decoder_input_ids=torch.tensor([[2]]), output_hidden_states=True)
    before = _hook_count(model)  # transformers installs hooks of its own on first output_hidden_states use
    extract(model, tok, texts, "all", tgt_texts=texts)
    with pytest.raises(ConfigError):
        extract(model, tok, texts, "all", batch_size=0)
    assert _hook_count(model) == before


def test_encoder_request_never_runs_the_decoder_or_later_layers(tiny_model, texts):
    model, tok = tiny_model("mbart")
    calls: list[str] = []
    handles = [model.get_submodule(n).register_forward_hook(lambda m, a, o, n=n: calls.append(n))
               for n in ("model.encoder.layers.0", "model.encoder.layers.1", "model.decoder.layers.0", "lm_head")]
    try:
        extract(model, tok, texts, "encoder.0", batch_size=5)
    finally:
        for h in handles:
            h.remove()
    assert calls == ["model.encoder.layers.0"]


def test_stop_after_is_swallowed_and_reported(tiny_model):
    model, tok = tiny_model("bert")
    pts = resolve_points(model, "encoder.0")
    with Capture(model, pts, stop_after=pts[-1]) as cap:
        model(**tok(["Jesus wept."], return_tensors="pt"))
        pytest.fail("the forward should have stopped after encoder.0")
    assert cap.stopped and "encoder.layer.0" in cap.outputs
