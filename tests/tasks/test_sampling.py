"""Seeded sampling: balanced parallel groups keep whole verses and equal classes."""
from __future__ import annotations

from collections import Counter

import pytest

from xlprobe.errors import DataError
from xlprobe.tasks.sampling import balanced_groups
from xlprobe.types import Dataset, Record


def _data(sizes: dict[str, int], langs: tuple[str, ...] = ("en", "fr")) -> Dataset:
    records = [Record(id=f"{lg}:{c}{i}", text="x", lang=lg, group=f"{c}{i}", labels={"book": c})
               for c, n in sizes.items() for i in range(n) for lg in langs]
    return Dataset("toy", tuple(records))


def test_every_class_gets_as_many_whole_groups_as_the_rarest():
    data = _data({"John": 30, "Ruth": 9, "Jonah": 5})
    out = balanced_groups(data, "book", seed=3)
    per_class = Counter(r.labels["book"] for r in out if r.lang == "en")
    assert per_class == {"John": 5, "Ruth": 5, "Jonah": 5}
    assert all(n == 2 for n in Counter(r.group for r in out).values())  # both languages of each kept verse
    assert [r.id for r in balanced_groups(data, "book", seed=3)] == [r.id for r in out]  # seeded
    assert [r.id for r in balanced_groups(data, "book", seed=4)] != [r.id for r in out]
    assert len(balanced_groups(data, "book", per_class=2)) == 2 * 3 * 2


def test_impossible_or_ill_posed_balancing_is_a_clear_error():
    data = _data({"John": 3, "Ruth": 2})
    with pytest.raises(DataError, match="only 2 group"):
        balanced_groups(data, "book", per_class=3)
    with pytest.raises(DataError, match="no label 'genre'"):
        balanced_groups(data, "genre")
    mixed = Dataset("m", (Record(id="a", text="x", lang="en", group="g", labels={"book": "A"}),
                          Record(id="b", text="x", lang="fr", group="g", labels={"book": "B"})))
    with pytest.raises(DataError, match="parallel group 'g'"):
        balanced_groups(mixed, "book")
