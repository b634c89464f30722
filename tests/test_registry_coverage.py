"""Every name in the ``measure`` column of a results table is a registered measure.

The real producers run on tiny inputs: the probes with their controls (every registered probe and a
caller-given classifier), transfer, the per-layer measures of ``probe_run`` (separability, geometry,
retrieval, MDL, the probes themselves), layer x layer CKA in every variant, and fine-tuning (the toy
model, one seed, two steps). Whatever they write must be known to the registry, and a table name's
spec must say what produces it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from xlprobe.probes import PROBES, first_word_types, make_probe, probe_layers, transfer_probe
from xlprobe.registry import get_measure, list_measures
from xlprobe.runs import layer_measures, probe_run, similarity_run


def _assert_registered(df: pd.DataFrame) -> set[str]:
    names = set(df.measure)
    known = {s.name for s in list_measures()}
    assert names and names <= known, f"unregistered measure names in a table: {sorted(names - known)}"
    return names


def _parallel(n_groups=24, langs=("en", "fr"), d=6, seed=0):
    """Parallel items: the same label across a group's languages; a per-language offset."""
    rng = np.random.default_rng(seed)
    y = np.repeat(rng.integers(0, 2, n_groups), len(langs))
    g = np.repeat(np.arange(n_groups), len(langs))
    lg = np.tile(np.asarray(langs), n_groups)
    X = rng.standard_normal((len(y), d)) + y[:, None] * 1.5 + (lg == langs[0])[:, None] * 0.5
    return X.astype(np.float32), y, g, lg


@pytest.mark.parametrize("probe", [*PROBES, LogisticRegression(max_iter=200)], ids=str)
def test_probe_layers_rows_are_registered(probe):
    X, y, g, lg = _parallel()
    types = first_word_types([f"w{i % 7} text" for i in range(len(y))])
    params = dict(hidden=8, max_epochs=3) if probe == "mlp" else {}
    df = probe_layers({"l0": X, "l1": X[:, ::-1]}, y, g, probe=make_probe(probe, **params), k=3, n_boot=0,
                      types=types)
    names = _assert_registered(df)
    main = get_measure(df.measure.iloc[0])
    assert main.kind == "labelled" and names == {main.name, f"{main.name}.selectivity", f"{main.name}.chance_corrected"}
    assert get_measure(f"{main.name}.selectivity").kind == get_measure(f"{main.name}.chance_corrected").kind == "table"
    assert set(df.control.dropna()) == {"majority", "shuffled", "control-task"}  # controls: rows, not names
    if not isinstance(probe, str):
        assert main.name == "probe.estimator" and set(df.probe) == {"probe.logisticregression"}


def test_the_registered_probe_is_the_task_row_of_probe_layers():
    X, y, g, _ = _parallel(seed=3)
    df = probe_layers({"l": X}, y, g, k=4, n_boot=0, controls=(), seed=7)
    assert get_measure("probe.linear")(X, y, g, k=4, seed=7) == pytest.approx(df.value.iloc[0])


def test_transfer_rows_are_registered():
    X, y, g, lg = _parallel(langs=("en", "fr", "de"))
    df = transfer_probe({"l": X}, y, lg, g, train_lang="en", k=3, n_boot=0)
    assert _assert_registered(df) == {"transfer.accuracy", "transfer.gap"}
    assert {get_measure(n).fn for n in ("transfer.accuracy", "transfer.gap")} == {transfer_probe}


def test_every_per_layer_measure_writes_its_registered_name():
    X, y, g, lg = _parallel(langs=("en", "fr", "de"))
    specs = [s for s in list_measures() if s.kind in ("labelled", "unlabelled") and s.name != "probe.mlp"]
    rows = layer_measures({"l": X}, y.astype(str), lg, g, [s.name for s in specs], checkpoint="m", task="t",
                          seed=0)
    names = _assert_registered(pd.DataFrame(rows))
    assert names == {s.name for s in specs}
    assert {r["task"] for r in rows if r["measure"].startswith("retrieval.")} == {"language"}  # reads languages
    assert {r["task"] for r in rows if r["measure"].startswith("alignment.")} == {"language"}


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
    """A store with two tiny checkpoints captured without a model_spec (so they share a name)."""
    from xlprobe.hooks.extract import extract
    from xlprobe.store import ActivationStore
    from xlprobe.tasks import load_data
    from xlprobe.tiny import build

    out = tmp_path_factory.mktemp("coverage")
    ds = load_data("bible:en,fr?books=Ruth", limit=12)
    a, tok = build("mbart", seed=0)
    b, _ = build("mbart", seed=1, tokenizer=tok)
    store = ActivationStore.open(out)
    for model in (a, b):
        extract(model, tok, ds, ["encoder.0", "encoder.1"], store=store)
    return out


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("debiased", [False, True])
def test_similarity_rows_are_registered(two_checkpoints, tmp_path, kernel, debiased):
    df = similarity_run(two_checkpoints, kernel=kernel, debiased=debiased, out=tmp_path)
    (name,) = _assert_registered(df)
    spec = get_measure(name)
    assert spec.kind == "paired" and spec.defaults["kernel"] == kernel
    assert spec.defaults.get("debiased", False) is debiased


def test_probe_run_rows_are_registered(two_checkpoints, tmp_path):
    df = probe_run(two_checkpoints, n_boot=0, k=3, out=tmp_path,
                   measures=("separability.knn", "geometry.anisotropy", "retrieval.p_at_1", "mdl.compression"))
    assert _assert_registered(df) >= {"probe.linear", "probe.linear.selectivity", "mdl.compression"}


def test_finetune_rows_are_registered():
    from xlprobe import toy
    from xlprobe.finetune import finetune_transfer
    from xlprobe.tasks.bible import load_bible

    model, tok = toy.load("mt")
    df = finetune_transfer(model, tok, load_bible(["en", "fr"], limit=40), label="testament", seeds=(0,), steps=2,
                           batch_size=8, max_length=24)
    assert _assert_registered(df) == {"finetune.accuracy", "finetune.transfer_gap", "finetune.train_loss"}
    assert {get_measure(n).kind for n in set(df.measure)} == {"table"}


def test_weight_rows_are_registered():
    from xlprobe.probes.weights import compare_weights
    from xlprobe.tiny import build

    a, b = build("mbart", seed=0)[0], build("mbart", seed=1)[0]
    names = _assert_registered(compare_weights(a, b, k=2))
    assert {get_measure(n).kind for n in names} == {"weights", "table"}


def test_attribution_rows_are_registered():
    from xlprobe.probes.attribution import ParameterPathAttribution
    from xlprobe.tiny import build

    a, b = build("mbart", seed=0)[0], build("mbart", seed=1)[0]
    metric = lambda m: sum(p.sum() for p in m.parameters())  # noqa: E731  linear: exact in one step
    rows, delta = ParameterPathAttribution(metric).attribute(a, b, n_steps=1)
    assert _assert_registered(rows) == {"attribution.path"} and get_measure("attribution.path").kind == "table"


def test_unit_ablation_rows_are_registered():
    from xlprobe.probes import LinearProbe
    from xlprobe.probes.units import ablation_check

    X, y, g, _ = _parallel()
    probe = LinearProbe().fit(X, y)
    rows = ablation_check(probe, X, y, list(range(X.shape[1])), ks=(1,), groups=g, n_random=2, n_boot=10)
    assert _assert_registered(rows) == {"units.ablation_drop"}
