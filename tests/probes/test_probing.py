"""probe_layers and its controls: tidy rows, group folds, controls that behave as controls should."""
from __future__ import annotations

import numpy as np
import pytest

from xlprobe.errors import ConfigError, DataError
from xlprobe.folds import kfold_units
from xlprobe.probes import LinearProbe, MLPProbe, probe_layers
from xlprobe.probes.controls import (
    control_task_labels,
    first_word_types,
    majority_predictions,
    shuffled_labels,
)
from xlprobe.probes.probing import cross_val_predict_groups
from xlprobe.results import RESULT_COLUMNS


def parallel(n_groups: int = 150, n_langs: int = 4, d: int = 16, sep: float = 1.0, seed: int = 0):
    """Items = verses x languages; X = language vector + noise."""
    rng = np.random.default_rng(seed)
    langs = np.tile(np.arange(n_langs), n_groups)
    groups = np.repeat(np.arange(n_groups), n_langs)
    X = rng.normal(size=(n_langs, d))[langs] * sep + rng.normal(size=(len(langs), d))
    return X, langs, groups, rng


def test_rows_controls_and_selectivity():
    X, y, g, rng = parallel()
    noise = rng.normal(size=X.shape)
    types = rng.integers(0, 30, len(y))
    df = probe_layers({"encoder.0": X, "encoder.1": noise}, y, g, types=types, n_boot=200, checkpoint="toy:mt")
    assert list(df.columns[:len(RESULT_COLUMNS)]) == list(RESULT_COLUMNS)
    assert len(df) == 2 * (5 + 3) and set(df.checkpoint) == {"toy:mt"} and (df.n == len(y)).all()
    v = df.set_index(["layer", "measure", "control"], drop=False)
    task = df[df.control.isna() & (df.measure == "probe.linear")].set_index("layer").value
    assert task["encoder.0"] > 0.9 and abs(task["encoder.1"] - 0.25) < 0.08
    cc = df[df.measure == "probe.linear.chance_corrected"].set_index(["layer", df.control.fillna("task")[
        df.measure == "probe.linear.chance_corrected"]]).value
    assert cc["encoder.0", "task"] > 0.85 and abs(cc["encoder.1", "task"]) < 0.1  # 0 = the majority baseline
    assert abs(cc["encoder.0", "shuffled"]) < 0.1 and abs(cc["encoder.1", "control-task"]) < 0.15
    maj = df[df.control == "majority"].value
    assert np.allclose(maj, 0.25)
    shuf = df[(df.control == "shuffled") & (df.measure == "probe.linear")].value
    assert (abs(shuf - 0.25) < 0.08).all()
    sel = df[df.measure == "probe.linear.selectivity"].set_index("layer")
    assert sel.loc["encoder.0", "value"] > 0.5
    assert (df.ci_low <= df.value + 1e-12).all() and (df.value <= df.ci_high + 1e-12).all()
    assert len(v) == len(df)


def test_selectivity_near_zero_when_the_task_is_the_control():
    """A task that is itself a function of the type: the probe learns it exactly as the control task."""
    rng = np.random.default_rng(1)
    n_types, n = 12, 1200
    types = rng.integers(0, n_types, n)
    X = np.eye(n_types)[types] * 3 + rng.normal(size=(n, n_types)) * 0.1
    y = control_task_labels(types, rng.integers(0, 3, n), seed=99)  # labels are a random function of type
    df = probe_layers({"l": X}, y, np.arange(n), types=types, n_boot=300, seed=0)
    sel = df[df.measure == "probe.linear.selectivity"].iloc[0]
    assert abs(sel.value) < 0.05 and sel.ci_low <= 0 <= sel.ci_high + 0.02


def test_nested_mapping_of_checkpoints_and_mlp_probe():
    X, y, g, _ = parallel(n_groups=60)
    df = probe_layers({"lm": {"enc.0": X}, "mt": {"enc.0": X * 2}}, y, g, probe=MLPProbe(hidden=16, max_epochs=20),
                      controls=("majority",), n_boot=0)
    assert set(df.checkpoint) == {"lm", "mt"} and set(df.measure) == {"probe.mlp", "probe.mlp.chance_corrected"}
    assert df.ci_low.isna().all()


def test_folds_never_split_a_group():
    _, y, g, _ = parallel(n_groups=40)
    folds = kfold_units(g, 5, seed=3)
    assert sorted(np.concatenate([te for _, te in folds]).tolist()) == list(range(len(y)))
    for tr, te in folds:
        assert not set(g[tr]) & set(g[te])
    assert [te.tolist() for _, te in folds] == [te.tolist() for _, te in kfold_units(g, 5, seed=3)]


def test_group_leak_is_what_group_folds_prevent():
    """Items of a group share a vector: item-level folds would score the memorised group, group folds cannot."""
    rng = np.random.default_rng(2)
    g = np.repeat(np.arange(100), 4)
    y = np.repeat(rng.integers(0, 2, 100), 4)  # label of the group, no signal beyond the group's identity
    X = rng.normal(size=(100, 128))[g] * 3 + rng.normal(size=(400, 128)) * 0.05  # 100 points in 128-d: separable
    grouped = (cross_val_predict_groups(LinearProbe(), X, y, g, kfold_units(g, 5)) == y).mean()
    leaky = (cross_val_predict_groups(LinearProbe(), X, y, g, kfold_units(np.arange(400), 5)) == y).mean()
    assert leaky > grouped + 0.1 and grouped < 0.7


def test_control_helpers():
    y = np.array(list("aabbbc"))
    assert majority_predictions(y, 3).tolist() == ["b"] * 3
    s = shuffled_labels(y, seed=1)
    assert sorted(s) == sorted(y) and shuffled_labels(y, seed=1).tolist() == s.tolist()
    types = np.array(["x", "y", "x", "z", "y", "x"])
    c = control_task_labels(types, y, seed=0)
    assert set(c) <= set(y) and len({c[i] for i in (0, 2, 5)}) == 1 and c[1] == c[4]
    assert first_word_types(["And God said", "«Et Dieu dit»", "  ", "Und"]).tolist() == ["and", "et", "<none>", "und"]
    with pytest.raises(DataError, match="one entry per label"):
        control_task_labels(types[:3], y)


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(controls=("majority", "oracle")), ConfigError, "unknown control"),
    (dict(controls=("control-task",)), ConfigError, "needs item types"),
    (dict(k=1), ConfigError, "k must be"),
    (dict(n_boot=-1), ConfigError, "n_boot"),
])
def test_bad_settings(kwargs, err, match):
    X, y, g, _ = parallel(n_groups=20)
    with pytest.raises(err, match=match):
        probe_layers({"l": X}, y, g, **kwargs)


def test_bad_data():
    X, y, g, _ = parallel(n_groups=20)
    with pytest.raises(DataError, match="has 79 rows but y has 80"):
        probe_layers({"l": X[:-1]}, y, g, controls=("majority",))
    with pytest.raises(DataError, match="single class"):
        probe_layers({"l": X}, np.zeros(len(y)), g, controls=("majority",))
    with pytest.raises(DataError, match="groups must be"):
        probe_layers({"l": X}, y, g[:5], controls=("majority",))
    with pytest.raises(DataError, match="non-empty mapping"):
        probe_layers({}, y, g)
    with pytest.raises(DataError, match="only 3 distinct unit"):
        probe_layers({"l": X[:12]}, y[:12], g[:12], controls=("majority",))


class _RecordingMLP(MLPProbe):
    """An MLPProbe that records the random_state of every fit (probe_layers fits clones)."""

    seen: list = []

    def fit(self, X, y, groups=None):
        _RecordingMLP.seen.append(self.random_state)
        return super().fit(X, y, groups=groups)


def test_probe_random_state_is_kept_and_none_takes_the_seed():
    """random_state=0 is a choice like any other (it used to be replaced by probe_layers' seed)."""
    X, y, g, _ = parallel(n_groups=40, sep=0.3)
    small = dict(hidden=8, max_epochs=3, patience=2)

    def run(rs, seed):
        _RecordingMLP.seen = []
        df = probe_layers({"l": X}, y, g, probe=_RecordingMLP(**small, random_state=rs), controls=(), n_boot=0,
                          seed=seed)
        assert df.measure.tolist() == ["probe.mlp"]
        return set(_RecordingMLP.seen), float(df.value.iloc[0])

    seen0, acc0 = run(0, 5)
    seen1, acc1 = run(1, 5)
    seen_none, acc_none = run(None, 5)
    seen5, acc5 = run(5, 5)
    assert (seen0, seen1, seen_none, seen5) == ({0}, {1}, {5}, {5})
    assert acc0 != acc1 and acc_none == acc5


def _nested_types(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """First-word-like types nested in the language, one frequent type per language (and / und / y)."""
    word = np.where(rng.random(len(y)) < 0.35, 0, rng.integers(1, 25, len(y)))
    return np.asarray([f"{lang}:{w}" for lang, w in zip(y, word)])


def test_a_representation_with_no_information_scores_zero_not_negative():
    X, y, g, rng = parallel(n_groups=120)
    noise = rng.normal(size=X.shape)
    df = probe_layers({"noise": noise}, y, g, types=_nested_types(y, rng), n_boot=300, seed=0)
    for measure, control in (("probe.linear.chance_corrected", None), ("probe.linear.selectivity", "control-task")):
        r = df[(df.measure == measure) & ((df.control == control) if control else df.control.isna())].iloc[0]
        assert abs(r.value) < 0.06, (measure, r.value)
        assert r.ci_low <= 0.0 <= r.ci_high, (measure, r.ci_low, r.ci_high)


def test_language_only_representation_against_a_control_carrying_language_has_zero_selectivity():
    rng = np.random.default_rng(0)
    y, g = np.tile(np.arange(4), 100), np.repeat(np.arange(100), 4)
    means = rng.normal(size=(4, 16)) * 0.6
    rotation = np.linalg.qr(rng.normal(size=(16, 16)))[0]
    X = means[y] + rng.normal(size=(400, 16))
    control = means[y] @ rotation + rng.normal(size=(400, 16))  # the same language signal, other axes and noise
    df = probe_layers({"encoder.1": X}, y, g, controls=("majority",), control_reps={"random-init": control},
                      n_boot=300, seed=0)
    sel = df[(df.measure == "probe.linear.selectivity") & (df.control == "random-init")].iloc[0]
    acc = df[(df.measure == "probe.linear") & df.control.isna()].iloc[0]
    assert acc.value > 0.5 and abs(sel.value) < 0.1 and sel.ci_low <= 0 <= sel.ci_high
    assert sel.ref_layer == "*"
    own = df[(df.measure == "probe.linear") & (df.control == "random-init")].iloc[0]
    assert own.value == pytest.approx(acc.value - sel.value)


def test_control_draws_are_averaged_and_their_spread_is_in_the_interval():
    X, y, g, rng = parallel(n_groups=60)
    types = _nested_types(y, rng)
    one = probe_layers({"l": X}, y, g, types=types, n_boot=200, n_draws=1, seed=0)
    five = probe_layers({"l": X}, y, g, types=types, n_boot=200, n_draws=5, seed=0)
    pick = lambda df: df[(df.measure == "probe.linear") & (df.control == "control-task")].iloc[0]  # noqa: E731
    assert pick(five).value != pick(one).value  # a mean over five draws, not the first draw
    draws = [probe_layers({"l": X}, y, g, types=types, n_boot=0, n_draws=1, seed=s, controls=("control-task",))
             for s in range(5)]
    per_draw = [d[(d.measure == "probe.linear") & (d.control == "control-task")].value.iloc[0] for d in draws]
    # the same folds only for seed 0; the five-draw mean is within the single draws' range
    assert min(per_draw) - 0.05 <= pick(five).value <= max(per_draw) + 0.05


def test_selectivity_against_the_embeddings_and_per_item_correctness():
    X, y, g, rng = parallel(n_groups=60)
    emb = rng.normal(size=X.shape)
    df, items = probe_layers({"enc": {"encoder.embeddings": emb, "encoder.0": X}}, y, g, controls=(), n_boot=100,
                             return_items=True)
    rows = df[df.control == "embeddings"]
    assert list(rows.layer) == ["encoder.0"] and list(rows.ref_layer) == ["encoder.embeddings"]
    task = df[df.control.isna()].set_index("layer").value
    assert rows.value.iloc[0] == pytest.approx(task["encoder.0"] - task["encoder.embeddings"])
    assert set(items) == {("enc", "encoder.embeddings"), ("enc", "encoder.0")}
    assert items["enc", "encoder.0"].mean() == pytest.approx(task["encoder.0"])
