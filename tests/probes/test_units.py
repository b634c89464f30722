"""Unit attributions for a probe: planted language units ranked first, and their ablation beats random units."""
from __future__ import annotations

import numpy as np
import pytest

from xlprobe.errors import ConfigError, DataError
from xlprobe.probes import LinearProbe
from xlprobe.probes.units import ablation_check, probe_module, unit_importance


def _planted(seed: int = 0, n_groups: int = 80, d: int = 24, informative: int = 4):
    """4 languages x n_groups verses; the language lives in the first ``informative`` units only."""
    rng = np.random.default_rng(seed)
    y = np.tile(np.arange(4), n_groups)
    g = np.repeat(np.arange(n_groups), 4)
    X = rng.normal(size=(len(y), d))
    X[:, :informative] += 2.5 * rng.normal(size=(4, informative))[y]
    return X, y, g


@pytest.mark.parametrize("method", ["integrated_gradients", "feature_ablation"])
def test_planted_units_rank_first_and_their_ablation_beats_random_units(method):
    X, y, g = _planted()
    probe = LinearProbe().fit(X, y)
    importance, delta = unit_importance(probe, X, y, method=method)
    ranking = np.argsort(-importance)
    assert set(ranking[:4]) == {0, 1, 2, 3}
    assert delta < 1e-3
    rows = ablation_check(probe, X, y, ranking, ks=(4,), groups=g, n_random=10, n_boot=200)
    top = rows[rows.control.isna()].iloc[0]
    rand = rows[rows.control == "random-units"].iloc[0]
    assert top.value > 0.4 and top.ci_low > rand.ci_high  # the ranking predicts what matters
    assert rand.value < 0.2


def test_the_probe_module_reproduces_the_probe():
    X, y, _ = _planted(d=8)
    for labels in (y, y % 2):  # multinomial and binary
        probe = LinearProbe().fit(X, labels)
        import torch

        logits = probe_module(probe)(torch.as_tensor(X)).detach().numpy()
        assert (probe.classes_[logits.argmax(1)] == probe.predict(X)).all()


def test_bad_input_is_named():
    X, y, _ = _planted(d=6)
    probe = LinearProbe().fit(X, y)
    with pytest.raises(ConfigError, match="method"):
        unit_importance(probe, X, y, method="saliency")
    with pytest.raises(DataError, match="not fitted on"):
        unit_importance(probe, X, y + 10)
    with pytest.raises(DataError, match="every one"):
        ablation_check(probe, X, y, [0, 1])
    with pytest.raises(DataError, match="fitted"):
        probe_module(LinearProbe())


# ---- through the model: LayerIntegratedGradients to an earlier module's units, validated by ablation inside it

@pytest.fixture(scope="module")
def tiny():
    """A tiny random MBart (d 32, 2 encoder layers), 24 short en / fr verses encoded with their tags."""
    import torch

    from xlprobe.probes.units import source_batch
    from xlprobe.tiny import build
    from xlprobe.toy import data

    torch.manual_seed(0)
    model, tok = build("mbart")
    corpus = data.load_corpus(("en", "fr"), books=data.HELDOUT_BOOKS)
    langs = ["en", "fr"] * 12
    texts = [" ".join(corpus.texts[lang][i // 2].split()[:8]) for i, lang in enumerate(langs)]
    return model.eval(), tok, source_batch(tok, texts, [data.LANG_CODES[lang] for lang in langs]), texts, langs


def _pooled(model, batch, read):
    """``read``'s output mean-pooled over the content tokens, as the probe reads it [n, d]."""
    import torch

    from xlprobe.probes.units import encoder_of, module_states

    with torch.no_grad():
        h = module_states(encoder_of(model), model.get_submodule(read), batch.input_ids, batch.attention_mask)
    m = batch.content.double().unsqueeze(-1)
    return ((m * h.double()).sum(1) / m.sum(1)).numpy()


def _planted_unit_probe(model, batch, read, unit):
    """A LinearProbe that reads one pooled unit of ``read`` only: class 1 above the unit's median."""
    X = _pooled(model, batch, read)
    cut = np.median(X[:, unit])
    y = (X[:, unit] > cut).astype(int)
    probe = LinearProbe().fit(X, y)
    probe.coef_ = np.zeros_like(probe.coef_)
    probe.coef_[0, unit] = 4.0
    probe.intercept_ = np.array([-4.0 * (cut - probe.mean_[unit]) / probe.scale_[unit]])
    assert (probe.predict(X) == y).all()
    return probe, y


def _logit_change(explainer, batch, baseline, target):
    """F(input) - F(baseline) of the true class, per item (what the attributions must add up to)."""
    import torch

    with torch.no_grad():
        f = explainer.forward_func(batch.input_ids, *batch.forward_args())
        b = explainer.forward_func(baseline, *batch.forward_args())
    rows = torch.arange(len(target))
    return (f - b)[rows, target].numpy()


def test_layer_units_a_probe_reading_one_unit_gets_all_the_attribution_there_and_its_ablation_costs_the_most(tiny):
    from xlprobe.probes.units import LayerUnitImportance, class_codes, layer_ablation_check

    model, _, batch, _, _ = tiny
    read = "model.encoder.layers.1"
    probe, y = _planted_unit_probe(model, batch, read, unit=7)
    explainer = LayerUnitImportance(model, probe, read, source=read)
    units, delta = explainer.attribute(batch, y, n_steps=16, return_convergence_delta=True)
    importance = units.abs().mean(0).numpy()
    assert importance.argmax() == 7 and np.delete(importance, 7).max() < 1e-9 * importance[7]
    change = _logit_change(explainer, batch, batch.baseline(), class_codes(probe, y))
    assert np.allclose(units.sum(1).numpy(), change, atol=1e-4 + float(delta.abs().max()))
    rows = layer_ablation_check(model, probe, read, read, batch, y, np.argsort(-importance), ks=(1,),
                                n_random=10, n_boot=200, checkpoint="tiny:mbart")
    top, rand = rows[rows.control.isna()].iloc[0], rows[rows.control == "random-units"].iloc[0]
    assert top.value >= 0.25 and top.ci_low > rand.ci_high and rand.value < 0.1
    assert set(rows.layer) == {read} and set(rows.ref_layer) == {read}


def test_layer_units_of_an_earlier_layer_add_up_to_the_probes_logit_change(tiny):
    from xlprobe.probes.units import LayerUnitImportance, class_codes

    model, _, batch, _, _ = tiny
    read = "model.encoder.layers.1"
    probe, y = _planted_unit_probe(model, batch, read, unit=3)
    explainer = LayerUnitImportance(model, probe, read, source="model.encoder.layers.0")
    units, delta = explainer.attribute(batch, y, n_steps=32, return_convergence_delta=True)
    change = _logit_change(explainer, batch, batch.baseline(), class_codes(probe, y))
    assert explainer.has_convergence_delta() and units.shape == (len(y), 32)
    assert np.abs(change).mean() > 0.1  # a real change to explain
    assert np.allclose(units.sum(1).numpy(), change, atol=1e-6 + float(delta.abs().max()))
    assert float(delta.abs().max()) < 0.05 * np.abs(change).mean()


def test_source_batch_pools_as_extract_does(tiny):
    from xlprobe.hooks import extract
    from xlprobe.probes.units import source_batch

    model, tok, _, texts, langs = tiny
    en = [t for t, lang in zip(texts, langs) if lang == "en"]
    acts = extract(model, tok, en, ["encoder.1"], src_lang="en_XX")
    batch = source_batch(tok, en, "en_XX")
    assert np.allclose(_pooled(model, batch, "model.encoder.layers.1"), acts["encoder.1"], atol=1e-5)
    assert (batch.baseline()[batch.content] == tok.pad_token_id).all()
    assert (batch.baseline()[~batch.content] == batch.input_ids[~batch.content]).all()  # tag, </s>, pad kept


def test_layer_units_bad_input_is_named(tiny):
    from xlprobe.probes.units import LayerUnitImportance, layer_ablation_check

    model, _, batch, _, _ = tiny
    read = "model.encoder.layers.1"
    probe, y = _planted_unit_probe(model, batch, read, unit=0)
    with pytest.raises(ConfigError, match="not a module"):
        LayerUnitImportance(model, probe, read, source="model.encoder.layers.9")
    with pytest.raises(DataError, match="labels"):
        LayerUnitImportance(model, probe, read, source=read).attribute(batch, y[:3])
    with pytest.raises(DataError, match="every one"):
        layer_ablation_check(model, probe, read, read, batch, y, [0, 1])
    with pytest.raises(ConfigError, match="score"):
        layer_ablation_check(model, probe, read, read, batch, y, list(range(32)), score="loss")
    model.train()
    try:
        with pytest.raises(ConfigError, match="eval"):
            LayerUnitImportance(model, probe, read, source=read)
    finally:
        model.eval()
