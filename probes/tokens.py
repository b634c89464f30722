"""Which input tokens a probe's decision comes from: the language tag against the content tokens.

An mBART-style encoder reads ``[lang_code] text </s>``. A language-identity probe fitted on a layer's states,
mean-pooled over the content tokens (the tag and ``</s>`` are left out of the pool, as
``xlprobe.hooks.extract`` pools), can still read the tag through attention. :class:`TokenAttribution` runs
captum's ``LayerIntegratedGradients`` on the encoder's input embeddings (Sundararajan et al. 2017): the
probe's true-class logit is attributed to each input token (summed over the embedding dimension), from a
baseline whose every token is pad (attention mask unchanged; pad embeds to zero in mBART-style models, so
the path starts from position embeddings alone). Per item the attributions add up to logit(input) -
logit(baseline) within captum's convergence delta.

:func:`token_shares` splits each item's |attribution| into the share on the language code (``tag``), on the
content tokens (``content``) and on the other special tokens (``eos``: ``</s>``). :func:`tag_attribution`
gives tidy rows: the mean share with a cluster-bootstrap interval over groups (``tokens.share``), and the
control that asks whether the decision follows the tag: the same texts with each tag replaced by another
language's code (``control="swapped-tag"``), where ``tokens.decision`` says how often the probe still
names the text's language (``follows="text"``) or names the tag's (``follows="tag"``).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from xlprobe.errors import ConfigError, DataError
from xlprobe.probes.paired import draws_interval
from xlprobe.probes.units import ProbedEncoder, SourceBatch, encoder_of, probe_layer_ig, source_batch
from xlprobe.registry import register_measure
from xlprobe.results import make_row, results_frame

__all__ = ["TokenAttribution", "token_shares", "tag_attribution", "swap_tags", "PARTS"]

#: The parts of an input :func:`token_shares` splits |attribution| into.
PARTS = ("tag", "content", "eos")


def _embeddings(model: torch.nn.Module) -> torch.nn.Module:
    """The encoder's token embedding module (mBART: ``model.encoder.embed_tokens``)."""
    enc = encoder_of(model)
    emb = getattr(enc, "embed_tokens", None)
    return emb if isinstance(emb, torch.nn.Module) else model.get_input_embeddings()


class TokenAttribution:
    """captum ``LayerIntegratedGradients`` of a probe at layer ``read`` to the encoder's input tokens.

    ``attribute`` returns per item and position the attribution to the probe's true-class logit,
    summed over the embedding dimension [n, t] (0 at padding); with ``return_convergence_delta`` also
    captum's completeness error per item [n].
    """

    def __init__(self, model: torch.nn.Module, probe: Any, read: str | torch.nn.Module, *,
                 multiply_by_inputs: bool = True) -> None:
        self.forward_func = ProbedEncoder(model, probe, read)
        self.layer = _embeddings(model)
        self.probe = probe
        self.multiply_by_inputs = multiply_by_inputs

    def has_convergence_delta(self) -> bool:
        """Integrated gradients has a completeness error (captum's convergence delta)."""
        return True

    def attribute(self, batch: SourceBatch, y: Any, *, baselines: torch.Tensor | None = None, n_steps: int = 32,
                  internal_batch_size: int | None = None, return_convergence_delta: bool = False) -> Any:
        """Per-token attribution [n, t] of the true class (labels ``y``); baseline: every token pad."""
        base = batch.baseline(keep_special=False) if baselines is None else baselines
        attr, delta = probe_layer_ig(self.forward_func, self.layer, self.probe, batch, y, base, n_steps=n_steps,
                                     internal_batch_size=internal_batch_size,
                                     multiply_by_inputs=self.multiply_by_inputs)
        tokens = (attr.sum(dim=-1) * batch.attention_mask).detach()
        return (tokens, delta.detach()) if return_convergence_delta else tokens


def token_shares(attributions: Any, batch: SourceBatch, tag_ids: Sequence[int]) -> np.ndarray:
    """Per item, the share of |attribution| on the language tag, the content tokens and ``</s>`` [n, 3] (PARTS)."""
    a = torch.as_tensor(attributions).abs().double()
    if a.shape != batch.input_ids.shape:
        raise DataError(f"attributions {tuple(a.shape)} do not match the batch {tuple(batch.input_ids.shape)}")
    live = batch.attention_mask.bool()
    tag = torch.isin(batch.input_ids, torch.as_tensor(list(tag_ids), dtype=torch.long)) & live
    parts = torch.stack([tag, batch.content, live & ~tag & ~batch.content], dim=-1).double()  # [n, t, 3]
    mass = (a.unsqueeze(-1) * parts).sum(dim=1)
    total = mass.sum(dim=1, keepdim=True)
    return (mass / total.clamp_min(1e-300)).numpy()


def swap_tags(langs: Sequence[str], swap: str | Mapping[str, str] = "rotate") -> list[str]:
    """Each item's replacement tag language: ``rotate`` maps the sorted languages one step on (en -> fr -> ...)."""
    if isinstance(swap, str):
        if swap != "rotate":
            raise ConfigError(f"swap must be 'rotate' or a mapping language -> language; got {swap!r}")
        order = sorted(set(langs))
        if len(order) < 2:
            raise DataError("swapping tags needs at least two languages")
        swap = {a: b for a, b in zip(order, order[1:] + order[:1])}
    missing = sorted(set(langs) - set(swap))
    if missing:
        raise DataError(f"no replacement tag for {missing}", hint="give a mapping with every language")
    return [swap[lang] for lang in langs]


def _rows(shares: np.ndarray, delta: np.ndarray, decisions: dict[str, np.ndarray], *, groups: Any, control: str | None,
          n_boot: int, seed: int, checkpoint: str, layer: str, n_steps: int) -> list[dict[str, Any]]:
    """Share rows (one per part) and decision rows of one condition."""
    rows = []
    common = dict(checkpoint=checkpoint, layer=layer, n=len(shares), control=control, seed=seed, n_steps=n_steps)
    for p, part in enumerate(PARTS):
        value, lo, hi = draws_interval(shares[:, p:p + 1], groups, n_boot=n_boot, seed=seed)
        rows.append(make_row(measure="tokens.share", value=value, ci_low=lo, ci_high=hi, part=part,
                             delta=float(np.abs(delta).max()), **common))
    for follows, hits in decisions.items():
        value, lo, hi = draws_interval(hits[:, None], groups, n_boot=n_boot, seed=seed)
        rows.append(make_row(measure="tokens.decision", value=value, ci_low=lo, ci_high=hi, follows=follows, **common))
    return rows


@register_measure("tokens.share", kind="table", direction="higher_better",
                  doc="Share of a probe's |token attribution| (LayerIntegratedGradients on the input embeddings) on "
                      "the language tag, the content tokens and </s> (column part); control swapped-tag.")
@register_measure("tokens.decision", kind="table", direction="higher_better",
                  doc="How often a probe names the text's language (follows=text) or, with the tag swapped for "
                      "another language's (control swapped-tag), the tag's language (follows=tag).")
def tag_attribution(model: torch.nn.Module, tokenizer: Any, probe: Any, read: str, texts: Sequence[str],
                    langs: Sequence[str], *, lang_codes: Mapping[str, str], swap: str | Mapping[str, str] | None = "rotate",
                    groups: Any = None, n_steps: int = 32, internal_batch_size: int | None = None, n_boot: int = 1000,
                    seed: int = 0, checkpoint: str = "model") -> pd.DataFrame:
    """Does a language probe's decision come from the tag or the words? Share rows, and the swapped-tag control.

    ``langs`` are the texts' languages (the probe's classes); ``lang_codes`` maps each to the model's
    code (``fr`` -> ``fr_XX``). ``swap`` (see :func:`swap_tags`; None: no control) picks each item's
    replacement tag.
    """
    langs = [str(lang) for lang in langs]
    missing = sorted(set(langs) - set(lang_codes))
    if missing:
        raise DataError(f"no language code for {missing}", hint="lang_codes={'fr': 'fr_XX', ...}")
    y = np.asarray(langs)
    tag_ids = tokenizer.convert_tokens_to_ids(sorted(set(lang_codes.values())))
    explainer = TokenAttribution(model, probe, read)
    classes = np.asarray(probe.classes_)
    conditions: list[tuple[str | None, list[str]]] = [(None, langs)]
    if swap is not None:
        conditions.append(("swapped-tag", swap_tags(langs, swap)))
    rows = []
    for control, tags in conditions:
        batch = source_batch(tokenizer, texts, [lang_codes[t] for t in tags])
        attr, delta = explainer.attribute(batch, y, n_steps=n_steps, internal_batch_size=internal_batch_size,
                                          return_convergence_delta=True)
        with torch.no_grad():
            pred = classes[explainer.forward_func(batch.input_ids, *batch.forward_args()).argmax(dim=1).numpy()]
        decisions = {"text": (pred == y).astype(np.float64)}
        if control is not None:
            decisions["tag"] = (pred == np.asarray(tags)).astype(np.float64)
        rows += _rows(token_shares(attr, batch, tag_ids), delta.numpy(), decisions, groups=groups, control=control,
                      n_boot=n_boot, seed=seed, checkpoint=checkpoint, layer=read, n_steps=n_steps)
    return results_frame(rows)
