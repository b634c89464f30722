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

from xlprobe.errors import ConfigError, DataError
from xlprobe.folds import kfold_units
from xlprobe.probes.arrays import as_rep, check_float, check_int
from xlprobe.probes.classifiers import fit_probe, make_probe, probe_measure, probe_name
from xlprobe.probes.controls import CONTROLS, control_task_labels, majority_predictions, shuffled_labels
from xlprobe.probes.linear import LinearProbe, fit_many
from xlprobe.probes.paired import draws_interval
from xlprobe.probes.stats import bootstrap_ci
from xlprobe.registry import register_measure
from xlprobe.results import make_row, results_frame

__all__ = ["probe_layers", "probe_accuracy", "cross_val_predict_groups", "accuracy_interval", "layers_of"]

log = logging.getLogger(__name__)


def cross_val_predict_groups(probe: Any, X: Any, y: Any, groups: Any, folds: Sequence[tuple[np.ndarray, np.ndarray]]
                             ) -> np.ndarray:
    """Out-of-fold predictions of ``probe`` (cloned per fold) for every item of the folds' test sides.

    A ``LinearProbe``'s folds are fitted together by ``fit_many`` (one batched L-BFGS; each fold's fit is
    the one ``fit`` gives); any other estimator is fitted fold by fold.
    """
    A = as_rep(X, "X", dtype=np.float32)
    y = np.asarray(y)
    g = np.asarray(groups)
    pred = np.empty(len(y), dtype=y.dtype)
    seen = np.zeros(len(y), dtype=bool)
    fits = [np.unique(y[train]).size >= 2 for train, _ in folds]
    batched = iter(fit_many(probe, ((A[tr], y[tr]) for (tr, _), ok in zip(folds, fits) if ok))
                   if isinstance(probe, LinearProbe) else ())
    for (train, test), ok in zip(folds, fits):
        if not ok:
            pred[test] = majority_predictions(y[train], len(test))
        else:
            est = next(batched, None)
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


def labellings(y: np.ndarray, controls: Sequence[str], types: Any, n_draws: int, seed: int
               ) -> dict[str, list[np.ndarray]]:
    """The task's labels and, per random control, ``n_draws`` seeded draws of its labels."""
    out = {"task": [y]}
    if "shuffled" in controls:
        out["shuffled"] = [shuffled_labels(y, seed=seed + d) for d in range(n_draws)]
    if "control-task" in controls:
        out["control-task"] = [control_task_labels(types, y, seed=seed + d) for d in range(n_draws)]
    return out


def embedding_layer(layer: str, layers: Sequence[str]) -> str | None:
    """The embedding output on the same side as ``layer`` (``encoder.3`` -> ``encoder.embeddings``), if captured."""
    side = layer.rsplit(".", 1)[0] if "." in layer else ""
    name = f"{side}.embeddings" if side else "embeddings"
    return name if name in layers and name != layer else None


def _interval(scores: np.ndarray, gcodes: np.ndarray, n_boot: int, ci: float, seed: int) -> tuple[float, ...]:
    """Mean of per-item scores [n, D] over items and draws, and its cluster (and draw) bootstrap interval."""
    if n_boot == 0:
        return float(scores.mean()), float("nan"), float("nan")
    return draws_interval(scores, gcodes, n_boot=n_boot, ci=ci, seed=seed)


def kappa_scores(pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-item Cohen's kappa scores (correct - p_e) / (1 - p_e); their mean is kappa (Cohen 1960).

    p_e = sum_k P(label k) P(predicted k), the agreement of predictions independent of the labels with
    the same marginals: 0 for a probe that learnt nothing, whatever the class balance.
    """
    classes, inv = np.unique(np.concatenate([labels, pred]), return_inverse=True)
    n = len(labels)
    true_p = np.bincount(inv[:n], minlength=classes.size) / n
    pred_p = np.bincount(inv[n:], minlength=classes.size) / n
    p_e = float(true_p @ pred_p)
    correct = (pred == labels).astype(np.float64)
    return correct - p_e if p_e >= 1.0 else (correct - p_e) / (1.0 - p_e)


def _corrected(correct: np.ndarray, chance: np.ndarray) -> np.ndarray | None:
    """Chance-corrected per-item gain (correct - majority) / (1 - floor) per draw; None if every floor is 1."""
    floor = chance.mean(axis=0)
    keep = floor < 1.0
    if not keep.any():
        return None
    return (correct[:, keep] - chance[:, keep]) / (1.0 - floor[keep])


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
    n_draws: int = 5,
    control_reps: Mapping[str, Any] | None = None,
    return_items: bool = False,
) -> Any:
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
    n_draws : int, default 5
        Draws of each random control labelling (``shuffled``, ``control-task``), seeds ``seed`` to
        ``seed + n_draws - 1``. A control row's value is the mean over draws; its interval pairs each
        bootstrap resample of groups with a random draw, so the draws' spread is inside it (one draw of
        the control task moved selectivity by more than its interval's half-width).
    control_reps : mapping, optional
        Control *representations*, ``{name: X}`` (one array for every layer) or ``{name: {layer: X}}``
        (matched by layer name): e.g. ``{"random-init": ...}``, the same architecture with random
        weights captured on the same items. Each is probed for the task once per layer, on the same
        folds, giving a ``probe.linear`` row and a ``probe.linear.selectivity`` row (task accuracy minus
        the control representation's) with ``control`` its name and ``ref_layer`` its layer.
    return_items : bool, default False
        Also return ``{(checkpoint, layer): per-item out-of-fold task correctness [n]}``, what paired
        comparisons between checkpoints resample (:func:`xlprobe.probes.paired.paired_item_stats`).

    Returns
    -------
    pandas.DataFrame, or (DataFrame, dict) with ``return_items``
        Rows ``checkpoint, layer, measure, value, ci_low, ci_high, n, task, control, seed``: measure
        ``probe.linear`` (or ``probe.mlp``; ``probe.estimator`` for another classifier, whose class
        is in an extra ``probe`` column) for the task (control missing) and each control, and
        ``probe.linear.selectivity`` rows: against the control task (``control-task``: Cohen's kappa of the
        task minus the control task's, :func:`kappa_scores`, since the control labels, nested in the
        language through the item types, are less balanced than the task: raw accuracies made a
        representation with no information look negatively selective, majority-corrected ones
        positively, as a probe without information falls below the majority of an unbalanced
        labelling; kappa is 0 for it either way), against the
        checkpoint's own embedding output on the same side (``embeddings``, ``ref_layer`` naming it,
        for every other layer when the embeddings were captured), and against each control
        representation. With the ``majority`` control, ``probe.linear.chance_corrected`` for the task
        and each random control labelling: (acc - majority) / (1 - majority), with the majority
        baseline of that same labelling on the same folds, so 0 means no better than always answering
        the training folds' most frequent class and 1 means perfect, whatever the class balance (a
        labelling nested in the language, like the control task on sentences, has a high majority;
        its raw accuracy says little until corrected). Its interval resamples groups with the
        denominator held at its full-data value. Every interval is a cluster bootstrap over ``groups``
        of per-item scores (:func:`xlprobe.probes.paired.draws_interval`).
    """
    probe = make_probe(probe, seed=seed)  # an explicit random_state (0 included) is kept
    k, n_boot, n_draws = check_int("k", k, 2), check_int("n_boot", n_boot, 0), check_int("n_draws", n_draws, 1)
    ci = check_float("ci", ci, 0.0, 1.0, open_low=True, open_high=True)
    bad = [c for c in controls if c not in CONTROLS]
    if bad:
        raise ConfigError(f"unknown control(s) {bad}", hint="choose from " + ", ".join(CONTROLS))
    items = layers_of(reps, checkpoint)
    y = np.asarray(y)
    n = len(y)
    g = np.asarray(groups)
    _check_inputs(items, y, g, controls, types)
    folds = kfold_units(g, k, seed)
    _, gcodes = np.unique(g, return_inverse=True)
    labels = labellings(y, controls, types, n_draws, seed)
    name = probe_measure(probe)
    # a caller-given classifier's rows are probe.estimator: its class goes in the probe column
    extra = {"probe": probe_name(probe)} if name == "probe.estimator" else {}

    def fit_scores(X: Any, labs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Out-of-fold correctness [n, D] of each labelling, and Cohen's kappa scores [n, D] beside it."""
        preds = [cross_val_predict_groups(probe, X, lab, g, folds) for lab in labs]
        correct = np.stack([p == lab for p, lab in zip(preds, labs)], axis=1).astype(float)
        return correct, np.stack([kappa_scores(p, lab) for p, lab in zip(preds, labs)], axis=1)

    def fit_correct(X: Any, labs: list[np.ndarray]) -> np.ndarray:
        return fit_scores(X, labs)[0]

    controls_by_layer = _control_correctness(control_reps, items, y, fit_correct)
    task_correct: dict[tuple[str, str], np.ndarray] = {}
    rows: list[dict] = []
    for c, layer, X in items:
        fitted = {which: fit_scores(X, labs) for which, labs in labels.items()}
        correct = {which: v[0] for which, v in fitted.items()}
        chance = {which: np.stack([_majority_correct(lab, folds) for lab in labs], axis=1).astype(float)
                  for which, labs in labels.items()}
        if "majority" in controls:
            correct["majority"] = chance["task"]
        task_correct[c, layer] = correct["task"][:, 0]
        base = dict(checkpoint=c, layer=layer, n=n, task=task, seed=seed, **extra)

        def row(measure: str, scores: np.ndarray, control: str | None, base: dict = base, **more: Any) -> None:
            value, lo, hi = _interval(scores, gcodes, n_boot, ci, seed)
            rows.append(make_row(measure=measure, value=value, ci_low=lo, ci_high=hi, control=control,
                                 **base, **more))

        for which in ("task", *[x for x in CONTROLS if x in correct]):
            row(name, correct[which], None if which == "task" else which)
        for which in (correct if "majority" in controls else ()):
            gain = None if which == "majority" else _corrected(correct[which], chance[which])
            if gain is not None:
                row(f"{name}.chance_corrected", gain, None if which == "task" else which)
        if "control-task" in correct:  # kappa on both sides: their class balances differ
            row(f"{name}.selectivity", fitted["task"][1] - fitted["control-task"][1], "control-task")
        for ctrl, (ctrl_layer, ctrl_correct) in controls_by_layer.get(layer, {}).items():
            row(name, ctrl_correct, ctrl, ref_layer=ctrl_layer)
            row(f"{name}.selectivity", correct["task"] - ctrl_correct, ctrl, ref_layer=ctrl_layer)
        log.info("%s %s: %s %.3f", c, layer, name, float(correct["task"].mean()))
    rows += _embedding_rows(task_correct, gcodes, lambda s, *a: _interval(s[:, None], *a), n_boot, ci, seed,
                            name=name, n=n, task=task, extra=extra)
    df = results_frame(rows)
    return (df, task_correct) if return_items else df


def _check_inputs(items: list[tuple[str, str, Any]], y: np.ndarray, g: np.ndarray, controls: Sequence[str],
                  types: Any) -> None:
    """Raise on groups, labels or layers that do not fit together, or a control task without types."""
    n = len(y)
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


def _control_correctness(control_reps: Mapping[str, Any] | None, items: list[tuple[str, str, Any]],
                         y: np.ndarray, fit_correct: Any) -> dict[str, dict[str, tuple[str, np.ndarray]]]:
    """Per layer, per control representation: (its layer, its out-of-fold task correctness [n, 1]), fitted once."""
    out: dict[str, dict[str, tuple[str, np.ndarray]]] = {}
    for ctrl, rep in (control_reps or {}).items():
        cache: dict[str, np.ndarray] = {}
        for _, layer, _ in items:
            if isinstance(rep, Mapping):
                if layer not in rep:
                    continue
                ctrl_layer, X = layer, rep[layer]
            else:
                ctrl_layer, X = "*", rep
            if len(X) != len(y):
                raise DataError(f"control representation {ctrl!r} ({ctrl_layer}) has {len(X)} rows but y has "
                                f"{len(y)}", hint="capture the control on the same items as the checkpoints")
            if ctrl_layer not in cache:
                cache[ctrl_layer] = fit_correct(X, [y])
            out.setdefault(layer, {})[ctrl] = (ctrl_layer, cache[ctrl_layer])
    return out


def _embedding_rows(task_correct: dict[tuple[str, str], np.ndarray], gcodes: np.ndarray, interval: Any,
                    n_boot: int, ci: float, seed: int, *, name: str, n: int, task: str, extra: dict) -> list[dict]:
    """Selectivity of every layer against its own checkpoint's embedding output (control ``embeddings``)."""
    rows = []
    for (c, layer), correct in task_correct.items():
        emb = embedding_layer(layer, [la for (cc, la) in task_correct if cc == c])
        if emb is None:
            continue
        value, lo, hi = interval(correct - task_correct[c, emb], gcodes, n_boot, ci, seed)
        rows.append(make_row(measure=f"{name}.selectivity", value=value, ci_low=lo, ci_high=hi,
                             control="embeddings", ref_layer=emb, checkpoint=c, layer=layer, n=n, task=task,
                             seed=seed, **extra))
    return rows
