"""Give freed heap memory back to the operating system between chunks of a capture run.

Why: a forward pass allocates and frees tensors of many shapes (every batch has its own length). glibc
keeps freed memory in its heaps, and as soon as a second thread exists (a progress bar, torch's worker
threads, a monitoring thread) allocations spread over several heaps ("arenas"), each keeping its own free
pages. Measured on a 20k-sentence capture into the store: RSS crept to about 600 MiB above the start with
a progress bar running, against about 190 MiB when the free pages were returned after each chunk
(``benchmarks/capture_memory.py``). ``malloc_trim(0)`` returns them; it frees nothing in use and
changes no allocator setting. On other C libraries (macOS, musl) this is a no-op.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import mmap
import os
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["release_free_memory", "MemoryTrimmer", "fix_mmap_threshold", "resident_bytes", "refault_seconds_per_mib"]


@functools.cache
def _libc_function(name: str, argtypes: tuple, restype: Any) -> Callable[..., int] | None:
    """A glibc function by name with its C signature, or None off Linux or where the C library lacks it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes = list(argtypes)
    fn.restype = restype
    return fn


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none."""
    return _libc_function("malloc_trim", (ctypes.c_size_t,), ctypes.c_int)


def release_free_memory() -> bool:
    """Return the heap's free pages to the OS (glibc); True when something could be called."""
    fn = _malloc_trim()
    if fn is None:
        return False
    fn(0)
    return True


def resident_bytes() -> int:
    """This process's resident memory (Linux ``/proc/self/statm``), 0 where it cannot be read."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


@functools.cache
def refault_seconds_per_mib() -> float:
    """What touching 1 MiB of fresh pages costs on this machine (measured once per process on 8 MiB).

    Memory that a trim returns to the OS is faulted back in (and zeroed) by the next batch that needs it:
    that, not the trim call, is most of a trim's cost (measured here: 1.7 ms per MiB, so a trim that
    returns 85 MiB costs about 140 ms of the following batch, against 0.2-0.8 ms for the call).
    """
    size = 8 << 20
    buf = mmap.mmap(-1, size)
    try:
        view = memoryview(buf)
        t0 = time.perf_counter()
        for i in range(0, size, 4096):
            view[i] = 1
        seconds = time.perf_counter() - t0
        view.release()
    finally:
        buf.close()
    return seconds / 8


class MemoryTrimmer:
    """Call :func:`release_free_memory` after batches, keeping its cost under ``budget`` of the run's time.

    ``after_batch()`` trims when the cost of trimming so far stays within ``budget`` (default 1 %) of
    the time since the trimmer was made; ``now()`` trims unconditionally (end of a chunk). A trim's
    cost is the call itself plus re-faulting what it returned (:func:`refault_seconds_per_mib` times
    the drop in resident memory), which the next batches pay: counting only the call let trims take
    3.7 % of a MiniLM capture (measured: 1.037 against a user's own loop; 0.999 without trims).
    """

    def __init__(self, budget: float = 0.01) -> None:
        self.budget = budget
        self.start = time.perf_counter()
        self.spent = 0.0
        self.calls = 0

    def now(self) -> None:
        """Trim, and account for its cost: the call, and the pages it returned (faulted back later)."""
        t0 = time.perf_counter()
        before = resident_bytes()
        if release_free_memory():
            released = max(before - resident_bytes(), 0) / (1 << 20)
            self.spent += released * refault_seconds_per_mib()
        self.spent += time.perf_counter() - t0
        self.calls += 1

    def after_batch(self) -> None:
        """Trim if the time budget allows it."""
        if self.spent <= self.budget * (time.perf_counter() - self.start):
            self.now()


#: glibc's mallopt parameter number for the mmap threshold (malloc.h: M_MMAP_THRESHOLD = -3).
_M_MMAP_THRESHOLD = -3


def fix_mmap_threshold(threshold: int = 131072) -> bool:
    """Fix glibc's mmap threshold for this process (as ``MALLOC_MMAP_THRESHOLD_`` would); True if set.

    Why: by default glibc raises the threshold each time a large block is freed, so after the first
    batches the tensors of a forward pass (hundreds of KiB to tens of MiB) come from the heap, whose
    freed pages fragment and stay resident; peak RSS over a long capture then depends on the history of
    batch shapes (measured 129-190 MiB at 2k sentences and 208-501 MiB at 20k in repeated runs). With a
    fixed threshold every block above it is mapped and unmapped on its own, and the peak is set by one
    batch (99-100 MiB at 2k, 152 MiB at 20k, twice each). This changes a process-wide allocator setting
    for the rest of the process, so the library never calls it on its own: the ``xlprobe`` CLI does, as
    an application that owns its process; a script can call it, or set the environment variable.
    """
    fn = _libc_function("mallopt", (ctypes.c_int, ctypes.c_int), ctypes.c_int)
    return fn is not None and bool(fn(_M_MMAP_THRESHOLD, int(threshold)))
