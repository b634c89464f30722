"""Give freed heap memory back to the operating system between chunks of a capture run.

Why: a forward pass allocates and frees tensors of many shapes (every batch has its own length). glibc
keeps freed memory in its heaps, and as soon as a second thread exists (a progress bar, torch's worker
threads, a monitoring thread) allocations spread over several heaps ("arenas"), each keeping its own free
pages. Measured on a 20k-sentence capture into the store: RSS crept to about 600 MiB above the start with
a progress bar running, against about 190 MiB when the free pages were returned after each chunk
(``benchmarks/capture.py``, memory part). ``malloc_trim(0)`` returns them; it frees nothing in use and
changes no allocator setting. On other C libraries (macOS, musl) this is a no-op.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["release_free_memory", "MemoryTrimmer", "fix_mmap_threshold"]


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


class MemoryTrimmer:
    """Call :func:`release_free_memory` after batches, keeping its cost under ``budget`` of the run's time.

    ``after_batch()`` trims when the time spent trimming so far stays within ``budget`` (default 1 %) of
    the time since the trimmer was made; ``now()`` trims unconditionally (end of a chunk). A trim takes
    about a millisecond on a fragmented heap, a batch tens to hundreds: most batches end with a trim, so
    the peak is bounded by a batch's working set rather than by what glibc keeps between batches.
    """

    def __init__(self, budget: float = 0.01) -> None:
        self.budget = budget
        self.start = time.perf_counter()
        self.spent = 0.0
        self.calls = 0

    def now(self) -> None:
        """Trim, and account for the time it took."""
        t0 = time.perf_counter()
        release_free_memory()
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
