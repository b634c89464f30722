"""Zero-shot cross-lingual transfer by fine-tuning: train a classifier on one language, test on all.

The small-scale form of the protocol of Ji et al. 2024 ("Can Machine Translation Bridge Multilingual
Pretraining and Cross-lingual Transfer Learning?", LREC-COLING; the question "can MT continued
training help zero-shot cross-lingual transfer?"), itself the XTREME / XGLUE protocol of Hu et al.
2020 ("XTREME", ICML) and Conneau et al. 2020 ("XLM-R", ACL): the whole encoder and a linear head
are fine-tuned on labelled data of one language, then tested on every language without seeing any
of their labels. Running it on two checkpoints (the pretrained ``lm`` and its MT-continued ``mt``)
asks whether MT training changes how well a task learnt in English carries over.

Protocol (:func:`finetune_transfer`):

* **Split** once, with ``split_seed``, by :func:`~xlprobe.tasks.splits.group_train_test_split`, on
  whole units (``by``; by default :func:`~xlprobe.tasks.splits.fold_unit`'s choice: chapters for a
  label constant within every book, such as genre or testament, so neighbouring verses of one chapter
  never fall on both sides; parallel groups otherwise). A unit holds every translation of its verses,
  so no translation of a test item is ever trained on. The split depends only on the data, never on
  the seed or the model, so every seed and every checkpoint is trained and tested on the same items
  and their accuracies are paired.
* **Train** on the ``train_lang`` items of the training groups only: a deep copy of the encoder
  (``model.get_encoder()`` of an encoder-decoder, else ``model.base_model``), with a linear head on
  the pooled last encoder state (after the final norm where the model has one), AdamW on every
  encoder parameter and the head, constant learning rate, exactly ``steps`` steps of ``batch_size``
  items (epochs of seeded permutations, an incomplete last batch dropped), cross-entropy loss,
  train mode (dropout active where the model has any). The caller's model is never modified.
* **Test** on every language's items of the test groups (zero-shot for all but ``train_lang``).

Pooling reads the text's own tokens: padding and special tokens (language code, ``</s>``) are left
out, as in :mod:`xlprobe.hooks.pooling`; the encoder itself attends to every non-pad token.

Two heads (``head=``, :data:`HEADS`): ``encoder-mean``, the pooled last encoder state with the encoder
tuned (the XTREME protocol; rows ``layer="encoder.last"``), and ``decoder-eos``, the decoder's last
state at the source's final ``</s>`` with the decoder fed the source shifted right and the whole
encoder-decoder tuned (what ``MBartForSequenceClassification`` reads; rows ``layer="decoder.eos"``).

Rows (``layer`` as above, ``task`` = the label, ``train_lang`` and ``readout`` (the head) as extra columns):

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

The three names are registered as rows of a ``table`` producer (see :mod:`xlprobe.registry`): the
runner cannot feed this from the store, it needs a model, a tokenizer and texts.
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

from xlprobe.errors import ConfigError, DataError
from xlprobe.hooks.plan import CapturePlan, as_dataset, plan_capture
from xlprobe.hooks.pooling import pool
from xlprobe.probes.arrays import check_float, check_int
from xlprobe.probes.controls import majority_predictions
from xlprobe.registry import register_measure
from xlprobe.results import make_row, results_frame
from xlprobe.tasks.splits import fold_unit, group_ids, group_train_test_split
from xlprobe.types import Dataset, Record

__all__ = ["finetune_transfer", "POOLINGS", "LAYER", "HEADS"]

logger = logging.getLogger(__name__)

#: Poolings of the last encoder state that the head reads.
POOLINGS = ("mean", "max", "first", "last")
#: ``layer`` of every row: the last encoder state, the representation that is fine-tuned.
LAYER = "encoder.last"
#: What the classification head reads, and the ``layer`` its rows carry: the pooled last encoder state
#: (the XTREME protocol), or the decoder's state at the source's final ``</s>``, fed the source shifted
#: right, which is what ``MBartForSequenceClassification`` (and BART's) reads.
HEADS = {"encoder-mean": LAYER, "decoder-eos": "decoder.eos"}
#: Steps averaged into the ``finetune.train_loss`` row.
_LOSS_WINDOW = 10


@dataclass(frozen=True)
class _SeedRun:
    """What one seed gives: test predictions (class codes) and the loss of every step."""

    pred: np.ndarray
    losses: list[float]


# ----------------------------------------------------------------------------------------- checking
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


def _trunk(model: Any, head: str) -> Any:
    """The module the head reads: the encoder, or the whole encoder-decoder base for ``decoder-eos``."""
    from torch import nn

    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module (a transformers model); got {type(model).__name__}")
    config = getattr(model, "config", None)
    seq2seq = getattr(config, "is_encoder_decoder", False)
    if head == "decoder-eos":
        if not seq2seq or getattr(config, "eos_token_id", None) is None:
            raise ConfigError(f"head='decoder-eos' needs an encoder-decoder with an eos token; "
                              f"{type(model).__name__} is not one", hint="use head='encoder-mean'")
        return getattr(model, "base_model", model)
    if seq2seq and hasattr(model, "get_encoder"):
        return model.get_encoder()
    return getattr(model, "base_model", model)


# ------------------------------------------------------------------------------------------ training
def _states(encoder: Any, ids: Any, att: Any) -> Any:
    """The last hidden state of ``encoder`` (an encoder, or an encoder-decoder base: its decoder's)."""
    out = encoder(input_ids=ids, attention_mask=att)
    h = getattr(out, "last_hidden_state", None)
    if h is None:
        h = out[0]
    return h


def _features(trunk: Any, src: Any, head: str, pooling: str, eos_id: int | None) -> Any:
    """What the linear head reads for a batch: the pooled encoder state, or the decoder state at the final eos.

    For ``decoder-eos`` the base model builds its decoder input from the source (shifted right, as
    ``MBartForSequenceClassification`` does), and the state at the source's last ``</s>`` is read.
    """
    import torch

    from xlprobe.hooks.pooling import last_index

    try:
        states = _states(trunk, src.ids, src.attn)
    except ValueError as err:
        raise ConfigError(f"head={head!r}: {type(trunk).__name__} cannot build its decoder input from the source "
                          f"({err})", hint="use head='encoder-mean'") from err
    if head == "encoder-mean":
        return pool(states, src.keep, pooling)
    eos = src.ids == eos_id
    if not bool(eos.any(dim=1).all()):
        raise DataError("head='decoder-eos': a text has no </s> token to read",
                        hint="keep the tokenizer's special tokens (they are added by default)")
    return states[torch.arange(states.shape[0], device=states.device), last_index(eos)].float()


def _batches(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Endless batches: epochs of seeded permutations, the incomplete last batch dropped (all n when n < batch)."""
    size = min(batch_size, n)
    while True:
        perm = rng.permutation(n)
        for s in range(0, n - size + 1, size):
            yield perm[s:s + size]


def _run_seed(encoder_src: Any, plan: CapturePlan, y: np.ndarray, n_classes: int, train_idx: np.ndarray,
              test_idx: np.ndarray, *, seed: int, steps: int, batch_size: int, lr: float, pooling: str,
              device: Any, head_kind: str = "encoder-mean", eos_id: int | None = None) -> _SeedRun:
    """Fine-tune a copy of the trunk plus a linear head with ``seed``; predict the test items."""
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
            src, _ = plan.batch(train_idx[:1], device)
            d = _features(encoder, src, head_kind, pooling, eos_id).shape[-1]
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
            src, _ = plan.batch(b, device)
            logits = head(_features(encoder, src, head_kind, pooling, eos_id))
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
        order = np.argsort(plan.src.lengths[test_idx], kind="stable")  # little padding
        with torch.inference_mode():
            for s in range(0, len(order), batch_size):
                pos = order[s:s + batch_size]
                src, _ = plan.batch(test_idx[pos], device)
                pred[pos] = head(_features(encoder, src, head_kind, pooling, eos_id)).argmax(-1).cpu().numpy()
    return _SeedRun(pred, losses)


# -------------------------------------------------------------------------------------------- public
@register_measure("finetune.accuracy", kind="table", direction="higher_better",
                  doc="Accuracy on each language after fine-tuning the encoder on one language's labels.")
@register_measure("finetune.transfer_gap", kind="table", direction="lower_better",
                  doc="Fine-tuned accuracy on the training language minus accuracy on each other language.")
@register_measure("finetune.train_loss", kind="table", direction="lower_better",
                  doc="Mean training loss of the last fine-tuning steps (the fit the accuracies rest on).")
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
    head: str = "encoder-mean",
    test_size: float = 0.3,
    lang_codes: Mapping[str, str] | None = None,
    device: str = "cpu",
    split_seed: int = 0,
    by: str | None = None,
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
        How the ``encoder-mean`` head reads the last encoder state, over the text's own tokens.
    head : {"encoder-mean", "decoder-eos"}, default "encoder-mean"
        What the linear head reads and what is fine-tuned: the pooled last encoder state, the encoder
        tuned (rows ``layer="encoder.last"``); or, for an encoder-decoder, the decoder's last state at
        the source's final ``</s>`` with the decoder fed the source shifted right, encoder and decoder
        tuned (``layer="decoder.eos"``): what ``MBartForSequenceClassification`` reads, and MT
        training changes the decoder most.
    test_size : float, default 0.3
        Fraction of the records in the test groups.
    lang_codes : mapping, optional
        Dataset language -> tokenizer code, ahead of the automatic mapping (``fr`` -> ``fr_XX``), as for
        :func:`xlprobe.hooks.extract`.
    device : str, default "cpu"
        Torch device of the training ("auto": CUDA when available).
    by : str, optional
        The split unit (``"group"``, ``"chapter"``, ``"book"``); default: chapters for a label constant
        within every book, parallel groups otherwise (:func:`~xlprobe.tasks.splits.fold_unit`). Written
        in the rows' ``folds`` column.
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
        A bad option.
    LanguageCodeError
        A language the tokenizer has no code for (map it with ``lang_codes``), or a code in
        ``lang_codes`` that it does not know.

    Examples
    --------
    >>> from xlprobe import toy  # doctest: +SKIP
    >>> from xlprobe.tasks.bible import load_bible  # doctest: +SKIP
    >>> model, tok = toy.load("mt")  # doctest: +SKIP
    >>> df = finetune_transfer(model, tok, load_bible(["en", "fr", "de"], limit=500), label="genre")  # doctest: +SKIP
    >>> df[df.seed.isna() & (df.measure == "finetune.accuracy")]  # doctest: +SKIP
    """
    records = as_dataset(data).records
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
    if head not in HEADS:
        raise ConfigError(f"unknown head {head!r}", hint=f"valid: {', '.join(HEADS)}")
    dev = _device(device)
    encoder_src = _trunk(model, head)

    langs = np.asarray([r.lang for r in records], dtype=object)
    present = sorted(set(langs.tolist()))
    if train_lang not in present:
        raise DataError(f"train_lang {train_lang!r} has no items in the data", hint=f"languages present: {present}")
    unit, why = fold_unit(records, label, by, y_all)
    logger.info("finetune_transfer: split by %s (%s)", unit, why)
    n_groups = len(set(group_ids(records, unit).tolist()))
    if n_groups < 2:
        raise DataError(f"too few groups to split: the data has {n_groups} {unit} unit(s)",
                        hint="load more verses (a higher limit), or split by a finer unit (by='group')")
    train_side, test_side = group_train_test_split(records, test_size=test_size, by=unit, seed=split_seed)
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
    plan = plan_capture(model, tokenizer, records, sides=("encoder",), pooling=pooling, poolings=POOLINGS,
                        max_length=max_length, lang_codes=lang_codes)

    acc: dict[int, dict[str, float]] = {}
    curves: dict[int, list[float]] = {}
    for seed in seeds:
        t0 = time.perf_counter()
        run = _run_seed(encoder_src, plan, y, len(classes), train_idx, test_side, seed=seed, steps=steps,
                        batch_size=batch_size, lr=lr, pooling=pooling, device=dev, head_kind=head,
                        eos_id=getattr(model.config, "eos_token_id", None))
        correct = run.pred == y[test_side]
        acc[seed] = {lg: float(correct[langs[test_side] == lg].mean()) for lg in test_langs
                     if (langs[test_side] == lg).any()}
        curves[seed] = run.losses
        logger.info("finetune_transfer %s seed %d: %d steps in %.1f s; accuracy %s", checkpoint, seed, steps,
                    time.perf_counter() - t0, {k: round(v, 3) for k, v in acc[seed].items()})

    base = dict(checkpoint=checkpoint, layer=HEADS[head], task=label, train_lang=train_lang, readout=head,
                folds=unit)
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
