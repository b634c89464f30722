"""Paired comparisons between the checkpoints of a run: which layers differ, by how much, beyond a control.

The study's question is a contrast: does ``mt`` differ from ``lm`` at a layer, and by more than the
same amount of extra denoising (``lm-cont``) moves it? With roles, the contrasts are every checkpoint
against the ``base`` (``mt - lm``, ``lm-cont - lm``) and every other checkpoint against the
``control`` (``mt - lm-cont``: the difference-in-differences (mt - lm) - (lm-cont - lm), since the
base cancels). Without roles, every pair of checkpoints.

Each contrast is computed on the items both checkpoints were measured on (matched by record id; ``n``
says how many), per layer they share, for every measure with per-item scores (a probe's out-of-fold
correctness, kNN correctness, retrieval hits, neighbour overlap: :mod:`xlprobe.probes.items`) and, by
half-samples of the whole statistic, for set measures (Fisher ratio, effective rank). Every row holds
the difference (checkpoint - ref_checkpoint), a paired interval over parallel groups (cluster
bootstrap; half-sampling for set measures), a p-value (sign flips of whole groups; the normal test on
the half-sampling standard error for set measures) and that
p-value corrected over the layers of its (contrast, measure) family (Holm by default; the
``correction`` column says which and over how many layers).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from xlprobe.errors import ConfigError, DataError
from xlprobe.probes.paired import PairedStats, adjust_pvalues, paired_item_stats, paired_set_stats
from xlprobe.results import make_row

__all__ = ["resolve_checkpoint", "contrasts", "compare_items", "compare_sets", "Scores"]

log = logging.getLogger(__name__)

#: Per-item scores of one (measure, checkpoint, layer): a Series indexed by record id.
Scores = Mapping[tuple[str, str, str], pd.Series]


def resolve_checkpoint(name: str | None, names: Sequence[str], role: str) -> str | None:
    """The checkpoint ``name`` designates: its exact name, or the one name ending in ``:name`` (``lm``)."""
    if name is None:
        return None
    if name in names:
        return name
    hits = [c for c in names if c.endswith(f":{name}") or c.split("@")[0].endswith(f":{name}")]
    if len(hits) == 1:
        return hits[0]
    raise ConfigError(f"--{role} {name!r} is {'ambiguous' if hits else 'not a checkpoint of this run'}",
                      hint="checkpoints: " + ", ".join(names))


def contrasts(names: Sequence[str], base: str | None = None, control: str | None = None
              ) -> list[tuple[str, str, str]]:
    """``(checkpoint, ref_checkpoint, contrast)`` triples: vs the base and vs the control, else every pair."""
    if control is not None and base is None:
        raise ConfigError("a control checkpoint needs a base", hint="pass --base lm --control lm-cont")
    if base is not None and control == base:
        raise ConfigError(f"base and control are the same checkpoint ({base})")
    if base is None:
        return [(b, a, "pair") for i, a in enumerate(names) for b in names[i + 1:]]
    out = [(c, base, "vs base") for c in names if c != base]
    if control is not None:
        out += [(c, control, "vs control") for c in names if c not in (base, control)]
    return out


def _row_fields(stats: PairedStats, correction: str, p_adj: np.ndarray, i: int) -> dict[str, Any]:
    """The statistics columns of one layer's row."""
    family = int(np.isfinite(stats.p_value).sum())
    return dict(value=float(stats.difference[i]), ci_low=float(stats.low[i]), ci_high=float(stats.high[i]),
                p_value=float(stats.p_value[i]), p_adjusted=float(p_adj[i]),
                correction=f"{correction} over {family} layers", test=stats.test, n_groups=stats.n_groups)


def _layers(keys: dict[tuple[str, str, str], Any], measure: str, a: str, b: str) -> list[str]:
    """Layers measured for both checkpoints, in the order they were measured for the first."""
    mine = [la for (m, c, la) in keys if m == measure and c == a]
    return [la for la in mine if (measure, b, la) in keys]


def compare_items(scores: Scores, groups: pd.Series, triples: Sequence[tuple[str, str, str]], *,
                  correction: str = "holm", n_boot: int = 1000, n_perm: int = 10_000, ci: float = 0.95,
                  seed: int = 0, task: str | None = None) -> list[dict]:
    """Rows of paired differences for every measure with per-item scores, per contrast and shared layer.

    ``scores`` maps ``(measure, checkpoint, layer)`` to per-item scores indexed by record id; ``groups``
    maps record ids to their parallel group (the unit resampled and flipped).
    """
    keys = dict.fromkeys(scores)
    rows: list[dict] = []
    for measure in dict.fromkeys(m for m, _, _ in scores):
        for a, b, contrast in triples:
            layers = _layers(keys, measure, a, b)
            if not layers:
                continue
            ids = scores[measure, a, layers[0]].index.intersection(scores[measure, b, layers[0]].index)
            if len(ids) == 0:
                raise DataError(f"{a} and {b} share no measured item: no paired comparison",
                                hint="capture both checkpoints on the same data (--data, --limit)")
            A = np.column_stack([scores[measure, a, la].loc[ids].to_numpy() for la in layers])
            B = np.column_stack([scores[measure, b, la].loc[ids].to_numpy() for la in layers])
            stats = paired_item_stats(A, B, groups.loc[ids].to_numpy(), n_boot=n_boot, n_perm=n_perm, ci=ci,
                                      seed=seed)
            p_adj = adjust_pvalues(stats.p_value, correction)
            rows += [make_row(checkpoint=a, ref_checkpoint=b, layer=la, measure=measure, n=len(ids), task=task,
                              seed=seed, contrast=contrast, **_row_fields(stats, correction, p_adj, i))
                     for i, la in enumerate(layers)]
    return rows


def _side(reps: Mapping[tuple[str, str], Any], c: str, layers: list[str], rows: np.ndarray, y: Any) -> list[Any]:
    """One checkpoint's arrays on the shared rows, per layer (with the labels when the statistic takes them)."""
    return [reps[c, la][rows] if y is None else (reps[c, la][rows], y) for la in layers]


def compare_sets(stat: Callable[..., float], measure: str, reps: Mapping[tuple[str, str], Any],
                 ids: Mapping[str, pd.Index], groups: pd.Series, triples: Sequence[tuple[str, str, str]], *,
                 labels: pd.Series | None = None, correction: str = "holm", n_half: int = 100, ci: float = 0.95,
                 seed: int = 0, task: str | None = None) -> list[dict]:
    """Rows of paired differences of a set statistic (``stat(X)`` or ``stat(X, y)``), by paired half-sampling.

    ``reps`` maps ``(checkpoint, layer)`` to its array, whose rows are the record ids ``ids[checkpoint]``.
    """
    rows: list[dict] = []
    for a, b, contrast in triples:
        layers = [la for (c, la) in reps if c == a and (b, la) in reps]
        if not layers:
            continue
        shared = ids[a].intersection(ids[b])
        if len(shared) < 2:
            continue
        ra, rb = ids[a].get_indexer(shared), ids[b].get_indexer(shared)
        y = None if labels is None else labels.loc[shared].to_numpy()

        stats = paired_set_stats(stat, _side(reps, a, layers, ra, y), _side(reps, b, layers, rb, y),
                                 groups.loc[shared].to_numpy(), n_half=n_half, ci=ci, seed=seed)
        p_adj = adjust_pvalues(stats.p_value, correction)
        rows += [make_row(checkpoint=a, ref_checkpoint=b, layer=la, measure=measure, n=len(shared), task=task,
                          seed=seed, contrast=contrast, **_row_fields(stats, correction, p_adj, i))
                 for i, la in enumerate(layers)]
    return rows
