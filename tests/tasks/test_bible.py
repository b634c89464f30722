"""load_bible on small real slices: labels, alignment, filtering, limit, licence warnings."""
from __future__ import annotations

import logging
from collections import Counter

import pytest

from xlprobe.errors import DataError
from xlprobe.tasks import load_bible
from xlprobe.tasks.bible import (
    DROP_REASONS,
    default_translation,
    drop_reason,
    read_verses,
    select_translations,
)
from xlprobe.types import Dataset

SLICE_BOOKS = "Ruth,John,Jude"  # as in conftest.py
SLICE_VERSES = 85 + 879 + 25


def _by_id(ds: Dataset) -> dict:
    return {r.id: r for r in ds}


def test_john_3_16_labels(en_fr: Dataset) -> None:
    rec = _by_id(en_fr)["k:43.3.16"]
    assert rec.group == "43.3.16"
    assert rec.lang == "en"
    assert rec.text.startswith("For God so loved the world")
    assert dict(rec.labels) == {"language": "en", "testament": "NT", "book": "John",
                                "genre": "Gospels and Acts", "translation": "k"}
    fr = _by_id(en_fr)["l:43.3.16"]
    assert fr.group == rec.group and fr.lang == "fr" and fr.labels["genre"] == "Gospels and Acts"


def test_old_testament_labels(en_fr: Dataset) -> None:
    rec = _by_id(en_fr)["l:8.1.1"]
    assert (rec.labels["testament"], rec.labels["book"], rec.labels["genre"]) == ("OT", "Ruth", "History")


def test_groups_are_parallel_and_ordered(en_fr: Dataset) -> None:
    groups = en_fr.groups
    assert len(en_fr) == 2 * SLICE_VERSES
    assert groups[0::2] == groups[1::2]  # each verse: en then fr
    assert en_fr.langs[:4] == ["en", "fr", "en", "fr"]
    keys = [tuple(map(int, g.split("."))) for g in groups[0::2]]
    assert keys == sorted(keys)  # numeric verse order, not string order
    assert all(r.id == f"{r.labels['translation']}:{r.group}" for r in en_fr)
    assert en_fr.meta["dropped"]["k"] == dict.fromkeys(DROP_REASONS, 0)


def test_defaults_and_meta(en_fr: Dataset) -> None:
    meta = en_fr.meta
    assert meta["defaults"] == {"en": "k", "fr": "l"}
    assert [t["code"] for t in meta["translations"]] == ["k", "l"]
    assert meta["translations"][0] == {"code": "k", "language": "en", "name": "King James 1611",
                                       "licence": "yes", "shippable": True, "records": SLICE_VERSES}
    assert meta["shippable"] is True and meta["books"] == [8, 43, 65]
    assert default_translation("pt") == "a"  # no 'yes' translation: the first one
    assert default_translation("de") == "e"


def test_filtered_verses_are_counted(en_fr_tr: Dataset) -> None:
    meta = en_fr_tr.meta
    notes = meta["dropped"]["t"]["note"]
    assert notes > 0  # '(aynı)' = "same as the previous verse"
    assert meta["groups_not_parallel"] == notes
    assert meta["dropped"]["k"]["not_parallel"] == meta["dropped"]["l"]["not_parallel"] == notes
    assert meta["n_groups"] == SLICE_VERSES - notes
    for code in "klt":
        kept = sum(r.labels["translation"] == code for r in en_fr_tr)
        assert kept + sum(meta["dropped"][code].values()) == SLICE_VERSES
    assert all(r.text.strip() and r.text != "(aynı)" for r in en_fr_tr)


def test_parallel_false_keeps_partial_groups(en_fr_tr: Dataset) -> None:
    ds = load_bible(["en", "tr"], books=SLICE_BOOKS, parallel=False)
    counts = Counter(r.lang for r in ds)
    assert counts["en"] == SLICE_VERSES
    assert counts["tr"] == SLICE_VERSES - en_fr_tr.meta["dropped"]["t"]["note"]


def test_min_chars_counts_short_verses() -> None:
    ds = load_bible(translations=["k"], books="John", min_chars=12)
    assert "k:43.11.35" not in _by_id(ds)  # "Jesus wept." has 11 characters
    assert ds.meta["dropped"]["k"]["short"] >= 1


@pytest.mark.parametrize(("text", "reason"), [
    ("", "empty"), ("   ", "empty"), ("-", "placeholder"), ("...", "placeholder"), ("[]", "placeholder"),
    ("(aynı)", "note"), ("［本節欠如］", "note"), ("(8:1)", "note"), ("ab", "short"),
    ("Jesus wept.", None), ("(For the men of war had taken spoil, every man for himself.)", None),
])
def test_drop_reason(text: str, reason: str | None) -> None:
    assert drop_reason(text) == reason


def test_limit_is_stratified_and_seeded() -> None:
    a = load_bible(["en", "fr"], books=SLICE_BOOKS, limit=100, seed=1)
    b = load_bible(["en", "fr"], books=SLICE_BOOKS, limit=100, seed=1)
    c = load_bible(["en", "fr"], books=SLICE_BOOKS, limit=100, seed=2)
    assert a.meta["n_groups"] == 100 and len(a) == 200
    assert a.fingerprint == b.fingerprint and a.fingerprint != c.fingerprint
    per_book = Counter(r.labels["book"] for r in a if r.lang == "en")
    assert per_book == {"John": 89, "Ruth": 9, "Jude": 2}  # in proportion to 879 / 85 / 25 verses
    chapters = {r.group.rsplit(".", 1)[0] for r in a if r.labels["book"] == "John"}
    assert len(chapters) > 10  # spread through the book, not its first verses
    keys = [tuple(map(int, g.split("."))) for g in a.groups[0::2]]
    assert keys == sorted(keys)


def test_non_shippable_translation_warns(caplog: pytest.LogCaptureFixture, en_fr_tr: Dataset) -> None:
    with caplog.at_level(logging.WARNING, logger="xlprobe.tasks.bible"):
        load_bible(["tr"], books="Jude")
    assert "New Turkish Bible 2001" in caplog.text and "must not be shipped" in caplog.text
    assert "Probing them locally is fine" in caplog.text
    meta = en_fr_tr.meta
    assert meta["shippable"] is False
    assert [t["shippable"] for t in meta["translations"]] == [True, True, False]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="xlprobe.tasks.bible"):
        load_bible(["en"], books="Jude")
    assert caplog.text == ""


def test_translation_codes_and_testament() -> None:
    ds = load_bible(translations="k,3", books="Ruth,Jude", testament="NT")
    assert {r.labels["book"] for r in ds} == {"Jude"}
    assert ds.langs[:2] == ["en", "en"] and ds.meta["defaults"] == {}
    codes, defaults = select_translations(["fr"], ["k"])
    assert codes == ["l", "k"] and defaults == {"fr": "l"}


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"langs": ["xx"]}, "language 'xx' is not in the Bible corpus"),
    ({"translations": ["en"]}, "unknown Bible translation code"),
    ({"langs": ["en"], "books": "Ruth", "testament": "NT"}, "none of the books"),
    ({"langs": ["en"], "books": "Jude", "limit": 0}, "limit must be a positive integer"),
    ({"langs": ["en"], "books": "Jude", "min_chars": -1}, "min_chars"),
])
def test_bad_selection_raises(kwargs: dict, fragment: str) -> None:
    with pytest.raises(DataError, match=fragment) as info:
        load_bible(**kwargs)
    assert info.value.hint


def test_read_verses_keeps_its_signature() -> None:
    verses = list(read_verses(["k", "l"], [65]))
    assert len(verses) == 50 and verses[0].key == "65.1.1" and verses[0].translation == "k"
