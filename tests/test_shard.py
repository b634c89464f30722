"""Tests of the shard layer on its own (xlprobe.shard, xlprobe.shard_writer): no store involved."""
from __future__ import annotations

import ast
import fcntl
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import xlprobe
from xlprobe.errors import DataError
from xlprobe.shard import (
    ShardLayout,
    ShardPaths,
    file_checksum,
    header_matches,
    read_extras,
    read_header,
    read_states,
)
from xlprobe.shard_writer import ShardWriter
from xlprobe.types import StoreKey

KEY = StoreKey(model="m0", point="encoder.3", pooling="mean", data="d0")
PKG = Path(xlprobe.__file__).parent
SEAM = ("durable", "manifest", "results", "shard", "shard_writer", "store")


def _paths(root: Path) -> ShardPaths:
    """Files of one shard under ``root``, named as the caller likes."""
    root.mkdir(parents=True, exist_ok=True)
    return ShardPaths(final=root / "s.safetensors", tmp=root / "s.tmp", progress=root / "s.progress",
                      lock=root / "s.lock")


def _writer(paths: ShardPaths, layout: ShardLayout, done: list[dict[str, Any]]) -> ShardWriter:
    """An opened writer that appends its finished entry to ``done``."""
    lock = open(paths.lock, "ab")  # noqa: SIM115 (the writer closes it)
    fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    return ShardWriter(KEY, layout, paths=paths, info={"command": "test"}, lock=lock,
                       on_complete=done.append).open()


def test_writer_needs_no_store_and_reports_completion_once(tmp_path: Path) -> None:
    X = np.random.default_rng(0).standard_normal((25, 6), dtype=np.float32)
    extras = {"row_ptr": np.arange(26, dtype=np.int64)}
    layout = ShardLayout.checked(25, 6, [(0, 10), (10, 20), (20, 25)], extras)
    paths, done = _paths(tmp_path / "x"), []
    with _writer(paths, layout, done) as w:
        for i in w.pending:
            w.write(slice(*layout.chunks[i]), X[slice(*layout.chunks[i])])
            w.commit(i)
        assert done == []  # not before finalize
    assert len(done) == 1 and not paths.tmp.exists() and not paths.progress.exists()
    assert not paths.lock.exists()
    entry = done[0]
    assert entry["key"] == KEY.to_dict() and entry["shape"] == [25, 6] and entry["chunks"] == 3
    assert entry["size"] == paths.final.stat().st_size and entry["checksum"] == file_checksum(paths.final)
    assert entry["info"] == {"command": "test"} and "file" not in entry  # where it lives is the caller's
    header, start = read_header(paths.final)
    assert header_matches(header, KEY, [25, 6]) and not header_matches(header, KEY, [25, 5])
    np.testing.assert_array_equal(read_states(paths.final, header, start), X)
    np.testing.assert_array_equal(read_extras(paths.final, header, start)["row_ptr"], extras["row_ptr"])


def test_failed_on_complete_leaves_a_shard_the_next_writer_recovers(tmp_path: Path) -> None:
    X = np.ones((8, 2), np.float32)
    layout, paths = ShardLayout.checked(8, 2, [(0, 4), (4, 8)]), _paths(tmp_path)

    def refuse(entry: dict[str, Any]) -> None:
        raise OSError("manifest disk full")

    lock = open(paths.lock, "ab")  # noqa: SIM115
    w = ShardWriter(KEY, layout, paths=paths, info={}, lock=lock, on_complete=refuse).open()
    with pytest.raises(OSError, match="disk full"), w:
        w.write(slice(0, 8), X)
        w.commit(0)
        w.commit(1)
        w.finalize()
    assert paths.final.exists() and paths.progress.exists()  # renamed, but never registered
    done: list[dict[str, Any]] = []
    with _writer(paths, layout, done) as again:
        assert again.pending == []
    assert len(done) == 1 and not paths.progress.exists()
    np.testing.assert_array_equal(np.asarray(read_states(paths.final, *read_header(paths.final))), X)


def test_layout_checks_its_arguments() -> None:
    layout = ShardLayout.checked(np.int64(4), 2, [[0, 4]], {"b": np.zeros(2, ">i4"), "a": [1, 2]})
    assert (layout.n_rows, layout.dim, layout.chunks) == (4, 2, ((0, 4),))
    assert list(layout.extras) == ["a", "b"] and layout.extras["b"].dtype == np.dtype("<i4")
    with pytest.raises(DataError, match="dim"):
        ShardLayout.checked(4, 0, [(0, 4)])
    with pytest.raises(DataError, match="not allowed"):
        ShardLayout.checked(4, 2, [(0, 4)], {"states": np.zeros(1)})


def _imports(module: str) -> list[tuple[str, list[str]]]:
    """(imported module, names) of every import statement in ``xlprobe/<module>.py``."""
    tree = ast.parse((PKG / f"{module}.py").read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            out.append((node.module or "", [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out.extend((a.name, []) for a in node.names)
    return out


def test_the_shard_layer_does_not_import_the_store() -> None:
    for module in ("shard", "shard_writer", "durable", "manifest"):
        imported = {m for m, names in _imports(module)} | {
            f"{m}.{n}" for m, names in _imports(module) for n in names}
        assert not {"xlprobe.store", "xlprobe.store.ActivationStore"} & imported, module
    code = "import sys, xlprobe.shard_writer; print('xlprobe.store' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_no_private_name_crosses_a_module() -> None:
    for module in SEAM:
        for source, names in _imports(module):
            if source.startswith("xlprobe"):
                private = [n for n in names if n.startswith("_")]
                assert private == [], f"xlprobe/{module}.py imports {private} from {source}"
        text = (PKG / f"{module}.py").read_text()
        if module != "store":  # ActivationStore.open may use its own store's private methods
            assert "store._" not in text, module
    store_text = (PKG / "store.py").read_text()
    assert "w._" not in store_text and "writer._" not in store_text  # the writer's seam is public


def test_progress_file_names_its_layout(tmp_path: Path) -> None:
    layout, paths = ShardLayout.checked(4, 2, [(0, 2), (2, 4)]), _paths(tmp_path)
    with _writer(paths, layout, []) as w:
        w.write(slice(0, 2), np.zeros((2, 2), np.float32))
        w.commit(0)
        doc = json.loads(paths.progress.read_text())
    assert doc["layout"]["chunks"] == [[0, 2], [2, 4]] and list(doc["committed"]) == ["0"]
    start = read_header(paths.tmp)[1]
    assert doc["committed"]["0"] == file_checksum(paths.tmp, start, 2 * 2 * 4)  # rows 0:2, float32


@pytest.mark.parametrize("order", ["in order", "out of order", "resumed"])
def test_the_files_checksum_grows_with_in_order_commits_and_is_read_whole_otherwise(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, order: str) -> None:
    import xlprobe.shard as shard_mod
    from xlprobe.fingerprint import hash_file

    X = np.random.default_rng(1).standard_normal((3000, 64), dtype=np.float32)  # > 1 read block in all
    extras = {"row_ptr": np.arange(3001, dtype=np.int64)}
    chunks = [(0, 1000), (1000, 2000), (2000, 3000)]
    layout = ShardLayout.checked(3000, 64, chunks, extras)
    paths, done, reads = _paths(tmp_path / order.replace(" ", "-")), [], []
    real = shard_mod.hash_file

    def counting(path: object, **kw: Any) -> str:
        reads.append((kw.get("offset", 0), kw.get("length")))
        return real(path, **kw)

    monkeypatch.setattr(shard_mod, "hash_file", counting)
    runs = {"in order": [[0, 1, 2]], "out of order": [[1, 0, 2]], "resumed": [[0], [1, 2]]}[order]
    for run in runs:  # each run is one writer; a run that leaves chunks pending closes and the next resumes
        with _writer(paths, layout, done) as w:
            for i in run:
                w.write(slice(*chunks[i]), X[slice(*chunks[i])])
                w.commit(i)
    (entry,) = done
    assert entry["checksum"] == "blake2b:" + hash_file(paths.final)  # the same digest either way
    whole_file_reads = reads.count((0, None))
    assert whole_file_reads == (0 if order == "in order" else 1)  # in order: the bytes are read once, at commit
    assert np.array_equal(read_states(paths.final, *read_header(paths.final)), X)
