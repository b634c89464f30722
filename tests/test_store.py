"""Tests of xlprobe.store (activation shards, manifest, resume, corruption) and xlprobe.fingerprint."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from xlprobe import fingerprint
from xlprobe import shard as shard_mod
from xlprobe.errors import DataError, StoreCorruptError, StoreError, StoreMismatchError
from xlprobe.fingerprint import hash_array, hash_file, hash_json, library_versions
from xlprobe.store import ActivationStore
from xlprobe.types import Dataset, Record, StoreKey

KEY = StoreKey(model="m0", point="encoder.3", pooling="mean", data="d0")
COMMAND = "xlprobe extract facebook/mbart-large-50 --layers encoder.3 --pooling mean --store acts"
INFO = {"model": "facebook/mbart-large-50", "command": COMMAND, "seed": 0, "path": Path("/x")}


def _data(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Deterministic float32 [n, d]."""
    return np.random.default_rng(seed).standard_normal((n, d), dtype=np.float32)


def _chunks(n: int, size: int) -> list[tuple[int, int]]:
    """Row ranges of ``size`` tiling [0, n)."""
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def _extras(n: int) -> dict[str, np.ndarray]:
    """Small extra arrays of a shard of ``n`` rows."""
    return {"row_ptr": np.arange(n + 1, dtype=np.int64) * 3, "token_ids": np.arange(3 * n, dtype=np.int64)}


def _build(store: ActivationStore, key: StoreKey, X: np.ndarray, size: int = 16, **kw) -> None:
    """Write ``X`` chunk by chunk, rows reversed inside each chunk."""
    n, d = X.shape
    chunks = _chunks(n, size)
    with store.writer(key, n_rows=n, dim=d, chunks=chunks, **kw) as w:
        for i in w.pending:
            rows = np.arange(*chunks[i])[::-1]
            w.write(rows, X[rows])
            w.commit(i)


def _shard_file(store: ActivationStore, key: StoreKey) -> Path:
    """The finished shard's path, from the manifest."""
    return store.path / store.entry(key)["file"]


# ----------------------------------------------------------------------------- round trip, layout
def test_round_trip_entry_and_keys(tmp_path: Path) -> None:
    store = ActivationStore.open(tmp_path / "acts")
    X = _data(50, 8)
    _build(store, KEY, X, extras=_extras(50), info=INFO)
    got = store.read(KEY)
    assert isinstance(got, np.memmap) and got.dtype == np.float32 and got.shape == (50, 8)
    assert not got.flags.writeable
    np.testing.assert_array_equal(got, X)
    extras = store.read_extras(KEY)
    assert set(extras) == {"row_ptr", "token_ids"}
    for name, a in _extras(50).items():
        np.testing.assert_array_equal(extras[name], a)
        assert extras[name].dtype == a.dtype
    entry = store.entry(KEY)
    assert entry["shape"] == [50, 8] and entry["key"] == KEY.to_dict() and entry["chunks"] == 4
    assert entry["info"]["command"] == COMMAND and entry["info"]["path"] == "/x"
    assert entry["size"] == _shard_file(store, KEY).stat().st_size
    assert entry["checksum"] == "blake2b:" + hash_file(_shard_file(store, KEY))
    assert store.has(KEY)
    other = StoreKey("m0", "encoder.4", "mean", "d0")
    store.write(other, X[:, :3])
    assert store.keys() == [KEY, other]
    assert store.keys(point="encoder.4") == [other]
    assert store.keys(model="m1") == []
    reopened = ActivationStore.open(tmp_path / "acts", create=False)
    np.testing.assert_array_equal(reopened.read(other), X[:, :3])
    assert reopened.manifest["shards"][KEY.id]["shape"] == [50, 8]


def test_rows_written_out_of_order_across_chunks(tmp_path: Path) -> None:
    store = ActivationStore.open(tmp_path)
    X = _data(103, 5, seed=1)
    chunks = _chunks(103, 20)
    perm = np.random.default_rng(2).permutation(103)  # like length-sorted batches
    with store.writer(KEY, n_rows=103, dim=5, chunks=chunks) as w:
        for batch in np.array_split(perm, 9):
            w.write(batch, X[batch].astype(np.float64))  # floats of any width are stored as float32
        for i in reversed(w.pending):
            w.commit(i)
    np.testing.assert_array_equal(store.read(KEY), X)


def test_empty_chunks_are_allowed(tmp_path: Path) -> None:
    store = ActivationStore.open(tmp_path)
    X = _data(10, 3)
    chunks = [(0, 0), (0, 4), (4, 4), (4, 10), (10, 10)]  # e.g. token rows of records without tokens
    with store.writer(KEY, n_rows=10, dim=3, chunks=chunks) as w:
        w.write(np.arange(10), X)
        for i in w.pending:
            w.commit(i)
    np.testing.assert_array_equal(store.read(KEY), X)


def test_safetensors_load_file_parity(tmp_path: Path) -> None:
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    from safetensors import safe_open

    store = ActivationStore.open(tmp_path)
    X = _data(37, 6, seed=3)  # 37 * 6 * 4 bytes: extras start unaligned, which the format allows
    extras = {"token_ids": np.arange(11, dtype=np.int64), "mask": np.array([True, False, True])}
    _build(store, KEY, X, size=10, extras=extras)
    path = _shard_file(store, KEY)
    loaded = safetensors_numpy.load_file(str(path))
    assert set(loaded) == {"states", "token_ids", "mask"}
    np.testing.assert_array_equal(loaded["states"], X)
    assert loaded["states"].dtype == np.float32
    np.testing.assert_array_equal(loaded["token_ids"], extras["token_ids"])
    np.testing.assert_array_equal(loaded["mask"], extras["mask"])
    with safe_open(str(path), framework="np") as f:
        assert json.loads(f.metadata()["xlprobe.key"]) == KEY.to_dict()
    raw = path.read_bytes()
    assert (8 + int.from_bytes(raw[:8], "little")) % 8 == 0  # data starts 8-byte aligned


# ----------------------------------------------------------------------------- resume
CHILD = r"""
import sys, time
import numpy as np
from xlprobe.store import ActivationStore
from xlprobe.types import StoreKey

path, n, d, size, stop_at = sys.argv[1], *map(int, sys.argv[2:6])
X = np.random.default_rng(0).standard_normal((n, d), dtype=np.float32)
chunks = [(s, min(s + size, n)) for s in range(0, n, size)]
extras = {"row_ptr": np.arange(n + 1, dtype=np.int64)}
store = ActivationStore.open(path)
with store.writer(StoreKey("m0", "encoder.3", "mean", "d0"), n_rows=n, dim=d, chunks=chunks,
                  extras=extras, info={"command": "child"}) as w:
    for i in w.pending:
        rows = np.arange(*chunks[i])[::-1]
        half = len(rows) // 2
        w.write(rows[:half], X[rows[:half]])
        if i == stop_at:
            print("partial", i, flush=True)
            time.sleep(60)
        w.write(rows[half:], X[rows[half:]])
        w.commit(i)
        print("committed", i, flush=True)
        time.sleep(0.01)
"""


def test_sigkill_then_resume_writes_only_pending_chunks(tmp_path: Path) -> None:
    n, d, size, stop_at = 120, 16, 12, 4
    argv = [sys.executable, "-c", CHILD, str(tmp_path / "acts"), str(n), str(d), str(size), str(stop_at)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            lines = []
            for line in proc.stdout:  # type: ignore[union-attr]
                lines.append(line.strip())
                if line.startswith("partial"):
                    break
            assert lines[-1:] == [f"partial {stop_at}"], proc.stderr.read()  # type: ignore[union-attr]
            assert lines[:-1] == [f"committed {i}" for i in range(stop_at)]
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    store = ActivationStore.open(tmp_path / "acts")
    assert not store.has(KEY) and store.keys() == []
    X = _data(n, d)
    chunks = _chunks(n, size)
    written: list[int] = []
    with store.writer(KEY, n_rows=n, dim=d, chunks=chunks, extras={"row_ptr": np.arange(n + 1)},
                      info={"command": "resume"}) as w:
        assert w.pending == list(range(stop_at, len(chunks)))
        for i in w.pending:
            rows = np.arange(*chunks[i])
            w.write(rows, X[rows])
            w.commit(i)
            written.append(i)
    assert written == list(range(stop_at, len(chunks)))
    assert store.entry(KEY)["info"] == {"command": "resume"}

    fresh = ActivationStore.open(tmp_path / "fresh")
    _build(fresh, KEY, X, size=size, extras={"row_ptr": np.arange(n + 1)})
    np.testing.assert_array_equal(store.read(KEY), fresh.read(KEY))
    np.testing.assert_array_equal(store.read(KEY), X)
    assert store.entry(KEY)["checksum"] == fresh.entry(KEY)["checksum"]  # byte-identical files
    assert sorted(os.listdir(tmp_path / "acts" / "shards")) == [f"{KEY.id}.safetensors"]


def _partial(store: ActivationStore, X: np.ndarray, chunks: list[tuple[int, int]], n_commit: int) -> None:
    """Commit the first ``n_commit`` chunks, half-write the next one, then fail inside the writer."""
    w = store.writer(KEY, n_rows=len(X), dim=X.shape[1], chunks=chunks)
    with pytest.raises(RuntimeError, match="boom"), w:
        for i in range(n_commit):
            w.write(slice(*chunks[i]), X[slice(*chunks[i])])
            w.commit(i)
        w.write([chunks[n_commit][0]], X[chunks[n_commit][0]][None])
        raise RuntimeError("boom")


def test_unfinished_shard_is_not_visible(tmp_path: Path) -> None:
    store = ActivationStore.open(tmp_path)
    X = _data(40, 4)
    _partial(store, X, _chunks(40, 10), n_commit=2)
    assert not store.has(KEY)
    assert store.keys() == [] and store.manifest["shards"] == {}
    with pytest.raises(StoreError, match="no shard"):
        store.read(KEY)
    assert (tmp_path / "shards" / f"{KEY.id}.safetensors.tmp").exists()
    assert (tmp_path / "shards" / f"{KEY.id}.progress.json").exists()


def test_committed_chunk_failing_checksum_becomes_pending(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    store = ActivationStore.open(tmp_path)
    X = _data(40, 4)
    chunks = _chunks(40, 10)
    _partial(store, X, chunks, n_commit=2)
    tmp = tmp_path / "shards" / f"{KEY.id}.safetensors.tmp"
    header_len = 8 + int.from_bytes(tmp.read_bytes()[:8], "little")
    with open(tmp, "r+b") as f:  # damage row 3 (chunk 0)
        f.seek(header_len + 3 * 4 * 4)
        f.write(b"\xff\xff\xff\x7f")
    with caplog.at_level(logging.WARNING, logger="xlprobe.store"):
        w = store.writer(KEY, n_rows=40, dim=4, chunks=chunks)
    assert "fails its checksum" in caplog.text
    with w:
        assert w.pending == [0, 2, 3]
        for i in w.pending:
            w.write(slice(*chunks[i]), X[slice(*chunks[i])])
            w.commit(i)
    np.testing.assert_array_equal(store.read(KEY), X)


def test_other_layout_discards_stale_partial(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = ActivationStore.open(tmp_path)
    X = _data(40, 4)
    _partial(store, X, _chunks(40, 10), n_commit=3)
    with caplog.at_level(logging.WARNING, logger="xlprobe.store"):
        w = store.writer(KEY, n_rows=40, dim=4, chunks=_chunks(40, 8))
    assert "discarding stale partial shard" in caplog.text
    with w:
        assert w.pending == [0, 1, 2, 3, 4]
        w.write(slice(0, 40), X)
        for i in w.pending:
            w.commit(i)
    np.testing.assert_array_equal(store.read(KEY), X)


def test_crash_between_rename_and_manifest_recovers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ActivationStore.open(tmp_path)
    X = _data(30, 3)

    def fail(change: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store, "_update", fail)
    with pytest.raises(OSError, match="disk full"):
        _build(store, KEY, X, size=10)
    monkeypatch.undo()
    assert not store.has(KEY)
    with store.writer(KEY, n_rows=30, dim=3, chunks=_chunks(30, 10)) as w:
        assert w.pending == []
    np.testing.assert_array_equal(store.read(KEY), X)


# ----------------------------------------------------------------------------- corruption
def test_truncated_shard_raises_with_file_and_command(tmp_path: Path) -> None:
    store = ActivationStore.open(tmp_path)
    _build(store, KEY, _data(40, 4), info=INFO)
    path = _shard_file(store, KEY)
    os.truncate(path, path.stat().st_size - 10)
    fresh = ActivationStore.open(tmp_path)
    for verify in (True, False):
        with pytest.raises(StoreCorruptError) as err:
            fresh.read(KEY, verify=verify)
        text = str(err.value)
        assert str(path) in text and "encoder.3" in text and "'mean'" in text
        assert COMMAND in err.value.hint and "--repair" in err.value.hint and "store.remove" in err.value.hint
    problems = fresh.verify()
    assert len(problems) == 1 and str(path) in problems[0] and COMMAND in problems[0]
    assert fresh.has(KEY)  # verify() alone changes nothing
    fresh.remove(KEY)
    assert not fresh.has(KEY) and not path.exists() and fresh.verify() == []
    fresh.remove(KEY)  # idempotent


def test_flipped_byte_raises_and_verify_lists_it(tmp_path: Path) -> None:
    store = ActivationStore.open(tmp_path)
    X = _data(40, 4)
    _build(store, KEY, X, info={"command": ["xlprobe", "extract", "my model"]})
    path = _shard_file(store, KEY)
    with open(path, "r+b") as f:
        f.seek(path.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x01]))
    fresh = ActivationStore.open(tmp_path)
    with pytest.raises(StoreCorruptError, match="checksum") as err:
        fresh.read(KEY)
    assert str(path) in str(err.value) and "xlprobe extract 'my model'" in err.value.hint
    assert not np.array_equal(fresh.read(KEY, verify=False), X)  # the size still matches
    good = StoreKey("m0", "encoder.4", "mean", "d0")
    fresh.write(good, X)
    assert len(fresh.verify(repair=True)) == 1
    assert fresh.keys() == [good] and not path.exists() and fresh.verify() == []


def test_checksum_cached_per_store_until_file_changes(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    store = ActivationStore.open(tmp_path)
    _build(store, KEY, _data(20, 4), extras=_extras(20))
    calls: list[object] = []
    real = shard_mod.hash_file

    def counting(path: object, **kw: object) -> str:
        calls.append(path)
        return real(path, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(shard_mod, "hash_file", counting)
    fresh = ActivationStore.open(tmp_path)
    fresh.read(KEY)
    fresh.read(KEY)
    fresh.read_extras(KEY)
    assert len(calls) == 1
    st = _shard_file(fresh, KEY).stat()
    os.utime(_shard_file(fresh, KEY), ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    fresh.read(KEY)
    assert len(calls) == 2
    assert fresh.verify() == [] and len(calls) == 3  # verify always rehashes


def test_corrupt_manifest_raises(tmp_path: Path) -> None:
    ActivationStore.open(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(StoreCorruptError, match="manifest"):
        ActivationStore.open(tmp_path)


# ----------------------------------------------------------------------------- concurrency
WRITER = r"""
import sys, time
from pathlib import Path
import numpy as np
from xlprobe.store import ActivationStore
from xlprobe.types import StoreKey

path, tag, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = ActivationStore.open(path)
while not Path(path, "go").exists():
    time.sleep(0.002)
for i in range(count):
    store.write(StoreKey("m0", f"{tag}.{i}", "mean", "d0"), np.full((4, 3), i, dtype=np.float32))
"""


def _assert_clean_manifest(root: Path, n: int) -> None:
    """Manifest is valid JSON with ``n`` shards, and no temp or lock files are left."""
    manifest = json.loads((root / "manifest.json").read_text())
    assert len(manifest["shards"]) == n
    leftovers = [p.name for p in root.rglob("*")
                 if p.name.endswith((".tmp", ".lock", ".progress.json")) and p.name != ".manifest.lock"]
    assert leftovers == [], leftovers
    store = ActivationStore.open(root)
    assert all(store.has(k) for k in store.keys(model="m0")) and store.verify() == []


def test_manifest_survives_two_writer_processes(tmp_path: Path) -> None:
    ActivationStore.open(tmp_path)
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), tag, "8"], stderr=subprocess.PIPE)
             for tag in ("a", "b")]
    time.sleep(0.2)
    (tmp_path / "go").touch()
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err.decode()
    (tmp_path / "go").unlink()
    _assert_clean_manifest(tmp_path, 16)


def test_manifest_survives_threads_with_separate_store_objects(tmp_path: Path) -> None:
    ActivationStore.open(tmp_path)
    errors: list[BaseException] = []

    def work(tag: str) -> None:
        try:
            store = ActivationStore.open(tmp_path)
            for i in range(15):
                store.write(StoreKey("m0", f"{tag}.{i}", "mean", "d0"), np.full((3, 2), i, dtype=np.float32))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in "abc"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    _assert_clean_manifest(tmp_path, 45)


def test_second_writer_of_a_shard_is_refused(tmp_path: Path) -> None:
    store = ActivationStore.open(tmp_path)
    with store.writer(KEY, n_rows=4, dim=2, chunks=[(0, 4)]) as w:
        with pytest.raises(StoreError, match="another writer"):
            ActivationStore.open(tmp_path).writer(KEY, n_rows=4, dim=2, chunks=[(0, 4)])
        w.write(slice(0, 4), np.ones((4, 2), np.float32))
        w.commit(0)
    with pytest.raises(StoreError, match="already complete"):
        store.writer(KEY, n_rows=4, dim=2, chunks=[(0, 4)])
    with pytest.raises(StoreMismatchError, match="already complete"):
        store.writer(KEY, n_rows=5, dim=2, chunks=[(0, 5)])


# ----------------------------------------------------------------------------- memory
def _rss() -> int:
    """Resident set size of this process in bytes."""
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_writing_200k_rows_keeps_memory_at_a_chunk(tmp_path: Path) -> None:
    n, d, chunk, batch = 200_000, 64, 10_000, 2_000  # 51 MB of states, 2.5 MB per chunk
    store = ActivationStore.open(tmp_path)
    chunks = _chunks(n, chunk)
    peak = 0
    with store.writer(KEY, n_rows=n, dim=d, chunks=chunks) as w:
        base = _rss()
        for i in w.pending:
            for b in range(chunks[i][0], chunks[i][1], batch):
                values = np.random.default_rng([7, b]).standard_normal((batch, d), dtype=np.float32)
                w.write(np.arange(b, b + batch)[::-1], values[::-1])
                del values
            peak = max(peak, _rss() - base)
            w.commit(i)
            peak = max(peak, _rss() - base)
    total = n * d * 4
    assert peak < 16 * 2**20, f"RSS grew by {peak / 2**20:.1f} MiB while writing {total / 2**20:.0f} MiB"
    got = store.read(KEY)
    for b in (0, 98_000, n - batch):
        want = np.random.default_rng([7, b]).standard_normal((batch, d), dtype=np.float32)
        np.testing.assert_array_equal(got[b : b + batch], want)


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize("chunks", [[(0, 5), (6, 10)], [(0, 5), (4, 10)], [(0, 5)], [], [(0, 5), (5, 3)],
                                    [(0, 5, 7)], [(0.0, 10.0)]])
def test_bad_chunks_raise(tmp_path: Path, chunks: list) -> None:
    with pytest.raises(DataError, match="chunk"):
        ActivationStore.open(tmp_path).writer(KEY, n_rows=10, dim=2, chunks=chunks)


def test_bad_writes_and_commits_raise(tmp_path: Path) -> None:
    store = ActivationStore.open(tmp_path)
    with pytest.raises(DataError, match="n_rows"):
        store.writer(KEY, n_rows=0, dim=2, chunks=[])
    with pytest.raises(DataError, match="dtype"):
        store.writer(KEY, n_rows=4, dim=2, chunks=[(0, 4)], extras={"x": np.array(["a", None])})
    with store.writer(KEY, n_rows=4, dim=2, chunks=[(0, 2), (2, 4)]) as w:
        with pytest.raises(DataError, match=r"\[k, 2\]"):
            w.write([0], np.ones((1, 3), np.float32))
        with pytest.raises(DataError, match="outside"):
            w.write([4], np.ones((1, 2), np.float32))
        with pytest.raises(DataError, match="1 rows but 2"):
            w.write([0], np.ones((2, 2), np.float32))
        w.write([0], np.ones((1, 2), np.float32))
        with pytest.raises(StoreError, match="never written"):
            w.commit(0)
        w.write([1], np.ones((1, 2), np.float32))
        w.commit(0)
        with pytest.raises(StoreError, match="committed"):
            w.write([1, 2], np.ones((2, 2), np.float32))
        with pytest.raises(StoreError, match="uncommitted"):
            w.finalize()
        with pytest.raises(DataError, match="chunk must be"):
            w.commit(2)
    assert not store.has(KEY)  # a clean exit with pending chunks keeps the partial shard


def test_open_without_create(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist") as err:
        ActivationStore.open(tmp_path / "nope", create=False)
    assert "create=True" in err.value.hint
    assert not (tmp_path / "nope").exists()
    with pytest.raises(StoreError, match="not a store"):
        ActivationStore.open(tmp_path, create=False)


# ----------------------------------------------------------------------------- records
def _dataset() -> Dataset:
    """A tiny parallel dataset with labels and non-ASCII text."""
    recs = [Record(f"v{i}-{lang}", f"texte {i} é {lang}", lang, group=f"v{i}", labels={"book": "Gen"})
            for i in range(3) for lang in ("en", "fr")]
    return Dataset("bible-mini", recs, {"source": "test", "path": Path("/x")})


def test_records_round_trip_and_idempotence(tmp_path: Path) -> None:
    store = ActivationStore.open(tmp_path)
    ds = _dataset()
    fp = store.write_records(ds)
    assert fp == ds.fingerprint
    path = tmp_path / "records" / f"{fp}.jsonl"
    st = path.stat()
    assert store.write_records(ds) == fp
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (st.st_ino, st.st_mtime_ns)
    back = ActivationStore.open(tmp_path).records(fp)
    assert back.records == ds.records and back.name == "bible-mini"
    assert back.meta == {"source": "test", "path": "/x"} and back.fingerprint == fp
    path.write_text(path.read_text().replace("texte 1", "texte 9"))
    with pytest.raises(StoreCorruptError, match="fingerprint"):
        store.records(fp)
    assert len(store.verify()) == 1
    store.write_records(ds)  # rewrites the damaged file
    assert store.records(fp).records == ds.records
    with pytest.raises(StoreError, match="no records"):
        store.records("0123456789abcdef")
    with pytest.raises(DataError, match="fingerprint"):
        store.records("../manifest")


# ----------------------------------------------------------------------------- fingerprint
def test_hash_array_depends_on_values_dtype_shape_not_layout() -> None:
    a = _data(6, 4)
    assert hash_array(a) == hash_array(np.asfortranarray(a)) == hash_array(a.astype(">f4"))
    assert hash_array(a) != hash_array(a.reshape(4, 6))
    assert hash_array(a) != hash_array(a.astype(np.float64))
    b = a.copy()
    b[5, 3] += 1
    assert hash_array(a) != hash_array(b)
    assert hash_array(a[:, ::2]) == hash_array(np.ascontiguousarray(a[:, ::2]))
    with pytest.raises(DataError):
        hash_array(np.array([None]))
    assert hash_json({"b": 1, "a": 2}) == hash_json({"a": 2, "b": 1}) != hash_json({"a": 1})


def test_hash_file_of_range(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000  # > 2 read blocks
    path = tmp_path / "f"
    path.write_bytes(data)
    assert hash_file(path) == hashlib.blake2b(data, digest_size=32).hexdigest()
    part = data[1000 : 1000 + 1_500_000]
    assert hash_file(path, offset=1000, length=1_500_000) == hashlib.blake2b(part, digest_size=32).hexdigest()


def test_model_fingerprint_stable_sensitive_and_tied_once(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")

    class Tiny(torch.nn.Module):
        def __init__(self, tie: bool) -> None:
            super().__init__()
            gen = torch.Generator().manual_seed(0)
            self.emb = torch.nn.Embedding(10, 4)
            self.head = torch.nn.Linear(4, 10)
            with torch.no_grad():
                for p in self.parameters():
                    p.copy_(torch.randn(p.shape, generator=gen))
            if tie:
                self.head.weight = self.emb.weight

    fp = fingerprint.model_fingerprint(Tiny(tie=False))
    assert fp == fingerprint.model_fingerprint(Tiny(tie=False)) and len(fp) == 16
    changed = Tiny(tie=False)
    with torch.no_grad():
        changed.head.bias[0] += 1e-3
    assert fingerprint.model_fingerprint(changed) != fp
    assert fingerprint.model_fingerprint(Tiny(tie=False).to(torch.bfloat16)) != fp
    fed: list[tuple[int, ...]] = []
    real = fingerprint._feed_tensor
    monkeypatch.setattr(fingerprint, "_feed_tensor", lambda h, t: (fed.append(tuple(t.shape)), real(h, t)))
    tied = fingerprint.model_fingerprint(Tiny(tie=True))
    assert len(fed) == 2 and tied != fp  # emb.weight and head.bias; head.weight is the same storage


def test_library_versions() -> None:
    versions = library_versions()
    assert set(versions) == {"python", "torch", "transformers", "numpy", "safetensors", "xlprobe"}
    assert versions["numpy"] == np.__version__


def test_a_store_made_without_open_says_so_before_writing(tmp_path: Path) -> None:
    from xlprobe.types import Dataset

    store = ActivationStore(tmp_path / "never-opened")
    with pytest.raises(StoreError, match="has no manifest.json") as err:
        store.write_records(Dataset.from_texts(["a", "b"]))
    assert "ActivationStore.open(path)" in err.value.hint and not (tmp_path / "never-opened").exists()
