"""LinearProbe / MLPProbe: the scikit-learn contract, the science (chance on noise, ~1 on separable data)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from xlprobe.errors import ConfigError, DataError
from xlprobe.probes import LinearProbe, MLPProbe

FAST_MLP = dict(hidden=32, max_epochs=30, patience=5)


def gaussians(n_per: int, k: int, d: int, sep: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * sep
    y = np.repeat(np.arange(k), n_per)
    return centres[y] + rng.normal(size=(len(y), d)), y


@pytest.fixture(params=["linear", "mlp"])
def probe(request):
    return LinearProbe() if request.param == "linear" else MLPProbe(**FAST_MLP)


def test_sklearn_contract_clone_pipeline_cross_val(probe):
    X, y = gaussians(60, 3, 8, 2.0)
    twin = clone(probe)
    assert twin.get_params() == probe.get_params() and not hasattr(twin, "classes_")
    scores = cross_val_score(make_pipeline(StandardScaler(), probe), X, y, cv=3)
    assert scores.shape == (3,) and (scores > 0.9).all()
    groups = np.arange(len(y)) // 3
    assert cross_val_score(probe, X, y, cv=GroupKFold(3), groups=groups).mean() > 0.9


def test_near_one_on_separable_gaussians(probe):
    X, y = gaussians(100, 4, 16, 3.0)
    Xt, yt = gaussians(50, 4, 16, 3.0, seed=0)  # same centres (same seed), fresh noise below
    rng = np.random.default_rng(1)
    Xt = Xt - (Xt - np.repeat(Xt.reshape(4, 50, 16).mean(1), 50, axis=0)) + rng.normal(size=Xt.shape)
    assert probe.fit(X, y).score(Xt, yt) >= 0.97


def test_chance_on_random_labels(probe):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(600, 16))
    y = rng.integers(0, 4, 600)
    acc = cross_val_score(probe, X, y, cv=5).mean()
    assert abs(acc - 0.25) < 0.06  # 600 items: sd of accuracy at chance ~0.018


def test_labels_of_any_type_and_probabilities(probe):
    X, y = gaussians(40, 3, 6, 3.0)
    names = np.array(["ar", "en", "ru"])[y]
    p = probe.fit(X, names)
    assert p.classes_.tolist() == ["ar", "en", "ru"]
    assert set(p.predict(X)) <= set(names)
    proba = p.predict_proba(X)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-9)
    np.testing.assert_allclose(np.exp(p.predict_log_proba(X)), proba, atol=1e-9)
    assert (p.classes_[proba.argmax(1)] == p.predict(X)).all()


def test_linear_probe_reaches_sklearns_optimum():
    X, y = gaussians(150, 5, 20, 0.4, seed=2)
    ours = LinearProbe(C=0.5, tol=1e-7).fit(X, y)
    Z = (X - X.mean(0)) / X.std(0)
    ref = LogisticRegression(C=0.5, tol=1e-10, max_iter=5000).fit(Z, y)
    np.testing.assert_allclose(ours.coef_, ref.coef_ - ref.coef_.mean(0), atol=2e-3)
    assert (ours.predict(X) == ref.predict(Z)).mean() > 0.99


def test_smaller_C_shrinks_the_weights():
    X, y = gaussians(80, 3, 10, 1.0)
    norms = [np.linalg.norm(LinearProbe(C=c).fit(X, y).coef_) for c in (0.001, 0.1, 10.0)]
    assert norms[0] < norms[1] < norms[2]


def test_class_weight_balanced_raises_minority_recall():
    rng = np.random.default_rng(5)
    y = np.r_[np.zeros(450, int), np.ones(50, int)]
    X = rng.normal(size=(500, 4)) + y[:, None] * 0.8
    plain = LinearProbe().fit(X, y).predict(X)
    bal = LinearProbe(class_weight="balanced").fit(X, y).predict(X)
    assert (bal[y == 1] == 1).mean() > (plain[y == 1] == 1).mean() + 0.2
    with pytest.raises(ConfigError, match="class_weight names classes"):
        LinearProbe(class_weight={7: 2.0}).fit(X, y)


def test_mlp_is_seeded_and_leaves_the_global_rng_alone():
    X, y = gaussians(50, 3, 8, 1.0)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = MLPProbe(**FAST_MLP, seed=7).fit(X, y).predict_proba(X)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = MLPProbe(**FAST_MLP, seed=7).fit(X, y).predict_proba(X)
    c = MLPProbe(**FAST_MLP, seed=8).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_mlp_early_stopping_keeps_the_best_epoch_and_whole_groups():
    X, y = gaussians(100, 2, 30, 0.3)
    groups = np.arange(200) // 4
    m = MLPProbe(hidden=64, max_epochs=200, patience=3, lr=1e-2).fit(X, y, groups=groups)
    assert m.n_epochs_ < 200 and m.best_epoch_ == int(np.argmin(m.val_loss_))
    assert m.best_val_loss_ == pytest.approx(min(m.val_loss_))
    tr, va = m._split(200, groups, np.random.default_rng(0))
    assert not set(groups[tr]) & set(groups[va]) and len(va) > 0
    full = MLPProbe(**{**FAST_MLP, "max_epochs": 7}, early_stopping=False).fit(X, y)
    assert full.n_epochs_ == 7 and np.isnan(full.best_val_loss_)


def test_not_fitted_and_width_mismatch(probe):
    X, y = gaussians(20, 2, 5, 2.0)
    with pytest.raises(NotFittedError, match="not fitted"):
        probe.predict(X)
    probe.fit(X, y)
    with pytest.raises(DataError, match="fitted on 5"):
        probe.predict(X[:, :4])


@pytest.mark.parametrize("X, y, match", [
    (np.zeros((6, 3)), np.zeros(6), "distinct label"),
    (np.zeros((6, 3)), np.arange(5), "one label per row"),
    (np.full((6, 3), np.nan), np.arange(6) % 2, "NaN"),
    (np.zeros(6), np.arange(6) % 2, "2-D"),
])
def test_bad_input(probe, X, y, match):
    with pytest.raises(DataError, match=match):
        probe.fit(X, y)


@pytest.mark.parametrize("est, match", [
    (LinearProbe(C=0), "C must be"), (LinearProbe(max_iter=0), "max_iter"), (LinearProbe(standardize=1), "standardize"),
    (MLPProbe(dropout=1.0), "dropout"), (MLPProbe(validation_fraction=0), "validation_fraction"),
    (MLPProbe(hidden=0), "hidden"), (LinearProbe(class_weight="auto"), "class_weight"),
])
def test_bad_settings(est, match):
    X, y = gaussians(10, 2, 3, 2.0)
    with pytest.raises(ConfigError, match=match):
        est.fit(X, y)
