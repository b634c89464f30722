"""Core types: records round-trip, fingerprints are content- and order-sensitive, lists are checked."""
from __future__ import annotations

import pytest

from xlprobe.errors import DataError
from xlprobe.types import Dataset, Record


def test_record_round_trip():
    r = Record("k:43.11.35", "Jesus wept.", "en", "43.11.35", {"genre": "Gospels and Acts"}, "Jésus pleura.", "fr")
    assert Record.from_dict(r.to_dict()) == r


def test_fingerprint_tracks_content_and_order():
    a = Dataset.from_texts(["one", "two"], "en")
    assert a.fingerprint == Dataset.from_texts(["one", "two"], "en", name="other").fingerprint
    assert a.fingerprint != Dataset.from_texts(["two", "one"], "en").fingerprint
    assert a.fingerprint != Dataset.from_texts(["one", "two"], "fr").fingerprint


def test_from_texts_checks_lengths_and_keeps_labels():
    ds = Dataset.from_texts(["a", "b"], ["en", "fr"], labels={"genre": ["Law", "Epistles"]}, groups=["g1", "g1"])
    assert ds.labels("genre") == ["Law", "Epistles"] and ds.labels("language") == ["en", "fr"]
    with pytest.raises(DataError, match="2 texts but 3 labels"):
        Dataset.from_texts(["a", "b"], "en", labels={"genre": ["x", "y", "z"]})
    with pytest.raises(DataError, match="2 texts but 1 langs"):
        Dataset.from_texts(["a", "b"], ["en"])
    with pytest.raises(DataError, match="no label 'book'"):
        ds.labels("book")
