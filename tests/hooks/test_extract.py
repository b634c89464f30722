"""extract(): exact against output_hidden_states, order-preserving, padding-aware, strict on bad input."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from xlprobe.errors import ConfigError, DataError, LanguageCodeError, NumericalError
from xlprobe.hooks.extract import extract
from xlprobe.hooks.points import capture_points
from xlprobe.hooks.pooling import last_index, pool
from xlprobe.tiny import FAMILY_NAMES
from xlprobe.types import Record


def _reference(model, tok, text: str, family: str) -> dict:
    """HF's own hidden states for one text, run alone (no padding at all)."""
    enc = tok([text], return_tensors="pt")
    with torch.no_grad():
        if model.config.is_encoder_decoder:
            lab = tok(text_target=[text], return_tensors="pt")["input_ids"]
            dec = torch.cat([torch.tensor([[model.config.decoder_start_token_id]]), lab[:, :-1]], 1)
            out = model(**enc, decoder_input_ids=dec, output_hidden_states=True)
            return {"encoder": out.encoder_hidden_states, "decoder": out.decoder_hidden_states}
        out = model(**enc, output_hidden_states=True)
        return {("decoder" if family == "gpt2" else "encoder"): out.hidden_states}


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_parity_with_output_hidden_states(tiny_model, texts, family):
    model, tok = tiny_model(family)
    tgt = texts if model.config.is_encoder_decoder else None
    mean = extract(model, tok, texts, "all", pooling="mean", include_special=True, batch_size=2, tgt_texts=tgt)
    first = extract(model, tok, texts, "all", pooling="first", include_special=True, batch_size=3, tgt_texts=tgt)
    last = extract(model, tok, texts, "all", pooling="last", include_special=True, batch_size=4, tgt_texts=tgt)
    checked = 0
    for i, text in enumerate(texts):
        ref = _reference(model, tok, text, family)
        for p in capture_points(model):
            if p.hidden_state is None:
                continue
            h = ref[p.side][p.hidden_state][0].numpy()
            np.testing.assert_allclose(mean[p.name][i], h.mean(0), atol=1e-5, err_msg=f"{family} {p.alias}")
            np.testing.assert_allclose(first[p.name][i], h[0], atol=1e-5)
            np.testing.assert_allclose(last[p.name][i], h[-1], atol=1e-5)
            checked += 1
    assert checked >= 3 * len(texts)


def test_mbart_last_block_differs_from_final_norm(tiny_model, texts):
    model, tok = tiny_model("mbart")
    acts = extract(model, tok, texts, ["encoder.1", "encoder.final_norm"])
    assert not np.allclose(acts["encoder.1"], acts["encoder.final_norm"], atol=1e-3)


def test_order_and_batch_size_do_not_change_results(tiny_model, texts):
    model, tok = tiny_model("mbart")
    a = extract(model, tok, texts, "encoder.*", batch_size=1)
    b = extract(model, tok, texts, "encoder.*", batch_size=5, chunk_size=2)
    rev = extract(model, tok, texts[::-1], "encoder.*", batch_size=3)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=1e-5)
        np.testing.assert_allclose(a[k], rev[k][::-1], atol=1e-5)
        assert a[k].dtype == np.float32 and a[k].shape == (len(texts), 32)


def test_deterministic(tiny_model, texts):
    model, tok = tiny_model("xlmr")
    a = extract(model, tok, texts, "all", pooling="max")
    b = extract(model, tok, texts, "all", pooling="max")
    for k in a:
        assert np.array_equal(a[k], b[k])


def test_pooling_left_and_right_padding_agree():
    g = torch.Generator().manual_seed(0)
    states = torch.randn(3, 6, 4, generator=g)
    lengths = [6, 3, 1]
    right = torch.zeros(3, 6, 4)
    left = torch.zeros(3, 6, 4)
    rmask = torch.zeros(3, 6, dtype=torch.bool)
    lmask = torch.zeros(3, 6, dtype=torch.bool)
    for i, n in enumerate(lengths):
        right[i, :n], rmask[i, :n] = states[i, :n], True
        left[i, 6 - n:], lmask[i, 6 - n:] = states[i, :n], True
    for method in ("mean", "first", "last", "max"):
        torch.testing.assert_close(pool(right, rmask, method), pool(left, lmask, method))
    torch.testing.assert_close(pool(right, rmask, "last")[1], states[1, 2])
    assert last_index(lmask).tolist() == [5, 5, 5]


def test_decoder_only_left_padding_equals_right(tiny_model, texts):
    model, tok = tiny_model("gpt2")
    r = extract(model, tok, texts, "all", pooling="last", padding_side="right", batch_size=5)
    l_ = extract(model, tok, texts, "all", pooling="last", padding_side="left", batch_size=5)
    for k in r:
        np.testing.assert_allclose(r[k], l_[k], atol=1e-5)


def test_left_padding_refused_where_positions_would_shift(tiny_model, texts):
    model, tok = tiny_model("mbart")
    with pytest.raises(ConfigError, match="position"):
        extract(model, tok, texts, "encoder.0", padding_side="left")


def test_special_tokens_excluded_by_default(tiny_model, texts):
    model, tok = tiny_model("mbart")
    plain = extract(model, tok, texts[:1], "encoder.0", src_lang="en")
    spec = extract(model, tok, texts[:1], "encoder.0", src_lang="en", include_special=True)
    enc = tok(texts[:1], return_tensors="pt")
    with torch.no_grad():
        h = model.get_encoder()(**enc, output_hidden_states=True).hidden_states[1][0].numpy()
    np.testing.assert_allclose(spec["encoder.0"][0], h.mean(0), atol=1e-5)
    np.testing.assert_allclose(plain["encoder.0"][0], h[1:-1].mean(0), atol=1e-5)  # no en_XX, no </s>


def test_language_codes_per_record_and_tag_pooling(tiny_model):
    model, tok = tiny_model("mbart")
    recs = [Record("a", "Au commencement.", "fr"), Record("b", "In the beginning.", "en")]
    tag = extract(model, tok, recs, "encoder.0", pooling="tag")
    for i, (text, code) in enumerate([("Au commencement.", "fr_XX"), ("In the beginning.", "en_XX")]):
        tok.src_lang = code
        enc = tok([text], return_tensors="pt")
        tok.src_lang = "en_XX"
        assert enc["input_ids"][0, 0].item() == tok.convert_tokens_to_ids(code)
        with torch.no_grad():
            h = model.get_encoder()(**enc, output_hidden_states=True).hidden_states[1][0]
        np.testing.assert_allclose(tag["encoder.0"][i], h[0].numpy(), atol=1e-5)
    assert tag.meta["langs"] == {"fr": "fr_XX", "en": "en_XX"}
    assert tok.src_lang == "en_XX"  # the caller's tokenizer state is restored


def test_decoder_prompt_uses_forced_language_token(tiny_model):
    model, tok = tiny_model("mbart")
    out = extract(model, tok, ["Jesus wept."], "decoder.0", pooling="tag", src_lang="en", tgt_lang="de")
    dec = torch.tensor([[model.config.decoder_start_token_id, tok.convert_tokens_to_ids("de_DE")]])
    with torch.no_grad():
        h = model(**tok(["Jesus wept."], return_tensors="pt"), decoder_input_ids=dec,
                  output_hidden_states=True).decoder_hidden_states[1][0]
    np.testing.assert_allclose(out["decoder.0"][0], h[1].numpy(), atol=1e-5)


def test_unknown_language_code_lists_valid_ones(tiny_model):
    model, tok = tiny_model("mbart")
    with pytest.raises(LanguageCodeError) as err:
        extract(model, tok, ["x y"], "encoder.0", src_lang="xx")
    assert "en_XX" in str(err.value) and "'xx'" in str(err.value)


def test_tag_pooling_refused_without_language_tokens(tiny_model, texts):
    model, tok = tiny_model("bert")
    with pytest.raises(ConfigError, match="tag"):
        extract(model, tok, texts, "encoder.0", pooling="tag")


def test_tokens_pooling(tiny_model, texts):
    model, tok = tiny_model("t5")
    out = extract(model, tok, texts, "encoder.1", pooling="tokens", batch_size=2)["encoder.1"]
    ids = tok(texts)["input_ids"]
    assert len(out) == len(texts)
    assert out.row_ptr[-1] == out.states.shape[0] == sum(len(a) - 1 for a in ids)  # no </s>
    assert out.token_ids[: len(ids[0]) - 1].tolist() == ids[0][:-1]
    mean = extract(model, tok, texts, "encoder.1", pooling="mean")["encoder.1"]
    np.testing.assert_allclose(out.text(3).mean(0), mean[3], atol=1e-5)
    # character spans point back into each text
    for i, text in enumerate(texts):
        rows = slice(out.row_ptr[i], out.row_ptr[i + 1])
        pieces = [text[a:b] for a, b in out.char_spans[rows]]
        assert "".join(pieces).replace(" ", "") == text.replace(" ", "")


def test_tokens_pooling_decoder_spans_follow_teacher_forcing(tiny_model):
    model, tok = tiny_model("mbart")
    src, tgt = ["Jesus wept."], ["Jésus pleura."]
    out = extract(model, tok, src, "decoder.0", pooling="tokens", src_lang="en", tgt_texts=tgt, tgt_lang="fr")
    states = out["decoder.0"]
    labels = tok(text_target=tgt)["input_ids"][0]  # [fr_XX, ..., </s>]; decoder input: [</s>, fr_XX, ...]
    assert states.token_ids.tolist() == labels[1:-1]
    assert "".join(tgt[0][a:b] for a, b in states.char_spans).replace(" ", "") == tgt[0].replace(" ", "")


@pytest.mark.parametrize(
    "kwargs, texts_, err, match",
    [
        ({}, [], DataError, "empty list"),
        ({}, ["ok", "   "], DataError, "whitespace"),
        ({}, "a single string", DataError, "single string"),
        ({"tgt_texts": ["one"]}, ["a", "b"], DataError, "2 texts but 1 tgt_texts"),
        ({"batch_size": 0}, ["a"], ConfigError, "batch_size"),
        ({"batch_size": 10**7}, ["a"], ConfigError, "batch_size"),
        ({"max_length": 100_000}, ["a"], ConfigError, "positions"),
        ({"pooling": "median"}, ["a"], ConfigError, "unknown pooling"),
        ({"dtype": "int8"}, ["a"], ConfigError, "dtype"),
    ],
)
def test_bad_inputs(tiny_model, kwargs, texts_, err, match):
    model, tok = tiny_model("mbart")
    with pytest.raises(err, match=match):
        extract(model, tok, texts_, "encoder.0", **kwargs)


def test_truncation_counted_and_reported(tiny_model, caplog):
    model, tok = tiny_model("bert")
    long = " ".join(["beginning"] * 100)
    with caplog.at_level(logging.WARNING):
        out = extract(model, tok, [long, "short"], "encoder.0", max_length=16)
    assert out.meta["truncated"] == 1
    assert "1 of 2 texts were longer than max_length=16" in caplog.text


def test_half_precision_overflow_is_an_error(tiny_model):
    from xlprobe.tiny import build

    model, tok = build("bert")
    with torch.no_grad():
        model.encoder.layer[0].output.dense.weight.mul_(1e4)
        model.encoder.layer[0].intermediate.dense.weight.mul_(1e3)
    ok = extract(model, tok, ["Jesus wept."], "encoder.0", dtype="bfloat16")
    assert np.isfinite(ok["encoder.0"]).all()
    with pytest.raises(NumericalError, match="float32"):
        extract(model, tok, ["Jesus wept."], "encoder.0", dtype="float16")


def test_max_tokens_caps_padded_batch_size_and_changes_no_value(tiny_model, texts):
    from xlprobe.hooks.batching import length_batches

    key = np.array([10, 50, 20, 50, 5, 30, 200])
    batches = length_batches(key, 0, 7, batch_size=3, max_tokens=100)
    assert [b.tolist() for b in batches] == [[6], [1, 3], [5, 2, 0], [4]]  # 200 alone; 2 x 50; 3 x 30; rest
    assert all(len(b) * key[b].max() <= 100 or len(b) == 1 for b in batches)
    assert [b.tolist() for b in length_batches(key, 0, 7, batch_size=3)] == [[6, 1, 3], [5, 2, 0], [4]]
    model, tok = tiny_model("mbart")
    plain = extract(model, tok, texts * 3, "encoder.*", src_lang="en", batch_size=8)
    capped = extract(model, tok, texts * 3, "encoder.*", src_lang="en", batch_size=8, max_tokens=40)
    for k in plain:
        np.testing.assert_allclose(capped[k], plain[k], atol=1e-5)
    with pytest.raises(ConfigError, match="max_tokens"):
        extract(model, tok, texts, "encoder.0", max_tokens=0)


def test_toy_mt_decoder_teacher_forced_on_the_parallel_verse_reads_the_translation():
    from xlprobe.tasks import load_bible, with_targets
    from xlprobe.toy import load

    model, tok = load("mt")
    ds = load_bible(["en", "fr", "de"], books="Ruth", limit=6)
    plain = extract(model, tok, ds, ["encoder.final_norm", "decoder.embeddings", "decoder.0"])
    paired = with_targets(ds, "en")
    forced = extract(model, tok, paired, ["encoder.final_norm", "decoder.embeddings", "decoder.0"])
    assert plain["decoder.embeddings"].std(axis=0).max() < 1e-5  # the start prompt alone: one row for all
    emb = forced["decoder.embeddings"]
    assert emb.std(axis=0).mean() > 1e-2 and not np.allclose(emb, plain["decoder.embeddings"][0], atol=1e-3)
    rows = {r.id: i for i, r in enumerate(ds)}
    src = [rows[r.id] for r in paired]  # ids are kept with one target language
    np.testing.assert_allclose(forced["encoder.final_norm"], plain["encoder.final_norm"][src], atol=1e-5)
    by_group = {}
    for i, r in enumerate(paired):
        by_group.setdefault(r.group, []).append(i)
    for i, j in by_group.values():  # fr and de sources of a verse: the same English target...
        np.testing.assert_allclose(emb[i], emb[j], atol=1e-5)  # ...read the same at the embeddings
        assert not np.allclose(forced["decoder.0"][i], forced["decoder.0"][j], atol=1e-3)  # but not after cross-attn
    each = with_targets(ds, "each")
    out = extract(model, tok, each, ["decoder.embeddings"])
    assert out["decoder.embeddings"].shape[0] == 36 == len({r.id for r in each})
