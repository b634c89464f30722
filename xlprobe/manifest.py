"""The manifest of an activation store: one JSON file, the store's only index.

``DIR/manifest.json`` holds ``{format, version, shards: {key id: entry}, records: {fp: entry}}``.
It is re-read only when the file changed, and every update re-reads it under an fcntl lock
(``DIR/.manifest.lock``), applies a change and rewrites it atomically (:mod:`xlprobe.durable`), so
several processes can register shards in one store at the same time. This module knows nothing of
shards; :class:`xlprobe.store.ActivationStore` decides what goes in the entries.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from xlprobe.durable import atomic_write
from xlprobe.errors import StoreCorruptError, StoreError, StoreMismatchError

__all__ = ["FORMAT", "LOCK", "MANIFEST", "Manifest"]

FORMAT = "xlprobe.store"
MANIFEST = "manifest.json"
LOCK = ".manifest.lock"


class Manifest:
    """The manifest file of the store directory ``root``, readable up to format ``version``.

    Parameters
    ----------
    root : pathlib.Path
        The store directory.
    version : int
        The newest manifest version this xlprobe reads (and the one it writes into a new manifest).
    """

    def __init__(self, root: Path, version: int) -> None:
        self.root, self.version = root, version
        self.path = root / MANIFEST
        self._cache: tuple[tuple[int, ...], dict[str, Any]] | None = None

    def load(self) -> dict[str, Any]:
        """The manifest (not a copy), re-read only when the file changed (inode, size or times)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            hint = "reopen it with ActivationStore.open(path) to start an empty store"
            raise StoreError(f"activation store {str(self.root)!r} has no {MANIFEST}", hint=hint) from None
        sig = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if self._cache is None or self._cache[0] != sig:
            self._cache = (sig, self._parse(self.path.read_bytes()))
        return self._cache[1]

    def _parse(self, raw: bytes) -> dict[str, Any]:
        """Decode and check a manifest."""
        try:
            m = json.loads(raw)
            if not isinstance(m, dict) or not isinstance(m.get("shards"), dict):
                raise ValueError("no 'shards' object")  # noqa: TRY004
        except ValueError as exc:
            raise StoreCorruptError(f"manifest {self.path} is not valid ({exc})",
                                    hint="it is written atomically, so something else damaged it: restore it "
                                         "from a backup, or move the store aside and rebuild it") from None
        fmt, version = m.get("format"), m.get("version")
        if fmt != FORMAT or not isinstance(version, int) or version > self.version:
            raise StoreMismatchError(f"manifest {self.path} is format {fmt!r} version {version!r}; "
                                     f"this xlprobe reads {FORMAT!r} up to {self.version}",
                                     hint="upgrade xlprobe, or point at an xlprobe activation store")
        m.setdefault("records", {})
        return m

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the manifest lock (fcntl.flock, blocking)."""
        fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def update(self, change: Callable[[dict[str, Any]], Any]) -> None:
        """Re-read the manifest under the lock, apply ``change`` to it and write it back atomically."""
        with self._locked():
            if self.path.exists():
                m = self._parse(self.path.read_bytes())
            else:
                m = {"format": FORMAT, "version": self.version, "shards": {}, "records": {}}
            change(m)
            atomic_write(self.path, json.dumps(m, indent=1, ensure_ascii=False).encode("utf-8"))
            st = self.path.stat()
            self._cache = ((st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns), m)
