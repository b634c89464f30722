"""Stale part folders of data-parallel captures: `store verify` reports them, `--repair` removes them; live ones stay."""
from __future__ import annotations

import fcntl

import numpy as np
from typer.testing import CliRunner

from xlprobe.cli import app
from xlprobe.store import ActivationStore
from xlprobe.store_parts import KEYS_FILE, group_dir, read_group, write_group
from xlprobe.types import StoreKey

runner = CliRunner()


def _key(point: str) -> StoreKey:
    return StoreKey("m" * 16, point, "mean", "d" * 16, "")


def _complete(store: ActivationStore, key: StoreKey) -> None:
    store.write(key, np.ones((4, 3), np.float32))


def _unfinished(store: ActivationStore, key: StoreKey) -> None:
    """A shard a killed capture left: temp and progress files, chunk 0 committed, chunk 1 pending."""
    w = store.writer(key, n_rows=4, dim=3, chunks=[(0, 2), (2, 4)])
    w.write(slice(0, 2), np.ones((2, 3), np.float32))
    w.commit(0)
    w.close()


def _plant(store: ActivationStore, keys: list[StoreKey] | None, ids: list[str], size: int = 3 << 20):
    """A part folder of the capture of ``ids`` holding one part of ``size`` bytes (``keys.json`` unless keys is None)."""
    folder = group_dir(store.path / "shards", ids)
    if keys is not None:
        write_group(folder, [k.id for k in keys])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "c000001-w2r1-0123abcd.npz").write_bytes(b"\0" * size)
    return folder


def test_keys_file_round_trip(tmp_path):
    write_group(tmp_path / "g.parts", ["b", "a"])
    assert read_group(tmp_path / "g.parts") == ["a", "b"]
    assert read_group(tmp_path / "none.parts") is None
    assert group_dir(tmp_path, ["b", "a"]) == group_dir(tmp_path, iter(["a", "b"]))


def test_stale_folder_reported_and_repaired_live_one_kept(tmp_path):
    store = ActivationStore.open(tmp_path / "st")
    done, gone, live = _key("encoder.0"), _key("encoder.1"), _key("encoder.2")
    _complete(store, done)
    _unfinished(store, live)
    stale = _plant(store, [done, gone], [done.id, gone.id])  # one shard complete, one with no temp file
    kept = _plant(store, [done, live], [done.id, live.id])  # `live` resumes from it
    problems = store.verify()
    assert len(problems) == 1 and "stale part folder" in problems[0] and stale.name in problems[0]
    assert "3.0 MiB" in problems[0] and "2 file(s)" in problems[0] and "--repair" in problems[0]
    assert store.verify(repair=True) == problems
    assert not stale.exists() and (kept / "c000001-w2r1-0123abcd.npz").is_file()
    assert store.verify() == []
    assert not (store.path / "shards" / f"{gone.id}.lock").exists()  # no lock file left behind by verify
    assert store.keys() == [done]


def test_folder_kept_while_a_writer_holds_a_shard_lock(tmp_path):
    store = ActivationStore.open(tmp_path / "st")
    key = _key("encoder.0")
    folder = _plant(store, [key], [key.id])
    lock = store.path / "shards" / f"{key.id}.lock"
    with open(lock, "ab") as f:  # a writer that took its lock and has not created its temp file yet
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert store.verify(repair=True) == [] and folder.is_dir()
    assert len(store.verify(repair=True)) == 1 and not folder.exists()


def test_folder_without_keys_file_is_stale_only_when_nothing_can_resume(tmp_path):
    store = ActivationStore.open(tmp_path / "st")
    old = _plant(store, None, ["x"], size=10)
    assert not (old / KEYS_FILE).exists()
    _unfinished(store, _key("encoder.0"))  # some shard could resume: maybe from this folder
    assert store.verify(repair=True) == [] and old.is_dir()
    store.remove(_key("encoder.0"))  # the unfinished shard dropped: nothing resumes from the folder now
    problems = store.verify(repair=True)
    assert len(problems) == 1 and "lists no shards" in problems[0] and not old.exists()


def test_cli_verify_exit_code_and_repair(tmp_path):
    store = ActivationStore.open(tmp_path / "st")
    key = _key("encoder.0")
    _complete(store, key)
    folder = _plant(store, [key], [key.id])
    res = runner.invoke(app, ["store", "verify", str(store.path)])
    assert res.exit_code == 1 and "stale part folder" in res.output and "MiB" in res.output
    res = runner.invoke(app, ["store", "verify", str(store.path), "--repair"])
    assert res.exit_code == 0 and "stale part folders removed" in res.output and not folder.exists()
    res = runner.invoke(app, ["store", "verify", str(store.path)])
    assert res.exit_code == 0 and "verified" in res.output
