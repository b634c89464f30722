#!/usr/bin/env python
"""Weights and attribution benchmarks: compare_weights beside a plain svdvals loop; path attribution per step.

Run by hand (not part of the test suite)::

    python benchmarks/attribution.py            # mBART-large-50's architecture (611M parameters, random weights)
    python benchmarks/attribution.py --quick    # a 6-layer d 512 MBart (about a minute)

1. ``compare_weights`` (every measure of every tensor: three spectra and two top-k bases per matrix,
   from one Gram eigendecomposition each) against what a user would write for the spectra alone: a loop
   of ``torch.linalg.svdvals`` over ``named_parameters`` of both models and their difference. One run
   each (each is minutes at full size), wall time and the largest relative difference of the singular
   values they share.
2. ``ParameterPathAttribution`` on the shipped toy family (lm -> mt, the en->fr loss on 24 held-out
   verses): seconds per quadrature step, and the completeness error against the number of steps.
3. The same at 16 nodes, the Python loop (``alpha_batch=1``) against vmap over 4, 8 and 16 nodes at a
   time: paired ABBA rounds (harness.time_rounds), seconds per step (a call's time over its 16 nodes,
   the two end evaluations included), and the rows' largest difference from the loop's.
4. The same on the tests' tiny MBart (d 32, two sentences), where per-node overhead dominates.

Results (results/attribution-full-2026-11-28.json, 1 thread, 2 cores under load 2-6.7): the vmap path is
slower than the loop on this CPU, paired median time / loop 1.40 / 1.32 / 1.80 at alpha_batch 4 / 8 / 16
(loop 0.80 s per step at its fastest), rows equal to 1.6e-7 of the largest, completeness error 0.079 %;
on the tests' tiny MBart (110k parameters, part 4) it is faster: 0.72 / 0.57 / 0.55 (1.38x / 1.76x / 1.82x).
Full size (611M parameters, one run each, not paired, load 5.1): compare_weights 238.0 s for every measure
against 360.0 s for the svdvals loop of the spectra alone (1.51x), singular values agree to 5.4e-15;
peak RSS 13.4 GB (two earlier attempts were OOM-killed beside another 17-24 GB process).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    RESULTS,
    code_state,
    import_torch,
    load_note,
    machine_facts,
    mbart_model,
    n_params,
    summarize,
    time_rounds,
)

SIZES = {
    "full": dict(vocab_size=250054, d_model=1024, encoder_layers=12, decoder_layers=12, encoder_attention_heads=16,
                 decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096, max_position_embeddings=1024),
    "quick": dict(vocab_size=32000, d_model=512, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8,
                  decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048, max_position_embeddings=512),
}


def svdvals_loop(model_a: Any, model_b: Any) -> dict[str, Any]:
    """Singular values of A, B and B - A for every matrix, by torch.linalg.svdvals (the plain baseline)."""
    import torch

    pb = dict(model_b.named_parameters())
    out = {}
    with torch.no_grad():
        for name, pa in model_a.named_parameters():
            if pa.ndim == 2:
                A, B = pa.double(), pb[name].double()
                out[name] = [torch.linalg.svdvals(M).numpy() for M in (A, B, B - A)]
    return out


def bench_weights(size: str) -> dict[str, Any]:
    """compare_weights against the svdvals loop on two random models of one architecture."""
    from xlprobe.probes.weights import compare_weights, weight_spectra

    a, b = mbart_model(SIZES[size], seed=0), mbart_model(SIZES[size], seed=1)
    print(f"  compare_weights on {n_params(a) / 1e6:.0f}M parameters ...", flush=True)
    t0 = time.perf_counter()
    rows = compare_weights(a, b)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    loop = svdvals_loop(a, b)
    t_loop = time.perf_counter() - t0
    name = "model.encoder.layers.0.fc1.weight"
    ours = weight_spectra(a, b, params=[name])
    diff = max(float(np.max(np.abs(ours[ours.which == w].sigma.to_numpy() - ref) / ref.max()))
               for w, ref in zip(("a", "b", "delta"), loop[name]))
    return {"params_m": n_params(a) / 1e6, "rows": len(rows), "compare_weights_s": t_ours, "svdvals_loop_s": t_loop,
            "ratio_loop_over_ours": t_loop / t_ours, "max_rel_sigma_diff_fc1": diff}


def toy_batch() -> tuple[Any, Any, Any]:
    """The shipped lm and mt, and the en->fr loss batch (24 Ruth verses, padded labels ignored)."""
    from xlprobe.tasks import load_data
    from xlprobe.toy import load

    lm, tok = load("lm")
    mt, _ = load("mt")
    en = load_data("bible:en?books=Ruth", limit=24, seed=0)
    fr = {r.group: r.text for r in load_data("bible:fr?books=Ruth", limit=24, seed=0)}
    pairs = [(r.text, fr[r.group]) for r in en if r.group in fr]
    tok.src_lang, tok.tgt_lang = "en_XX", "fr_XX"
    enc = tok([p[0] for p in pairs], text_target=[p[1] for p in pairs], return_tensors="pt", padding=True)
    enc["labels"][enc["labels"] == tok.pad_token_id] = -100
    return lm, mt, enc


def bench_attribution() -> dict[str, Any]:
    """Seconds per step and completeness error against steps, lm -> mt on the toy's en->fr loss."""
    from xlprobe.probes.attribution import ParameterPathAttribution

    lm, mt, enc = toy_batch()
    n_pairs = len(enc["input_ids"])
    out = []
    for steps in (2, 4, 8, 16, 32):
        t0 = time.perf_counter()
        rows, delta = ParameterPathAttribution(lambda m: m(**enc).loss).attribute(lm, mt, n_steps=steps)
        seconds = time.perf_counter() - t0
        change = float(rows.metric_b.iloc[0] - rows.metric_a.iloc[0])
        out.append({"n_steps": steps, "seconds": seconds, "seconds_per_step": seconds / steps, "delta": delta,
                    "delta_over_change": delta / abs(change), "change": change})
        print(f"  {steps:>3} steps: {seconds:6.1f} s, completeness error {delta:.2e} ({delta / abs(change):.2%})",
              flush=True)
    return {"pairs": n_pairs, "runs": out}


def bench_alpha_batch(batches: tuple[int, ...] = (4, 8, 16), n_steps: int = 16, rounds: int = 3) -> dict[str, Any]:
    """The loop against vmap over k nodes at a time: paired seconds per step, and the rows' agreement."""
    import os
    import warnings

    from xlprobe.probes.attribution import ParameterPathAttribution

    lm, mt, enc = toy_batch()
    attribution = ParameterPathAttribution(lambda m: m(**enc).loss)
    results: dict[int, Any] = {}

    def run(k: int) -> Any:
        results[k] = attribution.attribute(lm, mt, groups="param", n_steps=n_steps, alpha_batch=k)

    methods = {f"k{k}": (lambda k=k: run(k)) for k in (1, *batches)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for fn in methods.values():  # the warm-up, and the rows compared below
            fn()
        first = dict(results)
        load_before = os.getloadavg()
        times, ratios = time_rounds(methods, {f"k{k}": "k1" for k in batches}, rounds=rounds, warmup=0)
    loop_rows, loop_delta = first[1]
    scale = float(loop_rows.value.abs().max())
    change = float(loop_rows.metric_b.iloc[0] - loop_rows.metric_a.iloc[0])
    out: dict[str, Any] = {"n_steps": n_steps, "rounds": rounds, "params_m": n_params(lm) / 1e6,
                           "load_before": load_before, "load_after": os.getloadavg(),
                           "seconds_per_step": {name: [t / n_steps for t in ts] for name, ts in times.items()},
                           "delta": loop_delta, "delta_over_change": loop_delta / abs(change), "change": change}
    per_step_loop = min(times["k1"]) / n_steps
    print(f"  loop: {per_step_loop:.3f} s per step (fastest of {len(times['k1'])}), completeness error "
          f"{loop_delta:.2e} ({loop_delta / abs(change):.3%})", flush=True)
    out["batches"] = []
    for k in batches:
        rows, delta = first[k]
        same_groups = list(rows.group) == list(loop_rows.group)
        max_diff = float((rows.value.to_numpy() - loop_rows.value.to_numpy()).__abs__().max()) / scale
        summary = summarize(ratios[f"k{k}"], times, f"k{k}", "k1")
        entry = {"alpha_batch": k, "seconds_per_step_min": min(times[f"k{k}"]) / n_steps,
                 "time_over_loop": summary, "speedup_median": 1.0 / summary["median"], "same_groups": same_groups,
                 "max_abs_diff_over_max_value": max_diff, "delta": delta, "delta_diff": abs(delta - loop_delta),
                 "delta_over_change": delta / abs(change)}
        out["batches"].append(entry)
        print(f"  alpha_batch {k:>2}: {entry['seconds_per_step_min']:.3f} s per step, time / loop median "
              f"{summary['median']:.2f} (q25 {summary['q25']:.2f}, q75 {summary['q75']:.2f}) = speed-up "
              f"{entry['speedup_median']:.2f}x; rows differ from the loop's by {max_diff:.1e} of the largest, "
              f"delta {delta:.2e}", flush=True)
        if not same_groups or max_diff > 1e-3:
            raise RuntimeError(f"alpha_batch {k} does not reproduce the loop's rows ({max_diff:.1e})")
    print(f"  {load_note(out['load_after'])}", flush=True)
    return out


def bench_alpha_batch_tiny(batches: tuple[int, ...] = (4, 8, 16), n_steps: int = 16, rounds: int = 6
                           ) -> dict[str, Any]:
    """The loop against vmap where per-node overhead dominates: the tests' tiny MBart (d 32, 2 sentences)."""
    import statistics
    import warnings

    from xlprobe.probes.attribution import ParameterPathAttribution
    from xlprobe.tiny import build

    model, tok = build("mbart", seed=0)
    model.eval()
    other = mbart_like_moved(model)
    enc = tok(["In the beginning was the Word.", "Au commencement était la Parole."], return_tensors="pt",
              padding=True)
    attribution = ParameterPathAttribution(lambda m: m(**enc, labels=enc["input_ids"]).loss)
    results: dict[int, Any] = {}

    def run(k: int) -> None:
        results[k] = attribution.attribute(model, other, groups="param", n_steps=n_steps, alpha_batch=k)

    methods = {f"k{k}": (lambda k=k: run(k)) for k in (1, *batches)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        times, ratios = time_rounds(methods, {f"k{k}": "k1" for k in batches}, rounds=rounds)
    loop_rows, loop_delta = results[1]
    scale = float(loop_rows.value.abs().max())
    out: dict[str, Any] = {"params": n_params(model), "n_steps": n_steps, "rounds": rounds, "delta": loop_delta,
                           "seconds_per_step_median": {n: statistics.median(t) / n_steps for n, t in times.items()},
                           "batches": []}
    for k in batches:
        rows, delta = results[k]
        diff = float(np.abs(rows.value.to_numpy() - loop_rows.value.to_numpy()).max()) / scale
        summary = summarize(ratios[f"k{k}"], times, f"k{k}", "k1")
        out["batches"].append({"alpha_batch": k, "time_over_loop": summary, "speedup_median": 1 / summary["median"],
                               "max_abs_diff_over_max_value": diff, "delta": delta})
        print(f"  tiny MBart ({n_params(model)} parameters), alpha_batch {k:>2}: time / loop median "
              f"{summary['median']:.2f} = speed-up {1 / summary['median']:.2f}x, rows differ by {diff:.1e}",
              flush=True)
    return out


def mbart_like_moved(model: Any) -> Any:
    """A copy of the tiny model with two matrices and the embeddings moved (as in the tests)."""
    import copy

    import torch

    other = copy.deepcopy(model)
    params = dict(other.named_parameters())
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, scale in (("model.encoder.layers.0.fc1.weight", 0.5), ("model.decoder.layers.1.fc2.weight", 0.5),
                            ("model.shared.weight", 0.05)):
            params[name].add_(scale * torch.randn(params[name].shape, generator=g))
    return other


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip", nargs="*", default=[], choices=["weights", "attribution", "alpha_batch", "alpha_batch_tiny"])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    import_torch(args.threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)  # numpy's BLAS too: spinning threads on shared cores distort the ratio
    size = "quick" if args.quick else "full"
    results: dict[str, Any] = {"machine": machine_facts(args.threads), "code": code_state(), "size": size}
    if "weights" not in args.skip:
        results["weights"] = bench_weights(size)
        w = results["weights"]
        print(f"compare_weights: {w['compare_weights_s']:.1f} s for every measure of {w['params_m']:.0f}M "
              f"parameters; svdvals loop (spectra only): {w['svdvals_loop_s']:.1f} s "
              f"({w['ratio_loop_over_ours']:.2f}x); singular values agree to {w['max_rel_sigma_diff_fc1']:.1e}")
    if "attribution" not in args.skip:
        results["attribution"] = bench_attribution()
    if "alpha_batch" not in args.skip:
        results["alpha_batch"] = bench_alpha_batch()
    if "alpha_batch_tiny" not in args.skip:
        results["alpha_batch_tiny"] = bench_alpha_batch_tiny()
    out = args.out or RESULTS / f"attribution-{size}-{time.strftime('%Y-%m-%d')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=float) + "\n")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
