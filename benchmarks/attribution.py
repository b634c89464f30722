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
from harness import RESULTS, code_state, import_torch, machine_facts, mbart_model, n_params  # noqa: E402

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


def bench_attribution() -> dict[str, Any]:
    """Seconds per step and completeness error against steps, lm -> mt on the toy's en->fr loss."""
    from xlprobe.probes.attribution import ParameterPathAttribution
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
    return {"pairs": len(pairs), "runs": out}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip", nargs="*", default=[], choices=["weights", "attribution"])
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
    out = args.out or RESULTS / f"attribution-{size}-{time.strftime('%Y-%m-%d')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=float) + "\n")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
