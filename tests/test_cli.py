"""The command line: each command end to end on tiny models and a slice of the real corpus."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from xlprobe.cli import app
from xlprobe.results import read_results
from xlprobe.store import ActivationStore
from xlprobe.types import RESULT_COLUMNS

runner = CliRunner()


def _files(folder):
    """Every file under ``folder``: relative path -> (mtime in ns, bytes)."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def toy_store(tmp_path_factory):
    """Two shipped toy checkpoints captured on the same verses: every encoder point, mean pooling."""
    out = tmp_path_factory.mktemp("toy-store")
    for spec in ("toy:lm", "toy:mt"):
        res = runner.invoke(app, ["capture", "--model", spec, "--data", "bible:en,fr?books=Ruth", "--limit", "12",
                                  "--layers", "encoder.*", "--out", str(out)])
        assert res.exit_code == 0, res.output
    return out


def test_layers_lists_points_with_shapes():
    res = runner.invoke(app, ["layers", "tiny:mbart", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    by_alias = {r["alias"]: r for r in rows}
    assert by_alias["encoder.1"]["name"] == "model.encoder.layers.1"
    assert by_alias["decoder.final_norm"]["shape"] == ["batch", "seq", 32]
    assert by_alias["encoder.final_norm"]["hidden_states"] == 2


def test_layers_missing_model_is_a_clear_error(tmp_path):
    res = runner.invoke(app, ["layers", str(tmp_path / "nope")])
    assert res.exit_code == 2
    assert "does not exist" in res.output


def test_data_lists_translations_with_licences():
    res = runner.invoke(app, ["data", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    kjv = next(r for r in rows if r.get("corpus") == "bible" and r["code"] == "k")
    assert kjv["lang"] == "en" and kjv["licence"] == "yes"
    assert {r["licence"] for r in rows if r.get("corpus") == "bible"} >= {"yes", "no"}


def test_capture_writes_store_and_second_run_skips(tmp_path, monkeypatch):
    out = tmp_path / "run"
    args = ["capture", "--model", "tiny:mbart", "--data", "bible:en,fr?books=Ruth", "--limit", "12",
            "--layers", "encoder.0,encoder.final_norm", "--out", str(out)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    store = ActivationStore.open(out, create=False)
    keys = store.keys()
    assert len(keys) == 2 and store.read(keys[0]).shape == (24, 32)
    assert store.entry(keys[0])["info"]["command"].startswith("xlprobe")
    # the second run computes nothing: no forward pass, and no file of the store (shards, manifest,
    # records) is rewritten
    import xlprobe.loading

    load_model, forwards = xlprobe.loading.load_model, []

    def counting_load_model(*a, **kw):
        model, tok = load_model(*a, **kw)
        model.register_forward_pre_hook(lambda *_: forwards.append(1))
        model.get_encoder().register_forward_pre_hook(lambda *_: forwards.append(1))
        return model, tok

    monkeypatch.setattr(xlprobe.loading, "load_model", counting_load_model)
    before = _files(out)
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert forwards == [] and _files(out) == before
    assert ActivationStore.open(out).keys() == keys
    ls = runner.invoke(app, ["store", "ls", str(out)])
    assert ls.exit_code == 0 and "encoder.final_norm" in ls.output
    ok = runner.invoke(app, ["store", "verify", str(out)])
    assert ok.exit_code == 0 and "verified" in ok.output


def test_capture_layer_typo_names_nearest(tmp_path):
    res = runner.invoke(app, ["capture", "--model", "tiny:bert", "--data", "bible:en?books=Ruth", "--limit", "3",
                              "--layers", "encoder.layers.1", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2
    assert "is not a capture point" in res.output and "encoder.layer.1" in res.output


@pytest.mark.parametrize("spec, match", [("nope:en", "scheme"), ("bible:xx", "xx")])
def test_capture_bad_data_spec(tmp_path, spec, match):
    res = runner.invoke(app, ["capture", "--model", "tiny:bert", "--data", spec, "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and match in res.output


def test_measures_lists_the_registry():
    res = runner.invoke(app, ["measures", "--kind", "paired"])
    assert res.exit_code == 0, res.output
    assert "cka" in res.output and "procrustes" in res.output and "distance" in res.output


@pytest.mark.slow
def test_toy_train_quick_then_resume_is_a_no_op(tmp_path):
    out = tmp_path / "toy"
    res = runner.invoke(app, ["toy", "train", "--out", str(out), "--preset", "quick"])
    assert res.exit_code == 0, res.output
    assert (out / "checkpoints" / "mt" / "config.json").is_file()
    assert "lm-cont" in res.output and "chrF" in res.output
    first = (out / "summary.json").read_text()
    again = runner.invoke(app, ["toy", "train", "--out", str(out), "--preset", "quick"])
    assert again.exit_code == 0 and (out / "summary.json").read_text() == first


def test_probe_prints_the_table_and_writes_results(toy_store, tmp_path):
    res = runner.invoke(app, ["probe", str(toy_store), "--task", "language", "--n-boot", "20", "--folds", "3",
                              "--controls", "majority", "--measures", "", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "encoder.1" in res.output and (tmp_path / "results.parquet").is_file()
    saved = read_results(tmp_path / "results.parquet")
    assert set(saved.checkpoint) == {"toy:lm", "toy:mt"}
    assert set(saved[saved.measure.str.startswith("probe.")].control.dropna()) == {"majority", "embeddings"}


def test_similarity_writes_every_layer_pair_of_every_checkpoint_pair(toy_store, tmp_path):
    res = runner.invoke(app, ["similarity", str(toy_store), "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "toy:lm" in res.output and "toy:mt" in res.output and "encoder.final_norm" in res.output
    sim = read_results(tmp_path / "similarity.parquet")
    assert (tmp_path / "similarity.csv").is_file()
    assert tuple(sim.columns[:len(RESULT_COLUMNS)]) == RESULT_COLUMNS
    assert {"ref_checkpoint", "ref_layer"} <= set(sim.columns)
    layers = ["encoder.embeddings", "encoder.0", "encoder.1", "encoder.2", "encoder.final_norm"]
    pairs = sim.groupby(["checkpoint", "ref_checkpoint"]).size().to_dict()
    # each unordered pair once, every checkpoint with itself, every layer x layer
    assert pairs == {("toy:lm", "toy:lm"): 50, ("toy:lm", "toy:mt"): 50, ("toy:mt", "toy:mt"): 50}  # 2 centrings
    assert set(sim.layer) == set(sim.ref_layer) == set(layers) and set(sim.centring) == {"pooled", "language"}
    assert set(sim.measure) == {"cka.linear.debiased"} and (sim.n == 24).all()
    diagonal = (sim.checkpoint != sim.ref_checkpoint) & (sim.layer == sim.ref_layer)
    assert sim[diagonal][["ci_low", "ci_high", "null_mean", "null_high"]].notna().all().all()
    assert sim[~diagonal].ci_low.isna().all()
    assert ((sim.value > -1) & (sim.value <= 1 + 1e-9)).all()
    same = sim[sim.checkpoint == sim.ref_checkpoint]
    diag = same[same.layer == same.ref_layer]
    assert len(diag) == 20 and np.allclose(diag.value, 1.0, atol=1e-9)  # a layer against itself
    for (ckpt, centring), g in same.groupby(["checkpoint", "centring"]):  # each own table is symmetric
        table = g.pivot(index="layer", columns="ref_layer", values="value").loc[layers, layers]
        assert np.allclose(table.values, table.values.T, atol=1e-12), (ckpt, centring)
    across = sim[diagonal]
    assert len(across) == 10 and (across.value < 1 - 1e-6).all()  # fine-tuning moved every layer a little


def test_similarity_of_a_folder_that_is_not_a_store(tmp_path):
    res = runner.invoke(app, ["similarity", str(tmp_path)])
    assert res.exit_code == 2 and "not an activation store" in res.output


def test_finetune_compares_checkpoints_on_one_split(tmp_path):
    res = runner.invoke(app, ["finetune", "-m", "toy:lm", "-m", "toy:mt", "--data", "bible:en,fr", "--limit", "40",
                              "--label", "testament", "--seeds", "0,1", "--steps", "2", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "toy:lm" in res.output and "toy:mt" in res.output and "majority baseline" in res.output
    df = read_results(tmp_path / "finetune.parquet")
    assert (tmp_path / "finetune.csv").is_file()
    assert tuple(df.columns[:len(RESULT_COLUMNS)]) == RESULT_COLUMNS
    assert {"task", "control", "lang", "seed"} <= set(df.columns)
    assert set(df.checkpoint) == {"toy:lm", "toy:mt"} and set(df.lang.dropna()) == {"en", "fr"}
    assert set(df.task) == {"testament"}
    acc = df[df.measure == "finetune.accuracy"]
    assert ((acc.value >= 0) & (acc.value <= 1)).all()
    runs = acc[acc.control.isna() & acc.seed.notna()]
    assert set(runs.seed.astype(int)) == {0, 1}
    # both heads by default (encoder-decoders): one row per (checkpoint, head, language, seed), the mean
    # over seeds, and the majority baseline
    keys = ["checkpoint", "readout", "lang"]
    assert runs.groupby(keys).size().to_dict() == {
        (c, h, lang): 2 for c in ("toy:lm", "toy:mt") for h in ("encoder-mean", "decoder-eos") for lang in ("en", "fr")}
    assert set(zip(acc.readout, acc.layer)) == {("encoder-mean", "encoder.last"), ("decoder-eos", "decoder.eos")}
    assert "decoder-eos" in res.output
    mean = acc[acc.control.isna() & acc.seed.isna()].set_index(keys)
    by_seed = runs.groupby(keys).value
    assert np.allclose(mean.value.sort_index(), by_seed.mean().sort_index())
    assert np.allclose(mean.ci_low.sort_index(), by_seed.min().sort_index())
    assert np.allclose(mean.ci_high.sort_index(), by_seed.max().sort_index())
    assert len(acc[acc.control == "majority"]) == 8
    n = acc.groupby("checkpoint").n.unique()
    assert n["toy:lm"].tolist() == n["toy:mt"].tolist()  # the same held-out verses for every checkpoint
    bad = runner.invoke(app, ["finetune", "-m", "toy:lm", "--data", "bible:en", "--seeds", "a", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "--seeds" in bad.output


def test_probe_prints_its_fold_unit_and_refuses_by_equal_to_task(toy_store, tmp_path):
    common = ["--n-boot", "0", "--folds", "2", "--controls", "", "--measures", "", "--out", str(tmp_path)]
    res = runner.invoke(app, ["probe", str(toy_store), "--task", "language", *common])
    assert res.exit_code == 0, res.output
    assert "folds by group (default for this task)" in res.output
    res = runner.invoke(app, ["probe", str(toy_store), "--task", "book", "--by", "book", *common])
    assert res.exit_code != 0
    assert "fold unit equals the task" in res.output and "absent from training" in res.output


def test_capture_of_an_encoder_decoder_defaults_to_the_encoder(tmp_path):
    res = runner.invoke(app, ["capture", "--model", "tiny:mbart", "--data", "bible:en?books=Ruth", "--limit", "4",
                              "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    aliases = {ActivationStore.open(tmp_path, create=False).entry(k)["info"]["alias"]
               for k in ActivationStore.open(tmp_path, create=False).keys()}
    assert aliases == {"encoder.embeddings", "encoder.0", "encoder.1", "encoder.final_norm"}
    assert "start prompt" in res.output
    res = runner.invoke(app, ["capture", "--model", "tiny:gpt2", "--data", "bible:en?books=Ruth", "--limit", "4",
                              "--out", str(tmp_path / "gpt")])  # a decoder-only model reads the text: every point
    assert res.exit_code == 0, res.output
    assert any(k.point.endswith("h.1") for k in ActivationStore.open(tmp_path / "gpt", create=False).keys())


def test_capture_teacher_forced_on_english_takes_decoder_rows_that_read_the_translation(tmp_path):
    res = runner.invoke(app, ["capture", "--model", "toy:mt", "--data", "bible:en,fr,de,ru?books=Ruth", "--limit", "24",
                              "--tgt", "en", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "teacher-forced on the parallel verse in en" in res.output and "dropped 24 of the target's own" in res.output
    store = ActivationStore.open(tmp_path, create=False)
    keys = {store.entry(k)["info"]["alias"]: k for k in store.keys()}
    assert {"encoder.embeddings", "encoder.0", "decoder.embeddings", "decoder.0", "decoder.final_norm"} <= set(keys)
    info = store.entry(keys["decoder.embeddings"])["info"]
    assert info["tgt"] == "en" and info["dataset_meta"]["targets"]["langs"] == ["en"]
    records = store.records(store.keys()[0].data)
    assert len(records) == 72 and {r.target_lang for r in records} == {"en"} and "en" not in set(records.langs)
    assert store.read(keys["decoder.embeddings"]).std(axis=0).mean() > 1e-3  # the decoder reads a text: rows vary
    # the source's language at decoder.embeddings: every source of a verse reads the same English verse
    res = runner.invoke(app, ["probe", str(tmp_path), "--task", "language", "--n-boot", "20", "--folds", "3",
                              "--controls", "", "--measures", "", "--out", str(tmp_path / "res")])
    assert res.exit_code == 0, res.output
    df = read_results(tmp_path / "res")
    acc = df[(df.measure == "probe.linear") & df.control.isna()].set_index("layer").value
    assert acc["decoder.embeddings"] < 0.45 and acc["encoder.final_norm"] > 0.9, acc.to_dict()  # 0.333: chance
    bad = runner.invoke(app, ["capture", "--model", "toy:mt", "--data", "bible:fr,de?books=Ruth", "--limit", "2",
                              "--tgt", "ru", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "bible:ru" in bad.output



def test_capture_tgt_each_and_tgt_from_another_corpus(tmp_path):
    res = runner.invoke(app, ["capture", "--model", "toy:mt", "--data", "bible:en,fr,de?books=Ruth", "--limit", "2",
                              "--tgt", "each", "--layers", "decoder.embeddings", "--out", str(tmp_path / "each")])
    assert res.exit_code == 0, res.output
    store = ActivationStore.open(tmp_path / "each", create=False)
    records = store.records(store.keys()[0].data)
    assert len(records) == 12 == len({r.id for r in records})  # 6 texts x 2 other languages
    assert all(r.labels["tgt_lang"] == r.target_lang != r.lang for r in records)
    res = runner.invoke(app, ["capture", "--model", "toy:mt", "--data", "bible:fr,de?books=Ruth", "--limit", "2",
                              "--tgt", "bible:en", "--layers", "decoder.embeddings", "--out", str(tmp_path / "en")])
    assert res.exit_code == 0, res.output
    store = ActivationStore.open(tmp_path / "en", create=False)
    assert store.entry(store.keys()[0])["info"]["dataset_meta"]["targets"]["pool"] == "bible:en"
    assert {r.target_lang for r in store.records(store.keys()[0].data)} == {"en"}


def test_capture_warns_when_a_toy_checkpoint_reads_books_it_trained_on(tmp_path):
    res = runner.invoke(app, ["capture", "--model", "toy:lm", "--data", "bible:en,fr?books=Genesis,Ruth", "--limit", "6",
                              "--layers", "encoder.0", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "books toy:lm trained on" in res.output and "Ruth, Jonah and John" in res.output
    held = runner.invoke(app, ["capture", "--model", "toy:lm", "--data", "bible:en,fr?books=Ruth", "--limit", "6",
                               "--layers", "encoder.0", "--out", str(tmp_path / "held")])
    assert held.exit_code == 0 and "trained on" not in held.output


def test_weights_ranks_layers_and_modules_against_the_control(tmp_path):
    res = runner.invoke(app, ["weights", "toy:lm", "toy:mt", "--control", "toy:lm-cont", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "encoder.0" in res.output and "beyond toy:lm-cont" in res.output
    df = read_results(tmp_path / "weights.parquet")
    assert set(df.checkpoint) == {"toy:mt", "toy:lm-cont"} and set(df.ref_checkpoint) == {"toy:lm"}
    bad = runner.invoke(app, ["weights", "toy:lm", "tiny:bart"])
    assert bad.exit_code == 2 and "second" in bad.output


# ------------------------------------------------------------------ --device of the suite commands
DEVICE_SUITE = """name: d
checkpoints: [{model: toy:lm, role: base}, toy:mt]
data: {corpus: bible, languages: [en, fr], books: [Ruth], size: 4}
measures: [transfer.gap: {task: book}, attribution.path: {n_steps: 2}]
"""


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="the refusal is for machines without a GPU")
@pytest.mark.parametrize("command", [["run", "SUITE"], ["demo"], ["compare", "toy:lm", "toy:mt"]])
def test_suite_commands_refuse_cuda_without_a_gpu_before_any_model_loads(command, tmp_path, monkeypatch):
    import xlprobe.loading

    monkeypatch.setattr(xlprobe.loading, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    (tmp_path / "s.yaml").write_text(DEVICE_SUITE)
    args = [str(tmp_path / "s.yaml") if a == "SUITE" else a for a in command]
    res = runner.invoke(app, [*args, "--device", "cuda", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2, res.output
    out = " ".join(res.output.split())
    assert "--device" in out and "CUDA" in out and "--device cpu" in out and "--device auto" in out
    assert not (tmp_path / "o").exists()


def test_run_device_replaces_the_suites_before_its_check(tmp_path, monkeypatch):
    import xlprobe.suite_run

    seen = []
    monkeypatch.setattr(xlprobe.suite_run, "run_suite", lambda suite, out, **k: seen.append(suite.device) or [])
    (tmp_path / "s.yaml").write_text(DEVICE_SUITE + "device: cuda:7\n")  # refused here without --device
    res = runner.invoke(app, ["run", str(tmp_path / "s.yaml"), "--device", "cpu", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert seen == ["cpu"]


def test_compare_writes_its_device_into_the_suite():
    from xlprobe.cli_study import compare_suite_text
    from xlprobe.suite import parse_suite

    kw = dict(data="bible", languages=["en"], books=["Ruth"], size=4, layers="encoder.*", control=None, n_boot=10)
    default = compare_suite_text("toy:lm", "toy:mt", **kw)
    assert "device" not in default and parse_suite(default).device == "cpu"
    assert compare_suite_text("toy:lm", "toy:mt", device="cpu", **kw) == default
    assert parse_suite(compare_suite_text("toy:lm", "toy:mt", device="cuda:1", **kw)).device == "cuda:1"
