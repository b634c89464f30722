"""Store writes on a background thread, so that the next batch's forward pass runs while they happen.

Why: a capture into the store alternates a forward pass with host work on its result: copying the
pooled rows into the shard's memory map, and at the end of each chunk a commit (``msync`` of the chunk's
pages, a BLAKE2 checksum of its bytes, the progress file written atomically with ``fsync``). On a CPU the
forward dominates; on a GPU the forward of a batch is short and the device would sit idle while the host
writes. :class:`Committer` runs those jobs in order on one thread (the store keeps a single writer:
jobs never run concurrently with each other), while the caller goes on to the next batch. ``msync``,
``fsync``, file writes and hashing release the GIL, and so does torch's forward.

What it keeps: every job runs in submission order, so a chunk commits only after all its rows were
written; a queue of ``depth`` jobs bounds the rows held in memory; a job's error stops the jobs after it
(nothing later is committed) and is raised on the caller's thread at its next :meth:`Committer.submit`
or at :meth:`Committer.drain`. When the caller stops with an exception of its own (Ctrl-C, a failed
forward pass), the jobs already queued still run: rows computed before the interruption are committed,
not lost, and a rerun resumes after them.
"""
from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from types import TracebackType

from xlprobe.errors import ConfigError

__all__ = ["Committer"]

log = logging.getLogger(__name__)

_STOP = object()


class Committer:
    """Runs a capture's store writes and chunk commits in order, on one background thread.

    Parameters
    ----------
    depth : int, default 4
        Jobs that may wait in the queue; :meth:`submit` blocks beyond that, so at most ``depth`` batches of
        pooled rows are held besides the store's memory map.
    background : bool, default True
        False runs each job at once on the caller's thread (the serial path: for comparison, debugging,
        and where a second thread is unwelcome).

    Use it as a context manager; leaving the block drains the queue (see the module docstring for what
    happens on an error).
    """

    def __init__(self, depth: int = 4, *, background: bool = True) -> None:
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
            raise ConfigError(f"depth must be a positive int; got {depth!r}",
                              hint="depth=4 lets four batches wait for the store")
        self.depth, self.background = depth, background
        self._jobs: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None  # the first job error; kept: later jobs are skipped
        self._raised = False
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        state = "running" if self._thread is not None else "idle"
        return f"Committer(depth={self.depth}, background={self.background}, {state})"

    def __enter__(self) -> Committer:  # noqa: PYI034 (not subclassed)
        if self.background:
            self._thread = threading.Thread(target=self._work, name="xlprobe-committer", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self._stop()
        finally:
            if exc_type is None:
                self._raise()
            elif self._error is not None and not self._raised:
                log.error("a store write failed too, after the error being raised: %r", self._error)

    def submit(self, job: Callable[[], object]) -> None:
        """Queue ``job`` (blocking while ``depth`` jobs wait); raises the error of an earlier job first."""
        self._raise()
        if self._thread is None:
            if self.background:
                raise ConfigError("the committer is not running", hint="use it as `with Committer() as c:`")
            job()
            return
        self._jobs.put(job)

    def drain(self) -> None:
        """Wait until every queued job has run; raise the first job error."""
        if self._thread is not None:
            self._jobs.join()
        self._raise()

    def _raise(self) -> None:
        """Raise a failed job's error on the caller's thread (once)."""
        if self._error is not None and not self._raised:
            self._raised = True
            raise self._error

    def _stop(self) -> None:
        """Let the queued jobs run, then end the thread."""
        if self._thread is not None:
            self._jobs.put(_STOP)
            self._thread.join()
            self._thread = None

    def _work(self) -> None:
        """The thread: run jobs in order; after a failure, skip the rest (nothing later may commit)."""
        while True:
            job = self._jobs.get()
            try:
                if job is _STOP:
                    return
                if self._error is None:
                    job()  # type: ignore[operator]
            except BaseException as e:  # noqa: BLE001 (re-raised on the caller's thread)
                self._error = e
            finally:
                self._jobs.task_done()
