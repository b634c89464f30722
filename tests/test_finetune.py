"""finetune_transfer: zero-shot cross-lingual transfer by fine-tuning the toy mt model on real Bible verses."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from xlprobe import toy
from xlprobe.errors import ConfigError, DataError, LanguageCodeError
from xlprobe.finetune import LAYER, finetune_transfer
from xlprobe.results import RESULT_COLUMNS
from xlprobe.tasks.bible import load_bible
from xlprobe.types import Dataset, Record

# small and fast: 30 steps at a learning rate high enough for the toy model to learn testament in 30 steps
FAST = dict(label="testament", steps=30, batch_size=16, lr=1e-3, max_length=48, seeds=(0, 1))


@pytest.fixture(scope="module")
def mt():
    return toy.load("mt")


@pytest.fixture(scope="module")
def bible():
    return load_bible(["en", "fr", "de"], limit=200)  # 200 verses x 3 languages, OT and NT


@pytest.fixture(scope="module")
def run(mt, bible):
    """One fine-tuning run (2 seeds), with the caller's state recorded before and after."""
    model, tok = mt
    tok.src_lang = "ru_RU"  # not the default, and not one of the data's languages
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads_before = [p.requires_grad for p in model.parameters()]
    rng_before = torch.random.get_rng_state()
    df = finetune_transfer(model, tok, bible, checkpoint="toy:mt", **FAST)
    after = {"state": model.state_dict(), "src_lang": tok.src_lang, "training": model.training,
             "grads": [p.requires_grad for p in model.parameters()], "rng": torch.random.get_rng_state()}
    tok.src_lang = "en_XX"
    return df, before, grads_before, rng_before, after


def _acc(df, lang, seed=None, control=None):
    m = (df.measure == "finetune.accuracy") & (df.lang == lang)
    m &= df.seed.isna() if seed is None else (df.seed == seed)
    m &= df.control.isna() if control is None else (df.control == control)
    return df[m]


def test_callers_model_tokenizer_and_rng_untouched(run):
    _, before, grads_before, rng_before, after = run
    assert before.keys() == after["state"].keys()
    for k, v in before.items():
        assert torch.equal(v, after["state"][k]), k
    assert after["training"] is False  # toy.load returns eval mode; still eval
    assert after["grads"] == grads_before
    assert after["src_lang"] == "ru_RU"
    assert torch.equal(after["rng"], rng_before)


def test_rows_measures_langs_seeds_and_summaries(run):
    df = run[0]
    assert tuple(df.columns[:7]) == RESULT_COLUMNS
    assert set(df.measure) == {"finetune.accuracy", "finetune.transfer_gap", "finetune.train_loss"}
    assert (df.layer == LAYER).all() and (df.checkpoint == "toy:mt").all()
    assert (df.task == "testament").all() and (df.train_lang == "en").all()
    for lang in ("en", "fr", "de"):
        per_seed = _acc(df, lang, seed=0), _acc(df, lang, seed=1)
        assert all(len(r) == 1 for r in per_seed)
        summary, majority = _acc(df, lang), _acc(df, lang, control="majority")
        assert len(summary) == 1 and len(majority) == 1
        vals = [float(r.value.iloc[0]) for r in per_seed]
        assert summary.value.iloc[0] == pytest.approx(np.mean(vals))
        assert (summary.ci_low.iloc[0], summary.ci_high.iloc[0]) == (min(vals), max(vals))
        # the same test groups for every language and seed: parallel verses, equal n
        assert {int(r.n.iloc[0]) for r in (*per_seed, summary, majority)} == {int(_acc(df, "en").n.iloc[0])}
        assert all(0.0 <= v <= 1.0 for v in vals)
    gap = df[df.measure == "finetune.transfer_gap"]
    assert set(gap.lang) == {"fr", "de"}  # no gap of en with itself
    for lang in ("fr", "de"):
        for seed in (0, 1):
            g = gap[(gap.lang == lang) & (gap.seed == seed)].value.iloc[0]
            want = _acc(df, "en", seed).value.iloc[0] - _acc(df, lang, seed).value.iloc[0]
            assert g == pytest.approx(want)
        assert len(gap[(gap.lang == lang) & gap.seed.isna()]) == 1
    loss = df[df.measure == "finetune.train_loss"]
    assert set(loss.lang) == {"en"} and len(loss) == 3 and (loss.value > 0).all()
    curves = df.attrs["train_loss"]
    assert sorted(curves) == [0, 1] and all(len(c) == FAST["steps"] for c in curves.values())
    assert loss[loss.seed == 0].value.iloc[0] == pytest.approx(np.mean(curves[0][-10:]))


def test_learns_testament_on_the_training_language(run):
    """Fine-tuned on English testament labels, English test accuracy beats predicting the majority class."""
    df = run[0]
    majority = _acc(df, "en", control="majority").value.iloc[0]
    assert _acc(df, "en").value.iloc[0] > majority + 0.05
    curve = df.attrs["train_loss"][0]
    assert np.mean(curve[-10:]) < np.mean(curve[:5])


def test_different_seeds_give_different_runs(run):
    df = run[0]
    curves = df.attrs["train_loss"]
    assert curves[0] != curves[1]
    per_seed = df[df.seed.notna() & (df.measure != "finetune.transfer_gap")]
    assert not np.array_equal(per_seed[per_seed.seed == 0].value.to_numpy(), per_seed[per_seed.seed == 1].value.to_numpy())


def test_same_seed_same_rows_whatever_the_other_seeds(run, mt, bible):
    """A seed's rows do not depend on the other seeds: the split is fixed and each run is seeded."""
    model, tok = mt
    again = finetune_transfer(model, tok, bible, checkpoint="toy:mt", **{**FAST, "seeds": (0,)})
    first = run[0]
    keep = ["measure", "lang", "value", "n"]
    a = first[first.seed == 0][keep].reset_index(drop=True)
    b = again[again.seed == 0][keep].reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    assert again.attrs["train_loss"][0] == first.attrs["train_loss"][0]


def _alpha_beta(n_groups: int = 48) -> Dataset:
    """Parallel en/fr/de items whose label is a word written in the text itself (alpha / beta)."""
    rng = np.random.default_rng(0)
    words = {"en": "the light word water earth king".split(), "fr": "la lumière parole eau terre roi".split(),
             "de": "das Licht Wort Wasser Erde König".split()}
    records = []
    for g in range(n_groups):
        lab = "alpha" if g % 2 else "beta"
        for lang, ws in words.items():
            filler = rng.choice(ws, size=4).tolist()
            text = " ".join(filler[:2] + [lab] + filler[2:])
            records.append(Record(f"{lang}:{g}", text, lang, group=f"g{g}", labels={"kind": lab}))
    return Dataset("alpha-beta", tuple(records))


def test_visible_label_is_learnt_and_transfers(mt):
    model, tok = mt
    df = finetune_transfer(model, tok, _alpha_beta(), label="kind", steps=25, lr=1e-3, seeds=(0,), max_length=16)
    assert _acc(df, "en").value.iloc[0] >= 0.9
    assert _acc(df, "en", control="majority").value.iloc[0] <= 0.6
    assert _acc(df, "fr").value.iloc[0] >= 0.8 and _acc(df, "de").value.iloc[0] >= 0.8  # the word is shared


def test_encoder_only_model_with_plain_tokenizer(tiny_model):
    model, tok = tiny_model("xlmr")  # no src_lang: plain tokenization, model.base_model is the encoder
    df = finetune_transfer(model, tok, _alpha_beta(16), label="kind", steps=3, seeds=(0,), max_length=16)
    assert len(_acc(df, "fr", seed=0)) == 1 and df.value.notna().all()


# ------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(label="colour"), DataError, r"unknown label 'colour'(.|\n)*genre"),
    (dict(train_lang="sw"), DataError, r"train_lang 'sw' has no items(.|\n)*\['de', 'en', 'fr'\]"),
    (dict(steps=0), ConfigError, "steps"),
    (dict(seeds=()), ConfigError, "seeds"),
    (dict(seeds=(0, 0)), ConfigError, "distinct"),
    (dict(pooling="cls"), ConfigError, "unknown pooling"),
    (dict(test_size=1.5), ConfigError, "test_size"),
    (dict(lr=0.0), ConfigError, "lr"),
    (dict(device="gpu7"), ConfigError, "device"),
    (dict(lang_codes={"fr": "xx_YY"}), LanguageCodeError, r"'xx_YY'(.|\n)*valid codes"),
])
def test_bad_options_raise_with_hints(mt, bible, kwargs, exc, match):
    model, tok = mt
    with pytest.raises(exc, match=match):
        finetune_transfer(model, tok, bible, **{**FAST, **kwargs})
    assert tok.src_lang == "en_XX"


def _records(texts_langs_groups_labels):
    return [Record(f"{i}", t, lang, group=g, labels={"kind": lab})
            for i, (t, lang, g, lab) in enumerate(texts_langs_groups_labels)]


def test_bad_data_raise(mt):
    model, tok = mt
    one_class = _records([(f"verse {i}", "en", f"g{i}", "a") for i in range(6)])
    with pytest.raises(DataError, match="single 'kind' class"):
        finetune_transfer(model, tok, one_class, label="kind")
    one_group = _records([("verse", "en", "g", "a"), ("vers", "fr", "g", "b")])
    with pytest.raises(DataError, match="too few groups"):
        finetune_transfer(model, tok, one_group, label="kind")
    unknown = _records([(f"verse {i}", "en" if i % 2 else "qq", f"g{i // 2}", "ab"[i % 4 // 2]) for i in range(12)])
    with pytest.raises(LanguageCodeError, match="'qq'(.|\n)*lang_codes=\\{'qq': CODE\\}"):
        finetune_transfer(model, tok, unknown, label="kind")
    some_unlabelled = [*one_class[:3], Record("x", "text", "en", group="gx")]
    with pytest.raises(DataError, match="lack label 'kind'"):
        finetune_transfer(model, tok, some_unlabelled, label="kind")
    with pytest.raises(DataError, match="empty"):
        finetune_transfer(model, tok, [], label="kind")
    with pytest.raises(ConfigError, match="torch.nn.Module"):
        finetune_transfer("toy:mt", tok, one_class, label="kind")


def test_decoder_eos_head_reads_what_mbart_sequence_classification_reads(tiny_model):
    from transformers import MBartForSequenceClassification

    from xlprobe.finetune import _features
    from xlprobe.hooks import plan_capture

    model, tok = tiny_model("mbart")
    clf = MBartForSequenceClassification(model.config).eval()
    clf.model.load_state_dict(model.model.state_dict())
    texts = ["In the beginning was the Word.", "Jesus wept.", "Au commencement était la Parole, et la Parole."]
    plan = plan_capture(model, tok, texts, sides=("encoder",), src_lang="en")
    src, _ = plan.batch(np.arange(3), "cpu")
    seen = []
    hook = clf.classification_head.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    try:
        with torch.no_grad():
            clf(input_ids=src.ids, attention_mask=src.attn)
            ours = _features(model.model, src, "decoder-eos", "mean", model.config.eos_token_id)
    finally:
        hook.remove()
    torch.testing.assert_close(ours, seen[0], atol=1e-5, rtol=1e-5)


def test_both_heads_run_and_name_their_rows(mt, bible):
    model, tok = mt
    rows = {}
    for head in ("encoder-mean", "decoder-eos"):
        df = finetune_transfer(model, tok, bible, **{**FAST, "steps": 3, "seeds": (0,)}, head=head)
        assert (df.readout == head).all()
        rows[head] = set(df.layer)
    assert rows == {"encoder-mean": {"encoder.last"}, "decoder-eos": {"decoder.eos"}}


def test_decoder_eos_head_needs_an_encoder_decoder(tiny_model):
    model, tok = tiny_model("xlmr")
    with pytest.raises(ConfigError, match="decoder-eos.*encoder-decoder"):
        finetune_transfer(model, tok, _alpha_beta(8), label="kind", steps=1, seeds=(0,), head="decoder-eos")
    with pytest.raises(ConfigError, match="unknown head"):
        finetune_transfer(model, tok, _alpha_beta(8), label="kind", steps=1, seeds=(0,), head="cls")


def test_split_unit_is_chapter_for_book_level_labels_and_recorded(mt, bible):
    model, tok = mt
    fast = {**FAST, "steps": 2, "seeds": (0,)}
    assert set(finetune_transfer(model, tok, bible, **{**fast, "label": "genre"}).folds) == {"chapter"}
    assert set(finetune_transfer(model, tok, bible, **{**fast, "label": "genre"}, by="group").folds) == {"group"}
    with pytest.raises(ConfigError, match="fold unit equals the task"):
        finetune_transfer(model, tok, bible, **{**fast, "label": "genre"}, by="genre")
