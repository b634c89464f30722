"""Process memory readings shared by the benchmarks (Linux ``/proc``): RSS, its high-water mark, a reset."""
from __future__ import annotations

from pathlib import Path

__all__ = ["status_mib", "rss_mib", "reset_peak"]


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
