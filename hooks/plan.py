"""Plan a capture once: normalised data, resolved points, encoded sides, validated options.

Every way of running a model over texts in xlprobe starts from a :class:`CapturePlan`: :func:`extract`
(to memory or to the store), the TransformerLens adapter, :func:`describe_points` and fine-tuning. The
plan is built by :func:`plan_capture`, which validates every option once, maps each dataset language to
the model's own code, encodes the source and the teacher-forced target and checks that every text has
something to pool. A plan is frozen: running it never changes it, so one plan can be run several ways
and gives the same token ids, masks and batches each time.
"""
from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from xlprobe.errors import ConfigError, DataError
from xlprobe.hooks.batching import (
    SideBatch,
    decoder_start,
    length_batches,
    pad_id,
    position_limit,
    side_batch,
)
from xlprobe.hooks.encode import Encoded, check_tag_available, encode_decoder, encode_source
from xlprobe.hooks.families import Family
from xlprobe.hooks.points import model_family, resolve_points
from xlprobe.hooks.pooling import POOLED
from xlprobe.types import CapturePoint, Dataset, LayerSpec, Record

__all__ = ["CapturePlan", "plan_capture", "as_dataset", "MAX_BATCH_SIZE", "DTYPES", "POOLINGS"]

log = logging.getLogger(__name__)

#: Upper bound on ``batch_size`` (a typo guard; the memory of one batch is batch x seq x d per point).
MAX_BATCH_SIZE = 4096
#: Compute precisions a capture can run in (results are float32).
DTYPES = ("float32", "float16", "bfloat16")
#: Every pooling a plan accepts: one vector per text, or every token (``tokens``).
POOLINGS = POOLED + ("tokens",)
_SIDES = ("encoder", "decoder")


@dataclass(frozen=True)
class CapturePlan:
    """What a run of the model over a dataset reads, decided and checked before the first forward pass.

    Attributes
    ----------
    data : Dataset
        The records, in input order (outputs follow it).
    family : Family
        The model's family row.
    points : tuple of CapturePoint
        The requested capture points, in execution order (may be empty: fine-tuning reads no point).
    sides : tuple of str
        The sides whose token positions are read (``"encoder"``, ``"decoder"``).
    src, dec : Encoded
        The encoded source (what the encoder, or a decoder-only model, reads) and the teacher-forced
        decoder input (None when no decoder position is read).
    """

    data: Dataset
    family: Family
    points: tuple[CapturePoint, ...]
    sides: tuple[str, ...]
    src: Encoded
    dec: Encoded | None
    pooling: str = "mean"
    max_length: int = 256
    include_special: bool = False
    dtype: str = "float32"
    padding_side: str = "right"
    batch_size: int = 32
    max_tokens: int | None = None
    chunk_size: int = 1024
    pad_id: int = 0
    decoder_start: int | None = None
    langs: Mapping[str, str] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Number of texts."""
        return len(self.data)

    @property
    def src_is_decoder(self) -> bool:
        """True for decoder-only models: their one stack reads the source."""
        return not self.family.is_encoder_decoder and self.family.encoder_layers is None

    @property
    def truncated(self) -> int:
        """Texts (either side) cut at ``max_length``."""
        return self.src.truncated + (self.dec.truncated if self.dec is not None else 0)

    def encoded(self, side: str) -> Encoded:
        """The encoded side whose positions a point on ``side`` runs over."""
        if side == "encoder" or self.src_is_decoder:
            return self.src
        if self.dec is None:
            raise ConfigError(f"the plan encodes no decoder input, but a {side!r} point was asked for",
                              hint="plan with the decoder point (or sides=('decoder',))")
        return self.dec

    def chunks(self) -> list[tuple[int, int]]:
        """Record ranges ``[lo, hi)`` of ``chunk_size`` records: the resumable units of a store run."""
        return [(s, min(s + self.chunk_size, self.n)) for s in range(0, self.n, self.chunk_size)]

    def batches(self, lo: int = 0, hi: int | None = None) -> list[np.ndarray]:
        """Record indices of ``[lo, hi)`` in length-sorted batches (longest first)."""
        order_key = self.src.lengths + (self.dec.lengths if self.dec is not None else 0)
        return length_batches(order_key, lo, self.n if hi is None else hi, batch_size=self.batch_size,
                              max_tokens=self.max_tokens)

    def batch(self, idx: np.ndarray, device: torch.device | str) -> tuple[SideBatch, SideBatch | None]:
        """The padded source and decoder tensors of the records ``idx`` on ``device``."""
        dev = torch.device(device)
        src = side_batch(self.src, idx, self.pad_id, self.padding_side, dev)
        dec = side_batch(self.dec, idx, self.pad_id, "right", dev) if self.dec is not None else None
        return src, dec

    def meta(self) -> dict[str, Any]:
        """The facts of the plan a result records (counts, options, point names, language codes)."""
        return {
            "n": self.n, "truncated": self.truncated, "max_length": self.max_length, "pooling": self.pooling,
            "dtype": self.dtype, "include_special": self.include_special,
            "points": [p.name for p in self.points], "family": self.family.name, "langs": dict(self.langs),
        }


# ------------------------------------------------------------------------------------------- data


def as_dataset(texts: Any, src_lang: str | None = None, tgt_texts: Sequence[str] | None = None,
               tgt_lang: str | None = None) -> Dataset:
    """Normalise strings, records or a Dataset into a Dataset, honouring every language / target argument.

    Strings take ``src_lang`` (default ``"und"``), ``tgt_texts`` and ``tgt_lang``. Records and Datasets
    carry their own: ``src_lang`` fills records of unknown language (``"und"``), ``tgt_texts`` and
    ``tgt_lang`` fill records that have none, and a value that contradicts a record raises DataError.
    """
    if isinstance(texts, str):
        raise DataError("texts must be a sequence of strings, got a single string",
                        hint="wrap it in a list: extract(model, tok, [text], ...)")
    if isinstance(texts, Dataset):
        data = texts
    else:
        items = list(texts)
        kind = Record if items and isinstance(items[0], Record) else str
        bad = next((i for i, t in enumerate(items) if not isinstance(t, kind)), None)
        if bad is not None:
            raise DataError(f"texts[{bad}] is a {type(items[bad]).__name__}; texts must be all str or all Record",
                            hint="pass a list of strings, a list of xlprobe.Record, or an xlprobe Dataset")
        if kind is Record:
            data = Dataset("records", tuple(items))
        else:
            data = Dataset.from_texts(items, "und")
    if len(data) == 0:
        raise DataError("no texts to encode (empty list)", hint="check the data selection (languages, books, --limit)")
    data = _with_arguments(data, src_lang, tgt_texts, tgt_lang)
    empty = [i for i, r in enumerate(data) if not isinstance(r.text, str) or not r.text.strip()]
    if empty:
        raise DataError(f"{len(empty)} empty or whitespace-only text(s) at positions {empty[:10]}",
                        hint="drop them before extracting (the Bible loader filters and counts them)")
    empty_t = [i for i, r in enumerate(data) if r.target_text is not None and not r.target_text.strip()]
    if empty_t:
        raise DataError(f"{len(empty_t)} empty target text(s) at positions {empty_t[:10]}",
                        hint="drop those pairs or give no targets at all")
    return data


def _with_arguments(data: Dataset, src_lang: str | None, tgt_texts: Sequence[str] | None,
                    tgt_lang: str | None) -> Dataset:
    """Apply ``src_lang`` / ``tgt_texts`` / ``tgt_lang`` to the records, refusing contradictions."""
    if src_lang is None and tgt_texts is None and tgt_lang is None:
        return data
    if tgt_texts is not None and (isinstance(tgt_texts, str) or len(tgt_texts) != len(data)):
        got = "a single string" if isinstance(tgt_texts, str) else f"{len(tgt_texts)} tgt_texts"
        raise DataError(f"{len(data)} texts but {got}", hint="give one target per source text, in the same order")
    records = []
    for i, r in enumerate(data):
        changes: dict[str, Any] = {}
        for arg, value, attr, unset in (("src_lang", src_lang, "lang", "und"),
                                        ("tgt_texts", None if tgt_texts is None else tgt_texts[i], "target_text", None),
                                        ("tgt_lang", tgt_lang, "target_lang", None)):
            if value is None:
                continue
            have = getattr(r, attr)
            if have not in (unset, value):
                raise DataError(f"record {r.id!r} (position {i}) has {attr}={have!r}, but {arg} gives {value!r}",
                                hint=f"records carry their own {attr}: drop {arg}, or fix the records")
            changes[attr] = value
        records.append(replace(r, **changes) if changes else r)
    return Dataset(data.name, tuple(records), data.meta)


# ------------------------------------------------------------------------------------------- options


def _int(name: str, value: Any, low: int, high: int | None = None, hint: str | None = None) -> int:
    """``value`` as an int in ``[low, high]``, or a ConfigError naming the option."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low or \
            (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ConfigError(f"{name} must be an int {bound}, got {value!r}", hint=hint)
    return int(value)


def _choice(name: str, value: Any, allowed: Sequence[str]) -> str:
    """``value`` when it is one of ``allowed``, else a ConfigError listing them."""
    if value not in allowed:
        raise ConfigError(f"unknown {name} {value!r}", hint=f"valid: {', '.join(allowed)}")
    return value


def _max_length(model: nn.Module, max_length: int | None) -> int:
    """``max_length`` checked against the model's positions (default: 256 or the position limit)."""
    limit = position_limit(model)
    if max_length is None:
        return min(256, limit or 256)
    max_length = _int("max_length", max_length, 2)
    if limit and max_length > limit:
        raise ConfigError(f"max_length={max_length} exceeds the model's {limit} positions",
                          hint=f"use max_length <= {limit}")
    return max_length


def _sides(family: Family, points: Sequence[CapturePoint], sides: Collection[str] | None) -> tuple[str, ...]:
    """The sides read by ``points`` plus those asked for explicitly, checked against the family."""
    wanted = {p.side for p in points} | set(sides or ())
    unknown = wanted - set(_SIDES)
    if unknown:
        raise ConfigError(f"unknown side(s) {sorted(unknown)}", hint=f"valid: {', '.join(_SIDES)}")
    if not wanted:
        raise ConfigError("nothing to capture: no layers and no sides", hint="pass layers (e.g. 'encoder.*')")
    return tuple(s for s in _SIDES if s in wanted)


# ------------------------------------------------------------------------------------------- plan


def plan_capture(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str] | Sequence[Record] | Dataset,
    layers: LayerSpec | Sequence[CapturePoint] | None = None,
    *,
    sides: Collection[str] | None = None,
    pooling: str = "mean",
    poolings: Sequence[str] = POOLINGS,
    batch_size: int = 32,
    max_tokens: int | None = None,
    max_length: int | None = None,
    src_lang: str | None = None,
    tgt_texts: Sequence[str] | None = None,
    tgt_lang: str | None = None,
    lang_codes: Mapping[str, str] | None = None,
    include_special: bool = False,
    dtype: str = "float32",
    padding_side: str = "right",
    chunk_size: int = 1024,
) -> CapturePlan:
    """Validate the options, resolve the points and encode the data: the plan every runner executes.

    Parameters
    ----------
    model, tokenizer
        A Hugging Face model and its tokenizer.
    texts : list of str, list of Record, or Dataset
        See :func:`as_dataset` for how ``src_lang``, ``tgt_texts`` and ``tgt_lang`` apply to each.
    layers : LayerSpec or list of CapturePoint, optional
        Point names, aliases, globs, ``"all"``, a predicate, or already resolved points. None: no point
        (a runner that reads the model's outputs itself, such as fine-tuning; give ``sides``).
    sides : collection of {"encoder", "decoder"}, optional
        Sides to encode beyond those of the points (hooks that are not capture points).
    pooling, poolings
        The pooling, and the poolings this runner supports (the Bridge and fine-tuning pool fewer ways).
    lang_codes : mapping, optional
        Dataset language -> the model's code (``{"zh-Hant": "zh_CN"}``), consulted before the
        automatic mapping (``fr`` -> ``fr_XX``).
    batch_size, max_tokens, max_length, include_special, dtype, padding_side, chunk_size
        As for :func:`xlprobe.hooks.extract`.

    Returns
    -------
    CapturePlan
    """
    pooling = _choice("pooling", pooling, poolings)
    dtype = _choice("dtype", dtype, DTYPES)
    padding_side = _choice("padding_side", padding_side, ("right", "left"))
    batch_size = _int("batch_size", batch_size, 1, MAX_BATCH_SIZE)
    chunk_size = _int("chunk_size", chunk_size, 1)
    if max_tokens is not None:
        max_tokens = _int("max_tokens", max_tokens, 1, hint="e.g. max_tokens=4096 (a batch never exceeds it, "
                                                             "except a single text longer than it)")
    max_length = _max_length(model, max_length)
    if lang_codes is not None and not (isinstance(lang_codes, Mapping) and
                                       all(isinstance(k, str) and isinstance(v, str) for k, v in lang_codes.items())):
        raise ConfigError(f"lang_codes must map a dataset language to the model's code; got {lang_codes!r}",
                          hint="e.g. lang_codes={'en': 'en_XX', 'sw': 'sw_KE'}")
    family = model_family(model)
    if layers is None:
        points: list[CapturePoint] = []
    elif not isinstance(layers, str) and isinstance(layers, Sequence) and layers and \
            all(isinstance(p, CapturePoint) for p in layers):
        points = list(layers)
    else:
        points = resolve_points(model, layers)
    data = as_dataset(texts, src_lang, tgt_texts, tgt_lang)
    if any(r.target_text is not None for r in data) and not family.is_encoder_decoder:
        raise ConfigError(f"target texts given, but {type(model).__name__} has no decoder to teacher-force",
                          hint="drop tgt_texts / Record.target_text (decoder-only models read the texts themselves)")
    read = _sides(family, points, sides)
    plan = _encode(model, tokenizer, family, data, tuple(points), read, pooling=pooling, max_length=max_length,
                   include_special=include_special, lang_codes=lang_codes)
    plan = replace(plan, dtype=dtype, padding_side=padding_side, batch_size=batch_size, max_tokens=max_tokens,
                   chunk_size=chunk_size)
    _check_poolable(plan, tokenizer)
    if plan.truncated:
        log.warning("%d of %d texts were longer than max_length=%d tokens and were truncated",
                    plan.truncated, plan.n, max_length)
    return plan


def _encode(model: nn.Module, tokenizer: Any, family: Family, data: Dataset, points: tuple[CapturePoint, ...],
            sides: tuple[str, ...], *, pooling: str, max_length: int, include_special: bool,
            lang_codes: Mapping[str, str] | None) -> CapturePlan:
    """Encode the source, and the teacher-forced decoder input when a decoder position is read."""
    use_langs = family.lang_style == "src_lang" and any(r.lang != "und" for r in data)
    spans = pooling == "tokens"
    src = encode_source(tokenizer, family, data, max_length=max_length, include_special=include_special,
                        use_langs=use_langs, spans=spans, lang_codes=lang_codes)
    dec, start = None, None
    if family.is_encoder_decoder:
        start = decoder_start(model)
        if "decoder" in sides:
            dec = encode_decoder(tokenizer, family, data, max_length=max_length, include_special=include_special,
                                 decoder_start=start, spans=spans, lang_codes=lang_codes)
    return CapturePlan(data, family, points, sides, src, dec, pooling=pooling, max_length=max_length,
                       include_special=include_special, pad_id=pad_id(tokenizer), decoder_start=start,
                       langs=src.langs)


def _check_poolable(plan: CapturePlan, tokenizer: Any) -> None:
    """Raise when a side has a text with nothing to pool (or no language tag for ``tag`` pooling)."""
    for side in plan.sides:
        enc = plan.encoded(side)
        if plan.pooling == "tag":
            check_tag_available(enc, tokenizer, plan.family, side)
        elif plan.pooling != "tokens" and (empty := np.flatnonzero(enc.kept == 0)).size:
            raise DataError(f"{empty.size} text(s) have no token left to pool on the {side} side "
                            f"(positions {empty[:10].tolist()})",
                            hint="they tokenize to special tokens only; drop them or pass include_special=True")
