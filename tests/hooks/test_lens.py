"""TransformerLens Bridge adapter: same arrays as our own hooks, caller's model untouched, clear errors.

Tolerance: the Bridge forces eager attention on its copy while the tiny models run SDPA, so values may
differ in the last float32 bits (measured: <= 2.4e-7 on the tiny MBart, <= 1.6e-6 on the tiny mT5 whose
states are larger; 0.0 against an eager-attention MBart with the same batches). 1e-5 leaves room for other
BLAS builds without hiding a wrong tensor (any two points of the tiny MBart differ by 5e-3 or more).
"""
from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pytest
import torch

from xlprobe.errors import CapturePointError, ConfigError, ModelFamilyError
from xlprobe.hooks.extract import extract
from xlprobe.hooks.lens import (
    LensCapture,
    boot_bridge,
    bridge_hook_name,
    lens_extract,
    lens_hook_map,
    list_hook_names,
    point_for_hook,
)
from xlprobe.hooks.points import capture_points
from xlprobe.types import CapturePoint, Record

ATOL = 1e-5
MBART_MAP = {
    "encoder.embeddings": "encoder_blocks.0.hook_resid_pre",
    "encoder.0": "encoder_blocks.0.hook_resid_post",
    "encoder.1": "encoder_blocks.1.hook_resid_post",
    "encoder.final_norm": "encoder_ln_final.hook_out",
    "decoder.embeddings": "decoder_blocks.0.hook_resid_pre",
    "decoder.0": "decoder_blocks.0.hook_resid_post",
    "decoder.1": "decoder_blocks.1.hook_resid_post",
    "decoder.final_norm": "decoder_ln_final.hook_out",
}


@pytest.fixture(scope="module")
def mbart_lens(tiny_model):
    """One Bridge on the shared tiny MBart for the whole module (booting copies the model)."""
    model, tok = tiny_model("mbart")
    lens = LensCapture(model, tok)
    lens.boot()
    return lens


def _max_diff(a, b, keys) -> float:
    """Largest absolute difference between two activation dicts over ``keys``."""
    return max(float(np.abs(a[k] - b[k]).max()) for k in keys)


def _hook_counts(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """Every hook dict size of every module (forward, pre, backward; with-kwargs variants included)."""
    attrs = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
             "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs")
    return {name: tuple(len(getattr(m, a, {})) for a in attrs) for name, m in model.named_modules()}


# ------------------------------------------------------------------------------------------- names


def test_mbart_alias_to_hook_map(tiny_model, mbart_lens):
    model, _ = tiny_model("mbart")
    assert lens_hook_map(model) == MBART_MAP
    hooks = set(mbart_lens.hook_names())
    assert set(MBART_MAP.values()) <= hooks
    for p in capture_points(model):
        assert point_for_hook(model, bridge_hook_name(p, encoder_decoder=True)) == p
    by_alias = {p.alias: p for p in capture_points(model)}
    assert point_for_hook(model, "encoder_blocks.1.hook_out") == by_alias["encoder.1"]  # canonical twin
    assert point_for_hook(model, "decoder_blocks.0.hook_in") == by_alias["decoder.embeddings"]
    for other in ("encoder_blocks.1.hook_resid_mid", "encoder_blocks.1.hook_resid_pre", "blocks.0.hook_out",
                  "encoder_blocks.7.hook_out", "unembed.hook_out"):
        assert point_for_hook(model, other) is None, other


def test_single_stack_names():
    p = CapturePoint("transformer.h.3", "decoder.3", "decoder", 3, "block_out", "transformer.h.3")
    e = CapturePoint("transformer.h.0:input", "decoder.embeddings", "decoder", -1, "embeddings",
                     "transformer.h.0")
    n = CapturePoint("transformer.ln_f", "decoder.final_norm", "decoder", 4, "final_norm", "transformer.ln_f")
    assert bridge_hook_name(p, encoder_decoder=False) == "blocks.3.hook_resid_post"
    assert bridge_hook_name(e, encoder_decoder=False) == "blocks.0.hook_resid_pre"
    assert bridge_hook_name(n, encoder_decoder=False) == "ln_final.hook_out"


def test_list_hook_names(mbart_lens):
    names = list_hook_names(mbart_lens.bridge_)
    assert len(names) == len(set(names)) > 200
    assert list_hook_names(mbart_lens.bridge_, "encoder_blocks.*.hook_resid_post") == [
        "encoder_blocks.0.hook_resid_post", "encoder_blocks.1.hook_resid_post"]


# ------------------------------------------------------------------------------------------- parity


@pytest.mark.parametrize("pooling", ["mean", "first", "last", "max"])
def test_parity_with_extract_mbart_teacher_forced(tiny_model, texts, mbart_lens, pooling):
    model, tok = tiny_model("mbart")
    ours = extract(model, tok, texts, "all", pooling=pooling, tgt_texts=texts, batch_size=3)
    lens = mbart_lens.extract(texts, "all", pooling=pooling, tgt_texts=texts, batch_size=2)
    assert list(lens) == list(ours) and len(ours) == 8
    assert lens.meta["hooks"] == {p.name: MBART_MAP[p.alias] for p in ours.points}
    for p in ours.points:
        assert lens[p.alias].dtype == np.float32 and lens[p.alias].shape == (len(texts), 32)
        np.testing.assert_allclose(lens[p.alias], ours[p.alias], atol=ATOL, rtol=0, err_msg=p.alias)
    assert _max_diff(lens, ours, ours) < ATOL


def test_differences_come_from_eager_attention(tiny_model, texts, mbart_lens):
    model, tok = tiny_model("mbart")
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")  # what the Bridge does to its copy
    ours = extract(eager, tok, texts, "all", tgt_texts=texts, batch_size=2)
    lens = mbart_lens.extract(texts, "all", tgt_texts=texts, batch_size=2)
    assert _max_diff(lens, ours, ours) <= 1e-6  # measured: 0.0 (same kernels, same batches)


def test_parity_records_languages_tag_and_specials(tiny_model, texts, mbart_lens):
    model, tok = tiny_model("mbart")
    langs = ["en", "fr", "de", "en", "es"]
    recs = [Record(str(i), t, lg, target_text=texts[(i + 1) % 5], target_lang="fr") for i, (t, lg) in
            enumerate(zip(texts, langs, strict=True))]
    for kw in ({"pooling": "tag"}, {"pooling": "mean", "include_special": True}):
        ours = extract(model, tok, recs, ["encoder.*", "decoder.0"], **kw)
        lens = mbart_lens.extract(recs, ["encoder.*", "decoder_blocks.0.hook_resid_post"], **kw)
        assert list(lens) == list(ours)
        assert _max_diff(lens, ours, ours) < ATOL


def test_encoder_only_request_and_bridge_hook_names(tiny_model, texts, mbart_lens):
    model, tok = tiny_model("mbart")
    ours = extract(model, tok, texts, ["encoder.1", "encoder.final_norm"])
    lens = mbart_lens.extract(texts, ["encoder_blocks.1.hook_resid_post", "encoder_ln_final.hook_out"])
    assert set(lens) == {"encoder.1", "encoder.final_norm"}  # keyed like extract: by alias
    assert lens.get("model.encoder.layers.1") is lens["encoder.1"]
    assert _max_diff(lens, ours, ours) < ATOL


def test_hooks_without_a_point_are_keyed_by_hook_name(texts, mbart_lens):
    acts = mbart_lens.extract(texts, ["encoder.0", "encoder_blocks.1.hook_resid_pre",
                                      "decoder_blocks.*.hook_resid_mid"], tgt_texts=texts)
    assert list(acts) == ["encoder.0", "encoder_blocks.1.hook_resid_pre",
                          "decoder_blocks.0.hook_resid_mid", "decoder_blocks.1.hook_resid_mid"]
    assert all(a.shape == (len(texts), 32) for a in acts.values())
    # block 1's input is block 0's output
    np.testing.assert_allclose(acts["encoder_blocks.1.hook_resid_pre"], acts["encoder.0"], atol=1e-6)
    with pytest.raises(ConfigError, match=r"\[batch, seq, d\]"):
        mbart_lens.extract(texts[:2], "encoder_blocks.0.attn.hook_pattern")


@pytest.mark.slow
@pytest.mark.parametrize("family", ["t5", "marian", "gpt2"])
def test_parity_other_families(tiny_model, texts, family):
    model, tok = tiny_model(family)
    tgt = texts if model.config.is_encoder_decoder else None
    ours = extract(model, tok, texts, "all", tgt_texts=tgt)
    lens = lens_extract(model, tok, texts, "all", tgt_texts=tgt, batch_size=2)
    assert list(lens) == list(ours)
    assert _max_diff(lens, ours, ours) < ATOL


def test_boot_from_a_saved_folder(tmp_path, texts):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from xlprobe.tiny import save

    folder = save("mbart", tmp_path / "tiny-mbart")
    model = AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    bridge = boot_bridge(model, tok)
    assert bridge.cfg.model_name == str(folder)
    ours = extract(model, tok, texts, "encoder.*")
    lens = lens_extract(model, tok, texts, "encoder.*")
    assert _max_diff(lens, ours, ours) < ATOL


# ------------------------------------------------------------------------------------------- caller's model


def test_callers_model_and_tokenizer_are_unchanged(tiny_model, texts):
    model, tok = tiny_model("mbart")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = _hook_counts(model)
    modules = {n: type(m) for n, m in model.named_modules()}
    attn, training = model.config._attn_implementation, model.training
    tok_state = (tok.src_lang, tok.tgt_lang, tok.padding_side, tok.pad_token, tok.bos_token, len(tok))
    lens = LensCapture(model, tok)
    assert not hasattr(lens, "bridge_")  # the constructor does no work
    lens.extract(texts, "all", tgt_texts=texts)
    after = model.state_dict()
    assert list(after) == list(state)
    for k, v in state.items():
        assert torch.equal(after[k], v), k
    assert lens.bridge_.original_model is not model
    assert _hook_counts(model) == hooks
    assert {n: type(m) for n, m in model.named_modules()} == modules
    assert (model.config._attn_implementation, model.training) == (attn, training)
    assert (tok.src_lang, tok.tgt_lang, tok.padding_side, tok.pad_token, tok.bos_token, len(tok)) == tok_state


def test_boots_once_per_lens_capture(mbart_lens, texts):
    bridge = mbart_lens.bridge_
    mbart_lens.extract(texts[:2], "encoder.0")
    assert mbart_lens.boot() is bridge


# ------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("family", ["bert", "xlmr"])
def test_unsupported_architecture(tiny_model, texts, family):
    model, tok = tiny_model(family)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ModelFamilyError, match=type(model).__name__) as err:
        lens_extract(model, tok, texts, "encoder.0")
    assert "xlprobe.hooks.extract" in err.value.hint
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_transformer_lens_not_importable(tiny_model, texts, monkeypatch):
    model, tok = tiny_model("mbart")
    monkeypatch.setitem(sys.modules, "transformer_lens.model_bridge", None)
    with pytest.raises(ConfigError, match="TransformerLens is not importable") as err:
        lens_extract(model, tok, texts, "encoder.0")
    assert "xlprobe.hooks.extract" in err.value.hint


def test_bad_requests(tiny_model, texts, mbart_lens):
    gpt, gtok = tiny_model("gpt2")
    with pytest.raises(CapturePointError, match="neither a capture point") as err:
        mbart_lens.extract(texts, "encoder_blocks.0.hook_rezid_post")
    assert "encoder_blocks.0.hook_resid_post" in err.value.hint
    with pytest.raises(ConfigError, match="tokens"):
        mbart_lens.extract(texts, "encoder.0", pooling="tokens")
    with pytest.raises(ConfigError, match="batch_size"):
        mbart_lens.extract(texts, "encoder.0", batch_size=0)
    with pytest.raises(ConfigError, match="takes no option 'dtype'(.|\n)*xlprobe.hooks.extract"):
        mbart_lens.extract(texts, "encoder.0", dtype="bfloat16")
    with pytest.raises(ConfigError, match="no decoder"):
        LensCapture(gpt, gtok).extract(texts, "decoder.0", tgt_texts=texts)


def test_import_does_not_load_transformer_lens():
    code = "import sys, xlprobe.hooks.lens; print(any(m.startswith('transformer_lens') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
