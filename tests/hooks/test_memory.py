"""hooks/memory.py: giving freed memory back to the OS and fixing glibc's mmap threshold (Linux only)."""
from __future__ import annotations


def test_release_free_memory_calls_the_c_library():
    import sys

    from xlprobe.hooks.memory import release_free_memory

    assert release_free_memory() is sys.platform.startswith("linux")


def test_fix_mmap_threshold_in_a_child_process():
    import subprocess
    import sys

    code = "from xlprobe.hooks.memory import fix_mmap_threshold as f; print(f(131072))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == str(sys.platform.startswith("linux"))


def test_a_trim_is_charged_for_the_pages_it_returns(monkeypatch):
    import xlprobe.hooks.memory as mem

    rss = iter([300 << 20, 200 << 20] * 10)  # every trim returns 100 MiB
    monkeypatch.setattr(mem, "resident_bytes", lambda: next(rss))
    monkeypatch.setattr(mem, "release_free_memory", lambda: True)
    monkeypatch.setattr(mem, "refault_seconds_per_mib", lambda: 1e-3)
    trim = mem.MemoryTrimmer(budget=0.01)
    trim.now()
    assert trim.calls == 1 and 0.1 <= trim.spent < 0.2  # 100 MiB x 1 ms, faulted back in by later batches
    trim.after_batch()  # 0.1 s charged: no more trims until the run has lasted 10 s
    assert trim.calls == 1


def test_refault_cost_and_resident_memory_are_measured():
    import sys

    from xlprobe.hooks.memory import refault_seconds_per_mib, resident_bytes

    assert 0 < refault_seconds_per_mib() < 0.1  # seconds per MiB
    assert (resident_bytes() > 0) is sys.platform.startswith("linux")
