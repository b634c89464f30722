"""The ``mlm`` stage: an XLM-R masked LM on the toy verses (BERT masking, training, export, evaluation)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from xlprobe.toy import STAGES, get_preset, train
from xlprobe.toy.batches import IGNORE, Example, TokenizedCorpus
from xlprobe.toy.mlm import build_mlm_model, mlm_collate

MASK, PIECE_END = 99, 90


def _corpus(n_rows: int = 400, length: int = 30) -> TokenizedCorpus:
    """A synthetic corpus of ordinary pieces in [4, PIECE_END)."""
    rng = np.random.default_rng(0)
    ids = {"en": [rng.integers(4, PIECE_END, size=length).tolist() for _ in range(n_rows)]}
    return TokenizedCorpus(("en",), ids, {"en": 95}, eos_id=2, pad_id=1, mask_id=MASK, bos_id=0,
                           piece_end=PIECE_END)


def test_mlm_stage_is_from_scratch_with_lm_steps() -> None:
    """mlm starts from its own init and runs the lm stage's steps unless set."""
    assert STAGES["mlm"] is None
    cfg = get_preset("quick")
    assert cfg.stage_steps("mlm") == cfg.steps["lm"]
    assert get_preset("quick", steps={"lm": 5, "mt": 3, "mlm": 7}).stage_steps("mlm") == 7


def test_mlm_collate_bert_masking() -> None:
    """About 15 % of tokens predicted, 80/10/10 split, specials never touched, deterministic per seed."""
    tc = _corpus()
    exs = [Example(r, "en", "en", True) for r in range(tc.n_rows)]
    batch = mlm_collate(exs, tc, np.random.default_rng(7))
    again = mlm_collate(exs, tc, np.random.default_rng(7))
    assert all(torch.equal(batch[k], again[k]) for k in batch)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    inp, lab = batch["input_ids"], batch["labels"]
    assert (inp[:, 0] == 0).all() and (inp[:, -1] == 2).all()
    assert (lab[:, 0] == IGNORE).all() and (lab[:, -1] == IGNORE).all()
    orig = torch.tensor([[0, *tc.ids["en"][r], 2] for r in range(tc.n_rows)])
    chosen = lab != IGNORE
    assert torch.equal(lab[chosen], orig[chosen]) and torch.equal(inp[~chosen], orig[~chosen])
    n = int(chosen.sum())
    assert abs(n / (tc.n_rows * 30) - 0.15) < 0.015
    masked = (inp[chosen] == MASK).float().mean().item()
    kept = (inp[chosen] == orig[chosen]).float().mean().item()
    assert abs(masked - 0.8) < 0.04 and 0.06 < kept < 0.16  # kept: 10 % + random draws of the same id
    rand = inp[chosen & (inp != MASK) & (inp != orig)]
    assert 0.06 < len(rand) / n < 0.14 and ((rand >= 4) & (rand < PIECE_END)).all()
    other = mlm_collate(exs, tc, np.random.default_rng(8))
    assert not torch.equal(other["labels"], lab)


def test_mlm_model_is_seeded_and_sized() -> None:
    """The XLM-R init is a function of the seed, twice the toy layers, and leaves the torch RNG alone."""
    cfg = get_preset("quick")
    state = torch.random.get_rng_state()
    a, b = build_mlm_model(cfg, 600, 3), build_mlm_model(cfg, 600, 3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert a.config.num_hidden_layers == 2 * cfg.layers and a.config.hidden_size == cfg.d_model
    assert a.config.max_position_embeddings == cfg.max_len + 2


@pytest.mark.slow
def test_quick_mlm_run_trains_exports_and_evaluates(tmp_path) -> None:
    """stages=("mlm",) trains, exports an AutoModelForMaskedLM folder, and writes its held-out loss."""
    from transformers import AutoModelForMaskedLM

    cfg = get_preset("quick")
    summary = train(tmp_path, "quick", seed=0, stages=("mlm",))
    assert list(summary["stages"]) == ["mlm"] and summary["stages"]["mlm"]["steps"] == cfg.stage_steps("mlm")
    curve = json.loads((tmp_path / "curves" / "mlm.json").read_text())
    assert sum(c["loss"] for c in curve[-4:]) < sum(c["loss"] for c in curve[:4])
    model = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "checkpoints" / "mlm"))
    assert type(model).__name__ == "XLMRobertaForMaskedLM" and model.dtype == torch.float16
    ev = json.loads((tmp_path / "eval.json").read_text())["mlm"]
    assert set(ev["mlm_loss"]) == set(cfg.langs) and all(np.isfinite(v) for v in ev["mlm_loss"].values())
    assert "chrf" not in ev and summary["eval"]["mlm"]["mlm_loss"] == ev["mlm_loss"]
