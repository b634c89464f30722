"""Where does the change live? Measures along the weight path between two checkpoints, and after transplants.

:func:`interpolation_run` captures the models at theta_A + alpha (theta_B - theta_A) for each alpha and
measures every layer (the probe's accuracy, per-layer registered measures such as kNN and retrieval,
debiased CKA to the same layer at alpha = 0, and optionally a task metric of the whole model);
:func:`transplant_run` does the same for A with one module group taken from B, and the reverse. Rows carry
``alpha`` or ``transplant`` / ``direction`` columns; the checkpoint column names the intervention.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from xlprobe.errors import XlprobeError
from xlprobe.types import Dataset

__all__ = ["interpolation_run", "transplant_run", "measure_model"]

#: Per-layer measures the runs add by default.
DEFAULT = ("separability.knn", "retrieval.p_at_1")


def measure_model(model: torch.nn.Module, tok: Any, data: Dataset, *, name: str, layers: Any = "encoder.*",
                  measures: Sequence[str] = DEFAULT, task: str = "language", reference: dict | None = None,
                  metric_fn: Callable[[torch.nn.Module], torch.Tensor] | None = None, seed: int = 0
                  ) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Rows for one model (probe accuracy, measures, CKA to ``reference`` layers, the metric) and its layers.

    ``reference`` (layer -> array on the same items) defaults to the model's own layers: CKA 1, the
    first row of a run.
    """
    from xlprobe.hooks import extract
    from xlprobe.probes import probe_layers
    from xlprobe.probes.cka import cka
    from xlprobe.results import make_row
    from xlprobe.runs import labels_for, layer_measures
    from xlprobe.tasks.splits import group_ids

    acts = extract(model, tok, data, layers)
    reps = {str(k): np.asarray(v) for k, v in acts.items()}  # keyed by alias (encoder.0 ...)
    y, langs, groups = labels_for(data, task), labels_for(data, "language"), group_ids(data, "group")
    rows = probe_layers(reps, y, groups, controls=(), n_boot=0, seed=seed, checkpoint=name, task=task
                        ).to_dict("records")
    rows += layer_measures(reps, y, langs, groups, measures, checkpoint=name, task=task, seed=seed)
    reference = reps if reference is None else reference
    for layer, X in reps.items():
        if layer in reference:
            try:
                value = float(cka(X, reference[layer], debiased=True))
            except XlprobeError:
                value = float("nan")
            rows.append(make_row(checkpoint=name, layer=layer, measure="cka.linear.debiased", value=value,
                                 n=len(X), ref_layer=layer))
    if metric_fn is not None:
        with torch.no_grad():
            value = float(metric_fn(model))
        rows.append(make_row(checkpoint=name, layer="model", measure="intervention.metric", value=value,
                             n=len(data)))
    return rows, reps


def interpolation_run(model_a: torch.nn.Module, model_b: torch.nn.Module, tok: Any, data: Dataset, *,
                      alphas: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0), **kw: Any) -> pd.DataFrame:
    """Every layer measured at each alpha between A (0) and B (1); CKA is to the same layer at alpha = 0."""
    from xlprobe.probes.interventions import interpolate
    from xlprobe.results import results_frame

    rows, reference = [], None
    for alpha in sorted(alphas):
        part, reps = measure_model(interpolate(model_a, model_b, alpha), tok, data, name=f"alpha={alpha:g}",
                                   reference=reference, **kw)
        reference = reference if reference is not None else reps
        rows += [{**r, "alpha": float(alpha)} for r in part]
    return results_frame(rows)


def transplant_run(model_a: torch.nn.Module, model_b: torch.nn.Module, tok: Any, data: Dataset, *,
                   groups: Sequence[str] = ("embeddings", "attention", "ffn"), names: tuple[str, str] = ("a", "b"),
                   **kw: Any) -> pd.DataFrame:
    """A and B, then A with each group from B and B with each group from A; CKA to A's layers throughout."""
    from xlprobe.probes.interventions import transplant
    from xlprobe.results import results_frame

    a, b = names
    rows, reference = [], None
    plan: list[tuple[str, torch.nn.Module, str | None, str | None]] = [(a, model_a, None, None),
                                                                        (b, model_b, None, None)]
    plan += [(f"{a}+{g}:{b}", transplant(model_a, model_b, g)[0], g, f"{b} into {a}") for g in groups]
    plan += [(f"{b}+{g}:{a}", transplant(model_b, model_a, g)[0], g, f"{a} into {b}") for g in groups]
    for name, model, group, direction in plan:
        part, reps = measure_model(model, tok, data, name=name, reference=reference, **kw)
        reference = reference if reference is not None else reps
        rows += [{**r, "transplant": group, "direction": direction} for r in part]
    return results_frame(rows)
