"""Where models run: --device (resolved and refused before any model loads), the manifest's record of it,
the suite's ``device:``, reduced-precision capture against float32, and one host copy per batch."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from xlprobe.cli import app
from xlprobe.cli_common import device_option, resolve_device
from xlprobe.errors import ConfigError

runner = CliRunner()
NO_GPU = not torch.cuda.is_available()


# ------------------------------------------------------------------ resolution (nothing loaded)
def test_cpu_and_auto_resolve_here():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device(" CPU ") == "cpu"
    want = "cuda" if torch.cuda.is_available() else (
        "mps" if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available() else "cpu")
    assert resolve_device("auto") == want


def test_auto_takes_the_gpu_when_torch_sees_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"


@pytest.mark.skipif(not NO_GPU, reason="the refusal is for machines without a GPU")
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_a_gpu_says_what_and_the_fix(spec):
    with pytest.raises(ConfigError) as info:
        resolve_device(spec)
    assert repr(spec) in info.value.message and "CUDA" in info.value.message
    assert "--device cpu" in info.value.hint and "--device auto" in info.value.hint


def test_cuda_index_beyond_the_gpus_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == "cuda:1"
    assert resolve_device("cuda") == "cuda"
    with pytest.raises(ConfigError, match="sees 2 GPU"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "tpu", ""])
def test_unknown_devices_are_refused(spec):
    with pytest.raises(ConfigError):
        resolve_device(spec)


def test_option_resolves_while_parsing():
    """The option's callback: auto resolved, a bad device a usage error (typer's BadParameter, exit 2)."""
    check = device_option().callback
    assert check("cpu") == "cpu"
    assert check("auto") == resolve_device("auto")
    with pytest.raises(typer.BadParameter, match="unknown device"):
        check("gpu")


@pytest.mark.skipif(not NO_GPU, reason="the refusal is for machines without a GPU")
@pytest.mark.parametrize("command", [
    ["capture", "--model", "toy:lm", "--data", "bible:en?books=Ruth", "--limit", "2"],
    ["finetune", "--model", "toy:lm", "--data", "bible:en?books=Ruth"],
    ["layers", "toy:lm"],
])
def test_cli_cuda_without_a_gpu_fails_before_any_model_loads(command, tmp_path, monkeypatch):
    import xlprobe.loading

    def no_loading(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(xlprobe.loading, "load_model", no_loading)
    res = runner.invoke(app, [*command, "--device", "cuda", *(["--out", str(tmp_path / "o")]
                                                             if command[0] != "layers" else [])])
    assert res.exit_code == 2, res.output
    out = " ".join(res.output.split())
    assert "--device" in out and "CUDA" in out and "--device cpu" in out and "--device auto" in out
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ the manifest records the device
def test_capture_records_the_device_in_every_shard(tmp_path):
    from xlprobe.store import ActivationStore

    out = tmp_path / "store"
    res = runner.invoke(app, ["capture", "--model", "toy:lm", "--data", "bible:en,fr?books=Ruth", "--limit", "4",
                              "--layers", "encoder.0,encoder.1", "--device", "auto", "--out", str(out)])
    assert res.exit_code == 0, res.output
    store = ActivationStore.open(out)
    devices = {store.entry(k)["info"]["device"] for k in store.keys()}
    assert len(store.keys()) == 2
    assert devices == {str(torch.empty(0, device=resolve_device("auto")).device)}  # cpu here, cuda:0 on a GPU


def test_api_capture_records_the_models_device(tmp_path, tiny_model):
    from xlprobe.hooks import extract
    from xlprobe.store import ActivationStore

    model, tok = tiny_model("xlmr")
    store = ActivationStore.open(tmp_path / "s")
    keys = extract(model, tok, ["one text", "another text"], "encoder.0", store=store, device="cpu")
    assert store.entry(keys[0])["info"]["device"] == "cpu"


# ------------------------------------------------------------------ suites
SUITE = """name: t
checkpoints: [toy:lm]
data: {corpus: bible, languages: [en], books: [Ruth], size: 4}
measures: [probe.linear]
"""


def test_suite_device_defaults_to_cpu_and_takes_auto():
    from xlprobe.suite import parse_suite
    from xlprobe.suite_steps import suite_device

    assert parse_suite(SUITE).device == "cpu"
    s = parse_suite(SUITE + "device: auto\n")
    assert s.device == "auto" and suite_device(s) == resolve_device("auto")
    assert parse_suite(SUITE + "device: cuda:1\n").device == "cuda:1"


def test_suite_device_of_bad_syntax_is_refused_at_its_line():
    from xlprobe.suite import parse_suite

    with pytest.raises(ConfigError) as info:
        parse_suite(SUITE + "device: gpu\n", "s.yaml")
    assert info.value.message.startswith("s.yaml:5: device:")
    assert "auto" in info.value.hint


@pytest.mark.skipif(not NO_GPU, reason="the refusal is for machines without a GPU")
def test_suite_cuda_without_a_gpu_is_refused_before_any_model(tmp_path):
    from xlprobe.suite import load_suite

    path = tmp_path / "s.yaml"
    path.write_text(SUITE + "device: cuda\n")
    assert load_suite(path).device == "cuda"  # the syntax is fine; the machine is checked for a run
    with pytest.raises(ConfigError) as info:
        load_suite(path, check_models=True)
    assert info.value.message.startswith(f"{path}:5: device:")
    assert "device: cpu" in info.value.hint


def test_capture_step_loads_on_the_suites_device(tmp_path, monkeypatch):
    import xlprobe.hooks
    import xlprobe.loading
    from xlprobe.suite import parse_suite
    from xlprobe.suite_steps import capture_checkpoints

    seen = []
    monkeypatch.setattr(xlprobe.loading, "load_model", lambda spec, device="cpu": seen.append(device) or (None, None))
    monkeypatch.setattr(xlprobe.hooks, "extract", lambda *a, **k: [])
    capture_checkpoints(parse_suite(SUITE + "device: auto\n"), tmp_path, ds=None)
    assert seen == [resolve_device("auto")]


# ------------------------------------------------------------------ precision and host copies
@pytest.fixture(scope="module")
def toy_verses():
    from xlprobe.loading import load_model
    from xlprobe.tasks import load_data

    model, tok = load_model("toy:lm")
    return model, tok, load_data("bible:en,fr,de,ru?books=Ruth", limit=20, seed=0)


@pytest.mark.parametrize("dtype, tol", [("bfloat16", 0.01), ("float16", 0.002)])
def test_reduced_precision_capture_is_close_to_float32(toy_verses, dtype, tol):
    """toy:lm, 80 verses, mean pooling: bf16 is within 0.4 % of the largest |value| (fp16: 0.05 %), cos > 0.99999."""
    from xlprobe.hooks import extract

    model, tok, ds = toy_verses
    ref = extract(model, tok, ds, "encoder.*")
    low = extract(model, tok, ds, "encoder.*", dtype=dtype)
    assert next(model.parameters()).dtype is torch.float32  # autocast: the weights stay as they are
    for name, x in ref.items():
        y = low[name]
        assert y.dtype == np.float32 and y.shape == x.shape
        assert not np.array_equal(x, y)  # the precision did change the computation
        assert np.abs(y - x).max() <= tol * np.abs(x).max(), name
        cos = (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
        assert cos.min() > 0.99999, name


def test_overflow_in_reduced_precision_is_still_caught(toy_verses, monkeypatch):
    """Non-finite pooled rows raise NumericalError naming the point and the dtype (checked once per batch)."""
    import xlprobe.hooks.runner as runner_mod
    from xlprobe.errors import NumericalError
    from xlprobe.hooks import extract

    model, tok, ds = toy_verses
    real = runner_mod.pool
    monkeypatch.setattr(runner_mod, "pool", lambda *a, **k: real(*a, **k) * torch.tensor(float("inf")))
    with pytest.raises(NumericalError, match="float16") as info:
        extract(model, tok, ds, "encoder.1", dtype="float16")
    assert "encoder" in info.value.message and "float32" in info.value.hint


def test_pooled_rows_leave_the_device_once_per_batch(toy_verses, monkeypatch):
    """Every point of a batch comes to the host in one copy: Tensor.cpu once per batch, not once per point."""
    from xlprobe.hooks import extract
    from xlprobe.hooks.plan import plan_capture

    model, tok, ds = toy_verses
    ref = extract(model, tok, ds, "encoder.*", batch_size=16)
    calls = []
    real = torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    got = extract(model, tok, ds, "encoder.*", batch_size=16)
    monkeypatch.undo()
    plan = plan_capture(model, tok, ds, "encoder.*", batch_size=16)
    n_batches = sum(len(plan.batches(lo, hi)) for lo, hi in plan.chunks())
    assert len(plan.points) == 5 and len(calls) == n_batches
    for name in ref:
        np.testing.assert_array_equal(got[name], ref[name])


def test_token_pooling_rows_come_back_in_one_copy_too(toy_verses):
    from xlprobe.hooks import extract

    model, tok, ds = toy_verses
    sub = ds.subset(list(range(6)), name="six")
    toks = extract(model, tok, sub, ["encoder.0", "encoder.2"], pooling="tokens", batch_size=4)
    mean = extract(model, tok, sub, ["encoder.0", "encoder.2"], pooling="mean", batch_size=4)
    for name in ("encoder.0", "encoder.2"):
        ts = toks[name]
        per_text = np.stack([ts.text(i).mean(0) for i in range(len(ts))])
        np.testing.assert_allclose(per_text, mean[name], rtol=1e-5, atol=1e-5)


def test_under_torchrun_a_bare_cuda_is_this_ranks_gpu(monkeypatch):
    from xlprobe.cli_common import rank_device

    assert rank_device("cuda") == "cuda"  # one process: torch's current GPU
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert rank_device("cuda") == "cuda:3" and rank_device("cuda:1") == "cuda:1" and rank_device("cpu") == "cpu"
