"""Crash-safe file primitives shared by the store, its shards and the results writer.

Atomic writes (a temp file beside the target, fsynced, then ``os.replace``), fsync of a file and of
a directory (so that a rename survives a crash), durable renames, and self-describing checksums
(``"blake2b:<64 hex>"``) of a file or a byte range of it. This module knows nothing of shards,
manifests or tables: :mod:`xlprobe.shard`, :mod:`xlprobe.store` and :mod:`xlprobe.results` build on it.
"""
from __future__ import annotations

import contextlib
import errno
import glob
import os
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from xlprobe.fingerprint import hash_file

__all__ = ["CHECKSUM_ALGORITHM", "atomic_write", "checksum", "fsync_dir", "fsync_file", "replace",
           "remove_orphan_temps", "temp_path", "unlink"]

#: The hash named at the front of every checksum.
CHECKSUM_ALGORITHM = "blake2b"

#: errno values of a file system or platform that cannot fsync a directory: skipped, not raised.
_NO_DIR_FSYNC = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF, errno.EISDIR,
                           errno.EACCES})


def fsync_file(target: str | os.PathLike[str] | int) -> None:
    """fsync a file, given its path or an open descriptor."""
    if isinstance(target, int):
        os.fsync(target)
        return
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory so that a rename in it survives a crash (skipped where unsupported)."""
    flag = getattr(os, "O_DIRECTORY", None)
    if flag is None:  # Windows: directories cannot be opened, renames are journaled by NTFS
        return
    try:
        fd = os.open(path, os.O_RDONLY | flag)
    except OSError as exc:
        if exc.errno in _NO_DIR_FSYNC:
            return
        raise
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _NO_DIR_FSYNC:
            raise
    finally:
        os.close(fd)


def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """``os.replace`` then fsync the destination's directory: a rename that survives a crash."""
    os.replace(src, dst)
    fsync_dir(Path(dst).parent)


def unlink(*paths: str | os.PathLike[str]) -> None:
    """Remove files that may not exist."""
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)


def temp_path(path: str | os.PathLike[str]) -> Path:
    """A fresh hidden name beside ``path`` (pid and random suffix), for a file to rename onto it."""
    p = Path(path)
    return p.with_name(f".{p.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def _pid_alive(pid: int) -> bool:
    """True when a process with this id exists (ours, or another user's: not ours to judge)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def remove_orphan_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temp files of :func:`atomic_write` for ``path`` left by processes that no longer run.

    A process killed between writing its temp file and renaming it (SIGKILL, a crash, an OOM kill) leaves
    ``.<name>.<pid>.<hex>.tmp`` beside ``path``; the target itself is intact (old or new). Temp files of a
    live process id are kept: it may still rename them. Returns what was removed.
    """
    p = Path(path)
    gone = []
    for tmp in p.parent.glob(f".{glob.escape(p.name)}.*.tmp"):
        pid = tmp.name[len(p.name) + 2:].split(".")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            unlink(tmp)
            gone.append(tmp)
    return gone


def _write_new(tmp: Path, data: bytes) -> None:
    """Write ``data`` to a file that must not exist yet."""
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as f:
        f.write(data)


def atomic_write(path: str | os.PathLike[str], data: bytes | Callable[[Path], object]) -> None:
    """Write ``path`` all at once: readers and crashes see the old file or the new one, never half.

    Parameters
    ----------
    path : str or os.PathLike
        The file to create or replace.
    data : bytes or callable
        The new contents, or a function that writes them to the temp path it is given (e.g.
        ``lambda p: frame.to_parquet(p)``).

    Notes
    -----
    The temp file is fsynced before ``os.replace`` moves it onto ``path`` and the directory is
    fsynced after; on any error (the callback's included) the temp file is removed and ``path``
    is left as it was.
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        if callable(data):
            data(tmp)
        else:
            _write_new(tmp, data)
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        unlink(tmp)
        raise
    fsync_dir(path.parent)


def checksum(path: str | os.PathLike[str], offset: int = 0, length: int | None = None, *,
             digest: Callable[..., str] = hash_file, feed: Sequence[Any] = ()) -> str:
    """Self-describing checksum (``"blake2b:<hex>"``) of a file, or of ``length`` bytes from ``offset``.

    ``digest`` is the hex-digest function, :func:`xlprobe.fingerprint.hash_file` unless a caller
    passes its own reference to it; ``feed``: hashers given the same bytes (see ``hash_file``).
    """
    extra = {"feed": feed} if feed else {}
    return f"{CHECKSUM_ALGORITHM}:" + digest(path, offset=offset, length=length, **extra)
