"""Which parameter changes account for a change in a metric: integrated gradients along the parameter path.

For a scalar metric M(theta) (a task loss on a fixed batch, a probe's log-likelihood, a separability
score) and two checkpoints of one architecture, the straight path theta(t) = theta_A + t (theta_B - theta_A)
gives, by the fundamental theorem of calculus along it (Sundararajan et al. 2017, "Axiomatic Attribution
for Deep Networks", ICML, applied to parameters instead of inputs),

    M(theta_B) - M(theta_A) = sum_p  integral_0^1 dM/dtheta_p (theta(t)) . (theta_B - theta_A)_p dt

so each parameter tensor p gets the integral as its attribution, and the attributions add up to the
change (completeness). The integral is a Gauss-Legendre quadrature over ``n_steps`` nodes (captum's
default rule for integrated gradients); the completeness error |sum - (M_B - M_A)| is the ``delta`` of
every row, as captum returns its convergence delta. :class:`ParameterPathAttribution` follows captum's
shape: the metric goes to the constructor, one ``attribute`` call does the work.

``alpha_batch=k`` evaluates k quadrature nodes together: the k parameter vectors theta(t_1..t_k) are
stacked, ``torch.func.vmap`` runs the metric over them through ``torch.func.functional_call`` (the
metric still receives a model, whose parameters are, during the call, one node's functional tensors),
and one backward pass through sum_j w_j M(theta(t_j)) gives every node's gradient. Same rows as the
Python loop (``alpha_batch=1``) to float rounding; it holds k copies of the parameters, their
gradients and k nodes' activations at once.
Measured (benchmarks/attribution.py, shipped toy lm -> mt, 2.5M parameters, en->fr loss on 24 verses,
16 nodes, 1 torch thread, 2 CPU cores under load 2-6.5): vmap is NOT faster on this CPU: paired median
time / loop 1.40 / 1.32 / 1.80 at alpha_batch 4 / 8 / 16 (0.72x / 0.76x / 0.56x), the loop 0.80 s per
step at its fastest; rows equal the loop's to 1.6e-7 of the largest, completeness error 0.079 % for
both; the benchmark process peaked at 9.5 GB RSS (16 nodes' activations, the 8054-word logits above
all). Where per-node overhead dominates it pays: on the tests' tiny MBart (110k parameters, 2
sentences) time / loop 0.72 / 0.57 / 0.55 (1.38x / 1.76x / 1.82x; loop 0.021 s per step). The loop
stays the default; accelerators were not measured.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch

from xlprobe.errors import ConfigError, DataError, XlprobeError
from xlprobe.probes.arrays import check_int
from xlprobe.probes.weights import parameter_place
from xlprobe.registry import register_measure
from xlprobe.results import make_row, results_frame

__all__ = ["ParameterPathAttribution", "gauss_legendre", "path_points", "GROUPINGS"]

#: How attribution rows are pooled: per parameter tensor, per layer, per module type, per (layer, module).
GROUPINGS = ("param", "layer", "module", "layer_module")


def gauss_legendre(n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes in (0, 1) and weights (summing to 1) of the n-point Gauss-Legendre rule."""
    x, w = np.polynomial.legendre.leggauss(check_int("n_steps", n_steps, 1))
    return (x + 1.0) / 2.0, w / 2.0


def path_points(start: torch.Tensor, diff: torch.Tensor, nodes: np.ndarray) -> torch.Tensor:
    """[k, *shape] theta(t) = start + t diff at each node, in the dtype and on the device of ``diff``."""
    t = torch.as_tensor(nodes, dtype=torch.float64).to(device=diff.device, dtype=diff.dtype)
    return start + t.view(-1, *([1] * diff.ndim)) * diff  # diff's dtype: a float32 t would promote fp16 tensors


def _group(name: str, groups: str) -> str:
    """The group a parameter falls in."""
    _, layer, module = parameter_place(name)
    return {"param": name, "layer": layer, "module": module, "layer_module": f"{layer}:{module}"}[groups]


class ParameterPathAttribution:
    """Integrated gradients over the straight path between two checkpoints' parameters (captum-style).

    Parameters
    ----------
    metric_fn : callable
        ``metric_fn(model) -> scalar tensor``, differentiable in the model's parameters (the model is
        in eval mode; keep its inputs fixed so that only the parameters vary). With ``alpha_batch > 1``
        the same function runs under ``torch.func.vmap``: it may call the model and read its parameters
        (``named_parameters()`` returns the node's functional tensors), but it must not turn a value that
        depends on the parameters into a Python number (``.item()``, ``float()``, ``if loss > 0``), change
        parameters in place, draw random numbers or call ``backward`` itself; such a metric raises
        ConfigError there and works with ``alpha_batch=1``.
    """

    def __init__(self, metric_fn: Callable[[torch.nn.Module], torch.Tensor]) -> None:
        if not callable(metric_fn):
            raise ConfigError("metric_fn must be callable: metric_fn(model) -> scalar tensor")
        self.metric_fn = metric_fn

    def _metric(self, model: torch.nn.Module) -> torch.Tensor:
        """The metric as a 0-d tensor, or DataError naming what came back."""
        value = self.metric_fn(model)
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            raise DataError(f"metric_fn must return a scalar tensor; got {type(value).__name__}",
                            hint="reduce to one number, e.g. the mean loss over a fixed batch")
        return value.reshape(())

    def attribute(self, model_a: torch.nn.Module, model_b: torch.nn.Module, *, groups: str = "layer",
                  n_steps: int = 16, return_convergence_delta: bool = True, checkpoint: str = "b",
                  ref_checkpoint: str = "a", alpha_batch: int = 1) -> pd.DataFrame | tuple[pd.DataFrame, float]:
        """Attribute M(theta_b) - M(theta_a) to parameter groups; rows ``attribution.path`` with ``delta``.

        Parameters
        ----------
        model_a, model_b : torch.nn.Module
            Two checkpoints of one architecture (same parameter names and shapes); neither is modified.
            The work runs on ``model_a``'s device (its working copy, the path, the gradients); ``model_b``'s
            parameters are copied there. M_a and M_b are taken on each model where it is.
        groups : {"param", "layer", "module", "layer_module"}
            How the per-tensor attributions are summed in the rows.
        n_steps : int
            Gauss-Legendre nodes along the path (each costs a forward and a backward pass).
        return_convergence_delta : bool
            Also return the completeness error |sum of attributions - (M_b - M_a)|, as captum does.
        alpha_batch : int
            Quadrature nodes evaluated together. 1 (the default) is a Python loop, one forward and
            backward per node; k > 1 runs chunks of k nodes through ``torch.func.vmap`` over stacked
            parameters (``functional_call``) and one backward per chunk (values above ``n_steps`` are
            taken as ``n_steps``). Memory: k copies of the parameters and of their gradients, plus k
            nodes' activations (e.g. 16 x 2.4 GB x 2 for mBART-large's 611M fp32 parameters: choose k by
            memory). The rows equal the loop's to float rounding; see the class docstring for the
            metrics that cannot run under vmap (ConfigError). A transformers model's private working
            copy is switched from SDPA to eager attention there (torch has no vmap rule for the CPU
            SDPA kernel); the end values M_a and M_b are still taken on the models passed in.

        Returns
        -------
        DataFrame, or (DataFrame, float)
            One row per group: ``value`` its attribution, ``share`` its fraction of the total change,
            ``delta`` the completeness error; the metric's two end values in ``metric_a`` / ``metric_b``.
        """
        if groups not in GROUPINGS:
            raise ConfigError(f"groups must be one of {list(GROUPINGS)}; got {groups!r}")
        alpha_batch = check_int("alpha_batch", alpha_batch, 1)
        names, start, diff = self._path(model_a, model_b)
        work = copy.deepcopy(model_a).eval()
        params = dict(work.named_parameters())
        nodes, weights = gauss_legendre(n_steps)
        total = {n: 0.0 for n in names}
        if alpha_batch > 1:
            _vmap_friendly_attention(work)
            for i in range(0, len(nodes), alpha_batch):
                self._batch(work, names, start, diff, nodes[i:i + alpha_batch], weights[i:i + alpha_batch], total)
            nodes, weights = nodes[:0], weights[:0]  # the loop below has nothing left to do
        for t, w in zip(nodes, weights):
            with torch.no_grad():
                for n in names:
                    params[n].copy_(start[n] + float(t) * diff[n])
            work.zero_grad(set_to_none=True)
            self._metric(work).backward()
            for n in names:
                g = params[n].grad
                total[n] += float(w) * (0.0 if g is None else float((g.double() * diff[n].double()).sum()))
        ends = []
        for model in (model_a, model_b):
            with torch.no_grad():
                ends.append(float(self._metric(copy.deepcopy(model).eval())))
        change = ends[1] - ends[0]
        delta = abs(sum(total.values()) - change)
        rows = self._rows(total, groups, change, delta, ends, checkpoint, ref_checkpoint, n_steps)
        return (rows, delta) if return_convergence_delta else rows

    def _batch(self, work: torch.nn.Module, names: list[str], start: dict[str, torch.Tensor],
               diff: dict[str, torch.Tensor], nodes: np.ndarray, weights: np.ndarray,
               total: dict[str, float]) -> None:
        """Add sum_j w_j <grad M(theta(t_j)), diff> per tensor for a chunk of nodes: vmap, one backward."""
        stacked = {n: path_points(start[n], diff[n], nodes).requires_grad_(True) for n in names}
        shell = _MetricShell(work, self._metric)

        def one_node(node_params: dict[str, torch.Tensor]) -> torch.Tensor:
            return torch.func.functional_call(shell, {f"model.{n}": p for n, p in node_params.items()}, ())

        try:
            values = torch.func.vmap(one_node, randomness="error")(stacked)
        except (RuntimeError, NotImplementedError, ValueError) as exc:
            if isinstance(exc, (XlprobeError, torch.OutOfMemoryError)) or "can't allocate memory" in str(exc):
                raise  # our own errors, and memory (k copies of the parameters): not a vmap limitation
            raise ConfigError(f"metric_fn cannot be evaluated under torch.func.vmap (alpha_batch > 1): {exc}",
                              hint="keep parameter-dependent values as tensors (no .item(), float() or "
                                   "Python branches on them), no randomness, or use alpha_batch=1") from exc
        if values.shape != (len(nodes),):
            raise DataError(f"metric_fn under vmap returned shape {tuple(values.shape)}, not one value per node",
                            hint="return a scalar tensor")
        objective = (values * torch.as_tensor(weights, dtype=values.dtype, device=values.device)).sum()
        leaves = [stacked[n] for n in names]
        grads = torch.autograd.grad(objective, leaves, allow_unused=True) if objective.requires_grad \
            else [None] * len(leaves)
        for n, g in zip(names, grads):
            if g is not None:  # w_j is inside g[j] already; one node at a time keeps the double copy small
                d = diff[n].double()
                total[n] += sum(float((g[j].double() * d).sum()) for j in range(len(nodes)))

    @staticmethod
    def _path(model_a: torch.nn.Module, model_b: torch.nn.Module
              ) -> tuple[list[str], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Parameter names, theta_A and theta_B - theta_A (detached copies), checked to match."""
        pa, pb = dict(model_a.named_parameters()), dict(model_b.named_parameters())
        if pa.keys() != pb.keys():
            missing = sorted(set(pa) ^ set(pb))[:3]
            raise DataError(f"the two models do not have the same parameters (e.g. {missing})",
                            hint="attribute between checkpoints of one architecture")
        for n in pa:
            if pa[n].shape != pb[n].shape:
                raise DataError(f"parameter {n!r} has shape {tuple(pa[n].shape)} and {tuple(pb[n].shape)}",
                                hint="attribute between checkpoints of one architecture")
        start = {n: p.detach().clone() for n, p in pa.items()}
        diff = {n: (pb[n].detach().to(pa[n].device) - pa[n].detach()).to(pa[n].dtype) for n in pa}  # on A's device
        return list(pa), start, diff

    @staticmethod
    def _rows(total: dict[str, float], groups: str, change: float, delta: float, ends: list[float],
              checkpoint: str, ref_checkpoint: str, n_steps: int) -> pd.DataFrame:
        """One row per group of the per-tensor attributions."""
        pooled: dict[str, float] = {}
        for name, value in total.items():
            key = _group(name, groups)
            pooled[key] = pooled.get(key, 0.0) + value
        def layer_of(key: str) -> str:
            if groups == "param":
                return parameter_place(key)[1]
            return key.split(":")[0] if groups in ("layer", "layer_module") else "all"

        rows = [make_row(checkpoint=checkpoint, ref_checkpoint=ref_checkpoint, measure="attribution.path",
                         layer=layer_of(key), value=value,
                         delta=delta, n=n_steps, group=key, grouping=groups,
                         share=value / change if change else float("nan"), metric_a=ends[0], metric_b=ends[1])
                for key, value in pooled.items()]
        return results_frame(rows)


def _vmap_friendly_attention(work: torch.nn.Module) -> None:
    """Switch the private working copy from SDPA to eager attention where transformers allows it.

    torch has no vmap batching rule for the CPU SDPA kernel and falls back to a per-node loop inside
    vmap (about 3x slower per node on the toy); eager attention is plain batched matmuls. The end values
    M_a, M_b are computed on the caller's models, unchanged.
    """
    config = getattr(work, "config", None)
    setter = getattr(work, "set_attn_implementation", None)
    if config is not None and callable(setter) and getattr(config, "_attn_implementation", None) == "sdpa":
        setter("eager")


class _MetricShell(torch.nn.Module):
    """The metric as a module's forward, so that functional_call swaps the model's parameters around it."""

    def __init__(self, model: torch.nn.Module, metric: Callable[[torch.nn.Module], torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self._metric_of = metric

    def forward(self) -> torch.Tensor:
        return self._metric_of(self.model)


@register_measure("attribution.path", kind="table", direction="higher_better",
                  doc="Integrated-gradients attribution of a metric's change between two checkpoints to "
                      "parameter groups (rows of ParameterPathAttribution.attribute; delta: completeness error).")
def _attribution_rows(*args: Any, **kwargs: Any) -> pd.DataFrame:
    """The producer the registry names for ``attribution.path`` rows."""
    metric_fn = kwargs.pop("metric_fn")
    return ParameterPathAttribution(metric_fn).attribute(*args, **kwargs)
