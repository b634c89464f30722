"""The capture plan: arguments honoured for every input form, one plan run many ways, one name per layer."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from xlprobe.errors import DataError, LanguageCodeError
from xlprobe.hooks import describe_points, extract, plan_capture, run_plan
from xlprobe.hooks.plan import as_dataset
from xlprobe.hooks.pooling import pool
from xlprobe.types import Dataset, Record


def _records(texts, lang="und"):
    return [Record(str(i), t, lang) for i, t in enumerate(texts)]


def test_records_take_src_lang_tgt_lang_and_tgt_texts_where_they_have_none(tiny_model, texts):
    model, tok = tiny_model("mbart")
    targets = list(reversed(texts))
    as_strings = extract(model, tok, texts, "decoder.*", src_lang="fr", tgt_texts=targets, tgt_lang="de")
    for form in (_records(texts), Dataset("records", tuple(_records(texts)))):
        as_records = extract(model, tok, form, "decoder.*", src_lang="fr", tgt_texts=targets, tgt_lang="de")
        for k in as_strings:
            np.testing.assert_array_equal(as_records[k], as_strings[k])
    # the arguments matter: without them the records are read differently (no codes, no targets)
    plain = extract(model, tok, _records(texts), "decoder.*")
    assert not np.allclose(plain["decoder.0"], as_strings["decoder.0"])


def test_records_that_contradict_an_argument_are_refused(tiny_model, texts):
    model, tok = tiny_model("mbart")
    french = _records(texts, "fr")
    with pytest.raises(DataError, match=r"record '0' \(position 0\) has lang='fr', but src_lang gives 'en'"):
        extract(model, tok, french, "encoder.0", src_lang="en")
    np.testing.assert_array_equal(extract(model, tok, french, "encoder.0", src_lang="fr")["encoder.0"],
                                  extract(model, tok, french, "encoder.0")["encoder.0"])  # agreeing is fine
    with_targets = [dataclasses.replace(r, target_text="x", target_lang="de") for r in french]
    with pytest.raises(DataError, match="target_lang='de', but tgt_lang gives 'es'"):
        extract(model, tok, with_targets, "decoder.0", tgt_lang="es")
    with pytest.raises(DataError, match="5 texts but 2 tgt_texts"):
        extract(model, tok, french, "decoder.0", tgt_texts=["a", "b"])
    with pytest.raises(DataError, match="all str or all Record"):
        as_dataset([texts[0], french[1]])


def test_targets_on_a_model_without_decoder_are_refused(tiny_model, texts):
    model, tok = tiny_model("gpt2")
    with pytest.raises(Exception, match="no decoder to teacher-force"):
        extract(model, tok, [dataclasses.replace(r, target_text="x") for r in _records(texts)], "decoder.0")


def test_one_plan_runs_many_ways_and_is_not_changed_by_running(tiny_model, texts, tmp_path):
    from xlprobe.store import ActivationStore

    model, tok = tiny_model("mbart")
    plan = plan_capture(model, tok, texts, "encoder.*", src_lang="en", batch_size=2)
    ids_before = plan.src.ids.flat.copy()
    mem = run_plan(model, tok, plan)
    again = run_plan(model, tok, plan)
    keys = run_plan(model, tok, plan, store=ActivationStore.open(tmp_path / "st"))
    np.testing.assert_array_equal(plan.src.ids.flat, ids_before)
    assert [k.point for k in keys] == [p.name for p in plan.points]
    store = ActivationStore.open(tmp_path / "st")
    for p, k in zip(plan.points, keys):
        np.testing.assert_array_equal(mem[p.alias], again[p.alias])
        np.testing.assert_allclose(store.read(k), mem[p.alias], atol=1e-6)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.pooling = "max"  # type: ignore[misc]


def test_lang_codes_override_the_automatic_mapping(tiny_model, texts):
    model, tok = tiny_model("mbart")
    auto = extract(model, tok, _records(texts, "fr"), "encoder.0")
    mapped = extract(model, tok, _records(texts, "french"), "encoder.0", lang_codes={"french": "fr_XX"})
    np.testing.assert_array_equal(mapped["encoder.0"], auto["encoder.0"])
    assert mapped.meta["langs"] == {"french": "fr_XX"}
    with pytest.raises(LanguageCodeError, match=r"lang_codes=\{'french': CODE\}"):
        extract(model, tok, _records(texts, "french"), "encoder.0")


def test_activations_answer_to_alias_and_module_path(tiny_model, texts):
    model, tok = tiny_model("mbart")
    acts = extract(model, tok, texts, ["encoder.1", "encoder.final_norm"], src_lang="en")
    assert list(acts) == ["encoder.1", "encoder.final_norm"]
    for alias, name in (("encoder.1", "model.encoder.layers.1"), ("encoder.final_norm", "model.encoder.layer_norm")):
        assert acts.get(alias) is acts[alias] is acts[name] is acts.get(name)
        assert alias in acts and name in acts
    assert acts.get("encoder.3") is None and acts.get("encoder.3", 0) == 0 and "encoder.3" not in acts


def test_probe_tables_from_extract_and_from_the_store_name_layers_alike(tiny_model, texts):
    from xlprobe.probes import probe_layers

    model, tok = tiny_model("mbart")
    langs = ["en", "fr", "de", "en", "es"] * 4
    data = [Record(str(i), texts[i % 5] + " " * (i // 5), langs[i], group=str(i // 5)) for i in range(20)]
    acts = extract(model, tok, data, ["encoder.0", "encoder.final_norm"])
    df = probe_layers(acts, np.array(langs), np.array([r.group for r in data]), k=2, n_boot=10, controls=())
    assert set(df.layer) == {"encoder.0", "encoder.final_norm"}


def test_what_a_glob_covers(tiny_model):
    model, tok = tiny_model("bert")  # 2 blocks, no final norm
    aliases = [r["alias"] for r in describe_points(model, tok)]
    every = [p.alias for p in plan_capture(model, tok, ["x y"], "encoder.*").points]
    assert every == aliases == ["encoder.embeddings", "encoder.0", "encoder.1"]  # the embeddings are a layer too
    assert [p.alias for p in plan_capture(model, tok, ["x y"], "encoder.[0-9]*").points] == ["encoder.0", "encoder.1"]
    model, tok = tiny_model("mbart")
    assert [p.alias for p in plan_capture(model, tok, ["x y"], "decoder.*").points][-1] == "decoder.final_norm"


def test_describe_points_gives_every_point_its_width(tiny_model):
    model, tok = tiny_model("mbart")
    rows = describe_points(model, tok)
    assert [r["alias"] for r in rows][:2] == ["encoder.embeddings", "encoder.0"]
    assert {r["shape"][2] for r in rows} == {model.config.d_model}


def test_mean_pooling_equals_a_plain_masked_mean_to_float_rounding():
    import torch

    g = torch.Generator().manual_seed(0)
    states = torch.randn(8, 50, 256, generator=g) * 10
    mask = torch.rand(8, 50, generator=g) > 0.3
    plain = (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    diff = (pool(states, mask, "mean") - plain).abs().max().item()
    assert diff < 1e-5 * states.abs().max().item()  # bmm sums in another order: rounding, not a different value
