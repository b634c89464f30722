"""Held-out evaluation of toy checkpoints: chrF per translation direction and denoising loss."""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
import sacrebleu
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from xlprobe.toy.batches import Example, TokenizedCorpus, collate
from xlprobe.toy.data import LANG_CODES, ParallelCorpus
from xlprobe.toy.tokenizer import lang_id

__all__ = ["translate", "chrf", "eval_rows", "denoising_loss", "evaluate_model"]

log = logging.getLogger(__name__)


@torch.inference_mode()
def translate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    src_lang: str,
    tgt_lang: str,
    *,
    batch_size: int = 32,
    num_beams: int = 1,
    max_length: int = 128,
    no_repeat_ngram_size: int = 0,
) -> list[str]:
    """Translate ``texts`` (language names such as 'en') with the mBART-50 conventions, batched."""
    model.eval()
    tokenizer.src_lang = LANG_CODES[src_lang]
    forced = lang_id(tokenizer, LANG_CODES[tgt_lang])
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out: dict[int, str] = {}
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True,
                        max_length=max_length)
        gen = model.generate(
            **enc, forced_bos_token_id=forced, num_beams=num_beams, do_sample=False,
            no_repeat_ngram_size=no_repeat_ngram_size,
            max_new_tokens=min(max_length, int(enc["input_ids"].shape[1] * 1.6) + 8),
        )
        for i, text in zip(idx, tokenizer.batch_decode(gen, skip_special_tokens=True)):
            out[i] = text.strip()
    return [out[i] for i in range(len(texts))]


def chrf(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus chrF (sacrebleu defaults: chrF2, character 6-grams)."""
    return float(sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score)


def eval_rows(corpus: ParallelCorpus, langs: Sequence[str], n: int) -> list[int]:
    """Up to ``n`` rows evenly spread over the corpus where every one of ``langs`` has a text."""
    rows = [i for i in range(len(corpus.keys)) if all(corpus.texts[lang][i] for lang in langs)]
    if len(rows) <= n:
        return rows
    return [rows[int(i)] for i in np.linspace(0, len(rows) - 1, n).round().astype(int)]


@torch.inference_mode()
def denoising_loss(
    model: PreTrainedModel,
    corpus: TokenizedCorpus,
    rows: Sequence[int],
    lang: str,
    *,
    seed: int,
    batch_size: int = 32,
    mask_ratio: float = 0.35,
    poisson_lambda: float = 3.5,
) -> float:
    """Mean per-token NLL of reconstructing ``[lang] text </s>`` from its infilled version (fixed noise)."""
    model.eval()
    rng = np.random.default_rng([seed, 99])
    total, count = 0.0, 0
    exs = [Example(r, lang, lang, True) for r in rows if corpus.ids[lang][r]]
    for b in range(0, len(exs), batch_size):
        batch = collate(exs[b : b + batch_size], corpus, rng, mask_ratio=mask_ratio,
                        poisson_lambda=poisson_lambda)
        labels = batch.pop("labels")
        logits = model(**batch).logits
        nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(),
                                                ignore_index=-100, reduction="sum")
        total += float(nll)
        count += int((labels != -100).sum())
    return total / max(count, 1)


def evaluate_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    heldout: ParallelCorpus,
    tokenized: TokenizedCorpus,
    directions: Sequence[tuple[str, str]],
    *,
    n_verses: int,
    n_denoise: int,
    seed: int,
    batch_size: int = 32,
    num_beams: int = 1,
    max_length: int = 128,
    no_repeat_ngram_size: int = 0,
) -> dict:
    """chrF per direction on ``n_verses`` held-out verses, denoising loss per language, with samples."""
    t0 = time.time()
    res: dict = {"chrf": {}, "denoise_loss": {}, "samples": {}, "n_verses": {}}
    for src, tgt in directions:
        rows = eval_rows(heldout, [src, tgt], n_verses)
        srcs = [heldout.texts[src][r] for r in rows]
        refs = [heldout.texts[tgt][r] for r in rows]
        hyps = translate(model, tokenizer, srcs, src, tgt, batch_size=batch_size, num_beams=num_beams,
                         max_length=max_length, no_repeat_ngram_size=no_repeat_ngram_size)
        name = f"{src}-{tgt}"
        res["chrf"][name] = round(chrf(hyps, refs), 2)
        res["n_verses"][name] = len(rows)
        res["samples"][name] = [{"key": heldout.keys[r], "src": s, "ref": f, "hyp": h}
                                for r, s, f, h in list(zip(rows, srcs, refs, hyps))[:3]]
        log.info("  chrF %s = %.2f (%d verses)", name, res["chrf"][name], len(rows))
    for lang in tokenized.langs:
        rows = eval_rows(heldout, [lang], n_denoise)
        res["denoise_loss"][lang] = round(denoising_loss(model, tokenized, rows, lang, seed=seed,
                                                         batch_size=batch_size), 4)
    res["seconds"] = round(time.time() - t0, 1)
    return res
