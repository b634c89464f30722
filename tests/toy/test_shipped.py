"""The toy family shipped in the package: loadable every way a user would, mBART-50's conventions, MT > LM."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import (
    AutoModelForMaskedLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    MBart50TokenizerFast,
    MBartForConditionalGeneration,
    XLMRobertaForMaskedLM,
    XLMRobertaModel,
)
from typer.testing import CliRunner

from xlprobe import toy
from xlprobe.cli import app
from xlprobe.errors import ModelNotFoundError
from xlprobe.loading import load_model
from xlprobe.toy.data import HELDOUT_BOOKS, LANG_CODES, load_corpus
from xlprobe.toy.evaluate import chrf, translate
from xlprobe.toy.shipped import ENCODER_NAMES

MBART50_CODES = ("ar_AR cs_CZ de_DE en_XX es_XX et_EE fi_FI fr_XX gu_IN hi_IN it_IT ja_XX kk_KZ ko_KR lt_LT lv_LV "
                 "my_MM ne_NP nl_XX ro_RO ru_RU si_LK tr_TR vi_VN zh_CN af_ZA az_AZ bn_IN fa_IR he_IL hr_HR id_ID "
                 "ka_GE km_KH mk_MK ml_IN mn_MN mr_IN pl_PL ps_AF pt_XX sv_SE sw_KE ta_IN te_IN th_TH tl_XX uk_UA "
                 "ur_PK xh_ZA gl_ES sl_SI").split()


SEQ2SEQ = tuple(n for n in toy.NAMES if n not in ENCODER_NAMES)


@pytest.fixture(scope="module")
def family():
    return {name: toy.load(name) for name in SEQ2SEQ}


def test_every_checkpoint_loads_through_the_helpers_and_auto_classes(family):
    for name, (model, tok) in family.items():
        assert isinstance(model, MBartForConditionalGeneration) and not model.training
        assert next(model.parameters()).dtype == torch.float32
        assert isinstance(tok, MBart50TokenizerFast)
        folder = toy.path(name)
        auto = AutoModelForSeq2SeqLM.from_pretrained(str(folder))
        assert next(auto.parameters()).dtype == torch.float16  # as stored
        assert type(AutoTokenizer.from_pretrained(str(folder))) is MBart50TokenizerFast
        a = model.state_dict()
        for k, v in auto.state_dict().items():
            assert torch.equal(a[k], v.float()), k
    m, t = load_model("toy:mt")
    assert m.config._name_or_path == "toy:mt" and len(t) == len(family["mt"][1])


def test_the_encoder_only_mlm_loads_as_xlm_r_and_reads_verses_as_it_trained():
    model, tok = toy.load("mlm")
    assert isinstance(model, XLMRobertaModel) and not model.training  # bare encoder, as XLM-R from the hub
    head = AutoModelForMaskedLM.from_pretrained(str(toy.path("mlm")))
    assert isinstance(head, XLMRobertaForMaskedLM)
    a = model.state_dict()
    assert all(torch.equal(a[k], v.float()) for k, v in head.roberta.state_dict().items() if k in a)
    _, mbart_tok = toy.load("lm")
    assert tok.get_vocab() == mbart_tok.get_vocab()  # one tokenizer for the whole family
    ids = tok("In the beginning was the Word.")["input_ids"]
    assert ids == [0] + mbart_tok("In the beginning was the Word.", add_special_tokens=False)["input_ids"] + [2]
    masked = tok("In the <mask> was the Word.", return_tensors="pt")
    with torch.no_grad():
        logits = head.float()(**masked).logits[0, list(masked["input_ids"][0]).index(tok.mask_token_id)]
    assert tok.convert_ids_to_tokens(int(logits.argmax())) != "<unk>"


def test_the_family_shares_one_tokenizer_and_starts_from_lm(family):
    vocab = {name: tok.get_vocab() for name, (_, tok) in family.items()}
    assert all(v == vocab["lm"] for v in vocab.values())
    states = {n: family[n][0].state_dict() for n in SEQ2SEQ}
    lm = states["lm"]
    for name, state in states.items():
        assert all(lm[k].shape == state[k].shape for k in lm)
        assert name == "lm" or any(not torch.equal(lm[k], state[k]) for k in lm)
    assert any(not torch.equal(states["mt"][k], states["mt-o2m"][k]) for k in lm)


def test_unknown_or_missing_checkpoint_is_a_clear_error():
    with pytest.raises(ModelNotFoundError, match="no toy checkpoint named 'mt-x'") as err:
        load_model("toy:mt-x")
    assert "lm, mt, lm-cont, mt-o2m, mt-m2o, mlm" in err.value.hint


def test_tokenizer_conventions_are_mbart50s(family):
    _, tok = family["mt"]
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    codes = {c: tok.convert_tokens_to_ids(c) for c in MBART50_CODES}
    assert len(set(codes.values())) == 52 and tok.unk_token_id not in codes.values()
    for code in LANG_CODES.values():
        tok.src_lang = code
        ids = tok("In the beginning")["input_ids"]
        assert ids[0] == codes[code] and ids[-1] == tok.eos_token_id
        tok.tgt_lang = code
        assert tok(text_target="Au commencement")["input_ids"][0] == codes[code]
    tok.src_lang = "en_XX"
    for model, _ in family.values():
        assert model.config.decoder_start_token_id == 2 and model.generation_config.decoder_start_token_id == 2
        assert model.generation_config.forced_eos_token_id == 2


def test_each_mt_direction_translates_held_out_verses_where_it_was_trained(family):
    corpus = load_corpus(("en", "fr"), books=HELDOUT_BOOKS)
    rows = [i for i in range(len(corpus.keys)) if corpus.texts["en"][i] and corpus.texts["fr"][i]][:40:2]
    en, fr = ([corpus.texts[lang][i] for i in rows] for lang in ("en", "fr"))
    scores = {}
    for name in ("mt-o2m", "mt-m2o"):
        model, tok = family[name]
        scores[name, "en-fr"] = chrf(translate(model, tok, en, "en", "fr", batch_size=20, no_repeat_ngram_size=3), fr)
        scores[name, "fr-en"] = chrf(translate(model, tok, fr, "fr", "en", batch_size=20, no_repeat_ngram_size=3), en)
    # card: o2m en-fr 38.3 / fr-en 12.4; m2o en-fr 14.7 / fr-en 42.1 on 100 verses
    assert scores["mt-o2m", "en-fr"] > scores["mt-m2o", "en-fr"] + 10, scores
    assert scores["mt-m2o", "fr-en"] > scores["mt-o2m", "fr-en"] + 10, scores


def test_mt_translates_held_out_verses_better_than_lm(family):
    corpus = load_corpus(("en", "fr", "de"), books=HELDOUT_BOOKS)
    rows = [i for i in range(len(corpus.keys)) if corpus.texts["en"][i] and corpus.texts["fr"][i]][:40:2]
    src = [corpus.texts["en"][i] for i in rows]
    ref = [corpus.texts["fr"][i] for i in rows]
    scores = {}
    for name in ("lm", "mt"):
        model, tok = family[name]
        scores[name] = chrf(translate(model, tok, src, "en", "fr", batch_size=20, no_repeat_ngram_size=3), ref)
    assert scores["mt"] > scores["lm"] + 10, scores  # card: en-fr 34.3 vs 16.8 on 100 verses


def test_size_budget_and_card_agree():
    folder = toy.path("mt").parent
    total = sum(f.stat().st_size for n in toy.NAMES for f in toy.path(n).iterdir() if f.is_file())
    assert total <= 40_000_000
    card = toy.card()
    assert list(card["stages"]) == list(toy.NAMES)
    assert card["stages"]["mt-o2m"]["steps"] == card["stages"]["mt-m2o"]["steps"] == card["stages"]["mt"]["steps"]
    assert set(card["stages"]["mlm"]["mlm_loss"]) == set(card["langs"]) and "chrf" not in card["stages"]["mlm"]
    assert card["stages"]["mt"]["chrf_mean"] > card["stages"]["lm"]["chrf_mean"]
    assert card["stages"]["lm-cont"]["steps"] == card["stages"]["mt"]["steps"]
    text = (folder / "MODEL_CARD.md").read_text(encoding="utf-8")
    for name in SEQ2SEQ:
        assert f"**{card['stages'][name]['chrf_mean']:.1f}**" in text
    assert "Masked-LM loss" in text and f"{card['stages']['mlm']['mlm_loss']['en']:.3f}" in text
    for figure in card["curve_figures"]:
        assert (folder / figure).stat().st_size > 10_000
    meta = json.loads((toy.path("mt") / "xlprobe_toy.json").read_text())
    assert meta["stage"] == "mt" and meta["parent"] == "lm"


def test_cli_lists_the_family():
    res = CliRunner().invoke(app, ["toy", "list"])
    assert res.exit_code == 0, res.output
    for name in toy.NAMES:
        assert f"toy:{name}" in res.output


def test_capture_from_a_shipped_checkpoint(family):
    from xlprobe.hooks import extract

    model, tok = family["mt"]
    acts = extract(model, tok, ["In the beginning was the Word.", "Au commencement était la Parole."] * 2,
                   ["encoder.2", "decoder.2"], src_lang="en", batch_size=2)
    assert acts["encoder.2"].shape == (4, 128) and np.isfinite(acts["decoder.2"]).all()
    mlm, mtok = toy.load("mlm")
    acts = extract(mlm, mtok, ["In the beginning was the Word."] * 2, "encoder.*", batch_size=2)
    assert list(acts) == [f"encoder.{i}" for i in ("embeddings", *range(6))] and acts["encoder.5"].shape == (2, 128)
