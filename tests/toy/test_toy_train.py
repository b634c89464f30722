"""The toy-family recipe end to end on the ``quick`` preset: outputs, conventions, determinism, resume."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForMaskedLM, AutoModelForSeq2SeqLM, AutoTokenizer

from xlprobe.errors import ConfigError
from xlprobe.toy import STAGES, get_preset, train
from xlprobe.toy import recipe as toy_train
from xlprobe.toy.config import ENCODER_ONLY
from xlprobe.toy.tokenizer import lang_id

SAVE_EVERY_STEP = {"checkpoint_every_s": 0.0}
SEQ2SEQ = [s for s in STAGES if s not in ENCODER_ONLY]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[Path, dict]:
    """One uninterrupted quick run (checkpointing every step): (out_dir, summary)."""
    out = tmp_path_factory.mktemp("quick")
    summary = train(out, "quick", seed=0, **SAVE_EVERY_STEP)
    return out, summary


def _curves(out: Path) -> dict[str, list[tuple[float, int]]]:
    """(loss, tokens) per step of every stage, read from the JSON curves."""
    return {s: [(c["loss"], c["tokens"]) for c in json.loads((out / "curves" / f"{s}.json").read_text())]
            for s in STAGES}


def _share_tokenizer(src: Path, dst: Path) -> None:
    """Give ``dst`` the tokenizer of ``src`` (a run trains its tokenizer once and reuses it on resume;
    HF's Unigram trainer is not bit-reproducible at its pruning boundary, so compare models on one)."""
    shutil.copytree(src / "tokenizer", dst / "tokenizer")


class _Killed(Exception):
    """Stands in for a kill signal in the middle of training."""


@pytest.mark.slow
def test_quick_run_is_complete(quick_run) -> None:
    """All stages ran their steps, curves and eval results were written."""
    out, summary = quick_run
    cfg = get_preset("quick")
    assert set(summary["stages"]) == set(STAGES)
    for stage in STAGES:
        rows = list(csv.DictReader(open(out / "curves" / f"{stage}.csv")))
        assert len(rows) == cfg.stage_steps(stage)
        assert all(float(r["loss"]) > 0 for r in rows)
    ev = json.loads((out / "eval.json").read_text())
    for stage in SEQ2SEQ:
        assert set(ev[stage]["chrf"]) == {f"{s}-{t}" for s, t in cfg.eval_directions}
        assert set(ev[stage]["denoise_loss"]) == set(cfg.langs)
    for stage in ENCODER_ONLY:
        assert set(ev[stage]["mlm_loss"]) == set(cfg.langs)
    log = (out / "train.log").read_text()
    assert "tok/s" in log and "loss" in log
    assert json.loads((out / "summary.json").read_text())["checkpoint_bytes"] <= 25 * 2**20


@pytest.mark.slow
def test_lm_loss_falls(quick_run) -> None:
    """Denoising loss goes down during the lm stage."""
    curve = _curves(quick_run[0])["lm"]
    assert sum(c[0] for c in curve[-4:]) < sum(c[0] for c in curve[:4])


@pytest.mark.slow
def test_exported_checkpoints_load_with_auto_classes(quick_run) -> None:
    """Each stage is an fp16 safetensors folder loadable by AutoModelForSeq2SeqLM (AutoModelForMaskedLM
    for mlm) / AutoTokenizer."""
    out = quick_run[0]
    for stage in STAGES:
        folder = out / "checkpoints" / stage
        assert (folder / "model.safetensors").exists()
        auto = AutoModelForMaskedLM if stage in ENCODER_ONLY else AutoModelForSeq2SeqLM
        model = auto.from_pretrained(str(folder))
        tok = AutoTokenizer.from_pretrained(str(folder))
        assert type(model).__name__ == ("XLMRobertaForMaskedLM" if stage in ENCODER_ONLY
                                        else "MBartForConditionalGeneration")
        assert type(tok).__name__ == ("XLMRobertaTokenizer" if stage in ENCODER_ONLY else "MBart50Tokenizer")
        ids = tok("In the beginning")["input_ids"]
        if stage in ENCODER_ONLY:  # <s> X </s>, as mlm trained: no language code
            assert ids[0] == tok.bos_token_id == 0 and ids[-1] == tok.eos_token_id == 2
        assert model.dtype == torch.float16
        assert model.config.vocab_size == len(tok)
        assert json.loads((folder / "xlprobe_toy.json").read_text())["stage"] == stage


@pytest.mark.slow
def test_generation_conventions(quick_run) -> None:
    """Decoding starts with </s>, then the forced target code, and ends with </s>."""
    folder = quick_run[0] / "checkpoints" / "mt"
    model = AutoModelForSeq2SeqLM.from_pretrained(str(folder), dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(folder))
    gc = model.generation_config
    assert gc.decoder_start_token_id == tok.eos_token_id == 2
    assert gc.forced_eos_token_id == tok.eos_token_id
    tok.src_lang = "en_XX"
    enc = tok(["In the beginning God created the heaven and the earth."], return_tensors="pt")
    fr = lang_id(tok, "fr_XX")
    gen = model.generate(**enc, forced_bos_token_id=fr, max_new_tokens=8)
    assert gen[0, 0].item() == tok.eos_token_id and gen[0, 1].item() == fr


@pytest.mark.slow
def test_same_seed_same_run(quick_run, tmp_path) -> None:
    """A second run from the same seed reproduces every loss of every stage."""
    _share_tokenizer(quick_run[0], tmp_path)
    train(tmp_path, "quick", seed=0, **SAVE_EVERY_STEP)
    assert _curves(tmp_path) == _curves(quick_run[0])


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", [10, 30])
def test_resume_after_kill_matches_uninterrupted(quick_run, tmp_path, monkeypatch, kill_after) -> None:
    """Killed inside lm (10) or inside mt (30), the resumed run gives the uninterrupted losses."""
    real, calls = toy_train.collate, {"n": 0}

    def dying_collate(*args, **kwargs):
        """collate, until the kill."""
        calls["n"] += 1
        if calls["n"] > kill_after:
            raise _Killed
        return real(*args, **kwargs)

    _share_tokenizer(quick_run[0], tmp_path)
    monkeypatch.setattr(toy_train, "collate", dying_collate)
    with pytest.raises(_Killed):
        train(tmp_path, "quick", seed=0, **SAVE_EVERY_STEP)
    monkeypatch.setattr(toy_train, "collate", real)
    train(tmp_path, "quick", seed=0, **SAVE_EVERY_STEP)
    assert "resumed at step" in (tmp_path / "train.log").read_text()
    assert _curves(tmp_path) == _curves(quick_run[0])
    ev, ref = (json.loads((p / "eval.json").read_text()) for p in (tmp_path, quick_run[0]))
    assert {s: ev[s].get("chrf", ev[s].get("mlm_loss")) for s in STAGES} == \
        {s: ref[s].get("chrf", ref[s].get("mlm_loss")) for s in STAGES}


@pytest.mark.slow
def test_finished_run_is_not_retrained(quick_run, monkeypatch) -> None:
    """Calling train again on a finished run trains and evaluates nothing, rewrites no checkpoint,
    and returns the same summary."""
    out, summary = quick_run

    def redone(*args, **kwargs):
        raise AssertionError("a finished run was trained or evaluated again")

    monkeypatch.setattr(toy_train, "_run_stage", redone)
    monkeypatch.setattr(toy_train, "evaluate_model", redone)
    files = sorted(p for p in (out / "checkpoints").rglob("*") if p.is_file())
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}
    again = train(out, "quick", seed=0, **SAVE_EVERY_STEP)
    assert again["stages"] == summary["stages"]
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files} == before


@pytest.mark.slow
def test_resume_with_other_settings_is_refused(quick_run) -> None:
    """Resuming a run directory with another seed raises ConfigError with a hint."""
    with pytest.raises(ConfigError, match="other settings") as err:
        train(quick_run[0], "quick", seed=1, **SAVE_EVERY_STEP)
    assert err.value.hint


def test_unknown_preset() -> None:
    """An unknown preset or setting names the valid choices."""
    with pytest.raises(ConfigError, match="preset"):
        get_preset("huge")
    with pytest.raises(ConfigError, match="setting"):
        get_preset("quick", d_modell=3)
