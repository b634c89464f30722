#!/usr/bin/env python
"""Check the capture plan, the store path, fine-tuning and the probes on a device against the CPU.

Run by hand on a machine with an accelerator (it also runs on the CPU alone, comparing the CPU with
itself)::

    python scripts/device_check.py --device cuda

Uses the shipped toy checkpoint ``toy:mt`` and plain strings (no corpus package needed). Prints one
line per check with the largest difference from the CPU and exits non-zero when a check fails.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time

import numpy as np
import torch

TEXTS = ["In the beginning was the Word, and the Word was with God.", "Au commencement était la Parole.",
         "Im Anfang war das Wort, und das Wort war bei Gott.", "Jesus wept.", "En el principio era el Verbo.",
         "And God said, Let there be light: and there was light.", "Et Dieu dit: Que la lumière soit!"]


def _texts(n: int) -> list[str]:
    """``n`` distinct texts of varied length."""
    return [f"{TEXTS[i % len(TEXTS)]} {' '.join(['amen'] * (i % 9))} ({i})" for i in range(n)]


def check(name: str, ok: bool, detail: str, results: dict[str, bool]) -> None:
    """Print one check's line and remember its outcome."""
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}", flush=True)
    results[name] = bool(ok)


def main(argv: list[str] | None = None) -> int:
    """Run every check on ``--device`` and compare with the CPU."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--n", type=int, default=96)
    args = ap.parse_args(argv)
    from xlprobe import toy
    from xlprobe.finetune import finetune_transfer
    from xlprobe.hooks import extract
    from xlprobe.probes import LinearProbe
    from xlprobe.store import ActivationStore
    from xlprobe.types import Dataset, Record

    results: dict[str, bool] = {}
    texts = _texts(args.n)
    targets = list(reversed(texts))
    cpu_model, tok = toy.load("mt")
    dev_model, _ = toy.load("mt")
    dev_model.to(args.device)
    print(f"device {args.device}: {torch.cuda.get_device_name(0) if args.device.startswith('cuda') else 'cpu'}; "
          f"torch {torch.__version__}", flush=True)
    opts = dict(src_lang="en", tgt_texts=targets, tgt_lang="fr", batch_size=16)
    ref = extract(cpu_model, tok, texts, "all", **opts)
    t0 = time.perf_counter()
    got = extract(dev_model, tok, texts, "all", **opts)
    seconds = time.perf_counter() - t0
    diff = max(float(np.abs(got[k] - ref[k]).max()) for k in ref)
    check("extract float32, every point, teacher-forced", diff < 1e-3 and list(got) == list(ref),
          f"max |device - cpu| {diff:.2e} over {len(ref)} points ({seconds:.2f} s on the device)", results)
    for dtype in ("bfloat16", "float16"):
        half = extract(dev_model, tok, texts, "encoder.*", src_lang="en", dtype=dtype)
        rel = max(float(np.abs(half[k] - ref[k]).max() / np.abs(ref[k]).max()) for k in half)
        check(f"extract {dtype} autocast", rel < 0.1, f"max relative |{dtype} - float32| {rel:.2e}", results)
    with tempfile.TemporaryDirectory() as tmp:
        store = ActivationStore.open(tmp)
        mem = extract(dev_model, tok, texts, "all", chunk_size=40, **opts)  # same chunks, so the same batches
        keys = extract(dev_model, tok, texts, "all", store=store, chunk_size=40, **opts)
        again = extract(dev_model, tok, texts, "all", store=store, chunk_size=40, **opts)
        diff = max(float(np.abs(store.read(k) - mem[k.point]).max()) for k in keys)
        check("store path on the device equals memory", diff == 0.0 and again == keys,
              f"max |store - memory| {diff:.2e}; rerun skipped every shard: {again == keys}", results)
    langs = ["en", "fr", "de", "es"]
    data = [Record(f"{lg}{i}", f"{TEXTS[i % 4]} {i}", lg, group=str(i), labels={"kind": "ab"[i % 2]})
            for i in range(48) for lg in langs]
    runs = {}
    for device in ("cpu", args.device):
        t0 = time.perf_counter()
        df = finetune_transfer(cpu_model, tok, data, label="kind", seeds=(0,), steps=20, batch_size=8, lr=1e-3,
                               max_length=32, device=device)
        runs[device] = (df, time.perf_counter() - t0)
    acc = {d: r[0][(r[0].measure == "finetune.accuracy") & r[0].seed.notna()].value.to_numpy() for d, r in runs.items()}
    spread = float(np.abs(acc["cpu"] - acc[args.device]).max())
    check("finetune_transfer on the device", np.all((acc[args.device] >= 0) & (acc[args.device] <= 1)),
          f"accuracies {np.round(acc[args.device], 3).tolist()}; max |device - cpu| {spread:.3f} "
          f"(not bitwise: different kernels); {runs[args.device][1]:.1f} s vs {runs['cpu'][1]:.1f} s on cpu", results)
    X, y = ref["encoder.final_norm"], np.array([i % 3 for i in range(len(texts))])
    p_cpu = LinearProbe(C=1.0).fit(X, y).predict_proba(X)
    p_dev = LinearProbe(C=1.0, device=args.device).fit(X, y).predict_proba(X)
    diff = float(np.abs(p_cpu - p_dev).max())
    check("LinearProbe fit on the device", diff < 1e-3, f"max |p_device - p_cpu| {diff:.2e}", results)
    measure_checks(args.device, X, y, results)
    data_set = Dataset("device-check", tuple(data))
    attribution_check(args.device, tok, data_set, results)
    store_overlap_check(dev_model, tok, texts, opts, results)
    bad = sum(not ok for ok in results.values())
    print(f"{len(results) - bad} passed, {bad} failed", flush=True)
    return 1 if bad else 0


def measure_checks(device: str, X: np.ndarray, y: np.ndarray, results: dict[str, bool]) -> None:
    """MLPProbe, CKA and a registered measure on device tensors against the CPU."""
    from xlprobe.probes import MLPProbe, cka
    from xlprobe.registry import get_measure

    Xt = torch.from_numpy(X).to(device)
    p_cpu = MLPProbe(hidden=16, max_epochs=20, random_state=0).fit(X, y).predict_proba(X)
    p_dev = MLPProbe(hidden=16, max_epochs=20, random_state=0, device=device).fit(Xt, y).predict_proba(Xt)
    diff = float(np.abs(p_cpu - p_dev).max())
    check("MLPProbe fit on the device", diff < 0.05, f"max |p_device - p_cpu| {diff:.2e} (not bitwise)", results)
    Y = X[:, ::-1].copy()
    diff = abs(float(cka(Xt, torch.from_numpy(Y).to(device), debiased=True)) - float(cka(X, Y, debiased=True)))
    check("CKA on device tensors", diff < 1e-6, f"|device - numpy| {diff:.2e}", results)
    sep = get_measure("separability.knn")
    a, b = sep(Xt.bfloat16(), torch.from_numpy(y).to(device), None, seed=0), sep(
        Xt.bfloat16().float().cpu().numpy(), y, None, seed=0)
    check("a registered measure on bf16 device tensors", a == b, f"separability.knn {a:.4f} vs {b:.4f}", results)


def attribution_check(device: str, tok: object, data: object, results: dict[str, bool]) -> None:
    """TransferGap and its path attribution (toy lm -> mt) on the device against the CPU."""
    from xlprobe import toy
    from xlprobe.path_metrics import TransferGap
    from xlprobe.probes.attribution import ParameterPathAttribution

    metric = TransferGap(tok, data, layer="encoder.1", task="kind", train_lang="en")
    out = {}
    for where in ("cpu", device):
        a, b = toy.load("lm")[0].to(where), toy.load("mt")[0].to(where)
        t0 = time.perf_counter()
        rows, delta = ParameterPathAttribution(metric).attribute(a, b, groups="layer", n_steps=4,
                                                                 return_convergence_delta=True)
        out[where] = (rows, float(delta), time.perf_counter() - t0)
    ca, cd = out["cpu"][0], out[device][0]
    change = abs(float(cd.metric_b.iloc[0] - ca.metric_b.iloc[0])) + abs(float(cd.metric_a.iloc[0] - ca.metric_a.iloc[0]))
    diff = float(np.abs(ca.sort_values("group").value.to_numpy() - cd.sort_values("group").value.to_numpy()).max())
    check("path attribution of TransferGap on the device", change < 1e-3 and diff < 1e-2,
          f"metric ends differ by {change:.2e}, attributions by {diff:.2e}; completeness error "
          f"{out[device][1]:.2e}; {out[device][2]:.1f} s vs {out['cpu'][2]:.1f} s on cpu", results)


def store_overlap_check(model: torch.nn.Module, tok: object, texts: list[str], opts: dict,
                        results: dict[str, bool]) -> None:
    """The store written with overlapped writes and pinned copies equals the serial path byte for byte."""
    from xlprobe.hooks.plan import plan_capture
    from xlprobe.hooks.runner import PlanRunner
    from xlprobe.hooks.writing import write_plan
    from xlprobe.store import ActivationStore

    plan = plan_capture(model, tok, texts, "all", chunk_size=24, **opts)
    runner = PlanRunner(model, plan)
    model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        fast = ActivationStore.open(f"{tmp}/overlap")
        slow = ActivationStore.open(f"{tmp}/serial")
        keys = write_plan(fast, model, tok, plan, runner)
        write_plan(slow, model, tok, plan, runner, overlap=False)
        same = all(np.array_equal(np.asarray(fast.read(k)), np.asarray(slow.read(k))) for k in keys)
        check("store: overlapped writes and pinned copies equal the serial path", same and fast.verify() == [],
              f"{len(keys)} shards equal: {same}; verify clean: {fast.verify() == []}", results)


if __name__ == "__main__":
    sys.exit(main())
