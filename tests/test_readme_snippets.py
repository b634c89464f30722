"""Every ```python block of README.md runs as written, offline, in a fresh namespace.

The blocks define what they use (the shipped toy checkpoints, verses of the shipped Bible corpus), so a
reader can paste any one of them alone. Each runs in a temporary working directory: files a block
writes (``runs/demo``) land there.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks(text: str) -> list[str]:
    """The ```python blocks of a markdown text, in order (the same pattern as test_public_api)."""
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.M | re.S)


BLOCKS = _python_blocks(README.read_text(encoding="utf-8"))


def test_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 3, f"README.md has {len(BLOCKS)} python blocks, expected at least 3"


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"block{i + 1}" for i in range(len(BLOCKS))])
def test_readme_block_runs(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    code = compile(BLOCKS[index], f"README.md python block {index + 1}", "exec")
    exec(code, {"__name__": f"readme_block{index + 1}"})  # noqa: S102  (the README's own example)
