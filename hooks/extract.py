"""Capture pooled activations of a dataset: batching, language codes, teacher forcing, store writes.

The forward pass runs only as far as the requested points need: an encoder-only request never runs the
decoder or the LM head, and the pass stops right after the last requested block. Pooling happens inside
the hook, so memory is O(batch x points) whatever the corpus size; with a store, each chunk of records is
committed to disk as it completes, so a killed run resumes where it stopped and gives identical arrays.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from xlprobe.errors import ConfigError, DataError, NumericalError
from xlprobe.hooks.batching import SideBatch, as_dataset, decoder_start, pad_id, position_limit, side_batch
from xlprobe.hooks.capture import Capture
from xlprobe.hooks.encode import Encoded, check_tag_available, encode_decoder, encode_source
from xlprobe.hooks.families import Family
from xlprobe.hooks.memory import MemoryTrimmer
from xlprobe.hooks.points import model_family, resolve_points
from xlprobe.hooks.pooling import POOLED, pool
from xlprobe.types import CapturePoint, Dataset, LayerSpec, Record, StoreKey

__all__ = ["extract", "Activations", "TokenStates", "MAX_BATCH_SIZE"]

log = logging.getLogger(__name__)

#: Upper bound on ``batch_size`` (a typo guard; the memory of one batch is batch x seq x d per point).
MAX_BATCH_SIZE = 4096
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class TokenStates:
    """Per-token states of every text, concatenated: text i owns rows ``row_ptr[i]:row_ptr[i+1]``."""

    states: np.ndarray  # [n_tokens, d] float32
    token_ids: np.ndarray  # [n_tokens] int64
    row_ptr: np.ndarray  # [n_texts + 1] int64
    char_spans: np.ndarray | None = None  # [n_tokens, 2] (start, end) characters in the text; fast tokenizers

    def __len__(self) -> int:
        return len(self.row_ptr) - 1

    def text(self, i: int) -> np.ndarray:
        """The states of text ``i`` [n_tokens_i, d]."""
        return self.states[self.row_ptr[i]:self.row_ptr[i + 1]]


class Activations(dict):
    """``{point name: array}`` that also answers to aliases (``acts["encoder.3"]``) and carries run facts."""

    def __init__(self, points: Sequence[CapturePoint], arrays: dict[str, Any], meta: dict[str, Any]) -> None:
        super().__init__(arrays)
        self.points = list(points)
        self.meta = meta
        self._alias = {p.alias: p.name for p in points}

    def __getitem__(self, key: str) -> Any:
        return super().__getitem__(self._alias.get(key, key))

    def __contains__(self, key: object) -> bool:
        return super().__contains__(self._alias.get(key, key) if isinstance(key, str) else key)



def _validate(batch_size: int, max_length: int, pooling: str, dtype: str, padding_side: str,
              chunk_size: int, model: nn.Module) -> None:
    """Check scalar options once, at the public entry point."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ConfigError(f"batch_size must be an int in [1, {MAX_BATCH_SIZE}], got {batch_size!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ConfigError(f"chunk_size must be a positive int, got {chunk_size!r}")
    limit = position_limit(model)
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ConfigError(f"max_length must be an int >= 2, got {max_length!r}")
    if limit and max_length > limit:
        raise ConfigError(f"max_length={max_length} exceeds the model's {limit} positions",
                          hint=f"use max_length <= {limit}")
    if pooling not in POOLED + ("tokens",):
        raise ConfigError(f"unknown pooling {pooling!r}", hint=f"valid: {', '.join(POOLED + ('tokens',))}")
    if dtype not in _DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}", hint=f"valid: {', '.join(_DTYPES)}")
    if padding_side not in ("right", "left"):
        raise ConfigError(f"padding_side must be 'right' or 'left', got {padding_side!r}")


# ------------------------------------------------------------------------------------------- batching


def _accepts(fn: Callable, name: str) -> bool:
    """True when ``fn`` takes a keyword ``name``."""
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _forward_fn(model: nn.Module, family: Family, points: Sequence[CapturePoint], padding_side: str
                ) -> Callable[[SideBatch, SideBatch | None], None]:
    """The cheapest call that reaches every requested point (no decoder / LM head unless needed)."""
    base = getattr(model, "base_model", model)
    need_dec = any(p.side == "decoder" for p in points)
    if family.is_encoder_decoder and not need_dec:
        encoder = model.get_encoder()
        fn = encoder.forward

        def run(src: SideBatch, dec: SideBatch | None) -> None:
            kw = {"position_ids": src.positions} if src.positions is not None else {}
            encoder(input_ids=src.ids, attention_mask=src.attn, **kw)
    elif family.is_encoder_decoder:
        fn = base.forward

        def run(src: SideBatch, dec: SideBatch | None) -> None:
            base(input_ids=src.ids, attention_mask=src.attn, decoder_input_ids=dec.ids,
                 decoder_attention_mask=dec.attn)
    else:
        fn = base.forward

        def run(src: SideBatch, dec: SideBatch | None) -> None:
            kw = {"position_ids": src.positions} if src.positions is not None else {}
            base(input_ids=src.ids, attention_mask=src.attn, **kw)
    if padding_side == "left" and (family.is_encoder_decoder or not _accepts(fn, "position_ids")):
        raise ConfigError(
            f"padding_side='left' would shift the positions of {type(model).__name__}, whose forward takes no "
            "position_ids here", hint="use padding_side='right' (pooling handles either; states do not)")
    return run


# ------------------------------------------------------------------------------------------- sinks


class _Sink:
    """Receives each point's tensor during a forward, pools it and hands it to ``emit``."""

    def __init__(self, pooling: str, dtype: str, decoder_side_is_source: bool) -> None:
        self.pooling = pooling
        self.dtype = dtype
        self.src_for_decoder = decoder_side_is_source
        self.src: SideBatch | None = None
        self.dec: SideBatch | None = None
        self.batch: np.ndarray | None = None
        self.out: dict[str, np.ndarray] = {}

    def __call__(self, point: CapturePoint, states: torch.Tensor) -> None:
        side = self.src if point.side == "encoder" or self.src_for_decoder else self.dec
        if self.pooling == "tokens":
            vals = states[side.keep].float()
        else:
            vals = pool(states, side.keep, self.pooling, side.tag)
        if not torch.isfinite(vals).all():  # checked on what is kept: one [b, d] pass, not [b, t, d]
            raise NumericalError(
                f"non-finite activations (inf / NaN) at {point.name} in dtype {self.dtype}, batch of records "
                f"{self.batch[:8].tolist()}...", hint="capture in dtype='float32' (float16 overflows first)")
        self.out[point.name] = vals.cpu().numpy()


# ------------------------------------------------------------------------------------------- main


def extract(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str] | Sequence[Record] | Dataset,
    layers: LayerSpec,
    *,
    pooling: str = "mean",
    batch_size: int = 32,
    max_tokens: int | None = None,
    max_length: int | None = None,
    src_lang: str | None = None,
    tgt_texts: Sequence[str] | None = None,
    tgt_lang: str | None = None,
    store: Any = None,
    include_special: bool = False,
    dtype: str = "float32",
    device: str | torch.device | None = None,
    padding_side: str = "right",
    chunk_size: int = 1024,
    progress: bool = False,
    provenance: dict[str, Any] | None = None,
) -> Activations | list[StoreKey]:
    """Capture pooled activations of ``texts`` at ``layers``.

    Parameters
    ----------
    model, tokenizer
        A Hugging Face model (encoder-only, decoder-only or encoder-decoder) and its tokenizer.
    texts : list of str, list of Record, or Dataset
        Records carry their own language (and optional target text / language for the decoder).
    layers : LayerSpec
        Point names or aliases, globs (``encoder.*``), a list, ``"all"`` or a predicate.
    pooling : {"mean", "first", "last", "max", "tag", "tokens"}
        How to reduce each text's positions. Special tokens (language codes, bos / eos, padding) are
        left out unless ``include_special``; ``tag`` reads the language-code position only (a
        baseline); ``tokens`` keeps every position (:class:`TokenStates`).
    batch_size, max_length
        Texts per forward pass; tokens per text (longer texts are truncated, counted and reported).
        ``max_length`` defaults to 256 or the model's position limit, whichever is smaller.
    max_tokens
        Also cap each batch's padded size (texts x longest text, both sides counted): batches of long
        texts get fewer texts, so one batch's working set no longer grows with the longest sentence of
        the corpus (fairseq's ``--max-tokens``). None: ``batch_size`` alone.
    src_lang, tgt_texts, tgt_lang
        For plain string input: the source language, teacher-forcing targets, and the target language
        (mBART-50: the decoder reads ``</s> [tgt_lang] target``; without targets, ``</s> [tgt_lang]``).
    store : ActivationStore, optional
        Write shards there (resumable, chunk by chunk) and return their keys instead of arrays.
    dtype : {"float32", "float16", "bfloat16"}
        Compute precision (autocast); results are float32. Non-finite values raise NumericalError.
    device
        Where to run; the model is moved there when given. Default: where the model already is.
    padding_side : {"right", "left"}
        Left padding passes ``position_ids`` (decoder-only and encoder-only models that take them).
    chunk_size
        Records per resumable unit; batches are length-sorted within a chunk.

    Returns
    -------
    Activations or list of StoreKey
        ``{point name: float32 [n, d]}`` (also indexable by alias) in the input order, or the keys of
        the shards written to ``store``.
    """
    data = as_dataset(texts, src_lang, tgt_texts, tgt_lang)
    if max_length is None:
        max_length = min(256, position_limit(model) or 256)
    _validate(batch_size, max_length, pooling, dtype, padding_side, chunk_size, model)
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise ConfigError(f"max_tokens must be a positive int or None, got {max_tokens!r}",
                          hint="e.g. max_tokens=4096 (a batch never exceeds it, except a single text longer than it)")
    points = resolve_points(model, layers)
    family = model_family(model)
    if tgt_texts is not None and not family.is_encoder_decoder:
        raise ConfigError(f"tgt_texts given, but {type(model).__name__} has no decoder to teacher-force",
                          hint="drop tgt_texts (decoder-only models read the texts themselves)")
    if device is not None:
        model.to(device)
    dev = next(model.parameters()).device

    t0 = time.perf_counter()
    src_is_decoder = not family.is_encoder_decoder and family.encoder_layers is None
    use_langs = family.lang_style == "src_lang" and any(r.lang != "und" for r in data)
    src = encode_source(tokenizer, family, data, max_length=max_length, include_special=include_special,
                        use_langs=use_langs, spans=pooling == "tokens")
    dec = None
    if family.is_encoder_decoder and any(p.side == "decoder" for p in points):
        dec = encode_decoder(tokenizer, family, data, max_length=max_length, include_special=include_special,
                             decoder_start=decoder_start(model), spans=pooling == "tokens")
    sides = {"encoder": src if not src_is_decoder else None, "decoder": src if src_is_decoder else dec}
    for p in points:
        enc = sides[p.side]
        if pooling == "tag":
            check_tag_available(enc, tokenizer, family, p.side)
        elif pooling != "tokens" and (empty := np.flatnonzero(enc.kept == 0)).size:
            raise DataError(f"{empty.size} text(s) have no token left to pool on the {p.side} side "
                            f"(positions {empty[:10].tolist()})",
                            hint="they tokenize to special tokens only; drop them or pass include_special=True")
    truncated = src.truncated + (dec.truncated if dec is not None else 0)
    if truncated:
        log.warning("%d of %d texts were longer than max_length=%d tokens and were truncated",
                    truncated, len(data), max_length)

    pad = pad_id(tokenizer)
    run = _forward_fn(model, family, points, padding_side)
    sink = _Sink(pooling, dtype, src_is_decoder)
    n = len(data)
    order_key = src.lengths + (dec.lengths if dec is not None else 0)
    chunks = [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]
    batches = functools.partial(_batches, order_key=order_key, batch_size=batch_size, max_tokens=max_tokens)

    def forward(idx: np.ndarray) -> dict[str, np.ndarray]:
        """Run one batch of record indices and return each point's pooled output."""
        sink.batch = idx
        sink.src = side_batch(src, idx, pad, padding_side, dev)
        sink.dec = side_batch(dec, idx, pad, "right", dev) if dec is not None else None
        sink.out = {}
        with _precision(dtype, model, dev), torch.inference_mode(), \
                Capture(model, points, sink, stop_after=points[-1]):
            run(sink.src, sink.dec)
        return sink.out

    meta = {
        "n": n, "truncated": truncated, "max_length": max_length, "pooling": pooling, "dtype": dtype,
        "include_special": include_special, "points": [p.name for p in points], "family": family.name,
        "langs": src.langs,
    }
    was_training = model.training
    model.eval()
    try:
        if store is not None:
            keys = _run_to_store(store, model, tokenizer, data, points, pooling, chunks, batches,
                                 forward, src, dec, src_is_decoder, meta, provenance, progress)
            log.info("wrote %d shard(s) for %d texts in %.1fs", len(keys), n, time.perf_counter() - t0)
            return keys
        arrays = _run_in_memory(points, pooling, chunks, batches, forward, src, dec, src_is_decoder,
                                n, progress)
    finally:
        model.train(was_training)
    meta["seconds"] = time.perf_counter() - t0
    return Activations(points, arrays, meta)


@contextlib.contextmanager
def _precision(dtype: str, model: nn.Module, dev: torch.device):
    """Autocast to ``dtype`` when the model's weights are float32 and a lower precision is asked."""
    want = _DTYPES[dtype]
    have = next(model.parameters()).dtype
    if want is torch.float32 or have is want:
        yield
        return
    with torch.autocast(device_type=dev.type, dtype=want):
        yield


def _side_of(p: CapturePoint, src: Encoded, dec: Encoded | None, src_is_decoder: bool) -> Encoded:
    """The encoded side a point reads."""
    return src if p.side == "encoder" or src_is_decoder else dec


def _batches(lo: int, hi: int, *, order_key: np.ndarray, batch_size: int, max_tokens: int | None = None
             ) -> list[np.ndarray]:
    """Record indices of a chunk in length-sorted batches (longest first, so memory errors come early).

    With ``max_tokens``, a batch also stops growing when its size x its longest text would exceed it
    (a text longer than ``max_tokens`` is a batch of its own).
    """
    idx = np.arange(lo, hi)
    idx = idx[np.argsort(-order_key[lo:hi], kind="stable")]
    if max_tokens is None:
        return [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
    out, i = [], 0
    while i < len(idx):
        longest = max(int(order_key[idx[i]]), 1)  # sorted: the first text of a batch is its longest
        size = max(1, min(batch_size, max_tokens // longest, len(idx) - i))
        out.append(idx[i:i + size])
        i += size
    return out


def _progress(progress: bool, total: int):
    """A rich progress bar, or a no-op, as a (context, advance) pair."""
    if not progress:
        return contextlib.nullcontext(), (lambda k: None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("capturing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    task = bar.add_task("capture", total=total)
    return bar, (lambda k: bar.advance(task, k))


def _token_layout(enc: Encoded) -> dict[str, np.ndarray]:
    """Where each text's kept tokens sit in a per-token array, with their ids and character spans."""
    sel = enc.keep.flat
    layout = {
        "row_ptr": np.concatenate([[0], np.cumsum(enc.kept)]).astype(np.int64),
        "token_ids": enc.ids.flat[sel].astype(np.int64),
    }
    if enc.spans is not None:
        layout["char_spans"] = enc.spans.flat[sel].astype(np.int64)
    return layout


def _run_in_memory(points, pooling, chunks, batches, forward, src, dec, src_is_decoder, n,
                   progress) -> dict[str, Any]:
    """Fill arrays in input order, batch by batch."""
    out: dict[str, np.ndarray] = {}
    layouts = ({p.name: _token_layout(_side_of(p, src, dec, src_is_decoder)) for p in points}
               if pooling == "tokens" else {})
    ctx, advance = _progress(progress, n)
    trim = MemoryTrimmer()
    with ctx:
        for lo, hi in chunks:
            for idx in batches(lo, hi):
                res = forward(idx)
                for p in points:
                    vals = res[p.name]
                    if p.name not in out:
                        rows = int(layouts[p.name]["row_ptr"][-1]) if pooling == "tokens" else n
                        out[p.name] = np.empty((rows, vals.shape[1]), np.float32)
                    rows_idx = idx if pooling != "tokens" else _token_rows(layouts[p.name]["row_ptr"], idx)
                    out[p.name][rows_idx] = vals
                advance(len(idx))
                trim.after_batch()
            trim.now()
    if pooling == "tokens":
        return {k: TokenStates(out[k], **layouts[k]) for k in out}
    return out


def _token_rows(ptr: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Rows of the per-token array owned by records ``idx``, in batch order."""
    return np.concatenate([np.arange(ptr[i], ptr[i + 1]) for i in idx]) if len(idx) else np.empty(0, np.int64)


def _options_key(tokenizer: Any, include_special: bool, max_length: int, dtype: str) -> str:
    """The options that change the values of a shard (tokenizer included), as a stable string."""
    return (f"tokenizer={tokenizer_fingerprint(tokenizer)};special={int(include_special)};"
            f"max_length={max_length};dtype={dtype}")


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Hash of what decides token ids: the serialized fast tokenizer, or the vocabulary and class."""
    import hashlib
    import json

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        raw = backend.to_str()
    else:
        raw = json.dumps(sorted(tokenizer.get_vocab().items()))
    raw += type(tokenizer).__name__ + json.dumps(sorted(map(str, tokenizer.all_special_tokens)))
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:16]


def _run_to_store(store, model, tokenizer, data, points, pooling, chunks, batches, forward, src, dec,
                  src_is_decoder, meta, provenance, progress) -> list[StoreKey]:
    """Write every point's shard chunk by chunk, skipping what a previous run committed."""
    from xlprobe.fingerprint import library_versions, model_fingerprint

    model_fp = model_fingerprint(model)
    data_fp = data.fingerprint
    store.write_records(data)
    options = _options_key(tokenizer, meta["include_special"], meta["max_length"], meta["dtype"])
    keys = {p.name: StoreKey(model_fp, p.name, pooling, data_fp, options) for p in points}
    todo = [p for p in points if not store.has(keys[p.name])]
    if not todo:
        log.info("all %d shard(s) already complete in %s: nothing to do", len(points), store.path)
        return [keys[p.name] for p in points]
    probe = forward(np.array([0]))
    dims = {p.name: probe[p.name].shape[1] for p in todo}
    info = {
        "model": getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__,
        "model_class": type(model).__name__, "weights_hash": model_fp,
        "tokenizer": getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__,
        "tokenizer_class": type(tokenizer).__name__, "vocab_size": len(tokenizer),
        "tokenizer_hash": tokenizer_fingerprint(tokenizer),
        "dataset": data.name, "dataset_fingerprint": data_fp, "dataset_meta": _jsonable(dict(data.meta)),
        "libraries": library_versions(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **{k: v for k, v in meta.items() if k != "points"}, **(provenance or {}),
    }
    ptrs: dict[str, np.ndarray] = {}
    with contextlib.ExitStack() as stack:
        writers = {}
        for p in todo:
            enc = _side_of(p, src, dec, src_is_decoder)
            extras = None
            if pooling == "tokens":
                extras = _token_layout(enc)
                ptr = ptrs[p.name] = extras["row_ptr"]
                rows = int(ptr[-1])
                row_chunks = [(int(ptr[lo]), int(ptr[hi])) for lo, hi in chunks]
            else:
                rows, row_chunks = len(data), chunks
            writers[p.name] = stack.enter_context(store.writer(
                keys[p.name], n_rows=rows, dim=dims[p.name], chunks=row_chunks, extras=extras,
                info={**info, "point": p.name, "alias": p.alias}))
        pending = {name: set(w.pending) for name, w in writers.items()}
        todo_chunks = sorted(set().union(*pending.values()))
        total = sum(chunks[c][1] - chunks[c][0] for c in todo_chunks)
        if len(todo_chunks) < len(chunks):
            log.info("resuming: %d of %d chunk(s) already committed", len(chunks) - len(todo_chunks), len(chunks))
        ctx, advance = _progress(progress, total)
        stack.enter_context(ctx)
        trim = MemoryTrimmer()
        for c in todo_chunks:
            lo, hi = chunks[c]
            for idx in batches(lo, hi):
                res = forward(idx)
                for name, w in writers.items():
                    if c in pending[name]:
                        rows_idx = idx if pooling != "tokens" else _token_rows(ptrs[name], idx)
                        w.write(rows_idx, res[name])
                advance(len(idx))
                trim.after_batch()
            for name, w in writers.items():
                if c in pending[name]:
                    w.commit(c)
            trim.now()
        for w in writers.values():
            w.finalize()
    return [keys[p.name] for p in points]


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
