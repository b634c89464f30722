"""xlprobe's small mBART-style toy family: the shipped checkpoints (``load``, ``path``) and the recipe.

The recipe is the module :mod:`xlprobe.toy.recipe` (``python -m xlprobe.toy.recipe``); its function
:func:`~xlprobe.toy.recipe.train` is re-exported here and imported on first use (it needs torch and
transformers). The corpus details (``HELDOUT_BOOKS``, ``LANG_CODES``, ``load_corpus``) stay in
:mod:`xlprobe.toy.data`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from xlprobe.toy.config import PRESETS, STAGES, ToyConfig, get_preset
from xlprobe.toy.shipped import NAMES, card, load, path

if TYPE_CHECKING:
    from xlprobe.toy.recipe import train

__all__ = ["load", "path", "card", "NAMES", "train", "ToyConfig", "PRESETS", "STAGES", "get_preset"]


def __getattr__(name: str):
    """Import the recipe (torch, transformers) only when ``train`` is first used."""
    if name == "train":
        from xlprobe.toy.recipe import train

        return train
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
