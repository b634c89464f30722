"""Capture pooled activations of a dataset into arrays or the store: the public entry point.

:func:`extract` plans the capture once (:func:`xlprobe.hooks.plan.plan_capture`: data, points, language
codes, teacher forcing, validation), then runs the plan with forward hooks (:class:`PlanRunner`). The
forward pass runs only as far as the requested points need: an encoder-only request never runs the
decoder or the LM head, and the pass stops right after the last requested block. Pooling happens inside
the hook, so memory is O(batch x points) whatever the corpus size; with a store, each chunk of records is
committed to disk as it completes (:func:`xlprobe.hooks.writing.write_plan`), so a killed run resumes
where it stopped and gives identical arrays.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from xlprobe.errors import ConfigError
from xlprobe.hooks.distributed import env_world, write_plan_ranked
from xlprobe.hooks.memory import MemoryTrimmer
from xlprobe.hooks.plan import MAX_BATCH_SIZE, CapturePlan, plan_capture
from xlprobe.hooks.runner import (
    PendingRows,
    PlanRunner,
    is_dispatched,
    progress_bar,
    token_layout,
    token_rows,
)
from xlprobe.types import CapturePoint, Dataset, LayerSpec, Record, StoreKey

__all__ = ["extract", "run_plan", "describe_points", "Activations", "TokenStates", "MAX_BATCH_SIZE"]

log = logging.getLogger(__name__)


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
    """``{point alias: array}`` in execution order that also answers to module paths, and carries run facts.

    Keys are the aliases (``encoder.3``), the names every results table uses; ``acts["model.encoder.layers.3"]``,
    ``.get`` and ``in`` accept the module path too. Outputs with no capture point (a Bridge hook) keep
    their own name.
    """

    def __init__(self, points: Sequence[CapturePoint], arrays: dict[str, Any], meta: dict[str, Any]) -> None:
        alias = {p.name: p.alias for p in points}
        super().__init__({alias.get(k, k): v for k, v in arrays.items()})
        self.points = list(points)
        self.meta = meta
        self._alias = alias

    def key_of(self, key: Any) -> Any:
        """The key under which ``key`` (an alias or a module path) is stored."""
        return self._alias.get(key, key) if isinstance(key, str) else key

    def __getitem__(self, key: Any) -> Any:
        return super().__getitem__(self.key_of(key))

    def __contains__(self, key: object) -> bool:
        return super().__contains__(self.key_of(key))

    def get(self, key: Any, default: Any = None) -> Any:
        """The array of ``key`` (alias or module path), or ``default``."""
        return super().get(self.key_of(key), default)



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
    lang_codes: dict[str, str] | None = None,
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
        The source language, teacher-forcing targets, and the target language (mBART-50: the decoder
        reads ``</s> [tgt_lang] target``; without targets, ``</s> [tgt_lang]``). Strings take them as
        given; records keep their own and take these only where they have none (``lang="und"``, no
        target), and a contradiction raises DataError.
    lang_codes
        Dataset language -> the model's language code, consulted before the automatic mapping
        (``fr`` -> ``fr_XX``, ``fra_Latn``...).
    store : ActivationStore, optional
        Write shards there (resumable, chunk by chunk) and return their keys instead of arrays.
    dtype : {"float32", "float16", "bfloat16"}
        Compute precision (autocast); results are float32. Non-finite values raise NumericalError.
    device
        Where to run; the model is moved there when given. Default: where the model already is. A model
        dispatched by accelerate (``from_pretrained(..., device_map=...)``: layers on several devices, or
        offloaded to CPU / disk) stays where its device map put it: ``device`` is then refused
        (ConfigError); inputs go to its input embeddings' device and the rows come back on the CPU.
    padding_side : {"right", "left"}
        Left padding passes ``position_ids`` (decoder-only and encoder-only models that take them).
    chunk_size
        Records per resumable unit; batches are length-sorted within a chunk.

    Returns
    -------
    Activations or list of StoreKey
        ``{point alias: float32 [n, d]}`` (also indexable by the module path) in the input order, or
        the keys of the shards written to ``store``.
    """
    plan = plan_capture(model, tokenizer, texts, layers, pooling=pooling, batch_size=batch_size,
                        max_tokens=max_tokens, max_length=max_length, src_lang=src_lang, tgt_texts=tgt_texts,
                        tgt_lang=tgt_lang, lang_codes=lang_codes, include_special=include_special, dtype=dtype,
                        padding_side=padding_side, chunk_size=chunk_size)
    if device is not None:
        if is_dispatched(model):
            raise ConfigError(
                f"device={str(device)!r} given for a model dispatched over devices by accelerate "
                f"(device map {_map_summary(model)}); moving it would undo the map",
                hint="leave device=None: the model runs where its device_map put it (inputs go to the input "
                     "embeddings' device, accelerate moves the rest)")
        model.to(device)
    return run_plan(model, tokenizer, plan, store=store, progress=progress, provenance=provenance)


def _map_summary(model: nn.Module) -> str:
    """The devices of a dispatched model's map, with how many entries each: ``{cpu: 5, disk: 3}``."""
    places = [str(v) for v in (getattr(model, "hf_device_map", None) or {}).values()]
    if not places:
        return "{offloaded: meta parameters}"
    return "{" + ", ".join(f"{d}: {places.count(d)}" for d in dict.fromkeys(places)) + "}"


def run_plan(model: nn.Module, tokenizer: Any, plan: CapturePlan, *, store: Any = None, progress: bool = False,
             provenance: dict[str, Any] | None = None) -> Activations | list[StoreKey]:
    """Run a plan with forward hooks, in eval mode: arrays in input order, or shards written to ``store``."""
    t0 = time.perf_counter()
    forward = PlanRunner(model, plan)
    was_training = model.training
    model.eval()
    try:
        if store is not None:
            # under torchrun (WORLD_SIZE > 1) the ranks split the batches; alone, write_plan as before
            keys = write_plan_ranked(store, model, tokenizer, plan, forward, provenance=provenance,
                                     progress=progress)
            log.info("wrote %d shard(s) for %d texts in %.1fs", len(keys), plan.n, time.perf_counter() - t0)
            return keys
        if env_world() > 1:
            log.warning("extract in memory under torchrun (%d processes) is not split: every process computes "
                        "every batch; pass store=ActivationStore.open(path) to split the batches over them",
                        env_world())
        arrays = _in_memory(plan, forward, progress)
    finally:
        model.train(was_training)
    return Activations(plan.points, arrays, {**plan.meta(), "seconds": time.perf_counter() - t0})


def _in_memory(plan: CapturePlan, forward: PlanRunner, progress: bool) -> dict[str, Any]:
    """Fill arrays in input order, batch by batch; a batch's rows are read once the next one is launched.

    On a CUDA device :meth:`PlanRunner.submit` returns before the rows reach the host, so the next batch's
    tokens and kernels are sent while they travel; elsewhere the rows are ready at once and this is the
    plain loop.
    """
    tokens = plan.pooling == "tokens"
    layouts = {p.name: token_layout(plan.encoded(p.side)) for p in plan.points} if tokens else {}
    out: dict[str, np.ndarray] = {}

    def keep(pending: PendingRows) -> None:
        idx = pending.idx
        for name, vals in pending.result().items():
            if name not in out:
                rows = int(layouts[name]["row_ptr"][-1]) if tokens else plan.n
                out[name] = np.empty((rows, vals.shape[1]), np.float32)
            out[name][token_rows(layouts[name]["row_ptr"], idx) if tokens else idx] = vals
        advance(len(idx))

    ctx, advance = progress_bar(progress, plan.n)
    trim = MemoryTrimmer()
    with ctx:
        for lo, hi in plan.chunks():
            last = None
            for idx in plan.batches(lo, hi):
                pending = forward.submit(idx)
                if last is not None:
                    keep(last)
                last = pending
                trim.after_batch()
            if last is not None:
                keep(last)
            trim.now()
    if tokens:
        return {k: TokenStates(out[k], **layouts[k]) for k in out}
    return out


def describe_points(model: nn.Module, tokenizer: Any) -> list[dict[str, Any]]:
    """Every capture point with its output width, read by running a one-sentence plan."""
    plan = plan_capture(model, tokenizer, ["In the beginning was the Word."], "all")
    with torch.inference_mode():
        acts = run_plan(model, tokenizer, plan)
    return [{"name": p.name, "alias": p.alias, "side": p.side, "index": p.index, "where": p.where,
             "hidden_states": p.hidden_state, "shape": ["batch", "seq", int(acts[p.alias].shape[1])]}
            for p in plan.points]
