"""The compact ragged encoding: same ids as the tokenizer, flat int32 storage, spans only when asked."""
from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xlprobe.hooks.encode import Ragged, _scatter, encode_decoder, encode_source
from xlprobe.hooks.families import family_for
from xlprobe.types import Dataset, Record


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.integers(0, 1000), max_size=6), min_size=1, max_size=12))
def test_ragged_rows_round_trip(rows):
    r = Ragged.from_rows(rows, np.int32)
    assert len(r) == len(rows)
    assert [x.tolist() for x in r] == rows
    assert r.lengths.tolist() == [len(x) for x in rows]
    mask = r.flat % 2 == 0
    sel = r.select(mask)
    assert [x.tolist() for x in sel] == [[v for v in row if v % 2 == 0] for row in rows]
    assert Ragged(mask, r.ptr).row_sums().tolist() == [sum(v % 2 == 0 for v in row) for row in rows]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.integers(0, 99), max_size=5), min_size=1, max_size=10), st.randoms(use_true_random=False))
def test_scatter_restores_record_order(rows, rnd):
    order = list(range(len(rows)))
    rnd.shuffle(order)
    cut = len(order) // 2
    groups = [order[:cut], order[cut:]]
    parts = [(g, Ragged.from_rows([rows[i] for i in g], np.int32)) for g in groups if g]
    merged = _scatter(parts, len(rows))
    assert [x.tolist() for x in merged] == rows


def test_ragged_rejects_inconsistent_offsets():
    with pytest.raises(ValueError, match="row offsets"):
        Ragged(np.zeros(3, np.int32), np.array([0, 2]))


def _data(texts, langs, targets=None):
    return Dataset("t", tuple(Record(str(i), t, lg, None, {}, None if targets is None else targets[i],
                                     None if targets is None else "fr")
                              for i, (t, lg) in enumerate(zip(texts, langs))))


def test_source_ids_equal_the_tokenizer_per_language(tiny_model, texts):
    model, tok = tiny_model("mbart")
    tok = copy.deepcopy(tok)  # the fixture's tokenizer is shared: leave its src_lang alone
    langs = ["en", "fr", "de", "en", "es"]
    enc = encode_source(tok, family_for("mbart"), _data(texts, langs), max_length=64, include_special=False,
                        use_langs=True)
    assert enc.ids.flat.dtype == np.int32 and enc.spans is None  # spans only for per-token pooling
    codes = {"en": "en_XX", "fr": "fr_XX", "de": "de_DE", "es": "es_XX"}
    for i, (t, lg) in enumerate(zip(texts, langs)):
        tok.src_lang = codes[lg]
        want = tok(t)["input_ids"]
        assert enc.ids[i].tolist() == want
        assert enc.tag[i] == 0 and enc.ids[i][0] == tok.convert_tokens_to_ids(codes[lg])
        assert not enc.keep[i][0] and not enc.keep[i][-1] and enc.keep[i][1:-1].all()
    assert enc.kept.tolist() == [len(a) - 2 for a in enc.ids]


def test_source_spans_when_asked_point_into_the_text(tiny_model, texts):
    model, tok = tiny_model("mbart")
    enc = encode_source(tok, family_for("mbart"), _data(texts, ["en"] * 5), max_length=64, include_special=False,
                        use_langs=True, spans=True)
    assert enc.spans is not None and enc.spans.flat.shape == (len(enc.ids.flat), 2)
    for i, t in enumerate(texts):
        sp = enc.spans[i][enc.keep[i]]
        assert "".join(t[a:b] for a, b in sp).replace(" ", "") == t.replace(" ", "")


def test_truncation_is_counted_and_cut(tiny_model, texts):
    model, tok = tiny_model("mbart")
    enc = encode_source(tok, family_for("mbart"), _data(texts, ["en"] * 5), max_length=8, include_special=False,
                        use_langs=True)
    full = [len(tok(t)["input_ids"]) for t in texts]
    assert enc.truncated == sum(n > 8 for n in full)
    assert enc.lengths.tolist() == [min(n, 8) for n in full]


def test_decoder_is_shifted_right_with_the_start_token(tiny_model, texts):
    model, tok = tiny_model("mbart")
    tok = copy.deepcopy(tok)
    targets = list(reversed(texts))
    enc = encode_decoder(tok, family_for("mbart"), _data(texts, ["en"] * 5, targets), max_length=64,
                         include_special=False, decoder_start=2, spans=True)
    tok.tgt_lang = "fr_XX"
    for i, t in enumerate(targets):
        labels = tok(text_target=t)["input_ids"]
        assert enc.ids[i].tolist() == [2, *labels[:-1]]
        special = tok(text_target=t, return_special_tokens_mask=True)["special_tokens_mask"]
        assert enc.keep[i].tolist() == [False, *[not s for s in special[:-1]]]
        assert enc.spans[i][0].tolist() == [0, 0]


def test_decoder_prompt_without_targets(tiny_model, texts):
    model, tok = tiny_model("mbart")
    data = Dataset("t", tuple(Record(str(i), t, "en", None, {}, None, "de") for i, t in enumerate(texts)))
    enc = encode_decoder(tok, family_for("mbart"), data, max_length=64, include_special=False, decoder_start=2)
    de = tok.convert_tokens_to_ids("de_DE")
    assert all(a.tolist() == [2, de] for a in enc.ids) and enc.keep.flat.all()
    assert enc.tag.tolist() == [1] * len(texts)


def test_encoding_is_compact(tiny_model):
    model, tok = tiny_model("mbart")
    texts = [f"verse {i} of a longer passage, with a few words more than most" for i in range(3000)]
    enc = encode_source(tok, family_for("mbart"), _data(texts, ["en"] * len(texts)), max_length=64,
                        include_special=False, use_langs=True)
    tokens = len(enc.ids.flat)
    # int32 ids + bool mask per token, int64 offsets + int64 tag per text: no per-text Python objects
    assert enc.nbytes == tokens * 5 + (len(texts) + 1) * 8 * 2 + len(texts) * 8
