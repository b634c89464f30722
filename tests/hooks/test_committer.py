"""Store writes overlapped with the forward pass: the Committer thread, and write_plan built on it."""
from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest

from xlprobe.durable import remove_orphan_temps
from xlprobe.errors import ConfigError
from xlprobe.hooks.committer import Committer
from xlprobe.hooks.plan import plan_capture
from xlprobe.hooks.runner import PendingRows, PlanRunner
from xlprobe.hooks.writing import write_plan
from xlprobe.shard_writer import ShardWriter
from xlprobe.store import ActivationStore
from xlprobe.tasks.bible import load_bible


@pytest.fixture(scope="module")
def verses():
    return load_bible(translations=["k", "l", "e"], books=["Ruth"], limit=40, seed=0)


# ----------------------------------------------------------------------------- the Committer alone
@pytest.mark.parametrize("background", [True, False])
def test_jobs_run_in_submission_order(background):
    done = []
    with Committer(depth=2, background=background) as jobs:
        for i in range(50):
            jobs.submit(lambda i=i: done.append(i))
        jobs.drain()
        assert done == list(range(50))


def test_a_failed_job_stops_the_later_ones_and_is_raised_once_on_the_caller():
    done = []

    def fail():
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"), Committer(depth=8) as jobs:
        jobs.submit(lambda: done.append(1))
        jobs.submit(fail)
        jobs.submit(lambda: done.append(3))  # may be queued before the failure is seen
        jobs.drain()
    assert done == [1]  # the job after the failure never ran


def test_the_callers_own_error_lets_queued_jobs_finish():
    gate, done = threading.Event(), []
    with pytest.raises(KeyboardInterrupt), Committer(depth=4) as jobs:
        jobs.submit(lambda: gate.wait(10))
        for i in range(3):
            jobs.submit(lambda i=i: done.append(i))
        gate.set()
        raise KeyboardInterrupt
    assert done == [0, 1, 2]  # computed before the interruption: written, not lost


def test_submit_blocks_while_depth_jobs_wait():
    gate, running, jobs = threading.Event(), threading.Event(), Committer(depth=2)
    with jobs:
        jobs.submit(lambda: (running.set(), gate.wait(10)))
        assert running.wait(10)  # the worker holds the first job; the queue is empty
        jobs.submit(lambda: None)
        jobs.submit(lambda: None)  # the queue is now full
        extra = threading.Thread(target=jobs.submit, args=(lambda: None,))
        extra.start()
        extra.join(0.3)
        assert extra.is_alive()  # held back: memory stays bounded
        gate.set()
        extra.join(10)
        assert not extra.is_alive()


@pytest.mark.parametrize("depth", [0, -1, 1.5, True])
def test_bad_depth_is_refused(depth):
    with pytest.raises(ConfigError, match="depth"):
        Committer(depth=depth)


# ----------------------------------------------------------------------------- write_plan on top of it
def _plan(model, tok, verses):
    return plan_capture(model, tok, verses, "encoder.*", batch_size=8, chunk_size=24)


def test_the_next_chunks_forward_runs_while_a_chunk_commits(tmp_path, tiny_model, verses, monkeypatch):
    model, tok = tiny_model("mbart")
    plan = _plan(model, tok, verses)
    runner = PlanRunner(model, plan)
    second_chunk = threading.Event()
    lo, hi = plan.chunks()[1]

    class Watching:
        def submit(self, idx):
            if ((idx >= lo) & (idx < hi)).any():
                second_chunk.set()
            return runner.submit(idx)

        def __call__(self, idx):
            return runner(idx)

    original = ShardWriter.commit

    def commit(self, chunk, wait=10.0):
        if chunk == 0:  # chunk 0 commits only once chunk 1's forward has started: true only with overlap
            assert second_chunk.wait(wait), "chunk 1 never ran while chunk 0 was committing"
        original(self, chunk)

    monkeypatch.setattr(ShardWriter, "commit", commit)
    model.eval()
    keys = write_plan(ActivationStore.open(tmp_path / "overlap"), model, tok, plan, Watching())
    # the serial path cannot pass this: its commit waits (here 0.3 s) for a forward that comes after it
    second_chunk.clear()
    monkeypatch.setattr(ShardWriter, "commit", lambda self, c: commit(self, c, wait=0.3))
    with pytest.raises(AssertionError, match="chunk 1 never ran"):
        write_plan(ActivationStore.open(tmp_path / "serial"), model, tok, plan, Watching(), overlap=False)
    monkeypatch.setattr(ShardWriter, "commit", original)
    serial = ActivationStore.open(tmp_path / "serial2")
    keys2 = write_plan(serial, model, tok, plan, runner, overlap=False)
    store = ActivationStore.open(tmp_path / "overlap")
    assert keys == keys2
    for k in keys:
        assert np.array_equal(np.asarray(store.read(k)), np.asarray(serial.read(k)))  # same bytes either way
    assert store.verify() == []


def test_a_failed_commit_keeps_the_earlier_chunks_and_a_rerun_resumes(tmp_path, tiny_model, verses, monkeypatch):
    model, tok = tiny_model("mbart")
    model.eval()
    plan = _plan(model, tok, verses)
    original, calls = ShardWriter.commit, []

    def commit(self, chunk):
        if chunk == 2:
            raise OSError(28, "No space left on device")
        calls.append(chunk)
        original(self, chunk)

    monkeypatch.setattr(ShardWriter, "commit", commit)
    store = ActivationStore.open(tmp_path / "st")
    with pytest.raises(OSError, match="No space"):
        write_plan(store, model, tok, plan, PlanRunner(model, plan))
    assert sorted(set(calls)) == [0, 1]  # nothing after the failure committed
    monkeypatch.setattr(ShardWriter, "commit", original)
    ran = []
    runner = PlanRunner(model, plan)

    def counted(idx):
        ran.append(idx)
        return runner(idx)

    keys = write_plan(store, model, tok, plan, counted)
    resumed = {int(i) for idx in ran[1:] for i in idx}
    assert resumed == set(range(48, plan.n))  # only chunks 2.. ran again (chunk 0's dim probe aside)
    fresh = ActivationStore.open(tmp_path / "fresh")
    for k, r in zip(keys, write_plan(fresh, model, tok, plan, runner)):
        assert np.array_equal(np.asarray(store.read(k)), np.asarray(fresh.read(r)))


def test_pending_rows_check_finiteness_when_read(tiny_model, verses):
    from xlprobe.errors import NumericalError

    rows = PendingRows({"encoder.0": np.array([[1.0, np.inf]], np.float32)}, None, np.array([7]), "float16")
    with pytest.raises(NumericalError, match=r"encoder\.0 in dtype float16.*\[7\]"):
        rows.result()
    model, tok = tiny_model("mbart")
    plan = _plan(model, tok, verses)
    runner = PlanRunner(model, plan)
    idx = np.arange(8)
    got = runner.submit(idx)
    assert isinstance(got, PendingRows)
    assert all(np.array_equal(got.result()[n], v) for n, v in runner(idx).items())


# ----------------------------------------------------------------------------- orphan temp files
def test_orphan_temps_of_dead_processes_are_removed_live_ones_kept(tmp_path):
    target = tmp_path / ".abc.progress.json"
    target.write_text("{}")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    orphan = tmp_path / f".{target.name}.{dead}.0123abcd.tmp"
    live = tmp_path / f".{target.name}.1.0123abcd.tmp"  # pid 1 runs
    other = tmp_path / f".other.json.{dead}.0123abcd.tmp"
    for p in (orphan, live, other):
        p.write_text("half")
    assert remove_orphan_temps(target) == [orphan]
    assert not orphan.exists() and live.exists() and other.exists() and target.read_text() == "{}"


def test_in_memory_capture_reads_a_batch_after_launching_the_next(tiny_model, verses, monkeypatch):
    from xlprobe.hooks.extract import extract

    model, tok = tiny_model("mbart")
    ref = extract(model, tok, verses, "encoder.*", batch_size=8, chunk_size=24)
    events, original = [], PlanRunner.submit

    class Logged(PendingRows):
        def result(self):
            events.append(("read", int(self.idx[0])))
            return super().result()

    def submit(self, idx):
        got = original(self, idx)
        events.append(("run", int(idx[0])))
        return Logged(got.result(), None, got.idx, "float32")

    monkeypatch.setattr(PlanRunner, "submit", submit)
    events.clear()
    got = extract(model, tok, verses, "encoder.*", batch_size=8, chunk_size=24)
    kinds = [k for k, _ in events if k in ("run", "read")]
    assert kinds[:4] == ["run", "run", "read", "run"]  # batch 1 launched before batch 0 is read
    assert kinds.count("run") == kinds.count("read")
    assert all(np.array_equal(got[a], ref[a]) for a in ref)


def test_in_memory_extract_under_torchrun_says_it_is_not_split(tiny_model, monkeypatch, caplog):
    import logging

    from xlprobe.hooks.extract import extract

    model, tok = tiny_model("bert")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with caplog.at_level(logging.WARNING):
        got = extract(model, tok, ["a b c", "d e"], "encoder.0")
    assert "not split" in caplog.text and "store=" in caplog.text and got["encoder.0"].shape[0] == 2


def test_an_overflow_found_on_the_writer_thread_stops_the_store_capture(tmp_path, tiny_model):
    from xlprobe.errors import NumericalError
    from xlprobe.hooks.extract import extract

    model, tok = tiny_model("bert")
    texts = [f"Jesus wept, verse {i}." for i in range(40)]
    calls = []

    def overflow(module, args, output):  # the dims probe (1 record) passes; the 3rd batch overflows
        states = output[0] if isinstance(output, tuple) else output
        if states.shape[0] > 1:
            calls.append(1)
            if len(calls) == 3:
                states = states.clone()
                states[0, 0, 0] = float("inf")
                return (states, *output[1:]) if isinstance(output, tuple) else states
        return None

    h = model.encoder.layer[0].register_forward_hook(overflow)
    store = ActivationStore.open(tmp_path / "st")
    try:
        with pytest.raises(NumericalError, match="encoder"):  # found where the rows are read: the writer thread
            extract(model, tok, texts, "encoder.0", store=store, batch_size=4, chunk_size=8)
    finally:
        h.remove()
    assert store.keys() == [] and store.verify() == []
    keys = extract(model, tok, texts, "encoder.0", store=store, batch_size=4, chunk_size=8)  # resumes
    fresh = extract(model, tok, texts, "encoder.0")
    assert np.array_equal(np.asarray(store.read(keys[0])), fresh["encoder.0"])
