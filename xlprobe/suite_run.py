"""Run a validated suite: capture once per checkpoint into one store, then every measure; tidy results.

``run_suite(suite, out)`` writes under ``out``:

* ``store/``: the activation store (``xlprobe capture``'s, resumable: a killed capture resumes);
* ``steps/<step>/``: each step's own tables (``probe-<task>-<probe>``, ``similarity``, ``weights``,
  ``transfer-<task>-<train_lang>``, ``attribution``), a finished step (its ``done.json``) is not
  recomputed, so the same command resumes after a kill;
* ``results.parquet`` / ``.csv``: every step's rows together, the standard result columns first;
  ``comparisons.parquet``: the paired contrasts between checkpoints (probe, similarity and transfer steps);
* ``figures/``: PNG and SVG of the figures the suite asks for (:mod:`xlprobe.suite_figures`);
* ``provenance.json``: the suite, versions, data fingerprint, seeds and each step's wall time.

Measures go where they are computed: probes (``probe.linear`` / ``probe.mlp`` and their derived names)
by task through :func:`xlprobe.runs.probe_run`, with the other per-layer measures (``labelled`` and
``unlabelled`` kinds); ``cka.*`` through :func:`xlprobe.similarity.similarity_run`; ``weights.*`` by
:func:`xlprobe.probes.weights.compare_weights` of every checkpoint against the base (same architecture
only). Table measures:

* ``transfer.gap`` / ``transfer.accuracy`` (one step per task and training language):
  :func:`xlprobe.probes.transfer.transfer_probe` on the store's pooled states of every checkpoint, the
  suite's ``task`` label; its comparisons are the paired contrast of the *mean gap over languages*
  (accuracy on ``train_lang`` minus the mean accuracy of the others) between each checkpoint and the
  base / control, by a cluster bootstrap and sign flips over the parallel groups (every checkpoint is
  tested on the same held-out groups: the folds depend on the data and seed only);
* ``attribution.path``: :class:`~xlprobe.probes.attribution.ParameterPathAttribution` of a
  :class:`~xlprobe.path_metrics.TransferGap` (the suite's task, read at ``layer``, default the last
  encoder block of the suite's layers, on a class-balanced sample of at most ``max_items`` records)
  from the base to every other checkpoint of its architecture (random-init ones excluded); rows
  ``attribution.path`` per ``groups`` (default ``layer_module``) with ``delta``, the completeness error.

The other table measures (tokens, units, fine-tuning, interventions) are listed in the plan as not run
by a suite yet, never silently dropped.

:func:`estimate_suite` says, before anything loads, how much disk the store will take and roughly how
long each step will run (``xlprobe run --dry-run`` prints both).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from xlprobe.errors import ConfigError
from xlprobe.suite import Suite

__all__ = ["SuitePlan", "plan_suite", "run_suite", "data_spec", "SuiteEstimate", "estimate_suite", "COSTS",
           "CheckpointShape", "checkpoint_shape", "ATTRIBUTION_DEFAULTS"]

log = logging.getLogger(__name__)
_PROBES = {"probe.linear": "linear", "probe.mlp": "mlp"}
_TRANSFER = ("transfer.gap", "transfer.accuracy")
#: ``attribution.path`` parameters a suite leaves out. ``max_items`` keeps the step under a minute on the
#: toy family on 2 CPU cores (4 pairs x 16 nodes: at 240 records 9.4 s a pair alone, 91 s for the step
#: while other jobs shared the cores; 144 records, 6 verses per book and language, take 0.6 of that).
ATTRIBUTION_DEFAULTS: dict[str, Any] = {"n_steps": 16, "max_items": 144, "train_lang": "en", "layer": None,
                                        "groups": "layer_module", "ridge": 10.0, "tau": 0.1}


@dataclass
class SuitePlan:
    """What a suite will compute: probe runs per (task, probe), per-layer measures, CKA, weights, what waits."""

    data: str
    limit: int | None
    probes: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (task, probe) -> extra measures
    cka: list[str] = field(default_factory=list)
    weights: list[str] = field(default_factory=list)
    transfer: dict[str, dict[str, Any]] = field(default_factory=dict)  # step -> transfer_probe keywords
    attribution: dict[str, Any] | None = None  # attribution.path parameters, defaults filled in
    pending: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)

    def steps(self) -> list[str]:
        """The step folders (``steps/<name>``) in the order they run."""
        out = [f"probe-{t}-{p}" for t, p in self.probes]
        out += ["similarity"] if self.cka else []
        out += ["weights"] if self.weights else []
        out += list(self.transfer)
        out += ["attribution"] if self.attribution else []
        return out

    def lines(self) -> list[str]:
        """The plan, one step per line (``xlprobe run --dry-run`` prints it)."""
        out = [f"data: {self.data}" + (f" (limit {self.limit} verses)" if self.limit else "")]
        out += [f"probe {p} on {t}" + (f" with {', '.join(m)}" if m else "") for (t, p), m in self.probes.items()]
        out += [f"similarity: {', '.join(self.cka)}"] if self.cka else []
        out += [f"weights against the base: {', '.join(self.weights)}"] if self.weights else []
        out += [f"transfer of {kw['task']} from {kw.get('train_lang', 'en')}: transfer.accuracy, transfer.gap "
                f"(paired contrasts of the mean gap)" for kw in self.transfer.values()]
        if self.attribution:
            a = self.attribution
            out.append(f"attribution.path of the {a['task']} transfer gap from {a['train_lang']} at "
                       f"{a['layer'] or 'the last encoder block'}: base -> each checkpoint of its architecture, "
                       f"{a['n_steps']} steps, at most {a['max_items']} records")
        out += [f"not run by a suite yet: {', '.join(self.pending)}"] if self.pending else []
        out += [f"figures: {', '.join(self.figures)}"] if self.figures else []
        return out


def data_spec(suite: Suite) -> str:
    """The data spec string of the suite's data (``bible:en,fr?books=Ruth,Jonah``)."""
    d = suite.data
    spec = f"{d.corpus}:{','.join(d.languages)}"
    return spec + (f"?books={','.join(d.books)}" if d.books else "")


def plan_suite(suite: Suite) -> SuitePlan:
    """Sort the suite's measures into the steps that compute them."""
    from xlprobe.registry import get_measure

    plan = SuitePlan(data=data_spec(suite), limit=suite.data.size, figures=list(suite.figures))
    extra: list[tuple[str, str]] = []
    for call in suite.measures:
        base = next((p for p in _PROBES if call.name == p or call.name.startswith(p + ".")), None)
        spec = get_measure(call.name)
        if base is not None:
            plan.probes.setdefault((call.params.get("task", "language"), _PROBES[base]), [])
        elif call.name.startswith("cka"):
            plan.cka.append(call.name)
        elif spec.kind == "weights" or call.name.startswith("weights."):  # compare_weights's table rows too
            plan.weights.append(call.name)
        elif spec.kind in ("labelled", "unlabelled"):
            extra.append((call.params.get("task", "language"), call.name))
        elif call.name in _TRANSFER:
            _plan_transfer(plan, dict(call.params))
        elif call.name == "attribution.path":
            plan.attribution = {**ATTRIBUTION_DEFAULTS, **call.params}
        else:
            plan.pending.append(call.name)
    if plan.attribution is not None and "task" not in plan.attribution:
        tasks = [kw["task"] for kw in plan.transfer.values()]
        if not tasks:
            raise ConfigError("attribution.path needs a task (the label of its transfer gap)",
                              hint="give `attribution.path: {task: book}` or a transfer.gap with a task")
        plan.attribution["task"] = tasks[0]
    if not plan.probes:
        plan.probes[("language", "linear")] = []
    for task, name in extra:
        key = next((k for k in plan.probes if k[0] == task), None) or (task, "linear")
        plan.probes.setdefault(key, []).append(name)
    return plan


def _plan_transfer(plan: SuitePlan, params: dict[str, Any]) -> None:
    """One transfer step per distinct call (transfer.gap and transfer.accuracy with the same keywords share it)."""
    if "task" not in params:
        raise ConfigError("transfer.gap needs task: the record label the probe transfers",
                          hint="e.g. `- transfer.gap: {task: book, train_lang: en}`")
    params.setdefault("train_lang", "en")
    if params in plan.transfer.values():
        return
    name = f"transfer-{params['task']}-{params['train_lang']}"
    extra = [str(params[k]) for k in ("probe", "center") if params.get(k) not in (None, "linear", "none")]
    name = "-".join([name, *extra])
    while name in plan.transfer:
        name += "+"
    plan.transfer[name] = params


# ------------------------------------------------------------------ the estimate (``--dry-run``)
#: Seconds per unit of each step, measured on the development machine (2 CPU cores, no GPU) on the toy
#: family: 7 checkpoints, 37 pooled points (6 x 5 + 7 for mlm), hidden 128, 2.45M parameters (lm); the
#: finished run ``runs/toy-suite`` (2400 records = 300 verses x 8 languages, provenance.json), the same
#: suite at 100 verses (800 records) and single steps timed on those stores. Rough: other jobs on the same
#: cores slow every step several fold (threaded BLAS oversubscribed: the probe step at 2400 records ran
#: past 10 min under a load of 4), so these are the rates of an idle machine.
COSTS: dict[str, float] = {
    # capture: seconds per (record x million parameters), toy:mlm 1.88 s for 2400 records, 2.24M params
    # (toy:lm 1.12 s, 2.45M: its decoder is not run), plus loading each checkpoint (0.1-2 s on the toys)
    "capture_record_mparam": 3.5e-4, "load_checkpoint": 1.0,
    # probe step, per pooled point of every checkpoint: a fixed part (bootstrap, half-sample intervals,
    # paired comparisons) and a part per record; from 56.3 s at 800 records and 89.5 s at 2400 (37
    # points, a linear probe with its controls and 5 extra measures, n_boot 1000)
    "probe_point": 1.07, "probe_record_point": 5.6e-4,
    # similarity: seconds per (record x pair of points) over checkpoint pairs with themselves:
    # 60.1 s / (2400 x 784) at 2400 records, 20.6 s at 800 (21.1 predicted): linear CKA is linear in records
    "cka_record_pointpair": 3.2e-5,
    # weights: seconds per (checkpoint x million parameters), 8.0 s / (6 x 2.45M) incl. loading (9.1 s
    # at 800 records: it reads no data)
    "weights_checkpoint_mparam": 0.54,
    # transfer: per pooled point, 13.2 s for 37 points at 2400 records (transfer_probe on the toy store);
    # the split into a fixed part (16 bootstraps a point) and a part per record is assumed, not measured
    "transfer_point": 0.1, "transfer_record_point": 1.1e-4,
    # attribution: seconds per (record x quadrature node x million parameters) of one pair: 9.4 s for
    # 240 records x (16 + 2) nodes x 2.45M parameters (lm -> mt, read at encoder.2); the toy suite's step
    # at 144 records: 17.9 s and 13.8 s measured, 27.6 s predicted (loading included)
    "attribution_record_node_mparam": 8.9e-4,
    # figures: umap (AlignedUMAP, <= 100 verses, 3 layers; 80 s of the toy suite's 93 s incl. numba's
    # compile), each other figure 1-2 s (layer_curves + cka_heatmap: 1.9 s)
    "figure_umap": 80.0, "figure_other": 2.0,
    # every step: reading the store, folds, writing tables (the small test suites: 1-2 s a step)
    "step_overhead": 1.0,
}


@dataclass(frozen=True)
class CheckpointShape:
    """What a checkpoint's store needs, read from its config without its weights."""

    points: int  # capture points the suite's layers resolve to
    hidden: int  # width of a pooled state
    params: int  # parameters (all of them, decoder included)
    arch: str  # model class name: checkpoints of one architecture are compared parameter by parameter


def _config_model(spec: str) -> Any:
    """The checkpoint's architecture on the meta device: built from its config, no weights read."""
    import torch

    from xlprobe.loading import random_init_spec

    inner = random_init_spec(spec)
    spec = inner[0] if inner else spec
    if spec.startswith("tiny:"):
        from types import SimpleNamespace

        import transformers

        from xlprobe.tiny import _MODEL_CLASSES, _config

        family = spec.split(":", 1)[1]
        cfg = _config(family, 1000, SimpleNamespace(pad_token_id=1, eos_token_id=2))  # sized as its tokenizer
        cls = getattr(transformers, _MODEL_CLASSES[family])
        with torch.device("meta"):
            return cls(cfg)
    from transformers import AutoConfig

    from xlprobe.loading import _auto_class

    if spec.startswith("toy:"):
        from xlprobe.toy.shipped import path

        spec = str(path(spec.split(":", 1)[1]))
    cfg = AutoConfig.from_pretrained(spec)
    with torch.device("meta"):
        return _auto_class(cfg).from_config(cfg)


def checkpoint_shape(spec: str, layers: Any) -> CheckpointShape | None:
    """Points, width and parameters of a checkpoint from its config (None when its config cannot be read).

    Builds the model on torch's meta device (shapes, no memory, no weights read) and resolves the
    suite's layers on it as capture will; offline, a hub id outside the local cache gives None.
    """
    from xlprobe.hooks.points import resolve_points

    try:
        model = _config_model(spec)
        points = resolve_points(model, layers)
    except Exception as err:  # noqa: BLE001 - any failure means "unknown", said as such
        log.info("estimate: no config for %s (%s)", spec, err)
        return None
    cfg = model.config
    hidden = next((getattr(cfg, k) for k in ("d_model", "hidden_size", "n_embd") if getattr(cfg, k, None)), None)
    if hidden is None:
        return None
    return CheckpointShape(points=len(points), hidden=int(hidden), params=sum(p.numel() for p in model.parameters()),
                           arch=type(model).__name__)


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else (f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h")


@dataclass
class SuiteEstimate:
    """Disk of the store and time per step, before anything is loaded (:func:`estimate_suite`)."""

    records: int | None
    shapes: dict[str, CheckpointShape | None]
    disk_bytes: int | None  # the store's pooled float32 states (None: some checkpoint unknown)
    seconds: dict[str, float | None]  # step -> seconds (None: unknown)

    def lines(self) -> list[str]:
        """The estimate, a line per item (``xlprobe run --dry-run`` prints it under the plan)."""
        out = [f"records: {self.records if self.records is not None else 'unknown'}"]
        for label, sh in self.shapes.items():
            out.append(f"  {label}: " + (f"{sh.points} points x {sh.hidden} wide, {sh.params / 1e6:.1f}M parameters"
                                         if sh else "unknown (no config readable offline)"))
        known = sum(self._store(sh) for sh in self.shapes.values() if sh)
        unknown = [lbl for lbl, sh in self.shapes.items() if sh is None]
        out.append("store (pooled float32): " + (_size(self.disk_bytes) if self.disk_bytes is not None else
                   f"unknown ({_size(known)} for the checkpoints known; unknown: {', '.join(unknown)})"))
        total = sum(v for v in self.seconds.values() if v is not None)
        missing = [k for k, v in self.seconds.items() if v is None]
        out.append("time (this machine's rates, rough): " + ", ".join(
            f"{k} {_duration(v) if v is not None else 'unknown'}" for k, v in self.seconds.items()))
        out.append(f"time in all: {'at least ' if missing else 'about '}{_duration(total)}")
        return out

    def _store(self, sh: CheckpointShape) -> int:
        return (self.records or 0) * sh.points * sh.hidden * 4


def _records(suite: Suite, plan: SuitePlan) -> int | None:
    """Records the run will capture: verses x languages when the size is given, else the data counted."""
    if plan.limit:
        return plan.limit * len(suite.data.languages)
    try:
        from xlprobe.tasks import load_data

        return len(load_data(plan.data, seed=suite.seeds[0]))
    except Exception as err:  # noqa: BLE001
        log.info("estimate: cannot count the records of %s (%s)", plan.data, err)
        return None


def estimate_suite(suite: Suite, plan: SuitePlan | None = None) -> SuiteEstimate:
    """Store size and step times of a suite from configs and :data:`COSTS`; no model is loaded.

    Disk: records x capture points x hidden size x 4 bytes (pooled float32) per checkpoint, exactly what
    the store's shards hold (their headers aside). Time: each step's cost model of :data:`COSTS`.
    Whatever a config cannot tell (a hub id not in the offline cache) is ``None``, printed "unknown".
    """
    plan = plan or plan_suite(suite)
    n = _records(suite, plan)
    shapes = {c.label: checkpoint_shape(c.model, suite.layers) for c in suite.checkpoints}
    known = [sh for sh in shapes.values() if sh]
    complete = n is not None and len(known) == len(shapes)
    disk = sum(n * sh.points * sh.hidden * 4 for sh in known) if complete else None
    C = COSTS
    points = sum(sh.points for sh in known)

    def need(value: float) -> float | None:
        return value if complete else None

    sec: dict[str, float | None] = {}
    sec["capture"] = need(sum(C["load_checkpoint"] + (n or 0) * sh.params / 1e6 * C["capture_record_mparam"]
                              for sh in known))
    for (task, probe), measures in plan.probes.items():
        sec[f"probe-{task}-{probe}"] = need(points * (C["probe_point"] + (n or 0) * C["probe_record_point"])
                                            * (1 + len(measures)) / 6 * (3 if probe == "mlp" else 1))
    if plan.cka:
        per = [sh.points for sh in known]
        pairs = (sum(per) ** 2 + sum(p * p for p in per)) / 2
        sec["similarity"] = need((n or 0) * pairs * C["cka_record_pointpair"])
    base = suite.role("base") or suite.checkpoints[0]
    same = [c for c in suite.checkpoints if c is not base and not c.model.startswith("random-init")
            and shapes.get(c.label) and shapes.get(base.label) and shapes[c.label].arch == shapes[base.label].arch]
    if plan.weights:
        sec["weights"] = need(sum(sh.params for sh in known) / 1e6 * C["weights_checkpoint_mparam"])
    for name in plan.transfer:
        sec[name] = need(points * (C["transfer_point"] + (n or 0) * C["transfer_record_point"]))
    if plan.attribution:
        a, bsh = plan.attribution, shapes.get(base.label)
        items = min(a["max_items"], n or 0)
        sec["attribution"] = None if bsh is None or n is None else len(same) * (  # + loading each checkpoint
            C["load_checkpoint"] + items * (a["n_steps"] + 2) * bsh.params / 1e6 * C["attribution_record_node_mparam"])
    if plan.figures:
        sec["figures"] = sum(C["figure_umap"] if f == "umap" else C["figure_other"] for f in plan.figures)
    sec = {k: (v + C["step_overhead"] if v is not None and k != "capture" else v) for k, v in sec.items()}
    return SuiteEstimate(records=n, shapes=shapes, disk_bytes=disk, seconds=sec)


def _done(folder: Path) -> bool:
    return (folder / "done.json").is_file()


def _finish(folder: Path, seconds: float) -> None:
    tmp = folder / "done.json.tmp"
    tmp.write_text(json.dumps({"seconds": round(seconds, 2)}))
    tmp.replace(folder / "done.json")


class _Progress:
    """Which step runs and how far the run is: a rich bar on stderr when shown, one log line per step always."""

    def __init__(self, total: int, show: bool) -> None:
        self.bar: Any = None
        self.name = ""
        if show:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), console=Console(stderr=True))
            self.task = self.bar.add_task("xlprobe run", total=total)
            self.bar.start()

    def start(self, name: str) -> None:
        """A step (or a checkpoint's capture) begins."""
        self.name = name
        if self.bar is not None:
            self.bar.update(self.task, description=name)

    def sub(self, text: str, i: int, n: int) -> None:
        """Where a long step is inside itself (``i`` of ``n``)."""
        if self.bar is not None:
            self.bar.update(self.task, description=f"{self.name}: {text} ({i + 1}/{n})")

    def finish(self, name: str, seconds: float, resumed: bool = False) -> None:
        """A step ended: one line with its time (or that an earlier run had finished it)."""
        line = f"{name}: " + ("done before, kept" if resumed else f"{seconds:.1f} s")
        log.info("xlprobe run: %s", line)
        if self.bar is not None:
            self.bar.console.print(f"  {line}")
            self.bar.advance(self.task)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _capture(suite: Suite, out: Path, ds: Any, prog: _Progress | None = None) -> dict[str, float]:
    """Capture every checkpoint into ``out/store`` (the store skips shards already written)."""
    from xlprobe.hooks import extract
    from xlprobe.loading import load_model
    from xlprobe.store import ActivationStore

    store = ActivationStore.open(out / "store")
    seconds = {}
    for c in suite.checkpoints:
        if prog:
            prog.start(f"capture {c.label}")
        t0 = time.perf_counter()
        model, tok = load_model(c.model)
        extract(model, tok, ds, suite.layers, pooling=suite.pooling, store=store,
                provenance={"model_spec": c.label, "data_spec": data_spec(suite), "seed": suite.seeds[0],
                            "suite": suite.name})
        seconds[c.label] = round(time.perf_counter() - t0, 2)
        if prog:
            prog.finish(f"capture {c.label}", seconds[c.label])
    return seconds


def _weights(suite: Suite, names: list[str]) -> pd.DataFrame:
    """compare_weights of every checkpoint of the base's architecture against the base."""
    from xlprobe.loading import load_model
    from xlprobe.probes.weights import compare_weights

    base = suite.role("base") or suite.checkpoints[0]
    a, _ = load_model(base.model)
    frames = []
    for c in suite.checkpoints:
        if c is base or c.model.startswith("random-init"):
            continue
        b, _ = load_model(c.model)
        if type(b) is not type(a):
            log.info("weights: %s is another architecture than %s, left out", c.label, base.label)
            continue
        frames.append(compare_weights(a, b, checkpoint=c.label, ref_checkpoint=base.label))
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return df[df.measure.isin(names)] if not df.empty else df


def _store_reps(store: Any, names: dict[str, str], data_fp: str, pooling: str) -> dict[str, dict[str, Any]]:
    """``{checkpoint: {layer: X}}`` of one dataset's shards with this pooling (as the probe step reads them)."""
    out: dict[str, dict[str, Any]] = {}
    for key in store.keys(data=data_fp, pooling=pooling):
        alias = store.entry(key).get("info", {}).get("alias") or key.point
        out.setdefault(names[key.model], {})[alias] = store.read(key)
    return out


def _gap_per_group(correct: Any, langs: Any, groups: Any, train_lang: str) -> pd.Series:
    """Per parallel group: correct(train_lang) - mean correct of the other languages (groups tested in all).

    Averaged over groups this is the mean gap over languages of the transfer.gap rows when every tested
    group has every language (parallel data); groups missing a language are left out, not reweighted.
    """
    import numpy as np

    df = pd.DataFrame({"c": correct, "lang": langs, "g": groups}).dropna(subset=["c"])
    wide = df.pivot_table(index="g", columns="lang", values="c", aggfunc="mean").dropna()
    others = [c for c in wide.columns if c != train_lang]
    if train_lang not in wide.columns or not others:
        return pd.Series(dtype=np.float64)
    return wide[train_lang] - wide[others].mean(axis=1)


def _transfer(suite: Suite, out: Path, params: dict[str, Any], folder: Path) -> pd.DataFrame:
    """transfer_probe on every checkpoint's stored states; paired contrasts of the mean gap over languages."""
    from xlprobe.comparisons import compare_items, contrasts, resolve_checkpoint
    from xlprobe.probe_suite import is_control_rep
    from xlprobe.probes.transfer import transfer_probe
    from xlprobe.results import results_frame, write_results
    from xlprobe.runs import checkpoint_names, labels_for, open_store
    from xlprobe.tasks.splits import group_ids

    store = open_store(out / "store")
    names = checkpoint_names(store)
    keys = store.keys(pooling=suite.pooling)
    task, train_lang = params["task"], params["train_lang"]
    frames, rows = [], []
    base, control = suite.role("base"), suite.role("control")
    for data_fp in dict.fromkeys(k.data for k in keys):
        data = store.records(data_fp)
        y, langs = labels_for(data, task), labels_for(data, "language")
        groups = group_ids(data, "group")
        reps = _store_reps(store, names, data_fp, suite.pooling)
        scores: dict = {}
        df = transfer_probe(reps, y, langs, groups, n_boot=suite.n_boot, seed=suite.seeds[0], scores=scores,
                            **params)
        df["pooling"], df["data"] = suite.pooling, data_fp
        frames.append(df)
        per_group = {("transfer.gap", c, layer): _gap_per_group(v, langs, groups, train_lang)
                     for (c, layer), v in scores.items() if not is_control_rep(c)}
        per_group = {k: v for k, v in per_group.items() if len(v)}  # one language only: no gap to contrast
        checkpoints = list(dict.fromkeys(c for _, c, _ in per_group))
        if len(checkpoints) < 2:
            continue
        triples = contrasts(checkpoints, resolve_checkpoint(base.label if base else None, checkpoints, "base"),
                            resolve_checkpoint(control.label if control else None, checkpoints, "control"))
        ids = next(iter(per_group.values())).index
        rows += compare_items(per_group, pd.Series(ids, index=ids), triples, n_boot=suite.n_boot or 1000,
                              seed=suite.seeds[0], task=task)
    results = pd.concat(frames, ignore_index=True)
    if rows:
        comparisons = results_frame(rows)
        comparisons["train_lang"] = train_lang
        comparisons["statistic"] = "mean gap over languages"  # value: the difference of the two mean gaps
        write_results(comparisons, folder, name="comparisons")
    return results


def _read_point(model: Any, layers: Any, asked: str | None) -> str:
    """The attribution's read point: the one asked for, else the last encoder block among the suite's layers."""
    from xlprobe.hooks.points import resolve_points

    if asked:
        return resolve_points(model, asked)[0].alias
    points = resolve_points(model, layers)
    blocks = [p for p in points if p.side == "encoder" and p.where == "block_out"]
    if not blocks:
        raise ConfigError(f"the suite's layers {layers!r} hold no encoder block to read the transfer gap at",
                          hint="give attribution.path: {layer: encoder.N}")
    return max(blocks, key=lambda p: p.index).alias


def _attribution(suite: Suite, ds: Any, params: dict[str, Any], report: Any = None) -> pd.DataFrame:
    """Path attribution of the TransferGap change from the base to every other checkpoint of its architecture."""
    import torch

    from xlprobe.loading import load_model, random_init_spec
    from xlprobe.path_metrics import TransferGap
    from xlprobe.probes.attribution import ParameterPathAttribution
    from xlprobe.tasks.sampling import balanced_groups

    base = suite.role("base") or suite.checkpoints[0]
    a, tok = load_model(base.model)
    layer = _read_point(a, suite.layers, params.get("layer"))
    task, train_lang = params["task"], params["train_lang"]
    data = balanced_groups(ds, task, seed=suite.seeds[0])
    n_classes = len({str(r.labels[task]) for r in data})
    per_class = len({r.group for r in data}) // n_classes
    per_lang = max(1, len({r.lang for r in data}))
    cap = max(2, params["max_items"] // (n_classes * per_lang))
    if cap < per_class:
        data = balanced_groups(ds, task, per_class=cap, seed=suite.seeds[0])
    metric = TransferGap(tok, data, layer=layer, task=task, train_lang=train_lang, ridge=params["ridge"],
                         tau=params["tau"], seed=suite.seeds[0])
    frames = []
    others = [c for c in suite.checkpoints if c is not base and not random_init_spec(c.model)]
    for i, c in enumerate(others):
        if report:
            report(f"attribution {base.label} -> {c.label}", i, len(others))
        b, _ = load_model(c.model)
        if type(b) is not type(a) or {n: p.shape for n, p in a.named_parameters()} != {
                n: p.shape for n, p in b.named_parameters()}:
            log.info("attribution: %s is another architecture than %s, left out", c.label, base.label)
            continue
        torch.manual_seed(suite.seeds[0])
        rows, delta = ParameterPathAttribution(metric).attribute(
            a, b, groups=params["groups"], n_steps=params["n_steps"], return_convergence_delta=True,
            checkpoint=c.label, ref_checkpoint=base.label)
        log.info("attribution %s -> %s: change %+.4f, completeness error %.2e", base.label, c.label,
                 rows.metric_b.iloc[0] - rows.metric_a.iloc[0], delta)
        rows["task"], rows["train_lang"], rows["read_point"] = task, train_lang, layer
        rows["n_items"], rows["seed"] = len(data), suite.seeds[0]
        frames.append(rows)
    if not frames:
        log.warning("attribution.path: no checkpoint shares the architecture of the base %s", base.label)
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def _step(out: Path, name: str, make: Any, timings: dict, table: str = "results",
          prog: _Progress | None = None) -> pd.DataFrame:
    """Run one step unless its folder says it is done; its rows from ``<table>.parquet`` there."""
    folder = out / "steps" / name
    folder.mkdir(parents=True, exist_ok=True)
    resumed = _done(folder)
    if prog:
        prog.start(name)
    if not resumed:
        t0 = time.perf_counter()
        df = make(folder)
        if not (folder / f"{table}.parquet").is_file():
            from xlprobe.results import write_results

            if df.empty:  # a step with nothing to compute (no checkpoint of the base's architecture)
                df.to_parquet(folder / f"{table}.parquet")
            else:
                write_results(df, folder, name=table)
        _finish(folder, time.perf_counter() - t0)
    timings[name] = json.loads((folder / "done.json").read_text())["seconds"]
    if prog:
        prog.finish(name, timings[name], resumed)
    return pd.read_parquet(folder / f"{table}.parquet")


def run_suite(suite: Suite, out: str | Path, *, progress: bool = False) -> pd.DataFrame:
    """Capture, compute every planned measure, write results and provenance; resumes a killed run.

    ``progress``: a bar on stderr naming the running step, and a line per finished step with its time
    (``xlprobe run`` shows it; every step is logged at INFO either way).
    """
    from xlprobe import __version__
    from xlprobe.results import write_results
    from xlprobe.runs import probe_run
    from xlprobe.similarity import similarity_run
    from xlprobe.suite_figures import draw_figures
    from xlprobe.tasks import load_data

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plan = plan_suite(suite)
    ds = load_data(plan.data, limit=plan.limit, seed=suite.seeds[0])
    prog = _Progress(len(suite.checkpoints) + len(plan.steps()) + 1, progress)
    try:
        timings: dict[str, Any] = {"capture": _capture(suite, out, ds, prog)}
        base, control = suite.role("base"), suite.role("control")
        roles = dict(base=base.label if base else None, control=control.label if control else None)
        frames = []
        for (task, probe), measures in plan.probes.items():
            frames.append(_step(out, f"probe-{task}-{probe}", lambda f, t=task, p=probe, m=measures: probe_run(
                out / "store", task=t, probe=p, pooling=suite.pooling, measures=m, n_boot=suite.n_boot,
                seed=suite.seeds[0], out=f, **roles), timings, prog=prog))
        if plan.cka:
            frames.append(_step(out, "similarity", lambda f: similarity_run(
                out / "store", pooling=suite.pooling, debiased=any("debiased" in n for n in plan.cka),
                seed=suite.seeds[0], out=f, **roles), timings, table="similarity", prog=prog))
        if plan.weights:
            frames.append(_step(out, "weights", lambda f: _weights(suite, plan.weights), timings, prog=prog))
        for name, params in plan.transfer.items():
            frames.append(_step(out, name, lambda f, kw=params: _transfer(suite, out, kw, f), timings, prog=prog))
        if plan.attribution:
            frames.append(_step(out, "attribution", lambda f: _attribution(suite, ds, plan.attribution, prog.sub),
                                timings, prog=prog))
        results = pd.concat([f for f in frames if not f.empty], ignore_index=True)
        write_results(results, out)
        paired = [pd.read_parquet(p) for p in sorted((out / "steps").glob("*/comparisons.parquet"))]
        paired += [pd.read_parquet(p) for p in sorted((out / "steps").glob("*/similarity_comparisons.parquet"))]
        if paired:
            write_results(pd.concat(paired, ignore_index=True), out, name="comparisons")
        prog.start("figures")
        t0 = time.perf_counter()
        drawn, pending = draw_figures(suite, out, results)
        timings["figures"] = round(time.perf_counter() - t0, 2)
        prog.finish("figures", timings["figures"])
    finally:
        prog.close()
    provenance = {"suite": suite.model_dump(), "figures": sorted(p.name for p in (out / "figures").iterdir()),
                  "figures_pending": pending, "xlprobe": __version__, "data": plan.data,
                  "data_fingerprint": ds.fingerprint, "n_records": len(ds), "seeds": suite.seeds,
                  "plan": plan.lines(), "seconds": timings,
                  "estimate_seconds": estimate_suite(suite, plan).seconds}  # what --dry-run said, to compare
    tmp = out / "provenance.json.tmp"
    tmp.write_text(json.dumps(provenance, indent=1, default=str))
    tmp.replace(out / "provenance.json")
    return results
