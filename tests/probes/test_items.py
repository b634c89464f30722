"""Per-item scores: their mean is the registered measure, for every name that has them."""
from __future__ import annotations

import numpy as np
import pytest

from xlprobe.errors import ConfigError
from xlprobe.probes.items import ITEM_MEASURES, has_item_scores, item_scores
from xlprobe.registry import get_measure, list_measures


def _parallel(seed: int = 0):
    rng = np.random.default_rng(seed)
    G, L, d = 40, 3, 12
    langs = np.tile(np.array(["en", "fr", "de"]), G)
    groups = np.repeat(np.arange(G), L)
    content = rng.normal(size=(G, d))[groups]
    X = content + 0.8 * rng.normal(size=(G * L, d)) + rng.normal(size=(L, d))[np.tile(np.arange(L), G)]
    return X, langs, groups


def test_item_measures_lists_every_name_with_per_item_scores():
    assert set(ITEM_MEASURES) == {sp.name for sp in list_measures() if has_item_scores(sp.name)}


@pytest.mark.parametrize("name", ITEM_MEASURES)
def test_mean_of_item_scores_is_the_registered_value(name):
    X, langs, groups = _parallel()
    scores = item_scores(name, X, langs, groups)
    assert scores.shape == (len(X),)
    assert scores.mean() == pytest.approx(float(get_measure(name)(X, langs, groups)), abs=1e-12)


def test_a_measure_without_item_scores_is_refused():
    X, langs, groups = _parallel()
    assert not has_item_scores("separability.fisher")
    with pytest.raises(ConfigError, match="per-item"):
        item_scores("separability.fisher", X, langs, groups)
