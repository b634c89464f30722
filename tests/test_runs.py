"""xlprobe/runs.py: probe suites (probe_run) and layer x layer CKA (similarity_run) over a captured store."""
from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from xlprobe.cli import app
from xlprobe.errors import ConfigError, DataError, StoreError
from xlprobe.results import read_results
from xlprobe.runs import labels_for, probe_run, similarity_run

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
    assert set(df[df.pooling == "tag"].measure) == {"probe.linear", "probe.linear.selectivity",
                                                    "probe.linear.chance_corrected"}
    saved = read_results(run_dir / "results.parquet")
    assert len(saved) == len(df) and (run_dir / "results.csv").is_file()


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
    with pytest.raises(ConfigError, match="the run's own probe"):
        probe_run(run_dir, n_boot=0, k=4, controls=(), measures=("probe.linear",), out=tmp_path)
    with pytest.raises(ConfigError, match="do not take one layer"):  # rows of a producer, not a per-layer call
        probe_run(run_dir, n_boot=0, k=4, controls=(), measures=("transfer.accuracy",), out=tmp_path)


def test_a_constant_layer_gets_nan_measures_not_a_failed_run(tmp_path):
    """The decoder reading only </s> (no target language) gives one vector for every text."""
    base = ["--model", "tiny:mbart", "--data", "bible:en,fr?books=Ruth", "--limit", "20", "--out", str(tmp_path)]
    assert runner.invoke(app, ["capture", *base, "--layers", "decoder.embeddings,encoder.0"]).exit_code == 0
    df = probe_run(tmp_path, n_boot=0, k=3, controls=("majority",))
    fisher = df[(df.measure == "separability.fisher") & df.control.isna()].set_index("layer").value
    assert np.isnan(fisher["decoder.embeddings"]) and np.isfinite(fisher["encoder.0"])
    probe = df[(df.measure == "probe.linear") & df.control.isna()].set_index("layer").value
    assert probe["decoder.embeddings"] <= 0.6  # nothing to read: about chance for two languages


@pytest.fixture(scope="module")
def three_checkpoints(tmp_path_factory):
    """A store with the encoder of three checkpoints on the same verses: ``A``; ``A-base``, the same weights
    under another class (so another fingerprint, identical representations); ``B``, other random weights.
    Returns (store folder, {checkpoint: {layer: array}})."""
    from xlprobe.hooks.extract import extract
    from xlprobe.hooks.points import resolve_points
    from xlprobe.store import ActivationStore
    from xlprobe.tasks import load_data
    from xlprobe.tiny import build

    out = tmp_path_factory.mktemp("similarity")
    ds = load_data("bible:en,fr?books=Ruth", limit=15)
    a, tok = build("mbart", seed=0)
    b, _ = build("mbart", seed=1, tokenizer=tok)
    store = ActivationStore.open(out)
    reps = {}
    for name, model in (("A", a), ("A-base", a.model), ("B", b)):
        extract(model, tok, ds, "encoder.*", store=store, provenance={"model_spec": name})
        acts = extract(model, tok, ds, "encoder.*")
        reps[name] = {p.alias: acts[p.name] for p in resolve_points(model, "encoder.*")}
    return out, reps


def _linear_cka(X, Y):
    """Linear CKA from its definition: ||Yc' Xc||_F^2 / (||Xc' Xc||_F ||Yc' Yc||_F), columns centred."""
    X, Y = (np.asarray(M, dtype=np.float64) for M in (X, Y))
    X, Y = X - X.mean(0), Y - Y.mean(0)
    return np.linalg.norm(Y.T @ X) ** 2 / (np.linalg.norm(X.T @ X) * np.linalg.norm(Y.T @ Y))


def test_similarity_run_rows_for_every_pair_and_known_answers(three_checkpoints, tmp_path):
    run_dir, reps = three_checkpoints
    df = similarity_run(run_dir, debiased=False, centrings=("pooled",), out=tmp_path)
    assert read_results(tmp_path / "similarity.parquet").shape == df.shape
    layers = ["encoder.embeddings", "encoder.0", "encoder.1", "encoder.final_norm"]
    pairs = df.groupby(["checkpoint", "ref_checkpoint"]).size().to_dict()
    assert pairs == {(a, b): 16 for a, b in [("A", "A"), ("A", "A-base"), ("A", "B"), ("A-base", "A-base"),
                                              ("A-base", "B"), ("B", "B")]}
    assert set(df.layer) == set(df.ref_layer) == set(layers)
    assert set(df.measure) == {"cka.linear"} and (df.n == 30).all()
    cell = df.set_index(["checkpoint", "layer", "ref_checkpoint", "ref_layer"]).value
    for (a, la, b, lb), value in cell.items():  # every row is the CKA of the arrays it names
        assert value == pytest.approx(_linear_cka(reps[a][la], reps[b][lb]), abs=1e-6), (a, la, b, lb)
    identical = df[df.ref_checkpoint.isin(["A", "A-base"]) & df.checkpoint.isin(["A", "A-base"])]
    same_layer = identical[identical.layer == identical.ref_layer]
    assert len(same_layer) == 12 and np.allclose(same_layer.value, 1.0, atol=1e-6)
    # identical representations under two names: A x A-base is A x A, cell for cell
    aa = cell.xs(("A", "A"), level=("checkpoint", "ref_checkpoint"))
    ab = cell.xs(("A", "A-base"), level=("checkpoint", "ref_checkpoint"))
    assert np.allclose(aa.sort_index(), ab.sort_index(), atol=1e-6)
    other = df[(df.checkpoint != "B") & (df.ref_checkpoint == "B") & (df.layer == df.ref_layer)]
    assert len(other) == 8 and (other.value < 0.99).all() and (other.value > 0).all()


@pytest.mark.parametrize("kernel, debiased, measure", [("linear", True, "cka.linear.debiased"),
                                                        ("rbf", False, "cka.rbf")])
def test_similarity_run_variants_are_one_on_identical_layers(three_checkpoints, tmp_path, kernel, debiased, measure):
    run_dir, _ = three_checkpoints
    df = similarity_run(run_dir, kernel=kernel, debiased=debiased, centrings=("pooled",), out=tmp_path)
    assert set(df.measure) == {measure} and len(df) == 6 * 16
    same = df[df.checkpoint.isin(["A", "A-base"]) & df.ref_checkpoint.isin(["A", "A-base"])
              & (df.layer == df.ref_layer)]
    assert np.allclose(same.value, 1.0, atol=1e-6)


def test_similarity_run_errors(three_checkpoints, tmp_path):
    run_dir, _ = three_checkpoints
    with pytest.raises(StoreError, match="no shards with pooling 'max'"):
        similarity_run(run_dir, pooling="max")
    with pytest.raises(StoreError, match="not an activation store"):
        similarity_run(tmp_path)


def test_similarity_run_keeps_checkpoints_that_share_a_name(tmp_path):
    from xlprobe.hooks.extract import extract
    from xlprobe.store import ActivationStore
    from xlprobe.tasks import load_data
    from xlprobe.tiny import build

    ds = load_data("bible:en,fr?books=Ruth", limit=10)
    a, tok = build("mbart", seed=0)
    b, _ = build("mbart", seed=1, tokenizer=tok)
    store = ActivationStore.open(tmp_path)
    for model in (a, b):
        extract(model, tok, ds, "encoder.0", store=store)
    assert len({k.model for k in store.keys()}) == 2  # two checkpoints in the store
    df = similarity_run(tmp_path, centrings=("pooled",))
    assert len(df) == 3  # A x A, A x B, B x B
    names = sorted(set(df.checkpoint) | set(df.ref_checkpoint))
    fps = sorted(k.model[:8] for k in store.keys())
    assert len(names) == 2 and [n.rsplit("@", 1)[1] for n in names] == fps  # the short weights hash tells them apart
    assert len({n.rsplit("@", 1)[0] for n in names}) == 1
    probed = probe_run(tmp_path, n_boot=0, k=2, controls=(), measures=(), by="group")
    assert set(probed.checkpoint) == set(names)  # probe_run names them the same way


def test_similarity_run_turns_a_constant_layer_into_nan_cells_and_a_warning(tmp_path, caplog):
    from xlprobe.hooks.extract import extract
    from xlprobe.store import ActivationStore
    from xlprobe.tasks import load_data
    from xlprobe.tiny import build

    ds = load_data("bible:en,fr?books=Ruth", limit=10)
    a, tok = build("mbart", seed=0)
    b, _ = build("mbart", seed=1, tokenizer=tok)
    store = ActivationStore.open(tmp_path)
    for name, model in (("A", a), ("B", b)):  # no targets: the decoder input is the same prompt for every text
        extract(model, tok, ds, ["encoder.0", "decoder.embeddings", "decoder.0"], store=store,
                provenance={"model_spec": name})
    with caplog.at_level("WARNING", logger="xlprobe.similarity"):
        df = similarity_run(tmp_path, centrings=("pooled",))
    assert len(df) == 3 * 9  # A x A, A x B, B x B; 3 x 3 layers each: nothing dropped
    const = (df.layer == "decoder.embeddings") | (df.ref_layer == "decoder.embeddings")
    assert df[const].value.isna().all() and df[~const].value.notna().all()
    same = df[(df.checkpoint == "A") & (df.ref_checkpoint == "A") & (df.layer == df.ref_layer) & ~const]
    np.testing.assert_allclose(same.value, 1.0, atol=1e-6)
    assert "decoder.embeddings" in caplog.text and "no variance across rows" in caplog.text


def _records(rows):
    """A Dataset of (group, lang, labels) rows."""
    from xlprobe.types import Dataset, Record

    return Dataset("synthetic", tuple(Record(id=f"r{i}", text=f"t{i}", lang=lang, group=group, labels=labels)
                                     for i, (group, lang, labels) in enumerate(rows)))


def test_default_fold_unit_is_chapter_for_book_labels_and_group_for_language(run_dir):
    from xlprobe.store import ActivationStore
    from xlprobe.tasks.splits import fold_unit

    store = ActivationStore.open(run_dir)
    data = store.records(store.keys()[0].data)
    for task in ("genre", "book", "testament"):  # constant within every book: chapter folds
        assert fold_unit(data, task, None, labels_for(data, task))[0] == "chapter"
    for task in ("language", "lang"):  # language identity: parallel groups
        assert fold_unit(data, task, None, labels_for(data, task))[0] == "group"
    assert fold_unit(data, "genre", "group", labels_for(data, "genre")) == ("group", "given")
    # a label that varies within a book folds by group; so does one of records without verse keys
    varied = _records([(f"8.1.{v}", "en", {"speaker": "ab"[v % 2], "genre": "x"}) for v in range(1, 7)])
    assert fold_unit(varied, "speaker", None, labels_for(varied, "speaker"))[0] == "group"
    assert fold_unit(varied, "genre", None, labels_for(varied, "genre"))[0] == "chapter"
    no_keys = _records([(f"s{v}", "en", {"genre": "x"}) for v in range(4)])
    assert fold_unit(no_keys, "genre", None, labels_for(no_keys, "genre"))[0] == "group"


def test_probe_run_records_thefold_unit(run_dir, tmp_path):
    df = probe_run(run_dir, n_boot=0, k=4, controls=(), measures=(), out=tmp_path)
    assert df.attrs["fold_unit"] == "group" and set(df.attrs["fold_units"].values()) == {"group"}
    df = probe_run(run_dir, n_boot=0, k=2, controls=(), measures=(), by="chapter", out=tmp_path)
    assert df.attrs["fold_unit"] == "chapter"
    saved = read_results(tmp_path / "results.parquet")  # the unit survives the file: a column of the probe rows
    probe_rows = saved.measure.str.startswith("probe.")
    assert (saved.folds[probe_rows] == "chapter").all() and saved.folds[~probe_rows].isna().all()


@pytest.mark.parametrize(("task", "by"), [("book", "book"), ("genre", "genre"), ("testament", "testament"),
                                          ("language", "language"), ("lang", "language"), ("language", "lang")])
def test_fold_unit_equal_to_the_task_is_an_error_that_says_why(run_dir, tmp_path, task, by):
    with pytest.raises(ConfigError, match="absent from training") as err:
        probe_run(run_dir, task=task, by=by, n_boot=0, k=2, controls=(), measures=(), out=tmp_path)
    assert "chapter" in err.value.hint


def test_a_unit_that_holds_every_class_whole_is_an_error():
    from xlprobe.tasks.splits import fold_unit

    # every genre in a single book: book folds would test every genre unseen
    data = _records([(f"{b}.{c}.{v}", "en", {"genre": g, "book": name})
                     for b, name, g in ((8, "Ruth", "History"), (32, "Jonah", "Prophets"))
                     for c in (1, 2) for v in (1, 2)])
    with pytest.raises(DataError, match="every class lies in a single book unit") as err:
        fold_unit(data, "genre", "book", labels_for(data, "genre"))
    assert "chapter" in err.value.hint
    assert fold_unit(data, "genre", None, labels_for(data, "genre"))[0] == "chapter"


def test_similarity_run_compares_checkpoints_on_the_items_they_share(tmp_path, caplog):
    from xlprobe.hooks.extract import extract
    from xlprobe.probes.cka import cka
    from xlprobe.store import ActivationStore
    from xlprobe.tasks import load_data
    from xlprobe.tiny import build
    from xlprobe.types import Dataset

    ds = load_data("bible:en,fr?books=Ruth", limit=15)
    first, last = Dataset("first", ds.records[:20]), Dataset("last", ds.records[10:])  # 10 items in common
    a, tok = build("mbart", seed=0)
    b, _ = build("mbart", seed=1, tokenizer=tok)
    store = ActivationStore.open(tmp_path)
    extract(a, tok, first, "encoder.0", store=store, provenance={"model_spec": "A"})
    extract(b, tok, last, "encoder.0", store=store, provenance={"model_spec": "B"})
    with caplog.at_level("INFO", logger="xlprobe.similarity"):
        df = similarity_run(tmp_path, debiased=False, centrings=("pooled",))
    pair = df[(df.checkpoint == "A") & (df.ref_checkpoint == "B")]
    assert len(pair) == 1 and pair.n.iloc[0] == 10 and "10 shared items" in caplog.text
    xa = extract(a, tok, Dataset("s", ds.records[10:20]), "encoder.0")["encoder.0"]
    xb = extract(b, tok, Dataset("s", ds.records[10:20]), "encoder.0")["encoder.0"]
    assert abs(pair.value.iloc[0] - cka(xa, xb)) < 1e-6  # CKA on exactly the shared items, aligned
    apart = ActivationStore.open(tmp_path / "apart")
    extract(a, tok, Dataset("x", ds.records[:8]), "encoder.0", store=apart, provenance={"model_spec": "A"})
    extract(b, tok, Dataset("y", ds.records[20:]), "encoder.0", store=apart, provenance={"model_spec": "B"})
    with pytest.raises(DataError, match="no two checkpoints .* shared items"):
        similarity_run(tmp_path / "apart")
