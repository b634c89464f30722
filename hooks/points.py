"""Capture points: the named places of a model whose outputs xlprobe can record.

Names are the model's own module paths as loaded (``model.encoder.layers.3``), so a user who knows the
model knows the names; short aliases (``encoder.3``, ``encoder.embeddings``, ``encoder.final_norm``) are
the same for every family. The embedding output is read as the input of the first block
(``model.encoder.layers.0:input``), which every family feeds with its (normed, position-added)
embeddings, and which equals ``hidden_states[0]``.
"""
from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Sequence

from torch import nn

from xlprobe.errors import CapturePointError, ConfigError, ModelFamilyError
from xlprobe.hooks.families import Family, family_for
from xlprobe.types import CapturePoint, LayerSpec

__all__ = ["capture_points", "resolve_points", "model_family", "base_prefix"]


def base_prefix(model: nn.Module) -> str:
    """Module path of ``model.base_model`` inside ``model`` (``"model."``, or ``""`` for a bare model)."""
    base = getattr(model, "base_model", model)
    if base is model:
        return ""
    for name, mod in model.named_modules():
        if mod is base:
            return name + "."
    return ""


def _get(root: nn.Module, path: str) -> nn.Module | None:
    """The submodule at dotted ``path`` or None."""
    try:
        return root.get_submodule(path)
    except AttributeError:
        return None


def _discover(model: nn.Module) -> Family:
    """Build a family row from the model's ``nn.ModuleList`` blocks when the table has none."""
    base = getattr(model, "base_model", model)
    lists: list[tuple[str, nn.ModuleList]] = []
    for name, mod in base.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) > 0:
            kinds = {type(m) for m in mod}
            if len(kinds) == 1:
                lists.append((name, mod))
    # keep the outermost lists only (blocks, not sub-lists inside a block)
    outer = [(n, m) for n, m in lists if not any(n != o and n.startswith(o + ".") for o, _ in lists)]
    mt = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
    if not outer:
        raise ModelFamilyError(
            f"{type(model).__name__} (model_type {mt!r}) has no row in xlprobe.hooks.families and no "
            "nn.ModuleList of blocks could be found",
            hint="add a Family row (register_family(Family(name, (model_type,), encoder_layers='path.to.layers', "
            "...))), or pass explicit module paths as layers=",
        )
    enc = [n for n, _ in outer if "decoder" not in n]
    dec = [n for n, _ in outer if "decoder" in n]
    is_ed = bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))
    if len(enc) > 1 or len(dec) > 1:
        raise ModelFamilyError(
            f"{type(model).__name__} (model_type {mt!r}) has no family row and several candidate block lists: "
            f"{[n for n, _ in outer]}",
            hint="add a Family row naming encoder_layers / decoder_layers (register_family)",
        )
    if not is_ed and enc and not dec and getattr(getattr(model, "config", None), "is_decoder", False):
        dec, enc = enc, []
    return Family(
        f"discovered:{mt}", (mt,),
        encoder_layers=enc[0] if enc else None, decoder_layers=dec[0] if dec else None,
        notes="discovered from nn.ModuleList blocks; no final norm known; no hidden_states parity claimed",
    )


def model_family(model: nn.Module) -> Family:
    """The family row of ``model``, from the table or discovered."""
    mt = getattr(getattr(model, "config", None), "model_type", None)
    row = family_for(mt) if mt else None
    return row if row is not None else _discover(model)


def capture_points(model: nn.Module) -> list[CapturePoint]:
    """Every capture point of ``model`` in execution order (embeddings, blocks, final norm; encoder first)."""
    fam = model_family(model)
    base = getattr(model, "base_model", model)
    prefix = base_prefix(model)
    known = family_for(getattr(getattr(model, "config", None), "model_type", "")) is not None
    points: list[CapturePoint] = []
    for side, layers_path, norm_path in (
        ("encoder", fam.encoder_layers, fam.encoder_final_norm),
        ("decoder", fam.decoder_layers, fam.decoder_final_norm),
    ):
        if layers_path is None:
            continue
        blocks = _get(base, layers_path)
        if not isinstance(blocks, nn.ModuleList):
            raise ModelFamilyError(
                f"family row {fam.name!r} says {side} blocks are at {layers_path!r}, but "
                f"{type(model).__name__} has no nn.ModuleList there",
                hint="fix the row in xlprobe.hooks.families (paths are relative to model.base_model)",
            )
        n = len(blocks)
        norm = _get(base, norm_path) if norm_path else None
        full = prefix + layers_path
        points.append(CapturePoint(f"{full}.0:input", f"{side}.embeddings", side, -1, "embeddings",
                                   f"{full}.0", 0 if known else None))
        for i in range(n):
            hs = i + 1 if known and (norm is None or i < n - 1) else None
            points.append(CapturePoint(f"{full}.{i}", f"{side}.{i}", side, i, "block_out", f"{full}.{i}", hs))
        if norm is not None:
            path = prefix + norm_path
            points.append(CapturePoint(path, f"{side}.final_norm", side, n, "final_norm", path, n if known else None))
    return points


def _closest(name: str, points: Sequence[CapturePoint]) -> list[str]:
    """The three names or aliases closest to ``name``."""
    pool = [p.name for p in points] + [p.alias for p in points]
    return difflib.get_close_matches(name, pool, n=3, cutoff=0.4)


def resolve_points(model: nn.Module, layers: LayerSpec) -> list[CapturePoint]:
    """Resolve a name, alias, glob, list of them, or predicate into capture points (execution order)."""
    points = capture_points(model)
    if callable(layers) and not isinstance(layers, str):
        chosen = [p for p in points if layers(p)]
        if not chosen:
            raise CapturePointError(f"the layers predicate selected no capture point of {type(model).__name__}",
                                    hint="list the points with `xlprobe layers MODEL`")
        return chosen
    names = [layers] if isinstance(layers, str) else list(layers)
    if not names:
        raise ConfigError("no layers requested (empty list)",
                          hint="pass a name such as 'encoder.*' or 'all'; `xlprobe layers MODEL` lists them")
    picked: set[str] = set()
    for raw in names:
        if not isinstance(raw, str) or not raw.strip():
            raise ConfigError(f"layer names must be non-empty strings, got {raw!r}")
        pat = raw.strip()
        if pat in ("all", "*"):
            picked.update(p.name for p in points)
            continue
        hits = [p for p in points if fnmatch.fnmatchcase(p.name, pat) or fnmatch.fnmatchcase(p.alias, pat)]
        if not hits:
            near = _closest(pat, points)
            hint = (f"did you mean {', '.join(repr(n) for n in near)}? " if near else "") + \
                "(`xlprobe layers MODEL` lists every capture point)"
            raise CapturePointError(f"{pat!r} is not a capture point of {type(model).__name__}", hint=hint)
        picked.update(p.name for p in hits)
    return [p for p in points if p.name in picked]
