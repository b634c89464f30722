"""How much disk a suite's store takes and roughly how long each step runs, before anything loads.

``xlprobe run --dry-run`` prints :func:`estimate_suite`; ``provenance.json`` keeps it beside the
measured seconds. Model shapes come from each config built on torch's meta device (no weights read);
step times from the rates of :data:`COSTS`, measured on the development machine.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from xlprobe.suite import Suite
from xlprobe.suite_plan import SuitePlan, plan_suite

__all__ = ["SuiteEstimate", "estimate_suite", "COSTS", "CheckpointShape", "checkpoint_shape"]

log = logging.getLogger(__name__)

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
    # at 144 records: 17.9 s and 13.8 s measured; the demo's (4 pairs x 432 records x 18 nodes x 2.45M,
    # loading included) 36.4 s: 4.8e-4 (the 240-record pair ran alone on a loaded machine)
    "attribution_record_node_mparam": 4.8e-4,
    # figures: umap (AlignedUMAP, <= 100 verses, 3 layers, 100 epochs: 17 s of numba's compile + 3 x 16.5 s
    # for 7 checkpoints; 62 s of the demo's 67 s), each other figure 0.4-1.2 s (timed one by one)
    "figure_umap": 62.0, "figure_other": 1.5,
    # similarity-references: seconds per (record x pooled point of the other checkpoints) per reference,
    # half-sampled paired contrasts: 4.5 s for 1600 records x 30 points (the demo)
    "reference_record_point": 9.4e-5,
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
        from xlprobe.tiny import skeleton

        return skeleton(spec.split(":", 1)[1])  # sized as its tokenizer (1,000 pieces)
    from transformers import AutoConfig

    from xlprobe.loading import auto_class

    if spec.startswith("toy:"):
        from xlprobe.toy.shipped import path

        spec = str(path(spec.split(":", 1)[1]))
    cfg = AutoConfig.from_pretrained(spec)
    with torch.device("meta"):
        return auto_class(cfg).from_config(cfg)


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
    if plan.limit and not suite.data.balance:
        return plan.limit * len(suite.data.languages)
    try:
        from xlprobe.suite_plan import suite_data

        return len(suite_data(suite))
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
    if plan.references:
        sec["similarity-references"] = need(len(plan.references) * (n or 0) * points * C["reference_record_point"])
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


