"""The one command a session lent a GPU runs (scripts/gpu_session): the device checks and the benchmark, with
xlprobe imported from the checkout without being installed. Here on the CPU (checks against the CPU itself,
the benchmark's --quick sizes), with a python3 that does not see the installed xlprobe."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_session_runs_every_check_without_xlprobe_installed(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "python3"  # no site processing: the editable install's import hook is not there
    fake.write_text(f"#!/bin/sh\nexec {sys.executable} -S \"$@\"\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": sysconfig.get_paths()["purelib"],
           "DEVICE": "cpu", "GPU_ARGS": "--quick", "OUT": str(tmp_path / "out")}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_session")], capture_output=True, text=True,
                          timeout=600, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    head = done.stdout.splitlines()[0]
    assert head.startswith("xlprobe 0.1.0 from ") and str(ROOT) not in head.split(";")[0]  # the links, not ROOT
    checks = (tmp_path / "out" / "device_check.txt").read_text()
    lines = [ln for ln in checks.splitlines() if ln[:4] in ("ok  ", "FAIL")]
    assert len(lines) == 11 and all(ln.startswith("ok") for ln in lines) and "11 passed, 0 failed" in checks
    res = json.loads((tmp_path / "out" / "gpu.json").read_text())
    assert res["device"] == "cpu" and res["capture"] and res["store"] and res["measures"]["linear_probe"]
