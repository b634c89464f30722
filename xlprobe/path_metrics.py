"""Differentiable whole-model metrics for path attribution (a runner: it joins capture and a probe).

Path attribution needs a scalar M(theta) with gradients in the parameters and fixed inputs. Two are here:

* :class:`TranslationLoss`: the teacher-forced cross-entropy of a seq2seq model on fixed sentence pairs
  (what MT training lowers);
* :class:`TransferGap`: a differentiable zero-shot transfer gap at one capture point. The representation
  (mean over content tokens, as ``extract`` pools) is standardised, a ridge probe is fitted in closed form
  on the training language's items of half the parallel groups, and tested on the other half in every
  language (two-fold cross-fitting, folds over groups so that no translation of a training verse is
  tested). The metric is the soft accuracy (the softmax probability of the true class, temperature
  ``tau``) on the training language minus its mean over the other languages: it falls as the probe
  transfers better. Every step is differentiable (``torch.linalg.solve``), so its change between two
  checkpoints can be attributed to parameter groups; :meth:`TransferGap.accuracy_gap` gives the hard
  accuracy gap of the same probe, to check that the soft metric follows the quantity it stands for.

Both metrics run where the model they are called with runs: their inputs go to the model's input device
(:func:`model_device`; a model dispatched by accelerate: its input embeddings' execution device). The
inputs are tokenized once, kept on the CPU, and copied to each device on first use (one cache per device).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from xlprobe.errors import ConfigError, DataError
from xlprobe.types import Dataset

__all__ = ["TranslationLoss", "TransferGap", "model_device"]


def _pad(rows: Sequence[np.ndarray], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded [n, T] ids and the attention mask of variable-length rows."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.as_tensor(np.asarray(r, dtype=np.int64))
        mask[i, : len(r)] = 1
    return ids, mask


def model_device(model: torch.nn.Module) -> torch.device:
    """The device a metric's inputs go to: ``model``'s input device (ConfigError for a model wholly on meta)."""
    from xlprobe.hooks.runner import input_device

    if getattr(model, "hf_device_map", None) is None and all(p.device.type == "meta" for p in model.parameters()):
        raise ConfigError("the model's parameters are all on the meta device (no weights to run)",
                          hint="load the weights (load_model, or from_pretrained without init_empty_weights)")
    return input_device(model)


class TranslationLoss:
    """Mean teacher-forced cross-entropy (nats per target token) of a seq2seq model on fixed pairs.

    ``src`` and ``tgt`` are parallel lists; ``src_lang`` / ``tgt_lang`` the tokenizer's language codes
    (mBART-50's ``en_XX`` ...; None for tokenizers without them).
    """

    def __init__(self, tokenizer: Any, src: Sequence[str], tgt: Sequence[str], *, src_lang: str | None = None,
                 tgt_lang: str | None = None, max_length: int = 128) -> None:
        if len(src) != len(tgt) or not src:
            raise DataError(f"src and tgt must be parallel and non-empty; got {len(src)} and {len(tgt)}")
        for attr, code in (("src_lang", src_lang), ("tgt_lang", tgt_lang)):
            if code is not None:
                setattr(tokenizer, attr, code)
        self.batch = dict(tokenizer(list(src), text_target=list(tgt), return_tensors="pt", padding=True,
                                    truncation=True, max_length=max_length))
        pad = tokenizer.pad_token_id
        self.batch["labels"] = self.batch["labels"].masked_fill(self.batch["labels"] == pad, -100)
        self._on: dict[torch.device, dict[str, torch.Tensor]] = {}

    def batch_on(self, device: torch.device | str) -> dict[str, torch.Tensor]:
        """The fixed batch on ``device`` (copied from the CPU batch once per device)."""
        device = torch.device(device)
        if device not in self._on:
            self._on[device] = {k: v.to(device) for k, v in self.batch.items()}
        return self._on[device]

    def __call__(self, model: torch.nn.Module) -> torch.Tensor:
        """The loss of ``model`` on the fixed pairs (a 0-d tensor with gradients), on the model's device."""
        return model(**self.batch_on(model_device(model))).loss


class TransferGap:
    """Differentiable zero-shot transfer gap of a closed-form ridge probe at one capture point.

    Parameters
    ----------
    tokenizer, data
        The tokenizer and a :class:`~xlprobe.types.Dataset` of parallel records (language, group, labels).
    layer : str
        The capture point (``encoder.3``), resolved on each model as ``extract`` resolves it.
    task : str
        The record label the probe predicts (balanced classes make the soft accuracy meaningful).
    train_lang : str
        The language whose labels the probe sees.
    ridge : float
        L2 penalty of the closed-form probe (on standardised features).
    tau : float
        Softmax temperature of the soft accuracy (smaller: closer to the hard accuracy, rougher gradients).
    max_length, batch_size
        Token limit per text and texts per forward pass (length-sorted batches; the rows come back in order).
    seed : int
        Seed of the split of the parallel groups into the two folds.
    """

    def __init__(self, tokenizer: Any, data: Dataset, *, layer: str, task: str, train_lang: str = "en",
                 ridge: float = 10.0, tau: float = 0.1, max_length: int = 128, batch_size: int = 64,
                 seed: int = 0) -> None:
        if ridge <= 0 or tau <= 0:
            raise ConfigError(f"ridge and tau must be positive; got {ridge} and {tau}")
        self.tokenizer, self.data, self.layer, self.task = tokenizer, data, layer, task
        self.train_lang, self.ridge, self.tau, self.max_length = train_lang, float(ridge), float(tau), max_length
        self.batch_size = int(batch_size)
        langs = np.asarray([r.lang for r in data])
        missing = [r.id for r in data if task not in r.labels]
        if missing:
            raise DataError(f"task {task!r} is not a label of record {missing[0]!r}")
        labels = np.asarray([str(r.labels[task]) for r in data])
        if train_lang not in set(langs.tolist()):
            raise DataError(f"no item in train_lang {train_lang!r}", hint=f"languages: {sorted(set(langs))}")
        self.classes_, codes = np.unique(labels, return_inverse=True)
        if self.classes_.size < 2:
            raise DataError(f"task {task!r} has a single class: nothing to transfer")
        groups = np.asarray([str(r.group) for r in data])
        uniq = np.unique(groups)
        fold_of = dict(zip(uniq, np.random.default_rng(seed).permutation(len(uniq)) % 2))
        self.fold = np.asarray([fold_of[g] for g in groups])
        self.langs, self.y = langs, torch.as_tensor(codes)
        self._encoded: dict[int, list] = {}
        self._on: dict[tuple[int, torch.device], list] = {}

    def inputs(self, model: torch.nn.Module) -> list[tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """:meth:`_encoded_batches` on the model's device (copied once per model family and device)."""
        device = model_device(model)
        key = (id(type(model)), device)
        if key not in self._on:
            self._on[key] = [(rows, ids.to(device), mask.to(device), keep.to(device))
                             for rows, ids, mask, keep in self._encoded_batches(model)]
        return self._on[key]

    def _encoded_batches(self, model: torch.nn.Module
                         ) -> list[tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Length-sorted CPU batches (rows, padded ids, attention mask, pooling mask) as the encoder reads them."""
        from xlprobe.hooks.encode import encode_source
        from xlprobe.hooks.points import model_family

        key = id(type(model))
        if key not in self._encoded:
            enc = encode_source(self.tokenizer, model_family(model), self.data, max_length=self.max_length,
                                include_special=False, use_langs=True)
            order = np.argsort(enc.lengths, kind="stable")
            batches = []
            for start in range(0, len(order), self.batch_size):
                rows = order[start:start + self.batch_size]
                ids, mask = _pad([enc.ids[i] for i in rows], int(self.tokenizer.pad_token_id))
                keep, _ = _pad([enc.keep[i].astype(np.int64) for i in rows], 0)
                batches.append((rows, ids, mask, keep.float()))
            self._encoded[key] = batches
        return self._encoded[key]

    def pooled(self, model: torch.nn.Module) -> torch.Tensor:
        """[n, d] mean over content tokens at the capture point (differentiable in the parameters)."""
        from xlprobe.hooks.capture import StopForward, output_tensor
        from xlprobe.hooks.points import resolve_points

        point = resolve_points(model, self.layer)[0]
        seen: list[torch.Tensor] = []
        module = model.get_submodule(point.module)

        def keep_and_stop(tensor: torch.Tensor) -> None:
            seen.append(tensor)
            raise StopForward(point.name)  # nothing after the point is read: skip the rest of the forward

        if point.is_input:
            handle = module.register_forward_pre_hook(lambda _m, args, kwargs: keep_and_stop(
                args[0] if args else kwargs["hidden_states"]), with_kwargs=True)
        else:
            handle = module.register_forward_hook(lambda _m, _a, out: keep_and_stop(output_tensor(out)))
        encoder = model.get_encoder() if hasattr(model, "get_encoder") else model
        parts, order = [], []
        try:
            for rows, ids, mask, keep in self.inputs(model):
                seen.clear()
                try:
                    encoder(input_ids=ids, attention_mask=mask)
                except StopForward:
                    pass
                parts.append((seen[0] * keep[..., None]).sum(1) / keep.sum(1, keepdim=True).clamp(min=1))
                order.append(rows)
        finally:
            handle.remove()
        pooled = torch.cat(parts)
        return pooled[torch.as_tensor(np.argsort(np.concatenate(order)), device=pooled.device)]

    def _probabilities(self, X: torch.Tensor) -> torch.Tensor:
        """[n, k] cross-fitted class probabilities (each fold's probe fitted on the other fold's train_lang)."""
        X = X.double()
        X = (X - X.mean(0)) / X.std(0).clamp(min=1e-6)
        n, d = X.shape
        k, dev = self.classes_.size, X.device
        Y = torch.nn.functional.one_hot(self._labels(dev), k).double()
        parts, order = [], []
        own = torch.as_tensor(self.langs == self.train_lang, device=dev)
        for f in (0, 1):
            tr = own & torch.as_tensor(self.fold != f, device=dev)
            te = torch.as_tensor(np.flatnonzero(self.fold == f), device=dev)
            A = torch.cat([X[tr], torch.ones(int(tr.sum()), 1, dtype=X.dtype, device=dev)], 1)
            reg = self.ridge * torch.eye(d + 1, dtype=X.dtype, device=dev)
            reg[-1, -1] = 0.0
            W = torch.linalg.solve(A.T @ A + reg, A.T @ (Y[tr] - 1.0 / k))
            scores = torch.cat([X[te], torch.ones(len(te), 1, dtype=X.dtype, device=dev)], 1) @ W
            parts.append(torch.softmax(scores / self.tau, dim=1))
            order.append(te)
        return torch.cat(parts)[torch.argsort(torch.cat(order))]

    def _labels(self, device: torch.device) -> torch.Tensor:
        """The class codes on ``device``."""
        return self.y.to(device)

    def _gap(self, values: torch.Tensor) -> torch.Tensor:
        """Mean on train_lang minus the mean of the other languages' means."""
        own = torch.as_tensor(self.langs == self.train_lang, device=values.device)
        others = [values[torch.as_tensor(self.langs == lg, device=values.device)].mean()
                  for lg in sorted(set(self.langs)) if lg != self.train_lang]
        return values[own].mean() - torch.stack(others).mean()

    def __call__(self, model: torch.nn.Module) -> torch.Tensor:
        """The soft-accuracy transfer gap of ``model`` (a 0-d tensor with gradients)."""
        P = self._probabilities(self.pooled(model))
        return self._gap(P.gather(1, self._labels(P.device)[:, None]).squeeze(1))

    def accuracy_gap(self, model: torch.nn.Module) -> float:
        """The hard accuracy gap of the same cross-fitted probe (argmax), for checking the soft metric."""
        with torch.no_grad():
            P = self._probabilities(self.pooled(model))
        return float(self._gap((P.argmax(1) == self._labels(P.device)).double()))

    def accuracies(self, model: torch.nn.Module) -> dict[str, float]:
        """Hard accuracy of the cross-fitted probe per language."""
        with torch.no_grad():
            P = self._probabilities(self.pooled(model))
            correct = (P.argmax(1) == self._labels(P.device)).double()
        return {lg: float(correct[torch.as_tensor(self.langs == lg, device=P.device)].mean())
                for lg in sorted(set(self.langs))}
