"""A capture killed, then rerun with another layer selection: its part folder is stale once its shards are done."""
from __future__ import annotations

import json

import numpy as np
import pytest

from xlprobe.hooks.distributed import parts_dir, save_part
from xlprobe.hooks.extract import extract
from xlprobe.hooks.plan import plan_capture
from xlprobe.hooks.runner import PlanRunner
from xlprobe.store import ActivationStore
from xlprobe.store_parts import KEYS_FILE, write_group
from xlprobe.tasks.bible import load_bible


@pytest.fixture(scope="module")
def verses():
    return load_bible(translations=["k", "l", "e"], books=["Ruth"], limit=40, seed=0)


def test_old_capture_parts_live_until_its_shards_are_done(tmp_path, tiny_model, verses):
    model, tok = tiny_model("mbart")
    ref = ActivationStore.open(tmp_path / "ref")
    keys = extract(model, tok, verses, "encoder.*", batch_size=8, chunk_size=32, store=ref)
    store = ActivationStore.open(tmp_path / "st")
    plan = plan_capture(model, tok, verses, "encoder.*", batch_size=8, chunk_size=32)
    old = dict(zip([p.name for p in plan.points], keys))
    old = {n: k for n, k in list(old.items())[:2]}  # the killed run captured two points
    folder = parts_dir(store, old)
    write_group(folder, [k.id for k in old.values()])  # as its rank 0 did before any part
    for k in old.values():  # its shards half written
        with store.writer(k, n_rows=len(verses), dim=ref.read(k).shape[1], chunks=[(0, 32), (32, len(verses))]):
            pass
    first = plan.batches(*plan.chunks()[1])[0]
    rows = PlanRunner(model, plan)(first)
    save_part(folder, 1, 1, 2, first, {n: rows[n] for n in old})
    assert store.verify() == []  # live: the killed capture's shards can resume from it
    extract(model, tok, verses, "encoder.*", batch_size=8, chunk_size=32, store=store)  # another selection
    assert folder.is_dir() and sorted(json.loads((folder / KEYS_FILE).read_text())) == sorted(k.id for k in old.values())
    problems = store.verify()
    assert len(problems) == 1 and folder.name in problems[0] and "stale part folder" in problems[0]
    assert store.verify(repair=True) == problems and not folder.exists()
    assert store.verify() == []
    assert [p.name for p in (store.path / "shards").iterdir() if not p.name.endswith(".safetensors")] == []
    for k in keys:
        assert np.array_equal(np.asarray(store.read(k)), np.asarray(ref.read(k)))
