"""Tokenize a dataset the way each family expects, once, before any forward pass.

The result is ragged and compact: every text's ids in one flat int32 array with row offsets (about
5 bytes per token), a flat mask of the positions pooling reads, and character spans only when
per-token pooling asks for them. Tokenizing up front gives exact lengths (for length-sorted batches and
for the size of per-token shards) and the truncation count before any model time is spent; at about
40 tokens per sentence, 100k sentences take some 20 MB, against gigabytes of activations.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xlprobe.errors import ConfigError, DataError, LanguageCodeError
from xlprobe.hooks.families import Family
from xlprobe.hooks.langs import code_token_ids, marian_target_token, model_code, valid_codes
from xlprobe.types import Dataset

__all__ = ["Ragged", "Encoded", "encode_source", "encode_decoder", "code_of", "check_tag_available"]

log = logging.getLogger(__name__)


class Ragged:
    """Variable-length rows stored flat: row ``i`` is ``flat[ptr[i]:ptr[i + 1]]`` (a view)."""

    __slots__ = ("flat", "ptr")

    def __init__(self, flat: np.ndarray, ptr: np.ndarray) -> None:
        if ptr.ndim != 1 or ptr.size < 1 or int(ptr[-1]) != len(flat):
            raise ValueError(f"row offsets end at {int(ptr[-1]) if ptr.size else None}, flat has {len(flat)}")
        self.flat = flat
        self.ptr = ptr.astype(np.int64, copy=False)

    @classmethod
    def from_rows(cls, rows: Sequence[Any], dtype: Any, width: int | None = None) -> Ragged:
        """Pack a sequence of rows (lists or arrays) into one flat array."""
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        ptr = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(lengths, out=ptr[1:])
        shape = (int(ptr[-1]),) if width is None else (int(ptr[-1]), width)
        flat = np.empty(shape, dtype=dtype)
        for i, r in enumerate(rows):
            if len(r):
                flat[ptr[i]:ptr[i + 1]] = r
        return cls(flat, ptr)

    @property
    def lengths(self) -> np.ndarray:
        """Length of every row."""
        return np.diff(self.ptr)

    def __len__(self) -> int:
        return len(self.ptr) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.flat[self.ptr[i]:self.ptr[i + 1]]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def row_sums(self) -> np.ndarray:
        """Sum of each row (of a flat bool or number array)."""
        c = np.zeros(len(self.flat) + 1, np.int64)
        np.cumsum(self.flat, out=c[1:])
        return c[self.ptr[1:]] - c[self.ptr[:-1]]

    def select(self, mask: np.ndarray) -> Ragged:
        """The entries where a flat bool ``mask`` (same layout) is true, row structure kept."""
        c = np.zeros(len(mask) + 1, np.int64)
        np.cumsum(mask, out=c[1:])
        return Ragged(self.flat[mask], c[self.ptr])


def _scatter(parts: list[tuple[np.ndarray, Ragged]], n: int, tail: tuple[int, ...] = ()) -> Ragged:
    """Merge per-group ragged arrays (rows for record indices ``idx``) into one in record order."""
    lengths = np.zeros(n, np.int64)
    for idx, r in parts:
        lengths[idx] = r.lengths
    ptr = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=ptr[1:])
    dtype = parts[0][1].flat.dtype if parts else np.int32
    flat = np.empty((int(ptr[-1]), *tail), dtype=dtype)
    for idx, r in parts:
        idx = np.asarray(idx, np.int64)
        dest = np.repeat(ptr[idx] - r.ptr[:-1], r.lengths) + np.arange(len(r.flat))
        flat[dest] = r.flat
    return Ragged(flat, ptr)


@dataclass
class Encoded:
    """One side's token ids per text, the mask of positions pooling reads, and the tag position."""

    ids: Ragged  # int32 token ids
    keep: Ragged  # bool, same layout: the positions pooling reads
    tag: np.ndarray  # [n] position of the language code, -1 where there is none
    truncated: int = 0
    langs: dict[str, str] = field(default_factory=dict)  # dataset lang -> model code
    spans: Ragged | None = None  # int32 [len, 2] character (start, end); None: not asked, or a slow tokenizer

    @property
    def lengths(self) -> np.ndarray:
        """Number of positions of each text."""
        return self.ids.lengths

    @property
    def kept(self) -> np.ndarray:
        """Number of positions pooling reads, per text."""
        return self.keep.row_sums()

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays."""
        parts = [self.ids, self.keep] + ([self.spans] if self.spans is not None else [])
        return sum(r.flat.nbytes + r.ptr.nbytes for r in parts) + self.tag.nbytes


#: Texts per tokenizer call: bounds the transient Python lists (ids, masks, offsets) of one call. Measured on
#: 20k verses: 2048 left 55 MiB resident after encoding, 256 left 28 MiB (the arrays: 7 MiB), no slower.
TOKENIZE_BATCH = 256


@dataclass
class _Tokens:
    """Flat tokenizer output for one group of texts, in the group's order."""

    ids: Ragged
    special: Ragged
    spans: Ragged | None
    truncated: int


def _tokenize(tokenizer: Any, texts: Sequence[str], max_length: int, target: bool, spans: bool) -> _Tokens:
    """Ids, special-token masks and (when asked, fast tokenizers only) character spans, packed flat.

    Long texts are re-tokenized with truncation, so the count of truncated texts is exact.
    """
    key = "text_target" if target else "text"
    with_spans = spans and bool(getattr(tokenizer, "is_fast", False))
    opts = dict(add_special_tokens=True, return_special_tokens_mask=True, return_offsets_mapping=with_spans)
    ids: list[Ragged] = []
    special: list[Ragged] = []
    offsets: list[Ragged] = []
    truncated = 0
    for lo in range(0, len(texts), TOKENIZE_BATCH):
        part = list(texts[lo:lo + TOKENIZE_BATCH])
        enc = tokenizer(**{key: part}, truncation=False, **opts)
        long = [i for i, a in enumerate(enc["input_ids"]) if len(a) > max_length]
        if long:
            cut = tokenizer(**{key: [part[i] for i in long]}, truncation=True, max_length=max_length, **opts)
            for name in enc.keys():
                for j, i in enumerate(long):
                    enc[name][i] = cut[name][j]
        truncated += len(long)
        ids.append(Ragged.from_rows(enc["input_ids"], np.int32))
        special.append(Ragged.from_rows(enc["special_tokens_mask"], bool))
        if with_spans:
            offsets.append(Ragged.from_rows(enc["offset_mapping"], np.int32, width=2))
        del enc
    return _Tokens(_concat(ids, np.int32), _concat(special, bool),
                   _concat(offsets, np.int32, (2,)) if with_spans else None, truncated)


def _concat(parts: list[Ragged], dtype: Any, tail: tuple[int, ...] = ()) -> Ragged:
    """Join ragged arrays row-wise."""
    if not parts:
        return Ragged(np.empty((0, *tail), dtype), np.zeros(1, np.int64))
    if len(parts) == 1:
        return parts[0]
    ptr = [np.zeros(1, np.int64)]
    base = 0
    for p in parts:
        ptr.append(p.ptr[1:] + base)
        base += len(p.flat)
    return Ragged(np.concatenate([p.flat for p in parts]), np.concatenate(ptr))


def _shift_spans(spans: Ragged, shift: np.ndarray) -> None:
    """Move character spans left by each row's ``shift`` (a prefix added before tokenizing), in place."""
    if not shift.any():
        return
    per = np.repeat(shift, spans.lengths).astype(np.int32)[:, None]
    a = spans.flat
    spans.flat[:] = np.where(a > 0, np.maximum(a - per, 0), a)


def _tag_positions(ids: Ragged, tag_ids: set[int]) -> np.ndarray:
    """Position of the first language-code token of each sequence, -1 if none."""
    out = np.full(len(ids), -1, dtype=np.int64)
    if not tag_ids:
        return out
    hits = np.flatnonzero(np.isin(ids.flat, np.fromiter(tag_ids, dtype=np.int64)))
    if hits.size:
        rows = np.searchsorted(ids.ptr, hits, side="right") - 1
        rows_u, first = np.unique(rows, return_index=True)
        out[rows_u] = hits[first] - ids.ptr[rows_u]
    return out


def code_of(tokenizer: Any, family: Family, lang: str, lang_codes: Mapping[str, str] | None = None) -> str:
    """The model's code for dataset language ``lang``: ``lang_codes`` first, then the automatic mapping."""
    mapped = (lang_codes or {}).get(lang, lang)
    try:
        return model_code(tokenizer, family, mapped)
    except LanguageCodeError as err:
        if mapped != lang or not valid_codes(tokenizer):
            raise
        raise LanguageCodeError(err.message, hint=f"map it to one of the model's codes, lang_codes={{{lang!r}: CODE}}; "
                                                  f"{err.hint}") from None


def _group_by_code(tokenizer: Any, family: Family, langs: Sequence[str | None],
                   lang_codes: Mapping[str, str] | None) -> dict[str | None, list[int]]:
    """Indices of texts per model language code (None: the tokenizer's current setting)."""
    groups: dict[str | None, list[int]] = defaultdict(list)
    cache: dict[str, str] = {}
    for i, lang in enumerate(langs):
        if lang is None or family.lang_style != "src_lang":
            groups[None].append(i)
            continue
        if lang not in cache:
            cache[lang] = code_of(tokenizer, family, lang, lang_codes)
        groups[cache[lang]].append(i)
    return groups


def encode_source(tokenizer: Any, family: Family, data: Dataset, *, max_length: int,
                  include_special: bool, use_langs: bool, spans: bool = False,
                  lang_codes: Mapping[str, str] | None = None) -> Encoded:
    """Encode the texts as the encoder (or a decoder-only model) reads them, with language codes.

    ``spans=True`` also keeps each token's character span in its text (per-token pooling needs them);
    ``lang_codes`` maps dataset languages to model codes ahead of the automatic mapping.
    """
    texts = data.texts
    langs: list[str | None] = [r.lang if use_langs else None for r in data]
    n = len(texts)
    shift = np.zeros(n, dtype=np.int64)
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
    groups = _group_by_code(tokenizer, family, langs, lang_codes)
    saved = getattr(tokenizer, "src_lang", None)
    parts: list[tuple[list[int], _Tokens]] = []
    try:
        for code, idx in groups.items():
            if code is not None:
                tokenizer.src_lang = code
            elif family.lang_style == "src_lang" and not use_langs and saved is not None:
                log.warning("no source language given: every text is encoded with the tokenizer's src_lang %r",
                            saved)
            parts.append((idx, _tokenize(tokenizer, [texts[i] for i in idx], max_length, target=False,
                                         spans=spans)))
    finally:
        if saved is not None:
            tokenizer.src_lang = saved
    tag_ids |= code_token_ids(tokenizer)
    ids = _scatter([(i, t.ids) for i, t in parts], n)
    special = _scatter([(i, t.special) for i, t in parts], n)
    offsets = None
    if parts and all(t.spans is not None for _, t in parts):
        offsets = _scatter([(i, t.spans) for i, t in parts], n, (2,))
        _shift_spans(offsets, shift)
    keep = Ragged(np.ones(len(special.flat), bool) if include_special else ~special.flat, special.ptr)
    langs_map = {lg: code for lg in {r.lang for r in data} if use_langs and family.lang_style == "src_lang"
                 for code in [code_of(tokenizer, family, lg, lang_codes)]}
    return Encoded(ids, keep, _tag_positions(ids, tag_ids), sum(t.truncated for _, t in parts), langs_map,
                   offsets)


def encode_decoder(tokenizer: Any, family: Family, data: Dataset, *, max_length: int, include_special: bool,
                   decoder_start: int, spans: bool = False, lang_codes: Mapping[str, str] | None = None) -> Encoded:
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
    saved = getattr(tokenizer, "tgt_lang", None)
    code_ids = code_token_ids(tokenizer)
    groups: dict[str | None, list[int]] = defaultdict(list)
    for i, r in enumerate(data):
        groups[code_of(tokenizer, family, r.target_lang, lang_codes)
               if (r.target_lang and family.lang_style == "src_lang") else None].append(i)
    if not all(has_tgt):  # the start prompt, no text
        prompts: list[list[int]] = [[]] * n
        for code, idx in groups.items():
            prompt = [decoder_start] + ([int(tokenizer.convert_tokens_to_ids(code))] if code is not None else [])
            for i in idx:
                prompts[i] = prompt
        ids = Ragged.from_rows(prompts, np.int32)
        keep = Ragged(np.ones(len(ids.flat), bool), ids.ptr)
        offsets = Ragged(np.zeros((len(ids.flat), 2), np.int32), ids.ptr) if spans else None
        return Encoded(ids, keep, _tag_positions(ids, code_ids), 0, spans=offsets)
    parts: list[tuple[list[int], _Tokens]] = []
    try:
        for code, idx in groups.items():
            if code is not None:
                tokenizer.tgt_lang = code
            parts.append((idx, _tokenize(tokenizer, [data[i].target_text for i in idx], max_length, target=True,
                                         spans=spans)))
    finally:
        if saved is not None:
            tokenizer.tgt_lang = saved
    labels = _scatter([(i, t.ids) for i, t in parts], n)
    special = _scatter([(i, t.special) for i, t in parts], n)
    starts = labels.ptr[:-1][labels.lengths > 0]
    # input position t holds label t-1: shift the flat arrays right by one, then put the start in each row
    ids = np.empty_like(labels.flat)
    ids[1:] = labels.flat[:-1]
    ids[starts] = decoder_start
    if include_special:
        keep = np.ones(len(ids), bool)
    else:
        keep = np.empty(len(ids), bool)
        keep[1:] = ~special.flat[:-1]
        keep[starts] = False
    offsets = None
    if parts and all(t.spans is not None for _, t in parts):
        lab_spans = _scatter([(i, t.spans) for i, t in parts], n, (2,))
        shifted = np.empty_like(lab_spans.flat)
        shifted[1:] = lab_spans.flat[:-1]
        shifted[starts] = 0
        offsets = Ragged(shifted, labels.ptr)
    out_ids = Ragged(ids, labels.ptr)
    return Encoded(out_ids, Ragged(keep, labels.ptr), _tag_positions(out_ids, code_ids),
                   sum(t.truncated for _, t in parts), spans=offsets)


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
