#!/usr/bin/env python
"""Capture memory benchmark: peak memory of ``extract(..., store=...)`` at two data sizes, and the in-memory way.

Run by hand (not part of the test suite)::

    python benchmarks/capture_memory.py            # 2k vs 20k sentences, allocator and --max-tokens runs
    python benchmarks/capture_memory.py --quick    # 100 vs 1k sentences (about a minute)

``extract(..., layers="all", store=ActivationStore)`` on a small MBart (d_model 256, 4 + 4 layers) over
N real verses (4 languages), each N in a fresh subprocess; the peak is the process's high-water mark
after setup (``/proc/self/clear_refs`` resets it after model load, data load and a warm-up batch), minus
the RSS at that point. ``ru_maxrss`` minus the RSS after model load is printed as well, and so is RSS
over each run (flat, or creeping with the number of batches). Beside it, the in-memory alternative: HF
``output_hidden_states`` keeping every layer's token-level states, for the small N only. The full run
repeats the two store runs with glibc's mmap threshold fixed (``MALLOC_MMAP_THRESHOLD_``): the
difference is freed memory the allocator keeps, not data xlprobe holds.

The subprocesses start before this process imports torch (see :func:`bench_memory`). Results are
printed as a table and written to ``benchmarks/results/capture-memory-<date>.json``. The time benchmark
is ``capture_time.py``; the shared harness is ``harness.py``.
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

from harness import (
    RESULTS,
    code_state,
    import_torch,
    machine_facts,
    maxrss_mib,
    mbart_model,
    n_params,
    print_machine,
    reset_peak,
    row,
    rss_mib,
    run_script,
    status_mib,
    write_json,
)

torch: Any = None  # imported by main() only after the memory subprocesses have run (see bench_memory)

GOAL_MEMORY = 1.2
LANG_TRANSLATIONS = ("k", "l", "e", "v")  # en, fr, de, es: licence "yes"
MBART_MEMORY = dict(d_model=256, encoder_layers=4, decoder_layers=4, encoder_attention_heads=4,
                    decoder_attention_heads=4, encoder_ffn_dim=1024, decoder_ffn_dim=1024, scale_embedding=True)

PLANS = {
    "full": dict(small=2000, large=20000, batch=32, max_tokens=3200),
    "quick": dict(small=100, large=1000, batch=32, allocator_check=False),
}


def prepare_memory(plan: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Save the memory benchmark's model, tokenizer and the two record sets for the subprocesses."""
    from xlprobe.tasks.bible import load_bible
    from xlprobe.tiny import build_tokenizer
    from xlprobe.types import Record

    tok = build_tokenizer("mbart", vocab_size=4000)
    model = mbart_model(MBART_MEMORY, vocab_size=len(tok))
    model_dir = workdir / "model"
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    per_lang = plan["large"] // len(LANG_TRANSLATIONS)
    data = load_bible(translations=list(LANG_TRANSLATIONS), limit=per_lang, seed=0)
    groups = list(dict.fromkeys(r.group for r in data))
    files = {}
    for name in ("small", "large"):
        keep = set(groups[:plan[name] // len(LANG_TRANSLATIONS)])
        recs = [r for r in data if r.group in keep]
        path = workdir / f"records-{name}.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for r in recs:  # no target text: the decoder reads its start prompt (</s> [lang code])
                d = Record(r.id, r.text, r.lang, r.group, dict(r.labels), None, r.lang).to_dict()
                f.write(json.dumps(d, ensure_ascii=False) + "\n")
        files[name] = (str(path), len(recs))
    return {"model_dir": str(model_dir), "files": files, "params": n_params(model),
            "model": f"MBartForConditionalGeneration d_model 256, 4+4 layers, FFN 1024, vocab {len(tok)}, random",
            "langs": "en fr de es (k l e v)"}


def memory_child(args: argparse.Namespace) -> None:
    """One memory measurement in this (fresh) process; prints a JSON line."""
    global torch
    torch = import_torch(args.threads)
    from transformers import AutoTokenizer, MBartForConditionalGeneration

    from xlprobe.hooks.extract import extract
    from xlprobe.types import Dataset, Record

    warnings.filterwarnings("ignore")
    tok = AutoTokenizer.from_pretrained(args.model_dir)
    model = MBartForConditionalGeneration.from_pretrained(args.model_dir).eval()
    gc.collect()
    rss_load = rss_mib()
    with open(args.records, encoding="utf-8") as f:
        data = Dataset("bible-bench", tuple(Record.from_dict(json.loads(line)) for line in f))
    warm = data.subset(list(range(8)))
    extract(model, tok, warm, "all", batch_size=8)  # one-time allocations (oneDNN, allocator pools)
    if args.mode == "hf":
        _hf_keep_all(model, tok, warm, 8, args.max_length)
    gc.collect()
    rss_base = rss_mib()
    maxrss_before = maxrss_mib()
    reset = reset_peak()
    samples: list[tuple[float, float]] = []
    done = threading.Event()

    def sample() -> None:  # RSS over the run: flat (bounded) or creeping (something grows with n)
        while not done.wait(0.25):
            samples.append((time.perf_counter() - t0, rss_mib() - rss_base))

    t0 = time.perf_counter()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    info: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        if args.mode == "store":
            from xlprobe.store import ActivationStore

            store = ActivationStore.open(Path(tmp) / "store")
            keys = extract(model, tok, data, "all", pooling="mean", batch_size=args.batch, store=store,
                           max_length=args.max_length, max_tokens=args.max_tokens)
            info["shards"] = len(keys)
            info["store_mib"] = sum(f.stat().st_size for f in (Path(tmp) / "store").rglob("*") if f.is_file()) / 2**20
        else:
            held, n_tokens = _hf_keep_all(model, tok, data, args.batch, args.max_length)
            info["held_mib"] = held / 2**20
            info["n_tokens"] = n_tokens
        seconds = time.perf_counter() - t0
        done.set()
        sampler.join()
        peak = status_mib("VmHWM")["VmHWM"]
        maxrss = maxrss_mib()
    # RSS above the baseline once 25 / 50 / 75 / 100 % of the run's time had passed (largest sample so far)
    profile = []
    for q in (0.25, 0.5, 0.75, 1.0):
        seen = [d for t, d in samples if t <= q * seconds]
        profile.append(round(max(seen), 1) if seen else None)
    info["rss_profile_mib"] = profile
    # after the measurement: the longest text sets the largest batch's working set
    lengths = {}
    for r in data:
        lengths.setdefault(r.lang, []).append(r.text)
    longest = 0
    for lang, texts in lengths.items():
        tok.src_lang = {"en": "en_XX", "fr": "fr_XX", "de": "de_DE", "es": "es_XX"}.get(lang, tok.src_lang)
        longest = max(longest, max(len(a) for a in tok(texts)["input_ids"]))
    info["longest_tokens"] = min(longest, args.max_length)
    print(json.dumps({
        "mode": args.mode, "n": len(data), "seconds": seconds, "rss_after_load_mib": rss_load,
        "rss_baseline_mib": rss_base, "peak_rss_mib": peak, "peak_reset": reset,
        "ru_maxrss_before_mib": maxrss_before, "ru_maxrss_mib": maxrss,
        "delta_mib": peak - rss_base if reset else maxrss - rss_base,
        "delta_ru_maxrss_vs_load_mib": maxrss - rss_load, **info,
    }))


def _hf_keep_all(model: Any, tok: Any, data: Any, batch: int, max_length: int) -> tuple[int, int]:
    """The in-memory alternative: keep every layer's token-level states (output_hidden_states), per batch.

    Same request as the store run: source ``[code] text </s>``, decoder on its start prompt
    ``</s> [code]``; batches length-sorted (little padding); the logits are dropped at once.
    """
    from xlprobe.hooks.families import family_for
    from xlprobe.hooks.langs import model_code

    fam = family_for("mbart")
    by_lang: dict[str, list[int]] = {}
    for i, r in enumerate(data):
        by_lang.setdefault(r.lang, []).append(i)
    kept: list[tuple[torch.Tensor, ...]] = []
    held = n_tokens = 0
    with torch.inference_mode():
        for lang, idx in by_lang.items():
            code = model_code(tok, fam, lang)
            tok.src_lang = code
            ids = tok([data[i].text for i in idx], truncation=True, max_length=max_length)["input_ids"]
            order = sorted(range(len(ids)), key=lambda j: -len(ids[j]))
            for s in range(0, len(order), batch):
                enc = tok.pad({"input_ids": [ids[j] for j in order[s:s + batch]]}, return_tensors="pt")
                b = enc["input_ids"].shape[0]
                prompt = torch.tensor([[2, tok.convert_tokens_to_ids(code)]] * b)
                out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                            decoder_input_ids=prompt, output_hidden_states=True)
                states = tuple(out.encoder_hidden_states) + tuple(out.decoder_hidden_states)
                del out
                kept.append(states)
                held += sum(h.numel() * h.element_size() for h in states)
                n_tokens += int(enc["attention_mask"].sum())
    return held, n_tokens


def run_memory_child(mode: str, records: str, prep: dict[str, Any], plan: dict[str, Any], threads: int,
                     workdir: Path, env: dict[str, str] | None = None, max_tokens: int | None = None) -> dict[str, Any]:
    extra = ["--max-tokens", str(max_tokens)] if max_tokens else []
    return _child(["--child-memory", mode, "--records", records, "--model-dir", prep["model_dir"],
                   "--batch", str(plan["batch"]), "--threads", str(threads), "--workdir", str(workdir),
                   "--max-length", str(plan.get("max_length") or 256), *extra], env)


#: glibc raises its mmap threshold after each large free, so later large tensors come from the heap, whose
#: freed pages it keeps: RSS then creeps with the number of batches of varied shapes. A fixed threshold turns
#: that off; the runs with it separate what xlprobe holds from what the allocator keeps.
FIXED_MMAP = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def _child(args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run this script with ``args`` in a fresh process; return the JSON of its last output line."""
    return run_script(Path(__file__).resolve(), args, env)


def bench_memory(plan: dict[str, Any], threads: int) -> dict[str, Any]:
    """Peak memory of store runs at two sizes and of the in-memory alternative, each in a fresh process.

    Called before this process imports torch: ``ru_maxrss`` of a child starts from its parent's RSS at
    fork time (Linux keeps it across exec), so the parent must be small for that number to mean anything.
    """
    workdir = Path(tempfile.mkdtemp(prefix="xlprobe-bench-"))
    try:
        prep = _child(["--child-prepare", str(workdir), "--small", str(plan["small"]), "--large", str(plan["large"]),
                       "--threads", str(threads)])
        runs = {}
        for name in ("small", "large"):
            path, n = prep["files"][name]
            print(f"  memory: store, {n} sentences ...", flush=True)
            runs[f"store_{name}"] = run_memory_child("store", path, prep, plan, threads, workdir)
        path, n = prep["files"]["small"]
        print(f"  memory: HF output_hidden_states kept in memory, {n} sentences ...", flush=True)
        runs["hf_small"] = run_memory_child("hf", path, prep, plan, threads, workdir)
        if plan.get("allocator_check", True):
            for name in ("small", "large"):
                path, n = prep["files"][name]
                print(f"  memory: store, {n} sentences, glibc mmap threshold fixed ...", flush=True)
                runs[f"store_{name}_fixed_mmap"] = run_memory_child("store", path, prep, plan, threads, workdir,
                                                                    FIXED_MMAP)
        if plan.get("max_tokens"):
            for name in ("small", "large"):
                path, n = prep["files"][name]
                print(f"  memory: store, {n} sentences, max_tokens {plan['max_tokens']}, mmap threshold fixed ...",
                      flush=True)
                runs[f"store_{name}_max_tokens"] = run_memory_child("store", path, prep, plan, threads, workdir,
                                                                    FIXED_MMAP, max_tokens=plan["max_tokens"])
    finally:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    small, large = runs["store_small"], runs["store_large"]
    ratio = large["delta_mib"] / max(small["delta_mib"], 1e-9)
    hf = runs["hf_small"]
    fixed = {}
    if "store_large_fixed_mmap" in runs:
        a, b = runs["store_small_fixed_mmap"], runs["store_large_fixed_mmap"]
        fixed = {"ratio_large_vs_small_fixed_mmap": b["delta_mib"] / max(a["delta_mib"], 1e-9),
                 "fixed_mmap_env": FIXED_MMAP}
    if "store_large_max_tokens" in runs:
        a, b = runs["store_small_max_tokens"], runs["store_large_max_tokens"]
        fixed["ratio_large_vs_small_max_tokens"] = b["delta_mib"] / max(a["delta_mib"], 1e-9)
        fixed["max_tokens"] = plan["max_tokens"]
    return {
        "model": prep["model"], "params": prep["params"], "langs": prep["langs"], "batch": plan["batch"],
        "layers": "all: encoder + decoder, embeddings, 4 blocks and final norm each side (12 points), mean "
                  "pooling; the decoder reads its start prompt (</s> [lang code])",
        "max_length": plan.get("max_length") or "extract default (256)",
        "peak_definition": "VmHWM after a reset (clear_refs 5) once model, data and a warm-up batch are loaded, "
                           "minus VmRSS at that point",
        "runs": runs, "ratio_large_vs_small": ratio, "goal": GOAL_MEMORY, "met": ratio <= GOAL_MEMORY,
        "ratio_ru_maxrss_vs_load": large["delta_ru_maxrss_vs_load_mib"] / max(small["delta_ru_maxrss_vs_load_mib"], 1e-9),
        "hf_small_vs_store_small": hf["delta_mib"] / max(small["delta_mib"], 1e-9),
        "hf_extrapolated_large_mib": hf["delta_mib"] * large["n"] / hf["n"], **fixed,
    }




# ------------------------------------------------------------------------------------------------ report


def report(results: dict[str, Any]) -> None:
    print_machine(results)
    mem = results["memory"]
    print()
    print(f"memory: {mem['model']} ({mem['params'] / 1e6:.1f}M params), layers {mem['layers']}; batch {mem['batch']}")
    print(f"  peak = {mem['peak_definition']}")
    widths = (26, 6, 9, 11, 12, 10, 8)
    print(row(("run", "n", "seconds", "peak-base", "ru_max-load", "base RSS", "longest"), widths))
    for n, run in mem["runs"].items():
        print(row((n, str(run["n"]), f"{run['seconds']:.1f}", f"{run['delta_mib']:.0f} MiB",
                    f"{run['delta_ru_maxrss_vs_load_mib']:.0f} MiB", f"{run['rss_baseline_mib']:.0f} MiB",
                    str(run.get("longest_tokens", ""))), widths))
    print(f"  ratio store large/small: {mem['ratio_large_vs_small']:.3f} (goal <= {GOAL_MEMORY}: "
          f"{'yes' if mem['met'] else 'NO'}); by ru_maxrss - RSS after load: {mem['ratio_ru_maxrss_vs_load']:.3f}")
    if "ratio_large_vs_small_fixed_mmap" in mem:
        env = " ".join(f"{k}={v}" for k, v in mem["fixed_mmap_env"].items())
        print(f"  with the glibc mmap threshold fixed ({env}): ratio {mem['ratio_large_vs_small_fixed_mmap']:.3f}; "
              "what the default runs hold beyond these is freed memory that glibc keeps")
    if "ratio_large_vs_small_max_tokens" in mem:
        print(f"  with max_tokens={mem['max_tokens']} and the mmap threshold fixed (what `xlprobe capture "
              f"--max-tokens` does): ratio "
              f"{mem['ratio_large_vs_small_max_tokens']:.3f}")
    print("  RSS above base at 25/50/75/100% of each run: "
          + "; ".join(f"{n} {run.get('rss_profile_mib')}" for n, run in mem["runs"].items()))
    print(f"  HF output_hidden_states kept in memory, small n: {mem['runs']['hf_small']['delta_mib']:.0f} MiB "
          f"({mem['hf_small_vs_store_small']:.1f}x the store run); linear extrapolation to "
          f"{mem['runs']['store_large']['n']}: {mem['hf_extrapolated_large_mib'] / 1024:.1f} GiB")
    for note in results["notes"]:
        print("note:", note)
    print(f"total {results['seconds']:.0f} s; results written to {results['path']}")


# ------------------------------------------------------------------------------------------------ main


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="100 vs 1k sentences, no allocator runs (about a minute)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch intra-op threads")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON path (default benchmarks/results/capture-memory-DATE[-quick].json)")
    ap.add_argument("--child-memory", choices=["store", "hf"], help=argparse.SUPPRESS)
    ap.add_argument("--records", help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=32, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    ap.add_argument("--max-length", type=int, default=256, help=argparse.SUPPRESS)
    ap.add_argument("--max-tokens", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-prepare", help=argparse.SUPPRESS)
    ap.add_argument("--small", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--large", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    if args.child_memory:
        args.mode = args.child_memory
        memory_child(args)
        return 0
    if args.child_prepare:
        import_torch(args.threads)
        print(json.dumps(prepare_memory({"small": args.small, "large": args.large}, Path(args.child_prepare))))
        return 0

    logging.disable(logging.WARNING)
    t_start = time.perf_counter()
    kind = "quick" if args.quick else "full"
    load0 = os.getloadavg()
    print(f"capture memory benchmark ({kind}); load average {tuple(round(x, 2) for x in load0)}; torch threads "
          f"{args.threads} of {os.cpu_count()} cores", flush=True)
    results: dict[str, Any] = {"date": date.today().isoformat(), "plan": kind, "load_by_part": {},
                               "goals": {"memory_ratio": GOAL_MEMORY}}
    results["load_by_part"]["memory"] = os.getloadavg()
    results["memory"] = bench_memory(PLANS[kind], args.threads)  # first, while this process is small
    import_torch(args.threads)
    results["machine"] = machine_facts(args.threads)
    results["code"] = code_state()
    results["machine"]["loadavg_start"] = load0
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["notes"] = []
    results["seconds"] = time.perf_counter() - t_start
    write_json(results, args.out or RESULTS / f"capture-memory-{results['date']}{'-quick' if args.quick else ''}.json")
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
