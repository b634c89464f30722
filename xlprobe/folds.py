"""Fold construction on arrays: every item of a unit (a parallel group, a chapter, a book) on one side.

Shared by the two stages that split data: :mod:`xlprobe.tasks.splits` splits records (it computes each
record's unit, then calls these), and the measures in :mod:`xlprobe.probes` split arrays of items whose
unit is given per item. Both may import this core module; neither imports the other.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from xlprobe.errors import DataError

__all__ = ["kfold_units", "balanced_folds", "shuffled_units", "split_sides", "check_k", "FINER"]

#: The advice when there are too few units for a split.
FINER = "split by a finer unit (book -> chapter -> group) or use fewer folds"


def check_k(k: object) -> int:
    """``k`` as a number of folds (an int >= 2), or a DataError."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise DataError(f"k must be an integer >= 2, got {k!r}", hint="e.g. k=5")
    return int(k)


def shuffled_units(units: Sequence | np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per item: its unit's index in a ``seed``-shuffled order; per unit (in that order): name and size."""
    names, inverse = np.unique(np.asarray(units), return_inverse=True)
    order = np.random.default_rng(seed).permutation(len(names))
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    unit_of = rank[inverse.reshape(-1)]
    return unit_of, names[order], np.bincount(unit_of, minlength=len(names))


def balanced_folds(sizes: np.ndarray, k: int) -> np.ndarray:
    """Fold of each unit: largest first into the fold with the fewest items so far (ties: unit order)."""
    fold_of = np.empty(len(sizes), dtype=np.int64)
    load = np.zeros(k, dtype=np.int64)
    for u in np.argsort(-sizes, kind="stable"):
        fold_of[u] = int(np.argmin(load))
        load[fold_of[u]] += sizes[u]
    return fold_of


def split_sides(unit_of: np.ndarray, test_units: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train / test item indices for a set of test unit indices."""
    is_test = np.isin(unit_of, np.fromiter(test_units, dtype=np.int64))
    return np.flatnonzero(~is_test).astype(np.int64), np.flatnonzero(is_test).astype(np.int64)


def kfold_units(units: Sequence | np.ndarray, k: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` (train, test) index pairs over items whose unit (group) is given per item, no unit on both sides.

    Units are shuffled with ``seed`` and placed largest first into the lightest fold (scikit-learn's
    ``GroupKFold``, seeded), so folds have balanced sizes; every item is in exactly one test fold.
    """
    k = check_k(k)
    u = np.asarray(units)
    if u.ndim != 1 or u.size == 0:
        raise DataError(f"units must be a non-empty 1-D array (one unit per item); got shape {u.shape}",
                        hint="pass the parallel-group (or book) id of every item")
    unit_of, names, sizes = shuffled_units(u, seed)
    if k > len(names):
        raise DataError(f"cannot make {k} folds: the items have only {len(names)} distinct unit(s)",
                        hint=f"use k <= {len(names)}, or {FINER}")
    fold_of = balanced_folds(sizes, k)
    return [split_sides(unit_of, np.flatnonzero(fold_of == f)) for f in range(k)]
