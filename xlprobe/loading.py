"""Load a model and its tokenizer from a spec: a hub id, a local folder, ``toy:<name>`` or ``tiny:<family>``.

``toy:lm``, ``toy:mt``, ``toy:lm-cont`` are the small mBART-style family shipped with the package
(:mod:`xlprobe.toy.shipped`), loaded in float32 unless ``dtype`` says otherwise.

``tiny:<family>`` builds a small random model with a tokenizer trained here (offline, seconds): what the
quickstart and tests use. Anything else goes through the Auto classes; offline, a hub id that is not
in the local cache fails with :class:`ModelNotFoundError` naming it.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from xlprobe.errors import ConfigError, ModelNotFoundError

__all__ = ["load_model"]

log = logging.getLogger(__name__)

_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def load_model(spec: str, *, device: str = "cpu", dtype: str = "float32") -> tuple[torch.nn.Module, Any]:
    """``(model, tokenizer)`` for ``spec`` in eval mode on ``device``."""
    if not spec or not spec.strip():
        raise ConfigError("empty model spec", hint="give a hub id, a local folder, toy:mt or tiny:mbart")
    if dtype not in _TORCH_DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}", hint="choose one of " + ", ".join(_TORCH_DTYPES))
    if spec.startswith("tiny:"):
        from xlprobe.tiny import build

        model, tok = build(spec.split(":", 1)[1])
    elif spec.startswith("toy:"):
        from xlprobe.toy.shipped import load

        model, tok = load(spec.split(":", 1)[1], dtype=_TORCH_DTYPES[dtype])
    else:
        model, tok = _load_auto(spec, dtype)
    model.to(device)
    model.eval()
    return model, tok


def _load_auto(spec: str, dtype: str) -> tuple[torch.nn.Module, Any]:
    """Load through AutoConfig / Auto* classes, choosing seq2seq, causal LM or bare encoder."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    local = Path(spec).expanduser()
    looks_local = spec.startswith((".", "/", "~")) or local.exists()
    if looks_local and not local.is_dir():
        raise ModelNotFoundError(f"model folder {str(local)!r} does not exist",
                                 hint="check the path; a folder saved with save_pretrained holds config.json")
    try:
        cfg = AutoConfig.from_pretrained(str(local) if looks_local else spec)
    except (OSError, ValueError) as err:
        raise ModelNotFoundError(
            f"cannot load model {spec!r}: {str(err).splitlines()[0]}",
            hint="offline, a hub id must already be in the HF cache; otherwise pass a local folder saved with "
            "save_pretrained, or try tiny:mbart",
        ) from err
    if cfg.is_encoder_decoder:
        cls = AutoModelForSeq2SeqLM
    elif getattr(cfg, "is_decoder", False) or cfg.model_type in ("gpt2", "llama", "mistral", "qwen2", "gpt_neox"):
        cls = AutoModelForCausalLM
    else:
        cls = AutoModel
    torch_dtype = _TORCH_DTYPES[dtype]
    path = str(local) if looks_local else spec
    try:
        model = cls.from_pretrained(path, dtype=torch_dtype)
        tok = AutoTokenizer.from_pretrained(path)
    except OSError as err:
        raise ModelNotFoundError(f"cannot load model {spec!r}: {str(err).splitlines()[0]}",
                                 hint="check that the folder holds weights and tokenizer files") from err
    return model, tok
