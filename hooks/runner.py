"""Run a capture plan's batches through a model with forward hooks: pooled outputs per point.

:class:`PlanRunner` is the one forward path of xlprobe's hook-based capture: it runs the cheapest call
that reaches every planned point (no decoder or LM head unless a decoder point is asked for; the pass
stops after the last requested block), pools inside the hook, checks for non-finite values and hands
back ``{point name: float32 [b, d]}`` per batch. :func:`~xlprobe.hooks.extract` (in memory) and
:func:`~xlprobe.hooks.writing.write_plan` (into the store) drive it.
"""
from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from xlprobe.errors import ConfigError, NumericalError
from xlprobe.hooks.batching import SideBatch
from xlprobe.hooks.capture import Capture
from xlprobe.hooks.encode import Encoded
from xlprobe.hooks.plan import CapturePlan
from xlprobe.hooks.pooling import pool
from xlprobe.types import CapturePoint

__all__ = ["PlanRunner", "PendingRows", "input_device", "is_dispatched", "token_layout", "token_rows", "progress_bar"]

_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _accepts(fn: Callable, name: str) -> bool:
    """True when ``fn`` takes a keyword ``name``."""
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _forward_fn(model: nn.Module, plan: CapturePlan) -> Callable[[SideBatch, SideBatch | None], None]:
    """The cheapest call that reaches every planned point (no decoder / LM head unless needed)."""
    base = getattr(model, "base_model", model)
    if plan.family.is_encoder_decoder and plan.dec is None:
        encoder = model.get_encoder()
        fn: Callable = encoder.forward

        def run(src: SideBatch, dec: SideBatch | None) -> None:
            kw = {"position_ids": src.positions} if src.positions is not None else {}
            encoder(input_ids=src.ids, attention_mask=src.attn, **kw)
    elif plan.family.is_encoder_decoder:
        fn = base.forward

        def run(src: SideBatch, dec: SideBatch | None) -> None:
            base(input_ids=src.ids, attention_mask=src.attn, decoder_input_ids=dec.ids,
                 decoder_attention_mask=dec.attn)
    else:
        fn = base.forward

        def run(src: SideBatch, dec: SideBatch | None) -> None:
            kw = {"position_ids": src.positions} if src.positions is not None else {}
            base(input_ids=src.ids, attention_mask=src.attn, **kw)
    if plan.padding_side == "left" and (plan.family.is_encoder_decoder or not _accepts(fn, "position_ids")):
        raise ConfigError(
            f"padding_side='left' would shift the positions of {type(model).__name__}, whose forward takes no "
            "position_ids here", hint="use padding_side='right' (pooling handles either; states do not)")
    return run


@contextlib.contextmanager
def _precision(dtype: str, model: nn.Module, dev: torch.device) -> Iterator[None]:
    """Autocast to ``dtype`` when the model's weights are float32 and a lower precision is asked."""
    want = _TORCH_DTYPES[dtype]
    have = next(model.parameters()).dtype
    if want is torch.float32 or have is want:
        yield
        return
    with torch.autocast(device_type=dev.type, dtype=want):
        yield


def is_dispatched(model: nn.Module) -> bool:
    """True for a model placed by accelerate over several devices, or with weights offloaded (CPU / disk).

    Such a model (``from_pretrained(..., device_map=...)``, ``dispatch_model``, ``disk_offload``...) must not
    be moved with ``model.to``: accelerate's hooks move weights and activations between devices themselves.
    A ``device_map`` that puts everything on one device (``{"": "cpu"}``) is not dispatched.
    """
    hf_map = getattr(model, "hf_device_map", None)
    if hf_map and (len({str(v) for v in hf_map.values()}) > 1 or {str(v) for v in hf_map.values()} & {"disk", "meta"}):
        return True
    return any(p.device.type == "meta" for p in model.parameters())


def _hook_device(module: nn.Module) -> torch.device | None:
    """The execution device of accelerate's hook on ``module`` (its weights may live on the CPU, disk or meta)."""
    hook = getattr(module, "_hf_hook", None)
    for h in [hook, *getattr(hook, "hooks", ())]:
        dev = getattr(h, "execution_device", None)
        if dev is not None:
            return torch.device(dev if not isinstance(dev, int) else f"cuda:{dev}")
    return None


def input_device(model: nn.Module) -> torch.device:
    """Where a batch's input tensors go: the device the model's input embeddings run on.

    An ordinary model: the device of its first parameter. A dispatched one (see :func:`is_dispatched`): the
    execution device of accelerate's hook on the input embeddings (or on the nearest hooked parent), else
    the embeddings' weight device, else accelerate's main device for the map (the first entry that is not
    ``cpu`` / ``disk``; ``cpu`` when there is none). Layers on other devices receive their inputs through
    accelerate's hooks.
    """
    first = next(model.parameters(), None)
    if not is_dispatched(model):
        return first.device if first is not None else torch.device("cpu")
    try:
        emb = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        emb = None
    if emb is not None:
        dev = _hook_device(emb)
        if dev is None:  # hooked on a parent (``model.encoder`` as one map entry): the nearest hooked ancestor
            for module in model.modules():
                if any(sub is emb for sub in module.modules()) and _hook_device(module) is not None:
                    dev = _hook_device(module)
        if dev is not None:
            return dev
        weight = getattr(emb, "weight", None)
        if weight is not None and weight.device.type != "meta":
            return weight.device
    places = [str(v) for v in (getattr(model, "hf_device_map", None) or {}).values()]
    main = [v for v in places if v not in ("cpu", "disk", "meta")]
    if main:
        return torch.device(f"cuda:{main[0]}" if main[0].isdigit() else main[0])
    return torch.device("cpu")


class PlanRunner:
    """Runs batches of a plan through ``model`` and returns each point's pooled output.

    Parameters
    ----------
    model : nn.Module
        The model the plan was made for, on its device (eval mode is the caller's business); or dispatched
        by accelerate over several devices / offloaded (``device_map``): inputs then go to the device of
        its input embeddings (:func:`input_device`), each hook pools on the device its block ran on, and
        the pooled rows reach the host whatever device they came from.
    plan : CapturePlan
        What to read; its points must be non-empty.
    """

    def __init__(self, model: nn.Module, plan: CapturePlan) -> None:
        if not plan.points:
            raise ConfigError("the plan has no capture point to run", hint="plan with layers=...")
        self.model = model
        self.plan = plan
        self.device = input_device(model)
        self._run = _forward_fn(model, plan)
        self._sides: dict[str, SideBatch | None] = {}
        self._pooled: dict[str, torch.Tensor] = {}

    def __call__(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """Pooled outputs ``{point name: float32 [len(idx), d]}`` (per-token rows for ``tokens``).

        Pooling runs on the model's device inside the hooks; the batch's pooled rows of every point then
        leave the device together, in one copy (one synchronisation per batch, however many points).
        """
        return self.submit(idx).result()

    def submit(self, idx: np.ndarray) -> PendingRows:
        """Run one batch and start its rows' copy to the host; :meth:`PendingRows.result` waits for them.

        On a CUDA device the copy goes into pinned host memory without blocking (an event marks its end),
        so the caller can launch the next batch while this one's rows travel; elsewhere the rows are on the
        host when this returns. Either way nothing is checked until ``result()``.
        """
        plan = self.plan
        src, dec = plan.batch(idx, self.device)
        self._sides = {"encoder": src, "decoder": src if plan.src_is_decoder else dec}
        self._pooled = {}
        with _precision(plan.dtype, self.model, self.device), torch.inference_mode(), \
                Capture(self.model, plan.points, self._sink, stop_after=plan.points[-1]):
            self._run(src, dec)
        pooled, self._pooled = self._pooled, {}
        rows, ready = _to_host(pooled)
        return PendingRows(rows, ready, idx, plan.dtype)

    def _sink(self, point: CapturePoint, states: torch.Tensor) -> None:
        """Pool one point's states over its side's kept positions, on the device (float32 [b, d])."""
        side = self._sides[point.side]
        if side.keep.device != states.device:  # a block on another device than the inputs (dispatched model)
            side = _side_on(side, states.device)
        if self.plan.pooling == "tokens":
            self._pooled[point.name] = states[side.keep].float()
        else:
            self._pooled[point.name] = pool(states, side.keep, self.plan.pooling, side.tag)


def _side_on(side: SideBatch, device: torch.device) -> SideBatch:
    """The masks / tag positions of ``side`` on ``device`` (where a dispatched model's block ran)."""
    import dataclasses

    return dataclasses.replace(side, keep=side.keep.to(device),
                               tag=side.tag.to(device) if side.tag is not None else None)


def _to_host(pooled: dict[str, torch.Tensor]) -> tuple[dict[str, np.ndarray], Any]:
    """``{name: float32 [b_i, d_i]}`` on the host, in one device-to-host copy for all of them, and its event.

    From one CUDA device the copy is asynchronous, into pinned memory: the event (``torch.cuda.Event``)
    says when the rows are there; otherwise the event is None and the rows are ready. Rows pooled on
    several devices (a dispatched model) take one synchronous copy per device.
    """
    if not pooled:
        return {}, None
    devices = {t.device for t in pooled.values()}
    if len(devices) > 1:
        out: dict[str, np.ndarray] = {}
        for dev in devices:
            part, ready = _to_host({n: t for n, t in pooled.items() if t.device == dev})
            if ready is not None:
                ready.synchronize()
            out.update(part)
        return {n: out[n] for n in pooled}, None
    names = list(pooled)
    flat = torch.cat([pooled[n].reshape(-1) for n in names]) if len(names) > 1 else pooled[names[0]].reshape(-1)
    ready = None
    if flat.device.type == "cuda":  # pinned host memory (torch's caching host allocator), copied without blocking
        host_t = torch.empty(flat.shape, dtype=flat.dtype, pin_memory=True)
        host_t.copy_(flat, non_blocking=True)
        ready = torch.cuda.Event()
        ready.record(torch.cuda.current_stream(flat.device))
    else:
        host_t = flat.cpu()  # the one copy (and synchronisation) of the batch; a view on the CPU
    host = host_t.numpy()
    out, at = {}, 0
    for n in names:
        size = pooled[n].numel()
        out[n] = host[at:at + size].reshape(pooled[n].shape)
        at += size
    return out, ready


class PendingRows:
    """One batch's pooled rows on their way to the host (from :meth:`PlanRunner.submit`).

    :meth:`result` waits for the copy (when it was asynchronous) and checks the rows are finite, so the
    check runs where the rows are read: on a store's writer thread, the forward of the next batch is not
    held up by it.
    """

    def __init__(self, rows: dict[str, np.ndarray], ready: Any, idx: np.ndarray, dtype: str) -> None:
        self.idx, self._rows, self._ready, self._dtype = idx, rows, ready, dtype

    def __repr__(self) -> str:
        return f"PendingRows({len(self.idx)} records, {len(self._rows)} point(s), ready={self._ready is None})"

    def result(self) -> dict[str, np.ndarray]:
        """``{point name: float32 rows}`` on the host; NumericalError on inf / NaN."""
        if self._ready is not None:
            self._ready.synchronize()
            self._ready = None
        for name, vals in self._rows.items():  # checked on what is kept: [b, d] on the host, not [b, t, d]
            if not np.isfinite(vals).all():
                raise NumericalError(
                    f"non-finite activations (inf / NaN) at {name} in dtype {self._dtype}, batch of records "
                    f"{self.idx[:8].tolist()}...", hint="capture in dtype='float32' (float16 overflows first)")
        return self._rows


def token_layout(enc: Encoded) -> dict[str, np.ndarray]:
    """Where each text's kept tokens sit in a per-token array, with their ids and character spans."""
    sel = enc.keep.flat
    layout = {
        "row_ptr": np.concatenate([[0], np.cumsum(enc.kept)]).astype(np.int64),
        "token_ids": enc.ids.flat[sel].astype(np.int64),
    }
    if enc.spans is not None:
        layout["char_spans"] = enc.spans.flat[sel].astype(np.int64)
    return layout


def token_rows(ptr: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Rows of the per-token array owned by records ``idx``, in batch order."""
    return np.concatenate([np.arange(ptr[i], ptr[i + 1]) for i in idx]) if len(idx) else np.empty(0, np.int64)


def progress_bar(progress: bool, total: int, what: str = "capturing") -> tuple[Any, Callable[[int], None]]:
    """A rich progress bar on stderr, or a no-op, as a (context, advance) pair."""
    if not progress:
        return contextlib.nullcontext(), (lambda k: None)
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn(escape(what)), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=Console(stderr=True))
    task = bar.add_task(what, total=total)
    return bar, (lambda k: bar.advance(task, k))
