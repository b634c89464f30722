"""The toy family grows: one-to-many and many-to-one MT stages, continued from the shipped lm."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from xlprobe.errors import ConfigError, DataError
from xlprobe.toy import STAGES, train
from xlprobe.toy.batches import TokenizedCorpus, make_stream
from xlprobe.toy.config import get_preset
from xlprobe.toy.extend import seed_from_shipped
from xlprobe.toy.ship import add_stages
from xlprobe.toy.shipped import path

LANGS = ("en", "fr", "de")
#: A full-preset run cut to seconds: the shipped tokenizer and architecture, few steps, few verses.
FAST = dict(steps={"lm": 2400, "mt": 3}, max_rows=240, eval_verses=4, eval_denoise_verses=4,
            eval_directions=(("en", "fr"), ("fr", "en")), log_every=1)


def _corpus(rows: int = 40) -> TokenizedCorpus:
    """Rows of fake token ids in three languages; French missing from every fifth row."""
    ids = {lang: [[10 + i, 20 + j] if not (lang == "fr" and i % 5 == 0) else None for i in range(rows)]
           for j, lang in enumerate(LANGS)}
    return TokenizedCorpus(LANGS, ids, {lang: 100 + j for j, lang in enumerate(LANGS)}, 2, 1, 3)


@pytest.mark.parametrize("kind", ["mt-o2m", "mt-m2o"])
def test_one_to_many_and_many_to_one_streams_translate_from_or_into_the_pivot(kind):
    tc = _corpus()
    stream = make_stream(kind, tc, range(40), batch_size=8, seed=0, stream_id=4, pivot="en")
    examples = [ex for step in range(stream.batches_per_epoch() * 3) for ex in stream.batch(step)]
    pivot_side = [ex.src if kind == "mt-o2m" else ex.tgt for ex in examples]
    other_side = [ex.tgt if kind == "mt-o2m" else ex.src for ex in examples]
    assert set(pivot_side) == {"en"} and set(other_side) == {"fr", "de"}
    assert not any(ex.noise for ex in examples)
    assert all(tc.ids[ex.src][ex.row] and tc.ids[ex.tgt][ex.row] for ex in examples)
    again = make_stream(kind, tc, range(40), batch_size=8, seed=0, stream_id=4, pivot="en")
    assert [again.batch(s) for s in range(5)] == [stream.batch(s) for s in range(5)]
    with pytest.raises(DataError, match="pivot"):
        make_stream(kind, tc, range(40), batch_size=8, seed=0, stream_id=4, pivot=None)


def test_new_stages_continue_from_lm_for_as_many_steps_as_mt():
    cfg = get_preset("full")
    assert STAGES["mt-o2m"] == STAGES["mt-m2o"] == "lm"
    assert cfg.stage_steps("mt-o2m") == cfg.stage_steps("mt-m2o") == cfg.stage_steps("mt")


def test_a_stage_whose_parent_is_missing_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="continues from 'lm'"):
        train(tmp_path, "quick", stages=("mt-o2m",))
    with pytest.raises(ConfigError, match="unknown toy stage"):
        train(tmp_path / "b", "quick", stages=("mt-x",))


def test_seeding_refuses_another_architecture(tmp_path):
    with pytest.raises(ConfigError, match="d_model"):
        seed_from_shipped(tmp_path, "full", d_model=64)


@pytest.mark.slow
def test_new_stages_train_from_the_shipped_lm(tmp_path):
    out = seed_from_shipped(tmp_path / "run", "full", **FAST)
    from transformers import AutoModelForSeq2SeqLM

    shipped = AutoModelForSeq2SeqLM.from_pretrained(str(path("lm")), dtype=torch.float32).state_dict()
    state = torch.load(out / "state" / "lm.final.pt", weights_only=True)
    assert all(torch.equal(state[k], v) for k, v in shipped.items())
    assert seed_from_shipped(out, "full", **FAST) == out  # idempotent
    summary = train(out, "full", seed=0, stages=("mt-o2m", "mt-m2o"), **FAST)
    assert list(summary["stages"]) == ["lm", "mt-o2m", "mt-m2o"]
    assert summary["stages"]["lm"]["from"] == "shipped"
    evals = json.loads((out / "eval.json").read_text())
    for stage in ("mt-o2m", "mt-m2o"):
        assert set(evals[stage]["chrf"]) == {"en-fr", "fr-en"}
        assert (out / "checkpoints" / stage / "model.safetensors").is_file()
        moved = AutoModelForSeq2SeqLM.from_pretrained(str(out / "checkpoints" / stage)).state_dict()
        key = "model.encoder.layers.0.fc1.weight"
        assert not torch.equal(moved[key].float(), shipped[key].half().float())  # trained from lm, moved
        assert np.isfinite(evals[stage]["denoise_loss"]["en"])
    dest = tmp_path / "weights"  # the family as first shipped: lm, mt, lm-cont
    first = ("lm", "mt", "lm-cont")
    shutil.copytree(path("lm").parent, dest, ignore=lambda d, names: [n for n in names if n in STAGES
                                                                      and n not in first])
    shipped_card = json.loads((dest / "card.json").read_text())
    shipped_card["stages"] = {s: shipped_card["stages"][s] for s in first}
    shipped_card.pop("added", None)
    (dest / "card.json").write_text(json.dumps(shipped_card))
    card = add_stages(out, dest)
    assert list(card["stages"])[-2:] == ["mt-o2m", "mt-m2o"] and card["added"] == ["mt-o2m", "mt-m2o"]
    assert card["stages"]["mt"] == shipped_card["stages"]["mt"]
    text = (dest / "MODEL_CARD.md").read_text()
    assert "| en-fr |" in text and f"**{card['stages']['mt-o2m']['chrf_mean']:.1f}**" in text
    assert (dest / "loss_curves_added.png").stat().st_size > 10_000
    assert (dest / "mt-m2o" / "model.safetensors").is_file()
    with pytest.raises(ConfigError, match="no trained and evaluated stage"):
        add_stages(out, dest)  # nothing left to add


def test_cli_seeding_from_shipped_names_the_setting_that_breaks_it(tmp_path):
    from typer.testing import CliRunner

    from xlprobe.cli import app

    res = CliRunner().invoke(app, ["toy", "train", "--out", str(tmp_path), "--preset", "quick", "--from-shipped",
                                   "--stages", "mt-o2m"])
    assert res.exit_code == 2 and "differ from the shipped family" in res.output
