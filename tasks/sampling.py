"""Seeded sampling helpers shared by the loaders (``limit=``)."""
from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

import numpy as np

from xlprobe.errors import DataError, XlprobeError
from xlprobe.types import Dataset

__all__ = ["check_limit", "sample_indices", "stratified_sample", "balanced_groups", "with_cli_hint"]

E = TypeVar("E", bound=XlprobeError)


def with_cli_hint(err: E, cli_hint: str) -> E:
    """``err`` with the hint worded for the command line (data specs, ``--options``); ``hint`` stays Python's."""
    err.cli_hint = cli_hint  # type: ignore[attr-defined]  # read by xlprobe.cli_common.fail
    return err


def check_limit(limit: object, what: str = "limit") -> int | None:
    """Validate ``limit`` (None or a positive int) and return it as an int."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise with_cli_hint(DataError(f"{what} must be a positive integer, got {limit!r}",
                                      hint=f"pass e.g. {what}=1000, or None to keep everything"),
                            f"e.g. --{what.replace('_', '-')} 1000, or ?{what}=1000 in the data spec "
                            "(bible:en,fr?limit=1000); leave it out to keep everything")
    return int(limit)


def sample_indices(n: int, limit: int | None, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``limit`` items out of ``n`` drawn without replacement (all when ``limit >= n``)."""
    if limit is None or limit >= n:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=limit, replace=False)).astype(np.int64)


def _allocate(sizes: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Largest-remainder allocation of ``n`` draws in proportion to ``sizes`` (ties broken by ``rng``)."""
    exact = n * sizes / sizes.sum()
    quota = np.minimum(np.floor(exact).astype(np.int64), sizes)
    left = n - int(quota.sum())
    if left > 0:
        tie_break = rng.permutation(len(sizes))
        order = np.lexsort((tie_break, -(exact - quota)))
        for i in order:
            if left == 0:
                break
            if quota[i] < sizes[i]:
                quota[i] += 1
                left -= 1
    return quota


def stratified_sample(strata: Sequence[Hashable], n: int | None, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``n`` items, spread over ``strata`` in proportion to their sizes.

    Parameters
    ----------
    strata : sequence of hashable
        The stratum of each item (e.g. the book of each verse).
    n : int or None
        How many items to keep; None or ``n >= len(strata)`` keeps all.
    seed : int
        Seed of the ``np.random.default_rng`` that breaks ties and draws within strata.

    Returns
    -------
    numpy.ndarray
        Sorted int64 indices into ``strata``.
    """
    total = len(strata)
    if n is None or n >= total:
        return np.arange(total, dtype=np.int64)
    rng = np.random.default_rng(seed)
    keys, inverse = np.unique(np.asarray([str(s) for s in strata], dtype=object), return_inverse=True)
    sizes = np.bincount(inverse, minlength=len(keys))
    quota = _allocate(sizes, n, rng)
    chosen = []
    for k in range(len(keys)):
        members = np.flatnonzero(inverse == k)
        if quota[k]:
            chosen.append(rng.choice(members, size=int(quota[k]), replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def balanced_groups(data: Dataset, label: str, per_class: int | None = None, seed: int = 0) -> Dataset:
    """The records of ``per_class`` parallel groups of each class of ``label`` (default: the rarest class's count).

    A transfer or probing task on unbalanced classes lets a majority guess look like knowledge (the
    Bible's genres: 87 % of held-out verses are John's); drawing whole groups keeps every kept verse in
    all its languages. Groups whose records disagree on ``label`` are an error.
    """
    of_group: dict[str, str] = {}
    for r in data:
        if label not in r.labels:
            raise DataError(f"record {r.id!r} has no label {label!r}",
                            hint=f"labels: {', '.join(sorted(r.labels)) or 'none'}")
        value = str(r.labels[label])
        if of_group.setdefault(str(r.group), value) != value:
            raise DataError(f"parallel group {r.group!r} has records with {label} {of_group[str(r.group)]!r} "
                            f"and {value!r}", hint="balance on a label shared by every language of a verse")
    classes = sorted(set(of_group.values()))
    members = {c: sorted(g for g, v in of_group.items() if v == c) for c in classes}
    smallest = min(len(m) for m in members.values())
    if per_class is None:
        per_class = smallest
    elif per_class > smallest:
        raise DataError(f"per_class={per_class} but class {min(members, key=lambda c: len(members[c]))!r} has "
                        f"only {smallest} group(s)", hint=f"ask for at most {smallest}, or None")
    rng = np.random.default_rng(seed)
    keep = {g for c in classes for g in rng.choice(members[c], size=per_class, replace=False).tolist()}
    return data.subset([i for i, r in enumerate(data) if str(r.group) in keep],
                       name=f"{data.name}|balanced:{label}={per_class}")
