"""The command line: each command end to end on tiny models and a slice of the real corpus."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from xlprobe.cli import app
from xlprobe.store import ActivationStore

runner = CliRunner()


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


def test_capture_writes_store_and_second_run_skips(tmp_path):
    out = tmp_path / "run"
    args = ["capture", "--model", "tiny:mbart", "--data", "bible:en,fr?books=Ruth", "--limit", "12",
            "--layers", "encoder.0,encoder.final_norm", "--out", str(out)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    store = ActivationStore.open(out, create=False)
    keys = store.keys()
    assert len(keys) == 2 and store.read(keys[0]).shape == (24, 32)
    assert store.entry(keys[0])["info"]["command"].startswith("xlprobe")
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and len(ActivationStore.open(out).keys()) == 2
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


def test_toy_train_quick_then_resume_is_a_no_op(tmp_path):
    out = tmp_path / "toy"
    res = runner.invoke(app, ["toy", "train", "--out", str(out), "--preset", "quick"])
    assert res.exit_code == 0, res.output
    assert (out / "checkpoints" / "mt" / "config.json").is_file()
    assert "lm-cont" in res.output and "chrF" in res.output
    first = (out / "summary.json").read_text()
    again = runner.invoke(app, ["toy", "train", "--out", str(out), "--preset", "quick"])
    assert again.exit_code == 0 and (out / "summary.json").read_text() == first
