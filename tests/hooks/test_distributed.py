"""Data-parallel capture under torchrun (gloo, 2 processes on CPU): the store equals a single process's run."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from xlprobe.hooks.distributed import EXIT_AFTER_PART, launch_command, parts_dir, save_part
from xlprobe.hooks.extract import extract
from xlprobe.hooks.plan import plan_capture
from xlprobe.hooks.runner import PlanRunner
from xlprobe.store import ActivationStore
from xlprobe.tasks.bible import load_bible

_OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
_VOLATILE = {"created"}  # entry fields that record when, not what
_VOLATILE_INFO = {"time", "command"}


@pytest.fixture(scope="module")
def verses():
    return load_bible(translations=["k", "l", "e"], books=["Ruth"], limit=40, seed=0)


def _env(**extra: str) -> dict[str, str]:
    """This environment, offline, outside any torchrun group, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, **_OFFLINE, **extra}


def _same_store(a: ActivationStore, b: ActivationStore) -> None:
    """Same shards (bytes, checksums, manifest entries but for times and commands) and records."""
    assert sorted(k.id for k in a.keys()) == sorted(k.id for k in b.keys()) and a.keys()
    for k in a.keys():
        assert np.array_equal(np.asarray(a.read(k)), np.asarray(b.read(k))), k.point
        ea, eb = a.entry(k), b.entry(k)
        for e in (ea, eb):
            for f in _VOLATILE:
                e.pop(f, None)
            for f in _VOLATILE_INFO:
                e["info"].pop(f, None)
        assert ea == eb
    assert a.manifest["records"] == b.manifest["records"]


def _clean(store: ActivationStore) -> None:
    """A sound store: verify passes, no temp, progress, lock or part files left."""
    assert store.verify() == []
    left = [p.name for p in (store.path / "shards").iterdir() if not p.name.endswith(".safetensors")]
    assert left == []


def test_launch_command_drops_nproc():
    cmd = launch_command(2, ["capture", "--nproc", "2", "-m", "tiny:bert", "--nproc=3", "-o", "x"])
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    assert cmd[5:] == ["-m", "xlprobe", "capture", "-m", "tiny:bert", "-o", "x"]


def test_parts_of_an_earlier_run_are_reused_not_recomputed(tmp_path, tiny_model, verses):
    model, tok = tiny_model("mbart")
    ref = ActivationStore.open(tmp_path / "ref")
    keys = extract(model, tok, verses, "encoder.*", batch_size=8, chunk_size=32, store=ref)
    store = ActivationStore.open(tmp_path / "st")
    plan = plan_capture(model, tok, verses, "encoder.*", batch_size=8, chunk_size=32)
    first = plan.batches(*plan.chunks()[1])[0]  # a batch of chunk 1, "computed" by a rank of a killed run
    rows = PlanRunner(model, plan)(first)
    save_part(parts_dir(store, dict(zip([p.name for p in plan.points], keys))), 1, 1, 2, first,
              {n: np.full_like(v, 7.0) for n, v in rows.items()})
    assert extract(model, tok, verses, "encoder.*", batch_size=8, chunk_size=32, store=store) == keys
    for k in keys:
        got, want = np.asarray(store.read(k)), np.asarray(ref.read(k))
        assert (got[first] == 7.0).all()  # taken from the part file, not recomputed
        rest = np.setdiff1d(np.arange(len(verses)), first)
        assert np.array_equal(got[rest], want[rest])
    _clean(store)


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
    args = ["capture", "-m", "tiny:mbart", "-d", "bible:en,fr?books=Ruth", "--limit", "20", "-b", "8"]
    one = subprocess.run([sys.executable, "-m", "xlprobe", *args, "-o", str(tmp_path / "one")], env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "xlprobe", *args, "-o", str(tmp_path / "two"), "--nproc", "2"],
                         env=_env(), capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-3000:]
    assert two.stdout.count("wrote 4 shard(s)") == 1  # rank 0 reports
    a, b = ActivationStore.open(tmp_path / "one", create=False), ActivationStore.open(tmp_path / "two", create=False)
    _same_store(a, b)
    _clean(b)


_SCRIPT = textwrap.dedent("""
    import sys
    from xlprobe.hooks.extract import extract
    from xlprobe.store import ActivationStore
    from xlprobe.tasks.bible import load_bible
    from xlprobe.tiny import build
    model, tok = build("mbart", seed=0)
    ds = load_bible(translations=["k", "l", "e"], books=["Ruth"], limit=40, seed=0)
    for _ in range(2):  # the second call finds every shard complete (and the process group already joined)
        extract(model, tok, ds, "encoder.*", batch_size=8, chunk_size=32, store=ActivationStore.open(sys.argv[1]))
    print("done")
""")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model, verses):
    """The script's capture in this one process: (keys, store)."""
    model, tok = tiny_model("mbart")
    ref = ActivationStore.open(tmp_path_factory.mktemp("ref") / "ref")
    return extract(model, tok, verses, "encoder.*", batch_size=8, chunk_size=32, store=ref), ref


def _torchrun_script(tmp_path, out, **env: str) -> subprocess.CompletedProcess:
    """Run the capture script in two processes under torch.distributed.run."""
    script = tmp_path / "capture.py"
    script.write_text(_SCRIPT)
    return subprocess.run([*launch_command(2, [])[:5], str(script), str(out)], env=_env(**env),
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_python_api_under_torchrun(tmp_path, reference):
    proc = _torchrun_script(tmp_path, tmp_path / "two")
    assert proc.returncode == 0 and proc.stdout.count("done") == 2, proc.stderr[-3000:]
    store = ActivationStore.open(tmp_path / "two", create=False)
    _same_store(store, reference[1])
    _clean(store)


@pytest.mark.slow
def test_killed_rank_then_one_process_resumes(tmp_path, tiny_model, verses, reference):
    path = tmp_path / "killed"
    # 120 texts: 4 chunks of 32 (4 batches of 8 each, 2 per rank); rank 1 dies after its part of chunk 1
    proc = _torchrun_script(tmp_path, path, **{EXIT_AFTER_PART: "1:2"})
    assert proc.returncode != 0, proc.stderr[-3000:]
    store = ActivationStore.open(path, create=False)
    assert store.keys() == [] and store.verify() == []  # nothing half-written: no shard registered
    assert list((path / "shards").glob("*.parts/c000001-*.npz")), proc.stderr[-3000:]
    assert list((path / "shards").glob("*.parts/keys.json"))  # its shards listed: verify keeps it (resumable)
    assert not list((path / "shards").glob("*.parts/c000000-*"))  # chunk 0 committed, its parts removed
    model, tok = tiny_model("mbart")
    keys = extract(model, tok, verses, "encoder.*", batch_size=8, chunk_size=32, store=store)  # one process
    assert keys == reference[0]
    _same_store(store, reference[1])
    _clean(store)
