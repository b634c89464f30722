"""Interpolation and transplant runs: the ends are the checkpoints, CKA to A is 1 at alpha 0, rows registered."""
from __future__ import annotations

import numpy as np
import pytest

from xlprobe.intervene import interpolation_run, transplant_run
from xlprobe.registry import list_measures
from xlprobe.tasks import load_data


@pytest.fixture(scope="module")
def setup():
    from xlprobe.tiny import build

    a, tok = build("mbart", seed=0)
    b, _ = build("mbart", seed=1, tokenizer=tok)
    data = load_data("bible:en,fr,de?books=Ruth", limit=16, seed=0)
    return a, b, tok, data


def test_interpolation_rows_at_each_alpha_with_cka_to_the_start(setup):
    a, b, tok, data = setup
    loss = lambda m: m(**tok(["In the beginning"], return_tensors="pt"), labels=tok(["In the beginning"],  # noqa: E731
                                                                                  return_tensors="pt")["input_ids"]).loss
    df = interpolation_run(a, b, tok, data, alphas=(0.0, 0.5, 1.0), metric_fn=loss)
    assert sorted(df.alpha.unique()) == [0.0, 0.5, 1.0]
    assert set(df.measure) <= {s.name for s in list_measures()}
    cka = df[df.measure == "cka.linear.debiased"]
    start, end = cka[cka.alpha == 0.0].value, cka[cka.alpha == 1.0].value
    assert len(start) == len(end) == 4 and np.allclose(start, 1.0) and (end < 0.999).all()
    metric = df[df.measure == "intervention.metric"].set_index("alpha").value
    assert len(metric) == 3 and metric[0.0] != metric[1.0]
    assert {"probe.linear", "separability.knn", "retrieval.p_at_1"} <= set(df.measure)


def test_transplant_rows_for_each_group_and_direction(setup):
    a, b, tok, data = setup
    df = transplant_run(a, b, tok, data, groups=("ffn",), names=("lm", "mt"), measures=())
    assert set(df.checkpoint) == {"lm", "mt", "lm+ffn:mt", "mt+ffn:lm"}
    assert set(df.direction.dropna()) == {"mt into lm", "lm into mt"}
    cka = df[(df.measure == "cka.linear.debiased")].set_index("checkpoint")
    assert np.allclose(cka.loc["lm"].value, 1.0)
