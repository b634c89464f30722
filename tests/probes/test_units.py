"""Unit attributions for a probe: planted language units ranked first, and their ablation beats random units."""
from __future__ import annotations

import numpy as np
import pytest

from xlprobe.errors import ConfigError, DataError
from xlprobe.probes import LinearProbe
from xlprobe.probes.units import ablation_check, probe_module, unit_importance


def _planted(seed: int = 0, n_groups: int = 80, d: int = 24, informative: int = 4):
    """4 languages x n_groups verses; the language lives in the first ``informative`` units only."""
    rng = np.random.default_rng(seed)
    y = np.tile(np.arange(4), n_groups)
    g = np.repeat(np.arange(n_groups), 4)
    X = rng.normal(size=(len(y), d))
    X[:, :informative] += 2.5 * rng.normal(size=(4, informative))[y]
    return X, y, g


@pytest.mark.parametrize("method", ["integrated_gradients", "feature_ablation"])
def test_planted_units_rank_first_and_their_ablation_beats_random_units(method):
    X, y, g = _planted()
    probe = LinearProbe().fit(X, y)
    importance, delta = unit_importance(probe, X, y, method=method)
    ranking = np.argsort(-importance)
    assert set(ranking[:4]) == {0, 1, 2, 3}
    assert delta < 1e-3
    rows = ablation_check(probe, X, y, ranking, ks=(4,), groups=g, n_random=10, n_boot=200)
    top = rows[rows.control.isna()].iloc[0]
    rand = rows[rows.control == "random-units"].iloc[0]
    assert top.value > 0.4 and top.ci_low > rand.ci_high  # the ranking predicts what matters
    assert rand.value < 0.2


def test_the_probe_module_reproduces_the_probe():
    X, y, _ = _planted(d=8)
    for labels in (y, y % 2):  # multinomial and binary
        probe = LinearProbe().fit(X, labels)
        import torch

        logits = probe_module(probe)(torch.as_tensor(X)).detach().numpy()
        assert (probe.classes_[logits.argmax(1)] == probe.predict(X)).all()


def test_bad_input_is_named():
    X, y, _ = _planted(d=6)
    probe = LinearProbe().fit(X, y)
    with pytest.raises(ConfigError, match="method"):
        unit_importance(probe, X, y, method="saliency")
    with pytest.raises(DataError, match="not fitted on"):
        unit_importance(probe, X, y + 10)
    with pytest.raises(DataError, match="every one"):
        ablation_check(probe, X, y, [0, 1])
    with pytest.raises(DataError, match="fitted"):
        probe_module(LinearProbe())
