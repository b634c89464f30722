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
