"""The part folders of a data-parallel capture (``shards/<group>.parts/``) and which of them are stale.

:mod:`xlprobe.hooks.distributed` saves each rank's rows as part files in one folder per capture, named
by a hash of the capture's shard keys (its *group*); rank 0, before any part is saved, lists those keys
in the folder's ``keys.json``. A folder is *live* while one of its shards is unfinished and could resume
(its ``.safetensors.tmp`` or ``.progress.json`` is there and the shard is not complete): a rerun of the
same capture reads its parts. Otherwise nothing reads it again: it is *stale*, and
:meth:`ActivationStore.verify <xlprobe.store.ActivationStore.verify>` reports it (``repair=True``
removes it). A folder without ``keys.json`` (written before the list existed) is stale only when no
shard of the store is unfinished. Nothing is judged or removed while a writer holds the lock of a shard
concerned: verify takes those locks (without waiting) for as long as it looks and deletes.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from xlprobe.durable import atomic_write, unlink
from xlprobe.errors import StoreError

__all__ = ["group_dir", "write_group", "read_group", "stale_parts", "KEYS_FILE"]

#: The file in a part folder that lists the ids of its capture's shard keys, one JSON list.
KEYS_FILE = "keys.json"


def group_dir(shards: Path, key_ids: Iterable[str]) -> Path:
    """The part folder of the capture whose shard keys have these ids."""
    group = hashlib.sha256(" ".join(sorted(key_ids)).encode()).hexdigest()[:16]
    return shards / f"{group}.parts"


def write_group(folder: Path, key_ids: Iterable[str]) -> None:
    """Create ``folder`` and list the capture's shard key ids in its ``keys.json`` (atomically)."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / KEYS_FILE, json.dumps(sorted(key_ids)).encode())


def read_group(folder: Path) -> list[str] | None:
    """The shard key ids a part folder lists, or None when it has no (readable) ``keys.json``."""
    try:
        ids = json.loads((folder / KEYS_FILE).read_bytes())
    except (OSError, ValueError):
        return None
    return [str(i) for i in ids] if isinstance(ids, list) else None


def _unfinished(shards: Path, key_id: str, complete: Callable[[str], bool]) -> bool:
    """True when the shard ``key_id`` could resume: its temp or progress file is there, and it is not complete."""
    files = (shards / f"{key_id}.safetensors.tmp", shards / f"{key_id}.progress.json")
    return any(p.exists() for p in files) and not complete(key_id)


def _store_ids(shards: Path) -> set[str]:
    """Ids of every shard with a temp, progress or lock file in ``shards``."""
    ids: set[str] = set()
    for suffix in (".safetensors.tmp", ".progress.json", ".lock"):
        ids.update(p.name[:-len(suffix)] for p in shards.glob(f"*{suffix}"))
    return ids


def _lock(path: Path, stack: contextlib.ExitStack) -> bool:
    """Take a shard's writer lock without waiting, held until ``stack`` closes; False if a writer holds it.

    A lock file this call created is removed again on release (safe while held: writers never wait on it).
    """
    created = not path.exists()
    try:
        f: BinaryIO = stack.enter_context(open(path, "ab"))  # noqa: SIM115 (closed by the stack)
    except PermissionError:  # a read-only store: no writer can have created a missing lock either
        if created:
            return True
        f = stack.enter_context(open(path, "rb"))  # noqa: SIM115
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    if created:
        stack.callback(unlink, path)
    return True


def _describe(folder: Path) -> tuple[int, int]:
    """(files, bytes) a part folder holds (a file removed meanwhile, as by rank 0 clearing it, counts 0)."""
    n = size = 0
    for p in folder.iterdir():
        with contextlib.suppress(FileNotFoundError):
            size += p.stat().st_size
            n += 1
    return n, size


def _size(n: int) -> str:
    """A byte count for people: bytes below 1 MiB, MiB above."""
    return f"{n} bytes" if n < 1 << 20 else f"{n / 2**20:.1f} MiB"


def _remove(folder: Path) -> None:
    """Delete a part folder and its files."""
    unlink(*folder.iterdir())
    with contextlib.suppress(OSError):
        folder.rmdir()


def _judge(shards: Path, folder: Path, complete: Callable[[str], bool], repair: bool) -> str | None:
    """The problem text of a stale folder (removed if ``repair``), None when live or in a writer's hands."""
    ids = read_group(folder)
    scope = set(ids) if ids is not None else _store_ids(shards)
    with contextlib.ExitStack() as stack:
        if not all(_lock(shards / f"{i}.lock", stack) for i in sorted(scope)):
            return None  # a writer is at work on one of its shards
        if any(_unfinished(shards, i, complete) for i in scope):
            return None
        n, size = _describe(folder)
        if repair:
            _remove(folder)
    why = ("its shards are complete or were dropped" if ids is not None
           else "it lists no shards and no shard of the store is unfinished")
    return str(StoreError(f"stale part folder {folder} ({n} file(s), {_size(size)}): left by a "
                          f"data-parallel capture; no unfinished shard resumes from it ({why})",
                          hint=f"`xlprobe store verify {shards.parent} --repair` removes it"))


def stale_parts(shards: Path, complete: Callable[[str], bool], *, repair: bool = False) -> list[str]:
    """One problem text per stale part folder under ``shards`` (each removed when ``repair``)."""
    if not shards.is_dir():
        return []
    found = []
    for folder in sorted(p for p in shards.glob("*.parts") if p.is_dir()):
        with contextlib.suppress(FileNotFoundError):  # cleared meanwhile by the capture's rank 0
            found.append(_judge(shards, folder, complete, repair))
    return [t for t in found if t is not None]
