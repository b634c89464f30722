"""Paired comparisons between checkpoints: contrasts by role, planted effects, shared items, the run's table."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from xlprobe.cli import app
from xlprobe.comparisons import compare_items, compare_sets, contrasts, resolve_checkpoint
from xlprobe.errors import ConfigError, DataError
from xlprobe.results import read_results
from xlprobe.runs import probe_run

runner = CliRunner()
NAMES = ["toy:lm", "toy:mt", "toy:lm-cont"]


def test_contrasts_by_role_and_every_pair_without():
    assert contrasts(NAMES) == [("toy:mt", "toy:lm", "pair"), ("toy:lm-cont", "toy:lm", "pair"),
                                ("toy:lm-cont", "toy:mt", "pair")]
    assert contrasts(NAMES, "toy:lm", "toy:lm-cont") == [
        ("toy:mt", "toy:lm", "vs base"), ("toy:lm-cont", "toy:lm", "vs base"), ("toy:mt", "toy:lm-cont", "vs control")]
    with pytest.raises(ConfigError, match="needs a base"):
        contrasts(NAMES, None, "toy:lm-cont")
    with pytest.raises(ConfigError, match="same checkpoint"):
        contrasts(NAMES, "toy:lm", "toy:lm")


def test_roles_resolve_by_full_name_or_the_part_after_the_colon():
    assert resolve_checkpoint("lm", NAMES, "base") == "toy:lm"
    assert resolve_checkpoint("toy:mt", NAMES, "base") == "toy:mt"
    assert resolve_checkpoint(None, NAMES, "base") is None
    with pytest.raises(ConfigError, match="(?s)not a checkpoint.*toy:lm, toy:mt"):
        resolve_checkpoint("mbart", NAMES, "control")


def _scores(effect_layer: int, n_groups: int = 100, per: int = 4, layers: int = 6, seed: int = 0):
    """Per-item 0/1 scores of three checkpoints; mt better than lm only at one layer, lm-cont like lm."""
    rng = np.random.default_rng(seed)
    ids = pd.Index([f"v{g}.{i}" for g in range(n_groups) for i in range(per)])
    groups = pd.Series(np.repeat(np.arange(n_groups), per).astype(str), index=ids)
    skill = rng.normal(size=n_groups)[np.repeat(np.arange(n_groups), per)]
    out = {}
    for c, boost in (("toy:lm", 0.0), ("toy:lm-cont", 0.0), ("toy:mt", 1.2)):
        for layer in range(layers):
            logit = skill + (boost if layer == effect_layer else 0.0) + rng.normal(size=len(ids))
            out["probe.linear", c, f"encoder.{layer}"] = pd.Series((logit > 0).astype(float), index=ids)
    return out, groups


def test_a_planted_difference_is_found_at_its_layer_only_after_correction():
    scores, groups = _scores(effect_layer=3)
    rows = pd.DataFrame(compare_items(scores, groups, contrasts(NAMES, "toy:lm", "toy:lm-cont"), n_boot=300,
                                      n_perm=2000, seed=0))
    sig = rows[rows.p_adjusted < 0.05]
    assert set(zip(sig.checkpoint, sig.ref_checkpoint, sig.layer)) == {
        ("toy:mt", "toy:lm", "encoder.3"), ("toy:mt", "toy:lm-cont", "encoder.3")}
    assert (rows.p_adjusted >= rows.p_value - 1e-15).all()
    assert rows.correction.str.fullmatch("holm over 6 layers").all()
    assert set(rows.contrast) == {"vs base", "vs control"}


def test_comparisons_use_the_items_both_checkpoints_share():
    scores, groups = _scores(effect_layer=1)
    for layer in range(6):
        key = ("probe.linear", "toy:mt", f"encoder.{layer}")
        scores[key] = scores[key].iloc[: 200]
    rows = pd.DataFrame(compare_items(scores, groups, [("toy:mt", "toy:lm", "pair")], n_boot=50, n_perm=100))
    assert (rows.n == 200).all()
    apart = {k: (v.set_axis([f"x{i}" for i in range(len(v))]) if k[1] == "toy:mt" else v) for k, v in scores.items()}
    with pytest.raises(DataError, match="share no measured item"):
        compare_items(apart, groups, [("toy:mt", "toy:lm", "pair")], n_boot=10, n_perm=10)


def test_set_measure_comparison_is_paired_by_record_id():
    rng = np.random.default_rng(0)
    ids = pd.Index([f"i{j}" for j in range(80)])
    groups = pd.Series(np.arange(80) // 4, index=ids)
    X = rng.normal(size=(80, 5))
    reps = {("a", "l0"): X, ("b", "l0"): X[::-1].copy() * 3}  # b's rows are in the reverse order
    both = {"a": ids, "b": ids[::-1]}
    rows = compare_sets(lambda A: float(np.linalg.norm(A, axis=1).mean()), "geometry.norm_mean", reps, both,
                        groups, [("b", "a", "pair")], n_half=40)
    assert rows[0]["value"] == pytest.approx(2 * np.linalg.norm(X, axis=1).mean())
    assert rows[0]["p_value"] < 0.001


@pytest.fixture(scope="module")
def family_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("family")
    for model in ("toy:lm", "toy:mt", "toy:lm-cont", "random-init:toy:lm"):
        res = runner.invoke(app, ["capture", "--model", model, "--data", "bible:en,fr,de?books=Ruth", "--limit", "24",
                                  "--layers", "encoder.embeddings,encoder.1", "--out", str(out)])
        assert res.exit_code == 0, res.output
    return out


def test_probe_run_writes_the_comparisons_table_with_roles(family_run, tmp_path):
    df = probe_run(family_run, base="lm", control="lm-cont", n_boot=100, n_perm=500, k=3, n_draws=2,
                   measures=("separability.knn", "retrieval.p_at_1", "separability.fisher"), out=tmp_path)
    cmp = read_results(tmp_path / "comparisons.parquet")
    assert set(cmp.checkpoint) == {"toy:mt", "toy:lm-cont"} and "random-init:toy:lm" not in set(cmp.ref_checkpoint)
    assert set(cmp.measure) == {"probe.linear", "separability.knn", "retrieval.p_at_1", "separability.fisher"}
    assert len(cmp) == 4 * 3 * 2  # measures x contrasts x layers
    assert (cmp.n == 72).all() and cmp[["value", "p_value", "p_adjusted"]].notna().all().all()
    sel = df[(df.measure == "probe.linear.selectivity") & (df.control == "random-init")]
    assert set(sel.checkpoint) == {"toy:lm", "toy:mt", "toy:lm-cont"} and len(sel) == 6
    knn = df[(df.measure == "separability.knn") & df.control.isna()]
    assert knn[["ci_low", "ci_high"]].notna().all().all()
    assert len(df.attrs["comparisons"]) == len(cmp)
