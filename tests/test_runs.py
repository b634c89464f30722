"""`xlprobe probe RUN_DIR`: probe suites over a captured store, with the tag baseline and controls."""
from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from xlprobe.cli import app
from xlprobe.errors import DataError, StoreError
from xlprobe.results import read_results
from xlprobe.runs import labels_for, probe_run

runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    base = ["--model", "tiny:mbart", "--data", "bible:en,fr,de?books=Ruth", "--limit", "40", "--out", str(out)]
    res = runner.invoke(app, ["capture", *base, "--layers", "encoder.0,encoder.1"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["capture", *base, "--layers", "encoder.0", "--pooling", "tag"])
    assert res.exit_code == 0, res.output
    return out


def test_probe_run_writes_rows_for_every_layer_control_and_the_tag_baseline(run_dir):
    df = probe_run(run_dir, n_boot=50, k=4)
    assert set(zip(df.layer, df.pooling)) == {("encoder.0", "mean"), ("encoder.1", "mean"), ("encoder.0", "tag")}
    assert set(df.control.dropna()) == {"majority", "shuffled", "control-task"}
    assert set(df.checkpoint) == {"tiny:mbart"} and (df.n == 120).all() and set(df.task.dropna()) == {"language"}
    tag = df[(df.pooling == "tag") & df.control.isna() & (df.measure == "probe.linear")].value.iloc[0]
    assert tag > 0.95  # the language code alone identifies the language: the baseline a text probe must beat
    assert set(df[df.pooling == "tag"].measure) == {"probe.linear", "probe.linear.selectivity"}
    saved = read_results(run_dir / "results.parquet")
    assert len(saved) == len(df) and (run_dir / "results.csv").is_file()


def test_cli_probe_prints_the_table_and_writes_results(run_dir, tmp_path):
    res = runner.invoke(app, ["probe", str(run_dir), "--task", "language", "--n-boot", "20", "--folds", "3",
                              "--controls", "majority", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "encoder.1" in res.output and (tmp_path / "results.parquet").is_file()
    saved = read_results(tmp_path / "results.parquet")
    assert set(saved[saved.measure.str.startswith("probe.")].control.dropna()) == {"majority"}


def test_unknown_task_lists_the_labels(run_dir):
    with pytest.raises(DataError, match="task 'sentiment'") as err:
        probe_run(run_dir, task="sentiment", n_boot=0)
    assert "testament" in err.value.hint and "genre" in err.value.hint


def test_not_a_store_and_missing_pooling(run_dir, tmp_path):
    with pytest.raises(StoreError, match="not an activation store"):
        probe_run(tmp_path)
    with pytest.raises(StoreError, match="no shards with pooling 'max'") as err:
        probe_run(run_dir, pooling="max")
    assert "mean" in err.value.hint
    res = runner.invoke(app, ["probe", str(tmp_path)])
    assert res.exit_code == 2 and "not an activation store" in res.output


def test_labels_for_language_and_labels(run_dir):
    from xlprobe.store import ActivationStore

    store = ActivationStore.open(run_dir)
    data = store.records(store.keys()[0].data)
    assert set(labels_for(data, "language")) == {"en", "fr", "de"}
    testament = labels_for(data, "testament")
    assert testament.tolist() == [str(r.labels["testament"]) for r in data] and len(set(testament)) == 1  # Ruth


def test_per_layer_measures_are_added_and_can_be_switched_off(run_dir, tmp_path):
    df = probe_run(run_dir, n_boot=0, k=4, controls=(), out=tmp_path)
    mean = df[df.pooling == "mean"]
    for name in ("separability.knn", "separability.fisher", "geometry.effective_rank", "retrieval.p_at_1.centered"):
        assert set(mean[mean.measure == name].layer) == {"encoder.0", "encoder.1"}, name
    assert set(mean[mean.measure == "retrieval.p_at_1"].task) == {"language"}
    knn = mean[mean.measure == "separability.knn"].set_index(["layer", mean.control.fillna("task")[mean.measure == "separability.knn"]])
    for layer in ("encoder.0", "encoder.1"):  # language is far easier to tell apart than shuffled labels
        assert knn.loc[(layer, "task"), "value"] > knn.loc[(layer, "shuffled"), "value"] + 0.2
    assert mean[mean.measure == "geometry.effective_rank"].control.isna().all()  # unlabelled: no control
    none = probe_run(run_dir, n_boot=0, k=4, controls=(), measures=(), out=tmp_path)
    assert set(none.measure) == {"probe.linear"}
    with pytest.raises(Exception, match="cka"):
        probe_run(run_dir, n_boot=0, k=4, controls=(), measures=("cka.linear",), out=tmp_path)


def test_similarity_between_checkpoints(tmp_path):
    base = ["--data", "bible:en,fr?books=Ruth", "--limit", "20", "--out", str(tmp_path), "--layers", "encoder.*"]
    for spec in ("tiny:mbart", "tiny:mbart"):  # the same model twice adds nothing: one checkpoint
        assert runner.invoke(app, ["capture", "--model", spec, *base]).exit_code == 0
    res = runner.invoke(app, ["similarity", str(tmp_path)])
    assert res.exit_code == 0, res.output
    sim = read_results(tmp_path / "similarity.parquet")
    assert set(sim.checkpoint) == {"tiny:mbart"} == set(sim.ref_checkpoint)
    diag = sim[sim.layer == sim.ref_layer]
    assert len(diag) == 4 and (abs(diag.value - 1) < 1e-9).all()
    off = sim[sim.layer != sim.ref_layer]
    assert (off.value < 1).all() and (off.value > 0).all() and (sim.n == 40).all()


def test_cli_finetune_compares_checkpoints_on_one_split(tmp_path):
    res = runner.invoke(app, ["finetune", "-m", "toy:lm", "-m", "toy:mt", "--data", "bible:en,fr", "--limit", "60",
                              "--label", "testament", "--seeds", "0", "--steps", "3", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    df = read_results(tmp_path / "finetune.parquet")
    assert set(df.checkpoint) == {"toy:lm", "toy:mt"} and set(df.lang.dropna()) == {"en", "fr"}
    n = df[df.measure == "finetune.accuracy"].groupby("checkpoint").n.first()
    assert n["toy:lm"] == n["toy:mt"]  # the same held-out verses for every checkpoint
    bad = runner.invoke(app, ["finetune", "-m", "toy:lm", "--data", "bible:en", "--seeds", "a", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "--seeds" in bad.output


def test_a_constant_layer_gets_nan_measures_not_a_failed_run(tmp_path):
    """The decoder reading only </s> (no target language) gives one vector for every text."""
    base = ["--model", "tiny:mbart", "--data", "bible:en,fr?books=Ruth", "--limit", "20", "--out", str(tmp_path)]
    assert runner.invoke(app, ["capture", *base, "--layers", "decoder.embeddings,encoder.0"]).exit_code == 0
    df = probe_run(tmp_path, n_boot=0, k=3, controls=("majority",))
    fisher = df[(df.measure == "separability.fisher") & df.control.isna()].set_index("layer").value
    assert np.isnan(fisher["decoder.embeddings"]) and np.isfinite(fisher["encoder.0"])
    probe = df[(df.measure == "probe.linear") & df.control.isna()].set_index("layer").value
    assert probe["decoder.embeddings"] <= 0.6  # nothing to read: about chance for two languages
