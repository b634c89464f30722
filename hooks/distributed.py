"""Data-parallel capture into one store with ``torch.distributed`` (``torchrun``): ranks split the batches.

Every rank plans the same capture, so the length-sorted batches of every chunk are the same on all of
them. The batches left to run are dealt round-robin (the k-th to rank ``k % N``); each rank saves the
pooled rows of its batches in a chunk, with their record indices, as one part file written atomically
in ``shards/<group>.parts/``. After a barrier rank 0, the only writer of the shards, copies every part
of the chunk into its :class:`~xlprobe.store.ShardWriter` (the same writer as a single process), commits
the chunk and removes its parts; at the end it finalizes the shards, registering each in the manifest
once. A rank that dies leaves whole part files or none, and committed chunks; a rerun, with any number
of processes, skips committed chunks and the batches whose records a part of any earlier run holds.
Processes join the group torchrun describes (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/``PORT``), over
gloo (only small objects and barriers travel: the rows go through the store's folder). A rank waits at
most ``XLPROBE_DIST_TIMEOUT`` seconds (default 600) for the others, then fails with a StoreError. Rank 0
lists the capture's shard keys in the folder's ``keys.json`` before any part is saved, so that
``xlprobe store verify`` can tell a folder no unfinished shard resumes from (:mod:`xlprobe.store_parts`).
"""
from __future__ import annotations

import atexit
import contextlib
import functools
import io
import logging
import math
import os
import sys
import uuid
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch.distributed as dist
from torch import nn

from xlprobe.durable import atomic_write, unlink
from xlprobe.errors import ConfigError, StoreError
from xlprobe.hooks.committer import Committer
from xlprobe.hooks.memory import MemoryTrimmer
from xlprobe.hooks.plan import CapturePlan
from xlprobe.hooks.runner import progress_bar, token_layout, token_rows
from xlprobe.hooks.writing import (
    Forward,
    open_writers,
    shard_info,
    shard_keys,
    tokenizer_fingerprint,
    write_plan,
)
from xlprobe.store_parts import group_dir, write_group
from xlprobe.types import StoreKey

__all__ = ["write_plan_ranked", "process_group", "launch_command", "barrier", "dist_timeout", "EXIT_AFTER_PART",
           "DIST_TIMEOUT", "DEFAULT_DIST_TIMEOUT"]

log = logging.getLogger(__name__)

#: Test hook: ``"RANK:K"`` makes that rank exit abruptly (``os._exit``) right after saving its K-th part.
EXIT_AFTER_PART = "XLPROBE_EXIT_AFTER_PART"

#: Seconds a rank waits for the others (to join, at a barrier or broadcast) before it fails with a
#: StoreError, instead of gloo's 30 minutes: a rank started outside torchrun's supervision, whose peer
#: died or hangs, stops. Rank 0's work between two barriers (a chunk's share and its assembly, the
#: checksums of every shard at the end) must fit in it.
DIST_TIMEOUT = "XLPROBE_DIST_TIMEOUT"
DEFAULT_DIST_TIMEOUT = 600.0


def env_world() -> int:
    """The world size torchrun set (``WORLD_SIZE``), 1 outside torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def dist_timeout() -> float:
    """Seconds to wait for the other ranks: ``XLPROBE_DIST_TIMEOUT``, default 600; ConfigError unless > 0."""
    raw = os.environ.get(DIST_TIMEOUT, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_DIST_TIMEOUT
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise ConfigError(f"{DIST_TIMEOUT} must be a number of seconds > 0; got {raw!r}",
                          hint=f"unset it for {DEFAULT_DIST_TIMEOUT:g} s, or e.g. {DIST_TIMEOUT}=1800")
    return value


@contextlib.contextmanager
def _peers(what: str) -> Iterator[None]:
    """Turn a failed wait for the other ranks (gloo's timeout, or a rank gone) into a StoreError."""
    try:
        yield
    except RuntimeError as exc:  # DistBackendError is one
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise StoreError(
            f"rank {dist.get_rank()} of {dist.get_world_size()}: the other ranks did not reach {what} within "
            f"{dist_timeout():g} s, or one of them died ({first})",
            hint=f"the store keeps committed chunks and part files: rerun the capture (any number of processes) "
                 f"to resume; {DIST_TIMEOUT}=<seconds> sets the wait (rank 0 may need long for big shards)") from exc


def env_rank() -> int:
    """This process's rank as torchrun set it (``RANK``), 0 outside torchrun."""
    return int(os.environ.get("RANK", "0") or 0)


@contextlib.contextmanager
def process_group() -> Iterator[tuple[int, int]]:
    """``(rank, world)``: torchrun's group, joined over gloo on first use when ``WORLD_SIZE`` > 1, else (0, 1)."""
    if not (dist.is_available() and dist.is_initialized()):
        if env_world() <= 1:
            yield 0, 1
            return
        # joined once for the process (a group destroyed and joined again finds stale peers in torchrun's
        # store), left at exit
        dist.init_process_group(backend="gloo", timeout=timedelta(seconds=dist_timeout()))
        atexit.register(_leave)
    yield dist.get_rank(), dist.get_world_size()


def _leave() -> None:
    """Leave the process group at exit, if still in it."""
    if dist.is_initialized():
        dist.destroy_process_group()


def launch_command(nproc: int, args: Sequence[str]) -> list[str]:
    """The torchrun command that runs ``python -m xlprobe ARGS`` (less any ``--nproc``) in ``nproc`` processes."""
    kept: list[str] = []
    skip = False
    for a in args:
        if skip or a.startswith("--nproc="):
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        kept.append(a)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "xlprobe", *kept]


def parts_dir(store: Any, keys: dict[str, StoreKey]) -> Path:
    """Where the part files of one capture (its set of shard keys) live."""
    return group_dir(Path(store.path) / "shards", (k.id for k in keys.values()))


def _broadcast(obj: Any, world: int) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if world == 1:
        return obj
    box = [obj]
    with _peers("the broadcast of the work"):
        dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(world: int) -> None:
    """Wait for every rank (nothing to wait for alone); StoreError after :func:`dist_timeout` seconds."""
    if world > 1:
        with _peers("a barrier"):
            dist.barrier()


def save_part(folder: Path, chunk: int, rank: int, world: int, idx: np.ndarray,
              rows: dict[str, np.ndarray]) -> Path:
    """Write one rank's rows of a chunk and their record indices as a part file, atomically."""
    names = sorted(rows)
    buf = io.BytesIO()
    np.savez(buf, idx=idx.astype(np.int64), names=np.array(names), **{f"v{j}": rows[n] for j, n in enumerate(names)})
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"c{chunk:06d}-w{world}r{rank}-{uuid.uuid4().hex[:8]}.npz"
    atomic_write(path, buf.getvalue())
    return path


def load_part(path: Path, names: Sequence[str]) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    """A part's record indices and rows of ``names``, or None when it is unreadable or lacks a point."""
    try:
        with np.load(path, allow_pickle=False) as z:
            have = [str(n) for n in z["names"]]
            if not set(names) <= set(have):
                return None
            return z["idx"], {n: z[f"v{have.index(n)}"] for n in names}
    except (OSError, ValueError, KeyError) as exc:
        log.warning("ignoring unreadable part file %s (%s)", path, exc)
        return None


def chunk_parts(folder: Path, chunk: int) -> list[Path]:
    """The part files of a chunk, in name order."""
    return sorted(folder.glob(f"c{chunk:06d}-*.npz")) if folder.is_dir() else []


def covered(folder: Path, chunk: int, names: Sequence[str]) -> set[int]:
    """Records of a chunk whose rows some readable part file already holds."""
    out: set[int] = set()
    for p in chunk_parts(folder, chunk):
        got = load_part(p, names)
        if got is not None:
            out.update(int(i) for i in got[0])
    return out


def write_plan_ranked(store: Any, model: nn.Module, tokenizer: Any, plan: CapturePlan, forward: Forward, *,
                      provenance: dict[str, Any] | None = None, progress: bool = False) -> list[StoreKey]:
    """Write a plan's shards, split over torchrun's ranks; alone and with no parts left over, :func:`write_plan`."""
    with process_group() as (rank, world):
        if world == 1 and not any((Path(store.path) / "shards").glob("*.parts")):
            return write_plan(store, model, tokenizer, plan, forward, provenance=provenance, progress=progress)
        from xlprobe.fingerprint import model_fingerprint

        model_fp, tokenizer_fp = model_fingerprint(model), tokenizer_fingerprint(tokenizer)
        keys = shard_keys(plan, model_fp, tokenizer_fp)
        folder = parts_dir(store, keys)
        if world == 1 and not folder.is_dir():
            return write_plan(store, model, tokenizer, plan, forward, provenance=provenance, progress=progress)
        with contextlib.ExitStack() as stack:
            writers: dict[str, Any] = {}
            if rank == 0:
                info = shard_info(model, tokenizer, plan, model_fp, tokenizer_fp, provenance)
                writers = _open_writers(stack, store, model, plan, keys, info)
                if writers:  # before any part: the list tells `store verify` whether the folder is stale
                    write_group(folder, (k.id for k in keys.values()))
            work = _broadcast(_work(plan, writers, folder) if rank == 0 else None, world)
            if work["chunks"]:
                _run(plan, forward, work, writers, folder, rank, world, progress and rank == 0)
            if rank == 0:
                for w in writers.values():
                    w.finalize()
                _clear(folder)
        barrier(world)
    return list(keys.values())


def _open_writers(stack: contextlib.ExitStack, store: Any, model: nn.Module, plan: CapturePlan,
                  keys: dict[str, StoreKey], info: dict[str, Any]) -> dict[str, Any]:
    """Rank 0: the records saved and a resuming writer for every shard not complete yet."""
    store.write_records(plan.data)
    todo = [p for p in plan.points if not store.has(keys[p.name])]
    if not todo:
        return {}
    return open_writers(stack, store, plan, todo, keys, forward_dims(model, plan, todo), info)[0]


def forward_dims(model: nn.Module, plan: CapturePlan, points: Sequence[Any]) -> dict[str, int]:
    """Output width of each point, read by running the plan's first record."""
    from xlprobe.hooks.runner import PlanRunner

    res = PlanRunner(model, plan)(np.array([0]))
    return {p.name: int(res[p.name].shape[1]) for p in points}


def _work(plan: CapturePlan, writers: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Rank 0: the points to write, and each pending chunk with the positions of its batches no part holds."""
    pending = sorted(set().union(*(w.pending for w in writers.values()))) if writers else []
    chunks, names = plan.chunks(), sorted(writers)
    work, reused = [], 0
    for c in pending:
        have = covered(folder, c, names)
        reused += len(have)
        work.append((c, [j for j, b in enumerate(plan.batches(*chunks[c])) if not set(b.tolist()) <= have]))
    if len(pending) < len(chunks) or reused:
        log.info("resuming: %d of %d chunk(s) committed, %d record(s) held by earlier part files",
                 len(chunks) - len(pending), len(chunks), reused)
    return {"names": names, "chunks": work}


def _run(plan: CapturePlan, forward: Forward, work: dict[str, Any], writers: dict[str, Any],
         folder: Path, rank: int, world: int, progress: bool) -> None:
    """Run this rank's batches chunk by chunk; rank 0 assembles and commits each chunk after a barrier.

    Rank 0's assembly of a chunk (reading its parts, writing and committing the rows) runs on a
    :class:`~xlprobe.hooks.committer.Committer` thread while rank 0 computes its share of the next chunk,
    so the other ranks do not wait for it at the next barrier.
    """
    chunks, names, pos, saved = plan.chunks(), work["names"], 0, 0
    ptrs = {p.name: token_layout(plan.encoded(p.side))["row_ptr"] for p in plan.points
            if p.name in writers and plan.pooling == "tokens"}
    total = sum(len(plan.batches(*chunks[c])[j]) for c, runs in work["chunks"] for j in runs)
    ctx, advance = progress_bar(progress, total, "capturing" if total == plan.n else
                                f"capturing ({plan.n - total} of {plan.n} already stored)")
    trim = MemoryTrimmer()
    die = os.environ.get(EXIT_AFTER_PART, "")
    with ctx, Committer(background=rank == 0) as jobs:  # rank 0 assembles a chunk while it runs the next
        for c, runs in work["chunks"]:
            batches = plan.batches(*chunks[c])
            mine = [batches[j] for k, j in enumerate(runs) if (pos + k) % world == rank]
            pos += len(runs)
            if mine:
                out: dict[str, list[np.ndarray]] = {n: [] for n in names}
                for idx in mine:
                    res = forward(idx)
                    for n in names:
                        out[n].append(res[n])
                    trim.after_batch()
                save_part(folder, c, rank, world, np.concatenate(mine), {n: np.concatenate(v) for n, v in out.items()})
                saved += 1
                if die == f"{rank}:{saved}":
                    os._exit(3)
            barrier(world)
            if rank == 0:
                jobs.submit(functools.partial(_assemble, writers, ptrs, folder, c))
                advance(sum(len(batches[j]) for j in runs))
            trim.now()
        jobs.drain()


def _assemble(writers: dict[str, Any], ptrs: dict[str, np.ndarray], folder: Path, chunk: int) -> None:
    """Rank 0: copy every part of a chunk into the shard writers, commit the chunk, remove its parts."""
    files = chunk_parts(folder, chunk)
    for path in files:
        got = load_part(path, sorted(writers))
        if got is None:
            continue
        idx, rows = got
        for n, w in writers.items():
            if chunk in w.pending and rows[n].shape[1] == w.dim:
                w.write(token_rows(ptrs[n], idx) if n in ptrs else idx, rows[n])
    for w in writers.values():
        if chunk in w.pending:
            w.commit(chunk)
    unlink(*files)


def _clear(folder: Path) -> None:
    """Rank 0, once every shard is registered: remove the capture's part files and their folder."""
    if folder.is_dir():
        unlink(*folder.iterdir())
        with contextlib.suppress(OSError):
            folder.rmdir()
