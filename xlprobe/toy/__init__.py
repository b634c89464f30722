"""xlprobe's small mBART-style toy family: the recipe that trains, exports and evaluates it."""
from __future__ import annotations

from xlprobe.toy.config import PRESETS, STAGES, ToyConfig, get_preset
from xlprobe.toy.data import HELDOUT_BOOKS, LANG_CODES, LANG_TRANSLATION, load_corpus
from xlprobe.toy.train import train

__all__ = ["train", "ToyConfig", "PRESETS", "STAGES", "get_preset", "HELDOUT_BOOKS", "LANG_CODES",
           "LANG_TRANSLATION", "load_corpus"]
