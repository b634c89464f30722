"""Tests of xlprobe.manifest: the store's index file, re-read when it changes, updated under a lock."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from xlprobe.errors import StoreCorruptError, StoreError, StoreMismatchError
from xlprobe.manifest import FORMAT, MANIFEST, Manifest


def test_update_creates_then_changes_and_load_follows_other_writers(tmp_path: Path) -> None:
    m = Manifest(tmp_path, 1)
    with pytest.raises(StoreError, match="has no manifest.json"):
        m.load()
    m.update(lambda d: d["shards"].__setitem__("a", {"n": 1}))
    assert m.load() == {"format": FORMAT, "version": 1, "shards": {"a": {"n": 1}}, "records": {}}
    assert sorted(os.listdir(tmp_path)) == [".manifest.lock", MANIFEST]  # no temp file left
    other = Manifest(tmp_path, 1)
    other.update(lambda d: d["records"].__setitem__("fp", {}))
    assert m.load()["records"] == {"fp": {}} and m.load()["shards"] == {"a": {"n": 1}}


def test_newer_or_foreign_or_broken_manifest_is_refused(tmp_path: Path) -> None:
    path = tmp_path / MANIFEST
    path.write_text(json.dumps({"format": FORMAT, "version": 2, "shards": {}}))
    with pytest.raises(StoreMismatchError, match="up to 1"):
        Manifest(tmp_path, 1).load()
    assert Manifest(tmp_path, 2).load()["records"] == {}  # missing records: an empty object
    path.write_text(json.dumps({"format": "other", "version": 1, "shards": {}}))
    with pytest.raises(StoreMismatchError, match="'other'"):
        Manifest(tmp_path, 1).load()
    path.write_text("[]")
    with pytest.raises(StoreCorruptError, match="not valid"):
        Manifest(tmp_path, 1).load()
