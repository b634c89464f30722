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

from xlprobe.errors import ConfigError, DataError, ProbeNotFittedError
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
    a = MLPProbe(**FAST_MLP, random_state=7).fit(X, y).predict_proba(X)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = MLPProbe(**FAST_MLP, random_state=7).fit(X, y).predict_proba(X)
    c = MLPProbe(**FAST_MLP, random_state=8).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    default = MLPProbe(**FAST_MLP).fit(X, y).predict_proba(X)  # random_state=None is seed 0
    np.testing.assert_array_equal(default, MLPProbe(**FAST_MLP, random_state=0).fit(X, y).predict_proba(X))


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
    with pytest.raises(ProbeNotFittedError, match="Call 'fit'"):
        probe.predict_proba(X)
    probe.fit(X, y)
    for method in (probe.predict, probe.predict_proba, probe.predict_log_proba, probe.decision_function):
        with pytest.raises(DataError, match="X has 4 features, but .* is expecting 5"):
            method(X[:, :4])


@pytest.mark.parametrize("X, y, match", [
    (np.zeros((6, 3)), np.zeros(6), "distinct label"),
    (np.zeros((6, 3)), np.arange(5), "inconsistent numbers of samples"),
    (np.full((6, 3), np.nan), np.arange(6) % 2, "NaN"),
    (np.zeros(6), np.arange(6) % 2, "Expected 2D array"),
    (np.zeros((6, 0)), np.arange(6) % 2, "0 feature"),
    (np.zeros((1, 3)), np.arange(1), "1 sample"),
    (np.zeros((6, 3)), np.linspace(0, 1, 6), "Unknown label type"),
    (np.zeros((6, 3)), np.array([1, None, 2, 1, 2, 1], dtype=object), "None"),
])
def test_bad_input(probe, X, y, match):
    with pytest.raises(DataError, match=match):
        probe.fit(X, y)


@pytest.mark.parametrize("est, match", [
    (LinearProbe(C=0), "C must be"), (LinearProbe(max_iter=0), "max_iter"), (LinearProbe(standardize=1), "standardize"),
    (MLPProbe(dropout=1.0), "dropout"), (MLPProbe(validation_fraction=0), "validation_fraction"),
    (MLPProbe(hidden=0), "hidden"), (LinearProbe(class_weight="auto"), "class_weight"),
    (LinearProbe(random_state=-1), "random_state"), (MLPProbe(random_state=1.5), "random_state"),
])
def test_bad_settings(est, match):
    X, y = gaussians(10, 2, 3, 2.0)
    with pytest.raises(ConfigError, match=match):
        est.fit(X, y)


# ----------------------------------------------------------------------------- LinearProbe is LogisticRegression
def _standardised(X):
    return (X - X.mean(0)) / X.std(0)


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("C", [0.05, 1.0])
def test_C_means_what_it_means_in_logistic_regression(k, C):
    """LinearProbe(C=c) reaches LogisticRegression(C=c)'s optimum for two classes (one weight vector, a
    sigmoid) as for three. Measured max |delta log p|: 6e-5 (k=2) and 1e-4 (k=3) at C=0.05; before the
    fix the two-class probe matched C=2c instead (1.32 at C=c)."""
    X, y = gaussians(150, k, 20, 0.4, seed=2)
    ours = LinearProbe(C=C, tol=1e-7).fit(X, y)
    Z = _standardised(X)
    ref = LogisticRegression(C=C, tol=1e-12, max_iter=10_000).fit(Z, y)
    assert ours.coef_.shape == ref.coef_.shape and ours.intercept_.shape == ref.intercept_.shape
    assert np.abs(ours.predict_log_proba(X) - ref.predict_log_proba(Z)).max() < 1e-3
    np.testing.assert_allclose(ours.decision_function(X), ref.decision_function(Z), atol=2e-3)
    twice = LogisticRegression(C=2 * C, tol=1e-12, max_iter=10_000).fit(Z, y)
    assert np.abs(ours.predict_log_proba(X) - twice.predict_log_proba(Z)).max() > 0.05  # C is not off by 2


@pytest.mark.parametrize("k", [2, 3])
def test_loss_is_the_final_objective(k):
    """loss_ is the objective at the returned weights (it was ln K, the objective at the zero start)."""
    X, y = gaussians(60, k, 5, 1.0, seed=4)
    C = 0.3
    p = LinearProbe(C=C, class_weight="balanced").fit(X, y)
    Z = (X - p.mean_) / p.scale_
    logp = p.predict_log_proba(X)
    w = len(y) / (k * np.bincount(y))[y]
    expect = (w * -logp[np.arange(len(y)), y]).mean() + (p.coef_ ** 2).sum() / (2 * C * len(y))
    assert p.loss_ == pytest.approx(expect, rel=1e-7)  # loss_ is computed on the float32 features
    assert p.loss_ < np.log(k) - 0.1
    np.testing.assert_allclose(Z @ p.coef_.T + p.intercept_, p.decision_function(X).reshape(len(y), -1), atol=1e-12)


def test_a_column_at_the_noise_floor_is_treated_as_constant():
    """A column with sd 1.5e-9 around -1e-7 (as in MiniLM's layer 5) among features of scale ~0.5: the probe
    centres it but does not blow it up to unit variance, so it reaches scikit-learn's optimum on the real
    features (max |delta log p| 7e-6; 0.48, with the noise column at the median weight, before)."""
    rng = np.random.default_rng(0)
    n, d = 200, 6
    y = rng.integers(0, 3, n)
    X = (rng.normal(size=(n, d)) + 0.8 * np.eye(3, d)[y]) * 0.5 + 0.1
    Xn = np.c_[X, -1e-7 + 1.5e-9 * rng.standard_normal(n)].astype(np.float32)
    p = LinearProbe(C=1.0, tol=1e-7).fit(Xn, y)
    assert p.scale_[-1] == 1.0 and (p.scale_[:-1] != 1.0).all()
    assert np.abs(p.coef_[:, -1]).max() < 1e-6
    Z = _standardised(Xn[:, :-1].astype(np.float64))
    ref = LogisticRegression(C=1.0, tol=1e-12, max_iter=10_000).fit(Z, y)
    assert np.abs(p.predict_log_proba(Xn) - ref.predict_log_proba(Z)).max() < 1e-3
    small = LinearProbe().fit(Xn * 1e-6, y)  # the floor is relative: a layer of tiny scale keeps its columns
    assert (small.scale_[:-1] != 1.0).all() and small.scale_[-1] == 1.0


def test_binary_decision_function_is_the_positive_class_score(probe):
    X, y = gaussians(40, 2, 4, 2.0)
    names = np.array(["neg", "pos"])[y]
    p = probe.fit(X, names)
    s = p.decision_function(X)
    assert s.shape == (80,)
    np.testing.assert_allclose(p.predict_log_proba(X)[:, 1] - p.predict_log_proba(X)[:, 0], s, atol=1e-9)
    assert (p.predict(X) == np.where(s > 0, "pos", "neg")).all()
