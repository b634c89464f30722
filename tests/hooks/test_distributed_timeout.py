"""A rank waiting for a dead or hung peer fails after XLPROBE_DIST_TIMEOUT seconds with a StoreError (gloo, CPU)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from xlprobe.errors import ConfigError
from xlprobe.hooks.distributed import DEFAULT_DIST_TIMEOUT, DIST_TIMEOUT, dist_timeout

_SCRIPT = textwrap.dedent("""
    import sys, time
    from xlprobe.errors import StoreError
    from xlprobe.hooks.distributed import barrier, process_group
    with process_group() as (rank, world):
        if rank == 1:
            time.sleep(float(sys.argv[1]))  # alive but late: rank 0 must not wait for it
        start = time.monotonic()
        try:
            barrier(world)
        except StoreError as exc:
            print(f"WAITED {time.monotonic() - start:.2f}")
            print(exc)
            sys.exit(5)
    print("passed")
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_env(rank: int, port: int, timeout: str) -> dict[str, str]:
    """Two ranks started by hand (no torchrun agent watching them)."""
    return {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), DIST_TIMEOUT: timeout}


def test_timeout_default_and_checks(monkeypatch):
    monkeypatch.delenv(DIST_TIMEOUT, raising=False)
    assert dist_timeout() == DEFAULT_DIST_TIMEOUT == 600.0
    monkeypatch.setenv(DIST_TIMEOUT, "42.5")
    assert dist_timeout() == 42.5
    for bad in ("0", "-3", "soon", "inf", "nan"):
        monkeypatch.setenv(DIST_TIMEOUT, bad)
        with pytest.raises(ConfigError, match=DIST_TIMEOUT):
            dist_timeout()


@pytest.mark.slow
def test_rank_waiting_for_a_late_peer_fails_after_the_timeout(tmp_path):
    script = tmp_path / "wait.py"
    script.write_text(_SCRIPT)
    port, late = _free_port(), 12.0
    procs = [subprocess.Popen([sys.executable, str(script), str(late)], env=_rank_env(r, port, "3"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    t0 = time.monotonic()
    out0, err0 = procs[0].communicate(timeout=120)
    took = time.monotonic() - t0
    out1, err1 = procs[1].communicate(timeout=120)
    assert procs[0].returncode == 5, out0 + err0[-3000:]
    waited = float(out0.split("WAITED ")[1].split()[0])
    assert 2.5 <= waited < 10, out0
    assert took < late, (took, out0)  # rank 0 left long before its peer came
    assert "rank 0 of 2" in out0 and DIST_TIMEOUT in out0 and "rerun the capture" in out0
    assert procs[1].returncode == 5, out1 + err1[-3000:]  # the late rank finds rank 0 gone: fails too, no hang
