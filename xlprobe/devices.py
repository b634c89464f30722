"""Which torch device a command or a suite runs on: names checked against this machine, before any model loads.

Used by the command line (``--device``) and by suites (``device:``); a runner module, so the suite steps
need not import the CLI.
"""
from __future__ import annotations

from xlprobe.errors import ConfigError

__all__ = ["resolve_device", "rank_device"]


def resolve_device(value: str) -> str:
    """The torch device ``value`` names, checked against this machine (``auto`` resolved); no model is loaded.

    ``auto``: ``cuda`` when ``torch.cuda.is_available()``, else ``mps`` when available, else ``cpu``.
    ``cuda`` / ``cuda:N`` without such a GPU, ``mps`` without Apple's backend, or a name torch does not
    know raise :class:`~xlprobe.errors.ConfigError` saying what is missing and the fix (``--device cpu``
    or ``--device auto``).
    """
    text = str(value).strip().lower()
    if text == "cpu":  # the default: no torch import, no check
        return "cpu"
    import torch

    if text == "auto":
        if torch.cuda.is_available():
            return rank_device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    try:
        dev = torch.device(text)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"unknown device {value!r}", hint="use cpu, cuda, cuda:N (e.g. cuda:1), mps or auto") \
            from None
    fix = "use --device cpu, or --device auto (the GPU when there is one, else the CPU)"
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch build has no CUDA support" if torch.version.cuda is None
                   else "torch finds no usable CUDA GPU (driver or CUDA_VISIBLE_DEVICES)")
            raise ConfigError(f"device {value!r} asked for, but {why} (torch {torch.__version__})", hint=fix)
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"device {value!r} asked for, but torch sees {count} GPU(s) (cuda:0 to cuda:{count - 1})",
                              hint=f"use cuda:0 to cuda:{count - 1}, --device cuda (the first) or --device cpu")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError(f"device {value!r} asked for, but torch's MPS backend (Apple GPUs) is not available "
                              "here", hint=fix)
    elif dev.type != "cpu":
        raise ConfigError(f"device {value!r} is not one xlprobe runs on", hint="use cpu, cuda, cuda:N, mps or auto")
    return rank_device(str(dev))


def rank_device(device: str) -> str:
    """Under torchrun, a bare ``cuda`` is this process's GPU, ``cuda:$LOCAL_RANK``; anything else unchanged."""
    import os

    if device == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1 and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device
