"""Probe suites over a captured run: read an activation store, probe every layer of every model, write results.

A *run* is an activation store written by ``xlprobe capture`` (or ``extract(..., store=...)``): shards per
(model, point, pooling, dataset) and the dataset's records. :func:`probe_run` groups the shards by model
and dataset, takes the labels of ``task`` from the records (``language`` is each record's language; any
other task is a record label such as ``testament`` or ``genre``), folds by a unit chosen for the task (see
:func:`probe_run`'s ``by``: chapters for a label that is constant within every book, parallel groups for
language identity), and calls :func:`xlprobe.probes.probe_layers` with its controls. Shards captured with ``tag`` pooling for the
same model and data are probed too (rows with ``pooling = tag``): the language-tag-only baseline, since a
probe that reads only the tag learns nothing about the text.

A checkpoint's rows are named by its provenance (the ``model_spec`` it was captured with, else the
model's own name); when two checkpoints with different weights share that name, each gets its short
weights fingerprint appended (``MBartForConditionalGeneration@ccdb6862``), in both runners alike.
"""
from __future__ import annotations

import difflib
import logging
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xlprobe.errors import ConfigError, DataError, StoreError, XlprobeError
from xlprobe.types import Dataset

__all__ = ["probe_run", "similarity_run", "labels_for", "layer_measures", "checkpoint_names", "open_store",
           "DEFAULT_MEASURES", "SET_COMPARISONS", "SET_INTERVALS", "SET_DRAWS"]

log = logging.getLogger(__name__)

#: Registered measures ``probe_run`` adds per layer by default (no interval: values only). A labelled
#: measure reads what its spec says (:attr:`~xlprobe.registry.MeasureSpec.reads`): the task's labels,
#: or the languages (``retrieval.*``).
DEFAULT_MEASURES = ("separability.knn", "separability.knn.all", "separability.centroid", "separability.fisher",
                    "separability.silhouette", "geometry.effective_rank", "geometry.anisotropy",
                    "geometry.norm_mean", "retrieval.p_at_1", "retrieval.p_at_1.centered", "retrieval.p_at_1.margin",
                    "alignment.neighbour_overlap", "mdl.compression")
#: Set measures (not means over items) that the comparisons also test, by a paired bootstrap of the statistic.
SET_COMPARISONS = ("separability.fisher", "geometry.effective_rank")
#: Half-samples behind a set measure's interval and its paired comparisons.
SET_DRAWS = 50
#: Set measures whose rows get a half-sampling interval by recomputation; the others (silhouette, MDL: a
#: full fit or an n^2 pass per resample) report the value alone.
SET_INTERVALS = ("separability.fisher", "separability.centroid", "geometry.effective_rank", "geometry.anisotropy",
                 "geometry.norm_mean")


def layer_measures(reps: dict[str, Any], y: np.ndarray, langs: np.ndarray, groups: np.ndarray,
                   measures: Sequence[str], *, checkpoint: str, task: str, seed: int, n_boot: int = 0,
                   ci: float = 0.95, items: dict | None = None, ids: Any = None) -> list[dict]:
    """Rows of registered labelled / unlabelled measures for every layer, with cluster-bootstrap intervals.

    A labelled measure gets ``y`` (the task's labels) or ``langs``, as its spec's ``reads`` says. Those
    that read the labels also get a ``control="shuffled"`` row: the measure on the labels permuted across
    items (seeded), the value it takes when the labelling has no structure in X; except MDL, whose
    compression has its no-information point built in (1: the uniform code) and whose online code
    costs a dozen fits. With ``n_boot``, every
    row gets an interval over resamples of ``groups`` (the parallel groups): from the per-item scores for
    a mean measure (:mod:`xlprobe.probes.items`), else by recomputing the statistic on :data:`SET_DRAWS`
    half-samples of the groups (:func:`xlprobe.probes.paired.half_sample_interval`; set statistics cost
    a full computation each) for those of :data:`SET_INTERVALS`. ``items``, a dict, receives the
    per-item scores of the task rows, keyed ``(measure, checkpoint, layer)``, as Series indexed by ``ids``.
    """
    from xlprobe.probes.controls import shuffled_labels
    from xlprobe.probes.items import has_item_scores, item_scores
    from xlprobe.registry import get_measure
    from xlprobe.results import make_row

    shuffled = shuffled_labels(y, seed=seed)

    rows = []
    specs = [get_measure(name) for name in measures]
    bad = [sp.name for sp in specs if sp.kind not in ("labelled", "unlabelled")]
    if bad:
        raise ConfigError(f"measure(s) {bad} do not take one layer's activations",
                          hint="per-layer measures are of kind labelled or unlabelled (see `xlprobe measures`)")
    for layer, X in reps.items():
        t0 = time.perf_counter()
        for sp in specs:
            base = dict(checkpoint=checkpoint, layer=layer, measure=sp.name, n=len(X), seed=seed)
            if sp.kind == "unlabelled":
                calls: dict[str | None, tuple] = {None: (X,)}
                row_task = None
            elif sp.reads == "languages":
                if len(set(langs.tolist())) < 2:
                    continue
                calls, row_task = {None: (X, langs, groups)}, "language"
            elif sp.name.startswith("mdl."):  # its no-information point is built in: the uniform code
                calls, row_task = {None: (X, y, groups)}, task
            else:  # beside the value, the same measure on shuffled labels: what it gives without structure
                calls, row_task = {None: (X, y, groups), "shuffled": (X, shuffled, groups)}, task
            for control, args in calls.items():
                try:
                    if has_item_scores(sp.name):
                        scores = item_scores(sp.name, *args)
                        value, lo, hi = _item_interval(scores, groups, n_boot, ci, seed)
                        if items is not None and control is None:
                            items[sp.name, checkpoint, layer] = pd.Series(scores, index=ids)
                    else:
                        value, lo, hi = _set_interval(sp, args, groups, n_boot, ci, seed)
                except XlprobeError as err:  # a degenerate layer (constant, e.g. a decoder reading one token)
                    log.warning("%s %s: %s not computed: %s", checkpoint, layer, sp.name, err.message)
                    value, lo, hi = (float("nan"),) * 3
                rows.append(make_row(value=value, ci_low=lo, ci_high=hi, task=row_task, control=control, **base))
        if specs:
            log.info("%s %s: %d measure(s) in %.1fs", checkpoint, layer, len(specs), time.perf_counter() - t0)
    return rows


def _item_interval(scores: np.ndarray, groups: np.ndarray, n_boot: int, ci: float, seed: int
                   ) -> tuple[float, float, float]:
    """Mean of per-item scores and its cluster-bootstrap interval (NaN without ``n_boot``)."""
    from xlprobe.probes.paired import mean_interval

    if n_boot == 0:
        return float(scores.mean()), float("nan"), float("nan")
    m, lo, hi = mean_interval(scores, groups, n_boot=n_boot, ci=ci, seed=seed)
    return float(m[0]), float(lo[0]), float(hi[0])


def _set_interval(sp: Any, args: tuple, groups: np.ndarray, n_boot: int, ci: float, seed: int
                  ) -> tuple[float, float, float]:
    """A set statistic and its half-sampling interval over groups (each half-sample a full computation)."""
    from xlprobe.probes.paired import half_sample_interval

    if n_boot == 0 or sp.name not in SET_INTERVALS:
        return float(sp(*args, seed=seed)), float("nan"), float("nan")
    return half_sample_interval(lambda *a: sp(*a, seed=seed), *args[:2], groups=groups, n_half=SET_DRAWS, ci=ci,
                                seed=seed)


def labels_for(data: Dataset, task: str) -> np.ndarray:
    """The label of every record for ``task``: its language, or one of its labels."""
    if task in ("language", "lang"):
        return np.asarray([r.lang for r in data], dtype=object)
    missing = [r.id for r in data if task not in r.labels]
    if missing:
        have = ["language", *sorted({k for r in data for k in r.labels} - {"language", "lang"})]
        close = difflib.get_close_matches(task, have, n=1, cutoff=0.6)
        raise DataError(f"task {task!r} is not a label of {len(missing)} record(s) (first: {missing[:3]})"
                        + (f"; did you mean {close[0]!r}?" if close else ""),
                        hint="tasks of this dataset: " + ", ".join(have))
    return np.asarray([str(r.labels[task]) for r in data], dtype=object)


def open_store(path: Path) -> Any:
    """The activation store at ``path``, or StoreError when the folder is not one."""
    from xlprobe.store import ActivationStore

    if not (path / "manifest.json").is_file():
        raise StoreError(f"{str(path)!r} is not an activation store (no manifest.json)",
                         hint="give the --out folder of `xlprobe capture`")
    return ActivationStore.open(path)


def checkpoint_names(store: Any) -> dict[str, str]:
    """Model fingerprint -> the name its rows carry: its provenance, made unique across the store.

    The name is the ``model_spec`` the checkpoint was captured with, else the model's own name (its
    ``config._name_or_path`` or class name), else the fingerprint. Checkpoints with different weights
    that share a name (two models captured from Python without ``model_spec``) get
    ``@<fingerprint[:8]>`` appended, so no checkpoint's rows replace or mix with another's.
    """
    base: dict[str, str] = {}
    for key in store.keys():
        if key.model not in base:
            info = store.entry(key).get("info", {})
            base[key.model] = str(info.get("model_spec") or info.get("model") or key.model)
    shared = Counter(base.values())
    return {fp: f"{name}@{fp[:8]}" if shared[name] > 1 and name != fp else name for fp, name in base.items()}


def probe_run(
    run_dir: str | Path,
    *,
    task: str = "language",
    probe: str = "linear",
    pooling: str = "mean",
    by: str | None = None,
    k: int = 5,
    controls: Sequence[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    measures: Sequence[str] | None = None,
    out: str | Path | None = None,
    n_draws: int = 5,
    base: str | None = None,
    control: str | None = None,
    correction: str = "holm",
    n_perm: int = 10_000,
) -> pd.DataFrame:
    """Probe every layer of every model in the store at ``run_dir``; compare the checkpoints; write both tables.

    Parameters
    ----------
    run_dir : path
        The activation store.
    task : str
        ``language`` or a record label (``testament``, ``genre``, ``book`` ...).
    probe : {"linear", "mlp"}
        A name of :data:`xlprobe.probes.PROBES` (built by :func:`xlprobe.probes.make_probe`).
    pooling : str
        Which shards to probe (``tag`` shards of the same model are added as the tag baseline).
    by : str, optional
        Fold unit, kept whole on one side of every fold: ``group`` (parallel group), ``chapter``,
        ``book`` or a label name. None (the default) chooses per dataset: ``chapter`` when the task's
        label is constant within every book (``genre``, ``book``, ``testament``: with parallel-group
        folds, neighbouring verses of one chapter, which share label and topic, fall on both sides and
        inflate accuracy), else ``group`` (language identity: no translation of a test verse is trained
        on). Chapter folds keep every book of several chapters on both sides, as ``task="book"`` needs.
        The unit is logged, written in the ``folds`` column of the probe rows (saved with the table)
        and recorded in ``df.attrs["fold_unit"]`` (``df.attrs["fold_units"]``: per
        dataset fingerprint).
    k, controls, n_boot, seed, n_draws
        As :func:`xlprobe.probes.probe_layers` (controls default to all three, 5 draws of each random
        one). A checkpoint captured as ``random-init:<spec>`` (``xlprobe capture --model
        random-init:toy:lm``) is the control representation of every checkpoint on its dataset: probed
        per layer on the same folds, it gives the ``control="random-init"`` selectivity rows.
    measures : sequence of str, optional
        Registered per-layer measures to add (default :data:`DEFAULT_MEASURES`; ``()`` for none); not
        the run's own probe (``probe.linear`` for ``probe="linear"``), whose rows it writes anyway.
    out : path, optional
        Folder for ``results.parquet`` / ``results.csv`` and ``comparisons.parquet`` / ``.csv``
        (default ``run_dir``).
    base, control : str, optional
        Roles (a checkpoint's name, or the part after its ``:``: ``lm``): contrasts are every checkpoint
        against ``base`` and every other one against ``control`` (see :mod:`xlprobe.comparisons`);
        without roles, every pair.
    correction : {"holm", "bh", "none"}
        Multiple-testing correction over the layers of each contrast and measure.
    n_perm : int
        Sign flips of the paired permutation tests.

    Returns
    -------
    pandas.DataFrame
        The results; ``df.attrs["comparisons"]`` holds the comparisons table (also written).

    Raises
    ------
    ConfigError
        ``by`` equal to the task (``by="book"`` with ``task="book"``): every test item's class would be
        absent from training, so accuracy is 0 by construction.
    DataError
        A ``by`` under which every class lies in a single unit, for the same reason.
    """
    from xlprobe.comparisons import compare_items, contrasts, resolve_checkpoint
    from xlprobe.probe_suite import ProbeSuite, is_control_rep
    from xlprobe.probes import make_probe
    from xlprobe.probes.classifiers import probe_measure
    from xlprobe.probes.controls import CONTROLS
    from xlprobe.probes.paired import adjust_pvalues
    from xlprobe.results import results_frame, write_results

    adjust_pvalues([], correction)  # an unknown correction fails before any fit
    store_path = Path(run_dir)
    store = open_store(store_path)
    keys = store.keys(pooling=pooling)
    if not keys:
        have = sorted({k.pooling for k in store.keys()})
        raise StoreError(f"the store has no shards with pooling {pooling!r}",
                         hint=f"poolings present: {', '.join(have) or 'none'}; capture with --pooling {pooling}")
    est = make_probe(probe, seed=seed)
    measures = DEFAULT_MEASURES if measures is None else tuple(measures)
    if probe_measure(est) in measures:
        raise ConfigError(f"measure {probe_measure(est)!r} is the run's own probe: probe_run writes its rows "
                          "(with an interval and controls) already",
                          hint="leave it out of measures, or name another probe's measure")
    names = checkpoint_names(store)
    checkpoints = [c for c in dict.fromkeys(names[k.model] for k in keys) if not is_control_rep(c)]
    base, control = (resolve_checkpoint(base, checkpoints, "base"), resolve_checkpoint(control, checkpoints, "control"))
    triples = contrasts(checkpoints, base, control)
    ctx = ProbeSuite(store=store, names=names, task=task, est=est, k=k, by=by, n_boot=n_boot, seed=seed,
                      controls=tuple(CONTROLS if controls is None else controls), n_draws=n_draws, measures=measures,
                      pooling=pooling)
    log.info("probing %d checkpoint(s) on %d layer(s) for %s (%s probe, controls: %s), then %d measure(s) per layer",
             len(checkpoints), len({k.point for k in keys}), task, probe, ", ".join(ctx.controls) or "none",
             len(measures))
    frames = [ctx.probe_dataset(data_fp) for data_fp in dict.fromkeys(k.data for k in keys)]
    log.info("comparing checkpoints: %d contrast(s)", len(triples))
    results = pd.concat(frames, ignore_index=True)
    results.attrs["fold_units"] = ctx.units
    results.attrs["fold_unit"] = next(iter(set(ctx.units.values()))) if len(set(ctx.units.values())) == 1 else "mixed"
    rows = compare_items(ctx.scores, pd.Series(ctx.group_of), triples, correction=correction, n_boot=n_boot or 1000,
                         n_perm=n_perm, seed=seed, task=task)
    for name in (m for m in SET_COMPARISONS if m in measures):
        rows += _compare_set_measure(name, ctx, triples, correction=correction, n_half=SET_DRAWS, seed=seed,
                                     task=task)
    comparisons = results_frame(rows) if rows else pd.DataFrame()
    write_results(results, out or store_path)
    if rows:
        write_results(comparisons, out or store_path, name="comparisons")
    results.attrs["comparisons"] = comparisons
    return results


def _compare_set_measure(name: str, ctx: Any, triples: list, **kw: Any) -> list[dict]:
    """Paired-bootstrap comparison rows of one set measure (Fisher ratio, effective rank) between checkpoints."""
    from xlprobe.comparisons import compare_sets
    from xlprobe.registry import get_measure

    sp = get_measure(name)
    seed = kw["seed"]
    if sp.kind == "unlabelled":
        return compare_sets(lambda X: sp(X, seed=seed), name, ctx.set_reps, ctx.ids, pd.Series(ctx.group_of),
                            triples, **kw)
    labels = pd.Series(ctx.label_of) if sp.reads == "labels" else pd.Series(ctx.lang_of)
    return compare_sets(lambda X, y: sp(X, y, seed=seed), name, ctx.set_reps, ctx.ids, pd.Series(ctx.group_of),
                        triples, labels=labels, **kw)


def similarity_run(*args: Any, **kwargs: Any) -> pd.DataFrame:
    """The similarity suite (:func:`xlprobe.similarity.similarity_run`), kept importable from here."""
    from xlprobe.similarity import similarity_run as run

    return run(*args, **kwargs)
