"""Tokenize a dataset the way each family expects, once, before any forward pass.

The result is ragged (one int array per text) and small next to the activations: ids plus a mask of the
positions that pooling reads. Tokenizing up front gives exact lengths (for length-sorted batches and
for the size of per-token shards) and the truncation count before any model time is spent.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xlprobe.errors import ConfigError, DataError
from xlprobe.hooks.families import Family
from xlprobe.hooks.langs import code_token_ids, marian_target_token, model_code, valid_codes
from xlprobe.types import Dataset

__all__ = ["Encoded", "encode_source", "encode_decoder"]

log = logging.getLogger(__name__)


@dataclass
class Encoded:
    """One side's token ids per text, the mask of positions pooling reads, and the tag position."""

    ids: list[np.ndarray]
    keep: list[np.ndarray]
    tag: np.ndarray  # [n] position of the language code, -1 where there is none
    truncated: int = 0
    langs: dict[str, str] = field(default_factory=dict)  # dataset lang -> model code
    spans: list[np.ndarray] | None = None  # [len, 2] character (start, end) in the text; None: slow tokenizer

    @property
    def lengths(self) -> np.ndarray:
        """Number of positions of each text."""
        return np.fromiter((len(a) for a in self.ids), dtype=np.int64, count=len(self.ids))

    @property
    def kept(self) -> np.ndarray:
        """Number of positions pooling reads, per text."""
        return np.fromiter((int(k.sum()) for k in self.keep), dtype=np.int64, count=len(self.keep))


#: Texts per tokenizer call: bounds the transient Python lists (ids, masks, offsets) of one call.
TOKENIZE_BATCH = 2048


def _tokenize(tokenizer: Any, texts: Sequence[str], max_length: int, target: bool
              ) -> tuple[list, list, list | None, int]:
    """Ids, special-token masks and character spans, as numpy arrays; long texts re-tokenized truncated."""
    key = "text_target" if target else "text"
    fast = bool(getattr(tokenizer, "is_fast", False))
    opts = dict(add_special_tokens=True, return_special_tokens_mask=True, return_offsets_mapping=fast)
    ids: list[np.ndarray] = []
    special: list[np.ndarray] = []
    spans: list[np.ndarray] | None = [] if fast else None
    truncated = 0
    for lo in range(0, len(texts), TOKENIZE_BATCH):
        part = list(texts[lo:lo + TOKENIZE_BATCH])
        enc = tokenizer(**{key: part}, truncation=False, **opts)
        long = [i for i, a in enumerate(enc["input_ids"]) if len(a) > max_length]
        cut = tokenizer(**{key: [part[i] for i in long]}, truncation=True, max_length=max_length, **opts) \
            if long else None
        where = {i: j for j, i in enumerate(long)}
        for i in range(len(part)):
            src = cut if i in where else enc
            k = where.get(i, i)
            ids.append(np.asarray(src["input_ids"][k], dtype=np.int64))
            special.append(np.asarray(src["special_tokens_mask"][k], dtype=bool))
            if spans is not None:
                spans.append(np.asarray(src["offset_mapping"][k], dtype=np.int64).reshape(-1, 2))
        truncated += len(long)
    return ids, special, spans, truncated


def _span_array(spans: Any, shift: int = 0) -> np.ndarray:
    """Character spans as int64 [len, 2], shifted left by ``shift`` (a prefix added before tokenizing)."""
    a = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    return np.where(a > 0, np.maximum(a - shift, 0), a)


def _tag_positions(ids: list[np.ndarray], tag_ids: set[int]) -> np.ndarray:
    """Position of the first language-code token of each sequence, -1 if none."""
    out = np.full(len(ids), -1, dtype=np.int64)
    if not tag_ids:
        return out
    look = np.fromiter(tag_ids, dtype=np.int64)
    for i, a in enumerate(ids):
        hit = np.flatnonzero(np.isin(a, look))
        if hit.size:
            out[i] = hit[0]
    return out


def _group_by_code(tokenizer: Any, family: Family, langs: Sequence[str | None]) -> dict[str | None, list[int]]:
    """Indices of texts per model language code (None: the tokenizer's current setting)."""
    groups: dict[str | None, list[int]] = defaultdict(list)
    cache: dict[str, str] = {}
    for i, lang in enumerate(langs):
        if lang is None or family.lang_style != "src_lang":
            groups[None].append(i)
            continue
        if lang not in cache:
            cache[lang] = model_code(tokenizer, family, lang)
        groups[cache[lang]].append(i)
    return groups


def encode_source(tokenizer: Any, family: Family, data: Dataset, *, max_length: int,
                  include_special: bool, use_langs: bool) -> Encoded:
    """Encode the texts as the encoder (or a decoder-only model) reads them, with language codes."""
    texts = data.texts
    langs: list[str | None] = [r.lang if use_langs else None for r in data]
    n = len(texts)
    ids: list[np.ndarray] = [np.empty(0, np.int64)] * n
    special: list[np.ndarray] = [np.empty(0, bool)] * n
    spans: list[np.ndarray] | None = [np.empty((0, 2), np.int64)] * n
    shift = np.zeros(n, dtype=np.int64)
    truncated = 0
    tag_ids: set[int] = set()
    if family.lang_style == "target_prefix":
        prefixed = list(texts)
        for i, r in enumerate(data):
            if r.target_lang:
                tok = marian_target_token(tokenizer, r.target_lang)
                prefixed[i] = f"{tok} {texts[i]}"
                shift[i] = len(tok) + 1
                tag_ids.add(int(tokenizer.convert_tokens_to_ids(tok)))
        texts = prefixed
    groups = _group_by_code(tokenizer, family, langs)
    saved = getattr(tokenizer, "src_lang", None)
    try:
        for code, idx in groups.items():
            if code is not None:
                tokenizer.src_lang = code
            elif family.lang_style == "src_lang" and not use_langs and saved is not None:
                log.warning("no source language given: every text is encoded with the tokenizer's src_lang %r",
                            saved)
            g_ids, g_special, g_spans, g_trunc = _tokenize(tokenizer, [texts[i] for i in idx], max_length,
                                                           target=False)
            truncated += g_trunc
            for j, i in enumerate(idx):
                ids[i] = g_ids[j]
                special[i] = g_special[j]
                if g_spans is None:
                    spans = None
                elif spans is not None:
                    spans[i] = _span_array(g_spans[j], int(shift[i]))
    finally:
        if saved is not None:
            tokenizer.src_lang = saved
    tag_ids |= code_token_ids(tokenizer)
    keep = [np.ones(len(s), bool) if include_special else ~s for s in special]
    langs_map = {lg: code for lg in {r.lang for r in data} if use_langs and family.lang_style == "src_lang"
                 for code in [model_code(tokenizer, family, lg)]}
    return Encoded(ids, keep, _tag_positions(ids, tag_ids), truncated, langs_map, spans)


def encode_decoder(tokenizer: Any, family: Family, data: Dataset, *, max_length: int, include_special: bool,
                   decoder_start: int, forced_bos: dict[str, int] | None = None) -> Encoded:
    """Decoder inputs: teacher-forced targets shifted right, or the start prompt when there are none.

    With targets, position t holds the state that predicts target token t (inputs are
    ``[decoder_start] + labels[:-1]``, e.g. ``</s> fr_XX Au commencement`` for mBART-50). Without targets,
    the input is the decoder start and, for families with language codes, the forced target-language
    token; every position of that prompt is pooled (there is no text to pool).
    """
    n = len(data)
    has_tgt = [r.target_text is not None for r in data]
    if any(has_tgt) and not all(has_tgt):
        missing = [i for i, h in enumerate(has_tgt) if not h][:5]
        raise DataError(f"some records have a target_text and others not (first without: {missing})",
                        hint="give a target for every text, or for none (the decoder then reads its start prompt)")
    ids: list[np.ndarray] = [np.empty(0, np.int64)] * n
    keep: list[np.ndarray] = [np.empty(0, bool)] * n
    spans: list[np.ndarray] | None = [np.empty((0, 2), np.int64)] * n
    truncated = 0
    saved = getattr(tokenizer, "tgt_lang", None)
    code_ids = code_token_ids(tokenizer)
    groups: dict[str | None, list[int]] = defaultdict(list)
    for i, r in enumerate(data):
        groups[model_code(tokenizer, family, r.target_lang) if (r.target_lang and family.lang_style == "src_lang")
               else None].append(i)
    try:
        for code, idx in groups.items():
            if code is not None:
                tokenizer.tgt_lang = code
            if all(has_tgt):
                g_ids, g_special, g_spans, g_trunc = _tokenize(tokenizer, [data[i].target_text for i in idx],
                                                               max_length, target=True)
                truncated += g_trunc
                for j, i in enumerate(idx):
                    lab, sp = g_ids[j], g_special[j]
                    ids[i] = np.concatenate([[decoder_start], lab[:-1]]).astype(np.int64)
                    k = np.concatenate([[False], ~sp[:-1]])
                    keep[i] = np.ones(len(k), bool) if include_special else k
                    if g_spans is None:
                        spans = None
                    elif spans is not None:  # input position t holds label t-1: spans shift right too
                        spans[i] = np.concatenate([np.zeros((1, 2), np.int64), _span_array(g_spans[j])[:-1]])
            else:
                prompt = [decoder_start]
                if code is not None:
                    prompt.append(int(tokenizer.convert_tokens_to_ids(code)))
                for i in idx:
                    ids[i] = np.asarray(prompt, dtype=np.int64)
                    keep[i] = np.ones(len(prompt), bool)
                    if spans is not None:
                        spans[i] = np.zeros((len(prompt), 2), np.int64)
    finally:
        if saved is not None:
            tokenizer.tgt_lang = saved
    return Encoded(ids, keep, _tag_positions(ids, code_ids), truncated, spans=spans)


def check_tag_available(enc: Encoded, tokenizer: Any, family: Family, side: str) -> None:
    """Raise when ``tag`` pooling is asked where some text has no language-code token."""
    missing = np.flatnonzero(enc.tag < 0)
    if missing.size:
        codes = valid_codes(tokenizer)
        raise ConfigError(
            f"pooling='tag' needs a language-code token on the {side} side, but {missing.size} text(s) have "
            f"none (first: {missing[:5].tolist()}; family {family.name!r})",
            hint=("give each text a language (src_lang= / Record.lang, tgt_lang= for the decoder)"
                  if codes else "this family marks no language with a token: tag pooling does not apply"),
        )
