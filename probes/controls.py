"""Controls for probes: what accuracy means nothing, so a probe result can be read against it.

* majority baseline: always predict the training folds' most frequent class;
* shuffled labels: the same probe on labels permuted across items (seeded): structure-free labels of
  the same distribution, so its accuracy is what the probe reaches by chance and memorisation;
* control task (Hewitt & Liang 2019): every *type* gets a random label drawn from the task's label
  distribution, and each item takes its type's label. A probe can only learn it by memorising types,
  so task accuracy minus control accuracy (*selectivity*) is what the representation adds beyond
  lexical identity. For sentences, the type is the first word by default (:func:`first_word_types`):
  it recurs across folds (``And``, ``Und``, ``Et``) and a representation encodes it trivially.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

import numpy as np

from xlprobe.errors import DataError

__all__ = ["CONTROLS", "majority_predictions", "shuffled_labels", "control_task_labels", "first_word_types"]

#: Controls :func:`~xlprobe.probes.probing.probe_layers` runs, in the order it reports them.
CONTROLS = ("majority", "shuffled", "control-task")

_WORD = re.compile(r"\w+", re.UNICODE)


def majority_predictions(y_train: np.ndarray, n_test: int) -> np.ndarray:
    """The training set's most frequent label (ties: the smallest), repeated ``n_test`` times."""
    values, counts = np.unique(np.asarray(y_train), return_counts=True)
    return np.repeat(values[np.argmax(counts)], n_test)


def shuffled_labels(y: Any, *, seed: int = 0) -> np.ndarray:
    """The labels permuted across items (class counts kept), seeded."""
    a = np.asarray(y)
    return a[np.random.default_rng(seed).permutation(len(a))]


def control_task_labels(types: Any, y: Any, *, seed: int = 0) -> np.ndarray:
    """Hewitt & Liang control labels: one random label per type, drawn from the empirical label distribution.

    Parameters
    ----------
    types : array-like [n]
        The type of every item (a word, a token id, a first word).
    y : array-like [n]
        The task's labels; the control labels take values in the same set, with the same marginal
        distribution in expectation.
    seed : int
        Seed of the draw.
    """
    t, a = np.asarray(types), np.asarray(y)
    if t.ndim != 1 or t.shape != a.shape:
        raise DataError(f"types must be 1-D with one entry per label ({a.shape[0] if a.ndim else '?'}); "
                        f"got shape {t.shape}", hint="pass one type per item, in the order of the labels")
    if t.dtype == object and any(v is None for v in t):
        raise DataError("types contains None", hint="give every item a type (e.g. first_word_types(texts))")
    uniq, inverse = np.unique(t, return_inverse=True)
    values, counts = np.unique(a, return_counts=True)
    draw = np.random.default_rng(seed).choice(len(values), size=len(uniq), p=counts / counts.sum())
    return values[draw][inverse.reshape(-1)]


def first_word_types(texts: Sequence[str]) -> np.ndarray:
    """The first word of each text, case-folded and NFKC-normalised (``"<none>"`` when there is none)."""
    out = []
    for text in texts:
        m = _WORD.search(unicodedata.normalize("NFKC", text or ""))
        out.append(m.group(0).casefold() if m else "<none>")
    return np.asarray(out, dtype=object)
