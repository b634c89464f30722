"""Batches of a capture run: length-sorted record batches, padding, decoder start and pad tokens.

Used through :class:`xlprobe.hooks.plan.CapturePlan`, so every runner (extract, the TransformerLens
adapter, fine-tuning) reads exactly the same ids, masks and positions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from xlprobe.errors import ConfigError
from xlprobe.hooks.encode import Encoded

__all__ = ["position_limit", "SideBatch", "side_batch", "decoder_start", "pad_id", "length_batches"]


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


def length_batches(order_key: np.ndarray, lo: int, hi: int, *, batch_size: int, max_tokens: int | None = None
                   ) -> list[np.ndarray]:
    """Record indices of ``[lo, hi)`` in batches sorted by ``order_key``, longest first (memory errors come early).

    With ``max_tokens``, a batch also stops growing when its size x its longest text would exceed it
    (a text longer than ``max_tokens`` is a batch of its own).
    """
    idx = np.arange(lo, hi)
    idx = idx[np.argsort(-order_key[lo:hi], kind="stable")]
    if max_tokens is None:
        return [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
    out, i = [], 0
    while i < len(idx):
        longest = max(int(order_key[idx[i]]), 1)  # sorted: the first text of a batch is its longest
        size = max(1, min(batch_size, max_tokens // longest, len(idx) - i))
        out.append(idx[i:i + size])
        i += size
    return out
