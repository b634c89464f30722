"""Parallel items: languages and parallel groups indexed once, pairs of languages aligned by group.

Items are sentences with a language and a *parallel group* (the same verse in every language shares
a group). For a pair of languages (a, b) the **shared groups** are those with an item in both; each
language has at most one item per group, so the shared groups pair a's items with b's one to one
(:func:`pair_rows`). The cross-lingual measures (:mod:`xlprobe.probes.retrieval`,
:mod:`xlprobe.probes.alignment`) read their items through :func:`parallel_index`.

**Per-item scores** of a cross-lingual measure (:func:`per_item_scores`): such a measure is a mean
over (query item, other language) pairs, and an item has as many such pairs as languages holding its
translation, t_i. Item i's score is ``s_i * n / T``, with s_i its summed score over those languages and
T = sum_i t_i, so the plain mean of the n scores is the measure (sum_i s_i / T). On fully parallel data
(every group in every language, t_i = L - 1) the score is exactly the item's mean over the other
languages; otherwise it is that mean times t_i / mean(t), and an item with no translation scores 0.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from xlprobe.errors import ConfigError, DataError
from xlprobe.probes.arrays import as_groups, as_labels

__all__ = ["ParallelIndex", "parallel_index", "pair_rows", "check_choice", "warn_skipped", "per_item_scores",
           "language_unit_rows", "CENTERS"]

logger = logging.getLogger(__name__)

#: Accepted values of ``center``: none, or subtract each language's mean vector.
CENTERS = ("none", "language")


@dataclass(frozen=True)
class ParallelIndex:
    """Languages and groups of the items, indexed once: per language, its rows sorted by group."""

    langs: tuple[Any, ...]
    rows: tuple[np.ndarray, ...]  # rows[l]: row indices of language l, by increasing group code
    keys: tuple[np.ndarray, ...]  # keys[l]: their group codes (strictly increasing)

    def pair(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows of languages a and b in their shared groups, aligned (same group at the same position)."""
        _, ia, ib = np.intersect1d(self.keys[a], self.keys[b], assume_unique=True, return_indices=True)
        return self.rows[a][ia], self.rows[b][ib]

    def index(self, lang: Any, name: str) -> int:
        """Position of ``lang`` among the languages; DataError when it is not one of them."""
        try:
            return self.langs.index(lang)
        except ValueError:
            raise DataError(f"{name}={lang!r} is not one of the languages of the items: {list(self.langs)}",
                            hint="pass a language code that occurs in langs") from None


def _duplicates_error(groups: Any, classes: np.ndarray, lc: np.ndarray, gc: np.ndarray,
                      dup: np.ndarray) -> DataError:
    """The error for (language, group) pairs that occur more than once, with examples."""
    gvalues = np.unique(np.asarray(groups))
    pairs, counts = np.unique(np.stack([lc[1:][dup], gc[1:][dup]], axis=1), axis=0, return_counts=True)
    examples = ", ".join(f"({classes[lang].item()!r}, {gvalues[g].item()!r}) x{c + 1}"
                         for (lang, g), c in zip(pairs[:5], counts[:5]))
    return DataError(f"{len(pairs)} (language, group) pair(s) occur more than once, e.g. {examples}; each "
                     "language may have at most one item per parallel group",
                     hint="drop repeated items (the same verse twice in one language), or give them distinct groups")


def parallel_index(langs: Any, groups: Any, n: int, langs_name: str = "langs") -> ParallelIndex:
    """Check languages and groups (one each per item, >= 2 languages, one item per (language, group)) and index them."""
    codes, classes = as_labels(langs, n, langs_name, min_classes=2)
    if groups is None:
        raise DataError("groups is None; cross-lingual measures need the parallel group of every item",
                        hint="pass the group ids (records' .group: the same verse in every language shares one)")
    gcodes = as_groups(groups, n)
    order = np.lexsort((gcodes, codes))
    lc, gc = codes[order], gcodes[order]
    dup = (lc[1:] == lc[:-1]) & (gc[1:] == gc[:-1])
    if dup.any():
        raise _duplicates_error(groups, classes, lc, gc, dup)
    bounds = np.searchsorted(lc, np.arange(classes.size + 1))
    rows = tuple(order[bounds[i]:bounds[i + 1]] for i in range(classes.size))
    keys = tuple(gc[bounds[i]:bounds[i + 1]] for i in range(classes.size))
    return ParallelIndex(tuple(classes.tolist()), rows, keys)


def check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    """``value`` if it is one of ``allowed``; ConfigError otherwise."""
    if not isinstance(value, str) or value not in allowed:
        raise ConfigError(f"{name} must be one of {list(allowed)}; got {value!r}",
                          hint=f"pass {name}=" + " or ".join(repr(a) for a in allowed))
    return value


def warn_skipped(skipped: list[tuple[Any, Any]], why: str, stacklevel: int) -> None:
    """Log and warn (RuntimeWarning) about language pairs left out of a measure, NaN in its matrix."""
    if not skipped:
        return
    shown = ", ".join(f"{a!r}-{b!r}" for a, b in skipped[:10]) + (", ..." if len(skipped) > 10 else "")
    msg = f"{len(skipped)} language pair(s) {why}; their entries are NaN: {shown}"
    logger.warning(msg)
    warnings.warn(msg, RuntimeWarning, stacklevel=stacklevel + 1)


def language_unit_rows(A: np.ndarray, par: ParallelIndex, center: str) -> np.ndarray:
    """Centre each language (if asked) and scale rows to unit norm, in place (A must be a private copy).

    The centring subtracts each language's mean over all of its items, so it does not depend on the
    pair compared; zero rows stay zero (cosine 0 with everything).
    """
    if center == "language":
        for rows in par.rows:
            A[rows] -= A[rows].mean(axis=0)
    norms = np.linalg.norm(A, axis=1)
    A /= np.where(norms > 0, norms, 1.0)[:, None]
    return A


def per_item_scores(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per-item scores ``sums * n / counts.sum()`` whose plain mean is sum(sums) / sum(counts) (module docstring)."""
    total = float(counts.sum())
    if total == 0:
        return np.full(sums.shape, np.nan)
    return sums * sums.size / total


def pair_rows(langs: Any, groups: Any, a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of languages ``a`` and ``b`` in their shared groups, aligned by group.

    Parameters
    ----------
    langs, groups : array [n]
        Language and parallel group of each item (as in :func:`~xlprobe.probes.retrieval.retrieval_matrix`).
    a, b : language
        Two languages of ``langs``.

    Returns
    -------
    rows_a, rows_b : ndarray of int64
        ``rows_a[i]`` and ``rows_b[i]`` are the items of a and b in the same group, by increasing
        group; empty when the two languages share no group.

    Raises
    ------
    DataError
        For bad languages / groups (not one per item, fewer than 2 languages, an item repeated in a
        (language, group)), and for ``a`` or ``b`` not in ``langs``.

    Examples
    --------
    >>> pair_rows(["en", "fr", "fr", "en"], [1, 2, 1, 2], "en", "fr")
    (array([0, 3]), array([2, 1]))
    """
    par = parallel_index(langs, groups, np.shape(langs)[0] if np.ndim(langs) >= 1 else 0)
    return par.pair(par.index(a, "a"), par.index(b, "b"))
