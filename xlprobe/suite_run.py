"""Run a validated suite: capture once per checkpoint into one store, then every measure; tidy results.

``run_suite(suite, out)`` writes under ``out``:

* ``store/``: the activation store (``xlprobe capture``'s, resumable: a killed capture resumes);
* ``steps/<step>/``: each step's own tables (``probe-<task>-<probe>``, ``similarity``, ``weights``,
  ``transfer-<task>-<train_lang>``, ``attribution``), a finished step (its ``done.json``) is not
  recomputed, so the same command resumes after a kill;
* ``results.parquet`` / ``.csv``: every step's rows together, the standard result columns first;
  ``comparisons.parquet``: the paired contrasts between checkpoints (probe, similarity and transfer steps);
* ``figures/``: PNG and SVG of the figures the suite asks for (:mod:`xlprobe.suite_figures`);
* ``provenance.json``: the suite, versions, data fingerprint, seeds and each step's wall time;
* ``report.html`` / ``report.md``: the report (:mod:`xlprobe.report`), rebuilt from the files above.

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
  from the base to every other checkpoint of its architecture (random-init ones excluded), on the suite's
  ``device:`` (both models and the metric's inputs); rows
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
from pathlib import Path
from typing import Any

import pandas as pd

from xlprobe.suite import Suite
from xlprobe.suite_estimate import COSTS, CheckpointShape, SuiteEstimate, checkpoint_shape, estimate_suite
from xlprobe.suite_plan import ATTRIBUTION_DEFAULTS, SuitePlan, data_spec, plan_suite, suite_data
from xlprobe.suite_steps import attribution_step, capture_checkpoints, transfer_step, weights_step

__all__ = ["SuitePlan", "plan_suite", "run_suite", "data_spec", "SuiteEstimate", "estimate_suite", "COSTS",
           "CheckpointShape", "checkpoint_shape", "ATTRIBUTION_DEFAULTS"]

log = logging.getLogger(__name__)

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
    (``xlprobe run`` shows it; every step is logged at INFO either way). Under torchrun (``xlprobe run
    --nproc N``) the processes split every checkpoint's capture batches; process 0 then runs the steps,
    figures and report, and the others return an empty frame.
    """
    from xlprobe import __version__
    from xlprobe.hooks.distributed import env_rank
    from xlprobe.results import write_results
    from xlprobe.runs import probe_run
    from xlprobe.similarity import similarity_run
    from xlprobe.suite_figures import draw_figures

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plan = plan_suite(suite)
    ds = suite_data(suite)
    rank = env_rank()
    prog = _Progress(len(suite.checkpoints) + len(plan.steps()) + 1, progress and rank == 0)
    try:
        timings: dict[str, Any] = {"capture": capture_checkpoints(suite, out, ds, prog)}
        if rank > 0:  # under torchrun every process took its share of the captures; process 0 does the rest
            log.info("process %d: captures done; process 0 computes the measures", rank)
            return pd.DataFrame()
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
        if plan.references:
            _step(out, "similarity-references", lambda f: _reference_contrasts(out, suite, plan), timings,
                  table="comparisons", prog=prog)  # rows for comparisons.parquet only
        if plan.weights:
            frames.append(_step(out, "weights", lambda f: weights_step(
                suite, plan.weights, f, spectra="weight_spectra" in suite.figures), timings, prog=prog))
        for name, params in plan.transfer.items():
            frames.append(_step(out, name, lambda f, kw=params: transfer_step(suite, out, kw, f), timings, prog=prog))
        if plan.attribution:
            frames.append(_step(out, "attribution", lambda f: attribution_step(suite, ds, plan.attribution, prog.sub),
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
                  "plan": plan.lines(), "seconds": timings, "versions": _versions(),
                  "hashes": _hashes(out, suite),
                  "estimate_seconds": estimate_suite(suite, plan).seconds}  # what --dry-run said, to compare
    tmp = out / "provenance.json.tmp"
    tmp.write_text(json.dumps(provenance, indent=1, default=str))
    tmp.replace(out / "provenance.json")
    from xlprobe.report import write_report

    write_report(out)
    return results


def _reference_contrasts(out: Path, suite: Suite, plan: SuitePlan) -> pd.DataFrame:
    """CKA(reference top, X) - CKA(reference top, control or base), per reference (the paper's similarity claim)."""
    from xlprobe.similarity import reference_contrasts

    frames = [reference_contrasts(out / "store", ref, plan.against, pooling=suite.pooling,
                                  debiased=any("debiased" in n for n in plan.cka), seed=suite.seeds[0])
              for ref in plan.references]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()



def _versions() -> dict[str, str]:
    """Python and the packages a run's numbers depend on."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "numpy", "scikit-learn", "scipy", "umap-learn", "captum", "pandas"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _hashes(out: Path, suite: Suite) -> dict[str, Any]:
    """The suite's own hash and each checkpoint's weight fingerprint (the store's model key)."""
    import hashlib

    from xlprobe.runs import checkpoint_names, open_store

    text = json.dumps(suite.model_dump(), sort_keys=True, default=str).encode()
    names = checkpoint_names(open_store(out / "store"))
    return {"suite_sha256": hashlib.sha256(text).hexdigest(),
            "checkpoints": {name: fp for fp, name in sorted(names.items(), key=lambda kv: kv[1])}}
