"""The activation store: one safetensors shard per :class:`~xlprobe.types.StoreKey`, a JSON manifest as index.

Layout of a store directory (the manifest is the only index; nothing is found by listing files)::

    DIR/manifest.json                  {format, version, shards: {key id: entry}, records: {fp: entry}}
    DIR/.manifest.lock                 fcntl lock held around every manifest update
    DIR/shards/<id>.safetensors        finished shards, named by ``StoreKey.id``
    DIR/shards/<id>.safetensors.tmp    a shard being written: preallocated, rows written in place
    DIR/shards/<id>.progress.json      the temp file's committed chunks and their checksums
    DIR/shards/<id>.lock               held by the one writer of a shard (released if it is killed)
    DIR/records/<fp>.jsonl             records whose rows a shard holds, by ``Dataset.fingerprint``

A shard is a plain safetensors file (``safetensors.numpy.load_file`` reads it), written in resumable
row chunks by a :class:`ShardWriter`, renamed into place and then registered in the manifest.

The store depends on the shard layer, never the reverse: :mod:`xlprobe.shard` holds the file format
and reading helpers, :mod:`xlprobe.shard_writer` the writer (re-exported here), which the store gives
its paths and an ``on_complete`` callback that registers the shard; :mod:`xlprobe.manifest` holds the
manifest file, :mod:`xlprobe.durable` atomic writes, fsync and checksums.
"""
from __future__ import annotations

import copy
import fcntl
import functools
import json
import os
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from xlprobe.durable import atomic_write, unlink
from xlprobe.errors import DataError, StoreCorruptError, StoreError, StoreMismatchError
from xlprobe.manifest import MANIFEST, Manifest
from xlprobe.shard import (
    VERSION,
    ShardLayout,
    ShardPaths,
    describe_key,
    file_checksum,
    header_matches,
    read_extras,
    read_header,
    read_states,
)
from xlprobe.shard_writer import ShardWriter
from xlprobe.store_parts import stale_parts
from xlprobe.types import Dataset, Record, StoreKey, records_fingerprint

__all__ = ["ActivationStore", "ShardWriter"]

_FP_RE = re.compile(r"[0-9A-Za-z_-]{1,128}")


# ----------------------------------------------------------------------------- validation
def _check_info(info: Mapping[str, Any] | None) -> dict[str, Any]:
    """Provenance as plain JSON (paths and other objects become strings), or DataError."""
    if info is None:
        return {}
    if not isinstance(info, Mapping):
        raise DataError(f"info must be a dict of provenance; got {type(info).__name__}",
                        hint="pass info={'model': ..., 'command': ...}")
    return json.loads(json.dumps(dict(info), default=str))


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
        self._index = Manifest(self.path, VERSION)
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
                                 hint="check the path; a store is created by `xlprobe capture ... --out DIR` "
                                      "(from Python: ActivationStore.open(path), create=True)")
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
        """The manifest (not a copy), re-read only when the file changed."""
        return self._index.load()

    def _update(self, change: Callable[[dict[str, Any]], Any]) -> None:
        """Re-read the manifest under its lock, apply ``change`` and write it back atomically."""
        self._index.update(change)

    # -- shards -------------------------------------------------------------------------------
    def _paths(self, key: StoreKey) -> ShardPaths:
        """The files of the shard of ``key``: finished, temp, progress and writer lock."""
        d = self.path / "shards"
        return ShardPaths(final=d / f"{key.id}.safetensors", tmp=d / f"{key.id}.safetensors.tmp",
                          progress=d / f"{key.id}.progress.json", lock=d / f"{key.id}.lock")

    def _lock_shard(self, key: StoreKey) -> BinaryIO:
        """Take the shard's writer lock without waiting; StoreError if another writer holds it."""
        lock_path = self._paths(key).lock
        lock_path.parent.mkdir(exist_ok=True)
        f = open(lock_path, "ab")  # noqa: SIM115 (the lock lives as long as the writer)
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise StoreError(f"shard {key.id} ({describe_key(key)}) is being written by another writer",
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
            raise StoreError(f"no shard for {describe_key(key)} in store {str(self.path)!r}",
                             hint=f"build it first (`xlprobe capture ... --out {self.path}`); `xlprobe store ls "
                                  f"{self.path}` (store.keys()) lists the {len(shards)} shard(s) there")
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
        layout, info_json = ShardLayout.checked(n_rows, dim, chunks, extras), _check_info(info)
        paths = self._paths(key)
        lock = self._lock_shard(key)
        try:
            self._refuse_complete(key, layout)
            w = ShardWriter(key, layout, paths=paths, info=info_json, lock=lock,
                            on_complete=functools.partial(self._register, key))
        except BaseException:
            unlink(paths.lock)  # safe while held: other writers never wait on it
            lock.close()
            raise
        return w.open()  # it closes itself (and so unlocks) if opening fails

    def _refuse_complete(self, key: StoreKey, layout: ShardLayout) -> None:
        """StoreError (StoreMismatchError for another shape) if the shard of ``key`` is complete."""
        if not self.has(key):
            return
        shape, want = self._entry(key)["shape"], [layout.n_rows, layout.dim]
        cls = StoreMismatchError if shape != want else StoreError
        raise cls(f"the shard for {describe_key(key)} is already complete, shape {shape} (requested {want})",
                  hint="skip keys for which store.has(key) is True, or store.remove(key) to rebuild")

    def _register(self, key: StoreKey, entry: Mapping[str, Any]) -> None:
        """Add a finished shard's manifest entry (the writer's ``on_complete``)."""
        rel = self._paths(key).final.relative_to(self.path).as_posix()
        full = {"key": entry["key"], "file": rel, **entry}
        self._update(lambda m: m["shards"].__setitem__(key.id, full))

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
        return StoreCorruptError(f"shard {path} ({describe_key(key)}) is corrupt: {what}",
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
            actual = file_checksum(path)
            if actual != entry["checksum"]:
                what = f"checksum {actual} differs from the manifest's {entry['checksum']}"
                raise self._corrupt(key, entry, path, what)
            self._verified[key.id] = sig
        try:
            header, start = read_header(path)
            ok = header_matches(header, key, entry["shape"])
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
        return read_states(*self._checked(key, verify=verify))

    def read_extras(self, key: StoreKey, *, verify: bool = True) -> dict[str, np.ndarray]:
        """The shard's extra arrays (e.g. ``token_ids``), read into memory; checks as :meth:`read`."""
        return read_extras(*self._checked(key, verify=verify))

    def remove(self, key: StoreKey) -> None:
        """Delete the shard of ``key``: manifest entry first, then its file and any partial files.

        Does nothing when there is nothing to remove. StoreError if a writer holds the shard.
        """
        lock = self._lock_shard(key)
        try:
            self._update(lambda m: m["shards"].pop(key.id, None))
            paths = self._paths(key)
            unlink(paths.final, paths.tmp, paths.progress)
            self._verified.pop(key.id, None)
            unlink(paths.lock)
        finally:
            lock.close()

    def verify(self, *, repair: bool = False) -> list[str]:
        """Re-check every shard (size, checksum, header) and records file; return the problems found.

        Parameters
        ----------
        repair : bool, default False
            Also drop what is damaged (manifest entry and file), so that re-running the command
            that built it (quoted in each problem) rebuilds just that, and the stale part folders
            of data-parallel captures (:mod:`xlprobe.store_parts`: no unfinished shard resumes from them).

        Returns
        -------
        list of str
            The text of the error :meth:`read` or :meth:`records` would raise for each damaged
            shard or records file, hint included, and one per stale part folder (its size
            included). Empty when the store is sound.
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
                    unlink(self._records_path(fp))
        done = {i for i, e in self._manifest()["shards"].items() if (self.path / e["file"]).is_file()}
        return problems + stale_parts(self.path / "shards", done.__contains__, repair=repair)

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
        self._manifest()  # a store opened with open(): else its clear StoreError, before anything is written
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
            atomic_write(path, "".join(lines).encode("utf-8"))
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
