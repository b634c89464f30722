"""catalogue(): the rows `xlprobe data` prints."""
from __future__ import annotations

from xlprobe.tasks import catalogue
from xlprobe.tasks.bible import TRANSLATIONS
from xlprobe.tasks.catalogue import CATALOGUE_COLUMNS


def test_catalogue_rows() -> None:
    rows = catalogue()
    assert all(tuple(r) == CATALOGUE_COLUMNS for r in rows)
    bible = {r["code"]: r for r in rows if r["corpus"] == "bible"}
    assert set(bible) == set(TRANSLATIONS)
    k, t, a = bible["k"], bible["t"], bible["a"]
    assert (k["lang"], k["licence"], k["shippable"], k["default"], k["verses"]) == ("en", "yes", True, True, 31102)
    assert bible["3"]["default"] is False and a["default"] is True  # pt has no 'yes' translation
    assert t["licence"] == "no" and not t["shippable"] and t["usable"] < t["verses"]  # '(aynı)' notes
    assert {r["corpus"] for r in rows} >= {"flores", "tatoeba", "xnli", "pawsx"}


def test_catalogue_without_counts() -> None:
    rows = catalogue(counts=False)
    assert all(r["verses"] is None for r in rows)
