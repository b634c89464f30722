"""Interventions on checkpoints and representations: interpolate weights, transplant module groups, erase a concept.

Correlation says where two checkpoints differ; an intervention says where the difference matters:

* :func:`interpolate` builds the model at theta_A + alpha (theta_B - theta_A): measures along alpha show
  whether a property changes smoothly, suddenly, or only at the end;
* :func:`transplant` copies one module group (a layer, every FFN, all attention, the embeddings) from B
  into A: if A with B's group behaves like B, the change lives there;
* :func:`erase_concept` removes a linearly decodable concept (the language) from representations with
  LEACE (Belrose et al. 2023, "LEACE: Perfect linear concept erasure in closed form", the
  ``concept-erasure`` package): no linear probe then does better than chance on it, so what a downstream
  probe still does cannot go through that concept.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from xlprobe.errors import ConfigError, DataError
from xlprobe.probes.arrays import as_labels, as_rep, check_float
from xlprobe.probes.weights import parameter_place
from xlprobe.registry import register_measure

__all__ = ["interpolate", "transplant", "erase_concept", "erased_transfer", "MODULE_GROUPS"]

#: Named module groups :func:`transplant` takes (besides a layer name or a predicate on parameter names).
MODULE_GROUPS: dict[str, tuple[str, ...]] = {
    "attention": ("q", "k", "v", "out"),
    "cross_attention": ("cross_q", "cross_k", "cross_v", "cross_out"),
    "ffn": ("fc1", "fc2"),
    "embeddings": ("embeddings", "positions"),
    "layer_norm": ("layer_norm",),
}


def _params(model_a: torch.nn.Module, model_b: torch.nn.Module) -> tuple[dict, dict]:
    """Both models' parameters by name, checked to be one architecture."""
    pa, pb = dict(model_a.named_parameters()), dict(model_b.named_parameters())
    if pa.keys() != pb.keys() or any(pa[n].shape != pb[n].shape for n in pa):
        raise DataError("the two models do not share their parameters' names and shapes",
                        hint="intervene between checkpoints of one architecture")
    return pa, pb


@register_measure("intervention.metric", kind="table", direction="lower_better",
                  doc="A caller's whole-model metric (a task loss) of an intervened model: interpolated weights "
                      "or a transplant (rows of xlprobe.intervene).")
def interpolate(model_a: torch.nn.Module, model_b: torch.nn.Module, alpha: float) -> torch.nn.Module:
    """A copy of A with every parameter at (1 - alpha) A + alpha B (0: A, 1: B); neither input changes.

    The copy lives where A does; B may be on another device (its values are brought to A's).
    """
    alpha = check_float("alpha", alpha, -1.0, 2.0)
    pa, pb = _params(model_a, model_b)
    out = copy.deepcopy(model_a)
    with torch.no_grad():
        for name, p in out.named_parameters():
            p.copy_((1.0 - alpha) * pa[name] + alpha * pb[name].to(p.device))  # exact at both ends
    return out


def _chooser(group: str | Callable[[str], bool]) -> Callable[[str], bool]:
    """A predicate on parameter names from a group name, a layer name or a callable."""
    if callable(group):
        return group
    if group in MODULE_GROUPS:
        return lambda name: parameter_place(name)[2] in MODULE_GROUPS[group]
    if ":" in group:  # "layer:module", as attribution rows group them (groups="layer_module")
        layer, module = group.split(":", 1)
        return lambda name: parameter_place(name)[1:] == (layer, module)
    return lambda name: parameter_place(name)[1] == group


def transplant(model_a: torch.nn.Module, model_b: torch.nn.Module, group: str | Callable[[str], bool]
               ) -> tuple[torch.nn.Module, list[str]]:
    """A copy of A whose parameters in ``group`` are B's, and the names moved.

    ``group``: a name of :data:`MODULE_GROUPS` (``ffn``, ``attention``, ...), a layer (``encoder.0``,
    ``decoder.embeddings``, ``lm_head``), a ``layer:module`` pair as path attribution groups them
    (``encoder.0:fc1``, ``embeddings:embeddings``) or a predicate on parameter names. Tied parameters
    move together.
    """
    pa, pb = _params(model_a, model_b)
    choose = _chooser(group)
    names = [n for n in pa if choose(n)]
    if not names:
        layers = sorted({parameter_place(n)[1] for n in pa})
        raise ConfigError(f"transplant group {group!r} selects no parameter",
                          hint=f"groups: {', '.join(MODULE_GROUPS)}; layers: {', '.join(layers[:12])}")
    out = copy.deepcopy(model_a)
    mine = dict(out.named_parameters())
    with torch.no_grad():
        for name in names:
            mine[name].copy_(pb[name])
    return out, names


def erase_concept(X_fit: Any, concept: Any, X: Any | None = None) -> np.ndarray:
    """Representations with a concept (e.g. the language) linearly erased by LEACE, fitted on (X_fit, concept).

    Returns the erased ``X`` (default ``X_fit``) as float64. Fit on training items and apply to test
    items to keep an evaluation honest.
    """
    from concept_erasure import LeaceEraser

    A = as_rep(X_fit, "X_fit")
    codes, classes = as_labels(concept, A.shape[0], "concept")
    Z = torch.nn.functional.one_hot(torch.as_tensor(codes), num_classes=classes.size).double()
    eraser = LeaceEraser.fit(torch.as_tensor(A), Z)
    target = A if X is None else as_rep(X, "X")
    if target.shape[1] != A.shape[1]:
        raise DataError(f"X has {target.shape[1]} features, the eraser was fitted on {A.shape[1]}")
    return eraser(torch.as_tensor(target)).detach().numpy()


def erased_transfer(reps: dict[str, Any], y: Any, langs: Any, groups: Any, **kw: Any) -> Any:
    """Zero-shot transfer per layer before and after LEACE erases the language: the ``intervention`` column.

    The causal test of the separability explanation: if a representation transfers badly because its
    languages sit apart, removing every linearly decodable trace of the language (fitted on all items'
    languages, no task label) should close the transfer gap. ``kw`` goes to
    :func:`xlprobe.probes.transfer.transfer_probe` (``train_lang``, ``checkpoint``, ``n_boot`` ...).
    """
    import pandas as pd

    from xlprobe.probes.transfer import transfer_probe

    before = transfer_probe(reps, y, langs, groups, **kw)
    erased = {layer: erase_concept(X, langs) for layer, X in reps.items()}
    after = transfer_probe(erased, y, langs, groups, **kw)
    return pd.concat([before.assign(intervention="none"), after.assign(intervention="leace-language")],
                     ignore_index=True)
