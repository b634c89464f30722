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
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from xlprobe.errors import ConfigError, DataError
from xlprobe.probes.arrays import as_rep, check_int
from xlprobe.probes.paired import draws_interval
from xlprobe.registry import register_measure
from xlprobe.results import make_row, results_frame

__all__ = ["probe_module", "unit_importance", "ablation_check", "UNIT_METHODS", "SourceBatch", "source_batch",
           "class_codes", "encoder_of", "module_states", "ProbedEncoder", "probe_layer_ig", "LayerUnitImportance",
           "layer_ablation_check"]

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


def class_codes(probe: Any, y: Any) -> torch.Tensor:
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
    target = class_codes(probe, y)
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


@dataclass
class SourceBatch:
    """Encoded source texts, right-padded: ids, attention mask, and the content positions that mean pooling reads."""

    input_ids: torch.Tensor  # [n, t] int64
    attention_mask: torch.Tensor  # [n, t] int64
    content: torch.Tensor  # [n, t] bool: not padding, not a special token (language code, </s>)
    pad_id: int

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def baseline(self, keep_special: bool = True) -> torch.Tensor:
        """Baseline ids: content tokens (or, ``keep_special=False``, every token) replaced by pad."""
        drop = self.content if keep_special else self.attention_mask.bool()
        return self.input_ids.masked_fill(drop, self.pad_id)

    def forward_args(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The additional forward arguments of :class:`ProbedEncoder` (mask, content)."""
        return self.attention_mask, self.content


def source_batch(tokenizer: Any, texts: Sequence[str], src_langs: str | Sequence[str | None] | None = None,
                  *, max_length: int = 256) -> SourceBatch:
    """Encode ``texts`` as the model's source (mBART: ``[lang_code] text </s>``), each with its language code."""
    texts = list(texts)
    if not texts:
        raise DataError("source_batch needs at least one text")
    codes = [src_langs] * len(texts) if src_langs is None or isinstance(src_langs, str) else list(src_langs)
    if len(codes) != len(texts):
        raise DataError(f"{len(texts)} texts but {len(codes)} language codes", hint="one code per text, or one for all")
    if tokenizer.pad_token_id is None:
        raise DataError("the tokenizer has no pad token", hint="set tokenizer.pad_token")
    before = getattr(tokenizer, "src_lang", None)
    rows = []
    try:
        for text, code in zip(texts, codes):
            if code is not None:
                tokenizer.src_lang = code
            enc = tokenizer(text, truncation=True, max_length=max_length, return_special_tokens_mask=True)
            rows.append((enc["input_ids"], enc["special_tokens_mask"]))
    finally:
        if before is not None:
            tokenizer.src_lang = before
    t = max(len(ids) for ids, _ in rows)
    pad = int(tokenizer.pad_token_id)
    ids = torch.full((len(rows), t), pad, dtype=torch.long)
    special = torch.ones((len(rows), t), dtype=torch.bool)
    mask = torch.zeros((len(rows), t), dtype=torch.long)
    for i, (row, sp) in enumerate(rows):
        ids[i, :len(row)] = torch.as_tensor(row)
        special[i, :len(row)] = torch.as_tensor(sp, dtype=torch.bool)
        mask[i, :len(row)] = 1
    content = ~special & mask.bool()
    if not content.any(dim=1).all():
        raise DataError("some texts tokenize to special tokens only", hint="drop empty texts")
    return SourceBatch(ids, mask, content, pad)


def _module(model: torch.nn.Module, name: str | torch.nn.Module) -> torch.nn.Module:
    """A submodule of ``model`` by module path (``model.encoder.layers.2``) or the module itself."""
    if isinstance(name, torch.nn.Module):
        return name
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise ConfigError(f"{name!r} is not a module of the model",
                          hint="give a module path such as 'model.encoder.layers.0' (a capture point's .module)") from None


def encoder_of(model: torch.nn.Module) -> torch.nn.Module:
    """The encoder of an encoder-decoder (its decoder never runs), else the model."""
    return model.get_encoder() if hasattr(model, "get_encoder") else model


def module_states(encoder: torch.nn.Module, module: torch.nn.Module, input_ids: torch.Tensor,
                  attention_mask: torch.Tensor) -> torch.Tensor:
    """``module``'s output [n, t, d] in the encoder's forward pass."""
    seen: dict[str, torch.Tensor] = {}

    def grab(_m: torch.nn.Module, _i: Any, out: Any) -> None:
        seen["h"] = out[0] if isinstance(out, tuple) else out

    handle = module.register_forward_hook(grab)
    try:
        encoder(input_ids=input_ids, attention_mask=attention_mask)
    finally:
        handle.remove()
    if "h" not in seen:
        raise ConfigError("the module did not run in the encoder's forward pass",
                          hint="name a module of the encoder (model.encoder.layers.k)")
    return seen["h"]


class ProbedEncoder(torch.nn.Module):
    """The probe's logits as a function of the source tokens: encoder -> ``read``'s output, mean-pooled over content -> probe."""

    def __init__(self, model: torch.nn.Module, probe: Any, read: str | torch.nn.Module) -> None:
        super().__init__()
        if model.training:
            raise ConfigError("the model is in training mode (dropout would make attributions random)",
                              hint="call model.eval() first")
        self.encoder = encoder_of(model)
        self.read = _module(model, read)
        self.head = probe_module(probe)

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
        """``read``'s output mean-pooled over the content positions [n, d] (as extract's mean pooling)."""
        h = module_states(self.encoder, self.read, input_ids, attention_mask)
        m = content.to(h.dtype).unsqueeze(-1)
        return (m * h).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
        """Logits [n, K] of the probe on the pooled states."""
        return self.head(self.pooled(input_ids, attention_mask, content).double())


def probe_layer_ig(forward_func: ProbedEncoder, layer: torch.nn.Module, probe: Any, batch: SourceBatch, y: Any,
                   baselines: torch.Tensor, *, n_steps: int, internal_batch_size: int | None,
                   multiply_by_inputs: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """captum LayerIntegratedGradients of the probe's true class at ``layer``: (attributions, delta per item)."""
    from captum.attr import LayerIntegratedGradients

    if len(y) != len(batch):
        raise DataError(f"{len(batch)} items but {len(y)} labels")
    lig = LayerIntegratedGradients(forward_func, layer, multiply_by_inputs=multiply_by_inputs)
    return lig.attribute(batch.input_ids, baselines=baselines, target=class_codes(probe, y),
                         additional_forward_args=batch.forward_args(), n_steps=check_int("n_steps", n_steps, 1),
                         internal_batch_size=internal_batch_size, return_convergence_delta=True)


class LayerUnitImportance:
    """captum ``LayerIntegratedGradients`` of a probe at layer ``read`` through the model to the units of ``source``.

    ``attribute`` returns per item and unit of ``source`` the attribution to the probe's true-class logit,
    summed over positions [n, d]; with ``return_convergence_delta`` also captum's completeness error per
    item [n]. The baseline input replaces content tokens by pad (language code and ``</s>`` kept).
    """

    def __init__(self, model: torch.nn.Module, probe: Any, read: str | torch.nn.Module,
                 source: str | torch.nn.Module, *, multiply_by_inputs: bool = True) -> None:
        self.forward_func = ProbedEncoder(model, probe, read)
        self.source = _module(model, source)
        self.probe = probe
        self.multiply_by_inputs = multiply_by_inputs

    def has_convergence_delta(self) -> bool:
        """Integrated gradients has a completeness error (captum's convergence delta)."""
        return True

    def attribute(self, batch: SourceBatch, y: Any, *, baselines: torch.Tensor | None = None, n_steps: int = 32,
                  internal_batch_size: int | None = None, return_convergence_delta: bool = False) -> Any:
        """Per-item, per-unit attribution [n, d] of the true class (labels ``y``), and the delta [n] if asked."""
        attr, delta = probe_layer_ig(self.forward_func, self.source, self.probe, batch, y,
                                     batch.baseline() if baselines is None else baselines, n_steps=n_steps,
                                     internal_batch_size=internal_batch_size,
                                     multiply_by_inputs=self.multiply_by_inputs)
        units = attr.sum(dim=1).detach()
        return (units, delta.detach()) if return_convergence_delta else units


def _mean_units(model: torch.nn.Module, module: torch.nn.Module, batch: SourceBatch) -> torch.Tensor:
    """Each unit's mean output of ``module`` over the items' non-pad positions [d]."""
    with torch.no_grad():
        h = module_states(encoder_of(model), module, batch.input_ids, batch.attention_mask)
    m = batch.attention_mask.to(h.dtype).unsqueeze(-1)
    return (m * h).sum(dim=(0, 1)) / m.sum()


@register_measure("units.layer_ablation_drop", kind="table", direction="higher_better",
                  doc="Accuracy drop of a probe at a later layer when the top-k units of an earlier module (a "
                      "LayerIntegratedGradients ranking) are set to their mean inside the model, beside k random "
                      "units (control random-units).")
def layer_ablation_check(model: torch.nn.Module, probe: Any, read: str | torch.nn.Module,
                         source: str | torch.nn.Module, batch: SourceBatch, y: Any, ranking: Sequence[int], *,
                         ks: Sequence[int] = (1, 5, 10, 20), groups: Any = None, n_random: int = 20,
                         n_boot: int = 1000, seed: int = 0, score: str = "accuracy",
                         method: str = "layer_integrated_gradients", checkpoint: str = "model") -> pd.DataFrame:
    """Downstream probe's drop when ``source``'s top-k ranked units are set to their mean, against k random units.

    Rows as :func:`ablation_check`'s, with ``layer`` the ablated module, ``ref_layer`` the probe's and
    ``score`` what drops: ``accuracy`` (0/1 per item) or ``log_prob`` (the true class's log-probability,
    which still moves where a saturated probe's accuracy does not).
    """
    if score not in ("accuracy", "log_prob"):
        raise ConfigError(f"score must be 'accuracy' or 'log_prob'; got {score!r}")
    forward = ProbedEncoder(model, probe, read)
    module = _module(model, source)
    mean = _mean_units(model, module, batch)
    d = mean.shape[0]
    order = np.asarray(ranking, dtype=np.int64)
    if sorted(order.tolist()) != list(range(d)):
        raise DataError(f"ranking must order every one of the {d} units of {source!r} once",
                        hint="np.argsort(-importance)")
    target = class_codes(probe, y)

    def correct(units: np.ndarray | None) -> np.ndarray:
        def hook(_m: torch.nn.Module, _i: Any, out: Any) -> Any:
            h = (out[0] if isinstance(out, tuple) else out).clone()
            h[..., units] = mean[units].to(h.dtype)
            return (h, *out[1:]) if isinstance(out, tuple) else h

        handle = module.register_forward_hook(hook) if units is not None else None
        try:
            with torch.no_grad():
                logits = forward(batch.input_ids, *batch.forward_args())
        finally:
            if handle is not None:
                handle.remove()
        if score == "accuracy":
            return (logits.argmax(dim=1) == target).numpy().astype(np.float64)
        return torch.log_softmax(logits, dim=1)[torch.arange(len(target)), target].numpy()

    rng = np.random.default_rng(seed)
    full = correct(None)
    rows = []
    name = source if isinstance(source, str) else type(source).__name__
    ref = read if isinstance(read, str) else type(read).__name__
    for k in ks:
        k = check_int("k", k, 1, d)
        top = full - correct(order[:k])
        rand = np.stack([full - correct(rng.choice(d, size=k, replace=False))
                         for _ in range(check_int("n_random", n_random, 1))], axis=1)
        for control, scores in ((None, top[:, None]), ("random-units", rand)):
            value, lo, hi = draws_interval(scores, groups, n_boot=n_boot, seed=seed)
            rows.append(make_row(checkpoint=checkpoint, layer=name, ref_layer=ref, measure="units.layer_ablation_drop",
                                 value=value, ci_low=lo, ci_high=hi, n=len(y), control=control, seed=seed, k=k,
                                 method=method, score=score, full=float(full.mean())))
    return results_frame(rows)
