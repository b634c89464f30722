"""Zero-shot cross-lingual transfer of a probe: train on one language's labels, test on every language.

The probe-level counterpart of the paper's XGLUE evaluation. Items come in parallel groups (the same
verse in several languages, with the same label), so a test item whose translation was in the training
set would leak its label: folds are therefore over groups, the probe trains on the ``train_lang`` items
of the training groups, and every language is tested on the items of the held-out groups only. Each test
language then sees exactly the same verses, so the per-language accuracies differ only by language.

Rows per (checkpoint, layer): ``transfer.accuracy`` per test language (``lang``), the same-language
accuracy included, and ``transfer.gap`` = accuracy(train_lang) - accuracy(lang) per other language, each
with a cluster-bootstrap interval over groups (the gap's interval pairs the two languages' items of the
same groups). A majority-baseline row per layer (control ``majority``) gives the floor; every accuracy
row carries ``chance``, 1 / classes, a uniform guess's accuracy: on balanced classes the majority row
falls below it (each training fold's majority class is the one its test fold has least of).

Both names are registered as rows of a ``table`` producer, :func:`transfer_probe`: they read labels and
languages together, which no single call shape of the registry carries.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from xlprobe.errors import ConfigError, DataError
from xlprobe.folds import kfold_units
from xlprobe.probes.arrays import as_rep, check_int
from xlprobe.probes.classifiers import fit_probe, make_probe, probe_name
from xlprobe.probes.controls import majority_predictions
from xlprobe.probes.probing import accuracy_interval, layers_of
from xlprobe.probes.stats import bootstrap_ci
from xlprobe.registry import register_measure
from xlprobe.results import make_row, results_frame

__all__ = ["transfer_probe"]


def _gap_interval(a: np.ndarray, b: np.ndarray, groups: np.ndarray, n_boot: int, ci: float, seed: int
                  ) -> tuple[float, float, float]:
    """mean(a) - mean(b) for 0/1 vectors over items of the same groups (``groups`` = a's then b's), by group."""
    if n_boot == 0:
        return float(a.mean() - b.mean()), float("nan"), float("nan")

    def stat(correct: np.ndarray, side: np.ndarray) -> float:
        return float(correct[side].mean() - correct[~side].mean()) if side.any() and (~side).any() else np.nan

    side = np.r_[np.ones(len(a), bool), np.zeros(len(b), bool)]
    r = bootstrap_ci(stat, np.r_[a, b].astype(np.float64), side, groups=groups, n_boot=n_boot, ci=ci, seed=seed)
    return r.value, r.low, r.high


@register_measure("transfer.accuracy", kind="table", direction="higher_better",
                  doc="Zero-shot transfer: accuracy on each language of a probe trained on one language's labels.")
@register_measure("transfer.gap", kind="table", direction="lower_better",
                  doc="Zero-shot transfer gap: accuracy on the training language minus accuracy on each other one.")
def transfer_probe(
    reps: Mapping[str, Any],
    y: Any,
    langs: Any,
    groups: Any,
    *,
    train_lang: str = "en",
    probe: Any = None,
    task: str = "label",
    checkpoint: str | None = None,
    k: int = 5,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    center: str = "none",
    scores: dict | None = None,
) -> pd.DataFrame:
    """Train a probe on ``train_lang`` and test it on every language, per layer; the tidy results table.

    Parameters
    ----------
    reps : mapping
        ``{layer: X [n, d]}`` or ``{checkpoint: {layer: X}}``, all on the same n items.
    y : array-like [n]
        The labels to transfer (genre, testament, ...), equal across a parallel group.
    langs, groups : array-like [n]
        Language and parallel group of every item.
    train_lang : str
        The one language whose labels the probe sees.
    probe : {"linear", "mlp"}, estimator or None
        A probe name or a scikit-learn classifier (:func:`~xlprobe.probes.classifiers.make_probe`;
        None is ``LinearProbe()``); its name is in the ``probe`` column.
    k : int, default 5
        Folds over groups; every group is tested once.
    n_boot, ci, seed
        Bootstrap resamples (0: no interval), coverage, and the seed of folds, bootstrap and probe.
    center : {"none", "language"}
        ``"language"`` subtracts each language's mean vector (over all its items: no labels needed, so
        a zero-shot user can do it too) before training and testing: it removes a per-language offset,
        the simplest language-specific component, and shows how much of a gap that offset explains.
    scores : dict, optional
        Receives, keyed ``(checkpoint, layer)``, every item's 0/1 correctness (float; NaN where the item
        was not tested): what a paired comparison of two checkpoints resamples.
    """
    probe = make_probe(probe, seed=seed)
    if center not in ("none", "language"):
        raise ConfigError(f"center must be 'none' or 'language'; got {center!r}")
    k = check_int("k", k, 2)
    n_boot = check_int("n_boot", n_boot, 0)
    items = layers_of(reps, checkpoint)
    y, lg, g = np.asarray(y), np.asarray(langs), np.asarray(groups)
    n = len(y)
    for name, a in (("langs", lg), ("groups", g)):
        if a.ndim != 1 or len(a) != n:
            raise DataError(f"{name} must be 1-D with one entry per label ({n}); got shape {a.shape}")
    if train_lang not in set(lg.tolist()):
        raise DataError(f"train_lang {train_lang!r} has no items", hint=f"languages present: {sorted(set(lg))}")
    if np.unique(y[lg == train_lang]).size < 2:
        raise DataError(f"the {train_lang!r} items have a single label: nothing to transfer",
                        hint="choose a label that varies within the training language")
    test_langs = sorted(set(lg.tolist()))
    # folds over the groups that train_lang covers; every language is tested on those held-out groups
    own = lg == train_lang
    folds = kfold_units(g[own], k, seed)
    own_idx = np.flatnonzero(own)
    test_groups = [np.unique(g[own_idx[te]]) for _, te in folds]
    train_rows = [own_idx[tr] for tr, _ in folds]
    name = probe_name(probe)
    _, gcodes = np.unique(g, return_inverse=True)
    rows: list[dict] = []
    for c, layer, X in items:
        A = as_rep(X, f"{layer}", dtype=np.float32)
        if len(A) != n:
            raise DataError(f"layer {layer!r} has {len(A)} rows but y has {n}")
        if center == "language":
            A = A.copy()
            for lang in test_langs:
                A[lg == lang] -= A[lg == lang].mean(axis=0)
        pred = np.empty(n, dtype=y.dtype)
        majority = np.empty(n, dtype=y.dtype)
        tested = np.zeros(n, dtype=bool)
        for tr, tg in zip(train_rows, test_groups):
            te = np.flatnonzero(np.isin(g, tg))
            pred[te] = fit_probe(probe, A[tr], y[tr], g[tr]).predict(A[te])
            majority[te] = majority_predictions(y[tr], len(te))
            tested[te] = True
        correct = (pred == y) & tested
        if scores is not None:
            scores[c, layer] = np.where(tested, correct.astype(np.float64), np.nan)
        base = dict(checkpoint=c, layer=layer, task=task, seed=seed)
        chance = 1.0 / np.unique(y).size
        per_lang = {}
        for lang in test_langs:
            m = tested & (lg == lang)
            if not m.any():
                continue
            per_lang[lang] = m
            v, lo, hi = accuracy_interval(correct[m], gcodes[m], n_boot, ci, seed)
            rows.append(make_row(measure="transfer.accuracy", value=v, ci_low=lo, ci_high=hi, n=int(m.sum()),
                                 lang=lang, probe=name, train_lang=train_lang, center=center, chance=chance, **base))
        m_all = tested
        v, lo, hi = accuracy_interval((majority == y)[m_all], gcodes[m_all], n_boot, ci, seed)
        rows.append(make_row(measure="transfer.accuracy", value=v, ci_low=lo, ci_high=hi, n=int(m_all.sum()),
                             control="majority", probe=name, train_lang=train_lang, center=center, chance=chance,
                             **base))
        src = per_lang[train_lang]
        for lang, m in per_lang.items():
            if lang == train_lang:
                continue
            v, lo, hi = _gap_interval(correct[src], correct[m], np.r_[gcodes[src], gcodes[m]], n_boot, ci, seed)
            rows.append(make_row(measure="transfer.gap", value=v, ci_low=lo, ci_high=hi, n=int(m.sum()),
                                 lang=lang, probe=name, train_lang=train_lang, center=center, **base))
    return results_frame(rows)
