#!/usr/bin/env python
"""Capture and measures on an accelerator: one command for a lent GPU, small sizes on a CPU.

    python benchmarks/gpu.py --device cuda          # mBART-large-50 size (random weights), fp32 + bf16
    python benchmarks/gpu.py --device cpu --quick   # a small MBart: what CI runs to keep this alive
    python benchmarks/gpu.py --store-only           # the store's side alone (a stand-in device), anywhere

For each dtype and batch size, on the same real verses (the shipped toy tokenizer's pieces, well inside the
250k vocabulary), rounds alternate (ABBA) between:

* ``bare encoder``: ``model.get_encoder()(**batch)`` under ``inference_mode`` / autocast, nothing kept;
* ``xlprobe encoder``: ``xlprobe.extract(model, tok, texts, "encoder.*", dtype=..., batch_size=...)``,
  tokenization, hooks, mean pooling of every encoder point and the copy to host included;
* ``bare full``: the whole seq2seq forward (decoder and LM head), what a user calling ``model(...)`` pays.

and reports sentences per second, the capture's overhead over the bare encoder (median of per-round ratios)
and the lead of an encoder-only capture over the full forward. Then the same capture written into an
activation store (every encoder point, chunks of an eighth of the texts, a fresh store each round), with the
store's writes and commits overlapped with the forward passes (the default) and serial, ABBA. Then CKA (debiased, linear) and a linear
probe fit on n x 1024 states, on device tensors against CPU numpy arrays, when xlprobe's measures accept
tensors. Results are printed and written to ``benchmarks/results/gpu-<device>-<date>.json``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import RESULTS, machine_facts, mbart_model, n_params, row, write_json  # noqa: E402

MBART_LARGE_50 = dict(vocab_size=250054, d_model=1024, encoder_layers=12, decoder_layers=12,
                      encoder_attention_heads=16, decoder_attention_heads=16, encoder_ffn_dim=4096,
                      decoder_ffn_dim=4096, scale_embedding=True)
MBART_SMALL = dict(vocab_size=8192, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                   decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, scale_embedding=True)


def resolve_device(name: str) -> Any:
    """cpu / cuda / cuda:N / auto -> a torch.device; a clear exit when CUDA is asked for and absent."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("benchmarks/gpu.py: --device cuda but torch sees no GPU (torch.cuda.is_available() is False); "
                 "use --device cpu --quick")
    return torch.device(name)


def sync(device: Any) -> None:
    """Wait for the device's queued work (timings on CUDA are otherwise the launch time)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


VERSES = Path(__file__).resolve().parent / "data" / "verses-en-fr.jsonl"


def verses(n: int) -> Any:
    """n real verses: English and French records of seeded parallel groups of Ruth, Jonah and John.

    Read from ``benchmarks/data/verses-en-fr.jsonl`` (King James 1611 and Louis Segond 1910, both public
    domain; what ``load_data("bible:en,fr?books=Ruth,Jonah,John")`` gives, tested), so the benchmark needs
    no corpus package and runs where only torch and transformers are installed (a lent GPU machine).
    """
    import json

    import numpy as np

    from xlprobe.types import Dataset, Record

    rows = [json.loads(line) for line in VERSES.read_text(encoding="utf-8").splitlines()]
    groups = list(dict.fromkeys(r["group"] for r in rows))
    keep = set(np.random.default_rng(0).permutation(groups)[:(n + 1) // 2].tolist())
    records = [Record(r["id"], r["text"], r["lang"], group=r["group"]) for r in rows if r["group"] in keep]
    return Dataset("bible:en,fr?books=Ruth,Jonah,John", tuple(records[:n]), {"file": VERSES.name})


def timed(fn: Any, device: Any) -> float:
    """Seconds of one call, the device synchronised before and after."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def bench_capture(model: Any, tok: Any, records: Any, device: Any, dtype: str, batch: int,
                  rounds: int) -> dict[str, Any]:
    """Sentences/s of the bare encoder, xlprobe's encoder capture and the full forward; paired ratios."""
    import torch

    from xlprobe.hooks import extract

    texts = [r.text for r in records]
    enc = tok(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    chunks = [{k: v[i:i + batch].to(device) for k, v in enc.items()} for i in range(0, len(texts), batch)]
    cast = dict(device_type=device.type, dtype=getattr(torch, dtype), enabled=dtype != "float32")

    def bare_encoder() -> None:
        with torch.inference_mode(), torch.autocast(**cast):
            for b in chunks:
                model.get_encoder()(input_ids=b["input_ids"], attention_mask=b["attention_mask"])

    def bare_full() -> None:
        with torch.inference_mode(), torch.autocast(**cast):
            for b in chunks:
                model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], decoder_input_ids=b["input_ids"])

    def xlprobe_encoder() -> None:
        extract(model, tok, records, "encoder.*", dtype=dtype, batch_size=batch, max_length=128)

    methods = {"bare encoder": bare_encoder, "xlprobe encoder": xlprobe_encoder, "bare full": bare_full}
    for fn in methods.values():
        fn()  # warm-up (kernels, allocator, autocast caches)
    times: dict[str, list[float]] = {k: [] for k in methods}
    for r in range(rounds):
        order = list(methods) if r % 2 == 0 else list(reversed(methods))
        for k in order:
            times[k].append(timed(methods[k], device))
    over = [x / b for x, b in zip(times["xlprobe encoder"], times["bare encoder"])]
    lead = [f / x for x, f in zip(times["xlprobe encoder"], times["bare full"])]
    return {"batch": batch, "dtype": dtype, "texts": len(texts),
            "sentences_per_s": {k: len(texts) / statistics.median(v) for k, v in times.items()},
            "capture_over_bare_encoder": statistics.median(over),
            "full_forward_over_capture": statistics.median(lead), "seconds": times}


def bench_store(model: Any, tok: Any, records: Any, device: Any, dtype: str, batch: int, rounds: int,
                where: Path) -> dict[str, Any]:
    """Sentences/s of a capture into a fresh store, writes overlapped with the forward vs serial."""
    import shutil

    from xlprobe.hooks.plan import plan_capture
    from xlprobe.hooks.runner import PlanRunner
    from xlprobe.hooks.writing import write_plan
    from xlprobe.store import ActivationStore

    chunk = max(batch, len(records) // 8)
    plan = plan_capture(model, tok, records, "encoder.*", dtype=dtype, batch_size=batch, max_length=128,
                        chunk_size=chunk)
    runner = PlanRunner(model, plan)
    model.eval()

    def capture(overlap: bool) -> None:
        shutil.rmtree(where, ignore_errors=True)
        write_plan(ActivationStore.open(where), model, tok, plan, runner, overlap=overlap)

    modes = {"overlapped": lambda: capture(True), "serial": lambda: capture(False)}
    for fn in modes.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in modes}
    for r in range(rounds):
        for k in (list(modes) if r % 2 == 0 else list(reversed(modes))):
            times[k].append(timed(modes[k], device))
    shutil.rmtree(where, ignore_errors=True)
    ratio = [s / o for s, o in zip(times["serial"], times["overlapped"])]
    return {"batch": batch, "dtype": dtype, "texts": len(records), "chunk": chunk, "points": len(plan.points),
            "sentences_per_s": {k: len(records) / statistics.median(v) for k, v in times.items()},
            "serial_over_overlapped": statistics.median(ratio), "seconds": times}


def bench_store_io(model: Any, tok: Any, records: Any, batch: int, ms: float, rounds: int,
                   where: Path) -> dict[str, Any]:
    """The store's side alone: a stand-in forward that waits ``ms`` per batch (as the host waits for a GPU)
    and returns random rows of the model's width for every encoder point; real writes, commits, checksums.
    Overlapped vs serial, ABBA: how much of the store's time the overlap hides at that device speed."""
    import shutil

    import numpy as np

    from xlprobe.hooks.plan import plan_capture
    from xlprobe.hooks.runner import PendingRows
    from xlprobe.hooks.writing import write_plan
    from xlprobe.store import ActivationStore

    plan = plan_capture(model, tok, records, "encoder.*", batch_size=batch, max_length=128,
                        chunk_size=max(batch, len(records) // 8))
    width = model.config.d_model
    rows = np.random.default_rng(0).normal(size=(batch, width)).astype(np.float32)

    class Device:
        """Waits like a host waiting on its GPU (sleep releases the GIL), then hands the batch's rows over."""

        def submit(self, idx: Any) -> PendingRows:
            time.sleep(ms / 1000)
            return PendingRows({p.name: rows[:len(idx)] + i for i, p in enumerate(plan.points)}, None, idx,
                               "float32")

        def __call__(self, idx: Any) -> dict[str, Any]:
            return self.submit(idx).result()

    def capture(overlap: bool) -> None:
        shutil.rmtree(where, ignore_errors=True)
        write_plan(ActivationStore.open(where), model, tok, plan, Device(), overlap=overlap)

    modes = {"overlapped": lambda: capture(True), "serial": lambda: capture(False)}
    times: dict[str, list[float]] = {k: [] for k in modes}
    for fn in modes.values():
        fn()
    for r in range(rounds):
        for k in (list(modes) if r % 2 == 0 else list(reversed(modes))):
            t0 = time.perf_counter()
            modes[k]()
            times[k].append(time.perf_counter() - t0)
    shutil.rmtree(where, ignore_errors=True)
    device_s = len(plan.batches()) * ms / 1000
    return {"batch": batch, "ms_per_batch": ms, "texts": len(records), "points": len(plan.points),
            "width": width, "device_seconds": device_s,
            "store_seconds_serial": statistics.median(times["serial"]) - device_s,
            "seconds": times, "serial_over_overlapped": statistics.median(
                [a / b for a, b in zip(times["serial"], times["overlapped"])])}


def bench_measures(device: Any, n: int, d: int, rounds: int) -> dict[str, Any]:
    """Debiased linear CKA and a linear probe fit: device tensors against CPU numpy, same data."""
    import numpy as np
    import torch

    from xlprobe.probes.cka import cka

    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, d)).astype(np.float32)
    Y = (X @ rng.normal(size=(d, d)).astype(np.float32) * 0.1 + rng.normal(size=(n, d)).astype(np.float32))
    out: dict[str, Any] = {"n": n, "d": d}
    Xt, Yt = torch.from_numpy(X).to(device), torch.from_numpy(Y).to(device)
    try:
        cka(Xt, Yt, debiased=True)
    except (TypeError, AttributeError, ValueError) as err:
        out["cka"] = f"xlprobe's cka does not take torch tensors here ({type(err).__name__}): not measured"
        return out
    cpu = [timed(lambda: cka(X, Y, debiased=True), device) for _ in range(rounds)]
    dev = [timed(lambda: cka(Xt, Yt, debiased=True), device) for _ in range(rounds)]
    values = float(cka(X, Y, debiased=True)), float(cka(Xt, Yt, debiased=True))
    out["cka"] = {"numpy_s": statistics.median(cpu), "torch_device_s": statistics.median(dev),
                  "numpy_over_torch": statistics.median(cpu) / statistics.median(dev),
                  "value_numpy": values[0], "value_torch": values[1]}
    out["linear_probe"] = bench_probe(X, Xt, device, rounds)
    return out


def bench_probe(X: Any, Xt: Any, device: Any, rounds: int) -> dict[str, Any]:
    """LinearProbe fit (8 classes): numpy rows fitted on the CPU against device tensors fitted on the device."""
    import numpy as np

    from xlprobe.probes import LinearProbe

    y = (np.argsort(X[:, :8], axis=1)[:, -1]).astype(np.int64)  # a learnable 8-way label
    cpu_probe, dev_probe = LinearProbe(random_state=0), LinearProbe(random_state=0, device=str(device))
    cpu = [timed(lambda: cpu_probe.fit(X, y), device) for _ in range(rounds)]
    dev = [timed(lambda: dev_probe.fit(Xt, y), device) for _ in range(rounds)]
    return {"classes": 8, "cpu_s": statistics.median(cpu), "device_s": statistics.median(dev),
            "cpu_over_device": statistics.median(cpu) / statistics.median(dev),
            "accuracy_cpu": float(cpu_probe.score(X, y)), "accuracy_device": float(dev_probe.score(Xt, y))}


def store_only(args: Any) -> None:
    """The store's side alone at mBART-large-50 width, for three device speeds: print and write the JSON."""
    import torch

    from xlprobe.toy import load

    _, tok = load("lm")
    # the encoder's points and width are mBART-large-50's; a small vocabulary and decoder keep it cheap to build
    model = mbart_model(dict(MBART_LARGE_50, decoder_layers=1, vocab_size=8192))
    texts, out = verses(4096), {"machine": machine_facts(torch.get_num_threads()), "store_io": []}
    for ms in (5.0, 10.0, 20.0):
        r = bench_store_io(model, tok, texts, 64, ms, args.rounds or 3, args.store_dir)
        out["store_io"].append(r)
        print(f"device {ms:4.1f} ms a batch: {r['texts']} texts, {r['points']} points x {r['width']}: device "
              f"{r['device_seconds']:.2f} s, serial store work {r['store_seconds_serial']:.2f} s, "
              f"serial / overlapped {r['serial_over_overlapped']:.3f}")
    write_json(out, args.out or RESULTS / f"gpu-store-{time.strftime('%Y-%m-%d')}.json")


def main() -> None:
    """Parse, run every configuration, print the table, write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto", help="cpu | cuda | cuda:N | auto")
    ap.add_argument("--quick", action="store_true", help="a small MBart, few texts, one batch size (CPU, CI)")
    ap.add_argument("--dtypes", default=None, help="comma-separated (default float32,bfloat16; quick: float32)")
    ap.add_argument("--batches", default=None, help="batch sizes (default 8,16,32,64; quick: 8)")
    ap.add_argument("--texts", type=int, default=None, help="verses per timing (default 256; quick: 16)")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds (default 5; quick: 2)")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/gpu-...json)")
    ap.add_argument("--store-only", action="store_true",
                    help="only the store's side: a stand-in device at 5, 10, 20 ms a batch of 64, mBART-large-50 "
                         "width (14 points x 1024), 2,024 verses; runs anywhere")
    ap.add_argument("--store-dir", type=Path, default=Path("/tmp/xlprobe-gpu-bench-store"),
                    help="where the store benchmark writes (deleted after each round; put it on the disk to test)")
    args = ap.parse_args()

    import torch

    from xlprobe.toy import load

    if args.store_only:
        store_only(args)
        return
    device = resolve_device(args.device)
    quick = args.quick
    dtypes = (args.dtypes or ("float32" if quick else "float32,bfloat16")).split(",")
    batches = [int(b) for b in (args.batches or ("8" if quick else "8,16,32,64")).split(",")]
    n_texts, rounds = args.texts or (16 if quick else 256), args.rounds or (2 if quick else 5)
    _, tok = load("lm")  # real pieces; ids < 8,054 are valid in either vocabulary
    model = mbart_model(MBART_SMALL if quick else MBART_LARGE_50).to(device)
    texts = verses(n_texts)
    results: dict[str, Any] = {"machine": machine_facts(torch.get_num_threads()), "device": str(device),
                               "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                               "model": "small MBart" if quick else "mBART-large-50 size (random weights)",
                               "parameters": n_params(model), "capture": []}
    print(f"{results['model']}: {results['parameters'] / 1e6:.1f}M parameters on {device}")
    widths = (9, 6, 12, 12, 12, 10, 10)
    print(row(("dtype", "batch", "bare enc/s", "xlprobe/s", "full/s", "overhead", "full/xl"), widths))
    for dtype in dtypes:
        if dtype == "bfloat16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            print(f"{dtype}: not supported on this GPU, skipped")
            continue
        for batch in batches:
            r = bench_capture(model, tok, texts, device, dtype, batch, rounds)
            s = r["sentences_per_s"]
            print(row((dtype, str(batch), f"{s['bare encoder']:.1f}", f"{s['xlprobe encoder']:.1f}",
                       f"{s['bare full']:.1f}", f"{r['capture_over_bare_encoder']:.3f}",
                       f"{r['full_forward_over_capture']:.2f}"), widths))
            results["capture"].append(r)
    results["store"] = []
    print(row(("dtype", "batch", "chunk", "overlap/s", "serial/s", "serial/ovl"), widths[:6]))
    for dtype in dtypes[:1]:
        for batch in batches[-1:]:
            r = bench_store(model, tok, texts, device, dtype, batch, rounds, args.store_dir)
            s = r["sentences_per_s"]
            print(row((dtype, str(batch), str(r["chunk"]), f"{s['overlapped']:.1f}", f"{s['serial']:.1f}",
                       f"{r['serial_over_overlapped']:.3f}"), widths[:6]))
            results["store"].append(r)
    ms = 2.0 if quick else 10.0
    results["store_io"] = r = bench_store_io(model, tok, texts, batches[-1], ms, rounds, args.store_dir)
    print(f"store alone, a device taking {ms} ms a batch of {batches[-1]}: {r['points']} points x {r['width']}, "
          f"device {r['device_seconds']:.2f} s, serial store work {r['store_seconds_serial']:.2f} s, "
          f"serial / overlapped {r['serial_over_overlapped']:.3f}")
    results["measures"] = bench_measures(device, 512 if quick else 4096, 64 if quick else 1024, rounds)
    print("measures:", {k: v for k, v in results["measures"].items()})
    stamp = time.strftime("%Y-%m-%d")
    write_json(results, args.out or RESULTS / f"gpu-{device.type}-{stamp}.json")


if __name__ == "__main__":
    main()
