"""Checkpoints larger than one device: a model dispatched by accelerate (device_map with CPU and disk
entries, weights offloaded to an offload folder) captures the same rows as the plain model, on the CPU."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from xlprobe.errors import ConfigError
from xlprobe.hooks.extract import extract
from xlprobe.hooks.runner import input_device, is_dispatched
from xlprobe.loading import load_model

TEXTS = [f"In the beginning was the Word, verse {i}." if i % 2 else f"Au commencement était la Parole {i}."
         for i in range(20)]

# the embeddings (tied to the LM head) and the second block offloaded to disk, the rest on the CPU: the
# model's first parameter is then on the meta device, so inputs must not follow next(model.parameters())
SPLIT = {"model.shared": "disk", "model.encoder.embed_tokens": "disk", "lm_head": "disk",
         "model.encoder.embed_positions": "cpu", "model.encoder.layernorm_embedding": "cpu",
         "model.encoder.layers.0": "cpu", "model.encoder.layers.1": "disk", "model.encoder.layer_norm": "cpu",
         "model.decoder": "disk", "final_logits_bias": "cpu"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    from xlprobe.tiny import save

    return save("mbart", tmp_path_factory.mktemp("ckpt") / "mbart")


@pytest.fixture(scope="module")
def plain(saved):
    model, tok = load_model(str(saved))
    return model, tok, extract(model, tok, TEXTS, "encoder.*", src_lang="en_XX", batch_size=8)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("pooling", ["mean", "tokens"])
def test_split_over_cpu_and_disk_equals_one_device(saved, plain, tmp_path, pooling):
    model, tok, want = plain
    if pooling != "mean":
        want = extract(model, tok, TEXTS, "encoder.*", src_lang="en_XX", batch_size=8, pooling=pooling)
    split, tok2 = load_model(str(saved), device_map=SPLIT, offload_folder=tmp_path / "off")
    assert is_dispatched(split) and not is_dispatched(model)
    assert next(split.parameters()).device.type == "meta"  # the first parameter is offloaded to disk
    # disk entries are read from the checkpoint's safetensors when they can be (else from offload_folder)
    assert "disk" in split.hf_device_map.values()
    assert split.model.encoder.layers[1].fc1.weight.device.type == "meta"
    assert input_device(split) == torch.device("cpu")
    got = extract(split, tok2, TEXTS, "encoder.*", src_lang="en_XX", batch_size=8, pooling=pooling)
    assert list(got) == list(want) == ["encoder.embeddings", "encoder.0", "encoder.1", "encoder.final_norm"]
    for name in want:
        a = want[name].states if pooling == "tokens" else want[name]
        b = got[name].states if pooling == "tokens" else got[name]
        assert isinstance(b, np.ndarray) and b.dtype == np.float32 and b.shape == a.shape
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_dispatched_model_is_not_moved(saved, tmp_path):
    split, tok = load_model(str(saved), device_map=SPLIT, offload_folder=tmp_path / "off")
    with pytest.raises(ConfigError, match="dispatched"):
        extract(split, tok, TEXTS[:2], "encoder.0", src_lang="en_XX", device="cpu")


def test_device_map_needs_a_checkpoint_folder():
    with pytest.raises(ConfigError, match="save_pretrained"):
        load_model("tiny:mbart", device_map="auto")
    with pytest.raises(ConfigError, match="device_map"):
        load_model("toy:lm", device_map={"": "cpu"})


def test_auto_map_on_this_machine(saved, plain):
    _, _, want = plain
    model, tok = load_model(str(saved), device_map="auto")
    got = extract(model, tok, TEXTS, "encoder.*", src_lang="en_XX", batch_size=8)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-6)


def test_cli_capture_with_a_device_map(saved, tmp_path):
    """--device-map (a JSON map here; 'auto' alike) stores what the plain capture stores, rows on the CPU."""
    import json

    from typer.testing import CliRunner

    from xlprobe.cli import app
    from xlprobe.store import ActivationStore

    cpu_map = {k: "cpu" for k in SPLIT}
    base = ["capture", "--model", str(saved), "--data", "bible:en,fr?books=Ruth", "--limit", "10",
            "--layers", "encoder.*"]
    runner = CliRunner()
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "plain")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "mapped"), "--device-map", json.dumps(cpu_map)])
    assert res.exit_code == 0, res.output
    plain, mapped = ActivationStore.open(tmp_path / "plain"), ActivationStore.open(tmp_path / "mapped")
    keys = sorted(plain.keys(), key=lambda k: k.id)
    assert len(keys) == 4 and sorted(k.id for k in mapped.keys()) == [k.id for k in keys]
    for key in keys:
        got = mapped.read(key)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, plain.read(key), rtol=0, atol=1e-6)
        assert mapped.entry(key)["info"]["device"] == "cpu"
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "bad"), "--device-map", "{cpu"])
    assert res.exit_code != 0 and "JSON" in res.output


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_an_offloaded_model_writes_the_same_shards_as_the_model_loaded_whole(saved, plain, tmp_path):
    from xlprobe.fingerprint import model_fingerprint
    from xlprobe.store import ActivationStore

    model, tok, want = plain
    split, tok2 = load_model(str(saved), device_map=SPLIT, offload_folder=tmp_path / "off")
    assert model_fingerprint(split) == model_fingerprint(model)  # offloaded values read from the hooks
    store = ActivationStore.open(tmp_path / "store")
    keys = extract(split, tok2, TEXTS, "encoder.*", src_lang="en_XX", batch_size=8, store=store)
    for key in keys:
        np.testing.assert_allclose(store.read(key), want[store.entry(key)["info"]["alias"]], rtol=0, atol=1e-6)
        assert store.entry(key)["info"]["device"] == "cpu+disk"
    assert store.verify() == []


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_autocast_on_a_split_model_equals_autocast_on_the_model_whole(saved, plain, tmp_path):
    model, tok, full = plain
    want = extract(model, tok, TEXTS, "encoder.*", src_lang="en_XX", batch_size=8, dtype="bfloat16")
    split, tok2 = load_model(str(saved), device_map=SPLIT, offload_folder=tmp_path / "off")
    got = extract(split, tok2, TEXTS, "encoder.*", src_lang="en_XX", batch_size=8, dtype="bfloat16")
    for name in want:
        assert got[name].dtype == np.float32
        np.testing.assert_array_equal(got[name], want[name])  # the same bf16 kernels, wherever the weights were
    assert max(float(np.abs(want[n] - full[n]).max()) for n in want) > 0  # bf16 did run (it differs from fp32)
