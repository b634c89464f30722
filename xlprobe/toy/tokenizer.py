"""An mBART-50-style tokenizer trained here: Unigram pieces + the 52 mBART-50 language codes + <mask>.

transformers' ``MBart50Tokenizer`` rebuilds its vocabulary on load the way its sentencepiece converter
does: it drops the first three entries (sentencepiece's ``<unk> <s> </s>``), puts fairseq's
``<s> <pad> </s> <unk>`` at ids 0-3, appends the language codes and ``<mask>``, and keeps only a
double-space normaliser. So the trainer gets sentencepiece's three specials first, the texts are
NFKC-normalised before tokenisation (``data.clean_text``), and the ids used for training are those of
the tokenizer *as reloaded* (they differ from the in-memory wrapper's ids by that reordering).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import AutoTokenizer, MBart50Tokenizer, PreTrainedTokenizerBase

from xlprobe.errors import DataError, LanguageCodeError

__all__ = ["SPECIALS", "train_unigram", "wrap_mbart50", "build_tokenizer", "load_tokenizer", "lang_id"]

log = logging.getLogger(__name__)

#: The ids 0-3 of the reloaded tokenizer, in fairseq / mBART order (<s>=0, <pad>=1, </s>=2, <unk>=3).
SPECIALS: tuple[str, ...] = ("<s>", "<pad>", "</s>", "<unk>")
#: What the Unigram trainer gets first: sentencepiece's order, which the mBART-50 class expects to drop.
_SPM_SPECIALS: tuple[str, ...] = ("<unk>", "<s>", "</s>")


def train_unigram(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train a ``tokenizers`` Unigram model (NFKC, Metaspace) with sentencepiece's three specials first."""
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=list(_SPM_SPECIALS), unk_token="<unk>", show_progress=False
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return _canonical(tok)


def _canonical(tok: Tokenizer) -> Tokenizer:
    """Order pieces by (rounded score, piece) so reruns that agree on the pieces agree on every id.

    The Unigram trainer sums in hash-map order, so scores differ across runs in the last bits and tied
    pieces swap ids; rounding and sorting removes that. (The piece set itself can still differ at the
    pruning boundary in rare cases, which is why a run trains its tokenizer once and reuses it.)
    """
    vocab = json.loads(tok.to_str())["model"]["vocab"]
    head, rest = vocab[: len(_SPM_SPECIALS)], vocab[len(_SPM_SPECIALS):]
    rest = sorted(((p, round(sc, 8)) for p, sc in rest), key=lambda ps: (-ps[1], ps[0]))
    # the trainer appends required characters with scores min - 1e-4 * i in hash order: sort that tail
    singles = len(rest)
    while singles > 0 and len(rest[singles - 1][0]) == 1:
        singles -= 1
    k = next((i for i in range(singles, len(rest) - 1) if abs(rest[i][1] - rest[i + 1][1] - 1e-4) < 1e-7),
             len(rest))
    tail = rest[k:]
    rest = rest[:k] + list(zip(sorted(p for p, _ in tail), [sc for _, sc in tail]))
    out = Tokenizer(models.Unigram([tuple(x) for x in head] + rest, unk_id=0, byte_fallback=False))
    out.normalizer, out.pre_tokenizer, out.decoder = tok.normalizer, tok.pre_tokenizer, tok.decoder
    out.add_special_tokens(list(_SPM_SPECIALS))
    return out


def wrap_mbart50(tok: Tokenizer, src_lang: str = "en_XX", tgt_lang: str = "fr_XX") -> MBart50Tokenizer:
    """Wrap a trained ``Tokenizer`` as transformers' mBART-50 tokenizer (codes + <mask> appended)."""
    # bos_token is not a parameter of the class in transformers 5, but the hub checkpoints carry it in their
    # config; without it tokenizer.bos_token_id is None where mBART-50 has 0
    return MBart50Tokenizer(tokenizer_object=tok, src_lang=src_lang, tgt_lang=tgt_lang, bos_token="<s>")


def load_tokenizer(folder: str | Path) -> PreTrainedTokenizerBase:
    """Load a saved toy tokenizer through ``AutoTokenizer`` (the way users will)."""
    return AutoTokenizer.from_pretrained(str(folder))


def build_tokenizer(texts: Iterable[str], vocab_size: int, folder: str | Path) -> PreTrainedTokenizerBase:
    """Train, wrap, save to ``folder`` and return the tokenizer *as reloaded* from it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    wrap_mbart50(train_unigram(texts, vocab_size)).save_pretrained(str(folder))
    tok = load_tokenizer(folder)
    got = [tok.convert_tokens_to_ids(s) for s in SPECIALS]
    if got != [0, 1, 2, 3] or tok.unk_token_id != 3:
        raise DataError(f"reloaded tokenizer has specials {SPECIALS} at ids {got}, expected [0, 1, 2, 3]",
                        hint="transformers' MBart50Tokenizer changed its vocabulary layout; see wrap_mbart50")
    log.info("tokenizer saved to %s: %d ids (%s)", folder, len(tok), type(tok).__name__)
    return tok


def lang_id(tokenizer: PreTrainedTokenizerBase, code: str) -> int:
    """The id of an mBART-50 language code such as ``fr_XX``; raises for unknown codes."""
    idx = tokenizer.convert_tokens_to_ids(code)
    if code not in getattr(tokenizer, "lang_code_to_id", {code: idx}) or idx == tokenizer.unk_token_id:
        raise LanguageCodeError(
            f"{code!r} is not a language code of this tokenizer",
            hint="mBART-50 codes look like 'en_XX', 'de_DE', 'ru_RU'",
        )
    return int(idx)
