"""Run a validated suite: capture once per checkpoint into one store, then every measure; tidy results.

``run_suite(suite, out)`` writes under ``out``:

* ``store/``: the activation store (``xlprobe capture``'s, resumable: a killed capture resumes);
* ``steps/<step>/``: each step's own tables (``probe-<task>``, ``similarity``, ``weights``), a finished
  step (its ``done.json``) is not recomputed, so the same command resumes after a kill;
* ``results.parquet`` / ``.csv``: every step's rows together, the standard result columns first;
  ``comparisons.parquet``: the paired contrasts between checkpoints (probe and similarity steps);
* ``figures/``: PNG and SVG of the figures the suite asks for (:mod:`xlprobe.suite_figures`);
* ``provenance.json``: the suite, versions, data fingerprint, seeds and each step's wall time.

Measures go where they are computed: probes (``probe.linear`` / ``probe.mlp`` and their derived names)
by task through :func:`xlprobe.runs.probe_run`, with the other per-layer measures (``labelled`` and
``unlabelled`` kinds); ``cka.*`` through :func:`xlprobe.similarity.similarity_run`; ``weights.*`` by
:func:`xlprobe.probes.weights.compare_weights` of every checkpoint against the base (same architecture
only). Table measures (transfer, attribution, tokens, units, fine-tuning, interventions) are listed in
the plan as not run by a suite yet, never silently dropped.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from xlprobe.suite import Suite

__all__ = ["SuitePlan", "plan_suite", "run_suite", "data_spec"]

log = logging.getLogger(__name__)
_PROBES = {"probe.linear": "linear", "probe.mlp": "mlp"}


@dataclass
class SuitePlan:
    """What a suite will compute: probe runs per (task, probe), per-layer measures, CKA, weights, what waits."""

    data: str
    limit: int | None
    probes: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (task, probe) -> extra measures
    cka: list[str] = field(default_factory=list)
    weights: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The plan, one step per line (``xlprobe run --dry-run`` prints it)."""
        out = [f"data: {self.data}" + (f" (limit {self.limit} verses)" if self.limit else "")]
        out += [f"probe {p} on {t}" + (f" with {', '.join(m)}" if m else "") for (t, p), m in self.probes.items()]
        out += [f"similarity: {', '.join(self.cka)}"] if self.cka else []
        out += [f"weights against the base: {', '.join(self.weights)}"] if self.weights else []
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
        elif spec.kind == "weights":
            plan.weights.append(call.name)
        elif spec.kind in ("labelled", "unlabelled"):
            extra.append((call.params.get("task", "language"), call.name))
        else:
            plan.pending.append(call.name)
    if not plan.probes:
        plan.probes[("language", "linear")] = []
    for task, name in extra:
        key = next((k for k in plan.probes if k[0] == task), None) or (task, "linear")
        plan.probes.setdefault(key, []).append(name)
    return plan


def _done(folder: Path) -> bool:
    return (folder / "done.json").is_file()


def _finish(folder: Path, seconds: float) -> None:
    tmp = folder / "done.json.tmp"
    tmp.write_text(json.dumps({"seconds": round(seconds, 2)}))
    tmp.replace(folder / "done.json")


def _capture(suite: Suite, out: Path, ds: Any) -> dict[str, float]:
    """Capture every checkpoint into ``out/store`` (the store skips shards already written)."""
    from xlprobe.hooks import extract
    from xlprobe.loading import load_model
    from xlprobe.store import ActivationStore

    store = ActivationStore.open(out / "store")
    seconds = {}
    for c in suite.checkpoints:
        t0 = time.perf_counter()
        model, tok = load_model(c.model)
        extract(model, tok, ds, suite.layers, pooling=suite.pooling, store=store,
                provenance={"model_spec": c.label, "data_spec": data_spec(suite), "seed": suite.seeds[0],
                            "suite": suite.name})
        seconds[c.label] = round(time.perf_counter() - t0, 2)
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


def _step(out: Path, name: str, make: Any, timings: dict, table: str = "results") -> pd.DataFrame:
    """Run one step unless its folder says it is done; its rows from ``<table>.parquet`` there."""
    folder = out / "steps" / name
    folder.mkdir(parents=True, exist_ok=True)
    if not _done(folder):
        t0 = time.perf_counter()
        df = make(folder)
        if not (folder / f"{table}.parquet").is_file():
            from xlprobe.results import write_results

            write_results(df, folder, name=table)
        _finish(folder, time.perf_counter() - t0)
    timings[name] = json.loads((folder / "done.json").read_text())["seconds"]
    return pd.read_parquet(folder / f"{table}.parquet")


def run_suite(suite: Suite, out: str | Path) -> pd.DataFrame:
    """Capture, compute every planned measure, write results and provenance; resumes a killed run."""
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
    timings: dict[str, Any] = {"capture": _capture(suite, out, ds)}
    base, control = suite.role("base"), suite.role("control")
    roles = dict(base=base.label if base else None, control=control.label if control else None)
    frames = []
    for (task, probe), measures in plan.probes.items():
        frames.append(_step(out, f"probe-{task}-{probe}", lambda f, t=task, p=probe, m=measures: probe_run(
            out / "store", task=t, probe=p, pooling=suite.pooling, measures=m, n_boot=suite.n_boot,
            seed=suite.seeds[0], out=f, **roles), timings))
    if plan.cka:
        frames.append(_step(out, "similarity", lambda f: similarity_run(
            out / "store", pooling=suite.pooling, debiased=any("debiased" in n for n in plan.cka),
            seed=suite.seeds[0], out=f, **roles), timings, table="similarity"))
    if plan.weights:
        frames.append(_step(out, "weights", lambda f: _weights(suite, plan.weights), timings))
    results = pd.concat([f for f in frames if not f.empty], ignore_index=True)
    write_results(results, out)
    paired = [pd.read_parquet(p) for p in sorted((out / "steps").glob("*/comparisons.parquet"))]
    paired += [pd.read_parquet(p) for p in sorted((out / "steps").glob("*/similarity_comparisons.parquet"))]
    if paired:
        write_results(pd.concat(paired, ignore_index=True), out, name="comparisons")
    t0 = time.perf_counter()
    drawn, pending = draw_figures(suite, out, results)
    timings["figures"] = round(time.perf_counter() - t0, 2)
    provenance = {"suite": suite.model_dump(), "figures": sorted(p.name for p in (out / "figures").iterdir()),
                  "figures_pending": pending, "xlprobe": __version__, "data": plan.data,
                  "data_fingerprint": ds.fingerprint, "n_records": len(ds), "seeds": suite.seeds,
                  "plan": plan.lines(), "seconds": timings}
    tmp = out / "provenance.json.tmp"
    tmp.write_text(json.dumps(provenance, indent=1, default=str))
    tmp.replace(out / "provenance.json")
    return results
