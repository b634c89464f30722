"""Zero-shot cross-lingual transfer by fine-tuning: train a classifier on one language, test on all.

The small-scale form of the protocol of Ji et al. 2024 ("Can Machine Translation Bridge Multilingual
Pretraining and Cross-lingual Transfer Learning?", LREC-COLING; the question "can MT continued
training help zero-shot cross-lingual transfer?"), itself the XTREME / XGLUE protocol of Hu et al.
2020 ("XTREME", ICML) and Conneau et al. 2020 ("XLM-R", ACL): the whole encoder and a linear head
are fine-tuned on labelled data of one language, then tested on every language without seeing any
of their labels. Running it on two checkpoints (the pretrained ``lm`` and its MT-continued ``mt``)
asks whether MT training changes how well a task learnt in English carries over.

Protocol (:func:`finetune_transfer`):

* **Split** by parallel group (the same verse in every language), once, with ``split_seed``, by
  :func:`~xlprobe.tasks.splits.group_train_test_split`. The split depends only on the data, never on
  the seed or the model, so every seed and every checkpoint is trained and tested on the same items
  and their accuracies are paired. No translation of a test item is ever trained on.
* **Train** on the ``train_lang`` items of the training groups only: a deep copy of the encoder
  (``model.get_encoder()`` of an encoder-decoder, else ``model.base_model``), with a linear head on
  the pooled last encoder state (after the final norm where the model has one), AdamW on every
  encoder parameter and the head, constant learning rate, exactly ``steps`` steps of ``batch_size``
  items (epochs of seeded permutations, an incomplete last batch dropped), cross-entropy loss,
  train mode (dropout active where the model has any). The caller's model is never modified.
* **Test** on every language's items of the test groups (zero-shot for all but ``train_lang``).

Pooling reads the text's own tokens: padding and special tokens (language code, ``</s>``) are left
out, as in :mod:`xlprobe.hooks.pooling`; the encoder itself attends to every non-pad token.

Rows (``layer`` = ``"encoder.last"``, ``task`` = the label, ``train_lang`` as an extra column):

======================== ========= ========================================================================
measure                  seed      value
======================== ========= ========================================================================
``finetune.accuracy``    each      accuracy on the test items of ``lang``
``finetune.accuracy``    missing   mean over seeds; ``ci_low`` / ``ci_high`` = min / max over seeds
``finetune.accuracy``    missing   ``control="majority"``: the training items' most frequent class
``finetune.transfer_gap`` each     accuracy(train_lang) - accuracy(lang), for every other language
``finetune.transfer_gap`` missing  mean over seeds, min / max over seeds
``finetune.train_loss``  each      mean training loss of the last 10 steps (fewer if ``steps`` < 10)
``finetune.train_loss``  missing   mean over seeds, min / max over seeds
======================== ========= ========================================================================

The summary rows carry the **range over seeds**, not a confidence interval: with the 2-5 seeds that
fine-tuning budgets allow, a Student-t interval (critical value 12.7 for 2 seeds, 4.3 for 3) is
mostly wider than [0, 1] and rests on a normality that seed-to-seed accuracies do not have, whereas
the range is exact and says plainly how much the seed moved the result. ``n`` is the number of test
items of the language (training items for the loss), per seed.

The full loss curves are in ``df.attrs["train_loss"]`` (``{seed: [loss per step]}``) and in the log
(INFO, ten times per run). Given the seed, a run is deterministic on CPU: the head's initialisation,
dropout and the batch order come from ``torch.random.fork_rng`` + ``manual_seed`` and a
``np.random.default_rng(seed)``, and the caller's global RNG state is left as it was.

This is not a registered measure: it needs a model, a tokenizer and texts, none of the registry's
call shapes (see :mod:`xlprobe.registry`).
"""
from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from xlprobe.errors import ConfigError, DataError, LanguageCodeError
from xlprobe.probes.arrays import check_float, check_int
from xlprobe.probes.controls import majority_predictions
from xlprobe.results import make_row, results_frame
from xlprobe.tasks.splits import group_ids, group_train_test_split
from xlprobe.types import Dataset, Record

__all__ = ["finetune_transfer", "DEFAULT_LANG_CODES", "POOLINGS", "LAYER"]

logger = logging.getLogger(__name__)

#: Dataset language -> mBART-50 code, for the eight languages of the toy family (``xlprobe.toy``).
DEFAULT_LANG_CODES: Mapping[str, str] = {
    "en": "en_XX", "es": "es_XX", "fr": "fr_XX", "de": "de_DE",
    "it": "it_IT", "ru": "ru_RU", "ar": "ar_AR", "vi": "vi_VN",
}
#: Poolings of the last encoder state that the head reads.
POOLINGS = ("mean", "max", "first", "last")
#: ``layer`` of every row: the last encoder state, the representation that is fine-tuned.
LAYER = "encoder.last"
#: Steps averaged into the ``finetune.train_loss`` row.
_LOSS_WINDOW = 10


@dataclass(frozen=True)
class _Encoded:
    """Token ids of every record and, per token, whether pooling reads it (not a special token)."""

    ids: list[list[int]]
    keep: list[list[bool]]
    pad_id: int


@dataclass(frozen=True)
class _SeedRun:
    """What one seed gives: test predictions (class codes) and the loss of every step."""

    pred: np.ndarray
    losses: list[float]


# ----------------------------------------------------------------------------------------- checking
def _records(data: Any) -> tuple[Record, ...]:
    if isinstance(data, Dataset):
        records = data.records
    elif isinstance(data, (str, bytes)) or not isinstance(data, Sequence):
        raise DataError(f"data must be a Dataset or a sequence of Record; got {type(data).__name__}",
                        hint="load one with xlprobe.tasks (e.g. load_bible) or Dataset.from_texts")
    else:
        records = tuple(data)
    if not records:
        raise DataError("data is empty: nothing to fine-tune on", hint="load some records first")
    bad = next((r for r in records if not isinstance(r, Record)), None)
    if bad is not None:
        raise DataError(f"data must hold Record objects; got a {type(bad).__name__}",
                        hint="build records with xlprobe.types.Record or Dataset.from_texts")
    empty = next((r for r in records if not isinstance(r.text, str) or not r.text.strip()), None)
    if empty is not None:
        raise DataError(f"record {empty.id!r} has an empty text ({empty.text!r})", hint="drop empty texts first")
    return tuple(records)


def _labels(records: Sequence[Record], label: str) -> np.ndarray:
    if not isinstance(label, str) or not label:
        raise ConfigError(f"label must be a label name (a non-empty string); got {label!r}")
    available = sorted({k for r in records for k in r.labels})
    if not any(label in r.labels for r in records):
        raise DataError(f"unknown label {label!r}: no record has it",
                        hint=f"labels present: {available}" if available else "these records carry no labels")
    missing = [r for r in records if label not in r.labels]
    if missing:
        raise DataError(f"{len(missing)} of {len(records)} records lack label {label!r} (first: {missing[0].id!r})",
                        hint=f"drop them, or pick a label every record has; labels present: {available}")
    return np.asarray([str(r.labels[label]) for r in records], dtype=object)


def _seeds(seeds: Any) -> tuple[int, ...]:
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        seeds = (seeds,)
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or len(seeds) == 0:
        raise ConfigError(f"seeds must be a non-empty sequence of integers; got {seeds!r}", hint="e.g. seeds=(0, 1, 2)")
    out = tuple(check_int("seeds[]", s, 0) for s in seeds)
    if len(set(out)) != len(out):
        raise ConfigError(f"seeds must be distinct; got {list(out)}", hint="a repeated seed repeats the same run")
    return out


def _device(device: Any) -> Any:
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device must be a torch device ('cpu', 'cuda', 'cuda:1') or 'auto'; got {device!r}") from None


def _encoder(model: Any) -> Any:
    """The module that maps (input_ids, attention_mask) to the last encoder state."""
    from torch import nn

    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module (a transformers model); got {type(model).__name__}")
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
        return model.get_encoder()
    return getattr(model, "base_model", model)


# ------------------------------------------------------------------------------------ language codes
def _code_known(tokenizer: Any, code: str, table: Any) -> bool:
    if isinstance(table, Mapping) and table:
        return code in table
    unk = getattr(tokenizer, "unk_token_id", None)
    try:
        tid = tokenizer.convert_tokens_to_ids(code)
    except (KeyError, TypeError, ValueError):
        return False
    return tid is not None and tid != unk


def _lang_codes(tokenizer: Any, langs: Sequence[str], lang_codes: Mapping[str, str] | None) -> dict[str, str] | None:
    """``{lang: code}`` to set as ``src_lang``, or None for a tokenizer without language codes."""
    if lang_codes is not None and not (isinstance(lang_codes, Mapping)
                                       and all(isinstance(k, str) and isinstance(v, str) for k, v in lang_codes.items())):
        raise ConfigError(f"lang_codes must map a dataset language to the tokenizer's code; got {lang_codes!r}",
                          hint="e.g. lang_codes={'en': 'en_XX', 'sw': 'sw_KE'}")
    if not hasattr(tokenizer, "src_lang"):
        return None
    table = {**DEFAULT_LANG_CODES, **(lang_codes or {})}
    known = getattr(tokenizer, "lang_code_to_id", None)
    shown = ", ".join(sorted(known)[:60]) if isinstance(known, Mapping) and known else "see the model card"
    out = {}
    for lang in langs:
        code = table.get(lang)
        if code is None and _code_known(tokenizer, lang, known):
            code = lang  # the data already uses the model's codes
        if code is None:
            raise ConfigError(
                f"no language code for {lang!r}: {type(tokenizer).__name__} marks the source language with a "
                f"code (src_lang), and lang_codes has none for {lang!r}",
                hint=f"pass lang_codes={{{lang!r}: CODE}}; the tokenizer's codes: {shown}")
        if not _code_known(tokenizer, code, known):
            raise LanguageCodeError(f"code {code!r} (for language {lang!r}) is not a language code of "
                                    f"{type(tokenizer).__name__}",
                                    hint=f"fix lang_codes[{lang!r}]; valid codes: {shown}")
        out[lang] = code
    return out


def _tokenize(tokenizer: Any, records: Sequence[Record], codes: Mapping[str, str] | None, max_length: int) -> _Encoded:
    """Token ids per record, each language with its ``src_lang`` set; ``src_lang`` restored afterwards."""
    ids: list[list[int]] = [[] for _ in records]
    keep: list[list[bool]] = [[] for _ in records]
    by_lang: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        by_lang.setdefault(r.lang, []).append(i)
    saved = getattr(tokenizer, "src_lang", None)
    try:
        for lang, rows in by_lang.items():
            if codes is not None:
                tokenizer.src_lang = codes[lang]
            enc = tokenizer([records[i].text for i in rows], truncation=True, max_length=max_length,
                            add_special_tokens=True, return_special_tokens_mask=True)
            for i, tok, special in zip(rows, enc["input_ids"], enc["special_tokens_mask"]):
                own = [not s for s in special]
                ids[i], keep[i] = list(tok), own if any(own) else [True] * len(tok)
    finally:
        if codes is not None and saved is not None:
            tokenizer.src_lang = saved
    pad = getattr(tokenizer, "pad_token_id", None)
    return _Encoded(ids, keep, 0 if pad is None else int(pad))


# ------------------------------------------------------------------------------------------ training
def _batch(enc: _Encoded, idx: np.ndarray, device: Any) -> tuple[Any, Any, Any]:
    """Right-padded input ids, attention mask and pooling mask of the records ``idx``."""
    import torch

    t = max(len(enc.ids[i]) for i in idx)
    ids = torch.full((len(idx), t), enc.pad_id, dtype=torch.long)
    att = torch.zeros((len(idx), t), dtype=torch.long)
    keep = torch.zeros((len(idx), t), dtype=torch.bool)
    for row, i in enumerate(idx):
        k = len(enc.ids[i])
        ids[row, :k] = torch.tensor(enc.ids[i])
        att[row, :k] = 1
        keep[row, :k] = torch.tensor(enc.keep[i])
    return ids.to(device), att.to(device), keep.to(device)


def _pool(h: Any, keep: Any, method: str) -> Any:
    """Pool states [b, t, d] over the True positions of ``keep`` [b, t]."""
    import torch

    if method == "mean":
        m = keep.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp_min(1.0)
    if method == "max":
        return h.masked_fill(~keep.unsqueeze(-1), float("-inf")).amax(1)
    rows = torch.arange(h.shape[0], device=h.device)
    first = keep.to(torch.int8).argmax(1)
    if method == "first":
        return h[rows, first]
    last = (keep.shape[1] - 1) - keep.flip(1).to(torch.int8).argmax(1)
    return h[rows, last]


def _states(encoder: Any, ids: Any, att: Any) -> Any:
    out = encoder(input_ids=ids, attention_mask=att)
    h = getattr(out, "last_hidden_state", None)
    if h is None:
        h = out[0]
    return h


def _batches(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Endless batches: epochs of seeded permutations, the incomplete last batch dropped (all n when n < batch)."""
    size = min(batch_size, n)
    while True:
        perm = rng.permutation(n)
        for s in range(0, n - size + 1, size):
            yield perm[s:s + size]


def _run_seed(encoder_src: Any, enc: _Encoded, y: np.ndarray, n_classes: int, train_idx: np.ndarray,
              test_idx: np.ndarray, *, seed: int, steps: int, batch_size: int, lr: float, pooling: str,
              device: Any) -> _SeedRun:
    """Fine-tune a copy of the encoder plus a linear head with ``seed``; predict the test items."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    # manual_seed also seeds every CUDA device: fork (and so restore) all of them, not only the one used
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        encoder = copy.deepcopy(encoder_src).to(device)
        if any(p.dtype in (torch.float16, torch.bfloat16) for p in encoder.parameters()):
            encoder = encoder.float()  # half-precision training needs loss scaling; the copy trains in float32
        encoder.requires_grad_(True)
        encoder.eval()
        with torch.no_grad():
            ids, att, keep = _batch(enc, train_idx[:1], device)
            d = _states(encoder, ids, att).shape[-1]
        head = nn.Linear(d, n_classes).to(device)
        params = [*encoder.parameters(), *head.parameters()]
        opt = torch.optim.AdamW(params, lr=lr)
        y_t = torch.as_tensor(y, dtype=torch.long, device=device)
        batches = _batches(len(train_idx), batch_size, np.random.default_rng(seed))
        every = max(1, steps // 10)
        encoder.train()
        head.train()
        losses: list[float] = []
        for step in range(1, steps + 1):
            b = train_idx[next(batches)]
            ids, att, keep = _batch(enc, b, device)
            logits = head(_pool(_states(encoder, ids, att), keep, pooling).float())
            loss = F.cross_entropy(logits, y_t[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if step == 1 or step % every == 0 or step == steps:
                logger.info("finetune seed %d step %d/%d: loss %.4f", seed, step, steps, losses[-1])
        encoder.eval()
        head.eval()
        pred = np.empty(len(test_idx), dtype=np.int64)
        order = np.argsort([len(enc.ids[i]) for i in test_idx], kind="stable")  # little padding
        with torch.inference_mode():
            for s in range(0, len(order), batch_size):
                pos = order[s:s + batch_size]
                ids, att, keep = _batch(enc, test_idx[pos], device)
                pred[pos] = head(_pool(_states(encoder, ids, att), keep, pooling).float()).argmax(-1).cpu().numpy()
    return _SeedRun(pred, losses)


# -------------------------------------------------------------------------------------------- public
def finetune_transfer(
    model: Any,
    tokenizer: Any,
    data: Dataset | Sequence[Record],
    *,
    label: str = "testament",
    train_lang: str = "en",
    checkpoint: str = "model",
    seeds: Sequence[int] = (0, 1, 2),
    steps: int = 200,
    batch_size: int = 16,
    lr: float = 5e-5,
    max_length: int = 64,
    pooling: str = "mean",
    test_size: float = 0.3,
    lang_codes: Mapping[str, str] | None = None,
    device: str = "cpu",
    split_seed: int = 0,
) -> pd.DataFrame:
    """Fine-tune the encoder on ``train_lang`` labels, test every language zero-shot; the tidy results table.

    Parameters
    ----------
    model : torch.nn.Module
        A transformers model: encoder-decoder (mBART, M2M100, T5...: its ``get_encoder()`` is tuned)
        or encoder-only (its ``base_model``). Never modified: each seed tunes a deep copy.
    tokenizer
        Its tokenizer. If it has ``src_lang`` (mBART-50, NLLB), that is set per language from
        ``lang_codes`` and restored afterwards; otherwise texts are tokenized plainly.
    data : Dataset or sequence of Record
        Parallel, labelled items (e.g. ``load_bible(["en", "fr", "de"])``); every record needs
        ``label`` and, for a fair comparison of languages, a ``group`` shared with its translations.
    label : str, default "testament"
        The record label to predict (Bible: ``testament``, ``genre``, ``book``).
    train_lang : str, default "en"
        The only language whose labels the model sees.
    checkpoint : str, default "model"
        Name written in the ``checkpoint`` column.
    seeds : sequence of int, default (0, 1, 2)
        One fine-tuning run per seed (head initialisation, dropout, batch order).
    steps, batch_size, lr : int, int, float
        Exactly ``steps`` AdamW updates of ``batch_size`` items at constant learning rate ``lr``.
    max_length : int, default 64
        Texts are truncated to this many tokens (special tokens included).
    pooling : {"mean", "max", "first", "last"}, default "mean"
        How the head reads the last encoder state, over the text's own tokens.
    test_size : float, default 0.3
        Fraction of the records in the test groups.
    lang_codes : mapping, optional
        Dataset language -> tokenizer code, added to (and overriding) :data:`DEFAULT_LANG_CODES`.
    device : str, default "cpu"
        Torch device of the training ("auto": CUDA when available).
    split_seed : int, default 0
        Seed of the train/test split, kept apart from ``seeds`` so the split never moves.

    Returns
    -------
    pandas.DataFrame
        The rows of the module docstring's table (:func:`~xlprobe.results.results_frame` columns, plus
        ``train_lang``); ``attrs["train_loss"]`` holds every seed's loss per step.

    Raises
    ------
    DataError
        Unknown or missing label, ``train_lang`` absent from the data or from the training groups,
        fewer than 2 classes among the training items, fewer than 2 groups, empty texts.
    ConfigError
        A bad option, or a language without a code in ``lang_codes`` for a tokenizer that needs one.
    LanguageCodeError
        A code in ``lang_codes`` that the tokenizer does not know.

    Examples
    --------
    >>> from xlprobe import toy  # doctest: +SKIP
    >>> from xlprobe.tasks.bible import load_bible  # doctest: +SKIP
    >>> model, tok = toy.load("mt")  # doctest: +SKIP
    >>> df = finetune_transfer(model, tok, load_bible(["en", "fr", "de"], limit=500), label="genre")  # doctest: +SKIP
    >>> df[df.seed.isna() & (df.measure == "finetune.accuracy")]  # doctest: +SKIP
    """
    records = _records(data)
    y_all = _labels(records, label)
    if not isinstance(checkpoint, str) or not checkpoint:
        raise ConfigError(f"checkpoint must be a non-empty name; got {checkpoint!r}")
    seeds = _seeds(seeds)
    steps = check_int("steps", steps, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    max_length = check_int("max_length", max_length, 2)
    split_seed = check_int("split_seed", split_seed, 0)
    lr = check_float("lr", lr, 0.0, 1.0, open_low=True)
    test_size = check_float("test_size", test_size, 0.0, 1.0, open_low=True, open_high=True)
    if pooling not in POOLINGS:
        raise ConfigError(f"unknown pooling {pooling!r}", hint=f"valid: {', '.join(POOLINGS)}")
    dev = _device(device)
    encoder_src = _encoder(model)

    langs = np.asarray([r.lang for r in records], dtype=object)
    present = sorted(set(langs.tolist()))
    if train_lang not in present:
        raise DataError(f"train_lang {train_lang!r} has no items in the data", hint=f"languages present: {present}")
    n_groups = len(set(group_ids(records, "group").tolist()))
    if n_groups < 2:
        raise DataError(f"too few groups to split: the data has {n_groups} parallel group(s)",
                        hint="load more verses (a higher limit); a split needs groups on both sides")
    train_side, test_side = group_train_test_split(records, test_size=test_size, by="group", seed=split_seed)
    train_idx = train_side[langs[train_side] == train_lang]
    if train_idx.size == 0:
        raise DataError(f"no {train_lang!r} items in the training groups ({len(train_side)} training items)",
                        hint="load more groups with a translation in train_lang, or lower test_size")
    classes = np.unique(y_all[train_idx])
    if classes.size < 2:
        raise DataError(f"the {train_idx.size} training items ({train_lang!r}, training groups) have a single "
                        f"{label!r} class ({classes.tolist()}): nothing to learn",
                        hint="load more (or more varied) data, or choose a label that varies, e.g. genre")
    code_of = {c: k for k, c in enumerate(classes.tolist())}
    y = np.asarray([code_of.get(v, -1) for v in y_all], dtype=np.int64)  # -1: a class never trained on
    unseen = int((y[test_side] < 0).sum())
    if unseen:
        logger.warning("finetune_transfer: %d test items have a %r class absent from the training items; "
                       "they count as errors", unseen, label)
    test_langs = [train_lang, *(lg for lg in present if lg != train_lang)]
    codes = _lang_codes(tokenizer, present, lang_codes)
    enc = _tokenize(tokenizer, records, codes, max_length)

    acc: dict[int, dict[str, float]] = {}
    curves: dict[int, list[float]] = {}
    for seed in seeds:
        t0 = time.perf_counter()
        run = _run_seed(encoder_src, enc, y, len(classes), train_idx, test_side, seed=seed, steps=steps,
                        batch_size=batch_size, lr=lr, pooling=pooling, device=dev)
        correct = run.pred == y[test_side]
        acc[seed] = {lg: float(correct[langs[test_side] == lg].mean()) for lg in test_langs
                     if (langs[test_side] == lg).any()}
        curves[seed] = run.losses
        logger.info("finetune_transfer %s seed %d: %d steps in %.1f s; accuracy %s", checkpoint, seed, steps,
                    time.perf_counter() - t0, {k: round(v, 3) for k, v in acc[seed].items()})

    base = dict(checkpoint=checkpoint, layer=LAYER, task=label, train_lang=train_lang)
    rows: list[dict[str, Any]] = []

    def add(measure: str, values: dict[int, float], n: int, lang: str) -> None:
        for seed, v in values.items():
            rows.append(make_row(measure=measure, value=v, n=n, lang=lang, seed=seed, **base))
        vs = np.asarray(list(values.values()), dtype=np.float64)
        rows.append(make_row(measure=measure, value=float(vs.mean()), ci_low=float(vs.min()),
                             ci_high=float(vs.max()), n=n, lang=lang, **base))

    tested = [lg for lg in test_langs if lg in acc[seeds[0]]]
    n_of = {lg: int((langs[test_side] == lg).sum()) for lg in tested}
    majority = majority_predictions(y[train_idx], len(test_side))
    for lg in tested:
        add("finetune.accuracy", {s: acc[s][lg] for s in seeds}, n_of[lg], lg)
        m = langs[test_side] == lg
        rows.append(make_row(measure="finetune.accuracy", value=float((majority[m] == y[test_side][m]).mean()),
                             n=n_of[lg], lang=lg, control="majority", **base))
    if train_lang in tested:
        for lg in tested[1:]:
            add("finetune.transfer_gap", {s: acc[s][train_lang] - acc[s][lg] for s in seeds}, n_of[lg], lg)
    else:
        logger.warning("finetune_transfer: no %r items in the test groups, so no transfer_gap rows", train_lang)
    add("finetune.train_loss", {s: float(np.mean(curves[s][-_LOSS_WINDOW:])) for s in seeds}, int(train_idx.size),
        train_lang)
    df = results_frame(rows)
    df.attrs["train_loss"] = curves
    return df
