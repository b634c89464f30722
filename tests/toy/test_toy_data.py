"""The toy family's data: shippable translations only, whole books held out, cleaned texts."""
from __future__ import annotations

import unicodedata

import pytest

from xlprobe.errors import DataError
from xlprobe.tasks.bible import TRANSLATIONS
from xlprobe.toy.data import HELDOUT_BOOKS, LANG_CODES, LANG_TRANSLATION, clean_text, load_corpus


def test_only_shippable_translations_six_languages_three_scripts() -> None:
    """Every translation is licensed 'yes'; >= 6 languages; Latin, Cyrillic and Arabic scripts."""
    assert len(LANG_TRANSLATION) >= 6 and set(LANG_TRANSLATION) == set(LANG_CODES)
    assert all(TRANSLATIONS[c].shippable for c in LANG_TRANSLATION.values())
    assert {TRANSLATIONS[c].lang for c in LANG_TRANSLATION.values()} == set(LANG_TRANSLATION)
    corpus = load_corpus(books=[32])
    scripts = set()
    for lang in corpus.langs:
        letter = next(ch for t in corpus.texts[lang] if t for ch in t if ch.isalpha())
        scripts.add(unicodedata.name(letter).split()[0])
    assert {"LATIN", "CYRILLIC", "ARABIC"} <= scripts


def test_heldout_books_are_split_off_whole() -> None:
    """Held-out rows are exactly the verses of the held-out books; the others never include them."""
    corpus = load_corpus(["en", "fr"], books=[7, 8, 31, 32, 42, 43])
    held, train = corpus.indices(True), corpus.indices(False)
    assert set(HELDOUT_BOOKS) == {8, 32, 43}
    assert {corpus.books[i] for i in held} == {8, 32, 43}
    assert {corpus.books[i] for i in train} == {7, 31, 42}
    assert not set(held) & set(train) and len(held) + len(train) == len(corpus.keys)
    sub = corpus.subset(held)
    assert sub.keys == [corpus.keys[i] for i in held] and sub.texts["fr"][0] == corpus.texts["fr"][held[0]]


def test_clean_text() -> None:
    """NFKC, editorial brackets dropped, spaces squeezed."""
    assert clean_text("Jesus [aber]  sprach:\u00a0Ｊa ") == "Jesus aber sprach: Ja"
    assert clean_text("") == "" and clean_text(None) == ""  # type: ignore[arg-type]


def test_unknown_language_is_refused() -> None:
    """A language without a toy translation raises DataError listing the valid ones."""
    with pytest.raises(DataError, match="xx") as err:
        load_corpus(["en", "xx"])
    assert "en" in err.value.hint


def test_trained_on_names_the_records_of_training_books():
    from xlprobe.toy.data import trained_on
    from xlprobe.types import Record

    recs = [Record(id="a", text="x", lang="en", group="8.1.1"), Record(id="b", text="x", lang="en", group="1.1.1"),
            Record(id="c", text="x", lang="en", group="43.3.16"), Record(id="d", text="x", lang="en", group=None),
            Record(id="e", text="x", lang="en", group="40.5.3")]
    assert trained_on(recs) == ["b", "e"]  # Genesis and Matthew; Ruth (8) and John (43) are held out
