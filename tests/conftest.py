"""Shared fixtures: tiny seeded models of every family, built once per session."""
from __future__ import annotations

import logging
import warnings

import pytest

warnings.filterwarnings("ignore", message=".*bos_token_id.*")
logging.getLogger("transformers").setLevel(logging.ERROR)

_CACHE: dict[str, tuple] = {}


def tiny(family: str):
    """A cached (model, tokenizer) pair of ``family`` (callers must not modify the model)."""
    from xlprobe.tiny import build

    if family not in _CACHE:
        _CACHE[family] = build(family, seed=0)
    return _CACHE[family]


@pytest.fixture(scope="session")
def tiny_model():
    """Factory fixture: tiny_model('mbart') -> (model, tokenizer)."""
    return tiny


TEXTS = [
    "In the beginning was the Word, and the Word was with God.",
    "Au commencement était la Parole.",
    "Im Anfang war das Wort, und das Wort war bei Gott, und Gott war das Wort.",
    "Jesus wept.",
    "En el principio era el Verbo.",
]


@pytest.fixture
def texts() -> list[str]:
    """Five short verses in four languages, of different lengths."""
    return list(TEXTS)
