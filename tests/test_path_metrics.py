"""Differentiable whole-model metrics: a transfer gap that follows the hard one, planted answers, completeness."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from xlprobe import toy
from xlprobe.errors import ConfigError, DataError
from xlprobe.path_metrics import TransferGap, TranslationLoss
from xlprobe.probes.attribution import ParameterPathAttribution
from xlprobe.tasks.sampling import balanced_groups
from xlprobe.tasks.spec import load_data
from xlprobe.types import Dataset, Record

LANGS = ("en", "fr", "de")


def _records(n_groups: int = 90, classes: int = 3) -> Dataset:
    recs = [Record(id=f"{lg}:{g}", text=f"verse {g}", lang=lg, group=f"g{g}", labels={"book": f"c{g % classes}"})
            for g in range(n_groups) for lg in LANGS]
    return Dataset("planted", tuple(recs))


class Planted(TransferGap):
    """The metric on planted vectors instead of a model's states (the model argument is ignored)."""

    def __init__(self, X: np.ndarray, data: Dataset, **kw) -> None:
        super().__init__(None, data, layer="encoder.0", task="book", **kw)
        self.X = torch.as_tensor(X)

    def pooled(self, model):
        return self.X


def _planted(kind: str, seed: int = 0) -> tuple[np.ndarray, Dataset]:
    """Vectors where the label is coded the same in every language, per language, or not at all."""
    data = _records()
    rng = np.random.default_rng(seed)
    y = np.asarray([int(r.labels["book"][1:]) for r in data])
    lang = np.asarray([LANGS.index(r.lang) for r in data])
    X = rng.normal(size=(len(data), 12))
    X[:, 9:12] += 3.0 * np.eye(3)[lang]  # a language offset everywhere
    if kind == "shared":
        X[:, :3] += 2.5 * np.eye(3)[y]
    elif kind == "per_language":  # English codes the label in dims 0-2, the others in dims 3-5
        X[lang == 0, :3] += 2.5 * np.eye(3)[y[lang == 0]]
        X[lang > 0, 3:6] += 2.5 * np.eye(3)[y[lang > 0]]
    return X, data


def test_the_gap_is_near_zero_when_the_label_is_shared_and_large_when_it_is_not():
    X, data = _planted("shared")
    m = Planted(X, data)
    acc = m.accuracies(None)
    assert min(acc.values()) > 0.85 and abs(m.accuracy_gap(None)) < 0.08
    X, data = _planted("per_language")
    m = Planted(X, data)
    acc = m.accuracies(None)
    assert acc["en"] > 0.85 and max(acc["fr"], acc["de"]) < 0.55 and m.accuracy_gap(None) > 0.4
    assert abs(float(m(None)) - m.accuracy_gap(None)) < 0.15  # the soft gap follows the hard one


def test_no_information_gives_chance_and_no_gap():
    gaps, en = [], []
    for seed in range(5):
        X, data = _planted("none", seed)
        m = Planted(X, data)
        gaps.append(m.accuracy_gap(None))
        en.append(m.accuracies(None)["en"])
    assert abs(np.mean(gaps)) < 0.08 and abs(np.mean(en) - 1 / 3) < 0.1


def test_bad_input_is_named():
    data = _records()
    with pytest.raises(ConfigError, match="positive"):
        TransferGap(None, data, layer="encoder.0", task="book", ridge=0)
    with pytest.raises(DataError, match="no item in train_lang 'ru'"):
        TransferGap(None, data, layer="encoder.0", task="book", train_lang="ru")
    with pytest.raises(DataError, match="single class"):
        TransferGap(None, _records(classes=1), layer="encoder.0", task="book")
    with pytest.raises(DataError, match="not a label"):
        TransferGap(None, data, layer="encoder.0", task="genre")


@pytest.fixture(scope="module")
def pair():
    lm, tok = toy.load("lm")
    mt, _ = toy.load("mt")
    data = load_data("bible:en,fr,ru?books=Ruth,Jonah", limit=None)
    return lm, mt, tok, balanced_groups(data, "book", per_class=24, seed=0)


def test_the_model_metric_matches_captured_states_and_its_attribution_is_complete(pair):
    from xlprobe.hooks import extract

    lm, mt, tok, data = pair
    m = TransferGap(tok, data, layer="encoder.1", task="book")
    with torch.no_grad():
        pooled = m.pooled(lm).numpy()
    captured = np.asarray(extract(lm, tok, data, "encoder.1")["encoder.1"])
    assert np.allclose(pooled, captured, atol=1e-4)  # the same states extract pools
    rows, delta = ParameterPathAttribution(m).attribute(lm, mt, groups="layer", n_steps=16)
    change = rows.metric_b[0] - rows.metric_a[0]
    assert abs(change) > 0.02 and delta < 0.01 * abs(change)  # completeness within 1 % at 16 steps
    assert rows.loc[rows.layer == "encoder.2", "value"].abs().sum() == 0  # nothing after the point matters
    same, d0 = ParameterPathAttribution(m).attribute(lm, lm, groups="layer", n_steps=2)
    assert d0 == 0 and (same.value == 0).all()


def test_translation_loss_is_the_models_loss_with_gradients(pair):
    lm, mt, tok, _ = pair
    loss = TranslationLoss(tok, ["In the beginning."], ["Au commencement."], src_lang="en_XX", tgt_lang="fr_XX")
    a, b = loss(lm), loss(mt)
    assert b < a  # mt translates
    a.backward()
    assert lm.model.shared.weight.grad is not None
    lm.zero_grad(set_to_none=True)
    with pytest.raises(DataError, match="parallel"):
        TranslationLoss(tok, ["a", "b"], ["c"])


# ------------------------------------------------------------------ devices: inputs follow the model
class _Seen(Exception):
    """Raised by a hook once it has recorded what the model was given (nothing runs after it)."""


def _record_inputs(module: torch.nn.Module, seen: list) -> torch.utils.hooks.RemovableHandle:
    """A pre-hook on ``module`` that records the devices of its tensor inputs and stops the forward."""
    def hook(_m, args, kwargs):
        seen.append({v.device for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor)})
        raise _Seen

    return module.register_forward_pre_hook(hook, with_kwargs=True)


def test_metrics_on_an_explicit_cpu_device_equal_the_default(pair):
    import copy

    from xlprobe.path_metrics import model_device

    lm, _, tok, data = pair
    moved = copy.deepcopy(lm).to(torch.device("cpu"))
    assert model_device(moved) == torch.device("cpu")
    gap = TransferGap(tok, data, layer="encoder.1", task="book")
    with torch.no_grad():
        assert torch.equal(gap(moved), gap(lm)) and gap.accuracies(moved) == gap.accuracies(lm)
    assert all(t.device == torch.device("cpu") for b in gap.inputs(moved) for t in b[1:])
    loss = TranslationLoss(tok, ["In the beginning."], ["Au commencement."], src_lang="en_XX", tgt_lang="fr_XX")
    on_cpu = loss.batch_on("cpu")
    assert on_cpu is loss.batch_on(torch.device("cpu"))  # one copy per device, kept
    assert all(torch.equal(on_cpu[k], loss.batch[k]) for k in loss.batch)
    with torch.no_grad():
        assert torch.equal(loss(moved), lm(**loss.batch).loss)


def test_metric_inputs_go_to_the_models_input_device_tokenized_once(pair, monkeypatch):
    import xlprobe.hooks.encode
    import xlprobe.hooks.runner

    lm, _, tok, data = pair
    calls = []
    encode = xlprobe.hooks.encode.encode_source
    monkeypatch.setattr(xlprobe.hooks.encode, "encode_source", lambda *a, **k: calls.append(1) or encode(*a, **k))
    gap = TransferGap(tok, data, layer="encoder.1", task="book")
    loss = TranslationLoss(tok, ["In the beginning."], ["Au commencement."], src_lang="en_XX", tgt_lang="fr_XX")
    gap.inputs(lm)
    # the model says it runs on meta (as a GPU model would say cuda): every input the metrics build goes there
    monkeypatch.setattr(xlprobe.hooks.runner, "input_device", lambda model: torch.device("meta"))
    assert {t.device.type for b in gap.inputs(lm) for t in b[1:]} == {"meta"} and len(calls) == 1
    seen: list = []
    for metric, module in ((gap, lm.get_encoder()), (loss, lm)):
        handle = _record_inputs(module, seen)
        try:
            with pytest.raises(_Seen):
                metric(lm)
        finally:
            handle.remove()
    assert seen == [{torch.device("meta")}, {torch.device("meta")}]
    assert {k: v.device.type for k, v in loss.batch.items()} == dict.fromkeys(loss.batch, "cpu")  # kept on CPU
    monkeypatch.undo()
    assert {t.device.type for b in gap.inputs(lm) for t in b[1:]} == {"cpu"} and len(calls) == 1


def test_a_model_wholly_on_meta_is_refused_before_it_runs(pair):
    import copy

    lm, _, tok, data = pair
    empty = copy.deepcopy(lm).to("meta")
    gap = TransferGap(tok, data, layer="encoder.1", task="book")
    loss = TranslationLoss(tok, ["In the beginning."], ["Au commencement."], src_lang="en_XX", tgt_lang="fr_XX")
    for metric in (gap, loss):
        with pytest.raises(ConfigError, match="meta device") as info:
            metric(empty)
        assert "load" in info.value.hint
