"""benchmarks/gpu.py stays runnable: CI runs its CPU configuration (the accelerator one needs a lent GPU)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


def test_the_gpu_benchmark_runs_on_cpu_and_writes_its_table(tmp_path):
    out = tmp_path / "gpu.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--out", str(out),
                           "--store-dir", str(tmp_path / "store")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    res = json.loads(out.read_text())
    (cap,) = res["capture"]
    assert res["device"] == "cpu" and cap["dtype"] == "float32" and cap["texts"] == 16
    assert set(cap["sentences_per_s"]) == {"bare encoder", "xlprobe encoder", "bare full"}
    assert all(v > 0 for v in cap["sentences_per_s"].values()) and cap["capture_over_bare_encoder"] > 0
    (store,) = res["store"]
    assert set(store["sentences_per_s"]) == {"overlapped", "serial"} and store["chunk"] == 8
    assert store["serial_over_overlapped"] > 0 and not (tmp_path / "store").exists()
    cka = res["measures"]["cka"]
    assert isinstance(cka, str) or abs(cka["value_numpy"] - cka["value_torch"]) < 1e-5
    lp = res["measures"]["linear_probe"]
    assert lp["cpu_s"] > 0 and lp["device_s"] > 0 and abs(lp["accuracy_cpu"] - lp["accuracy_device"]) < 0.02
    assert res["store_io"]["width"] == 64 and res["store_io"]["serial_over_overlapped"] > 0


def test_asking_for_cuda_without_a_gpu_says_what_to_do():
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: --device cuda runs the full benchmark")
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cuda"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0 and "--device cpu --quick" in done.stderr


def test_the_benchmarks_verses_are_the_corpus_verses():
    import importlib.util

    from xlprobe.tasks import load_data

    spec = importlib.util.spec_from_file_location("gpu_bench", SCRIPT)
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    want = load_data("bible:en,fr?books=Ruth,Jonah,John", limit=2048, seed=0)
    got = [json.loads(line) for line in gpu.VERSES.read_text(encoding="utf-8").splitlines()]
    assert [(r["id"], r["text"], r["lang"], r["group"]) for r in got] == [(r.id, r.text, r.lang, r.group) for r in want]
    few = gpu.verses(16)
    assert len(few) == 16 and {r.lang for r in few} == {"en", "fr"}
    pairs = {}
    for r in few:
        pairs.setdefault(r.group, set()).add(r.lang)
    assert all(v == {"en", "fr"} for v in pairs.values())  # whole parallel groups
    assert [r.text for r in gpu.verses(16)] == [r.text for r in few] and len(gpu.verses(5000)) == 2024
