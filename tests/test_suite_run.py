"""xlprobe run: a suite captured once per checkpoint, every planned measure, resumable, tidy results."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from xlprobe.cli import app
from xlprobe.suite import parse_suite
from xlprobe.suite_run import COSTS, estimate_suite, plan_suite, run_suite

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
  - transfer.gap: {task: book}
  - attribution.path: {n_steps: 4, max_items: 48}
  - tokens.share
figures: [layer_curves, umap, cka_heatmap, weight_bars]
n_boot: 50
"""

#: Transfer and attribution alone, on three toy checkpoints and a few verses (5-7 s on 2 idle cores).
TABLES = """\
name: tables
checkpoints:
  - {model: toy:lm, role: base}
  - toy:mt
  - {model: toy:lm-cont, role: control}
  - random-init:toy:lm
data: {corpus: bible, languages: [en, fr, de], books: [Ruth, Jonah], size: 30}
layers: [encoder.0, encoder.2]
measures:
  - probe.linear: {task: language}
  - transfer.gap: {task: book, train_lang: en}
  - attribution.path: {n_steps: 4, max_items: 60}
n_boot: 20
"""


def test_the_plan_sorts_measures_into_steps_and_names_what_waits():
    plan = plan_suite(parse_suite(SUITE))
    assert plan.probes == {("language", "linear"): ["separability.knn"]}
    assert plan.cka == ["cka.linear.debiased"] and plan.weights == ["weights.rel_change"]
    assert plan.transfer == {"transfer-book-en": {"task": "book", "train_lang": "en"}}
    assert plan.attribution["n_steps"] == 4 and plan.attribution["max_items"] == 48
    assert plan.attribution["task"] == "book" and plan.attribution["layer"] is None  # the transfer call's task
    assert plan.pending == ["tokens.share"] and "not run by a suite yet: tokens.share" in plan.lines()
    assert plan.steps() == ["probe-language-linear", "similarity", "weights", "transfer-book-en", "attribution"]
    assert plan.data == "bible:en,fr?books=Ruth,Jonah" and plan.limit == 24
    # transfer.gap and transfer.accuracy with the same keywords are one step
    both = plan_suite(parse_suite(SUITE.replace("  - tokens.share\n", "  - transfer.accuracy: {task: book}\n")))
    assert list(both.transfer) == ["transfer-book-en"] and both.pending == []


def test_the_estimate_scales_with_the_data_and_loads_no_model(monkeypatch):
    import xlprobe.loading

    monkeypatch.setattr(xlprobe.loading, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    small = estimate_suite(parse_suite(SUITE))
    big = estimate_suite(parse_suite(SUITE.replace("size: 24", "size: 48")))
    assert small.records == 48 and big.records == 96
    assert small.shapes["toy:lm"].points == 1 and small.shapes["toy:lm"].hidden == 128
    assert small.disk_bytes == 3 * 48 * 1 * 128 * 4 and big.disk_bytes == 2 * small.disk_bytes
    wide = estimate_suite(parse_suite(SUITE.replace("layers: [encoder.0]", "layers: encoder.*")))
    assert wide.disk_bytes == 5 * small.disk_bytes  # embeddings, 3 blocks, final norm
    wide_seconds = wide.seconds.get
    fixed = COSTS["step_overhead"]
    assert (big.seconds["similarity"] - fixed) / (small.seconds["similarity"] - fixed) == pytest.approx(2.0)
    for step in ("probe-language-linear", "transfer-book-en"):  # a fixed part per layer, then linear
        assert small.seconds[step] < big.seconds[step] < 2 * small.seconds[step], step
        assert wide_seconds(step) - fixed == pytest.approx(5 * (small.seconds[step] - fixed)), step  # per layer
    assert big.seconds["attribution"] == small.seconds["attribution"]  # max_items: 48 records either way
    assert big.seconds["capture"] > small.seconds["capture"]
    text = "\n".join(small.lines())
    assert "store (pooled float32): 73.7 KB" in text and "time in all: about" in text
    unknown = estimate_suite(parse_suite(SUITE.replace("  - toy:mt\n", "  - nobody/no-such-model\n")))
    assert unknown.shapes["nobody/no-such-model"] is None and unknown.disk_bytes is None
    text = "\n".join(unknown.lines())
    assert "nobody/no-such-model: unknown" in text and "store (pooled float32): unknown" in text


def test_the_gap_per_group_averages_to_the_mean_gap_over_languages():
    from xlprobe.suite_steps import gap_per_group as _gap_per_group

    langs = np.array(["en", "fr", "de"] * 4)
    groups = np.repeat(["g1", "g2", "g3", "g4"], 3)
    correct = np.array([1, 0, 1, 1, 1, 1, 0, 0, 1, np.nan, np.nan, np.nan])  # g4 untested
    per = _gap_per_group(correct, langs, groups, "en")
    assert list(per.index) == ["g1", "g2", "g3"] and per.tolist() == [0.5, 0.0, -0.5]
    acc = {lg: np.nanmean(correct[langs == lg]) for lg in ("en", "fr", "de")}
    assert per.mean() == pytest.approx(np.mean([acc["en"] - acc["fr"], acc["en"] - acc["de"]]))


def test_transfer_and_attribution_rows_with_paired_contrasts_of_the_mean_gap(tmp_path):
    suite = parse_suite(TABLES)
    res = run_suite(suite, tmp_path)
    gap = res[res.measure == "transfer.gap"]
    ckpts = {"toy:lm", "toy:mt", "toy:lm-cont", "random-init:toy:lm"}
    assert set(gap.checkpoint) == ckpts and set(gap.layer) == {"encoder.0", "encoder.2"}
    assert set(gap.lang) == {"fr", "de"} and (gap.task == "book").all() and gap.ci_low.notna().all()
    acc = res[res.measure == "transfer.accuracy"]
    assert set(acc.lang.dropna()) == {"en", "fr", "de"} and (acc.control == "majority").sum() == 8
    comp = pd.read_parquet(tmp_path / "comparisons.parquet")
    tc = comp[comp.measure == "transfer.gap"]
    assert set(zip(tc.checkpoint, tc.ref_checkpoint)) == {("toy:mt", "toy:lm"), ("toy:lm-cont", "toy:lm"),
                                                          ("toy:mt", "toy:lm-cont")}
    assert "random-init:toy:lm" not in set(tc.checkpoint) | set(tc.ref_checkpoint)
    mean_gap = gap.groupby(["checkpoint", "layer"]).value.mean()
    for r in tc.itertuples():  # the contrast is the difference of the mean gaps over languages
        assert r.value == pytest.approx(mean_gap[r.checkpoint, r.layer] - mean_gap[r.ref_checkpoint, r.layer])
        assert r.ci_low <= r.value <= r.ci_high and 0 <= r.p_value <= 1
    attr = res[res.measure == "attribution.path"]
    assert set(attr.checkpoint) == {"toy:mt", "toy:lm-cont"} and set(attr.ref_checkpoint) == {"toy:lm"}
    assert (attr.read_point == "encoder.2").all() and (attr.grouping == "layer_module").all()
    for _, a in attr.groupby("checkpoint"):
        change = a.metric_b.iloc[0] - a.metric_a.iloc[0]
        assert abs(a.value.sum() - change) == pytest.approx(a.delta.iloc[0], abs=1e-9)
        assert np.isfinite(a.delta.iloc[0]) and a.n_items.iloc[0] <= 60
    prov = json.loads((tmp_path / "provenance.json").read_text())
    assert {"transfer-book-en", "attribution"} <= set(prov["seconds"])
    assert (tmp_path / "steps" / "attribution" / "done.json").is_file()


def test_attribution_reads_only_the_languages_it_is_given(monkeypatch):
    import xlprobe.path_metrics
    from xlprobe.suite_plan import suite_data
    from xlprobe.suite_steps import attribution_step

    seen: list[set] = []

    class Spy:  # the metric's data is all this test reads
        def __init__(self, tok, data, **kw):
            seen.append({r.lang for r in data})

        def __call__(self, model):
            return sum(p.sum() for p in model.parameters()) * 0.0

    monkeypatch.setattr(xlprobe.path_metrics, "TransferGap", Spy)
    suite = parse_suite(TABLES.replace("max_items: 60}", "max_items: 60, languages: [en, fr]}"))
    rows = attribution_step(suite, suite_data(suite), plan_suite(suite).attribution)
    assert seen == [{"en", "fr"}] and set(rows.checkpoint) == {"toy:mt", "toy:lm-cont"}


def test_balance_draws_the_groups_class_by_class_up_to_the_rarest_class():
    from collections import Counter

    from xlprobe.suite_plan import suite_data

    suite = parse_suite(SUITE.replace("size: 24}", "size: 24, balance: book}"))
    data = suite_data(suite)
    books = Counter(r.labels["book"] for r in data if r.lang == "en")
    assert len(books) == 2 and set(books.values()) == {12} and len(data) == 48
    suite = parse_suite(SUITE.replace("size: 24}", "size: 400, balance: book}"))  # Jonah has 48 verses
    assert set(Counter(r.labels["book"] for r in suite_data(suite) if r.lang == "en").values()) == {48}
    assert "balanced by book" in plan_suite(suite).lines()[0]


@pytest.mark.slow
def test_a_suite_runs_once_resumes_and_gives_the_same_results(tmp_path):
    suite = parse_suite(SUITE)
    first = run_suite(suite, tmp_path)
    assert {"probe.linear", "separability.knn", "cka.linear.debiased", "weights.rel_change", "transfer.gap",
            "transfer.accuracy", "attribution.path"} <= set(first.measure)
    assert set(first[first.measure == "weights.rel_change"].checkpoint) == {"toy:mt", "toy:lm-cont"}
    prov = json.loads((tmp_path / "provenance.json").read_text())
    assert prov["n_records"] == 48 and set(prov["seconds"]["capture"]) == {"toy:lm", "toy:mt", "toy:lm-cont"}
    assert (tmp_path / "comparisons.parquet").is_file()
    assert prov["figures"] == ["cka_heatmap.png", "cka_heatmap.svg", "layer_curves.png", "layer_curves.svg",
                               "umap.png", "umap.svg", "weight_bars.png", "weight_bars.svg"]
    assert prov["figures_pending"] == []
    assert (tmp_path / "figures" / "umap.png").stat().st_size > 10_000
    page, md = (tmp_path / "report.html").read_text(), (tmp_path / "report.md").read_text()
    for call in suite.measures:  # the report holds every measure of its suite
        assert call.name in page and call.name in md
    assert page.count("data:image/png;base64,") == 4 and set(prov["versions"]) >= {"torch", "transformers"}
    done = {p: p.stat().st_mtime_ns for p in (tmp_path / "steps").glob("*/done.json")}
    again = run_suite(suite, tmp_path)  # nothing recomputed
    assert {p: p.stat().st_mtime_ns for p in done} == done
    pd.testing.assert_frame_equal(first, again)
    (tmp_path / "steps" / "probe-language-linear" / "done.json").unlink()  # as if killed inside the step
    redone = run_suite(suite, tmp_path)
    pd.testing.assert_frame_equal(first, redone)


def _xlprobe_run(suite_file, out) -> list[str]:
    return [sys.executable, "-m", "xlprobe", "run", str(suite_file), "--out", str(out)]


@pytest.mark.slow
def test_xlprobe_run_killed_mid_run_resumes_to_the_same_results(tmp_path):
    file = tmp_path / "s.yaml"
    file.write_text(TABLES.replace("n_steps: 4", "n_steps: 8"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    whole = subprocess.run(_xlprobe_run(file, tmp_path / "whole"), env=env, capture_output=True, text=True,
                           timeout=600)
    assert whole.returncode == 0, whole.stderr[-2000:]
    assert "transfer-book-en" in whole.stderr  # the progress: a line per step with its time
    out = tmp_path / "killed"
    proc = subprocess.Popen(_xlprobe_run(file, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not list((out / "steps").glob("*/done.json")) and time.monotonic() < deadline:
            assert proc.poll() is None, "the run ended before any step was done"
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "provenance.json").exists() and not (out / "results.parquet").exists()
    assert len(list((out / "steps").glob("*/done.json"))) < 3  # killed with steps left to do
    again = subprocess.run(_xlprobe_run(file, out), env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "done before, kept" in again.stderr
    pd.testing.assert_frame_equal(pd.read_parquet(out / "results.parquet"),
                                  pd.read_parquet(tmp_path / "whole" / "results.parquet"))
    pd.testing.assert_frame_equal(pd.read_parquet(out / "comparisons.parquet"),
                                  pd.read_parquet(tmp_path / "whole" / "comparisons.parquet"))


def test_a_tiny_suite_runs_end_to_end(tmp_path, caplog):
    suite = parse_suite("""\
name: tiny
checkpoints:
  - {model: tiny:mbart, role: base}
  - tiny:xlmr
  - random-init@1:tiny:mbart                # tiny:mbart is itself seed 0's random weights
data: {corpus: bible, languages: [en, fr], books: [Ruth, Jonah], size: 16}
layers: encoder.*
measures:
  - probe.linear: {task: language}
  - transfer.gap: {task: book}
  - attribution.path: {n_steps: 2}
n_boot: 10
""")
    est = estimate_suite(suite)
    assert est.shapes["tiny:mbart"].hidden == 32 and est.shapes["tiny:xlmr"].points == 3
    with caplog.at_level("WARNING"):
        res = run_suite(suite, tmp_path)
    assert {"tiny:mbart", "tiny:xlmr"} <= set(res[res.measure == "probe.linear"].checkpoint)
    assert set(res[res.measure == "transfer.gap"].checkpoint) == {"tiny:mbart", "tiny:xlmr",
                                                                     "random-init@1:tiny:mbart"}
    assert "attribution.path" not in set(res.measure)  # no other checkpoint of mbart's architecture
    assert "no checkpoint shares the architecture" in caplog.text
    assert (tmp_path / "steps" / "attribution" / "done.json").is_file()
    store = sum(f.stat().st_size for f in (tmp_path / "store" / "shards").glob("*.safetensors"))
    assert 0.9 * est.disk_bytes <= store <= 1.1 * est.disk_bytes + 50_000  # shard headers aside


def test_cli_dry_run_prints_the_plan_and_the_estimate_and_loads_nothing(tmp_path, monkeypatch):
    import xlprobe.loading

    monkeypatch.setattr(xlprobe.loading, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    file = tmp_path / "s.yaml"
    file.write_text(SUITE)
    res = CliRunner().invoke(app, ["run", str(file), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "toy:lm (base)" in res.output and "similarity: cka.linear.debiased" in res.output
    assert "transfer of book from en" in res.output and "attribution.path of the book transfer gap" in res.output
    assert "store (pooled float32): 73.7 KB" in res.output and "time in all" in res.output
    assert not (tmp_path / "steps").exists()
    file.write_text(SUITE.replace("separability.knn", "separability.knm"))
    res = CliRunner().invoke(app, ["run", str(file), "--dry-run"])
    assert res.exit_code == 2 and "s.yaml:10: measures[1].separability.knm" in res.output and "separability.knn" in res.output


def test_attribution_on_the_suites_cpu_device_gives_the_rows_of_the_default(monkeypatch):
    import xlprobe.loading
    from xlprobe.suite_plan import suite_data
    from xlprobe.suite_steps import attribution_step

    devices = []
    load = xlprobe.loading.load_model
    monkeypatch.setattr(xlprobe.loading, "load_model", lambda spec, **k: devices.append(k.get("device")) or
                        load(spec, **k))
    small = TABLES.replace("max_items: 60}", "max_items: 24}").replace("  - toy:mt\n", "")
    default, explicit = parse_suite(small), parse_suite(small + "device: cpu\n")
    rows = attribution_step(default, suite_data(default), plan_suite(default).attribution)
    assert devices == ["cpu", "cpu"]  # base and the one other checkpoint of its architecture, moved to the device
    again = attribution_step(explicit, suite_data(explicit), plan_suite(explicit).attribution)
    pd.testing.assert_frame_equal(rows, again)
    assert set(rows.checkpoint) == {"toy:lm-cont"} and len(rows) > 0


NPROC = """\
name: nproc
checkpoints:
  - {model: toy:lm, role: base}
  - toy:mt
data: {corpus: bible, languages: [en, fr], books: [Ruth], size: 40}
layers: [encoder.0, encoder.2]
measures:
  - probe.linear: {task: language}
  - cka.linear.debiased
n_boot: 20
"""


@pytest.mark.slow
def test_run_with_two_processes_equals_one_process(tmp_path):
    suite = tmp_path / "nproc.yaml"
    suite.write_text(NPROC)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    runs = {}
    for n in (1, 2):
        out = tmp_path / f"run{n}"
        done = subprocess.run([sys.executable, "-m", "xlprobe", "run", str(suite), "--out", str(out),
                               "--nproc", str(n)], capture_output=True, text=True, timeout=600, env=env)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        runs[n] = out
    one, two = (pd.read_parquet(runs[n] / "results.parquet") for n in (1, 2))
    cols = ["measure", "checkpoint", "layer", "control", "value", "ci_low", "ci_high"]
    cols = [c for c in cols if c in one.columns]
    pd.testing.assert_frame_equal(one[cols].reset_index(drop=True), two[cols].reset_index(drop=True))
    assert (runs[2] / "report.html").exists() and not list((runs[2] / "store" / "shards").glob("*.parts"))
    from xlprobe.store import ActivationStore

    a, b = ActivationStore.open(runs[1] / "store"), ActivationStore.open(runs[2] / "store")
    assert a.keys() == b.keys() and b.verify() == []
    for k in a.keys():
        assert np.array_equal(np.asarray(a.read(k)), np.asarray(b.read(k)))


def test_the_weights_step_writes_the_spectra_the_figure_reads(tmp_path):
    from xlprobe.suite_steps import weights_step

    suite = parse_suite(TABLES.replace("n_boot: 20", "n_boot: 20\nfigures: [weight_spectra]"))
    rows = weights_step(suite, ["weights.rel_change"], tmp_path, spectra=True)
    table = pd.read_parquet(tmp_path / "spectra.parquet")
    assert set(table.checkpoint) == {"toy:mt", "toy:lm-cont"} == set(rows.checkpoint)  # random-init left out
    params = list(dict.fromkeys(table.param))
    assert params == ["model.encoder.layers.1.fc1.weight", "model.encoder.layers.1.self_attn.q_proj.weight",
                      "model.decoder.layers.1.encoder_attn.v_proj.weight"]  # middle blocks, in drawing order
    one = table[(table.param == params[0]) & (table.checkpoint == "toy:mt")]
    assert set(one.which) == {"a", "b", "delta"} and (one.sigma >= 0).all()
    a = one[one.which == "a"].sigma.to_numpy()
    assert np.all(np.diff(a) <= 1e-9) and a[0] > 0  # singular values, largest first
    weights_step(suite, ["weights.rel_change"], tmp_path / "none", spectra=False)
    assert not (tmp_path / "none" / "spectra.parquet").exists()
