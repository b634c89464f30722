"""Which hidden units a probe relies on: captum attributions ranked, then checked by ablation against random units.

A fitted :class:`~xlprobe.probes.linear.LinearProbe` is a differentiable function of the representation
(standardise, then logits), so captum's attribution methods apply to it as they do to a network:

* ``integrated_gradients`` (captum ``IntegratedGradients``; Sundararajan et al. 2017): from the training
  mean (the baseline: what an uninformative item looks like) to each item, for its true class;
* ``feature_ablation`` (captum ``FeatureAblation``): the change in the true class's logit when one unit
  is set to its training mean.

:func:`unit_importance` averages |attribution| over items: one score per unit. A ranking is only
worth what it predicts, so :func:`ablation_check` sets the top-k units of the ranking to their training
mean and measures the probe's accuracy drop, beside the drop for k random units (``n_random`` draws: the
control) with cluster-bootstrap intervals over groups: the ranking is informative where its drop exceeds
the random units' interval.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from xlprobe.errors import ConfigError, DataError
from xlprobe.probes.arrays import as_rep, check_int
from xlprobe.probes.paired import draws_interval
from xlprobe.registry import register_measure
from xlprobe.results import make_row, results_frame

__all__ = ["probe_module", "unit_importance", "ablation_check", "UNIT_METHODS"]

#: Attribution methods :func:`unit_importance` runs through captum.
UNIT_METHODS = ("integrated_gradients", "feature_ablation")


def probe_module(probe: Any) -> torch.nn.Module:
    """A fitted LinearProbe as a torch module X [n, d] -> logits [n, K] (two classes: [-s/2, s/2])."""
    if not hasattr(probe, "coef_") or not hasattr(probe, "mean_"):
        raise DataError("probe_module needs a fitted LinearProbe (coef_, intercept_, mean_, scale_)",
                        hint="fit it first: LinearProbe().fit(X, y)")
    mean = torch.as_tensor(probe.mean_, dtype=torch.float64)
    scale = torch.as_tensor(probe.scale_, dtype=torch.float64)
    W = torch.as_tensor(probe.coef_, dtype=torch.float64)
    b = torch.as_tensor(probe.intercept_, dtype=torch.float64)

    class _Probe(torch.nn.Module):
        def forward(self, X: torch.Tensor) -> torch.Tensor:
            s = ((X - mean) / scale) @ W.T + b
            return torch.cat([-s / 2, s / 2], dim=1) if s.shape[1] == 1 else s

    return _Probe()


def _codes(probe: Any, y: Any) -> torch.Tensor:
    """Class index of each label in the probe's ``classes_``; DataError for a class it never saw."""
    classes = list(np.asarray(probe.classes_).tolist())
    try:
        return torch.as_tensor([classes.index(v) for v in np.asarray(y).tolist()])
    except ValueError:
        raise DataError("y holds a class the probe was not fitted on", hint=f"classes: {classes[:10]}") from None


def unit_importance(probe: Any, X: Any, y: Any, *, method: str = "integrated_gradients", n_steps: int = 32
                    ) -> tuple[np.ndarray, float]:
    """Mean |attribution| of every unit for the true class over the items, and the method's convergence delta.

    Returns ``(importance [d], delta)``: ``delta`` is integrated gradients' largest completeness error
    over items (captum's convergence delta), 0 for feature ablation.
    """
    if method not in UNIT_METHODS:
        raise ConfigError(f"method must be one of {list(UNIT_METHODS)}; got {method!r}")
    from captum.attr import FeatureAblation, IntegratedGradients

    A = torch.as_tensor(as_rep(X, "X"))
    target = _codes(probe, y)
    base = torch.as_tensor(probe.mean_, dtype=torch.float64).expand_as(A)
    module = probe_module(probe)
    if method == "integrated_gradients":
        attr, delta = IntegratedGradients(module).attribute(A, baselines=base, target=target,
                                                            n_steps=check_int("n_steps", n_steps, 1),
                                                            return_convergence_delta=True)
        worst = float(delta.abs().max())
    else:
        attr, worst = FeatureAblation(module).attribute(A, baselines=base, target=target), 0.0
    return attr.abs().mean(dim=0).detach().numpy(), worst


def _ablated_correct(probe: Any, X: np.ndarray, y: np.ndarray, units: np.ndarray) -> np.ndarray:
    """Per item: is the probe right once ``units`` are set to their training mean?"""
    Z = X.copy()
    Z[:, units] = probe.mean_[units]
    return (probe.predict(Z) == y).astype(np.float64)


@register_measure("units.ablation_drop", kind="table", direction="higher_better",
                  doc="Accuracy drop of a probe when the top-k units of an attribution ranking are set to their "
                      "mean, beside k random units (control random-units).")
def ablation_check(probe: Any, X: Any, y: Any, ranking: Sequence[int], *, ks: Sequence[int] = (1, 5, 10, 20),
                   groups: Any = None, n_random: int = 20, n_boot: int = 1000, seed: int = 0,
                   method: str = "ranking", layer: str = "X", checkpoint: str = "model") -> pd.DataFrame:
    """Accuracy drop when the top-k ranked units are ablated, against k random units; tidy rows.

    Rows ``units.ablation_drop``: for each k, the drop (full accuracy minus ablated accuracy) for the
    ranking's top k (``control`` missing) and the mean over ``n_random`` random k-subsets (``control``
    ``random-units``), each with a cluster-bootstrap interval over ``groups`` (for the random units the
    resamples pair items and draws, as probe controls do).
    """
    A, y = as_rep(X, "X"), np.asarray(y)
    order = np.asarray(ranking, dtype=np.int64)
    d = A.shape[1]
    if sorted(order.tolist()) != list(range(d)):
        raise DataError(f"ranking must order every one of the {d} units once", hint="np.argsort(-importance)")
    rng = np.random.default_rng(seed)
    full = (probe.predict(A) == y).astype(np.float64)
    rows = []
    for k in ks:
        k = check_int("k", k, 1, d)
        top = full - _ablated_correct(probe, A, y, order[:k])
        rand = np.stack([full - _ablated_correct(probe, A, y, rng.choice(d, size=k, replace=False))
                         for _ in range(check_int("n_random", n_random, 1))], axis=1)
        for control, scores in ((None, top[:, None]), ("random-units", rand)):
            value, lo, hi = draws_interval(scores, groups, n_boot=n_boot, seed=seed)
            rows.append(make_row(checkpoint=checkpoint, layer=layer, measure="units.ablation_drop", value=value,
                                 ci_low=lo, ci_high=hi, n=len(y), control=control, seed=seed, k=k, method=method,
                                 accuracy=float(full.mean())))
    return results_frame(rows)
