"""Parallel Bible verses for the toy family: shippable translations only, whole books held out."""
from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from xlprobe.errors import DataError
from xlprobe.tasks.bible import TRANSLATIONS, read_verses
from xlprobe.types import Record

__all__ = [
    "LANG_TRANSLATION",
    "LANG_CODES",
    "HELDOUT_BOOKS",
    "ParallelCorpus",
    "clean_text",
    "load_corpus",
    "trained_on",
]

log = logging.getLogger(__name__)

#: language -> corpus translation code. Every one is public domain ("yes" in DATA.md). Three scripts:
#: Latin (en es fr de it vi), Cyrillic (ru), Arabic (ar).
LANG_TRANSLATION: dict[str, str] = {
    "en": "k",  # King James 1611
    "es": "v",  # Reina Valera 1909
    "fr": "l",  # Louis Segond 1910
    "de": "e",  # Elberfelder 1932
    "it": "d",  # Diodati 1649
    "ru": "r",  # Russian Synodal 1876
    "ar": "y",  # Smith & Van Dyke 1865
    "vi": "7",  # Vietnamese 1934
}

#: language -> mBART-50 language code (the special token that opens every sequence).
LANG_CODES: dict[str, str] = {
    "en": "en_XX",
    "es": "es_XX",
    "fr": "fr_XX",
    "de": "de_DE",
    "it": "it_IT",
    "ru": "ru_RU",
    "ar": "ar_AR",
    "vi": "vi_VN",
}

#: Books never trained on (tokenizer included): Ruth (8) and Jonah (32) from the Old Testament, the
#: Gospel of John (43) from the New. Evaluation reads only these.
HELDOUT_BOOKS: tuple[int, ...] = (8, 32, 43)

_MIN_CHARS = 3
_BRACKETS = re.compile(r"[\[\]{}<>¶]")
_SPACES = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """NFKC-normalise, drop editorial brackets (Elberfelder's supplied words) and squeeze spaces."""
    text = unicodedata.normalize("NFKC", text or "")
    return _SPACES.sub(" ", _BRACKETS.sub("", text)).strip()


@dataclass
class ParallelCorpus:
    """Verse-aligned texts: ``texts[lang][i]`` translates ``keys[i]``; ``None`` where dropped."""

    langs: tuple[str, ...]
    keys: list[str]
    books: list[int]
    texts: dict[str, list[str | None]]
    dropped: dict[str, int] = field(default_factory=dict)

    def indices(self, heldout: bool, heldout_books: Sequence[int] = HELDOUT_BOOKS) -> list[int]:
        """Row indices of the held-out books (``heldout=True``) or of every other book."""
        held = set(heldout_books)
        return [i for i, b in enumerate(self.books) if (b in held) == heldout]

    def subset(self, rows: Sequence[int]) -> ParallelCorpus:
        """A corpus of the given rows, in that order."""
        return ParallelCorpus(
            self.langs,
            [self.keys[i] for i in rows],
            [self.books[i] for i in rows],
            {lang: [t[i] for i in rows] for lang, t in self.texts.items()},
            dict(self.dropped),
        )


def load_corpus(
    langs: Sequence[str] = tuple(LANG_TRANSLATION),
    books: Sequence[int] | None = None,
    *,
    db: str | None = None,
) -> ParallelCorpus:
    """Read the verses of ``langs`` (shippable translations only), cleaned; short texts become None."""
    unknown = [lang for lang in langs if lang not in LANG_TRANSLATION]
    if unknown:
        raise DataError(
            f"language(s) {unknown!r} have no toy-family translation",
            hint="choose from " + ", ".join(LANG_TRANSLATION),
        )
    codes = [LANG_TRANSLATION[lang] for lang in langs]
    for code in codes:
        if not TRANSLATIONS[code].shippable:
            raise DataError(
                f"translation {code!r} ({TRANSLATIONS[code].name}) may not ship derived artifacts",
                hint="use only translations marked 'yes' in DATA.md",
            )
    lang_of = dict(zip(codes, langs))
    rows: dict[str, dict[str, str]] = {}
    book_of: dict[str, int] = {}
    for v in read_verses(codes, books, db=db):
        rows.setdefault(v.key, {})[lang_of[v.translation]] = v.text
        book_of[v.key] = v.book
    keys = list(rows)
    texts: dict[str, list[str | None]] = {lang: [] for lang in langs}
    dropped = {lang: 0 for lang in langs}
    for key in keys:
        for lang in langs:
            t = clean_text(rows[key].get(lang, ""))
            keep = len(t) >= _MIN_CHARS
            texts[lang].append(t if keep else None)
            dropped[lang] += not keep
    log.info("read %d verse keys in %d languages; dropped (empty/short): %s", len(keys), len(langs), dropped)
    return ParallelCorpus(tuple(langs), keys, [book_of[k] for k in keys], texts, dropped)


_VERSE_KEY = re.compile(r"^(\d+)\.\d+\.\d+$")


def trained_on(records: Iterable[Record], heldout_books: Sequence[int] = HELDOUT_BOOKS) -> list[str]:
    """Ids of the Bible records from books the toy family trained on (any book but the held-out ones).

    A measure on those verses also reads what the toy models memorised (retrieval P@1 of toy:mt at
    encoder.2: 0.582 on training books, 0.560 on held-out ones); records without a verse key are not
    counted.
    """
    held = set(heldout_books)
    out = []
    for r in records:
        m = _VERSE_KEY.match(r.group or "")
        if m and int(m.group(1)) not in held:
            out.append(r.id)
    return out
