"""Stable content hashes: arrays, files (or byte ranges of them), JSON options and model weights.

Every hash is blake2b. Hashes are computed in bounded memory: files are read through a fixed 1 MiB
buffer and models one tensor at a time, so hashing a shard or a 611M-parameter checkpoint never
holds a second copy of it. torch is never imported here; :func:`model_fingerprint` only calls the
methods of the module it is given.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from xlprobe.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["file_hasher", "hash_array", "hash_file", "hash_json", "library_versions", "model_fingerprint"]

#: Read size for :func:`hash_file` and for arrays that are not C-contiguous.
BLOCK_BYTES = 1 << 20

_LIBRARIES = ("torch", "transformers", "numpy", "safetensors", "xlprobe")


def _blake2b(digest_size: int = 32) -> hashlib._Hash:
    """A fresh blake2b hasher."""
    return hashlib.blake2b(digest_size=digest_size)


def file_hasher() -> Any:
    """A fresh hasher of :func:`hash_file`'s kind: fed a file's bytes in order, it gives the same digest."""
    return _blake2b()


def hash_array(a: np.ndarray) -> str:
    """Hash an array's dtype, shape and values (64 hex chars).

    Parameters
    ----------
    a : numpy.ndarray
        Any array with a fixed-size dtype; memory-mapped arrays are hashed in place. Values are
        hashed in little-endian byte order, so the same values give the same hash on any host.

    Returns
    -------
    str
        blake2b hex digest.

    Raises
    ------
    DataError
        If ``a`` has an object dtype (no stable byte representation).
    """
    a = np.asarray(a)
    if a.dtype.hasobject:
        raise DataError(
            f"cannot hash an array of dtype {a.dtype} (object references have no stable bytes)",
            hint="convert it to a numeric or fixed-width string dtype first",
        )
    le = a.dtype.newbyteorder("<")
    h = _blake2b()
    h.update(f"{le.str}|{a.shape}|".encode())
    flat = np.atleast_1d(a)
    if flat.flags.c_contiguous and flat.dtype == le:
        h.update(flat.reshape(-1).view(np.uint8))
        return h.hexdigest()
    row_bytes = max(1, int(np.prod(flat.shape[1:], dtype=np.int64)) * le.itemsize)
    step = max(1, BLOCK_BYTES // row_bytes)
    for i in range(0, flat.shape[0], step):  # one block at a time: never a full copy
        h.update(np.ascontiguousarray(flat[i : i + step], dtype=le).reshape(-1).view(np.uint8))
    return h.hexdigest()


def hash_file(path: str | os.PathLike[str], *, offset: int = 0, length: int | None = None,
              feed: Sequence[Any] = ()) -> str:
    """Hash the bytes of a file, or of ``length`` bytes from ``offset`` (64 hex chars).

    Parameters
    ----------
    path : str or os.PathLike
        File to read. It is read through one reusable 1 MiB buffer.
    offset : int, default 0
        First byte to hash.
    length : int or None, default None
        Number of bytes to hash; None hashes to the end of the file. A file shorter than
        ``offset + length`` hashes only what is there (and so gives a different digest).
    feed : sequence of hashers, default ()
        Other hashers (:func:`file_hasher`) given the same bytes as they are read: a running hash of a
        whole file grows while its parts are checksummed, with no second read.

    Returns
    -------
    str
        blake2b hex digest of the raw bytes (no header, so it matches ``b2sum -l 256``).
    """
    h = _blake2b()
    buf = bytearray(BLOCK_BYTES)
    view = memoryview(buf)
    remaining = -1 if length is None else int(length)
    with open(path, "rb", buffering=0) as f:
        f.seek(offset)
        while remaining != 0:
            want = BLOCK_BYTES if remaining < 0 else min(BLOCK_BYTES, remaining)
            n = f.readinto(view[:want])
            if not n:
                break
            h.update(view[:n])
            for other in feed:
                other.update(view[:n])
            if remaining > 0:
                remaining -= n
    return h.hexdigest()


def hash_json(obj: Any, *, n_chars: int = 16) -> str:
    """Short hash of a JSON-serialisable value with sorted keys, e.g. a shard's extraction options."""
    raw = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.blake2b(raw.encode("utf-8"), digest_size=32).hexdigest()[:n_chars]


def _feed_tensor(h: hashlib._Hash, t: torch.Tensor) -> None:
    """Feed one tensor's bytes to ``h`` without keeping more than that tensor's CPU copy."""
    import torch  # already loaded: t is a torch tensor

    t = t.detach().cpu().contiguous()
    if t.numel() == 0:
        return
    # A byte view works for every dtype, bfloat16 included (numpy has no bfloat16).
    h.update(t.reshape(-1).view(torch.uint8).numpy())


def model_fingerprint(model: torch.nn.Module, *, n_chars: int = 16) -> str:
    """Stable hash of a model's class name and weights (16 hex chars by default).

    The hash covers the class name and, for every entry of ``model.state_dict()`` in sorted name
    order, its name, dtype, shape and bytes. Tensors are moved to the CPU one at a time and fed to
    blake2b as byte views, so memory stays at one tensor whatever the model size.

    The digest is remembered for the model object (weakly: it goes with the model) together with a
    signature of its weights (every tensor's storage, layout and torch's in-place version counter), and
    reused while the signature is unchanged: hashing mBART-large-50's 611M parameters takes about 1.7 s
    on 2 CPU cores, the signature microseconds. Any in-place write or new tensor changes the signature.

    Tied weights (the same storage under several names, e.g. ``lm_head.weight`` and
    ``model.shared.weight``) are counted once: a tensor whose ``data_ptr``, device, dtype, shape and
    stride match an earlier one contributes only its name and the earlier name, not its bytes
    again. A tied model therefore hashes differently from an untied copy with equal values.

    Parameters
    ----------
    model : torch.nn.Module
        Model on any device; a tensor offloaded by accelerate (``meta``, its values behind an offload
        hook) is read from the hook, so a dispatched model hashes as the same model loaded whole; a
        meta tensor without values is refused.
    n_chars : int, default 16
        Length of the returned hex digest (at most 64).

    Returns
    -------
    str
        Hex digest.

    Raises
    ------
    DataError
        If a tensor lives on the ``meta`` device (weights not loaded).
    """
    state = model.state_dict()
    key = _weights_signature(model, state)
    memo = _MEMO.get(model)
    if memo is not None and memo[0] == key:
        return memo[1][:n_chars]
    digest = _hash_state(model, state)
    try:
        _MEMO[model] = (key, digest)
    except TypeError:  # a module that cannot be weakly referenced: no memo
        pass
    return digest[:n_chars]


#: model -> (weights signature, full digest): a memo that dies with the model, checked on every use
_MEMO: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _weights_signature(model: torch.nn.Module, state: dict[str, Any]) -> tuple:
    """What changes whenever a weight does: each tensor's name, storage, layout and in-place version counter.

    torch bumps a tensor's version on every in-place write (optimizer steps, ``copy_``, ``mul_``),
    and a new tensor has a new storage, so an equal signature means equal weights; it costs
    microseconds, against seconds for hashing the bytes of a large model.
    """
    return (type(model).__name__, tuple((name, str(t.device), t.data_ptr(), t.dtype, tuple(t.shape), t.stride(),
                                         t._version) for name, t in state.items()))


def _hash_state(model: torch.nn.Module, state: dict[str, Any]) -> str:
    """The full blake2b hex digest of the class name and every tensor of ``state`` (tied ones once)."""
    h = _blake2b()
    h.update(f"class={type(model).__name__}\n".encode())
    seen: dict[tuple[Any, ...], str] = {}
    offloaded = any(t.device.type == "meta" for t in state.values())
    objects = model.state_dict(keep_vars=True) if offloaded else {}
    for name in sorted(state):
        t = state[name]
        ident = (str(t.device), t.data_ptr(), t.dtype, tuple(t.shape), tuple(t.stride()))
        if t.device.type == "meta":  # offloaded by accelerate: its bytes from the hook's weights map
            ident = ("offloaded", id(objects[name]), t.dtype, tuple(t.shape), tuple(t.stride()))
            t = _offloaded(model, name)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        if t.numel() and ident in seen:
            h.update(f"|tied:{seen[ident]}\n".encode())
            continue
        seen[ident] = name
        h.update(b"\n")
        _feed_tensor(h, t)
    return h.hexdigest()


def _offloaded(model: torch.nn.Module, name: str) -> torch.Tensor:
    """The values of an offloaded (meta) tensor, from accelerate's weights map; DataError if no hook holds them.

    A model dispatched with ``device_map`` (disk or CPU offload) keeps such tensors on ``meta`` and their
    values behind the owning module's ``_hf_hook.weights_map``: hashing those values gives the same
    fingerprint as the model loaded whole, so its shards share the store's keys.
    """
    owners = [(m, mod) for m, mod in model.named_modules()
              if getattr(getattr(mod, "_hf_hook", None), "weights_map", None) is not None
              and (m == "" or name.startswith(m + "."))]
    for m, mod in sorted(owners, key=lambda pair: -len(pair[0])):  # the deepest owner first
        try:
            return mod._hf_hook.weights_map[name[len(m) + 1:] if m else name]
        except KeyError:
            continue
    raise DataError(f"cannot fingerprint {type(model).__name__}: tensor {name!r} is on the meta device and no "
                    "offload hook holds its values", hint="load the weights first (from_pretrained with the "
                    "weights in memory, or through accelerate's device_map / offload_folder)")


def library_versions() -> dict[str, str | None]:
    """Versions of python and of the libraries that shape activations (None when not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out

