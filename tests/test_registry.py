"""The measure registry: built-ins, refused duplicates, suggestions for unknown names, plugins."""
from __future__ import annotations

import dataclasses
import importlib.metadata
import sys
import textwrap
from pathlib import Path

import pytest

from xlprobe import registry
from xlprobe.errors import ConfigError
from xlprobe.registry import MeasureSpec, get_measure, list_measures, register_measure


@pytest.fixture
def scratch(monkeypatch):
    """A private copy of the registry for tests that register measures."""
    list_measures()  # built-ins in first, so the copy has them
    monkeypatch.setattr(registry, "_MEASURES", dict(registry._MEASURES))
    return registry._MEASURES


def test_builtins_are_listed_with_their_data():
    specs = {s.name: s for s in list_measures()}
    assert {"cka", "cka.linear", "cka.rbf", "svcca", "pwcca", "procrustes"} <= set(specs)
    assert specs["procrustes"].direction == "distance" and specs["svcca"].direction == "similarity"
    assert all(isinstance(s, MeasureSpec) and s.summary for s in specs.values())
    assert [s.name for s in list_measures()] == sorted(specs)
    assert all(s.kind == "paired" for s in list_measures(kind="paired"))
    with pytest.raises(ConfigError, match="kind"):
        list_measures(kind="pairs")


def test_unknown_name_suggests_the_closest(scratch):
    with pytest.raises(ConfigError) as err:
        get_measure("cka.lienar")
    assert "did you mean 'cka.linear'" in str(err.value)
    assert "known measures: " in err.value.hint and "procrustes" in err.value.hint
    with pytest.raises(ConfigError) as err:
        get_measure("zzzzzz")
    assert "did you mean" not in str(err.value) and "svcca" in str(err.value)


def test_duplicates_are_refused(scratch):
    def f(X, Y, *, seed=0):
        return 0.0

    with pytest.raises(ConfigError, match="already registered"):
        register_measure("cka", kind="paired", direction="similarity")(f)
    def g(X, Y, *, seed=0):
        return 1.0

    register_measure("test.f", kind="paired", direction="distance")(f)
    with pytest.raises(ConfigError, match="already registered"):
        register_measure("test.f", kind="paired", direction="distance")(g)
    assert get_measure("test.f").fn is f


def test_spec_is_data_and_defaults_apply(scratch):
    @register_measure("test.scaled", kind="unlabelled", direction="higher_better", scale=2.0)
    @register_measure("test.plain", kind="unlabelled", direction="higher_better")
    def plain(X, *, scale=1.0, seed=0):
        """Scale a number.

        More text.
        """
        return X * scale

    assert plain(3.0) == 3.0  # the decorator returns the function unchanged
    spec = get_measure("test.scaled")
    assert (spec.kind, spec.direction, spec.reads, spec.fn) == ("unlabelled", "higher_better", "none", plain)
    assert spec.summary == "Scale a number." and spec(3.0) == 6.0 and spec(3.0, scale=10.0) == 30.0
    assert get_measure("test.plain")(3.0) == 3.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"
    with pytest.raises(TypeError):
        spec.defaults["scale"] = 5.0


def test_reloading_a_measure_module_is_not_a_duplicate(scratch):
    import importlib

    list_measures()
    mod = sys.modules["xlprobe.probes.procrustes"]  # the module (the package attribute is the function)
    old = get_measure("procrustes").fn
    importlib.reload(mod)
    assert get_measure("procrustes").fn is mod.procrustes_distance is not old


@pytest.mark.parametrize("kw,match", [
    ({"kind": "pairs", "direction": "similarity"}, "kind"),
    ({"kind": "paired", "direction": "up"}, "direction"),
    ({"kind": "paired", "direction": "similarity", "reads": "yes"}, "reads"),
    ({"kind": "paired", "direction": "similarity", "reads": "labels"}, "reads"),  # only labelled measures read
    ({"kind": "unlabelled", "direction": "similarity", "reads": "languages"}, "reads"),
    ({"kind": "labelled", "direction": "similarity", "reads": "none"}, "reads"),
    ({"kind": "paired", "direction": "similarity", "doc": 3}, "doc"),
])
def test_bad_registrations(scratch, kw, match):
    with pytest.raises(ConfigError, match=match):
        register_measure("test.bad", **kw)


def test_reads_defaults_by_kind_and_is_given_for_languages(scratch):
    def f(X, y, groups, *, seed=0):
        return 0.0

    register_measure("test.lab", kind="labelled", direction="higher_better")(f)
    register_measure("test.lang", kind="labelled", direction="higher_better", reads="languages")(f)
    register_measure("test.unl", kind="unlabelled", direction="higher_better")(lambda X, *, seed=0: 0.0)
    assert [get_measure(n).reads for n in ("test.lab", "test.lang", "test.unl")] == ["labels", "languages", "none"]
    assert get_measure("retrieval.p_at_1").reads == get_measure("retrieval.p_at_1.centered").reads == "languages"
    assert get_measure("probe.linear").reads == get_measure("separability.knn").reads == "labels"
    assert {s.reads for s in list_measures() if s.kind != "labelled"} == {"none"}
    assert not hasattr(get_measure("cka"), "needs_labels")


def test_table_kind_needs_no_seed_and_takes_its_own_doc(scratch):
    def producer(reps, *, probe="linear"):
        """Produce a whole table."""

    register_measure("test.rows", kind="table", direction="lower_better", probe="mlp", doc="One row kind.")(producer)
    register_measure("test.rows2", kind="table", direction="lower_better")(producer)
    assert get_measure("test.rows").summary == "One row kind." and get_measure("test.rows2").summary == \
        "Produce a whole table."
    with pytest.raises(ConfigError, match="alpha"):
        register_measure("test.rows3", kind="table", direction="lower_better", alpha=1)(producer)


def test_the_main_probe_and_every_table_name_are_registered():
    names = {s.name for s in list_measures()}
    assert {"probe.linear", "probe.mlp", "probe.estimator", "probe.linear.selectivity", "probe.mlp.selectivity",
            "probe.estimator.selectivity", "transfer.accuracy", "transfer.gap", "finetune.accuracy",
            "finetune.transfer_gap", "finetune.train_loss", "cka.linear.debiased", "cka.rbf.debiased"} <= names
    assert get_measure("probe.linear").kind == "labelled" and get_measure("finetune.accuracy").kind == "table"
    assert get_measure("cka.linear.debiased").defaults == {"kernel": "linear", "debiased": True}


def test_the_registry_imports_no_measure_and_loads_the_builtins_once(monkeypatch):
    import ast

    tree = ast.parse(Path(registry.__file__).read_text(encoding="utf-8"))
    named = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
             and n.value.startswith("xlprobe.") and " " not in n.value}
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names} | \
        {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert named == {"xlprobe.measures"} and {m for m in imported if m and m.startswith("xlprobe")} == {"xlprobe.errors"}
    list_measures()  # the real built-ins first: the fake loader below stands for a later one
    calls = []
    monkeypatch.setattr(registry, "_BUILTIN_LOADERS", [lambda: calls.append(1)])
    get_measure("cka")
    list_measures()
    assert calls == [1]  # run once, at the first read
    with pytest.raises(ConfigError, match="callable"):
        registry.add_builtin_loader("xlprobe.probes")


def test_a_failing_builtin_loader_raises_and_stays(monkeypatch):
    def broken():
        raise ImportError("no torch")

    monkeypatch.setattr(registry, "_BUILTIN_LOADERS", [broken])
    for _ in range(2):
        with pytest.raises(ImportError, match="no torch"):
            list_measures()


def test_measures_must_take_seed_and_their_defaults(scratch):
    with pytest.raises(ConfigError, match="seed"):
        register_measure("test.noseed", kind="paired", direction="similarity")(lambda X, Y: 0.0)
    with pytest.raises(ConfigError, match="alpha"):
        register_measure("test.nodefault", kind="paired", direction="similarity", alpha=1)(
            lambda X, Y, *, seed=0: 0.0)
    register_measure("test.kwargs", kind="paired", direction="similarity", alpha=1)(lambda X, Y, **kw: 0.0)
    with pytest.raises(ConfigError, match="name"):
        register_measure(" cka", kind="paired", direction="similarity")
    assert "test.noseed" not in registry._MEASURES


def test_entry_point_plugins_load_lazily(scratch, monkeypatch, tmp_path: Path):
    (tmp_path / "xlprobe_test_plugin.py").write_text(textwrap.dedent('''
        from xlprobe.registry import register_measure

        @register_measure("plugin.demo", kind="unlabelled", direction="lower_better")
        def demo(X, *, seed=0):
            """A plugin measure."""
            return 42.0
    '''))
    (tmp_path / "xlprobe_broken_plugin.py").write_text("raise ImportError('missing dependency')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "xlprobe_test_plugin", raising=False)
    group = registry.ENTRY_POINT_GROUP
    eps = [importlib.metadata.EntryPoint("demo", "xlprobe_test_plugin", group),
           importlib.metadata.EntryPoint("broken", "xlprobe_broken_plugin", group)]
    calls = []

    def fake_entry_points(*, group):
        calls.append(group)
        return [ep for ep in eps if ep.group == group]

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    assert get_measure("cka").name == "cka" and calls == []  # a known name needs no plugin scan
    assert "xlprobe_test_plugin" not in sys.modules
    with pytest.warns(RuntimeWarning, match="broken"):
        spec = get_measure("plugin.demo")
    assert calls == [group] and spec(None) == 42.0 and spec.summary == "A plugin measure."
    with pytest.warns(RuntimeWarning, match="broken"):
        names = [s.name for s in list_measures()]
    assert "plugin.demo" in names and "cka" in names  # a broken plugin hides nothing else


@pytest.mark.parametrize("name,fn_name,module,kind,direction", [
    ("geometry.effective_rank", "effective_rank", "geometry", "unlabelled", "higher_better"),
    ("geometry.anisotropy", "anisotropy", "geometry", "unlabelled", "lower_better"),
    ("geometry.norm_mean", "norm_mean", "geometry", "unlabelled", "lower_better"),
    ("separability.fisher", "fisher_ratio", "separability", "labelled", "higher_better"),
    ("separability.silhouette", "silhouette", "separability", "labelled", "higher_better"),
    ("separability.knn", "knn_accuracy", "separability", "labelled", "higher_better"),
    ("separability.centroid", "nearest_centroid_accuracy", "separability", "labelled", "higher_better"),
])
def test_geometry_and_separability_specs(name, fn_name, module, kind, direction):
    import importlib

    import numpy as np

    fn = getattr(importlib.import_module(f"xlprobe.probes.{module}"), fn_name)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(10, 4)), np.repeat([0, 1], 5)
    spec = get_measure(name)
    assert (spec.fn, spec.kind, spec.direction, spec.reads) == (fn, kind, direction, "labels" if kind == "labelled" else "none")
    assert spec.summary
    value = spec(X, y, None, seed=0) if kind == "labelled" else spec(X, seed=0)
    assert isinstance(value, float) and np.isfinite(value)
