"""Deterministic, group-aware splits: every record of a unit (verse, chapter, book) lands on one side.

A *unit* is what a split keeps together. ``by="group"`` keeps the translations of one sentence
together; ``by="chapter"`` and ``by="book"`` keep near-duplicate neighbouring verses apart from the
test side as well. Any label name (``by="genre"``) also works as a unit.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

from xlprobe.errors import ConfigError, DataError
from xlprobe.folds import FINER, balanced_folds, check_k, shuffled_units, split_sides
from xlprobe.types import Dataset, Record

__all__ = ["group_ids", "group_kfold", "group_train_test_split", "fold_unit", "confined_classes"]

_VERSE_KEY = re.compile(r"(\d+)\.(\d+)\.(\d+)")
_FINER = FINER


def _records(data: Dataset | Sequence[Record]) -> Sequence[Record]:
    """The records of a Dataset or a sequence of Records, refusing empty input."""
    records = data.records if isinstance(data, Dataset) else data
    if len(records) == 0:
        raise DataError("cannot split an empty dataset", hint="load some records first")
    return records


def _verse_part(record: Record, by: str) -> str:
    """Book (``"43"``) or chapter (``"43.3"``) of a record whose group is a verse key ``b.c.v``."""
    m = _VERSE_KEY.fullmatch(record.group or "")
    if m is None:
        raise DataError(
            f"cannot split by {by!r}: record {record.id!r} has group {record.group!r}, "
            "not a verse key 'book.chapter.verse'" + (" and no 'book' label" if by == "book" else ""),
            hint="split by='group' or by a label name present in every record",
        )
    return m.group(1) if by == "book" else f"{m.group(1)}.{m.group(2)}"


def _unit(record: Record, by: str) -> str:
    """The unit of one record under ``by``."""
    if by == "group":
        return record.group if record.group is not None else f"id:{record.id}"
    if by == "chapter":
        return _verse_part(record, by)
    if by in record.labels:
        return str(record.labels[by])
    if by == "book":
        return _verse_part(record, by)
    raise DataError(f"cannot split by {by!r}: record {record.id!r} has no label {by!r}",
                    hint=f"use 'group', 'chapter', 'book' or one of its labels {sorted(record.labels)}")


def group_ids(data: Dataset | Sequence[Record], by: str = "group") -> np.ndarray:
    """The unit of every record, as a 1-D array usable as ``groups=`` of scikit-learn's splitters.

    Parameters
    ----------
    data : Dataset or sequence of Record
    by : str, default "group"
        ``"group"`` (the parallel group; a record without one is its own unit), ``"chapter"``,
        ``"book"`` (the ``book`` label, else the book part of a ``book.chapter.verse`` group) or any
        label name.

    Returns
    -------
    numpy.ndarray
        One string per record (object dtype).

    Examples
    --------
    >>> from sklearn.model_selection import GroupKFold  # doctest: +SKIP
    >>> GroupKFold(5).split(X, y, groups=group_ids(ds, by="chapter"))  # doctest: +SKIP
    """
    return np.asarray([_unit(r, by) for r in _records(data)], dtype=object)


def _unit_table(data: Dataset | Sequence[Record], by: str, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per record: unit index; per unit (shuffled with ``seed``): its name and record count."""
    return shuffled_units(group_ids(data, by), seed)


def group_kfold(
    data: Dataset | Sequence[Record], k: int = 5, by: str = "book", seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split into ``k`` folds with no unit on both sides, balancing record counts across folds.

    Units are shuffled with ``seed``, then placed largest first into the fold with the fewest
    records so far (ties broken by the shuffle), like scikit-learn's ``GroupKFold``.

    Parameters
    ----------
    data : Dataset or sequence of Record
    k : int, default 5
        Number of folds, at least 2 and at most the number of units.
    by : str, default "book"
        The unit kept together: ``"book"``, ``"chapter"``, ``"group"`` or a label name
        (see :func:`group_ids`).
    seed : int, default 0
        Seed of the ``np.random.default_rng`` that shuffles units.

    Returns
    -------
    list of (numpy.ndarray, numpy.ndarray)
        ``k`` pairs of sorted int64 (train, test) record indices; every record is in exactly one
        test fold.
    """
    k = check_k(k)
    unit_of, names, sizes = _unit_table(data, by, seed)
    if k > len(names):
        raise DataError(f"cannot make {k} folds by {by!r}: the data has only {len(names)} distinct "
                        f"{by} unit(s)", hint=f"use k <= {len(names)}, or {_FINER}")
    fold_of = balanced_folds(sizes, k)
    return [split_sides(unit_of, np.flatnonzero(fold_of == f)) for f in range(k)]


def _pick_test_units(sizes: np.ndarray, test_size: float, n_records: int) -> list[int]:
    """Test units (in shuffled order) whose records come closest to ``test_size``."""
    if isinstance(test_size, (int, np.integer)) and not isinstance(test_size, bool):
        if not 1 <= test_size < len(sizes):
            raise DataError(f"test_size={test_size!r} units leaves no unit for one side: the data has "
                            f"{len(sizes)} unit(s)", hint=f"use 1 <= test_size < {len(sizes)}, or {_FINER}")
        return list(range(int(test_size)))
    if not isinstance(test_size, float) or not 0.0 < test_size < 1.0:
        raise DataError(f"test_size must be a fraction in (0, 1) or a number of units, got {test_size!r}",
                        hint="e.g. test_size=0.2")
    target, count, chosen = test_size * n_records, 0, []
    for u, size in enumerate(sizes):
        if len(chosen) == len(sizes) - 1:
            break
        if not chosen or abs(count + size - target) < abs(count - target):
            chosen.append(u)
            count += int(size)
    return chosen


def group_train_test_split(
    data: Dataset | Sequence[Record],
    test_size: float = 0.2,
    by: str = "book",
    seed: int = 0,
    *,
    test: Iterable[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Split records into train / test with no unit on both sides.

    Parameters
    ----------
    data : Dataset or sequence of Record
    test_size : float or int, default 0.2
        A float is the wanted fraction of *records* in test, met as closely as whole units allow
        (units are taken in seeded random order); an int is a number of units.
    by : str, default "book"
        The unit kept together (see :func:`group_ids`).
    seed : int, default 0
        Seed of the ``np.random.default_rng`` that orders units.
    test : iterable of str, optional
        Explicit test units (e.g. ``["John", "Acts"]`` with ``by="book"``); ``test_size`` and
        ``seed`` are then ignored.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Sorted int64 train and test record indices, both non-empty.
    """
    unit_of, names, sizes = _unit_table(data, by, seed)
    if len(names) < 2:
        raise DataError(f"cannot split by {by!r}: the data has a single {by} unit ({names[0]!r})",
                        hint=_FINER)
    if test is not None:
        wanted = [str(t) for t in test]
        position = {str(n): i for i, n in enumerate(names)}
        missing = [t for t in wanted if t not in position]
        if missing:
            shown = ", ".join(sorted(map(str, names))[:20])
            raise DataError(f"test unit(s) {missing!r} not found among the {by} units",
                            hint=f"units present: {shown}{' ...' if len(names) > 20 else ''}")
        chosen = [position[t] for t in wanted]
        if len(set(chosen)) == len(names):
            raise DataError(f"test={wanted!r} takes every {by} unit, leaving nothing to train on",
                            hint="leave at least one unit out of test")
    else:
        chosen = _pick_test_units(sizes, test_size, len(unit_of))
    return split_sides(unit_of, chosen)


_LANGUAGE = ("language", "lang")


def confined_classes(y: np.ndarray, units: np.ndarray) -> list[str]:
    """The classes of ``y`` whose items all lie in one unit (unseen in training when that unit is tested)."""
    where: dict[str, set] = {}
    for label, unit in zip(y.tolist(), units.tolist()):
        where.setdefault(label, set()).add(unit)
    return sorted(c for c, us in where.items() if len(us) == 1)


def fold_unit(data: Dataset, task: str, by: str | None, y: np.ndarray) -> tuple[str, str]:
    """The fold unit for ``task`` (``by``, or the default when it is None) and why; refuses a unit that
    cannot work: one under which every test item's class is absent from training.

    Default (``by=None``): ``"group"`` for language identity (a translation of a test verse is never
    trained on); ``"chapter"`` for a label that is constant within every book of the data (``genre``,
    ``book``, ``testament`` of the Bible), since parallel-group folds put neighbouring verses of one
    chapter, which share the label and the topic, on both sides; ``"group"`` for other labels, or when
    the records have no ``book.chapter.verse`` keys.
    """
    name = "language" if task in _LANGUAGE else task
    if by is not None and (by == name or (name == "language" and by in _LANGUAGE)):
        raise ConfigError(f"cannot fold by {by!r} for task {task!r}: the fold unit equals the task, so every "
                          "test item's class is absent from training and the accuracy is 0 by construction",
                          hint="leave by unset (chapter folds for book-level labels, parallel groups for "
                               "language), or use by='chapter' / by='group'")
    if by is not None:
        units = group_ids(data, by)
        confined = confined_classes(y, units)
        if confined and len(confined) == len(set(y.tolist())):
            raise DataError(f"cannot fold by {by!r} for task {task!r}: every class lies in a single {by} unit "
                            f"(e.g. {confined[:3]}), so every test item's class is absent from training and the "
                            "accuracy is 0 by construction",
                            hint="use a finer unit: by='chapter' (keeps every book on both sides) or by='group'")
        return by, "given"
    if name == "language":
        return "group", "language identity: parallel groups, so no translation of a test verse is trained on"
    try:
        books = group_ids(data, "book")
        group_ids(data, "chapter")
    except DataError:
        return "group", f"{task!r} folds by parallel group: the records have no book.chapter.verse keys"
    per_book: dict[str, set] = {}
    for label, book in zip(y.tolist(), books.tolist()):
        per_book.setdefault(book, set()).add(label)
    if all(len(labels) == 1 for labels in per_book.values()):
        return "chapter", (f"{task!r} is constant within every book: chapter folds, so neighbouring verses of "
                           "one chapter are never on both sides")
    return "group", f"{task!r} varies within books: parallel-group folds"
