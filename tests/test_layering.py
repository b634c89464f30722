"""Data flows one way (tasks -> hooks -> store -> probes -> figures): checked on the imports themselves."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# what each stage may import from xlprobe, besides itself
ALLOWED = {
    "tasks": {"xlprobe.types", "xlprobe.errors"},
    "hooks": {"xlprobe.types", "xlprobe.errors", "xlprobe.store", "xlprobe.fingerprint"},
    "probes": {"xlprobe.types", "xlprobe.errors", "xlprobe.store", "xlprobe.registry", "xlprobe.results",
               "xlprobe.tasks.splits"},
    "figures": {"xlprobe.types", "xlprobe.errors", "xlprobe.results"},
}


def _xlprobe_imports(path: Path) -> set[str]:
    """Every xlprobe module a file imports (top level or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("xlprobe")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("xlprobe"):
            out.add(node.module)
    return out


@pytest.mark.parametrize("stage", sorted(ALLOWED))
def test_stage_imports_only_upstream(stage):
    own = f"xlprobe.{stage}"
    for path in sorted((ROOT / stage).glob("*.py")):
        if path.name == "__init__.py":
            continue
        for mod in _xlprobe_imports(path):
            ok = mod == own or mod.startswith(own + ".") or mod in ALLOWED[stage]
            assert ok, f"{stage}/{path.name} imports {mod}: {stage} may only import {sorted(ALLOWED[stage])}"


def test_store_knows_nothing_of_models_or_data_loading():
    for name in ("store.py", "shard.py", "fingerprint.py", "types.py", "errors.py"):
        mods = _xlprobe_imports(ROOT / "xlprobe" / name)
        assert mods <= {"xlprobe.types", "xlprobe.errors", "xlprobe.fingerprint", "xlprobe.store",
                        "xlprobe.shard"}, (name, mods)
