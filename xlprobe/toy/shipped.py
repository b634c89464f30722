"""The toy family shipped inside the package: where its folders are, how to load them, its card numbers.

Each checkpoint is a folder under ``xlprobe/toy/weights/<name>`` that ``AutoModelForSeq2SeqLM`` and
``AutoTokenizer`` load directly (fp16 safetensors, config, generation config, mBART-50 tokenizer files).
``card.json`` beside them holds the numbers of ``MODEL_CARD.md`` (steps, losses, chrF, wall time).
"""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from xlprobe.errors import ModelNotFoundError

__all__ = ["NAMES", "ENCODER_NAMES", "path", "load", "card", "weights_dir"]

#: The shipped checkpoints, in the order of the recipe (``lm-cont`` is the more-training control of ``mt``;
#: ``mt-o2m`` / ``mt-m2o`` the other two MT directions; ``mlm`` an encoder-only XLM-R masked LM).
NAMES = ("lm", "mt", "lm-cont", "mt-o2m", "mt-m2o", "mlm")
#: The encoder-only ones (loaded as a bare encoder, as xlprobe loads XLM-R from the hub).
ENCODER_NAMES = ("mlm",)

_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def weights_dir() -> Path:
    """The package folder that holds the shipped checkpoints and their card."""
    return Path(str(resources.files("xlprobe.toy") / "weights"))


def path(name: str) -> Path:
    """Folder of the shipped checkpoint ``name`` (one of :data:`NAMES`), loadable by the Auto classes."""
    if name not in NAMES:
        raise ModelNotFoundError(f"no toy checkpoint named {name!r}",
                                 hint=f"the shipped family is {', '.join(NAMES)} (e.g. toy:mt)")
    folder = weights_dir() / name
    missing = [f for f in _FILES if not (folder / f).is_file()]
    if missing:
        raise ModelNotFoundError(
            f"toy checkpoint {name!r} is incomplete in {folder}: missing {', '.join(missing)}",
            hint="reinstall xlprobe (the weights are package data), or rebuild them with "
            "`xlprobe toy train --out DIR --preset full` and `python -m xlprobe.toy.ship DIR`")
    return folder


def load(name: str, *, dtype: Any = None, device: str = "cpu") -> tuple[Any, Any]:
    """``(model, tokenizer)`` of a shipped checkpoint, in eval mode; float32 unless ``dtype`` is given.

    The weights are stored in fp16 (to fit the package); computing in float32 is the default because
    CPU kernels are float32 and probes compare small differences. ``mlm`` comes as the bare
    ``XLMRobertaModel`` (the hook names of ``xlm-roberta-base`` loaded by xlprobe); its masked-LM head
    loads with ``AutoModelForMaskedLM.from_pretrained(path("mlm"))``.
    """
    import torch
    from transformers import AutoModel, AutoModelForSeq2SeqLM, AutoTokenizer

    folder = path(name)
    if name in ENCODER_NAMES:  # no pooler: the masked LM never trained one (it would be a random init)
        from transformers.utils import logging as hf_logging

        level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the MLM head's weights are left out on purpose: no report
        try:
            model = AutoModel.from_pretrained(str(folder), dtype=dtype or torch.float32, add_pooling_layer=False)
        finally:
            hf_logging.set_verbosity(level)
    else:
        model = AutoModelForSeq2SeqLM.from_pretrained(str(folder), dtype=dtype or torch.float32)
    model.config._name_or_path = f"toy:{name}"
    tok = AutoTokenizer.from_pretrained(str(folder))
    return model.to(device).eval(), tok


@lru_cache(maxsize=1)
def _card_cached(file: str) -> dict:
    return json.loads(Path(file).read_text(encoding="utf-8"))


def card() -> dict:
    """The family's card numbers (``card.json``): per stage steps, final loss, wall time, chrF, denoising loss."""
    file = weights_dir() / "card.json"
    if not file.is_file():
        raise ModelNotFoundError(f"the toy family's card is missing ({file})",
                                 hint="reinstall xlprobe, or rebuild with `python -m xlprobe.toy.ship RUN_DIR`")
    return _card_cached(str(file))
