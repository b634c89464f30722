"""Forward hooks on named capture points, owned by a context manager that always removes them."""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from xlprobe.types import CapturePoint

__all__ = ["Capture", "StopForward", "output_tensor"]


class StopForward(Exception):
    """Raised by the hook of the last requested point so the rest of the forward is never computed."""


def output_tensor(out: Any) -> torch.Tensor:
    """The hidden-state tensor in a module's output (a tensor, a tuple / list, or a ModelOutput)."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    last = getattr(out, "last_hidden_state", None)
    if isinstance(last, torch.Tensor):
        return last
    raise TypeError(f"cannot find a tensor in a module output of type {type(out).__name__}")


def _input_tensor(args: tuple, kwargs: dict) -> torch.Tensor:
    """The hidden-state input of a block call (first positional argument or ``hidden_states=``)."""
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    hs = kwargs.get("hidden_states")
    if isinstance(hs, torch.Tensor):
        return hs
    raise TypeError("cannot find the hidden-state input of a block call")


class Capture(contextlib.AbstractContextManager):
    """Register forward hooks on ``points`` of ``model``; remove every one of them on exit.

    Parameters
    ----------
    model : nn.Module
        The model, as loaded (point names are its module paths).
    points : sequence of CapturePoint
        Where to read (see :func:`xlprobe.hooks.capture_points`).
    sink : callable, optional
        Called as ``sink(point, tensor)`` each time a point fires. Without it the last tensor of each
        point is kept (detached) in ``self.outputs[point.name]``.
    stop_after : CapturePoint, optional
        After this point fires, :class:`StopForward` ends the forward pass; the context swallows it.
        Used to skip layers (and LM heads) that nothing reads.

    Examples
    --------
    >>> with Capture(model, resolve_points(model, "encoder.3")) as cap:   # doctest: +SKIP
    ...     model(**batch)
    >>> cap.outputs["model.encoder.layers.3"].shape                      # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, points: Sequence[CapturePoint],
                 sink: Callable[[CapturePoint, torch.Tensor], None] | None = None,
                 stop_after: CapturePoint | None = None) -> None:
        self.model = model
        self.points = list(points)
        self.sink = sink
        self.stop_after = stop_after
        self.outputs: dict[str, torch.Tensor] = {}
        self.stopped = False
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _emit(self, point: CapturePoint, tensor: torch.Tensor) -> None:
        """Hand a captured tensor to the sink, then stop the forward if this is the last point."""
        if self.sink is not None:
            self.sink(point, tensor)
        else:
            self.outputs[point.name] = tensor.detach()
        if self.stop_after is not None and point.name == self.stop_after.name:
            raise StopForward(point.name)

    def _make_hook(self, point: CapturePoint) -> Callable:
        """A forward hook (or pre-hook for ``:input`` points) bound to ``point``."""
        if point.is_input:
            def pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
                self._emit(point, _input_tensor(args, kwargs))
            return pre_hook

        def hook(module: nn.Module, args: tuple, out: Any) -> None:
            self._emit(point, output_tensor(out))
        return hook

    def __enter__(self) -> Capture:
        try:
            for p in self.points:
                module = self.model.get_submodule(p.module)
                if p.is_input:
                    h = module.register_forward_pre_hook(self._make_hook(p), with_kwargs=True)
                else:
                    h = module.register_forward_hook(self._make_hook(p))
                self._handles.append(h)
        except BaseException:
            self.remove()
            raise
        return self

    def remove(self) -> None:
        """Remove every hook this context registered (idempotent)."""
        while self._handles:
            self._handles.pop().remove()

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.remove()
        if exc_type is not None and issubclass(exc_type, StopForward):
            self.stopped = True
            return True
        return False
