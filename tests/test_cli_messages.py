"""What a new user reads: help, hints in CLI syntax, did-you-mean, progress, resume and interrupt messages."""
from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import xlprobe.cli as cli
from xlprobe.cli import app
from xlprobe.errors import DataError, ModelNotFoundError
from xlprobe.store import ActivationStore

runner = CliRunner()
README = Path(__file__).resolve().parents[1] / "README.md"
CAPTURE = ["capture", "--model", "tiny:mbart", "--data", "bible:en,fr?books=Ruth", "--limit", "6",
           "--layers", "encoder.0,encoder.1"]
COMMANDS = [[], ["layers"], ["data"], ["capture"], ["probe"], ["finetune"], ["similarity"], ["measures"],
            ["weights"], ["store", "ls"], ["store", "verify"], ["toy", "train"], ["toy", "list"]]


def _no_model(monkeypatch: pytest.MonkeyPatch) -> list:
    """Make loading a model record the call and fail, so a test sees whether one was loaded."""
    import xlprobe.loading

    calls: list = []

    def refuse(*a, **kw):
        calls.append(a)
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(xlprobe.loading, "load_model", refuse)
    return calls


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "xlprobe")
def test_help_shows_flags_as_flags_and_every_size_option_has_help(command):
    res = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "<bool>" not in res.output
    for opt in ("--batch-size", "--max-length"):
        for line in (ln for ln in res.output.splitlines() if re.search(rf"{opt} ", ln)):
            assert len(line.split(">", 1)[-1].strip()) > 10, f"{opt} has no help text: {line!r}"


def test_help_keeps_square_brackets_and_lists_language_once():
    capture = runner.invoke(app, ["capture", "--help"], env={"COLUMNS": "200"}).output
    assert "[tgt_lang]" in capture and "--max-length" in capture and "Texts per forward pass" in capture
    probe = " ".join(runner.invoke(app, ["probe", "--help"], env={"COLUMNS": "200"}).output.split())
    assert "language, or a record label of the data (bible: testament, genre, book, translation)" in probe
    flags = runner.invoke(app, ["layers", "tiny:mbart", "--json", "true"])
    assert flags.exit_code == 2  # a flag takes no value (and --help says so: no type column)


def test_cheap_choices_are_refused_before_any_model_loads(monkeypatch, tmp_path):
    calls = _no_model(monkeypatch)
    res = runner.invoke(app, [*CAPTURE, "--pooling", "avg", "--out", str(tmp_path / "s")])
    assert res.exit_code == 2 and "'avg' is not one of mean" in res.output and "did you mean 'mean'" in res.output
    res = runner.invoke(app, [*CAPTURE, "--dtype", "fp16", "--out", str(tmp_path / "s")])
    assert res.exit_code == 2 and "did you mean 'float16'" in res.output
    res = runner.invoke(app, [*CAPTURE, "--batch-size", "0", "--out", str(tmp_path / "s")])
    assert res.exit_code == 2 and "--batch-size" in res.output
    res = runner.invoke(app, ["probe", str(tmp_path), "--probe", "lineer"])
    assert res.exit_code == 2 and "did you mean 'linear'" in res.output
    assert not calls and not (tmp_path / "s").exists()


def test_cli_choices_match_the_library():
    from xlprobe.hooks.pooling import POOLED
    from xlprobe.loading import _TORCH_DTYPES
    from xlprobe.probes.cka import KERNELS
    from xlprobe.probes.classifiers import PROBES
    from xlprobe.probes.paired import CORRECTIONS
    from xlprobe.registry import KINDS
    from xlprobe.toy.config import PRESETS

    assert cli.POOLED == POOLED and cli.PROBE_NAMES == tuple(PROBES) and cli.KERNELS == KERNELS
    assert cli.CORRECTIONS == CORRECTIONS and cli.DTYPES == tuple(_TORCH_DTYPES) and cli.MEASURE_KINDS == KINDS
    assert set(PRESETS) == {"full", "quick"}


@pytest.mark.parametrize("spec, said, not_said", [
    ("bibel:en", "did you mean 'bible'?", None),
    ("bible:fre", "did you mean 'fr'?", "translations=['k'"),
    ("bible:xx", "bible:k,l", "translations=['k'"),
    ("bible:en?limit=0", "--limit 1000", "or None"),
    ("bible:en?limt=3", "did you mean 'limit'?", None),
    ("bible:?translations=en", "bible:en", "langs="),
])
def test_data_spec_errors_speak_cli(monkeypatch, tmp_path, spec, said, not_said):
    calls = _no_model(monkeypatch)
    res = runner.invoke(app, ["capture", "--model", "tiny:mbart", "--data", spec, "--out", str(tmp_path / "s")])
    assert res.exit_code == 2 and said in res.output, res.output
    assert not_said is None or not_said not in res.output
    assert not calls


def test_python_api_keeps_python_hints():
    from xlprobe.tasks import load_bible

    with pytest.raises(DataError) as err:
        load_bible(["xx"])
    assert "translations=['k', 'l']" in err.value.hint and "bible:k,l" in err.value.cli_hint
    with pytest.raises(DataError) as err:
        load_bible(["en"], limit=0)
    assert "limit=1000, or None" in err.value.hint


def test_store_hints_name_the_real_command(tmp_path):
    res = runner.invoke(app, ["store", "ls", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "xlprobe capture" in res.output and "xlprobe extract" not in res.output


def test_data_keeps_bracketed_words():
    res = runner.invoke(app, ["data"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "need the [hub] extra" in res.output


def test_capture_rerun_says_what_was_already_there_and_loads_quietly(tmp_path):
    out = str(tmp_path / "s")
    first = runner.invoke(app, [*CAPTURE, "--out", out])
    assert first.exit_code == 0, first.output
    assert "wrote 2 shard(s)" in first.output and "already" not in first.output
    again = runner.invoke(app, [*CAPTURE, "--out", out])
    assert again.exit_code == 0, again.output
    assert "wrote 0 shard(s)" in again.output and "2 already in the store" in again.output


def test_loading_a_shipped_model_prints_no_progress_bar():
    res = runner.invoke(app, ["layers", "toy:lm", "--json"])
    assert res.exit_code == 0, res.output
    assert "Loading weights" not in res.output and "it/s" not in res.output


def test_ctrl_c_keeps_shards_and_the_same_command_resumes(monkeypatch, tmp_path):
    import importlib

    hx = importlib.import_module("xlprobe.hooks.extract")  # the module (the package exports the function)
    hw = importlib.import_module("xlprobe.hooks.writing")

    monkeypatch.setattr(hx, "extract", functools.partial(hx.extract, chunk_size=4))  # 3 chunks of 4 texts
    batches, labels = [0], []
    after_batch = hw.MemoryTrimmer.after_batch

    def interrupt_third(self):
        batches[0] += 1
        if batches[0] == 3:
            raise KeyboardInterrupt
        after_batch(self)

    def bar(progress, total, what="capturing"):
        labels.append(what)
        return hw.contextlib.nullcontext(), (lambda k: None)

    monkeypatch.setattr(hw.MemoryTrimmer, "after_batch", interrupt_third)
    monkeypatch.setattr(hw, "progress_bar", bar)
    args = [*CAPTURE, "--batch-size", "4", "--out", str(tmp_path / "s")]
    res = runner.invoke(app, args)
    assert res.exit_code == 130, res.output
    assert "interrupted" in res.output and "are kept" in res.output and "same command again" in res.output
    resumed = runner.invoke(app, args)
    assert resumed.exit_code == 0, resumed.output
    assert labels[-1] == "capturing (8 of 12 already stored)"
    monkeypatch.setattr(hw.MemoryTrimmer, "after_batch", after_batch)
    fresh = runner.invoke(app, [*CAPTURE, "--out", str(tmp_path / "fresh")])
    assert fresh.exit_code == 0, fresh.output
    a, b = ActivationStore.open(tmp_path / "s"), ActivationStore.open(tmp_path / "fresh")
    for ka, kb in zip(sorted(a.keys(), key=lambda k: k.point), sorted(b.keys(), key=lambda k: k.point)):
        assert np.array_equal(a.read(ka), b.read(kb))


def test_probe_shows_progress_without_verbose_and_suggests_a_task(tmp_path):
    store = str(tmp_path / "s")
    assert runner.invoke(app, [*CAPTURE, "--out", store]).exit_code == 0
    quick = ["--controls", "", "--measures", "separability.centroid", "--n-boot", "0", "--n-perm", "10",
             "--folds", "2"]
    res = runner.invoke(app, ["probe", store, *quick, "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert re.search(r"\d+\.\ds probing 1 checkpoint\(s\) on 2 layer\(s\)", res.output)
    assert "encoder.1: probe.linear" in res.output and "rows ->" in res.output
    typo = runner.invoke(app, ["probe", store, *quick, "--task", "genr", "--out", str(tmp_path / "r")])
    assert typo.exit_code == 2 and "did you mean 'genre'?" in typo.output
    hint = typo.output.split("hint:", 1)[1]
    assert hint.count("language") == 1 and "testament" in hint


def test_finetune_shows_each_seed_and_a_summary(tmp_path):
    res = runner.invoke(app, ["finetune", "-m", "tiny:bert", "--data", "bible:en,fr", "--limit", "40",
                              "--label", "testament", "--seeds", "0,1", "--steps", "2", "--max-length", "16",
                              "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "fine-tuning tiny:bert (encoder-mean)" in res.output
    assert "seed 0: 2 steps" in res.output and "seed 1: 2 steps" in res.output
    assert "1 fine-tuning run(s) of 2 seed(s) x 2 steps" in res.output


def test_an_uncached_hub_id_fails_at_once_offline_and_without_network(monkeypatch):
    from huggingface_hub import constants

    import xlprobe.loading as loading

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelNotFoundError, match="not in the local Hugging Face cache") as err:
        loading.load_model("nobody-xlprobe/not-a-model")
    assert "HF_HUB_OFFLINE" in err.value.message
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(loading, "_hub_reachable", lambda endpoint, timeout=3.0: False)
    res = runner.invoke(app, ["layers", "nobody-xlprobe/not-a-model"])
    assert res.exit_code == 2 and "cannot be reached" in res.output and "Retrying" not in res.output
    assert res.output.count("error:") == 1

