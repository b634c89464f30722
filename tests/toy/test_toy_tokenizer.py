"""The toy tokenizer: mBART-50 conventions and an exact save / reload round trip on ids."""
from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from xlprobe.errors import LanguageCodeError
from xlprobe.toy.data import LANG_CODES, load_corpus
from xlprobe.toy.tokenizer import SPECIALS, build_tokenizer, lang_id, train_unigram, wrap_mbart50


@pytest.fixture(scope="module")
def corpus():
    """Ruth (8) and Jonah (32) in every toy language."""
    return load_corpus(books=[8, 32])


@pytest.fixture(scope="module")
def texts(corpus) -> list[str]:
    """All non-empty texts of the corpus fixture."""
    return [t for lang in corpus.langs for t in corpus.texts[lang] if t]


@pytest.fixture(scope="module")
def saved(tmp_path_factory, texts):
    """(in-memory wrapped tokenizer, reloaded tokenizer) trained on the fixture texts."""
    raw = train_unigram(texts, vocab_size=600)
    folder = tmp_path_factory.mktemp("tok")
    reloaded = build_tokenizer(texts, 600, folder)
    return wrap_mbart50(raw), reloaded, folder


def test_reload_is_mbart50_class(saved) -> None:
    """AutoTokenizer loads the folder as transformers' mBART-50 tokenizer."""
    _, reloaded, folder = saved
    assert type(AutoTokenizer.from_pretrained(str(folder))).__name__ == "MBart50Tokenizer"
    assert type(reloaded).__name__ == "MBart50Tokenizer"


def test_round_trip_ids(saved, corpus, tmp_path) -> None:
    """Saving the reloaded tokenizer and loading it again gives the same ids, for every language code."""
    _, reloaded, _ = saved
    reloaded.save_pretrained(str(tmp_path))
    again = AutoTokenizer.from_pretrained(str(tmp_path))
    assert len(again) == len(reloaded) and again.get_vocab() == reloaded.get_vocab()
    for lang, code in LANG_CODES.items():
        sample = [t for t in corpus.texts[lang] if t]
        reloaded.src_lang = again.src_lang = reloaded.tgt_lang = again.tgt_lang = code
        assert again(sample)["input_ids"] == reloaded(sample)["input_ids"]
        assert again(text_target=sample)["input_ids"] == reloaded(text_target=sample)["input_ids"]


def test_reload_keeps_the_segmentation(saved, corpus) -> None:
    """The reloaded tokenizer splits text into the same pieces as the trained one (only ids move)."""
    mem, reloaded, _ = saved
    for lang in LANG_CODES:
        for text in [t for t in corpus.texts[lang] if t][:50]:
            a = mem.convert_ids_to_tokens(mem(text, add_special_tokens=False)["input_ids"])
            b = reloaded.convert_ids_to_tokens(reloaded(text, add_special_tokens=False)["input_ids"])
            assert a == b
            assert reloaded.decode(reloaded(text)["input_ids"], skip_special_tokens=True) == text


def test_special_ids_and_codes(saved) -> None:
    """<s> <pad> </s> <unk> are 0-3; the 52 codes then <mask> follow the trained vocabulary."""
    _, tok, _ = saved
    assert [tok.convert_tokens_to_ids(s) for s in SPECIALS] == [0, 1, 2, 3]
    assert (tok.bos_token_id, tok.cls_token_id, tok.pad_token_id, tok.eos_token_id) == (0, 0, 1, 2)
    assert len(tok.lang_code_to_id) == 52
    ids = sorted(tok.lang_code_to_id.values())
    assert ids == list(range(ids[0], ids[0] + 52))
    assert tok.mask_token_id == len(tok) - 1 == ids[-1] + 1
    assert tok.unk_token_id == 3 and len(set(tok.get_vocab().values())) == len(tok)
    for code in LANG_CODES.values():
        assert lang_id(tok, code) == tok.lang_code_to_id[code]


def test_language_code_conventions(saved) -> None:
    """Source and target are both encoded as ``[lang_code] text </s>``."""
    _, tok, _ = saved
    tok.src_lang, tok.tgt_lang = "fr_XX", "de_DE"
    src = tok("Au commencement.")["input_ids"]
    tgt = tok(text_target="Im Anfang.")["input_ids"]
    assert src[0] == lang_id(tok, "fr_XX") and src[-1] == tok.eos_token_id
    assert tgt[0] == lang_id(tok, "de_DE") and tgt[-1] == tok.eos_token_id
    bare = tok("Au commencement.", add_special_tokens=False)["input_ids"]
    assert src == [src[0], *bare, tok.eos_token_id]
    assert tok.decode(src, skip_special_tokens=True) == "Au commencement."


def test_unknown_code_raises(saved) -> None:
    """A code the tokenizer lacks is a LanguageCodeError with a hint."""
    _, tok, _ = saved
    with pytest.raises(LanguageCodeError, match="xx_YY"):
        lang_id(tok, "xx_YY")


def test_tokenizer_training_is_canonical(texts) -> None:
    """Training twice on the same texts gives the same vocabulary and ids (pieces sorted by score)."""
    a = train_unigram(texts, vocab_size=600).get_vocab()
    b = train_unigram(texts, vocab_size=600).get_vocab()
    assert a == b
