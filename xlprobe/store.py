"""The activation store: one safetensors shard per :class:`~xlprobe.types.StoreKey`, a JSON manifest as index.

Layout of a store directory (the manifest is the only index; nothing is found by listing files)::

    DIR/manifest.json                  {format, version, shards: {key id: entry}, records: {fp: entry}}
    DIR/.manifest.lock                 fcntl lock held around every manifest update
    DIR/shards/<id>.safetensors        finished shards, named by ``StoreKey.id``
    DIR/shards/<id>.safetensors.tmp    a shard being written: preallocated, rows written in place
    DIR/shards/<id>.progress.json      the temp file's committed chunks and their checksums
    DIR/shards/<id>.lock               held by the one writer of a shard (released if it is killed)
    DIR/records/<fp>.jsonl             records whose rows a shard holds, by ``Dataset.fingerprint``

A shard is a plain safetensors file: float32 ``states`` [n_rows, dim] then the small extra arrays,
so ``safetensors.numpy.load_file`` reads it. Writes go through a memory map of a temp file in row
chunks; each committed chunk is checksummed into the progress file, so a killed extraction resumes
with only the uncommitted chunks. Finished shards are renamed into place and then registered in the
manifest, which is rewritten atomically (temp file + ``os.replace``) under a lock.
"""
from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import logging
import mmap
import operator
import os
import re
import shlex
import struct
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import numpy as np

from xlprobe.errors import DataError, StoreCorruptError, StoreError, StoreMismatchError
from xlprobe.fingerprint import hash_array, hash_file
from xlprobe.types import Dataset, Record, StoreKey, records_fingerprint

__all__ = ["ActivationStore", "ShardWriter"]

logger = logging.getLogger(__name__)

FORMAT = "xlprobe.store"
VERSION = 1
MANIFEST = "manifest.json"
LOCK = ".manifest.lock"
STATES = "states"
_META = "__metadata__"
_ST_DTYPES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "int64": "I64", "int32": "I32",
    "int16": "I16", "int8": "I8", "uint64": "U64", "uint32": "U32", "uint16": "U16",
    "uint8": "U8", "bool": "BOOL",
}
_NP_DTYPES = {v: k for k, v in _ST_DTYPES.items()}
_FP_RE = re.compile(r"[0-9A-Za-z_-]{1,128}")


# ----------------------------------------------------------------------------- small file helpers
def _fsync_dir(path: Path) -> None:
    """fsync a directory so a rename in it survives a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync it and ``os.replace`` it onto ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _unlink(*paths: Path) -> None:
    """Remove files that may not exist."""
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)


def _pwrite_all(fd: int, data: Any, offset: int) -> None:
    """Write a whole buffer at ``offset`` (``os.pwrite`` may write less than asked)."""
    view = memoryview(data).cast("B")
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _checksum(path: Path, offset: int = 0, length: int | None = None) -> str:
    """Self-describing checksum of a file or a byte range of it."""
    return "blake2b:" + hash_file(path, offset=offset, length=length)


def _now() -> str:
    """UTC time, ISO 8601, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _describe(key: StoreKey) -> str:
    """A key as ``point=..., pooling=..., model=..., data=...`` for messages."""
    out = f"point={key.point!r}, pooling={key.pooling!r}, model={key.model!r}, data={key.data!r}"
    return out + (f", options={key.options!r}" if key.options else "")


def _key_json(key: StoreKey) -> str:
    """The key as canonical JSON (stored in each shard's safetensors metadata)."""
    return json.dumps(key.to_dict(), sort_keys=True)


# ----------------------------------------------------------------------------- validation
def _check_count(name: str, value: Any) -> int:
    """A positive int, or DataError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DataError(f"{name} must be a positive int; got {value!r}", hint=f"pass {name}=1 or more")
    return int(value)


def _check_chunks(chunks: Sequence[tuple[int, int]], n_rows: int) -> tuple[tuple[int, int], ...]:
    """(start, stop) ranges that tile [0, n_rows) in order, or DataError."""
    hint = f"chunks must be (start, stop) row ranges, in order, tiling [0, {n_rows}) (empty ones allowed)"
    out: list[tuple[int, int]] = []
    for i, c in enumerate(chunks):
        try:
            start, stop = (operator.index(v) for v in c)
        except (TypeError, ValueError):
            raise DataError(f"chunk {i} must be a (start, stop) pair of ints; got {c!r}", hint=hint) from None
        expected = out[-1][1] if out else 0
        if start != expected or stop < start:
            raise DataError(f"chunk {i} {c!r} should start at row {expected} and not end before it",
                            hint=hint)
        out.append((start, stop))
    if not out or out[-1][1] != n_rows:
        raise DataError(f"chunks end at row {out[-1][1] if out else 0}, not at n_rows={n_rows}", hint=hint)
    return tuple(out)


def _check_extras(extras: Mapping[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """Extra arrays as little-endian contiguous arrays, sorted by name, or DataError."""
    out: dict[str, np.ndarray] = {}
    for name in sorted(extras or {}):
        if not isinstance(name, str) or not name or name in (STATES, _META):
            raise DataError(f"extra array name {name!r} is not allowed",
                            hint=f"use any non-empty name but {STATES!r}")
        a = np.asarray(extras[name])  # type: ignore[index]
        if a.dtype.name not in _ST_DTYPES:
            raise DataError(
                f"extra array {name!r} has dtype {a.dtype}, which a safetensors file cannot hold",
                hint=f"cast it to one of {sorted(_ST_DTYPES)}",
            )
        out[name] = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
    return out


def _check_info(info: Mapping[str, Any] | None) -> dict[str, Any]:
    """Provenance as plain JSON (paths and other objects become strings), or DataError."""
    if info is None:
        return {}
    if not isinstance(info, Mapping):
        raise DataError(f"info must be a dict of provenance; got {type(info).__name__}",
                        hint="pass info={'model': ..., 'command': ...}")
    return json.loads(json.dumps(dict(info), default=str))


# ----------------------------------------------------------------------------- safetensors header
def _header_bytes(key: StoreKey, n_rows: int, dim: int, extras: Mapping[str, np.ndarray]) -> bytes:
    """The safetensors prefix: u64 length, JSON header padded with spaces to 8-byte alignment."""
    end = n_rows * dim * 4
    tensors: dict[str, Any] = {STATES: {"dtype": "F32", "shape": [n_rows, dim], "data_offsets": [0, end]}}
    for name, a in extras.items():
        tensors[name] = {"dtype": _ST_DTYPES[a.dtype.name], "shape": list(a.shape),
                         "data_offsets": [end, end + a.nbytes]}
        end += a.nbytes
    tensors[_META] = {"format": "np", "xlprobe.format": str(VERSION), "xlprobe.key": _key_json(key)}
    raw = json.dumps(tensors, separators=(",", ":")).encode()
    raw += b" " * (-(8 + len(raw)) % 8)
    return struct.pack("<Q", len(raw)) + raw


def _read_header(path: Path) -> tuple[dict[str, Any], int]:
    """Parse a safetensors header; return it and the offset where data starts (ValueError if bad)."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError("the file is shorter than a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n > 100_000_000:
            raise ValueError(f"header length {n} is implausible")
        raw = f.read(n)
    if len(raw) < n:
        raise ValueError("the header is cut short")
    header = json.loads(raw)
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")  # noqa: TRY004 (callers catch ValueError)
    return header, 8 + n


# ----------------------------------------------------------------------------- writer
class ShardWriter:
    """Writes one shard in place, in row chunks that commit with a checksum and survive a kill.

    Get one from :meth:`ActivationStore.writer`. Rows go into a memory map of a preallocated temp
    file at any row index (:meth:`write`); :meth:`commit` makes a chunk durable and releases its
    pages, so memory stays at about one chunk whatever ``n_rows``. Use it as a context manager:
    a clean exit finalizes once every chunk is committed; an exception keeps the temp file and its
    progress for a resume, which a new writer for the same key and layout picks up (:attr:`pending`).

    Attributes
    ----------
    key : StoreKey
        The shard's key.
    n_rows, dim : int
        Shape of ``states``.
    chunks : tuple of (int, int)
        Row ranges, in order, tiling ``[0, n_rows)``.
    path, tmp_path : pathlib.Path
        The finished shard and the temp file being written.
    """

    def __init__(self, store: ActivationStore, key: StoreKey, *, n_rows: int, dim: int,
                 chunks: tuple[tuple[int, int], ...], extras: dict[str, np.ndarray],
                 info: dict[str, Any], lock: BinaryIO) -> None:
        self.store, self.key, self.n_rows, self.dim, self.chunks = store, key, n_rows, dim, chunks
        self.info = info
        self.path = store._shard_path(key)
        self.tmp_path = self.path.with_name(self.path.name + ".tmp")
        self.progress_path = self.path.with_name(f"{key.id}.progress.json")
        self._extras = extras
        self._header = _header_bytes(key, n_rows, dim, extras)
        self._start = len(self._header)
        self._size = self._start + n_rows * dim * 4 + sum(a.nbytes for a in extras.values())
        self._layout = {"key": key.to_dict(), "n_rows": n_rows, "dim": dim,
                        "chunks": [list(c) for c in chunks],
                        "extras": {k: hash_array(a) for k, a in extras.items()}}
        self._starts = np.array([c[0] for c in chunks], dtype=np.int64)
        self._committed: dict[int, str] = {}
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
    def _open(self) -> None:
        """Resume a matching partial shard, or start a fresh temp file; then map it."""
        if not self.tmp_path.exists() and self.path.exists() and self.progress_path.exists():
            logger.info("recovering %s: renamed into place but never registered", self.path)
            os.replace(self.path, self.tmp_path)  # a crash inside finalize: resume from the tmp state
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
        _unlink(self.tmp_path, self.progress_path)
        fd = os.open(self.tmp_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            os.ftruncate(fd, self._size)
            os.fsync(fd)
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
        _atomic_write(self.progress_path, json.dumps(doc).encode())

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
        return _checksum(self.tmp_path, *self._region(chunk))

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
                            hint="pass an index into the chunks given to store.writer")
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
        committed = {**self._committed, chunk: self._chunk_checksum(chunk)}
        self._write_progress(committed)
        self._committed = committed
        self._written.pop(chunk, None)
        if length and hasattr(mmap, "MADV_DONTNEED"):  # drop the chunk's pages from RSS: they are on disk
            self._mm.madvise(mmap.MADV_DONTNEED, page, offset + length - page)  # type: ignore[union-attr]

    def finalize(self) -> None:
        """Seal the shard: fsync, checksum the file, rename it into place, add its manifest entry.

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
            "key": self.key.to_dict(), "file": self.path.relative_to(self.store.path).as_posix(),
            "size": self.tmp_path.stat().st_size, "checksum": _checksum(self.tmp_path),
            "shape": [self.n_rows, self.dim], "dtype": "float32", "chunks": len(self.chunks),
            "extras": {k: {"dtype": a.dtype.name, "shape": list(a.shape)} for k, a in self._extras.items()},
            "info": self.info, "created": _now(),
        }
        os.replace(self.tmp_path, self.path)
        _fsync_dir(self.path.parent)
        self.store._update(lambda m: m["shards"].__setitem__(self.key.id, entry))
        _unlink(self.progress_path)  # after the manifest: until then a reopen can recover the file
        self._release(unlink_lock=True)
        self._finalized = True
        logger.info("wrote shard %s (%s) [%d, %d]", self.path, _describe(self.key), self.n_rows, self.dim)

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
                os.fsync(self._file.fileno())
            self._file.close()
            self._file = None

    def _release(self, *, unlink_lock: bool) -> None:
        """Release the shard lock (removing its file once the shard is registered)."""
        if self._lock is not None:
            if unlink_lock:
                _unlink(self.store._lock_path(self.key))
            self._lock.close()
            self._lock = None


# ----------------------------------------------------------------------------- store
class ActivationStore:
    """A directory of activation shards, one per :class:`~xlprobe.types.StoreKey`, with a manifest.

    Open it with :meth:`open`. Writers resume after a kill; readers get read-only memory maps; the
    manifest (``manifest.json``) records size, checksum, shape and provenance of every shard and is
    the only index. Several processes may write different shards of one store at the same time.

    Parameters
    ----------
    path : str or os.PathLike
        The store directory.

    Examples
    --------
    >>> store = ActivationStore.open(tmp_path / "acts")                         # doctest: +SKIP
    >>> with store.writer(key, n_rows=n, dim=d, chunks=[(0, n)], info=info) as w:  # doctest: +SKIP
    ...     w.write(slice(0, n), states); w.commit(0)
    >>> X = store.read(key)                                                     # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._cache: tuple[tuple[int, ...], dict[str, Any]] | None = None
        self._verified: dict[str, tuple[Any, ...]] = {}

    def __repr__(self) -> str:
        return f"ActivationStore({str(self.path)!r}, {len(self._manifest()['shards'])} shards)"

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, create: bool = True) -> ActivationStore:
        """Open a store directory, creating it (with an empty manifest) unless ``create=False``.

        Raises
        ------
        StoreError
            If ``create=False`` and there is no store at ``path``, or ``path`` is a file.
        StoreCorruptError
            If the manifest is not valid JSON.
        """
        p = Path(path)
        if p.exists() and not p.is_dir():
            raise StoreError(f"{str(p)!r} is a file, not an activation store directory",
                             hint="pass a directory path")
        store = cls(p)
        if not (p / MANIFEST).exists():
            if not create:
                what = "does not exist" if not p.exists() else f"has no {MANIFEST}, so it is not a store"
                raise StoreError(f"activation store {str(p)!r} {what}",
                                 hint="check the path, or create the store with ActivationStore.open(path) "
                                      "(create=True) / `xlprobe extract ... --store DIR`")
            p.mkdir(parents=True, exist_ok=True)
            store._update(lambda m: None)
        store._manifest()
        return store

    # -- manifest -----------------------------------------------------------------------------
    @property
    def manifest(self) -> dict[str, Any]:
        """A copy of the manifest: ``format``, ``version``, ``shards`` {key id: entry}, ``records``."""
        return copy.deepcopy(self._manifest())

    def _manifest(self) -> dict[str, Any]:
        """The manifest, re-read only when the file changed (inode, size or times)."""
        mpath = self.path / MANIFEST
        try:
            st = mpath.stat()
        except FileNotFoundError:
            hint = "reopen it with ActivationStore.open(path) to start an empty store"
            raise StoreError(f"activation store {str(self.path)!r} has no {MANIFEST}", hint=hint) from None
        sig = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if self._cache is None or self._cache[0] != sig:
            self._cache = (sig, self._parse_manifest(mpath.read_bytes()))
        return self._cache[1]

    def _parse_manifest(self, raw: bytes) -> dict[str, Any]:
        """Decode and check a manifest."""
        mpath = self.path / MANIFEST
        try:
            m = json.loads(raw)
            if not isinstance(m, dict) or not isinstance(m.get("shards"), dict):
                raise ValueError("no 'shards' object")  # noqa: TRY004
        except ValueError as exc:
            raise StoreCorruptError(f"manifest {mpath} is not valid ({exc})",
                                    hint="it is written atomically, so something else damaged it: restore it "
                                         "from a backup, or move the store aside and rebuild it") from None
        if m.get("format") != FORMAT or not isinstance(m.get("version"), int) or m["version"] > VERSION:
            raise StoreMismatchError(f"manifest {mpath} is format {m.get('format')!r} version "
                                     f"{m.get('version')!r}; this xlprobe reads {FORMAT!r} up to {VERSION}",
                                     hint="upgrade xlprobe, or point at an xlprobe activation store")
        m.setdefault("records", {})
        return m

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the store's manifest lock (fcntl.flock, blocking)."""
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _update(self, change: Callable[[dict[str, Any]], Any]) -> None:
        """Re-read the manifest under the lock, apply ``change`` and write it back atomically."""
        mpath = self.path / MANIFEST
        with self._locked():
            if mpath.exists():
                m = self._parse_manifest(mpath.read_bytes())
            else:
                m = {"format": FORMAT, "version": VERSION, "shards": {}, "records": {}}
            change(m)
            _atomic_write(mpath, json.dumps(m, indent=1, ensure_ascii=False).encode("utf-8"))
            st = mpath.stat()
            self._cache = ((st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns), m)

    # -- shards -------------------------------------------------------------------------------
    def _shard_path(self, key: StoreKey) -> Path:
        """Where the finished shard of ``key`` lives."""
        return self.path / "shards" / f"{key.id}.safetensors"

    def _lock_path(self, key: StoreKey) -> Path:
        """The lock file held by the writer of ``key``."""
        return self.path / "shards" / f"{key.id}.lock"

    def _lock_shard(self, key: StoreKey) -> BinaryIO:
        """Take the shard's writer lock without waiting; StoreError if another writer holds it."""
        self._lock_path(key).parent.mkdir(exist_ok=True)
        f = open(self._lock_path(key), "ab")  # noqa: SIM115 (the lock lives as long as the writer)
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise StoreError(f"shard {key.id} ({_describe(key)}) is being written by another writer",
                             hint="let it finish or close it; a killed writer's lock is released") from None
        return f

    def has(self, key: StoreKey) -> bool:
        """True when ``key`` has a manifest entry and its file exists (a finished shard)."""
        entry = self._manifest()["shards"].get(key.id)
        return entry is not None and (self.path / entry["file"]).is_file()

    def keys(self, *, model: str | None = None, point: str | None = None, pooling: str | None = None,
             data: str | None = None, options: str | None = None) -> list[StoreKey]:
        """Keys of the manifest's shards that match every given field, in the order they were added."""
        given = {"model": model, "point": point, "pooling": pooling, "data": data, "options": options}
        want = {k: v for k, v in given.items() if v is not None}
        keys = [StoreKey(**e["key"]) for e in self._manifest()["shards"].values()]
        return [k for k in keys if all(getattr(k, f) == v for f, v in want.items())]

    def _entry(self, key: StoreKey) -> dict[str, Any]:
        """The manifest entry of ``key`` (not a copy), or StoreError."""
        shards = self._manifest()["shards"]
        if key.id not in shards:
            raise StoreError(f"no shard for {_describe(key)} in store {str(self.path)!r}",
                             hint=f"build it first (xlprobe extract ... --store {self.path}); "
                                  f"store.keys() lists the {len(shards)} shard(s) there")
        return shards[key.id]

    def entry(self, key: StoreKey) -> dict[str, Any]:
        """A copy of the manifest entry of ``key``: file, size, checksum, shape, extras, info, created."""
        return copy.deepcopy(self._entry(key))

    def writer(self, key: StoreKey, *, n_rows: int, dim: int, chunks: Sequence[tuple[int, int]],
               extras: Mapping[str, np.ndarray] | None = None,
               info: Mapping[str, Any] | None = None) -> ShardWriter:
        """Open a resumable writer for the shard of ``key``.

        Parameters
        ----------
        key : StoreKey
            The shard to write.
        n_rows, dim : int
            Shape of the float32 ``states`` array.
        chunks : sequence of (int, int)
            Row ranges, in order, tiling ``[0, n_rows)``: the units of commit and of resume.
        extras : dict of str to numpy.ndarray, optional
            Small arrays stored beside ``states`` (e.g. ``token_ids``, ``row_ptr``).
        info : dict, optional
            Provenance for the manifest entry (model, weights hash, tokenizer, versions, dataset
            slice, pooling, max_length, dtype, seed, time, and ``command``, which corruption errors
            quote as the way to rebuild).

        Returns
        -------
        ShardWriter
            Its :attr:`~ShardWriter.pending` lists the chunks left to write: all of them for a new
            shard, the uncommitted ones when a partial shard with the same layout exists (a partial
            shard with another layout is discarded).

        Raises
        ------
        DataError
            On bad shapes, chunks, extras or info.
        StoreError
            If the shard is already complete, or another writer holds it.
        StoreMismatchError
            If a complete shard of this key has another shape.
        """
        n_rows, dim = _check_count("n_rows", n_rows), _check_count("dim", dim)
        chunk_list = _check_chunks(chunks, n_rows)
        extra_arrays, info_json = _check_extras(extras), _check_info(info)
        lock = self._lock_shard(key)
        try:
            if self.has(key):
                shape = self._entry(key)["shape"]
                cls = StoreMismatchError if shape != [n_rows, dim] else StoreError
                raise cls(f"the shard for {_describe(key)} is already complete, shape {shape} "
                          f"(requested [{n_rows}, {dim}])",
                          hint="skip keys for which store.has(key) is True, or store.remove(key) to rebuild")
            w = ShardWriter(self, key, n_rows=n_rows, dim=dim, chunks=chunk_list, extras=extra_arrays,
                            info=info_json, lock=lock)
        except BaseException:
            _unlink(self._lock_path(key))  # safe while held: other writers never wait on it
            lock.close()
            raise
        try:
            w._open()
        except BaseException:
            w.close()
            raise
        return w

    def write(self, key: StoreKey, states: np.ndarray, *, extras: Mapping[str, np.ndarray] | None = None,
              info: Mapping[str, Any] | None = None) -> None:
        """Store an in-memory float array [n, d] as one single-chunk shard (small data, tests)."""
        states = np.asarray(states)
        if states.ndim != 2:
            raise DataError(f"states must be 2-D [n, d]; got shape {states.shape}", hint="reshape to [n, d]")
        n, d = states.shape
        with self.writer(key, n_rows=n, dim=d, chunks=[(0, n)], extras=extras, info=info) as w:
            if w.pending:
                w.write(slice(0, n), states)
                w.commit(0)

    def _corrupt(self, key: StoreKey, entry: Mapping[str, Any], path: Path, what: str) -> StoreCorruptError:
        """The error for a damaged shard, with the command that rebuilds it in the hint."""
        cmd = (entry.get("info") or {}).get("command")
        if isinstance(cmd, (list, tuple)):
            cmd = shlex.join(str(c) for c in cmd)
        rebuild = f"rebuild it with `{cmd}`" if cmd else "rebuild it by re-running the extraction behind it"
        return StoreCorruptError(f"shard {path} ({_describe(key)}) is corrupt: {what}",
                                 hint=f"{rebuild}, after dropping it with store.remove(key) "
                                      f"(or `xlprobe store verify {self.path} --repair`)")

    def _checked(self, key: StoreKey, *, verify: bool,
                 force: bool = False) -> tuple[Path, dict[str, Any], int]:
        """Check a shard's file (size always; checksum if ``verify``); return path, header, data start."""
        entry = self._entry(key)
        path = self.path / entry["file"]
        try:
            st = path.stat()
        except FileNotFoundError:
            raise self._corrupt(key, entry, path, "the file is missing") from None
        if st.st_size != entry["size"]:
            what = f"it has {st.st_size} bytes, the manifest records {entry['size']}"
            raise self._corrupt(key, entry, path, what)
        sig = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, entry["checksum"])
        if verify and (force or self._verified.get(key.id) != sig):
            actual = _checksum(path)
            if actual != entry["checksum"]:
                what = f"checksum {actual} differs from the manifest's {entry['checksum']}"
                raise self._corrupt(key, entry, path, what)
            self._verified[key.id] = sig
        try:
            header, start = _read_header(path)
            spec, meta = header[STATES], header.get(_META) or {}
            ok = (spec["dtype"] == "F32" and spec["shape"] == entry["shape"]
                  and meta.get("xlprobe.key") == _key_json(key))
        except (ValueError, KeyError, TypeError) as exc:
            raise self._corrupt(key, entry, path, f"its safetensors header is unreadable ({exc})") from None
        if not ok:
            raise self._corrupt(key, entry, path, "its header does not describe this key's float32 states")
        return path, header, start

    def read(self, key: StoreKey, *, verify: bool = True) -> np.ndarray:
        """The shard's states as a read-only, memory-mapped float32 array [n, d].

        Parameters
        ----------
        key : StoreKey
            The shard to read.
        verify : bool, default True
            Check the whole-file checksum (once per store object while the file is unchanged). The
            file size is always checked.

        Raises
        ------
        StoreError
            If the store has no shard for ``key``.
        StoreCorruptError
            If the file is missing, truncated or its checksum differs; the hint gives the command
            that rebuilds it.
        """
        path, header, start = self._checked(key, verify=verify)
        n, d = header[STATES]["shape"]
        offset = start + header[STATES]["data_offsets"][0]
        return np.memmap(path, dtype=np.dtype("<f4"), mode="r", offset=offset, shape=(n, d))

    def read_extras(self, key: StoreKey, *, verify: bool = True) -> dict[str, np.ndarray]:
        """The shard's extra arrays (e.g. ``token_ids``), read into memory; checks as :meth:`read`."""
        path, header, start = self._checked(key, verify=verify)
        out: dict[str, np.ndarray] = {}
        for name, spec in header.items():
            if name in (STATES, _META):
                continue
            native = np.dtype(_NP_DTYPES[spec["dtype"]])
            begin, end = spec["data_offsets"]
            count = (end - begin) // native.itemsize
            arr = np.fromfile(path, dtype=native.newbyteorder("<"), count=count, offset=start + begin)
            out[name] = arr.astype(native, copy=False).reshape(spec["shape"])
        return out

    def remove(self, key: StoreKey) -> None:
        """Delete the shard of ``key``: manifest entry first, then its file and any partial files.

        Does nothing when there is nothing to remove. StoreError if a writer holds the shard.
        """
        lock = self._lock_shard(key)
        try:
            self._update(lambda m: m["shards"].pop(key.id, None))
            path = self._shard_path(key)
            _unlink(path, path.with_name(path.name + ".tmp"), path.with_name(f"{key.id}.progress.json"))
            self._verified.pop(key.id, None)
            _unlink(self._lock_path(key))
        finally:
            lock.close()

    def verify(self, *, repair: bool = False) -> list[str]:
        """Re-check every shard (size, checksum, header) and records file; return the problems found.

        Parameters
        ----------
        repair : bool, default False
            Also drop what is damaged (manifest entry and file), so that re-running the command
            that built it (quoted in each problem) rebuilds just that.

        Returns
        -------
        list of str
            The text of the error :meth:`read` or :meth:`records` would raise for each damaged
            shard or records file, hint included. Empty when the store is sound.
        """
        problems: list[str] = []
        m = self._manifest()
        for entry in list(m["shards"].values()):
            key = StoreKey(**entry["key"])
            try:
                self._checked(key, verify=True, force=True)
            except StoreError as exc:
                problems.append(str(exc))
                if repair:
                    self.remove(key)
        for fp in list(m["records"]):
            try:
                self.records(fp)
            except StoreError as exc:
                problems.append(str(exc))
                if repair:
                    self._update(lambda m, fp=fp: m["records"].pop(fp, None))
                    _unlink(self._records_path(fp))
        return problems

    # -- records ------------------------------------------------------------------------------
    def _records_path(self, data_fp: str) -> Path:
        """Where the records of a dataset fingerprint live (DataError for a malformed fingerprint)."""
        if not isinstance(data_fp, str) or not _FP_RE.fullmatch(data_fp):
            raise DataError(f"{data_fp!r} is not a dataset fingerprint", hint="pass Dataset.fingerprint")
        return self.path / "records" / f"{data_fp}.jsonl"

    def write_records(self, dataset: Dataset) -> str:
        """Save a dataset's records as ``records/<fingerprint>.jsonl`` (atomic, idempotent).

        Returns
        -------
        str
            The dataset's fingerprint, the ``data`` field of its shards' keys.
        """
        if not isinstance(dataset, Dataset):
            raise DataError(f"write_records takes an xlprobe.types.Dataset; got {type(dataset).__name__}",
                            hint="wrap records with Dataset(name, records)")
        fp = dataset.fingerprint
        path = self._records_path(fp)
        try:
            self.records(fp)  # already there and intact: keep it
            fresh = False
        except StoreError:
            fresh = True
        if fresh:
            path.parent.mkdir(exist_ok=True)
            lines = (json.dumps(r.to_dict(), ensure_ascii=False, sort_keys=True) + "\n" for r in dataset)
            _atomic_write(path, "".join(lines).encode("utf-8"))
        entry = {"file": path.relative_to(self.path).as_posix(), "name": dataset.name, "n": len(dataset),
                 "meta": _check_info(dataset.meta)}
        if self._manifest()["records"].get(fp) != entry:
            self._update(lambda m: m["records"].__setitem__(fp, entry))
        return fp

    def records(self, data_fp: str) -> Dataset:
        """The dataset saved under ``data_fp``, its fingerprint checked; name and meta from the manifest.

        Raises
        ------
        StoreError
            If no records are saved under ``data_fp``.
        StoreCorruptError
            If the file does not parse or its fingerprint is not ``data_fp``.
        """
        path = self._records_path(data_fp)
        entry = self._manifest()["records"].get(data_fp) or {}
        hint = "rewrite it with store.write_records(dataset) from the original dataset"
        if not path.is_file():
            raise StoreError(f"no records {data_fp!r} in store {str(self.path)!r}", hint=hint)
        try:
            lines = path.read_text("utf-8").splitlines()
            recs = tuple(Record.from_dict(json.loads(line)) for line in lines if line)
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreCorruptError(f"records file {path} does not parse ({exc})", hint=hint) from None
        got = records_fingerprint(recs)
        if got != data_fp:
            raise StoreCorruptError(f"records file {path} has fingerprint {got}, not {data_fp}", hint=hint)
        return Dataset(entry.get("name", data_fp), recs, copy.deepcopy(entry.get("meta", {})))
