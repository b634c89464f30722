"""Padding-aware pooling of per-token states [batch, seq, d] into one vector per text.

Every pooling reads a boolean ``mask`` [batch, seq] of the positions that count (by default the
text's own tokens: not padding, not special tokens such as language codes, bos / eos), so left and right
padding give the same result. ``tag`` reads the language-code position alone: a baseline, since a probe
that sees only the tag learns nothing about the text.
"""
from __future__ import annotations

import torch

from xlprobe.errors import ConfigError

__all__ = ["pool", "first_index", "last_index", "POOLED"]

#: Poolings that give one vector per text (``tokens`` keeps every token and is handled by extract).
POOLED = ("mean", "first", "last", "max", "tag")


def first_index(mask: torch.Tensor) -> torch.Tensor:
    """Position of the first True of each row (rows must have one)."""
    return mask.to(torch.int8).argmax(dim=1)


def last_index(mask: torch.Tensor) -> torch.Tensor:
    """Position of the last True of each row, for left or right padding alike."""
    t = mask.shape[1]
    return (t - 1) - mask.flip(dims=[1]).to(torch.int8).argmax(dim=1)


def pool(states: torch.Tensor, mask: torch.Tensor, method: str, tag_index: torch.Tensor | None = None) -> torch.Tensor:
    """Pool ``states`` [b, t, d] over the True positions of ``mask`` [b, t]; returns [b, d] in float32."""
    if states.dim() != 3 or mask.shape != states.shape[:2]:
        raise ConfigError(f"pool expects states [b, t, d] and mask [b, t], got {tuple(states.shape)} and "
                          f"{tuple(mask.shape)}")
    rows = torch.arange(states.shape[0], device=states.device)
    x = states.float()
    if method == "mean":
        m = mask.to(x.dtype)
        total = torch.bmm(m.unsqueeze(1), x).squeeze(1)  # [b, d] without a [b, t, d] temporary
        return total / m.sum(dim=1, keepdim=True).clamp_min(1.0)
    if method == "max":
        return x.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)
    if method == "first":
        return x[rows, first_index(mask)]
    if method == "last":
        return x[rows, last_index(mask)]
    if method == "tag":
        if tag_index is None:
            raise ConfigError("pooling='tag' needs the language-code position of each text",
                              hint="use a family that marks languages with a token (mBART-50, M2M100, NLLB)")
        return x[rows, tag_index]
    raise ConfigError(f"unknown pooling {method!r}", hint=f"valid: {', '.join(POOLED + ('tokens',))}")
