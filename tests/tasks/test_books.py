"""The 66-book table and book-name parsing."""
from __future__ import annotations

from collections import Counter

import pytest

from xlprobe.errors import DataError
from xlprobe.tasks.books import BOOKS, GENRES, book_number, books_in_testament, parse_books


def test_table_has_66_books_with_fixed_genres() -> None:
    assert sorted(BOOKS) == list(range(1, 67))
    counts = Counter(b.genre for b in BOOKS.values())
    assert counts == {"Law": 5, "History": 12, "Wisdom": 5, "Prophets": 17, "Gospels and Acts": 5,
                      "Epistles": 21, "Apocalyptic": 1}
    assert set(counts) == set(GENRES)


@pytest.mark.parametrize(("number", "name", "testament", "genre"), [
    (1, "Genesis", "OT", "Law"),
    (25, "Lamentations", "OT", "Prophets"),
    (39, "Malachi", "OT", "Prophets"),
    (43, "John", "NT", "Gospels and Acts"),
    (44, "Acts", "NT", "Gospels and Acts"),
    (65, "Jude", "NT", "Epistles"),
    (66, "Revelation", "NT", "Apocalyptic"),
])
def test_known_books(number: int, name: str, testament: str, genre: str) -> None:
    book = BOOKS[number]
    assert (book.name, book.testament, book.genre) == (name, testament, genre)


@pytest.mark.parametrize(("text", "expected"), [
    ("John", 43), ("Jn", 43), ("jhn", 43), ("1 John", 62), ("1Jn", 62), ("Song of Solomon", 22),
    ("SongOfSolomon", 22), ("Ps", 19), ("Psalm", 19), ("matth", 40), ("Rev.", 66), ("43", 43), (43, 43),
])
def test_book_number(text: str | int, expected: int) -> None:
    assert book_number(text) == expected


def test_parse_books_lists_ranges_and_genres() -> None:
    assert parse_books("John, Acts") == [43, 44]
    assert parse_books("Matt-Luke") == [40, 41, 42]
    assert parse_books("40-44") == parse_books("Gospels and Acts") == [40, 41, 42, 43, 44]
    assert parse_books("Gen..Deut") == [1, 2, 3, 4, 5]
    assert parse_books(["Jude", 43, "Jn"]) == [43, 65]
    assert books_in_testament("nt") == list(range(40, 67))


@pytest.mark.parametrize(("text", "fragment"), [
    ("phi", "ambiguous: it could be Philippians, Philemon"),
    ("Hezekiah", "unknown book 'Hezekiah'"),
    ("Acts-Matt", "runs backwards"),
    ("70", "out of range"),
])
def test_bad_books_raise(text: str, fragment: str) -> None:
    with pytest.raises(DataError, match=fragment) as info:
        parse_books(text)
    assert info.value.hint


def test_bad_testament() -> None:
    with pytest.raises(DataError, match="unknown testament"):
        books_in_testament("middle")
