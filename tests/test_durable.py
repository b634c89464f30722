"""Tests of xlprobe.durable: atomic writes (bytes and callback), fsync of files and directories, checksums."""
from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

from xlprobe import durable
from xlprobe.durable import atomic_write, checksum, fsync_dir, fsync_file, replace, temp_path, unlink


def _blake(data: bytes) -> str:
    """The checksum ``data`` should have."""
    return "blake2b:" + hashlib.blake2b(data, digest_size=32).hexdigest()


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Record every fsync (of a file or a directory) and rename done by xlprobe.durable, in order."""
    log: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        log.append(("fsync-dir" if path.is_dir() else "fsync", path.name))
        real_fsync(fd)

    def rename(src: os.PathLike[str], dst: os.PathLike[str]) -> None:
        log.append(("replace", Path(dst).name))
        real_replace(src, dst)

    monkeypatch.setattr(durable.os, "fsync", fsync)
    monkeypatch.setattr(durable.os, "replace", rename)
    return log


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name fsynced files")
@pytest.mark.parametrize("form", ["bytes", "callback"])
def test_atomic_write_fsyncs_file_then_renames_then_fsyncs_dir(tmp_path: Path, form: str,
                                                              events: list[tuple[str, str]]) -> None:
    target = tmp_path / "out.json"
    target.write_bytes(b"old")
    data = b'{"new": 1}'
    atomic_write(target, data if form == "bytes" else lambda p: Path(p).write_bytes(data))
    assert target.read_bytes() == data
    assert os.listdir(tmp_path) == ["out.json"]  # no temp file left
    kinds = [kind for kind, _ in events]
    assert kinds == ["fsync", "replace", "fsync-dir"]
    assert events[0][1].startswith(".out.json.") and events[0][1].endswith(".tmp")
    assert events[2][1] == tmp_path.name


def test_callback_gets_a_hidden_temp_path_beside_the_target(tmp_path: Path) -> None:
    seen: list[Path] = []
    atomic_write(tmp_path / "t.csv", lambda p: (seen.append(p), p.write_text("a,b\n")))
    assert seen[0].parent == tmp_path and seen[0].name.startswith(".t.csv.") and not seen[0].exists()
    assert (tmp_path / "t.csv").read_text() == "a,b\n"
    assert temp_path(tmp_path / "t.csv") != temp_path(tmp_path / "t.csv")  # fresh each time


@pytest.mark.parametrize("form", ["bytes", "callback"])
def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path, form: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "results.parquet"
    target.write_bytes(b"old table")

    def half(p: Path) -> None:
        p.write_bytes(b"half a file")
        raise OSError("disk full")

    if form == "bytes":
        monkeypatch.setattr(durable, "fsync_file", lambda p: half(Path(p)))
    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, b"new table" if form == "bytes" else half)
    assert target.read_bytes() == b"old table"
    assert os.listdir(tmp_path) == ["results.parquet"]


def test_fsync_file_takes_a_path_or_a_descriptor(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x")
    fsync_file(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        fsync_file(fd)
    finally:
        os.close(fd)
    with pytest.raises(FileNotFoundError):
        fsync_file(tmp_path / "missing")


def test_fsync_dir_skips_unsupported_but_raises_io_errors(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    fsync_dir(tmp_path)

    def failing(code: int):
        def fsync(fd: int) -> None:
            raise OSError(code, os.strerror(code))
        return fsync

    monkeypatch.setattr(durable.os, "fsync", failing(errno.EINVAL))
    fsync_dir(tmp_path)  # a file system that cannot fsync a directory: nothing to do
    monkeypatch.setattr(durable.os, "fsync", failing(errno.EIO))
    with pytest.raises(OSError) as err:
        fsync_dir(tmp_path)
    assert err.value.errno == errno.EIO
    with pytest.raises(FileNotFoundError):
        fsync_dir(tmp_path / "missing")


def test_replace_and_unlink(tmp_path: Path) -> None:
    (tmp_path / "a.tmp").write_bytes(b"a")
    replace(tmp_path / "a.tmp", tmp_path / "a")
    assert os.listdir(tmp_path) == ["a"] and (tmp_path / "a").read_bytes() == b"a"
    unlink(tmp_path / "a", tmp_path / "never-there")
    assert os.listdir(tmp_path) == []


def test_checksum_of_file_and_range(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000  # > 2 read blocks of fingerprint.hash_file
    path = tmp_path / "f"
    path.write_bytes(data)
    assert checksum(path) == _blake(data)
    assert checksum(path, 1000, 1_500_000) == _blake(data[1000:1_501_000])
    assert checksum(path, 10) == _blake(data[10:])
    calls: list[tuple[int, int | None]] = []

    def digest(p: Path, *, offset: int, length: int | None) -> str:
        calls.append((offset, length))
        return "ab" * 32

    assert checksum(path, 5, 7, digest=digest) == "blake2b:" + "ab" * 32 and calls == [(5, 7)]
