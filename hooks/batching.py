"""Inputs of a capture run: normalising texts into a Dataset, padding batches, decoder start tokens.

Shared by :func:`xlprobe.hooks.extract` and the TransformerLens adapter, so both read exactly the same
ids, masks and positions.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from xlprobe.errors import ConfigError, DataError
from xlprobe.hooks.encode import Encoded
from xlprobe.types import Dataset, Record

__all__ = ["as_dataset", "position_limit", "SideBatch", "side_batch", "decoder_start", "pad_id"]


def as_dataset(texts: Any, src_lang: str | None, tgt_texts: Sequence[str] | None,
                tgt_lang: str | None) -> Dataset:
    """Normalise strings, records or a Dataset into a Dataset, validating what a user can get wrong."""
    if isinstance(texts, Dataset):
        data = texts
    elif isinstance(texts, str):
        raise DataError("texts must be a sequence of strings, got a single string",
                        hint="wrap it in a list: extract(model, tok, [text], ...)")
    else:
        items = list(texts)
        if items and all(isinstance(t, Record) for t in items):
            data = Dataset("records", tuple(items))
        elif all(isinstance(t, str) for t in items):
            if tgt_texts is not None and len(tgt_texts) != len(items):
                raise DataError(f"{len(items)} texts but {len(tgt_texts)} tgt_texts",
                                hint="give one target per source text, in the same order")
            data = Dataset("texts", tuple(
                Record(str(i), t, src_lang or "und", None, {},
                       None if tgt_texts is None else tgt_texts[i], tgt_lang)
                for i, t in enumerate(items)))
        else:
            bad = next(i for i, t in enumerate(items) if not isinstance(t, (str, Record)))
            raise DataError(f"texts[{bad}] is a {type(items[bad]).__name__}, not a str or Record",
                            hint="pass a list of strings, a list of xlprobe.Record, or an xlprobe Dataset")
    if len(data) == 0:
        raise DataError("no texts to encode (empty list)", hint="check the data selection (languages, books, --limit)")
    empty = [i for i, r in enumerate(data) if not isinstance(r.text, str) or not r.text.strip()]
    if empty:
        raise DataError(f"{len(empty)} empty or whitespace-only text(s) at positions {empty[:10]}",
                        hint="drop them before extracting (the Bible loader filters and counts them)")
    empty_t = [i for i, r in enumerate(data) if r.target_text is not None and not r.target_text.strip()]
    if empty_t:
        raise DataError(f"{len(empty_t)} empty target text(s) at positions {empty_t[:10]}",
                        hint="drop those pairs or give no targets at all")
    return data



def position_limit(model: nn.Module) -> int | None:
    """How many positions the model can embed (None when unbounded, e.g. relative positions)."""
    cfg = getattr(model, "config", None)
    limit = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
    if limit and getattr(cfg, "model_type", "") in ("xlm-roberta", "roberta"):
        limit -= (getattr(cfg, "pad_token_id", 1) or 1) + 1  # positions start after the padding index
    return int(limit) if limit else None



def _pad(seqs: list[np.ndarray], fill: int | bool, side: str, dtype: Any) -> np.ndarray:
    """Stack ragged 1-D arrays into [b, t], padding on ``side``."""
    t = max(len(s) for s in seqs)
    out = np.full((len(seqs), t), fill, dtype=dtype)
    for i, s in enumerate(seqs):
        if side == "right":
            out[i, :len(s)] = s
        else:
            out[i, t - len(s):] = s
    return out



@dataclass
class SideBatch:
    """One padded side of a batch, as torch tensors on the model's device."""

    ids: torch.Tensor
    attn: torch.Tensor
    keep: torch.Tensor
    tag: torch.Tensor
    positions: torch.Tensor | None



def side_batch(enc: Encoded, idx: np.ndarray, pad_id: int, side: str, device: torch.device) -> SideBatch:
    """Pad one side of the batch ``idx`` and move it to ``device``."""
    seqs = [enc.ids[i] for i in idx]
    ids = _pad(seqs, pad_id, side, np.int64)
    attn = _pad([np.ones(len(s), np.int64) for s in seqs], 0, side, np.int64)
    keep = _pad([enc.keep[i] for i in idx], False, side, bool)
    offset = (ids.shape[1] - np.array([len(s) for s in seqs])) if side == "left" else np.zeros(len(seqs), np.int64)
    tag = np.where(enc.tag[idx] >= 0, enc.tag[idx] + offset, 0)
    positions = None
    if side == "left":
        positions = torch.from_numpy(np.clip(attn.cumsum(axis=1) - 1, 0, None)).to(device)
    t = torch.from_numpy
    return SideBatch(t(ids).to(device), t(attn).to(device), t(keep).to(device), t(tag).to(device), positions)



def decoder_start(model: nn.Module) -> int:
    """The decoder start token id from the model's config or generation config."""
    for cfg in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        v = getattr(cfg, "decoder_start_token_id", None) if cfg is not None else None
        if v is not None:
            return int(v)
    raise ConfigError(f"{type(model).__name__} has no decoder_start_token_id in its config",
                      hint="set model.config.decoder_start_token_id (mBART-50: the </s> id, 2)")



def pad_id(tokenizer: Any) -> int:
    """A token id to pad with (masked out, so any valid id works)."""
    for attr in ("pad_token_id", "eos_token_id", "unk_token_id"):
        v = getattr(tokenizer, attr, None)
        if v is not None:
            return int(v)
    return 0
