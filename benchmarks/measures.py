#!/usr/bin/env python
"""Measure benchmarks: time and memory of xlprobe's measures against what users would write instead.

Run by hand (not part of the test suite)::

    python benchmarks/measures.py                 # CKA at n = 10k, d = 1024; memory at 10k and 50k rows
    python benchmarks/measures.py --quick         # n = 4k, d = 512; memory at 4k and 20k rows (~1 minute)
    python benchmarks/measures.py --json out.json # also write the numbers as JSON

4. Paired statistics. Three checkpoints (the probe workload's layers, a per-checkpoint shift of the
   language signal), 2,400 items (300 groups x 8 languages): the out-of-fold probe fits that give the
   per-item correctness (5 folds, every layer and checkpoint), the per-item kNN and retrieval scores,
   and the paired comparisons of all three measures for every pair of checkpoints over all layers
   (1,000 cluster-bootstrap draws, 10,000 sign flips, Holm), timed once each, one after the other.

3. Probes. Linear language probes over all layers of a synthetic parallel corpus (groups x languages,
   a language signal that rises and falls across layers): ``xlprobe.probes.LinearProbe`` against
   ``StandardScaler`` + scikit-learn ``LogisticRegression`` (lbfgs) at the same C, same train / test
   split by group; total time over the layers in ABBA rounds, and the per-layer test accuracies.

1. Time. ``xlprobe.probes.cka`` (linear, feature-space form, float64) against a plain numpy n x n Gram
   implementation on the same float32 data: K = X X', L = Y Y' in float64, centred by subtracting
   row and column means (in place), CKA = <K, L> / (||K|| ||L||); the fair form of the textbook
   tr(K H L H) (``--textbook`` also times that literal version, with the n x n centring matrix H,
   once: it costs 3 n^3 multiply-adds more). Both are warmed up, then timed in ``--rounds`` rounds
   of the two back to back (ABBA order), in one process; the ratio is the median of the per-round
   ratios, so a load spike from another process hits both sides of a ratio.
2. Memory. Two float32 shards [n, d] are written to an ``ActivationStore``; then, each in a fresh
   subprocess: in-memory ``cka(store.read(a), store.read(b))``, streaming
   ``cka_from_store(store, a, b, chunk_rows=...)`` and (for the smaller n) the n x n Gram baseline.
   The peak is the process's RSS high-water mark (``/proc/self/clear_refs`` reset after imports,
   VmHWM) minus the RSS at that point; the tracemalloc peak of the call (numpy reports its buffers
   to tracemalloc; memory maps are not counted there) is printed beside it.

The load average is printed at the start and the end; when it is above half the cores, the output
says the machine was loaded (timings are then noisier, the paired ratio less so).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from harness import load_note, reset_peak, status_mib, time_pair

PLANS = {
    "full": {"n": 10_000, "d": 1024, "rounds": 3, "mem_n": (10_000, 50_000), "chunk_rows": 4096,
             "probe": {"groups": 625, "langs": 8, "d": 1024, "layers": 13, "rounds": 2}},
    "quick": {"n": 4_000, "d": 512, "rounds": 3, "mem_n": (4_000, 20_000), "chunk_rows": 2048,
              "probe": {"groups": 250, "langs": 8, "d": 256, "layers": 6, "rounds": 2}},
}


# ------------------------------------------------------------------------------------------------ helpers


def _data(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Float32 X and a noisy linear function Y of it, with activation-like non-zero means."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d), dtype=np.float32) + rng.normal(0, 2, d).astype(np.float32)
    W = (rng.standard_normal((d, d), dtype=np.float32) / np.float32(np.sqrt(d)))
    Y = X @ W + rng.standard_normal((n, d), dtype=np.float32)
    return X, Y


def gram_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Baseline: linear CKA on n x n Gram matrices in float64, centred by means (Kornblith et al.'s Gram form)."""
    X64, Y64 = np.asarray(X, dtype=np.float64), np.asarray(Y, dtype=np.float64)
    K, L = X64 @ X64.T, Y64 @ Y64.T
    for M in (K, L):
        M -= M.mean(axis=0, keepdims=True)
        M -= M.mean(axis=1, keepdims=True)
    return float(np.vdot(K, L) / np.sqrt(np.vdot(K, K) * np.vdot(L, L)))


def textbook_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Baseline: the literal tr(K H L H) with the n x n centring matrix H (what many notebooks do)."""
    X64, Y64 = np.asarray(X, dtype=np.float64), np.asarray(Y, dtype=np.float64)
    n = X64.shape[0]
    H = np.eye(n) - 1.0 / n
    K, L = X64 @ X64.T, Y64 @ Y64.T

    def hsic(A: np.ndarray, B: np.ndarray) -> float:
        return float(np.trace(A @ H @ B @ H))

    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


# ------------------------------------------------------------------------------------------------ probes
def probe_layers_data(groups: int, langs: int, d: int, layers: int, seed: int = 0
                      ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Per-layer float32 arrays of parallel items (groups x langs) whose language signal rises then falls.

    Each item = its group's content (shared by its translations) + its language's direction scaled by a
    layer-dependent strength + noise, so a language probe meets easy and hard layers, as in a real model.
    Returns (layers, y, train mask, test mask): the last 20 % of the groups are the test items.
    """
    rng = np.random.default_rng(seed)
    content = rng.normal(size=(groups, d)).astype(np.float32)
    lang_dir = rng.normal(size=(langs, d)).astype(np.float32)
    y = np.tile(np.arange(langs), groups)
    g = np.repeat(np.arange(groups), langs)
    strength = 0.03 + 0.2 * np.sin(np.linspace(0.2, np.pi - 0.2, layers))
    out = []
    for s in strength:
        X = content[g] + s * lang_dir[y] + rng.normal(size=(len(y), d)).astype(np.float32) * 1.5
        out.append(X.astype(np.float32))
    test = g >= int(groups * 0.8)
    return out, y, ~test, test


def bench_probes(plan: dict[str, Any]) -> dict[str, Any]:
    """All layers: xlprobe LinearProbe vs StandardScaler + scikit-learn LogisticRegression, same arrays and C.

    Both fit multinomial L2 logistic regression with C = 1 on standardised features, each with its own
    default stopping rule; the comparison is total fitting time over all layers (paired ABBA rounds) and
    the largest per-layer difference in test accuracy.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from xlprobe.probes import LinearProbe

    layers, y, train, test = probe_layers_data(plan["groups"], plan["langs"], plan["d"], plan["layers"])
    acc: dict[str, list[float]] = {"xlprobe": [], "sklearn": []}

    def run(kind: str) -> float:
        accs = []
        for X in layers:
            est = LinearProbe() if kind == "xlprobe" else make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
            est.fit(X[train], y[train])
            accs.append(float(est.score(X[test], y[test])))
        acc[kind] = accs
        return float(np.mean(accs))

    print(f"  timing probes over {plan['layers']} layers: n = {int(train.sum())} train / {int(test.sum())} test, "
          f"d = {plan['d']}, {plan['langs']} classes, {plan['rounds']} rounds ...", flush=True)
    res = time_pair(lambda: run("xlprobe"), lambda: run("sklearn"), plan["rounds"])
    diffs = [100 * (a - b) for a, b in zip(acc["xlprobe"], acc["sklearn"])]
    # the optimum both approximate: scikit-learn run to a tight tolerance (untimed)
    ref = []
    for X in layers:
        sc = StandardScaler().fit(X[train])
        lr = LogisticRegression(max_iter=20000, tol=1e-9).fit(sc.transform(X[train]), y[train])
        ref.append(float(lr.score(sc.transform(X[test]), y[test])))
    off = {k: float(np.max(np.abs(100 * (np.array(acc[k]) - np.array(ref))))) for k in acc}
    return {**plan, "n_train": int(train.sum()), "n_test": int(test.sum()), **res, "acc_xlprobe": acc["xlprobe"],
            "acc_sklearn": acc["sklearn"], "acc_reference": ref, "max_abs_acc_diff_points": float(np.max(np.abs(diffs))),
            "max_abs_diff_vs_reference_points": off}


def bench_paired(plan: dict[str, Any]) -> dict[str, Any]:
    """Probe fits vs the paired statistics that compare three checkpoints on them (all layers, 2,400 items)."""
    import pandas as pd

    from xlprobe.comparisons import compare_items, contrasts
    from xlprobe.probes import probe_layers
    from xlprobe.probes.items import item_scores

    groups, langs = 300, 8
    names = ["lm", "mt", "lm-cont"]
    reps = {}
    for i, c in enumerate(names):
        layers, y, _, _ = probe_layers_data(groups, langs, plan["d"], plan["layers"], seed=i)
        reps[c] = {f"layer.{j}": X for j, X in enumerate(layers)}
    g = np.repeat(np.arange(groups), langs)
    ids = pd.Index([f"{a}.{b}" for a, b in zip(g, y)])
    print(f"  timing paired statistics: 3 checkpoints x {plan['layers']} layers x {len(y)} items, d = {plan['d']} ...",
          flush=True)
    t0 = time.perf_counter()
    _, items = probe_layers(reps, y, g, controls=(), n_boot=0, return_items=True)
    t_probe = time.perf_counter() - t0
    scores = {("probe.linear", c, la): pd.Series(v, index=ids) for (c, la), v in items.items()}
    t0 = time.perf_counter()
    for c, layers_ in reps.items():
        for la, X in layers_.items():
            scores["separability.knn", c, la] = pd.Series(item_scores("separability.knn", X, y, g), index=ids)
            scores["retrieval.p_at_1", c, la] = pd.Series(item_scores("retrieval.p_at_1", X, y, g), index=ids)
    t_items = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = compare_items(scores, pd.Series(g.astype(str), index=ids), contrasts(names), n_boot=1000, n_perm=10_000)
    t_stats = time.perf_counter() - t0
    return {"checkpoints": 3, "layers": plan["layers"], "items": len(y), "d": plan["d"], "rows": len(rows),
            "probe_fits_s": t_probe, "item_scores_s": t_items, "paired_stats_s": t_stats,
            "stats_over_fits": t_stats / t_probe}


# ------------------------------------------------------------------------------------------------ memory
def child_memory(args: argparse.Namespace) -> None:
    """In a fresh process: one CKA computation from the store; print its peak memory as JSON."""
    from xlprobe.probes.cka import cka, cka_from_store
    from xlprobe.store import ActivationStore
    from xlprobe.types import StoreKey

    store = ActivationStore.open(args.store, create=False)
    ka, kb = (StoreKey(**json.loads(k)) for k in (args.key_a, args.key_b))
    for k in (ka, kb):  # verify checksums now (file reads, not maps), so the measured call does not
        store.read(k)
    base = status_mib("VmRSS")["VmRSS"]
    reset = reset_peak()
    tracemalloc.start()
    t0 = time.perf_counter()
    if args.child == "in_memory":
        value = cka(store.read(ka, verify=False), store.read(kb, verify=False))
    elif args.child == "streaming":
        value = cka_from_store(store, ka, kb, chunk_rows=args.chunk_rows, verify=False)
    else:
        value = gram_cka(store.read(ka, verify=False), store.read(kb, verify=False))
    seconds = time.perf_counter() - t0
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    hwm = status_mib("VmHWM")["VmHWM"]
    print(json.dumps({"mode": args.child, "value": value, "seconds": seconds, "rss_base_mib": base,
                      "peak_rss_mib": hwm, "peak_reset": reset, "delta_rss_mib": hwm - base,
                      "tracemalloc_peak_mib": traced_peak / 2**20}))


def bench_memory(sizes: tuple[int, ...], d: int, chunk_rows: int) -> list[dict[str, Any]]:
    from xlprobe.store import ActivationStore
    from xlprobe.types import StoreKey

    out = []
    with tempfile.TemporaryDirectory(prefix="xlprobe-bench-measures-") as tmp:
        for n in sizes:
            store = ActivationStore.open(Path(tmp) / f"store-{n}")
            X, Y = _data(n, d, seed=1)
            keys = [StoreKey(model=m, point="encoder.6", pooling="mean", data=f"bench{n}") for m in ("a", "b")]
            for key, A in zip(keys, (X, Y)):
                store.write(key, A)
            del X, Y
            modes = ["in_memory", "streaming"] + (["gram"] if n == min(sizes) else [])  # Gram: n^2 floats
            for mode in modes:
                cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--store", str(store.path),
                       "--key-a", json.dumps(keys[0].to_dict()), "--key-b", json.dumps(keys[1].to_dict()),
                       "--chunk-rows", str(chunk_rows)]
                print(f"  memory: {mode}, n = {n}, d = {d} ...", flush=True)
                proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if proc.returncode != 0:  # e.g. killed for memory: report it and go on
                    print(f"    failed with exit status {proc.returncode}: {proc.stderr[-2000:]}", flush=True)
                    continue
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                out.append({"n": n, "d": d, "shard_mib": n * d * 4 / 2**20, **row})
            store_dir = store.path
            del store
            import shutil

            shutil.rmtree(store_dir, ignore_errors=True)
    return out


# ------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes (about a minute)")
    p.add_argument("--rounds", type=int, help="timed rounds (default: the plan's)")
    p.add_argument("--textbook", action="store_true", help="also time the literal tr(KHLH) form once")
    p.add_argument("--skip", nargs="*", default=[], choices=["time", "memory", "probes", "paired"])
    p.add_argument("--json", type=Path, help="write the results as JSON to this path")
    p.add_argument("--child", choices=["in_memory", "streaming", "gram"], help=argparse.SUPPRESS)
    p.add_argument("--store", help=argparse.SUPPRESS)
    p.add_argument("--key-a", help=argparse.SUPPRESS)
    p.add_argument("--key-b", help=argparse.SUPPRESS)
    p.add_argument("--chunk-rows", type=int, default=4096, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child_memory(args)
        return 0

    from xlprobe.probes.cka import cka

    plan = dict(PLANS["quick" if args.quick else "full"])
    if args.rounds:
        plan["rounds"] = args.rounds
    start_load = os.getloadavg()
    results: dict[str, Any] = {"date": date.today().isoformat(), "plan": plan, "python": platform.python_version(),
                               "numpy": np.__version__, "cores": os.cpu_count(), "loadavg_start": start_load}
    print(f"measures benchmark (CKA, probes); {load_note(start_load)}", flush=True)
    t_start = time.perf_counter()
    if "time" not in args.skip:
        n, d = plan["n"], plan["d"]
        X, Y = _data(n, d)
        print(f"  timing linear CKA, n = {n}, d = {d}, {plan['rounds']} rounds ...", flush=True)
        results["time"] = {"n": n, "d": d, **time_pair(lambda: cka(X, Y), lambda: gram_cka(X, Y), plan["rounds"])}
        if args.textbook:
            print("  timing the literal tr(K H L H) form once ...", flush=True)
            t0 = time.perf_counter()
            v = textbook_cka(X, Y)
            results["time"]["textbook_s"] = time.perf_counter() - t0
            results["time"]["textbook_abs_diff"] = abs(v - results["time"]["value_fast"])
        del X, Y
    if "probes" not in args.skip:
        results["probes"] = bench_probes(plan["probe"])
    if "paired" not in args.skip:
        results["paired"] = bench_paired(plan["probe"])
    if "memory" not in args.skip:
        results["memory"] = bench_memory(plan["mem_n"], plan["d"], plan["chunk_rows"])
    results["loadavg_end"] = os.getloadavg()
    results["seconds"] = time.perf_counter() - t_start
    report(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, default=float) + "\n")
    return 0


def report(r: dict[str, Any]) -> None:
    print()
    if "time" in r:
        t = r["time"]
        print(f"linear CKA, n = {t['n']}, d = {t['d']} (float32 in, float64 work)")
        print(f"  xlprobe cka (feature space, d x d): median {statistics.median(t['fast_s']):7.2f} s   "
              f"rounds {', '.join(f'{s:.2f}' for s in t['fast_s'])}")
        print(f"  numpy n x n Gram, centred by means:  median {statistics.median(t['slow_s']):7.2f} s   "
              f"rounds {', '.join(f'{s:.2f}' for s in t['slow_s'])}")
        print(f"  ratio Gram / feature (median of per-round ratios): {t['ratio_median']:.1f}x   "
              f"(rounds {', '.join(f'{x:.1f}' for x in t['ratios'])}); |difference in value| {t['abs_diff']:.1e}")
        if "textbook_s" in t:
            print(f"  literal tr(K H L H), once: {t['textbook_s']:.1f} s "
                  f"({t['textbook_s'] / statistics.median(t['fast_s']):.0f}x the feature form); "
                  f"|difference| {t['textbook_abs_diff']:.1e}")
    if "probes" in r:
        q = r["probes"]
        print(f"linear probes over {q['layers']} layers (n = {q['n_train']} train / {q['n_test']} test, d = {q['d']}, "
              f"{q['langs']} classes, C = 1)")
        print(f"  xlprobe LinearProbe (L-BFGS, float32):       median {statistics.median(q['fast_s']):7.2f} s   "
              f"rounds {', '.join(f'{s:.2f}' for s in q['fast_s'])}")
        print(f"  sklearn StandardScaler + LogisticRegression: median {statistics.median(q['slow_s']):7.2f} s   "
              f"rounds {', '.join(f'{s:.2f}' for s in q['slow_s'])}")
        print(f"  ratio sklearn / xlprobe: {q['ratio_median']:.2f}x (goal >= 1); test accuracy per layer xlprobe "
              f"{', '.join(f'{a:.3f}' for a in q['acc_xlprobe'])}; sklearn {', '.join(f'{a:.3f}' for a in q['acc_sklearn'])}; "
              f"largest difference {q['max_abs_acc_diff_points']:.2f} points (goal <= 0.5)")
        ref = q["max_abs_diff_vs_reference_points"]
        print(f"  against the optimum (scikit-learn at tol 1e-9): xlprobe off by at most {ref['xlprobe']:.2f} points, "
              f"scikit-learn (default tol 1e-4) by {ref['sklearn']:.2f}")
    if "paired" in r:
        q = r["paired"]
        print(f"paired comparisons of {q['checkpoints']} checkpoints x {q['layers']} layers x {q['items']} items "
              f"(d = {q['d']}; probe, kNN, retrieval; 1,000 bootstrap draws, 10,000 sign flips): {q['rows']} rows")
        print(f"  probe fits (5 folds, task only): {q['probe_fits_s']:.2f} s; per-item kNN + retrieval scores: "
              f"{q['item_scores_s']:.2f} s; paired statistics: {q['paired_stats_s']:.2f} s "
              f"({q['stats_over_fits']:.2f}x the probe fits; goal: well below 1)")
    if "memory" in r:
        print("peak memory of one CKA call from an ActivationStore (fresh process each; MiB above the RSS after imports)")
        print(f"  {'n':>7} {'d':>5} {'2 shards':>9} {'mode':>10} {'peak RSS':>9} {'tracemalloc':>12} {'seconds':>8}  value")
        for m in r["memory"]:
            print(f"  {m['n']:>7} {m['d']:>5} {2 * m['shard_mib']:>9.0f} {m['mode']:>10} {m['delta_rss_mib']:>9.0f} "
                  f"{m['tracemalloc_peak_mib']:>12.0f} {m['seconds']:>8.2f}  {m['value']:.12f}")
        by = {(m["n"], m["mode"]): m for m in r["memory"]}
        for n in sorted({m["n"] for m in r["memory"]}):
            if (n, "in_memory") in by and (n, "streaming") in by:
                a, b = by[n, "in_memory"], by[n, "streaming"]
                print(f"  n = {n}: streaming uses {a['delta_rss_mib'] / max(b['delta_rss_mib'], 1e-9):.1f}x less peak "
                      f"RSS than in-memory; |difference in value| {abs(a['value'] - b['value']):.1e}")
    print(f"{load_note(r['loadavg_end'])} (at the end; {r['seconds']:.0f} s in all)")


if __name__ == "__main__":
    sys.exit(main())
