"""Token attributions for an encoder's probe: planted answers, completeness, the shares and the swapped-tag control."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from xlprobe.errors import ConfigError, DataError
from xlprobe.probes import LinearProbe
from xlprobe.probes.tokens import PARTS, TokenAttribution, swap_tags, tag_attribution, token_shares
from xlprobe.probes.units import SourceBatch, class_codes, encoder_of, module_states, source_batch
from xlprobe.registry import list_measures


@pytest.fixture(scope="module")
def tiny():
    """A tiny random MBart, 24 short en / fr verses with their tags, and a language probe on encoder layer 1."""
    from xlprobe.tiny import build
    from xlprobe.toy import data

    torch.manual_seed(0)
    model, tok = build("mbart")
    corpus = data.load_corpus(("en", "fr"), books=data.HELDOUT_BOOKS)
    langs = ["en", "fr"] * 12
    texts = [" ".join(corpus.texts[lang][i // 2].split()[:8]) for i, lang in enumerate(langs)]
    batch = source_batch(tok, texts, [data.LANG_CODES[lang] for lang in langs])
    return model.eval(), tok, batch, texts, langs


def _probe(model, batch, read, langs):
    """A language probe fitted on ``read``'s pooled states of the batch."""
    with torch.no_grad():
        h = module_states(encoder_of(model), model.get_submodule(read), batch.input_ids, batch.attention_mask)
    m = batch.content.double().unsqueeze(-1)
    return LinearProbe().fit(((m * h.double()).sum(1) / m.sum(1)).numpy(), np.asarray(langs))


def _change(explainer, batch, baseline, probe, y):
    """F(input) - F(baseline) of the true class, per item."""
    with torch.no_grad():
        f = explainer.forward_func(batch.input_ids, *batch.forward_args())
        b = explainer.forward_func(baseline, *batch.forward_args())
    return (f - b)[torch.arange(len(y)), class_codes(probe, y)].numpy()


def test_token_attributions_add_up_to_the_logit_change_from_an_all_pad_input(tiny):
    model, tok, batch, _, langs = tiny
    read = "model.encoder.layers.1"
    probe = _probe(model, batch, read, langs)
    explainer = TokenAttribution(model, probe, read)
    attr, delta = explainer.attribute(batch, langs, n_steps=32, return_convergence_delta=True)
    change = _change(explainer, batch, batch.baseline(keep_special=False), probe, langs)
    assert attr.shape == batch.input_ids.shape and (attr[batch.attention_mask == 0] == 0).all()
    assert np.abs(change).mean() > 0.1
    assert np.allclose(attr.sum(1).numpy(), change, atol=1e-6 + float(delta.abs().max()))
    assert float(delta.abs().max()) < 0.05 * np.abs(change).mean()
    shares = token_shares(attr, batch, tok.convert_tokens_to_ids(["en_XX", "fr_XX"]))
    assert shares.shape == (len(langs), 3) and np.allclose(shares.sum(1), 1.0)
    assert (shares[:, 0] > 0).all()  # through attention, the tag reaches the content states of layer 1


def test_a_probe_on_the_embeddings_gets_nothing_from_the_tag(tiny):
    """Pooled token embeddings of the content tokens: no attention, so the tag and </s> get exactly zero."""
    model, tok, batch, _, langs = tiny
    read = "model.encoder.embed_tokens"
    probe = _probe(model, batch, read, langs)
    attr = TokenAttribution(model, probe, read).attribute(batch, langs, n_steps=4)
    shares = token_shares(attr, batch, tok.convert_tokens_to_ids(["en_XX", "fr_XX"]))
    assert np.allclose(shares[:, 1], 1.0) and np.allclose(shares[:, [0, 2]], 0.0)


def test_a_baseline_that_differs_only_at_the_tag_puts_all_the_attribution_on_the_tag(tiny):
    model, tok, batch, _, langs = tiny
    read = "model.encoder.layers.1"
    probe = _probe(model, batch, read, langs)
    explainer = TokenAttribution(model, probe, read)
    tag = torch.isin(batch.input_ids, torch.as_tensor(tok.convert_tokens_to_ids(["en_XX", "fr_XX"])))
    base = batch.input_ids.masked_fill(tag, tok.pad_token_id)
    attr, delta = explainer.attribute(batch, langs, baselines=base, n_steps=16, return_convergence_delta=True)
    shares = token_shares(attr, batch, tok.convert_tokens_to_ids(["en_XX", "fr_XX"]))
    assert np.allclose(shares[:, 0], 1.0)
    assert np.allclose(attr.sum(1).numpy(), _change(explainer, batch, base, probe, langs),
                       atol=1e-6 + float(delta.abs().max()))


def test_token_shares_of_a_hand_made_attribution():
    ids = torch.tensor([[9, 5, 6, 2, 1], [8, 5, 2, 1, 1]])  # tag, content..., </s>, pad
    mask = (ids != 1).long()
    content = (ids >= 5) & (ids <= 6)
    batch = SourceBatch(ids, mask, content, pad_id=1)
    attr = torch.tensor([[-1.0, 2.0, 0.5, 0.5, 0.0], [3.0, -1.0, 0.0, 0.0, 0.0]])
    assert np.allclose(token_shares(attr, batch, [8, 9]), [[0.25, 0.625, 0.125], [0.75, 0.25, 0.0]])
    with pytest.raises(DataError, match="do not match"):
        token_shares(attr[:, :3], batch, [8, 9])


def test_tag_attribution_rows_are_registered_and_the_control_swaps_the_tag(tiny):
    model, tok, _, texts, langs = tiny
    read = "model.encoder.layers.1"
    from xlprobe.toy import data

    batch = source_batch(tok, texts, [data.LANG_CODES[lang] for lang in langs])
    probe = _probe(model, batch, read, langs)
    rows = tag_attribution(model, tok, probe, read, texts, langs, lang_codes=data.LANG_CODES, n_steps=8,
                           groups=np.repeat(np.arange(12), 2), n_boot=100, checkpoint="tiny:mbart")
    assert set(rows.measure) <= {s.name for s in list_measures()}
    shares = rows[rows.measure == "tokens.share"]
    assert list(shares.part) == [*PARTS, *PARTS] and list(shares.control.fillna("-")) == ["-"] * 3 + ["swapped-tag"] * 3
    for _, group in shares.groupby(shares.control.fillna("-")):
        assert group.value.sum() == pytest.approx(1.0)
    assert (shares.ci_low <= shares.value).all() and (shares.value <= shares.ci_high).all()
    decisions = rows[rows.measure == "tokens.decision"]
    assert list(decisions.follows) == ["text", "text", "tag"]
    swapped = decisions[decisions.control == "swapped-tag"].set_index("follows").value
    assert swapped["text"] + swapped["tag"] == pytest.approx(1.0)  # two languages: the text's or the tag's


def test_swap_tags_and_bad_input_are_named(tiny):
    assert swap_tags(["en", "fr", "de", "en"]) == ["fr", "de", "en", "fr"]  # sorted: de -> en -> fr -> de
    assert swap_tags(["en", "fr"], {"en": "de", "fr": "de"}) == ["de", "de"]
    with pytest.raises(DataError, match="two languages"):
        swap_tags(["en", "en"])
    with pytest.raises(DataError, match="no replacement"):
        swap_tags(["en", "fr"], {"en": "fr"})
    with pytest.raises(ConfigError, match="rotate"):
        swap_tags(["en", "fr"], "shuffle")
    model, tok, batch, texts, langs = tiny
    probe = _probe(model, batch, "model.encoder.layers.0", langs)
    with pytest.raises(DataError, match="no language code"):
        tag_attribution(model, tok, probe, "model.encoder.layers.0", texts, langs, lang_codes={"en": "en_XX"})
    with pytest.raises(DataError, match="labels"):
        TokenAttribution(model, probe, "model.encoder.layers.0").attribute(batch, langs[:2])


def test_the_toy_lms_encoder_takes_language_from_the_words_not_the_tag():
    """Shipped toy:lm, encoder layer 0, 3 languages: little attribution on the tag and a swapped tag changes no decision."""
    from xlprobe import toy
    from xlprobe.toy import data

    model, tok = toy.load("lm")
    corpus = data.load_corpus(("en", "fr", "de"), books=data.HELDOUT_BOOKS)
    langs = ["en", "fr", "de"]

    def items(lo, hi):
        texts = [" ".join(corpus.texts[lang][i].split()[:12]) for i in range(lo, hi) for lang in langs]
        return texts, [lang for _ in range(lo, hi) for lang in langs]

    read = "model.encoder.layers.0"
    fit_texts, fit_langs = items(100, 140)
    probe = _probe(model.eval(), source_batch(tok, fit_texts, [data.LANG_CODES[x] for x in fit_langs]), read, fit_langs)
    texts, y = items(0, 6)
    rows = tag_attribution(model, tok, probe, read, texts, y, lang_codes=data.LANG_CODES, n_steps=8,
                           groups=np.repeat(np.arange(6), 3), n_boot=100, checkpoint="toy:lm")
    share = rows[(rows.measure == "tokens.share") & rows.control.isna()].set_index("part").value
    assert share["tag"] < 0.05 and share["content"] > 0.9
    swapped = rows[(rows.measure == "tokens.decision") & (rows.control == "swapped-tag")].set_index("follows").value
    assert swapped["text"] >= 0.8 and swapped["tag"] <= 0.2
