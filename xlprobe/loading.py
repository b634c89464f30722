"""Load a model and its tokenizer from a spec: a hub id, a local folder, ``toy:<name>`` or ``tiny:<family>``.

``toy:lm``, ``toy:mt``, ``toy:lm-cont``, ``toy:mt-o2m``, ``toy:mt-m2o`` (small mBART-style) and ``toy:mlm``
(an encoder-only XLM-R, loaded as the bare encoder) are the family shipped with the package
(:mod:`xlprobe.toy.shipped`), loaded in float32 unless ``dtype`` says otherwise.

``tiny:<family>`` builds a small random model with a tokenizer trained here (offline, seconds): what the
quickstart and tests use. Anything else goes through the Auto classes; offline, a hub id that is not
in the local cache fails with :class:`ModelNotFoundError` naming it.

``random-init:<spec>`` is the control *representation* of ``<spec>``: the same architecture (its config)
and tokenizer, with weights drawn by the model class's own initialiser under a fixed seed
(:data:`RANDOM_INIT_SEED`; ``random-init@7:<spec>`` for another). A probe that reaches the same accuracy
on it as on the trained checkpoint reads what the architecture and the tokens give, not what training
built (Hewitt & Liang 2019; Zhang & Bowman 2018, "Language modeling teaches you more than translation
does"). Checkpoints of one architecture share one random-init model.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from xlprobe.errors import ConfigError, ModelNotFoundError

__all__ = ["load_model", "check_available", "auto_class", "RANDOM_INIT", "RANDOM_INIT_SEED", "random_init_spec"]

log = logging.getLogger(__name__)

#: Prefix of a random-weight control model's spec, and the seed its weights are drawn with by default.
RANDOM_INIT = "random-init"
RANDOM_INIT_SEED = 0

_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def load_model(spec: str, *, device: str = "cpu", dtype: str = "float32", device_map: str | dict[str, Any] | None = None,
               offload_folder: str | Path | None = None) -> tuple[torch.nn.Module, Any]:
    """``(model, tokenizer)`` for ``spec`` in eval mode on ``device``.

    ``device_map`` (off by default): ``"auto"`` or ``{module name: device | "cpu" | "disk"}``, handed to
    ``from_pretrained`` so accelerate places a checkpoint larger than one device over several devices,
    the CPU and the disk; ``device`` is then not used (the map decides). Disk entries are written to
    ``offload_folder`` (default: a fresh temporary folder). Hub ids and local folders only: for a
    ``toy:`` / ``tiny:`` model, ``save_pretrained`` it to a folder first.
    """
    if device_map is not None:
        return _load_mapped(spec, dtype, device, device_map, offload_folder)
    if not spec or not spec.strip():
        raise ConfigError("empty model spec", hint="give a hub id, a local folder, toy:mt or tiny:mbart")
    if dtype not in _TORCH_DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}", hint="choose one of " + ", ".join(_TORCH_DTYPES))
    if spec.startswith(RANDOM_INIT):
        model, tok = _random_init(spec, dtype)
    elif spec.startswith("tiny:"):
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


def _load_mapped(spec: str, dtype: str, device: str, device_map: str | dict[str, Any],
                 offload_folder: str | Path | None) -> tuple[torch.nn.Module, Any]:
    """A hub id or folder loaded with ``from_pretrained(device_map=...)``, never moved afterwards."""
    import tempfile

    if not spec or not spec.strip() or spec.startswith(("toy:", "tiny:", RANDOM_INIT)):
        raise ConfigError(f"device_map is for checkpoints loaded with from_pretrained, not {spec!r}",
                          hint="save the model with save_pretrained to a folder and load the folder with device_map")
    if dtype not in _TORCH_DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}", hint="choose one of " + ", ".join(_TORCH_DTYPES))
    if isinstance(device_map, str) and device_map not in ("auto", "balanced", "balanced_low_0", "sequential"):
        raise ConfigError(f"unknown device_map {device_map!r}",
                          hint='"auto", or a {module name: device | "cpu" | "disk"} dict')
    if device not in (None, "cpu"):
        log.info("device %r not used: device_map %r places the model", device, device_map)
    if offload_folder is None:
        offload_folder = tempfile.mkdtemp(prefix="xlprobe-offload-")
    model, tok = _load_auto(spec, dtype, device_map=device_map, offload_folder=str(offload_folder))
    log.info("loaded %s over devices %s (offload folder %s)", spec, getattr(model, "hf_device_map", None),
             offload_folder)
    model.eval()
    return model, tok


def check_available(spec: str) -> None:
    """ModelNotFoundError, without loading anything, for a spec whose weights are not here to load.

    A local path that is not a folder, or a hub id neither in the local Hugging Face cache nor reachable
    (offline, or no network). ``toy:`` and ``tiny:`` models are always here; ``random-init:X`` needs
    X's config only, checked the same way. Online, a hub id not cached is assumed downloadable.
    """
    inner = random_init_spec(spec)
    spec = inner[0] if inner else spec
    if spec.startswith(("toy:", "tiny:")):
        return
    local = Path(spec).expanduser()
    if spec.startswith((".", "/", "~")) or local.exists():
        if not local.is_dir():
            raise ModelNotFoundError(f"model folder {str(local)!r} does not exist",
                                     hint="check the path; a folder saved with save_pretrained holds config.json")
        return
    _check_reachable(spec)


def random_init_spec(spec: str) -> tuple[str, int] | None:
    """``(inner spec, seed)`` of a ``random-init[@SEED]:<spec>`` spec, None for any other spec."""
    if not spec.startswith(RANDOM_INIT):
        return None
    head, sep, inner = spec.partition(":")
    seed_text = head[len(RANDOM_INIT):]
    if not sep or not inner or (seed_text and not (seed_text.startswith("@") and seed_text[1:].isdigit())):
        raise ConfigError(f"bad random-init spec {spec!r}",
                          hint="random-init:<model spec> or random-init@SEED:<model spec>, e.g. random-init:toy:lm")
    return inner, int(seed_text[1:]) if seed_text else RANDOM_INIT_SEED


def _random_init(spec: str, dtype: str) -> tuple[torch.nn.Module, Any]:
    """The architecture and tokenizer of the inner spec with freshly initialised, seeded weights."""
    inner, seed = random_init_spec(spec)  # type: ignore[misc]
    if inner.startswith(("tiny:", "toy:", RANDOM_INIT)):
        trained, tok = load_model(inner, dtype="float32")
        cls, cfg = type(trained), trained.config
        del trained
    else:
        from transformers import AutoConfig, AutoTokenizer

        try:
            cfg = AutoConfig.from_pretrained(inner)
            tok = AutoTokenizer.from_pretrained(inner)
        except (OSError, ValueError) as err:
            raise ModelNotFoundError(f"cannot load the config of {inner!r}: {str(err).splitlines()[0]}",
                                     hint="random-init needs the checkpoint's config and tokenizer") from err
        cls = auto_class(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls._from_config(cfg) if hasattr(cls, "_from_config") else cls(cfg)
    return model.to(_TORCH_DTYPES[dtype]), tok


def auto_class(cfg: Any) -> Any:
    """The Auto class for a config: seq2seq, causal LM or bare encoder."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    if cfg.is_encoder_decoder:
        return AutoModelForSeq2SeqLM
    if getattr(cfg, "is_decoder", False) or cfg.model_type in ("gpt2", "llama", "mistral", "qwen2", "gpt_neox"):
        return AutoModelForCausalLM
    return AutoModel


def _load_auto(spec: str, dtype: str, **placement: Any) -> tuple[torch.nn.Module, Any]:
    """Load through AutoConfig / Auto* classes, choosing seq2seq, causal LM or bare encoder."""
    from transformers import AutoConfig, AutoTokenizer

    local = Path(spec).expanduser()
    looks_local = spec.startswith((".", "/", "~")) or local.exists()
    if looks_local and not local.is_dir():
        raise ModelNotFoundError(f"model folder {str(local)!r} does not exist",
                                 hint="check the path; a folder saved with save_pretrained holds config.json")
    if not looks_local:
        _check_reachable(spec)
    try:
        cfg = AutoConfig.from_pretrained(str(local) if looks_local else spec)
    except (OSError, ValueError) as err:
        raise ModelNotFoundError(
            f"cannot load model {spec!r}: {str(err).splitlines()[0]}",
            hint="offline, a hub id must already be in the HF cache; otherwise pass a local folder saved with "
            "save_pretrained, or try tiny:mbart",
        ) from err
    cls = auto_class(cfg)
    torch_dtype = _TORCH_DTYPES[dtype]
    path = str(local) if looks_local else spec
    try:
        model = cls.from_pretrained(path, dtype=torch_dtype, **placement)
        tok = AutoTokenizer.from_pretrained(path)
    except OSError as err:
        raise ModelNotFoundError(f"cannot load model {spec!r}: {str(err).splitlines()[0]}",
                                 hint="check that the folder holds weights and tokenizer files") from err
    except ValueError as err:
        if not placement:
            raise
        raise ConfigError(f"cannot place {spec!r} with device_map: {str(err).splitlines()[0]}",
                          hint='every parameter needs a device: "auto", or a map covering each module') from err
    return model, tok


def _check_reachable(repo_id: str) -> None:
    """Fail at once, with one message, for a hub id that is not cached when the hub cannot be reached.

    Without this, huggingface_hub retries for about 26 s (printing each retry) before the same error.
    """
    import huggingface_hub
    from huggingface_hub import constants

    try:
        cached = huggingface_hub.try_to_load_from_cache(repo_id, "config.json")
    except (ValueError, OSError):  # not a valid repo id: let transformers say why
        return
    if isinstance(cached, str):
        return
    fix = ("pass a local folder saved with save_pretrained, copy the Hugging Face cache from a machine that "
           f"has it (`hf download {repo_id}` there), or use a shipped model (toy:mt) or tiny:mbart")
    if constants.HF_HUB_OFFLINE:
        raise ModelNotFoundError(f"model {repo_id!r} is not in the local Hugging Face cache "
                                 f"({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE=1 forbids downloading it",
                                 hint="unset HF_HUB_OFFLINE (and TRANSFORMERS_OFFLINE) where there is network; or " + fix)
    if not _hub_reachable(constants.ENDPOINT):
        raise ModelNotFoundError(f"model {repo_id!r} is not in the local Hugging Face cache and "
                                 f"{constants.ENDPOINT} cannot be reached (no network?)",
                                 hint=fix)


def _hub_reachable(endpoint: str, timeout: float = 3.0) -> bool:
    """True when the hub's host resolves and accepts a connection (or a proxy is set: then we cannot tell)."""
    import os
    import socket
    from urllib.parse import urlparse

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(endpoint)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False
