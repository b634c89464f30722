"""Group-aware splits: no unit on both sides, deterministic for a seed, clear errors."""
from __future__ import annotations

import numpy as np
import pytest

from xlprobe.errors import DataError
from xlprobe.tasks import group_ids, group_kfold, group_train_test_split
from xlprobe.types import Dataset, Record


def _units(ds: Dataset, idx: np.ndarray, by: str) -> set:
    return set(group_ids(ds, by)[idx])


@pytest.mark.parametrize(("by", "k"), [("book", 3), ("chapter", 5), ("group", 5), ("genre", 3)])
def test_kfold_keeps_units_on_one_side(en_fr: Dataset, by: str, k: int) -> None:
    folds = group_kfold(en_fr, k, by=by, seed=0)
    assert len(folds) == k
    tests = np.concatenate([test for _, test in folds])
    assert np.array_equal(np.sort(tests), np.arange(len(en_fr)))  # each record tested exactly once
    for train, test in folds:
        assert len(train) + len(test) == len(en_fr) and len(test) > 0
        assert not _units(en_fr, train, by) & _units(en_fr, test, by)
        assert not _units(en_fr, train, "group") & _units(en_fr, test, "group")  # translations together
        assert train.dtype == np.int64 and np.all(np.diff(test) > 0)


def test_kfold_is_deterministic_and_balanced(en_fr: Dataset) -> None:
    a = group_kfold(en_fr, 5, by="chapter", seed=3)
    b = group_kfold(en_fr, 5, by="chapter", seed=3)
    c = group_kfold(en_fr, 5, by="chapter", seed=4)
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    assert not all(np.array_equal(x[1], y[1]) for x, y in zip(a, c))
    sizes = [len(t) for _, t in a]
    assert max(sizes) - min(sizes) <= 0.1 * len(en_fr)


def test_kfold_errors(en_fr: Dataset) -> None:
    with pytest.raises(DataError, match="only 3 distinct book unit") as info:
        group_kfold(en_fr, 5, by="book")
    assert "k <= 3" in info.value.hint
    with pytest.raises(DataError, match="k must be an integer >= 2"):
        group_kfold(en_fr, 1)
    with pytest.raises(DataError, match="no label 'topic'"):
        group_kfold(en_fr, 2, by="topic")


def test_group_ids(en_fr: Dataset) -> None:
    i = [r.id for r in en_fr].index("k:43.3.16")
    assert group_ids(en_fr, "chapter")[i] == "43.3"
    assert group_ids(en_fr, "book")[i] == "John"
    assert group_ids(en_fr, "group")[i] == "43.3.16"
    assert group_ids(en_fr).shape == (len(en_fr),)


def test_group_ids_work_with_sklearn(en_fr: Dataset) -> None:
    from sklearn.model_selection import GroupKFold

    groups = group_ids(en_fr, by="chapter")
    for train, test in GroupKFold(n_splits=4).split(np.zeros(len(en_fr)), groups=groups):
        assert not set(groups[train]) & set(groups[test])


def test_train_test_split(en_fr: Dataset) -> None:
    train, test = group_train_test_split(en_fr, 0.2, by="chapter", seed=0)
    assert abs(len(test) / len(en_fr) - 0.2) < 0.05
    assert not _units(en_fr, train, "chapter") & _units(en_fr, test, "chapter")
    again = group_train_test_split(en_fr, 0.2, by="chapter", seed=0)
    assert np.array_equal(test, again[1])
    train, test = group_train_test_split(en_fr, by="book", test=["John"])
    assert _units(en_fr, test, "book") == {"John"} and _units(en_fr, train, "book") == {"Ruth", "Jude"}
    train, test = group_train_test_split(en_fr, 2, by="book", seed=0)  # an int is a number of units
    assert len(_units(en_fr, test, "book")) == 2 and len(_units(en_fr, train, "book")) == 1


def test_train_test_split_errors(en_fr: Dataset) -> None:
    john = en_fr.subset([i for i, r in enumerate(en_fr) if r.labels["book"] == "John"])
    with pytest.raises(DataError, match="single book unit"):
        group_train_test_split(john, by="book")
    with pytest.raises(DataError, match=r"test unit\(s\) \['Acts'\] not found"):
        group_train_test_split(en_fr, by="book", test=["Acts"])
    with pytest.raises(DataError, match="test_size must be a fraction"):
        group_train_test_split(en_fr, 1.5)
    with pytest.raises(DataError, match="leaves no unit"):
        group_train_test_split(en_fr, 3, by="book")


def test_split_by_chapter_needs_verse_keys() -> None:
    records = [Record(id=str(i), text="x", lang="en", group=f"g{i % 3}") for i in range(6)]
    with pytest.raises(DataError, match="not a verse key"):
        group_kfold(records, 2, by="chapter")
    folds = group_kfold(records, 3, by="group")
    assert sorted(len(t) for _, t in folds) == [2, 2, 2]


def test_chapter_folds_never_split_a_chapter(en_fr: Dataset) -> None:
    # the folds probe_run makes (kfold_units over the per-record units), by chapter
    from xlprobe.folds import kfold_units

    chapters = group_ids(en_fr, "chapter")
    folds = kfold_units(chapters, 5, seed=0)
    fold_of = np.full(len(chapters), -1)
    for f, (train, test) in enumerate(folds):
        assert not set(chapters[train]) & set(chapters[test])
        fold_of[test] = f
    assert (fold_of >= 0).all()
    for chapter in set(chapters.tolist()):  # every item of a chapter is in one test fold
        assert len(set(fold_of[chapters == chapter].tolist())) == 1
    # the translations of a verse share its chapter, so they never straddle folds either
    assert all(len(set(fold_of[group_ids(en_fr, "group") == g].tolist())) == 1 for g in ("8.1.1", "43.3.16"))
