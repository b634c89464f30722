"""Fit a probe per layer (and per checkpoint) with group cross-validation and its controls; tidy rows out.

For each layer, ``k`` folds split by group (a parallel group, or a book: never a verse on both sides)
give every item one out-of-fold prediction. The reported value is the out-of-fold accuracy over all
items; its interval is a cluster bootstrap over groups of the per-item correctness (the folds' models
are held fixed: the interval covers the sampling of test items, not the refitting, as is usual for
cross-validated accuracy). Controls run on the same folds:

=================== ============================================================================
``control``         what it is
=================== ============================================================================
``majority``        predict the training folds' most frequent class
``shuffled``        the same probe on labels permuted across items (chance + memorisation)
``control-task``    Hewitt & Liang control labels (one random label per type, see ``controls``)
=================== ============================================================================

and a ``selectivity`` row: task accuracy minus control-task accuracy, with a paired cluster bootstrap
interval (the same resampled groups for both).

Registered names: ``probe.linear`` / ``probe.mlp`` (``probe.estimator`` for a caller-given classifier,
whose class is in the ``probe`` column) are labelled measures, :func:`probe_accuracy` (the task row's
value, without its interval); the control rows carry the same name and their ``control``. The
``.selectivity`` rows need the control task's item types, which no call on (X, y, groups) has: they
are registered as rows of a ``table`` producer, :func:`probe_layers`.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from xlprobe.errors import ConfigError, DataError
from xlprobe.folds import kfold_units
from xlprobe.probes.arrays import as_rep, check_float, check_int
from xlprobe.probes.classifiers import fit_probe, make_probe, probe_measure, probe_name
from xlprobe.probes.controls import CONTROLS, control_task_labels, majority_predictions, shuffled_labels
from xlprobe.probes.linear import LinearProbe, fit_many
from xlprobe.probes.stats import bootstrap_ci
from xlprobe.registry import register_measure
from xlprobe.results import make_row, results_frame

__all__ = ["probe_layers", "probe_accuracy", "cross_val_predict_groups", "accuracy_interval", "layers_of"]

log = logging.getLogger(__name__)


def cross_val_predict_groups(probe: Any, X: Any, y: Any, groups: Any, folds: Sequence[tuple[np.ndarray, np.ndarray]]
                             ) -> np.ndarray:
    """Out-of-fold predictions of ``probe`` (cloned per fold) for every item of the folds' test sides.

    A ``LinearProbe`` fits the folds with ``fit_many``: each fold starts from the previous fold's optimum
    (each still reaches its own, to the probe's ``tol``); any other estimator is fitted per fold from scratch.
    """
    A = as_rep(X, "X", dtype=np.float32)
    y = np.asarray(y)
    g = np.asarray(groups)
    pred = np.empty(len(y), dtype=y.dtype)
    seen = np.zeros(len(y), dtype=bool)
    fits = [np.unique(y[train]).size >= 2 for train, _ in folds]
    warm = iter(fit_many(probe, ((A[tr], y[tr]) for (tr, _), ok in zip(folds, fits) if ok))
                if isinstance(probe, LinearProbe) else ())
    for (train, test), ok in zip(folds, fits):
        if not ok:
            pred[test] = majority_predictions(y[train], len(test))
        else:
            est = next(warm, None)
            est = fit_probe(probe, A[train], y[train], g[train]) if est is None else est
            pred[test] = est.predict(A[test])
        seen[test] = True
    if not seen.all():
        raise DataError(f"{int((~seen).sum())} item(s) are in no test fold", hint="folds must cover every item")
    return pred


@register_measure("probe.linear", kind="labelled", direction="higher_better", probe="linear")
@register_measure("probe.mlp", kind="labelled", direction="higher_better", probe="mlp")
@register_measure("probe.estimator", kind="labelled", direction="higher_better")
def probe_accuracy(X: Any, y: Any, groups: Any, *, probe: Any = None, k: int = 5, seed: int = 0) -> float:
    """Out-of-fold accuracy of a probe under k-fold group cross-validation (the main probe).

    The value of :func:`probe_layers`' task row for one layer (same folds, same seeded probe), without
    its interval. Registered as ``probe.linear``, ``probe.mlp`` and ``probe.estimator`` (pass
    ``probe=`` a scikit-learn classifier; :func:`~xlprobe.probes.classifiers.make_probe` takes it).
    """
    k = check_int("k", k, 2)
    y = np.asarray(y)
    g = np.asarray(groups)
    if g.ndim != 1 or len(g) != len(y):
        raise DataError(f"groups must be 1-D with one entry per label ({len(y)}); got shape {g.shape}",
                        hint="pass the parallel-group (or book) id of every item")
    if np.unique(y).size < 2:
        raise DataError(f"y has a single class ({y[:1].tolist()}): nothing to probe", hint="check the data selection")
    pred = cross_val_predict_groups(make_probe(probe, seed=seed), X, y, g, kfold_units(g, k, seed))
    return float(np.mean(pred == y))


def accuracy_interval(correct: np.ndarray, groups: np.ndarray, n_boot: int, ci: float, seed: int
              ) -> tuple[float, float, float]:
    """Accuracy of a 0/1 vector with a cluster-bootstrap interval over groups."""
    if n_boot == 0:
        return float(correct.mean()), float("nan"), float("nan")
    r = bootstrap_ci(np.mean, correct.astype(np.float64), groups=groups, n_boot=n_boot, ci=ci, seed=seed)
    return r.value, r.low, r.high


def layers_of(reps: Mapping[str, Any], checkpoint: str | None) -> list[tuple[str, str, Any]]:
    """(checkpoint, layer, X) from ``{layer: X}`` or ``{checkpoint: {layer: X}}``."""
    if not isinstance(reps, Mapping) or not reps:
        raise DataError("reps must be a non-empty mapping {layer: X} or {checkpoint: {layer: X}}",
                        hint="e.g. probe_layers(extract(model, tok, data, 'all'), y, groups)")
    nested = all(isinstance(v, Mapping) for v in reps.values())
    if nested:
        return [(str(c), str(layer), X) for c, inner in reps.items() for layer, X in inner.items()]
    return [(checkpoint or "model", str(layer), X) for layer, X in reps.items()]


def _majority_correct(labels: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Per item: is the majority class of its training folds its label (the chance baseline, out of fold)."""
    pred = np.empty(len(labels), dtype=labels.dtype)
    for train, test in folds:
        pred[test] = majority_predictions(labels[train], len(test))
    return pred == labels


_TABLE = dict(kind="table", direction="higher_better")


@register_measure("probe.linear.selectivity", **_TABLE, probe="linear",
                  doc="Selectivity of the linear probe: task accuracy minus control-task accuracy, per layer.")
@register_measure("probe.mlp.selectivity", **_TABLE, probe="mlp",
                  doc="Selectivity of the MLP probe: task accuracy minus control-task accuracy, per layer.")
@register_measure("probe.estimator.selectivity", **_TABLE,
                  doc="Selectivity of a caller-given probe: task accuracy minus control-task accuracy, per layer.")
@register_measure("probe.linear.chance_corrected", **_TABLE, probe="linear",
                  doc="Chance-corrected accuracy of the linear probe, (acc - majority) / (1 - majority), for "
                      "the task and each control labelling.")
@register_measure("probe.mlp.chance_corrected", **_TABLE, probe="mlp",
                  doc="Chance-corrected accuracy of the MLP probe, (acc - majority) / (1 - majority), for "
                      "the task and each control labelling.")
@register_measure("probe.estimator.chance_corrected", **_TABLE,
                  doc="Chance-corrected accuracy of a caller-given probe, (acc - majority) / (1 - majority).")
def probe_layers(
    reps: Mapping[str, Any],
    y: Any,
    groups: Any,
    *,
    probe: Any = None,
    task: str = "language",
    checkpoint: str | None = None,
    k: int = 5,
    controls: Sequence[str] = CONTROLS,
    types: Any = None,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Probe every layer with ``k``-fold group cross-validation and its controls; the tidy results table.

    Parameters
    ----------
    reps : mapping
        ``{layer: X [n, d]}`` (one checkpoint, named by ``checkpoint``, default "model") or
        ``{checkpoint: {layer: X}}``;
        every X holds the same n items in the same order (an ``Activations`` works as is).
    y : array-like [n]
        The task's labels (languages, genres, ...).
    groups : array-like [n]
        The unit no fold may split (parallel group or book); also the bootstrap's resampling unit.
    probe : {"linear", "mlp"}, estimator or None
        A probe name or any scikit-learn classifier (:func:`~xlprobe.probes.classifiers.make_probe`;
        None is ``LinearProbe()``); cloned for every fit.
    task : str
        Name of the task, written in the ``task`` column.
    k : int, default 5
        Number of folds (the same folds for every layer, checkpoint and control).
    controls : sequence of str
        Any of ``majority``, ``shuffled``, ``control-task`` (default: all three).
    types : array-like [n], optional
        Item types for the control task (e.g. ``first_word_types(texts)``). Required when
        ``control-task`` is asked.
    n_boot : int, default 1000
        Bootstrap resamples for the intervals (0: no interval).
    ci : float, default 0.95
    seed : int, default 0
        Seeds the folds, the shuffled labels, the control task, the bootstrap and the probe (its
        ``random_state``, where it has one and it is None; a probe's own ``random_state`` is kept).

    Returns
    -------
    pandas.DataFrame
        Rows ``checkpoint, layer, measure, value, ci_low, ci_high, n, task, control, seed``: measure
        ``probe.linear`` (or ``probe.mlp``; ``probe.estimator`` for another classifier, whose class
        is in an extra ``probe`` column) for the task (control missing) and each control, and
        ``probe.linear.selectivity`` (control ``control-task``), and, with the ``majority`` control,
        ``probe.linear.chance_corrected`` for the task and each probed control labelling: (acc - majority) / (1 - majority), with the
        majority baseline of that same labelling on the same folds, so 0 means no better than always
        answering the training folds' most frequent class and 1 means perfect, whatever the class
        balance (a labelling nested in the language, like the control task on sentences, has a high
        majority; its raw accuracy says little until corrected). Its interval resamples groups with
        the denominator held at its full-data value.
    """
    probe = make_probe(probe, seed=seed)  # an explicit random_state (0 included) is kept
    k = check_int("k", k, 2)
    n_boot = check_int("n_boot", n_boot, 0)
    ci = check_float("ci", ci, 0.0, 1.0, open_low=True, open_high=True)
    bad = [c for c in controls if c not in CONTROLS]
    if bad:
        raise ConfigError(f"unknown control(s) {bad}", hint="choose from " + ", ".join(CONTROLS))
    items = layers_of(reps, checkpoint)
    y = np.asarray(y)
    n = len(y)
    g = np.asarray(groups)
    if g.ndim != 1 or len(g) != n:
        raise DataError(f"groups must be 1-D with one entry per label ({n}); got shape {g.shape}",
                        hint="pass the parallel-group (or book) id of every item")
    if np.unique(y).size < 2:
        raise DataError(f"y has a single class ({y[:1].tolist()}): nothing to probe",
                        hint="check the data selection")
    for c, layer, X in items:
        if len(X) != n:
            raise DataError(f"{c + ' ' if c else ''}layer {layer!r} has {len(X)} rows but y has {n}",
                            hint="take every layer's activations on the same items as the labels")
    if "control-task" in controls and types is None:
        raise ConfigError("the control task needs item types (types=...)",
                          hint="pass types=first_word_types(texts), or leave 'control-task' out of controls")
    folds = kfold_units(g, k, seed)
    _, gcodes = np.unique(g, return_inverse=True)
    labels = {"task": y}
    if "shuffled" in controls:
        labels["shuffled"] = shuffled_labels(y, seed=seed)
    if "control-task" in controls:
        labels["control-task"] = control_task_labels(types, y, seed=seed)
    name = probe_measure(probe)
    # a caller-given classifier's rows are probe.estimator: its class goes in the probe column
    extra = {"probe": probe_name(probe)} if name == "probe.estimator" else {}
    rows: list[dict] = []
    for c, layer, X in items:
        correct: dict[str, np.ndarray] = {}
        for which, lab in labels.items():
            pred = cross_val_predict_groups(probe, X, lab, g, folds)
            correct[which] = pred == lab
        chance = {which: _majority_correct(lab, folds) for which, lab in labels.items()}
        if "majority" in controls:
            correct["majority"] = chance["task"]
        base = dict(checkpoint=c, layer=layer, n=n, task=task, seed=seed, **extra)
        for which in ("task", *[x for x in CONTROLS if x in correct]):
            value, lo, hi = accuracy_interval(correct[which], gcodes, n_boot, ci, seed)
            rows.append(make_row(measure=name, value=value, ci_low=lo, ci_high=hi,
                                 control=None if which == "task" else which, **base))
        for which, base_correct in (chance.items() if "majority" in controls else ()):
            floor = float(base_correct.mean())
            if floor < 1.0:
                gain = (correct[which].astype(np.float64) - base_correct) / (1.0 - floor)
                value, lo, hi = accuracy_interval(gain, gcodes, n_boot, ci, seed)
                rows.append(make_row(measure=f"{name}.chance_corrected", value=value, ci_low=lo, ci_high=hi,
                                     control=None if which == "task" else which, **base))
        if "control-task" in correct:
            diff = correct["task"].astype(np.float64) - correct["control-task"]
            value, lo, hi = accuracy_interval(diff, gcodes, n_boot, ci, seed)
            rows.append(make_row(measure=f"{name}.selectivity", value=value, ci_low=lo, ci_high=hi,
                                 control="control-task", **base))
        log.info("%s %s: %s %.3f", c, layer, name, float(correct["task"].mean()))
    return results_frame(rows)
