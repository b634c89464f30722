"""Resumable, crash-safe writing of one activation shard: :class:`ShardWriter`.

The writer knows nothing of the store. It is given the shard's key and checked
:class:`~xlprobe.shard.ShardLayout`, its files (:class:`~xlprobe.shard.ShardPaths`), the writer lock
its caller holds, and an ``on_complete(entry)`` callback, which it calls with the shard's manifest
entry (key, size, checksum, shape, dtype, chunks, extras, info, created) once the finished file is
renamed into place. Rows go into a memory map of a preallocated temp file in row chunks; each
committed chunk is checksummed into a progress file, so a killed extraction resumes. Atomic writes,
fsync and durable renames come from :mod:`xlprobe.durable`; the file format from :mod:`xlprobe.shard`.
"""
from __future__ import annotations

import contextlib
import json
import logging
import mmap
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, BinaryIO

import numpy as np

from xlprobe.durable import CHECKSUM_ALGORITHM, atomic_write, fsync_file, remove_orphan_temps, replace, unlink
from xlprobe.errors import DataError, StoreError
from xlprobe.fingerprint import file_hasher, hash_array
from xlprobe.shard import ShardLayout, ShardPaths, describe_key, file_checksum, header_bytes
from xlprobe.types import StoreKey

__all__ = ["ShardWriter"]

logger = logging.getLogger("xlprobe.store")  # the store's logger, as before the split: one name to configure


def _pwrite_all(fd: int, data: Any, offset: int) -> None:
    """Write a whole buffer at ``offset`` (``os.pwrite`` may write less than asked)."""
    view = memoryview(data).cast("B")
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _now() -> str:
    """UTC time, ISO 8601, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------- writer
class ShardWriter:
    """Writes one shard in place, in row chunks that commit with a checksum and survive a kill.

    Get one from :meth:`ActivationStore.writer`, or build one with its paths, a held lock and an
    ``on_complete(entry)`` callback, then :meth:`open` it. Rows go into a memory map of a
    preallocated temp file at any row index (:meth:`write`); :meth:`commit` makes a chunk durable
    and releases its pages, so memory stays at about one chunk whatever ``n_rows``. Use it as a
    context manager: a clean exit finalizes once every chunk is committed; an exception keeps the
    temp file and its progress for a resume, which a new writer for the same key and layout picks
    up (:attr:`pending`).

    Attributes
    ----------
    key : StoreKey
        The shard's key.
    n_rows, dim : int
        Shape of ``states``.
    chunks : tuple of (int, int)
        Row ranges, in order, tiling ``[0, n_rows)``.
    info : dict
        Provenance, passed on in the manifest entry.
    paths : ShardPaths
        The shard's files; ``path``, ``tmp_path`` and ``progress_path`` name the finished shard, the
        temp file being written and its progress file.
    """

    def __init__(self, key: StoreKey, layout: ShardLayout, *, paths: ShardPaths, info: dict[str, Any],
                 lock: BinaryIO, on_complete: Callable[[dict[str, Any]], object]) -> None:
        n_rows, dim, chunks, extras = layout.n_rows, layout.dim, layout.chunks, layout.extras
        self.key, self.n_rows, self.dim, self.chunks, self.info = key, n_rows, dim, chunks, info
        self.paths, self.path, self.tmp_path = paths, paths.final, paths.tmp
        self.progress_path = paths.progress
        self._on_complete = on_complete
        self._extras = extras
        self._header = header_bytes(key, n_rows, dim, extras)
        self._start = len(self._header)
        self._size = self._start + n_rows * dim * 4 + sum(a.nbytes for a in extras.values())
        self._layout = {"key": key.to_dict(), "n_rows": n_rows, "dim": dim,
                        "chunks": [list(c) for c in chunks],
                        "extras": {k: hash_array(a) for k, a in extras.items()}}
        self._starts = np.array([c[0] for c in chunks], dtype=np.int64)
        self._committed: dict[int, str] = {}
        self._running: Any = None  # the whole file's hash, grown chunk by chunk while they commit in order
        self._next = 0  # the chunk the running hash expects next
        self._written: dict[int, np.ndarray] = {}
        self._lock: BinaryIO | None = lock  # file objects: the GC closes them if close() is skipped
        self._file: BinaryIO | None = None
        self._mm: mmap.mmap | None = None
        self._states: np.ndarray | None = None
        self._finalized = False

    def __repr__(self) -> str:
        return f"ShardWriter({self.path.name}, [{self.n_rows}, {self.dim}], pending={len(self.pending)})"

    def __enter__(self) -> ShardWriter:  # noqa: PYI034 (not subclassed)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if exc_type is None and not self._finalized:
                if self.pending:
                    logger.info("closing %s with %d chunk(s) pending; a new writer resumes it",
                                self.tmp_path, len(self.pending))
                else:
                    self.finalize()
        finally:
            self.close()

    @property
    def pending(self) -> list[int]:
        """Indices of the chunks not committed yet."""
        return [i for i in range(len(self.chunks)) if i not in self._committed]

    # -- opening ------------------------------------------------------------------------------
    def open(self) -> ShardWriter:
        """Resume a matching partial shard or start a fresh temp file, and map it; closes on failure."""
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def _open(self) -> None:
        """Resume a matching partial shard, or start a fresh temp file; then map it."""
        for orphan in remove_orphan_temps(self.progress_path):  # a run killed inside a commit
            logger.info("removed %s, left by a killed run (the progress file it would replace is intact)", orphan)
        if not self.tmp_path.exists() and self.path.exists() and self.progress_path.exists():
            logger.info("recovering %s: renamed into place but never registered", self.path)
            replace(self.path, self.tmp_path)  # a crash inside finalize: resume from the tmp state
        progress = self._load_progress()
        size = self.tmp_path.stat().st_size if self.tmp_path.exists() else -1
        if progress is not None and progress.get("layout") == self._layout and size == self._size:
            self._committed = self._still_valid(progress.get("committed") or {})
            logger.info("resuming %s: %d of %d chunks committed", self.tmp_path, len(self._committed),
                        len(self.chunks))
        else:
            if progress is not None or size >= 0:
                logger.warning("discarding stale partial shard %s (its shape, chunks or extras differ, "
                               "or its progress file is missing)", self.tmp_path)
            self._create()
        self._file = open(self.tmp_path, "r+b", buffering=0)  # noqa: SIM115 (closed in _unmap)
        self._write_prefix()  # header and extras are known: rewriting them repairs any damage
        length = self._start + self.n_rows * self.dim * 4
        self._mm = mmap.mmap(self._file.fileno(), length, access=mmap.ACCESS_WRITE)
        shape = (self.n_rows, self.dim)
        self._states = np.ndarray(shape, dtype=np.dtype("<f4"), buffer=self._mm, offset=self._start)
        if not self._committed:  # nothing committed before: the file's hash can grow with the commits
            self._running, self._next = file_hasher(), 0
            self._running.update(self._header)

    def _load_progress(self) -> dict[str, Any] | None:
        """The progress file, or None when absent or unreadable."""
        try:
            progress = json.loads(self.progress_path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            logger.warning("ignoring unreadable progress file %s", self.progress_path)
            return {}
        return progress if isinstance(progress, dict) else {}

    def _still_valid(self, committed: Mapping[str, str]) -> dict[int, str]:
        """The committed chunks whose bytes still match their checksum; the others become pending."""
        good: dict[int, str] = {}
        for k, digest in committed.items():
            i = int(k) if str(k).isdigit() else -1
            if 0 <= i < len(self.chunks) and self._chunk_checksum(i) == digest:
                good[i] = digest
            else:
                logger.warning("chunk %s of %s fails its checksum; it is pending again", k, self.tmp_path)
        if len(good) != len(committed):
            self._write_progress(good)
        return good

    def _create(self) -> None:
        """Preallocate the temp file (sparse, full size) and write an empty progress file."""
        unlink(self.tmp_path, self.progress_path)
        fd = os.open(self.tmp_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            os.ftruncate(fd, self._size)
            fsync_file(fd)
        finally:
            os.close(fd)
        self._committed = {}
        self._write_progress({})

    def _write_prefix(self) -> None:
        """Write the header at the start and the extras after ``states``."""
        fd = self._file.fileno()  # type: ignore[union-attr]
        _pwrite_all(fd, self._header, 0)
        offset = self._start + self.n_rows * self.dim * 4
        for a in self._extras.values():
            if a.nbytes:
                _pwrite_all(fd, a.reshape(-1).view(np.uint8), offset)
            offset += a.nbytes

    def _write_progress(self, committed: Mapping[int, str]) -> None:
        """Atomically record the committed chunks and their checksums."""
        doc = {"layout": self._layout, "committed": {str(i): d for i, d in sorted(committed.items())}}
        atomic_write(self.progress_path, json.dumps(doc).encode())

    # -- writing ------------------------------------------------------------------------------
    def _row_index(self, rows: np.ndarray | Sequence[int] | slice) -> np.ndarray:
        """Rows as an int64 index array within [0, n_rows), or DataError."""
        if isinstance(rows, slice):
            return np.arange(*rows.indices(self.n_rows), dtype=np.int64)
        idx = np.asarray(rows)
        if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise DataError(f"rows must be a slice or a 1-D int array; got {idx.dtype} {idx.shape}",
                            hint="pass the original row index of each value row")
        idx = idx.astype(np.int64, copy=False)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_rows):
            raise DataError(f"rows {idx.min()}..{idx.max()} fall outside [0, {self.n_rows})",
                            hint=f"shard {self.key.id} was opened with n_rows={self.n_rows}")
        return idx

    def write(self, rows: np.ndarray | Sequence[int] | slice, values: np.ndarray) -> None:
        """Write ``values[j]`` into row ``rows[j]``, at any positions of uncommitted chunks.

        Parameters
        ----------
        rows : slice or 1-D int array
            Destination rows, in any order (e.g. a length-sorted batch's original positions).
        values : numpy.ndarray
            Floating array [len(rows), dim]; stored as float32.

        Raises
        ------
        DataError
            On a bad shape or dtype, or rows out of range.
        StoreError
            If a row belongs to a committed chunk, or the writer is closed.
        """
        self._check_open()
        values = np.asarray(values)
        if values.ndim != 2 or values.shape[1] != self.dim or not np.issubdtype(values.dtype, np.floating):
            raise DataError(f"values must be a float array [k, {self.dim}]; got {values.dtype} "
                            f"{values.shape}",
                            hint=f"shard {self.key.point!r} was opened with dim={self.dim}")
        idx = self._row_index(rows)
        if idx.shape[0] != values.shape[0]:
            raise DataError(f"{idx.shape[0]} rows but {values.shape[0]} value rows",
                            hint="pass one destination row per value row")
        if not idx.size:
            return
        chunk_of = np.searchsorted(self._starts, idx, side="right") - 1
        touched = [int(c) for c in np.unique(chunk_of)]
        done = [c for c in touched if c in self._committed]
        if done:
            raise StoreError(f"rows of committed chunk(s) {done} of {self.tmp_path.name} cannot be rewritten",
                             hint="write only the rows of writer.pending chunks")
        self._states[idx] = values  # type: ignore[index]
        for c in touched:
            start, stop = self.chunks[c]
            mask = self._written.setdefault(c, np.zeros(stop - start, dtype=bool))
            mask[idx[chunk_of == c] - start] = True

    def _region(self, chunk: int) -> tuple[int, int]:
        """(file offset, byte length) of a chunk's rows."""
        start, stop = self.chunks[chunk]
        return self._start + start * self.dim * 4, (stop - start) * self.dim * 4

    def _chunk_checksum(self, chunk: int) -> str:
        """Checksum of a chunk's bytes as they are in the temp file."""
        return file_checksum(self.tmp_path, *self._region(chunk))

    def commit(self, chunk: int) -> None:
        """Flush a fully written chunk to disk, checksum it and record it as committed, atomically.

        Raises
        ------
        StoreError
            If some row of the chunk was never written, or the writer is closed.
        """
        self._check_open()
        is_int = isinstance(chunk, (int, np.integer)) and not isinstance(chunk, bool)
        if not is_int or not 0 <= chunk < len(self.chunks):
            raise DataError(f"chunk must be an index in [0, {len(self.chunks)}); got {chunk!r}",
                            hint="pass an index into the writer's chunks")
        chunk = int(chunk)
        mask = self._written.get(chunk)
        if mask is None and chunk in self._committed:
            return
        start, stop = self.chunks[chunk]
        missing = stop - start if mask is None else int(np.count_nonzero(~mask))
        if missing:
            raise StoreError(f"chunk {chunk} (rows {start}:{stop}) of {self.tmp_path.name} has {missing} "
                             "row(s) never written", hint="write every row of a chunk before committing it")
        offset, length = self._region(chunk)
        page = offset - offset % mmap.PAGESIZE
        if length:
            self._mm.flush(page, offset + length - page)  # type: ignore[union-attr]
        feed = (self._running,) if self._running is not None and chunk == self._next else ()
        if not feed:
            self._running = None  # out of order (or resumed): finalize hashes the whole file instead
        try:
            committed = {**self._committed, chunk: file_checksum(self.tmp_path, *self._region(chunk), feed=feed)}
            self._write_progress(committed)
        except BaseException:
            self._running = None  # the running hash may hold this chunk's bytes now: no longer trusted
            raise
        self._committed = committed
        self._next += bool(feed)
        self._written.pop(chunk, None)
        if length and hasattr(mmap, "MADV_DONTNEED"):  # drop the chunk's pages from RSS: they are on disk
            self._mm.madvise(mmap.MADV_DONTNEED, page, offset + length - page)  # type: ignore[union-attr]

    def finalize(self) -> None:
        """Seal the shard: fsync, checksum the file, rename it into place, pass its entry to ``on_complete``.

        Raises
        ------
        StoreError
            If chunks are still pending.
        """
        if self._finalized:
            return
        self._check_open()
        if self.pending:
            raise StoreError(f"{self.tmp_path.name} has {len(self.pending)} uncommitted chunk(s): "
                             f"{self.pending[:10]}",
                             hint="write and commit every chunk of writer.pending first")
        self._unmap(sync=True)
        entry = {
            "key": self.key.to_dict(), "size": self.tmp_path.stat().st_size,
            "checksum": self._file_checksum(),
            "shape": [self.n_rows, self.dim], "dtype": "float32", "chunks": len(self.chunks),
            "extras": {k: {"dtype": a.dtype.name, "shape": list(a.shape)} for k, a in self._extras.items()},
            "info": self.info, "created": _now(),
        }
        replace(self.tmp_path, self.path)
        self._on_complete(entry)
        unlink(self.progress_path)  # after on_complete: until then a reopen can recover the file
        self._release(unlink_lock=True)
        self._finalized = True
        logger.info("wrote shard %s (%s) [%d, %d]", self.path, describe_key(self.key), self.n_rows, self.dim)

    def _file_checksum(self) -> str:
        """The whole file's checksum: the running hash plus the extras when every chunk fed it, else a read."""
        if self._running is None or self._next != len(self.chunks):
            return file_checksum(self.tmp_path)
        file_checksum(self.tmp_path, self._start + self.n_rows * self.dim * 4, None, feed=(self._running,))
        return f"{CHECKSUM_ALGORITHM}:{self._running.hexdigest()}"

    # -- closing ------------------------------------------------------------------------------
    def close(self) -> None:
        """Unmap and unlock without finalizing; the temp file and progress stay for a resume."""
        self._unmap(sync=False)
        self._release(unlink_lock=False)

    def _check_open(self) -> None:
        """StoreError if the writer was closed or finalized."""
        if self._mm is None:
            raise StoreError(f"the writer of {self.path.name} is closed",
                             hint="open a new one with store.writer(...): it resumes the pending chunks")

    def _unmap(self, *, sync: bool) -> None:
        """Drop the array, close the map and the file."""
        if self._mm is not None:
            self._states = None  # the array exports the map's buffer: drop it before closing
            if sync:
                self._mm.flush()
            with contextlib.suppress(BufferError):  # a stray view keeps it mapped until collected
                self._mm.close()
            self._mm = None
        if self._file is not None:
            if sync:
                fsync_file(self._file.fileno())
            self._file.close()
            self._file = None

    def _release(self, *, unlink_lock: bool) -> None:
        """Release the shard lock (removing its file once the shard is registered)."""
        if self._lock is not None:
            if unlink_lock:
                unlink(self.paths.lock)
            self._lock.close()
            self._lock = None
