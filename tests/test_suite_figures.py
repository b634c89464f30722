"""The suite's figure step: paired differences, weight bars and spectra, attribution bars drawn from a run's rows.

Small constructed tables (no capture, no probe): each kind is drawn when its rows are there and listed as
pending when they are not; a drawn figure is kept on a resumed run.
"""
from __future__ import annotations

import logging

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from xlprobe.suite import parse_suite  # noqa: E402
from xlprobe.suite_figures import DRAWN, draw_figures  # noqa: E402

SUITE = """\
name: figs
checkpoints:
  - {model: toy:lm, role: base}
  - toy:mt
  - {model: toy:lm-cont, role: control}
data: {corpus: bible, languages: [en, fr], books: [Ruth], size: 8}
layers: [encoder.0]
measures: [separability.knn, weights.rel_change]
figures: [paired_differences, weight_bars, weight_spectra, attribution_bars]
"""
LAYERS = ("encoder.embeddings", "encoder.0", "encoder.1")


def _results(attribution=True):
    rows = []
    for c in ("toy:mt", "toy:lm-cont"):
        for i, layer in enumerate(LAYERS):
            rows.append(dict(checkpoint=c, layer=layer, measure="separability.knn", value=0.5 + 0.1 * i, n=8,
                             task="language"))
        for side, layer, module, name in (
                ("encoder", "encoder.1", "fc1", "model.encoder.layers.1.fc1.weight"),
                ("encoder", "encoder.1", "q", "model.encoder.layers.1.self_attn.q_proj.weight"),
                ("decoder", "decoder.1", "cross_v", "model.decoder.layers.1.encoder_attn.v_proj.weight"),
                ("encoder", "encoder.0", "fc1", "model.encoder.layers.0.fc1.weight")):
            rows.append(dict(checkpoint=c, ref_checkpoint="toy:lm", layer=layer, measure="weights.rel_change",
                             value=0.5, side=side, module=module, param=name, norm_a=2.0, norm_delta=1.0, n=16))
        if attribution:
            for g, v in (("encoder.0", -0.02), ("encoder.1", 0.01), ("embeddings", 0.0)):
                rows.append(dict(checkpoint=c, ref_checkpoint="toy:lm", layer=g, measure="attribution.path",
                                 value=v, group=g, grouping="layer", delta=1e-4, share=v / -0.01,
                                 metric_a=0.3, metric_b=0.29, n=4))
    return pd.DataFrame(rows)


def _comparisons():
    rows = []
    for c in ("toy:mt",):
        for i, layer in enumerate(LAYERS):
            rows.append(dict(checkpoint=c, layer=layer, measure="separability.knn", value=-0.1 * i, ci_low=-0.1 * i - 0.02,
                             ci_high=-0.1 * i + 0.02, ref_checkpoint="toy:lm-cont", contrast="vs control",
                             task="language", p_value=0.01, p_adjusted=[1.0, 0.01, 0.001][i],
                             correction="holm over 3 layers"))
    return pd.DataFrame(rows)


def _spectra_table(folder):
    """The weights step's side table: singular values of two matrices, base / checkpoint / delta."""
    import numpy as np

    rows = []
    for c in ("toy:mt", "toy:lm-cont"):
        for name in ("model.encoder.layers.1.fc1.weight", "model.encoder.layers.1.self_attn.q_proj.weight"):
            for which, scale in (("a", 1.0), ("b", 1.1), ("delta", 0.2)):
                rows += [dict(param=name, which=which, index=i, sigma=float(v), checkpoint=c, ref_checkpoint="toy:lm")
                         for i, v in enumerate(scale * np.geomspace(4, 0.1, 16))]
    folder.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(folder / "spectra.parquet")


def test_each_kind_is_drawn_from_its_rows_and_kept_on_resume(tmp_path, monkeypatch):
    import xlprobe.loading

    monkeypatch.setattr(xlprobe.loading, "load_model", lambda *a, **k: pytest.fail("a figure loaded a model"))
    suite = parse_suite(SUITE)
    _comparisons().to_parquet(tmp_path / "comparisons.parquet")
    _spectra_table(tmp_path / "steps" / "weights")
    written, pending = draw_figures(suite, tmp_path, _results())
    names = sorted(p.name for p in written)
    assert names == sorted(f"{k}.{e}" for k in suite.figures for e in ("png", "svg"))
    assert pending == [] and set(suite.figures) <= set(DRAWN)
    assert all((tmp_path / "figures" / n).stat().st_size > 5_000 for n in names)
    again, pending = draw_figures(suite, tmp_path, _results())
    assert again == [] and pending == []


def test_kinds_without_rows_are_pending(tmp_path, caplog):
    suite = parse_suite(SUITE.replace("weight_spectra, ", ""))
    no_weights = _results(attribution=False)
    no_weights = no_weights[no_weights.measure != "weights.rel_change"]
    written, pending = draw_figures(suite, tmp_path, no_weights)  # and no comparisons.parquet
    assert written == [] and pending == ["paired_differences", "weight_bars", "attribution_bars"]
    bad = _results().assign(grouping="layer")
    bad = pd.concat([bad, bad[bad.measure == "attribution.path"].assign(metric="other")])
    with caplog.at_level(logging.WARNING):
        written, pending = draw_figures(parse_suite(SUITE.replace("paired_differences, weight_bars, weight_spectra, ",
                                                                  "")), tmp_path, bad)
    assert pending == ["attribution_bars"] and "figure attribution_bars not drawn" in caplog.text


def test_spectra_without_the_weights_steps_table_are_pending_and_say_why(tmp_path, caplog):
    suite = parse_suite(SUITE.replace("paired_differences, weight_bars, weight_spectra, attribution_bars",
                                      "weight_spectra"))
    with caplog.at_level(logging.WARNING):
        written, pending = draw_figures(suite, tmp_path, _results())
    assert written == [] and pending == ["weight_spectra"] and "spectra.parquet" in caplog.text


@pytest.mark.parametrize("kind", ["paired_differences", "weight_bars", "attribution_bars"])
def test_the_figure_kinds_are_allowed_in_a_suite(kind):
    from xlprobe.suite import FIGURES

    assert kind in FIGURES and kind in DRAWN


def test_paired_draws_the_language_measures_and_the_transfer_gap_not_other_tasks(tmp_path):
    from xlprobe.suite_figures import _paired

    comp = _comparisons()
    other = pd.concat([comp.assign(measure="transfer.gap", task="book"), comp.assign(task="genre")])
    pd.concat([comp, other]).to_parquet(tmp_path / "comparisons.parquet")
    table, contrasts, measures = _paired(tmp_path, _results())
    assert contrasts == ["vs control"] and measures == ["separability.knn", "transfer.gap"]
    assert set(table.task) == {"language", "book"}
