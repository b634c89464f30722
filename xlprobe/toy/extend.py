"""Grow the shipped toy family: seed a run folder from the shipped ``lm`` so that new stages start from it.

The shipped family was trained once (``lm``, then ``mt`` and ``lm-cont`` from it); its tokenizer cannot be
retrained bit for bit (HF's Unigram trainer is not reproducible at its pruning boundary), so a new stage
that must continue from the same ``lm`` (``mt-o2m``, ``mt-m2o``) starts from the shipped weights:
:func:`seed_from_shipped` writes the shipped tokenizer, ``lm``'s weights (fp16 as shipped, widened to
float32: the only difference from the float32 state ``mt`` started from, at most 2^-11 relative per
weight), ``lm``'s training summary and held-out evaluation into a run folder, as if that run had trained
``lm``; then ``train(out, stages=("mt-o2m", "mt-m2o"))`` trains and evaluates the new stages.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from xlprobe.errors import ConfigError
from xlprobe.toy.config import ARCHITECTURE, ToyConfig, get_preset
from xlprobe.toy.shipped import card, path

__all__ = ["seed_from_shipped", "TOKENIZER_FILES"]

#: The tokenizer files a run folder's ``tokenizer/`` holds.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
_SUMMARY = ("steps", "final_loss", "seconds", "tokens", "tokens_per_s", "bytes")
_EVAL = ("chrf", "denoise_loss", "n_verses", "samples")


def _json(obj: Any) -> Any:
    """The JSON form of a value (tuples become lists), as run folders store settings."""
    return json.loads(json.dumps(obj))


def _check_architecture(cfg: ToyConfig, shipped: dict) -> None:
    """Refuse settings that change the tokenizer or the architecture of the shipped family."""
    mine = _json(cfg.to_dict())
    differ = [k for k in ARCHITECTURE if mine[k] != _json(shipped[k])]
    if differ:
        raise ConfigError(f"setting(s) {differ} differ from the shipped family's, so its lm cannot be continued",
                          hint="keep the full preset's tokenizer and architecture; change only steps, data cap "
                          "or evaluation settings")


def _write(path_: Path, obj: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    tmp = path_.with_name(path_.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path_)


def seed_from_shipped(out_dir: str | Path, preset: str | ToyConfig = "full", **overrides: object) -> Path:
    """A run folder holding the shipped ``lm`` as a finished stage; idempotent (what is there is kept).

    Parameters
    ----------
    out_dir : path
        The run folder (created).
    preset, **overrides
        The settings the new stages run with (:func:`xlprobe.toy.config.get_preset`); those that fix the
        tokenizer and the architecture (:data:`~xlprobe.toy.config.ARCHITECTURE`) must be the shipped
        family's (a ConfigError names any that differ).

    Returns
    -------
    Path
        ``out_dir``; resume it with ``xlprobe.toy.train(out_dir, preset, stages=(...), **overrides)`` and
        the seed of the shipped family (``card()["seed"]``).
    """
    import torch
    from transformers import AutoModelForSeq2SeqLM

    info = card()
    cfg = get_preset(preset, **overrides)
    _check_architecture(cfg, info["config"])
    out = Path(out_dir)
    for sub in ("state", "curves", "checkpoints", "tokenizer"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    if not (out / "config.json").exists():
        _write(out / "config.json", {"seed": info["seed"], "config": _json(cfg.to_dict())})
    for name in TOKENIZER_FILES:
        if not (out / "tokenizer" / name).exists():
            shutil.copyfile(path("lm") / name, out / "tokenizer" / name)
    state = out / "state" / "lm.final.pt"
    if not state.exists():
        model = AutoModelForSeq2SeqLM.from_pretrained(str(path("lm")), dtype=torch.float32)
        tmp = state.with_name(state.name + ".tmp")
        torch.save(model.state_dict(), tmp)
        tmp.replace(state)
    lm = info["stages"]["lm"]
    progress = json.loads((out / "progress.json").read_text()) if (out / "progress.json").exists() else \
        {"done": {}, "evaluated": []}
    if "lm" not in progress["done"]:
        progress["done"]["lm"] = {k: lm[k] for k in _SUMMARY} | {"from": "shipped"}
        _write(out / "progress.json", progress)
    evals = json.loads((out / "eval.json").read_text()) if (out / "eval.json").exists() else {}
    if "lm" not in evals:
        evals["lm"] = {k: lm[k] for k in _EVAL if k in lm}
        _write(out / "eval.json", evals)
    return out
