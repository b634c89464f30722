"""The safetensors layout of one activation shard: layout checks, header, reading, checksums.

A shard is a plain safetensors file: float32 ``states`` [n_rows, dim], then small extra arrays,
then nothing else; its metadata holds the format version and the :class:`~xlprobe.types.StoreKey`.
This module knows nothing of the store: :class:`ShardLayout` checks a shard's shape, chunks and
extras, :class:`ShardPaths` names its files, :func:`header_bytes` builds its header, and the
reading helpers (:func:`read_header`, :func:`header_matches`, :func:`read_states`,
:func:`read_extras`, :func:`file_checksum`) are what a reader needs. The writer is
:class:`xlprobe.shard_writer.ShardWriter`; checksums come from :mod:`xlprobe.durable`.
"""
from __future__ import annotations

import json
import operator
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xlprobe.durable import checksum
from xlprobe.errors import DataError
from xlprobe.fingerprint import hash_file
from xlprobe.types import StoreKey

__all__ = ["METADATA", "STATES", "VERSION", "ShardLayout", "ShardPaths", "describe_key", "file_checksum",
           "header_bytes", "header_matches", "read_extras", "read_header", "read_states"]

VERSION = 1
STATES = "states"
METADATA = "__metadata__"
_ST_DTYPES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "int64": "I64", "int32": "I32",
    "int16": "I16", "int8": "I8", "uint64": "U64", "uint32": "U32", "uint16": "U16",
    "uint8": "U8", "bool": "BOOL",
}
_NP_DTYPES = {v: k for k, v in _ST_DTYPES.items()}


def describe_key(key: StoreKey) -> str:
    """A key as ``point=..., pooling=..., model=..., data=...`` for messages."""
    out = f"point={key.point!r}, pooling={key.pooling!r}, model={key.model!r}, data={key.data!r}"
    return out + (f", options={key.options!r}" if key.options else "")


def _key_json(key: StoreKey) -> str:
    """The key as canonical JSON (stored in each shard's safetensors metadata)."""
    return json.dumps(key.to_dict(), sort_keys=True)


def file_checksum(path: Path, offset: int = 0, length: int | None = None, feed: Sequence[Any] = ()) -> str:
    """Checksum of a shard file or a byte range of it (:func:`xlprobe.durable.checksum`); ``feed`` as there."""
    return checksum(path, offset, length, digest=hash_file, feed=feed)  # this module's name: tests count the hashing


# ----------------------------------------------------------------------------- layout and paths
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
        if not isinstance(name, str) or not name or name in (STATES, METADATA):
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


@dataclass(frozen=True, eq=False)
class ShardLayout:
    """Shape of ``states``, row chunks tiling ``[0, n_rows)`` and extra arrays of one shard, checked."""

    n_rows: int
    dim: int
    chunks: tuple[tuple[int, int], ...]
    extras: dict[str, np.ndarray]

    @classmethod
    def checked(cls, n_rows: int, dim: int, chunks: Sequence[tuple[int, int]],
                extras: Mapping[str, np.ndarray] | None = None) -> ShardLayout:
        """The layout of these arguments, or DataError naming the bad one."""
        n_rows, dim = _check_count("n_rows", n_rows), _check_count("dim", dim)
        return cls(n_rows, dim, _check_chunks(chunks, n_rows), _check_extras(extras))


@dataclass(frozen=True)
class ShardPaths:
    """The files of one shard: finished, temp, progress and writer lock."""

    final: Path
    tmp: Path
    progress: Path
    lock: Path


# ----------------------------------------------------------------------------- safetensors header
def header_bytes(key: StoreKey, n_rows: int, dim: int, extras: Mapping[str, np.ndarray]) -> bytes:
    """The safetensors prefix: u64 length, JSON header padded with spaces to 8-byte alignment."""
    end = n_rows * dim * 4
    tensors: dict[str, Any] = {STATES: {"dtype": "F32", "shape": [n_rows, dim], "data_offsets": [0, end]}}
    for name, a in extras.items():
        tensors[name] = {"dtype": _ST_DTYPES[a.dtype.name], "shape": list(a.shape),
                         "data_offsets": [end, end + a.nbytes]}
        end += a.nbytes
    tensors[METADATA] = {"format": "np", "xlprobe.format": str(VERSION), "xlprobe.key": _key_json(key)}
    raw = json.dumps(tensors, separators=(",", ":")).encode()
    raw += b" " * (-(8 + len(raw)) % 8)
    return struct.pack("<Q", len(raw)) + raw


def read_header(path: Path) -> tuple[dict[str, Any], int]:
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


def header_matches(header: Mapping[str, Any], key: StoreKey, shape: Sequence[int]) -> bool:
    """True when the header describes ``key``'s float32 states of ``shape`` (KeyError, TypeError if odd)."""
    spec, meta = header[STATES], header.get(METADATA) or {}
    same_key = meta.get("xlprobe.key") == _key_json(key)
    return spec["dtype"] == "F32" and spec["shape"] == list(shape) and same_key


def read_states(path: Path, header: Mapping[str, Any], start: int) -> np.memmap:
    """The ``states`` array as a read-only float32 memory map [n, d]."""
    n, d = header[STATES]["shape"]
    offset = start + header[STATES]["data_offsets"][0]
    return np.memmap(path, dtype=np.dtype("<f4"), mode="r", offset=offset, shape=(n, d))


def read_extras(path: Path, header: Mapping[str, Any], start: int) -> dict[str, np.ndarray]:
    """Every array but ``states``, read into memory in its native dtype."""
    out: dict[str, np.ndarray] = {}
    for name, spec in header.items():
        if name in (STATES, METADATA):
            continue
        native = np.dtype(_NP_DTYPES[spec["dtype"]])
        begin, end = spec["data_offsets"]
        count = (end - begin) // native.itemsize
        arr = np.fromfile(path, dtype=native.newbyteorder("<"), count=count, offset=start + begin)
        out[name] = arr.astype(native, copy=False).reshape(spec["shape"])
    return out
