"""Data flows one way (tasks -> hooks -> store -> probes -> figures / report): checked on the imports themselves.

One table gives every module of the package a stage and every stage the stages it may import. An
import is any ``import`` / ``from ... import`` statement (top level or inside a function) and any
string literal that names an xlprobe module (``importlib.import_module("xlprobe.probes")`` or a lazy
table), so an import the ``import`` statement does not show is still seen. Only the runners (the CLI,
the run functions, fine-tuning) and the ``__init__`` files import across stages.
"""
from __future__ import annotations

import ast
import fnmatch
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {"xlprobe": ROOT / "xlprobe", "xlprobe.hooks": ROOT / "hooks", "xlprobe.tasks": ROOT / "tasks",
                "xlprobe.probes": ROOT / "probes", "xlprobe.figures": ROOT / "figures"}

#: module (glob over dotted names) -> stage. First match wins.
STAGE_OF = (
    # the contracts every stage shares: types, errors, hashing, atomic writes, folds on arrays, the
    # results table and the measure registry (measures register into it; it imports no stage)
    ("xlprobe.types", "base"), ("xlprobe.errors", "base"), ("xlprobe.fingerprint", "base"),
    ("xlprobe.durable", "base"), ("xlprobe.folds", "base"), ("xlprobe.results", "base"),
    ("xlprobe.registry", "base"),
    ("xlprobe.store", "store"), ("xlprobe.store_parts", "store"), ("xlprobe.shard", "store"),
    ("xlprobe.shard_writer", "store"),
    ("xlprobe.manifest", "store"),
    ("xlprobe.tasks*", "tasks"),
    ("xlprobe.hooks*", "hooks"),
    ("xlprobe.probes*", "probes"),
    ("xlprobe.figures*", "figures"),
    # model providers: load or build (model, tokenizer) pairs
    ("xlprobe.loading", "models"), ("xlprobe.tiny", "models"), ("xlprobe.toy*", "models"),
    # runners: they join the stages, so they may import any of them
    ("xlprobe.cli", "runner"), ("xlprobe.cli_tables", "runner"), ("xlprobe.cli_common", "runner"),
    ("xlprobe.cli_admin", "runner"), ("xlprobe.cli_weights", "runner"), ("xlprobe.cli_suite", "runner"),
    ("xlprobe.suite_run", "runner"), ("xlprobe.suite_figures", "runner"), ("xlprobe.runs", "runner"), ("xlprobe.finetune", "runner"),
    ("xlprobe.comparisons", "runner"), ("xlprobe.probe_suite", "runner"), ("xlprobe.similarity", "runner"),
    ("xlprobe.intervene", "runner"), ("xlprobe.path_metrics", "runner"), ("xlprobe.suite", "runner"),
    ("xlprobe.report", "runner"), ("xlprobe.findings", "runner"), ("xlprobe.claims", "runner"),
    ("xlprobe.cli_study", "runner"), ("xlprobe.devices", "runner"), ("xlprobe.suite_plan", "runner"), ("xlprobe.suite_estimate", "runner"),
    ("xlprobe.suite_steps", "runner"),
    ("xlprobe.__main__", "runner"),
    ("xlprobe", "runner"),  # the package's __init__: the public API, re-exported lazily from every stage
)

#: stage -> the stages it may import besides its own.
ALLOWED = {
    "base": set(),
    "tasks": {"base"},  # datasets know nothing about models
    "store": {"base"},  # the store knows nothing of models or data loading
    "hooks": {"base", "store"},  # capture writes into the store; it reads Datasets (types), not loaders
    "probes": {"base", "store"},  # measures read arrays, and the store (streaming CKA)
    "figures": {"base"},  # figures read tidy tables and arrays
    # tiny:<family> and the toy recipe train their tokenizers on the Bible verses that tasks reads:
    # a model provider may read data, never capture or measure
    "models": {"base", "tasks"},
    "runner": {"base", "store", "tasks", "hooks", "probes", "figures", "models", "runner"},
}


def _module_name(path: Path) -> str:
    """The dotted name of a source file of the package (``__init__`` files give the package's name)."""
    for pkg, folder in sorted(PACKAGE_DIRS.items(), key=lambda kv: -len(str(kv[1]))):
        if path.is_relative_to(folder):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            return ".".join([pkg, *[p for p in parts if p != "__init__"]])
    raise AssertionError(f"{path} is outside the package")


def _sources() -> list[Path]:
    """Every source file of the package."""
    return sorted(p for folder in PACKAGE_DIRS.values() for p in folder.rglob("*.py")
                  if "__pycache__" not in p.parts)


MODULES = {_module_name(p) for p in _sources()}


def stage(module: str) -> str:
    """The stage of a dotted module name."""
    for pattern, name in STAGE_OF:
        if fnmatch.fnmatchcase(module, pattern):
            return name
    raise AssertionError(f"{module} has no stage: add it to STAGE_OF in tests/test_layering.py")


def xlprobe_imports(path: Path) -> set[str]:
    """Every xlprobe module a file imports: statements anywhere, and string literals naming a module."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("xlprobe")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("xlprobe"):
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "." in node.value \
                and node.value in MODULES:  # bare "xlprobe" is the distribution's name (versions), not an import
            out.add(node.value)
    return out


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_module_imports_only_what_its_stage_allows(path):
    me = _module_name(path)
    if path.name == "__init__.py":
        return  # package __init__ files re-export across stages (the public API); nothing else may
    mine = stage(me)
    for mod in sorted(xlprobe_imports(path)):
        theirs = stage(mod)
        assert theirs == mine or theirs in ALLOWED[mine], (
            f"{path.relative_to(ROOT)} ({mine}) imports {mod} ({theirs}); {mine} may import "
            f"{sorted(ALLOWED[mine] | {mine})}")


def test_every_module_has_a_stage():
    assert {m: stage(m) for m in MODULES}


def test_string_imports_are_seen(tmp_path):
    f = tmp_path / "m.py"
    f.write_text('import importlib\nNAME = "xlprobe.probes"\nimportlib.import_module(NAME)\n'
                 '"""xlprobe.probes in a sentence is prose, not an import."""\n')
    assert xlprobe_imports(f) == {"xlprobe.probes"}


def test_a_reverse_import_would_fail():
    assert "tasks" not in ALLOWED["store"] and "hooks" not in ALLOWED["tasks"]
    assert "probes" not in ALLOWED["hooks"] and "hooks" not in ALLOWED["probes"] and "probes" not in ALLOWED["base"]


def private_imports(path: Path, me: str | None = None) -> list[str]:
    """``module.name`` for every private name (``_x``, not dunder) a file imports from another xlprobe module."""
    me = me or _module_name(path)
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("xlprobe") \
                and node.module != me:
            out += [f"{node.module}.{a.name}" for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")]
    return out


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_name_is_imported_across_modules(path):
    assert private_imports(path) == [], "make the name public (and say what it is for) or move the caller"


def test_a_private_import_would_be_seen(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("from xlprobe.hooks.writing import _x, __version__, shard_info\nfrom xlprobe.m import _own\n")
    assert private_imports(f, "xlprobe.m") == ["xlprobe.hooks.writing._x"]
