"""The public API is what README.md says: its "Public API" table against every package's ``__all__``.

Both directions: every documented name is in the module's ``__all__`` and every ``__all__`` name is
documented; every exported name can be imported; the README's own examples import what they use. No
model is loaded (importing a module may import torch).
"""
from __future__ import annotations

import ast
import builtins
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

#: The packages; each must have a row.
PACKAGES = ("xlprobe", "xlprobe.hooks", "xlprobe.tasks", "xlprobe.probes", "xlprobe.figures", "xlprobe.toy")
#: Central modules that must have a row too.
REQUIRED = {*PACKAGES, "xlprobe.registry", "xlprobe.results", "xlprobe.types", "xlprobe.errors", "xlprobe.store"}

#: Public functions named like a submodule of their package: ``package.name`` is the function, the module
#: is reached with ``from package.name import ...``. Known and left as they are; a new one fails.
KNOWN_SHADOWS = {"xlprobe.hooks": {"extract"}, "xlprobe.probes": {"cka"}, "xlprobe.tasks": {"catalogue"}}

_NAME = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`")


def _section(text: str, title: str) -> str:
    """The body of the ``## title`` section of a markdown text."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def _table(text: str) -> dict[str, list[str]]:
    """{module: documented names} from the rows of the Public API table (module, holds, names)."""
    rows: dict[str, list[str]] = {}
    for line in _section(text, "Public API").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) != 3 or not cells[0].startswith("`"):
            continue
        module = cells[0].strip("`")
        assert module not in rows, f"two rows for {module}"
        rows[module] = _NAME.findall(cells[2])
    return rows


TABLE = _table(README.read_text(encoding="utf-8"))


def _all(module: str) -> list[str]:
    mod = importlib.import_module(module)
    assert hasattr(mod, "__all__"), f"{module} has no __all__"
    return list(mod.__all__)


def test_table_has_a_row_for_every_package_and_central_module() -> None:
    assert REQUIRED <= set(TABLE), f"no row for {sorted(REQUIRED - set(TABLE))}"


@pytest.mark.parametrize("module", sorted(TABLE))
def test_documented_names_are_exactly_all(module: str) -> None:
    documented, exported = TABLE[module], _all(module)
    assert len(documented) == len(set(documented)), f"{module}: a name is listed twice in README"
    assert len(exported) == len(set(exported)), f"{module}: a name is listed twice in __all__"
    assert not set(documented) - set(exported), \
        f"{module}: documented in README but not in __all__: {sorted(set(documented) - set(exported))}"
    assert not set(exported) - set(documented), \
        f"{module}: in __all__ but not in README's table: {sorted(set(exported) - set(documented))}"


@pytest.mark.parametrize("module", sorted(TABLE))
def test_every_exported_name_imports(module: str) -> None:
    mod = importlib.import_module(module)
    missing = [name for name in _all(module) if not hasattr(mod, name)]
    assert not missing, f"{module}.__all__ names what it does not have: {missing}"
    namespace: dict[str, object] = {}
    exec(f"from {module} import *", namespace)  # noqa: S102  (what a user's star import gets)
    assert set(_all(module)) <= set(namespace)


@pytest.mark.parametrize("package", PACKAGES)
def test_no_public_name_hides_a_submodule(package: str) -> None:
    """``package.name`` must not be a function in one place and a module in another (was xlprobe.toy.train)."""
    submodules = {info.name for info in pkgutil.iter_modules(importlib.import_module(package).__path__)}
    assert set(_all(package)) & submodules == KNOWN_SHADOWS.get(package, set())


def test_probe_not_fitted_error_from_top_level() -> None:
    from sklearn.exceptions import NotFittedError

    from xlprobe import ProbeNotFittedError, XlprobeError
    from xlprobe.errors import ProbeNotFittedError as from_errors

    assert ProbeNotFittedError is from_errors
    assert issubclass(ProbeNotFittedError, XlprobeError) and issubclass(ProbeNotFittedError, NotFittedError)


def test_data_layer_namespace_is_the_documented_one() -> None:
    """The SQLite helper and other internals are reached from their modules only."""
    import xlprobe.tasks
    from xlprobe.tasks.bible import connect

    assert callable(connect) and not hasattr(xlprobe.tasks, "connect")


def test_toy_recipe_is_a_module_and_train_a_function() -> None:
    import xlprobe.toy
    from xlprobe.toy import recipe

    assert recipe.__name__ == "xlprobe.toy.recipe" and xlprobe.toy.train is recipe.train


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.M | re.S)


def test_readme_examples_import_what_they_use() -> None:
    """Every ``from M import x`` in README's Python examples works, and no public name is used unimported."""
    public = {name for names in TABLE.values() for name in names}
    known = set(dir(builtins))
    unimported: list[str] = []
    for block in _python_blocks(README.read_text(encoding="utf-8")):
        tree = ast.parse(block)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                mod = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(mod, alias.name), f"README: from {node.module} import {alias.name} fails"
                    known.add(alias.asname or alias.name)
            elif isinstance(node, ast.Import):
                known.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                known.add(node.id)
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                if node.id in public and node.id not in known:
                    unimported.append(node.id)
    assert not unimported, f"README examples use public names they never import: {sorted(set(unimported))}"
