"""xlprobe's small mBART-style toy family: the shipped checkpoints (``load``, ``path``) and the recipe."""
from __future__ import annotations

from xlprobe.toy.config import PRESETS, STAGES, ToyConfig, get_preset
from xlprobe.toy.data import HELDOUT_BOOKS, LANG_CODES, LANG_TRANSLATION, load_corpus
from xlprobe.toy.shipped import NAMES, card, load, path
from xlprobe.toy.train import train

__all__ = ["load", "path", "card", "NAMES", "train", "ToyConfig", "PRESETS", "STAGES", "get_preset", "HELDOUT_BOOKS", "LANG_CODES",
           "LANG_TRANSLATION", "load_corpus"]
