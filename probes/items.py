"""Per-item scores of the measures that are means over items: what paired tests and intervals resample.

A measure such as kNN accuracy or retrieval P@1 is the mean of one score per item (correct or not,
the share of languages in which the item retrieves its translation). :func:`item_scores` returns that
vector for a registered name, with the registered variant's options (``separability.knn.all`` leaves
the own group in, ``retrieval.p_at_1.centered`` centres each language), so that its mean is the
registered value; a test checks every name of :data:`ITEM_MEASURES`. The probe's own per-item scores
(out-of-fold correctness) come from :func:`xlprobe.probes.probe_layers` (``return_items=True``).
"""
from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from xlprobe.errors import ConfigError
from xlprobe.probes.alignment import neighbour_overlap, neighbour_overlaps
from xlprobe.probes.retrieval import retrieval_hits, retrieval_p_at_1
from xlprobe.probes.separability import knn_accuracy, knn_correct
from xlprobe.registry import get_measure

__all__ = ["item_scores", "ITEM_MEASURES", "has_item_scores"]

#: Aggregate function -> its per-item function (same arguments, one score per item).
_PER_ITEM = {knn_accuracy: knn_correct, retrieval_p_at_1: retrieval_hits, neighbour_overlap: neighbour_overlaps}


def has_item_scores(name: str) -> bool:
    """Whether the registered measure ``name`` is a mean of per-item scores that :func:`item_scores` gives."""
    return get_measure(name).fn in _PER_ITEM


def item_scores(name: str, X: Any, y: Any, groups: Any) -> np.ndarray:
    """Per-item scores [n] of the registered measure ``name``; their mean is the measure's value.

    ``y`` is what the measure reads (the task's labels, or the languages for ``retrieval.*`` and
    ``alignment.*``), ``groups`` the parallel groups.
    """
    spec = get_measure(name)
    fn = _PER_ITEM.get(spec.fn)
    if fn is None:
        raise ConfigError(f"measure {name!r} is not a mean of per-item scores",
                          hint="per-item measures: " + ", ".join(ITEM_MEASURES))
    takes = inspect.signature(fn).parameters
    kwargs = {k: v for k, v in spec.defaults.items() if k in takes}
    return np.asarray(fn(X, y, groups, **kwargs), dtype=np.float64)


#: Registered measures with per-item scores (a test checks this is every name whose function has a twin).
ITEM_MEASURES = ("separability.knn", "separability.knn.all", "retrieval.p_at_1", "retrieval.p_at_1.centered",
                 "retrieval.p_at_1.margin", "alignment.neighbour_overlap")
