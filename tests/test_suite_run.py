"""xlprobe run: a suite captured once per checkpoint, every planned measure, resumable, tidy results."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from xlprobe.cli import app
from xlprobe.suite import parse_suite
from xlprobe.suite_run import plan_suite, run_suite

SUITE = """\
name: mini
checkpoints:
  - {model: toy:lm, role: base}
  - toy:mt
  - {model: toy:lm-cont, role: control}
data: {corpus: bible, languages: [en, fr], books: [Ruth, Jonah], size: 24}
layers: [encoder.0]
measures:
  - probe.linear: {task: language}
  - separability.knn
  - cka.linear.debiased
  - weights.rel_change
  - transfer.gap
figures: [layer_curves, umap, cka_heatmap, weight_bars]
n_boot: 50
"""


def test_the_plan_sorts_measures_into_steps_and_names_what_waits():
    plan = plan_suite(parse_suite(SUITE))
    assert plan.probes == {("language", "linear"): ["separability.knn"]}
    assert plan.cka == ["cka.linear.debiased"] and plan.weights == ["weights.rel_change"]
    assert plan.pending == ["transfer.gap"] and "not run by a suite yet: transfer.gap" in plan.lines()
    assert plan.data == "bible:en,fr?books=Ruth,Jonah" and plan.limit == 24


@pytest.mark.slow
def test_a_suite_runs_once_resumes_and_gives_the_same_results(tmp_path):
    suite = parse_suite(SUITE)
    first = run_suite(suite, tmp_path)
    assert {"probe.linear", "separability.knn", "cka.linear.debiased", "weights.rel_change"} <= set(first.measure)
    assert set(first[first.measure == "weights.rel_change"].checkpoint) == {"toy:mt", "toy:lm-cont"}
    prov = json.loads((tmp_path / "provenance.json").read_text())
    assert prov["n_records"] == 48 and set(prov["seconds"]["capture"]) == {"toy:lm", "toy:mt", "toy:lm-cont"}
    assert (tmp_path / "comparisons.parquet").is_file()
    assert prov["figures"] == ["cka_heatmap.png", "cka_heatmap.svg", "layer_curves.png", "layer_curves.svg",
                               "umap.png", "umap.svg", "weight_bars.png", "weight_bars.svg"]
    assert prov["figures_pending"] == []
    assert (tmp_path / "figures" / "umap.png").stat().st_size > 10_000
    done = {p: p.stat().st_mtime_ns for p in (tmp_path / "steps").glob("*/done.json")}
    again = run_suite(suite, tmp_path)  # nothing recomputed
    assert {p: p.stat().st_mtime_ns for p in done} == done
    pd.testing.assert_frame_equal(first, again)
    (tmp_path / "steps" / "probe-language-linear" / "done.json").unlink()  # as if killed inside the step
    redone = run_suite(suite, tmp_path)
    pd.testing.assert_frame_equal(first, redone)


def test_cli_dry_run_prints_the_plan_and_loads_nothing(tmp_path, monkeypatch):
    import xlprobe.loading

    monkeypatch.setattr(xlprobe.loading, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    file = tmp_path / "s.yaml"
    file.write_text(SUITE)
    res = CliRunner().invoke(app, ["run", str(file), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "toy:lm (base)" in res.output and "similarity: cka.linear.debiased" in res.output
    file.write_text(SUITE.replace("separability.knn", "separability.knm"))
    res = CliRunner().invoke(app, ["run", str(file), "--dry-run"])
    assert res.exit_code == 2 and "s.yaml:10: measures[1].separability.knm" in res.output and "separability.knn" in res.output
