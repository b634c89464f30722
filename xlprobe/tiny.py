"""Tiny random models of every family row, with tokenizers trained here on public-domain verses.

For tests, benchmarks and the offline quickstart: ``build("mbart")`` returns ``(model, tokenizer)`` built
from a config (random weights, seeded), with a small Unigram tokenizer trained on a few hundred verses of
the shippable Bible translations, wrapped in the family's own tokenizer class where that class accepts a
trained tokenizer (mBART-50, NLLB), else a generic fast tokenizer with the family's special-token layout.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from xlprobe.errors import ConfigError

__all__ = ["FAMILY_NAMES", "build", "build_tokenizer", "save", "corpus_sample", "skeleton"]

#: Names accepted by :func:`build` (``tiny:<name>`` on the command line).
FAMILY_NAMES = ("mbart", "bart", "marian", "m2m100", "nllb", "t5", "mt5", "bert", "xlmr", "gpt2")

_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
_MARIAN_TARGETS = [">>fra<<", ">>deu<<", ">>spa<<"]
_SIZE = dict(d=32, layers=2, heads=2, ffn=64, positions=512)


def corpus_sample(n_per_lang: int = 200, translations: tuple[str, ...] = ("k", "l", "e", "v")) -> list[str]:
    """Verses of shippable translations (John and Ruth) to train a tiny tokenizer on."""
    from xlprobe.tasks.bible import read_verses

    out: dict[str, list[str]] = {t: [] for t in translations}
    for v in read_verses(list(translations), books=[8, 43]):
        if len(out[v.translation]) < n_per_lang and v.text.strip():
            out[v.translation].append(v.text)
    return [t for texts in out.values() for t in texts]


def _unigram(vocab_size: int, extra_specials: list[str]) -> Any:
    """A deterministic Unigram tokenizer (Metaspace) over the corpus sample.

    The pieces are counted here (every character, then the most frequent ``▁word`` pieces, ties broken
    alphabetically) instead of by the tokenizers trainer, whose result changes from run to run.
    """
    import math
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    texts = corpus_sample()
    words = Counter("\u2581" + w for t in texts for w in t.split())
    chars = Counter(c for t in texts for c in t.replace(" ", "\u2581"))
    pieces: dict[str, float] = {}
    total = sum(words.values()) + sum(chars.values())
    for c, k in sorted(chars.items(), key=lambda kv: (-kv[1], kv[0])):
        pieces[c] = math.log(k / total) - 10.0  # characters are the fallback, never preferred
    room = vocab_size - len(_SPECIALS) - len(extra_specials) - len(pieces)
    for w, k in sorted(words.items(), key=lambda kv: (-kv[1], kv[0]))[:max(room, 0)]:
        pieces[w] = math.log(k / total)
    vocab = [(t, 0.0) for t in _SPECIALS + extra_specials] + list(pieces.items())
    tok = Tokenizer(models.Unigram(vocab, unk_id=_SPECIALS.index("<unk>"), byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.add_special_tokens(_SPECIALS + extra_specials)
    return tok


def _generic(tok: Any, template: str, **specials: str) -> Any:
    """Wrap a trained tokenizer as a fast tokenizer with a post-processing template."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    names = sorted({t for t in template.split() if t.startswith("<") and t.endswith(">")})
    tok.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(t, tok.token_to_id(t)) for t in names])
    return PreTrainedTokenizerFast(tokenizer_object=tok, **specials)


def build_tokenizer(family: str, vocab_size: int = 1000) -> Any:
    """A small tokenizer with the family's conventions (language codes where the family has them)."""
    if family == "mbart":
        from transformers import MBart50TokenizerFast

        return MBart50TokenizerFast(tokenizer_object=_unigram(vocab_size, []), src_lang="en_XX", tgt_lang="fr_XX")
    if family in ("m2m100", "nllb"):
        from transformers import NllbTokenizerFast

        return NllbTokenizerFast(tokenizer_object=_unigram(vocab_size, []), src_lang="eng_Latn", tgt_lang="fra_Latn")
    base = dict(unk_token="<unk>", pad_token="<pad>", eos_token="</s>")
    if family == "marian":
        tok = _unigram(vocab_size, _MARIAN_TARGETS)
        return _generic(tok, "$A </s>", additional_special_tokens=_MARIAN_TARGETS, **base)
    if family in ("t5", "mt5"):
        return _generic(_unigram(vocab_size, []), "$A </s>", **base)
    if family in ("bert", "xlmr", "bart"):
        return _generic(_unigram(vocab_size, []), "<s> $A </s>", bos_token="<s>", cls_token="<s>", sep_token="</s>",
                        **base)
    if family == "gpt2":
        return _generic(_unigram(vocab_size, []), "$A", bos_token="<s>", **base)
    raise ConfigError(f"unknown tiny family {family!r}", hint=f"valid: {', '.join(FAMILY_NAMES)}")


def _config(family: str, vocab: int, tok: Any) -> Any:
    """A tiny config of ``family`` sized to the tokenizer."""
    import transformers as tf

    d, n, h, f, p = (_SIZE[k] for k in ("d", "layers", "heads", "ffn", "positions"))
    ids = dict(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    seq2seq = dict(vocab_size=vocab, d_model=d, encoder_layers=n, decoder_layers=n, encoder_attention_heads=h,
                   decoder_attention_heads=h, encoder_ffn_dim=f, decoder_ffn_dim=f, max_position_embeddings=p,
                   decoder_start_token_id=tok.eos_token_id, **ids)
    if family == "mbart":
        return tf.MBartConfig(scale_embedding=True, **seq2seq)
    if family == "bart":
        return tf.BartConfig(**seq2seq)
    if family == "marian":
        return tf.MarianConfig(decoder_vocab_size=vocab, **{**seq2seq, "decoder_start_token_id": tok.pad_token_id})
    if family in ("m2m100", "nllb"):
        return tf.M2M100Config(**seq2seq)
    t5 = dict(vocab_size=vocab, d_model=d, d_kv=d // h, d_ff=f, num_layers=n, num_decoder_layers=n, num_heads=h,
              decoder_start_token_id=tok.pad_token_id, **ids)
    if family == "t5":
        return tf.T5Config(**t5)
    if family == "mt5":
        return tf.MT5Config(**t5)
    enc = dict(vocab_size=vocab, hidden_size=d, num_hidden_layers=n, num_attention_heads=h, intermediate_size=f,
               max_position_embeddings=p, pad_token_id=tok.pad_token_id)
    if family == "bert":
        return tf.BertConfig(**enc)
    if family == "xlmr":
        return tf.XLMRobertaConfig(**{**enc, "max_position_embeddings": p + 2})
    if family == "gpt2":
        return tf.GPT2Config(vocab_size=vocab, n_embd=d, n_layer=n, n_head=h, n_positions=p, **ids)
    raise ConfigError(f"unknown tiny family {family!r}", hint=f"valid: {', '.join(FAMILY_NAMES)}")


_MODEL_CLASSES = {
    "mbart": "MBartForConditionalGeneration", "bart": "BartForConditionalGeneration", "marian": "MarianMTModel",
    "m2m100": "M2M100ForConditionalGeneration", "nllb": "M2M100ForConditionalGeneration",
    "t5": "T5ForConditionalGeneration", "mt5": "MT5ForConditionalGeneration", "bert": "BertModel",
    "xlmr": "XLMRobertaModel", "gpt2": "GPT2LMHeadModel",
}


def build(family: str, *, seed: int = 0, tokenizer: Any = None) -> tuple[torch.nn.Module, Any]:
    """A tiny seeded random model of ``family`` and its tokenizer (eval mode, float32, CPU)."""
    import transformers as tf

    if family not in _MODEL_CLASSES:
        raise ConfigError(f"unknown tiny family {family!r}", hint=f"valid: {', '.join(FAMILY_NAMES)}")
    tok = tokenizer if tokenizer is not None else build_tokenizer(family)
    cfg = _config(family, len(tok), tok)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = getattr(tf, _MODEL_CLASSES[family])(cfg)
    finally:
        torch.random.set_rng_state(state)
    model.eval()
    return model, tok


def skeleton(family: str, vocab_size: int = 1000) -> torch.nn.Module:
    """The family's tiny model without weights (on the meta device), for sizes and shapes at no cost."""
    from types import SimpleNamespace

    import transformers as tf

    if family not in _MODEL_CLASSES:
        raise ConfigError(f"unknown tiny family {family!r}", hint=f"valid: {', '.join(FAMILY_NAMES)}")
    cfg = _config(family, vocab_size, SimpleNamespace(pad_token_id=1, eos_token_id=2))
    with torch.device("meta"):
        return getattr(tf, _MODEL_CLASSES[family])(cfg)


def save(family: str, folder: str | Path, *, seed: int = 0) -> Path:
    """Build a tiny model and save model + tokenizer to ``folder`` (loadable with Auto classes)."""
    model, tok = build(family, seed=seed)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
