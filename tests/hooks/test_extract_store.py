"""extract() into an ActivationStore: shards equal the in-memory arrays, runs resume after a kill."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from xlprobe.errors import StoreCorruptError
from xlprobe.hooks.extract import extract
from xlprobe.store import ActivationStore
from xlprobe.tasks.bible import load_bible


@pytest.fixture(scope="module")
def verses():
    return load_bible(translations=["k", "l", "e"], books=["Ruth"], limit=40, seed=0)


def test_store_matches_memory_and_skips_complete_shards(tmp_path, tiny_model, verses):
    model, tok = tiny_model("mbart")
    mem = extract(model, tok, verses, "encoder.*", batch_size=16)
    store = ActivationStore.open(tmp_path / "st")
    keys = extract(model, tok, verses, "encoder.*", batch_size=16, chunk_size=32, store=store,
                   provenance={"command": "xlprobe capture --demo"})
    assert [k.point for k in keys] == [p.name for p in mem.points]  # shards by module path, arrays by alias
    assert list(mem) == [p.alias for p in mem.points]
    for k in keys:
        np.testing.assert_allclose(store.read(k), mem[k.point], atol=1e-6)
        assert store.entry(k)["info"]["command"] == "xlprobe capture --demo"
    assert store.records(keys[0].data).fingerprint == verses.fingerprint
    calls = []
    h = model.model.encoder.layers[0].register_forward_hook(lambda *a: calls.append(1))
    try:
        again = extract(model, tok, verses, "encoder.*", store=store)
    finally:
        h.remove()
    assert again == keys and calls == []  # complete shards are skipped: no forward at all


def test_tokens_pooling_into_store(tmp_path, tiny_model, verses):
    model, tok = tiny_model("bert")
    mem = extract(model, tok, verses, "encoder.1", pooling="tokens", batch_size=8)["encoder.1"]
    store = ActivationStore.open(tmp_path / "st")
    (key,) = extract(model, tok, verses, "encoder.1", pooling="tokens", batch_size=8, chunk_size=50, store=store)
    np.testing.assert_allclose(store.read(key), mem.states, atol=1e-6)
    extras = store.read_extras(key)
    assert np.array_equal(extras["row_ptr"], mem.row_ptr) and np.array_equal(extras["token_ids"], mem.token_ids)
    assert np.array_equal(extras["char_spans"], mem.char_spans)


_KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    from xlprobe.hooks.extract import extract
    from xlprobe.store import ActivationStore
    from xlprobe.tasks.bible import load_bible
    from xlprobe.tiny import build
    model, tok = build("mbart")
    ds = load_bible(translations=["k", "l", "e"], books=["Ruth"], limit=40, seed=0)
    calls = [0]
    def die(*a):
        calls[0] += 1
        if calls[0] == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)   # no cleanup, no finally: like a crash or an OOM kill
    model.model.encoder.layers[1].register_forward_hook(die)
    extract(model, tok, ds, "encoder.*", batch_size=8, chunk_size=24, store=ActivationStore.open(sys.argv[1]))
""")


def test_killed_run_resumes_with_identical_arrays(tmp_path, tiny_model, verses):
    model, tok = tiny_model("mbart")
    path = tmp_path / "killed"
    # 120 texts, chunks of 24 -> 5 chunks of 3 batches; die in the 10th batch (chunk 3), after 3 commits
    proc = subprocess.run([sys.executable, "-c", _KILLED_RUN, str(path), "11"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    store = ActivationStore.open(path)
    assert store.keys() == []  # nothing complete yet
    calls = []
    h = model.model.encoder.layers[1].register_forward_hook(lambda *a: calls.append(1))
    try:
        keys = extract(model, tok, verses, "encoder.*", batch_size=8, chunk_size=24, store=store)
    finally:
        h.remove()
    # only the uncommitted chunks are recomputed (+1 forward to read the dims)
    assert len(calls) < 15, len(calls)
    fresh = ActivationStore.open(tmp_path / "fresh")
    ref = extract(model, tok, verses, "encoder.*", batch_size=8, chunk_size=24, store=fresh)
    for k, r in zip(keys, ref):
        assert k == r
        assert np.array_equal(np.asarray(store.read(k)), np.asarray(fresh.read(r)))
    assert not [p for p in os.listdir(path / "shards") if p.endswith(".tmp")]


def test_corrupted_shard_names_file_and_rebuild_command(tmp_path, tiny_model, verses):
    model, tok = tiny_model("bert")
    store = ActivationStore.open(tmp_path / "st")
    (key,) = extract(model, tok, verses, "encoder.0", store=store, provenance={"command": "xlprobe capture X"})
    f = tmp_path / "st" / store.entry(key)["file"]
    data = bytearray(f.read_bytes())
    data[-5] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(StoreCorruptError) as err:
        ActivationStore.open(tmp_path / "st").read(key)
    assert f.name in str(err.value) and "xlprobe capture X" in str(err.value)
