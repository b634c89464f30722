"""The ``mlm`` stage of the toy family: an encoder-only XLM-R masked LM on the same verses and tokenizer.

The "other multilingual model" of the paper's CKA analysis: ``<s> X </s>`` without a language code (XLM-R
uses none), BERT masking (15 % of the ordinary tokens; 80 % -> <mask>, 10 % -> a random piece, 10 % kept),
every draw from the numpy Generator passed in, so a batch is a function of (seed, stream, step).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, XLMRobertaConfig, XLMRobertaForMaskedLM

from xlprobe.errors import DataError
from xlprobe.toy.batches import IGNORE, Example, TokenizedCorpus, pad_ids
from xlprobe.toy.config import ToyConfig
from xlprobe.toy.data import ParallelCorpus
from xlprobe.toy.evaluate import eval_rows

__all__ = ["MLM_PROB", "build_mlm_model", "mlm_collate", "mlm_loss", "evaluate_mlm", "xlmr_tokenizer"]

#: Share of the ordinary tokens of a verse chosen for prediction (BERT / XLM-R).
MLM_PROB = 0.15


def build_mlm_model(cfg: ToyConfig, vocab_size: int, seed: int) -> XLMRobertaForMaskedLM:
    """A randomly initialised XLM-R masked LM the size of the toy MBart (2 x layers: no decoder), from ``seed``."""
    config = XLMRobertaConfig(
        vocab_size=vocab_size, hidden_size=cfg.d_model, num_hidden_layers=2 * cfg.layers,
        num_attention_heads=cfg.heads, intermediate_size=cfg.ffn, max_position_embeddings=cfg.max_len + 2,
        hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=0.0, type_vocab_size=1,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = XLMRobertaForMaskedLM(config)
    return model


def xlmr_tokenizer(tokenizer: Any) -> Any:
    """The family's tokenizer as XLM-R's class, reading ``<s> X </s>`` as ``mlm`` was trained (no language code).

    Same pieces and ids (the language codes stay in the vocabulary, unused), so ``AutoTokenizer`` on the
    ``mlm`` folder encodes a verse exactly as training did, and xlprobe captures it as it captures XLM-R.
    """
    import copy

    from tokenizers import processors
    from transformers import XLMRobertaTokenizerFast

    backend = copy.deepcopy(tokenizer.backend_tokenizer)
    bos, eos = tokenizer.convert_tokens_to_ids("<s>"), tokenizer.convert_tokens_to_ids("</s>")
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", bos), ("</s>", eos)])
    return XLMRobertaTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                   cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
                                   model_max_length=tokenizer.model_max_length)


def _mask(ids: list[int], rng: np.random.Generator, corpus: TokenizedCorpus, prob: float) -> tuple[list[int], list[int]]:
    """BERT-mask one verse's ids: (inputs, labels), labels IGNORE where nothing is predicted."""
    x = np.asarray(ids, dtype=np.int64)
    chosen = rng.random(len(x)) < prob
    kind = rng.random(len(x))
    random_ids = rng.integers(4, corpus.piece_end, size=len(x))
    inputs = np.where(chosen & (kind < 0.8), corpus.mask_id, x)
    inputs = np.where(chosen & (kind >= 0.8) & (kind < 0.9), random_ids, inputs)
    labels = np.where(chosen, x, IGNORE)
    return inputs.tolist(), labels.tolist()


def mlm_collate(
    examples: Sequence[Example], corpus: TokenizedCorpus, rng: np.random.Generator, *, prob: float = MLM_PROB
) -> dict[str, torch.Tensor]:
    """XLM-R tensors ``<s> X </s>`` with BERT masking of X (specials never masked): inputs, mask, labels."""
    if corpus.piece_end <= 4:
        raise DataError("the tokenized corpus does not say where the ordinary pieces end",
                        hint="build it with xlprobe.toy.recipe.tokenize_corpus")
    srcs, tgts = [], []
    for ex in examples:
        x, y = _mask(list(corpus.ids[ex.src][ex.row]), rng, corpus, prob)
        srcs.append([corpus.bos_id, *x, corpus.eos_id])
        tgts.append([IGNORE, *y, IGNORE])
    input_ids = pad_ids(srcs, corpus.pad_id)
    return {"input_ids": input_ids, "attention_mask": (input_ids != corpus.pad_id).long(),
            "labels": pad_ids(tgts, IGNORE)}


@torch.inference_mode()
def mlm_loss(model: PreTrainedModel, corpus: TokenizedCorpus, rows: Sequence[int], lang: str, *, seed: int,
             batch_size: int = 32) -> float:
    """Mean per-token NLL of the masked tokens of ``lang``'s verses in ``rows`` (fixed masking per seed)."""
    model.eval()
    rng = np.random.default_rng([seed, 98])
    total, count = 0.0, 0
    exs = [Example(r, lang, lang, True) for r in rows if corpus.ids[lang][r]]
    for b in range(0, len(exs), batch_size):
        batch = mlm_collate(exs[b : b + batch_size], corpus, rng)
        labels = batch.pop("labels")
        logits = model(**batch).logits
        total += float(torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(),
                                                         ignore_index=IGNORE, reduction="sum"))
        count += int((labels != IGNORE).sum())
    return total / max(count, 1)


def evaluate_mlm(model: PreTrainedModel, heldout: ParallelCorpus, tokenized: TokenizedCorpus, *, n_verses: int,
                 seed: int, batch_size: int = 32) -> dict:
    """Held-out masked-LM loss per language on ``n_verses`` verses: ``{"mlm_loss": {lang: float}, ...}``."""
    rows_of = {lang: eval_rows(heldout, [lang], n_verses) for lang in tokenized.langs}
    res = {lang: round(mlm_loss(model, tokenized, rows, lang, seed=seed, batch_size=batch_size), 4)
           for lang, rows in rows_of.items()}
    return {"mlm_loss": res, "n_verses": {lang: len(rows) for lang, rows in rows_of.items()}}
