"""Write a capture plan's pooled outputs into an activation store, chunk by chunk, resumably.

Each point gets one shard per (model, point, pooling, data, options) key. Chunks of records are
committed as they complete, so a killed run resumes at the first uncommitted chunk and gives identical
arrays; shards already complete are skipped without a forward pass.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from torch import nn

from xlprobe.hooks.committer import Committer
from xlprobe.hooks.memory import MemoryTrimmer
from xlprobe.hooks.plan import CapturePlan
from xlprobe.hooks.runner import progress_bar, token_layout, token_rows
from xlprobe.types import StoreKey

__all__ = ["write_plan", "tokenizer_fingerprint", "shard_keys", "shard_info", "open_writers"]

log = logging.getLogger(__name__)

Forward = Callable[[np.ndarray], dict[str, np.ndarray]]


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Hash of what decides token ids: the serialized fast tokenizer, or the vocabulary and class."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    raw = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    raw += type(tokenizer).__name__ + json.dumps(sorted(map(str, tokenizer.all_special_tokens)))
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:16]


def shard_keys(plan: CapturePlan, model_fp: str, tokenizer_fp: str) -> dict[str, StoreKey]:
    """``{point name: StoreKey}``: the options that change a shard's values are part of its key."""
    options = (f"tokenizer={tokenizer_fp};special={int(plan.include_special)};"
               f"max_length={plan.max_length};dtype={plan.dtype}")
    data_fp = plan.data.fingerprint  # a hash of every record: once, not once per point
    return {p.name: StoreKey(model_fp, p.name, plan.pooling, data_fp, options) for p in plan.points}


def shard_info(model: nn.Module, tokenizer: Any, plan: CapturePlan, model_fp: str, tokenizer_fp: str,
          provenance: dict[str, Any] | None) -> dict[str, Any]:
    """Provenance written into every shard's manifest entry."""
    from xlprobe.fingerprint import library_versions

    data = plan.data
    meta = {k: v for k, v in plan.meta().items() if k != "points"}
    return {
        "model": getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__,
        "model_class": type(model).__name__, "weights_hash": model_fp,
        "tokenizer": getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__,
        "tokenizer_class": type(tokenizer).__name__, "vocab_size": len(tokenizer), "tokenizer_hash": tokenizer_fp,
        "dataset": data.name, "dataset_fingerprint": data.fingerprint, "dataset_meta": _jsonable(dict(data.meta)),
        "libraries": library_versions(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "device": _device_of(model),
        **meta, **(provenance or {}),
    }


def _device_of(model: nn.Module) -> str:
    """Where the capture ran (``cpu``, ``cuda:0``...): the device of the model's first parameter."""
    placed = getattr(model, "hf_device_map", None)
    if placed and len({str(v) for v in placed.values()}) > 1:  # dispatched by accelerate: every place it uses
        return "+".join(sorted({str(v) for v in placed.values()}))
    param = next(model.parameters(), None)
    return str(param.device) if param is not None else "cpu"


def write_plan(store: Any, model: nn.Module, tokenizer: Any, plan: CapturePlan, forward: Forward, *,
               provenance: dict[str, Any] | None = None, progress: bool = False,
               overlap: bool = True) -> list[StoreKey]:
    """Write every planned point's shard chunk by chunk, skipping what a previous run committed.

    With ``overlap`` (the default) the rows are written and the chunks committed on a background thread
    (:class:`~xlprobe.hooks.committer.Committer`) while the next batches run; a ``forward`` with a
    ``submit`` method (:class:`~xlprobe.hooks.runner.PlanRunner`) also leaves each batch's copy to the host
    and its finiteness check to that thread. The shards are the same either way.
    """
    from xlprobe.fingerprint import model_fingerprint

    model_fp, tokenizer_fp = model_fingerprint(model), tokenizer_fingerprint(tokenizer)
    keys = shard_keys(plan, model_fp, tokenizer_fp)
    store.write_records(plan.data)
    todo = [p for p in plan.points if not store.has(keys[p.name])]
    if not todo:
        log.info("all %d shard(s) already complete in %s: nothing to do", len(keys), store.path)
        return list(keys.values())
    first = forward(np.array([0]))
    info = shard_info(model, tokenizer, plan, model_fp, tokenizer_fp, provenance)
    chunks = plan.chunks()
    with contextlib.ExitStack() as stack:
        dims = {p.name: first[p.name].shape[1] for p in todo}
        writers, ptrs = open_writers(stack, store, plan, todo, keys, dims, info)
        pending = {name: set(w.pending) for name, w in writers.items()}
        todo_chunks = sorted(set().union(*pending.values()))
        if len(todo_chunks) < len(chunks):
            log.info("resuming: %d of %d chunk(s) already committed", len(chunks) - len(todo_chunks), len(chunks))
        left = sum(chunks[c][1] - chunks[c][0] for c in todo_chunks)
        what = "capturing" if left == plan.n else f"capturing ({plan.n - left} of {plan.n} already stored)"
        ctx, advance = progress_bar(progress, left, what)
        stack.enter_context(ctx)
        trim = MemoryTrimmer()
        submit = getattr(forward, "submit", None)
        with Committer(background=overlap) as jobs:
            for c in todo_chunks:
                mine = {name: w for name, w in writers.items() if c in pending[name]}
                for idx in plan.batches(*chunks[c]):
                    rows = submit(idx) if submit is not None else forward(idx)
                    jobs.submit(functools.partial(_write_batch, mine, ptrs, idx, rows))
                    advance(len(idx))
                    trim.after_batch()
                jobs.submit(functools.partial(_commit, mine, c))
                trim.now()
            jobs.drain()
        for w in writers.values():
            w.finalize()
    return list(keys.values())


def open_writers(stack: contextlib.ExitStack, store: Any, plan: CapturePlan, points: Any, keys: dict[str, StoreKey],
                 dims: dict[str, int], info: dict[str, Any]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A resuming shard writer per point (entered on ``stack``), and each token shard's row pointers.

    Pooled shards have a row per record in the plan's chunks; per-token shards (``pooling="tokens"``) a row
    per kept token, their chunks the records' token ranges, and the layout (row pointers, token ids) as extras.
    """
    chunks = plan.chunks()
    writers, ptrs = {}, {}
    for p in points:
        extras, rows, row_chunks = None, plan.n, chunks
        if plan.pooling == "tokens":
            extras = token_layout(plan.encoded(p.side))
            ptr = ptrs[p.name] = extras["row_ptr"]
            rows, row_chunks = int(ptr[-1]), [(int(ptr[lo]), int(ptr[hi])) for lo, hi in chunks]
        writers[p.name] = stack.enter_context(store.writer(
            keys[p.name], n_rows=rows, dim=dims[p.name], chunks=row_chunks, extras=extras,
            info={**info, "point": p.name, "alias": p.alias}))
    return writers, ptrs


def _write_batch(writers: dict[str, Any], ptrs: dict[str, np.ndarray], idx: np.ndarray, rows: Any) -> None:
    """Write one batch's rows (a dict, or PendingRows to wait for and check) into each writer of its chunk."""
    res = rows.result() if hasattr(rows, "result") else rows
    for name, w in writers.items():
        w.write(idx if name not in ptrs else token_rows(ptrs[name], idx), res[name])


def _commit(writers: dict[str, Any], chunk: int) -> None:
    """Commit one chunk in each writer that had it pending."""
    for w in writers.values():
        w.commit(chunk)


def _jsonable(obj: Any) -> Any:
    """Best-effort conversion of loader metadata to JSON-friendly values."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return str(obj)
