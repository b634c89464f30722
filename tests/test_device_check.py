"""scripts/device_check.py stays runnable: on the CPU it compares the CPU with itself (a lent GPU runs it on cuda)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "device_check.py"


def test_every_device_check_passes_on_the_cpu():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--n", "48"], capture_output=True,
                          text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    lines = [ln for ln in done.stdout.splitlines() if ln[:4] in ("ok  ", "FAIL")]
    assert len(lines) == 11 and all(ln.startswith("ok") for ln in lines), done.stdout
    assert "11 passed, 0 failed" in done.stdout
