"""The report: findings read from the numbers, the paper's claims judged on planted contrasts, HTML and Markdown."""
from __future__ import annotations

import json
import shutil
import subprocess

import matplotlib
import numpy as np
import pandas as pd
import pytest

from xlprobe.claims import claim_verdict, paper_claims
from xlprobe.errors import DataError
from xlprobe.findings import contrast_finding, controls_table, weights_finding
from xlprobe.report import load_run, write_report
from xlprobe.results import results_frame, write_results

matplotlib.use("Agg")
MT = ["mt", "o2m"]
LAYERS = ["encoder.embeddings", "encoder.0", "encoder.1", "encoder.final_norm"]


def _comparison(measure: str, checkpoint: str, layer: str, value: float, p: float, *, ref: str = "cont",
                contrast: str = "vs control", **extra) -> dict:
    half = 0.02
    return dict(checkpoint=checkpoint, layer=layer, measure=measure, value=value, ci_low=value - half,
                ci_high=value + half, n=100, ref_checkpoint=ref, contrast=contrast, p_value=p, p_adjusted=p,
                correction="holm over 4 layers", test="sign-flip", **extra)


def _comparisons(transfer_sign: float = 1.0, cka_sign: float = -1.0, p: float = 0.001) -> pd.DataFrame:
    rows = []
    for c in MT:
        for i, la in enumerate(LAYERS):
            rows.append(_comparison("transfer.gap", c, la, transfer_sign * 0.1 * i, p))
            rows.append(_comparison("retrieval.p_at_1", c, la, 0.2 + 0.01 * i, p))
            rows.append(_comparison("separability.knn", c, la, -0.3, p))
            rows.append(_comparison("cka.linear.debiased", c, la, cka_sign * 0.05, p, contrast="CKA(ref, X) - CKA(ref, cont)",
                                    centring="pooled"))
    return results_frame(rows)


def test_a_contrast_finding_names_the_largest_change_with_its_interval_and_corrected_p():
    comp = results_frame([_comparison("separability.knn", "mt", "encoder.0", -0.10, 0.01),
                          _comparison("separability.knn", "mt", "encoder.1", -0.33, 0.0005),
                          _comparison("separability.knn", "o2m", "encoder.1", 0.01, 0.6),
                          _comparison("separability.knn", "mt", "encoder.1", 0.9, 0.0, contrast="vs base", ref="lm")])
    f = contrast_finding(comp, "separability.knn")
    assert "mt at encoder.1, -0.330 [-0.350, -0.310], p = 0.0005" in f.text  # vs control preferred over vs base
    assert "2 of 3 (checkpoint, layer) differences are significant" in f.text
    assert f.evidence[1].startswith("o2m - cont: largest at encoder.1 +0.010") and "0 of 1" in f.evidence[1]
    assert contrast_finding(comp, "probe.linear") is None  # not measured: no sentence


@pytest.mark.parametrize(("values", "ps", "verdict"), [
    ([0.1, 0.2], [0.01, 0.01], "agrees"), ([-0.1, -0.2], [0.01, 0.01], "disagrees"),
    ([0.1, -0.2], [0.01, 0.01], "mixed"), ([0.1, 0.2], [0.01, 0.3], "inconclusive"), ([], [], "not measured"),
    ([-0.1, -0.2, 0.05], [0.01, 0.01, 0.4], "disagrees"), ([0.1, 0.2, 0.05], [0.01, 0.3, 0.4], "inconclusive")])
def test_a_claim_needs_most_mt_contrasts_significant_in_one_direction_and_none_against(values, ps, verdict):
    rows = pd.DataFrame({"value": values, "p_adjusted": ps}, dtype=float)
    assert claim_verdict(rows, +1) == verdict


def test_the_claims_follow_the_planted_direction_at_the_top_shared_layer():
    agree = {f.topic: f for f in paper_claims(_comparisons(), mt=MT, control="cont", references=["ref"])}
    assert [f.verdict for f in agree.values()] == ["agrees", "agrees", "agrees"]
    assert "at encoder.1 = +0.200" in agree["transfer"].evidence[0]  # the deepest block, not the final norm
    assert any("language separability" in e for e in agree["separability"].evidence)
    flipped = {f.topic: f.verdict for f in paper_claims(_comparisons(-1.0, +1.0), mt=MT, control="cont",
                                                        references=["ref"])}
    assert flipped == {"transfer": "disagrees", "similarity": "disagrees", "separability": "agrees"}
    weak = {f.topic: f.verdict for f in paper_claims(_comparisons(p=0.2), mt=MT, control="cont", references=["ref"])}
    assert set(weak.values()) == {"inconclusive"}


def test_a_claim_the_suite_cannot_test_says_what_is_missing():
    no_roles = paper_claims(_comparisons(), mt=[], control="cont")
    assert {f.verdict for f in no_roles} == {"not measured"} and "role mt" in no_roles[0].evidence[0]
    no_ref = {f.topic: f for f in paper_claims(_comparisons(), mt=MT, control="cont")}
    assert no_ref["similarity"].verdict == "not measured" and "role reference" in no_ref["similarity"].evidence[0]
    no_transfer = _comparisons()
    no_transfer = no_transfer[no_transfer.measure != "transfer.gap"]
    f = paper_claims(no_transfer, mt=MT, control="cont", references=["ref"])[0]
    assert f.verdict == "not measured" and "did not compute transfer.gap" in f.evidence[0]


def test_without_a_control_the_claims_read_the_contrasts_against_the_base_as_the_paper_did():
    rows = [_comparison("retrieval.p_at_1", c, "encoder.1", 0.3, 0.001, ref="lm", contrast="vs base") for c in MT]
    rows += [_comparison("retrieval.p_at_1", c, "encoder.1", -0.3, 0.001) for c in MT]  # a control's rows: unused
    claims = {f.topic: f for f in paper_claims(results_frame(rows), mt=MT, control=None, base="lm")}
    assert claims["separability"].verdict == "agrees" and "mt - lm at encoder.1" in claims["separability"].evidence[0]
    with_control = {f.topic: f for f in paper_claims(results_frame(rows), mt=MT, control="cont", base="lm")}
    assert with_control["separability"].verdict == "disagrees"


def test_controls_sit_beside_each_checkpoints_value():
    res = results_frame([dict(checkpoint=c, layer="encoder.1", measure="probe.linear", value=v, ci_low=v - .01,
                              ci_high=v + .01, n=10, task="language", control=ctl)
                         for c in ("lm", "mt") for ctl, v in ((None, 0.99), ("shuffled", 0.12), ("majority", 0.125))])
    table = controls_table(res, "probe.linear", "encoder.1")
    assert list(table.columns) == ["probe.linear", "majority", "shuffled"] and list(table.index) == ["lm", "mt"]
    assert table.loc["mt", "shuffled"] == "0.120 [0.110, 0.130]"


def test_a_measure_with_a_row_per_language_gets_a_column_per_language():
    res = results_frame([dict(checkpoint=c, layer="encoder.1", measure="transfer.accuracy", value=v, n=10, lang=lg)
                         for c in ("lm", "mt") for lg, v in (("en", 0.9), ("fr", 0.6))]
                        + [dict(checkpoint=c, layer="encoder.1", measure="transfer.accuracy", value=0.24, n=20,
                                control="majority", chance=1 / 3) for c in ("lm", "mt")])
    table = controls_table(res, "transfer.accuracy", "encoder.1")
    assert list(table.columns) == ["en", "fr", "majority", "chance"] and table.loc["mt", "fr"] == "0.60"
    assert table.loc["lm", "chance"] == "0.33"


def test_weight_findings_leave_out_biases_and_name_the_move_beyond_the_control():
    def row(c, module, param, v):
        return dict(checkpoint=c, layer="encoder.0", measure="weights.rel_change", value=v, n=4, ref_checkpoint="lm",
                    module=module, param=f"layers.0.{param}")
    res = results_frame([row("mt", "fc1", "fc1.weight", 1.3), row("mt", "k", "k.bias", 500.0),
                         row("mt", "q", "q.weight", 0.9), row("cont", "fc1", "fc1.weight", 0.6),
                         row("cont", "q", "q.weight", 0.8)])
    text = weights_finding(res, "cont").text
    assert "mt: encoder.0 fc1 1.30, beyond cont most encoder.0 fc1 +0.70" in text and "500" not in text


def _fake_run(folder, comparisons: pd.DataFrame) -> None:
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    rows = [dict(checkpoint=c, layer=la, measure=m, value=float(rng.uniform()), ci_low=0.0, ci_high=1.0, n=50,
                 task="language") for c in ("lm", "mt", "o2m", "cont", "ref") for la in LAYERS
            for m in ("separability.knn", "retrieval.p_at_1", "transfer.gap", "mdl.compression")]
    write_results(results_frame(rows), folder)
    write_results(comparisons, folder, name="comparisons")
    (folder / "figures").mkdir()
    for kind in ("layer_curves", "umap"):
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.plot([0, 1], [1, 0])
        fig.savefig(folder / "figures" / f"{kind}.png")
        plt.close(fig)
    suite = {"name": "fake", "checkpoints": [{"model": "toy:lm", "name": "lm", "role": "base"},
                                             {"model": "toy:mt", "name": "mt", "role": "mt"},
                                             {"model": "toy:mt-o2m", "name": "o2m", "role": "mt"},
                                             {"model": "toy:lm-cont", "name": "cont", "role": "control"},
                                             {"model": "toy:mlm", "name": "ref", "role": "reference"}],
             "figures": ["umap", "layer_curves", "cka_heatmap"],
             "measures": [{"name": m, "params": {}} for m in ("separability.knn", "retrieval.p_at_1", "transfer.gap",
                                                               "mdl.compression")]}
    (folder / "provenance.json").write_text(json.dumps({"suite": suite, "data": "bible:en,fr", "n_records": 50,
                                                        "xlprobe": "0", "seconds": {"capture": 1.0}}))


def test_the_report_holds_every_measure_claim_and_figure_in_html_and_markdown(tmp_path):
    _fake_run(tmp_path, _comparisons(-1.0))
    html_path, md_path = write_report(tmp_path)
    page, md = html_path.read_text(), md_path.read_text()
    for measure in ("separability.knn", "retrieval.p_at_1", "transfer.gap", "mdl.compression"):
        assert f"<h2>{measure}</h2>" in page and f"## {measure}" in md
    assert page.count("data:image/png;base64,") == 2 and "src='figures" not in page  # self-contained
    assert "![Figure: umap](figures/umap.png)" in md
    assert "disagrees</span> MT continued training lowers zero-shot" in page
    assert "**disagrees**: MT continued training lowers" in md
    assert page.index("paper&#x27;s claims") < page.index("Figure: umap") < page.index("<h2>Provenance</h2>")


def test_the_report_of_an_unfinished_run_says_how_to_finish_it(tmp_path):
    with pytest.raises(DataError, match="not a finished suite run") as err:
        load_run(tmp_path)
    assert "xlprobe run SUITE.yaml --out" in err.value.hint


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium package is not installed")
def test_headless_chromium_renders_the_report_with_every_figure_loaded(tmp_path):
    _fake_run(tmp_path, _comparisons())
    html_path, _ = write_report(tmp_path)
    args = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run(args + ["--dump-dom", html_path.resolve().as_uri()], capture_output=True, text=True,
                         timeout=60).stdout
    assert 'data-figures-loaded="2/2"' in dom
    shot = tmp_path / "shot.png"
    subprocess.run(args + ["--window-size=1000,1400", f"--screenshot={shot}", html_path.resolve().as_uri()],
                   capture_output=True, timeout=60, check=True)
    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.std() > 0.05 and (pixels.mean(axis=2) < 0.5).mean() > 0.005  # not blank: text and figures drawn
