"""LinearProbe's solver: the stopping rule, warm starts, batched fits (fit_many) and the float32 path.

Correctness only (no timings): what each fast path returns is what a plain ``fit`` returns.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.special import softmax
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from xlprobe.errors import ConfigError
from xlprobe.folds import kfold_units
from xlprobe.probes.classifiers import fit_probe
from xlprobe.probes.linear import LinearProbe, fit_many
from xlprobe.probes.probing import cross_val_predict_groups


def blobs(n: int, k: int, d: int, sep: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` items per class around k random centres (scale 3, offset 5: activation-like means)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), n)
    X = rng.normal(size=(n * k, d)) + sep * rng.normal(size=(k, d))[y]
    return (3 * X + 5).astype(np.float32), y


def gradient(p: LinearProbe, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Largest entry of the float64 gradient of the per-item objective at the probe's weights (multinomial)."""
    Z = (X.astype(np.float64) - p.mean_) / p.scale_
    P = softmax(Z @ p.coef_.T + p.intercept_, axis=1)
    P[np.arange(len(y)), y] -= 1.0
    n = len(y)
    gW = P.T @ Z / n + p.coef_ / (p.C * n)
    return np.abs(np.concatenate([gW.ravel(), P.sum(0) / n])).max()


@pytest.mark.parametrize("tol", [1e-4, 1e-6])
def test_stops_when_the_largest_gradient_entry_is_below_tol(tol):
    X, y = blobs(100, 4, 20, 0.5)
    p = LinearProbe(tol=tol).fit(X, y)
    assert gradient(p, X, y) <= 1.5 * tol  # float32 scores: the float64 gradient within a hair of the rule


def test_default_tol_is_scikit_learns_and_predicts_as_it_does():
    assert LinearProbe().tol == LogisticRegression().tol == 1e-4
    X, y = blobs(150, 3, 30, 0.3, seed=1)
    ours = LinearProbe().fit(X, y)
    Z = (X - X.mean(0)) / X.std(0)
    ref = LogisticRegression(tol=1e-10, max_iter=10_000).fit(Z, y)
    assert np.abs(ours.predict_proba(X) - ref.predict_proba(Z)).max() < 1e-2
    assert (ours.predict(X) == ref.predict(Z)).mean() > 0.99


def test_no_stall_at_the_float32_noise_floor():
    """Random labels, more weights than the data pin down: a tight tol is met (or the solver stops on
    the noise floor) without running to max_iter (Armijo alone stalled: 500 steps, 13 s)."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, 64)).astype(np.float32)
    y = rng.integers(0, 8, 400)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        p = LinearProbe(tol=1e-7).fit(X, y)
    assert p.n_iter_ < 500 and gradient(p, X, y) < 1e-5


def test_fit_many_is_fit_for_each_problem():
    """Folds of different sizes, a binary and a multiclass labelling, a problem with other classes: each
    result is its own plain fit (coefficients, loss, predictions), in the input order."""
    X, y = blobs(60, 4, 12, 0.4, seed=2)
    g = np.repeat(np.arange(60), 4)
    problems = [(X[tr], y[tr]) for tr, _ in kfold_units(g, 3, seed=0)]
    problems += [(X, y % 2), (X[y < 3], y[y < 3]), (X[::3], y[::3] % 2)]
    probe = LinearProbe(C=0.5)
    many = fit_many(probe, problems)
    for est, (Xi, yi) in zip(many, problems):
        one = LinearProbe(C=0.5).fit(Xi, yi)
        # padding rows (weight 0) may change float32 summation order: equal to float32 rounding
        np.testing.assert_allclose(est.coef_, one.coef_, atol=1e-5)
        np.testing.assert_allclose(est.intercept_, one.intercept_, atol=1e-5)
        assert est.loss_ == pytest.approx(one.loss_, rel=1e-6) and abs(est.n_iter_ - one.n_iter_) <= 2
        assert (est.predict(Xi) == one.predict(Xi)).all()
        assert (est.classes_ == one.classes_).all() and est.get_params() == probe.get_params()


def test_cross_val_predict_groups_batched_folds_match_per_fold_fits():
    X, y = blobs(40, 3, 10, 0.3, seed=5)
    g = np.repeat(np.arange(40), 3)
    folds = kfold_units(g, 5, seed=0)
    pred = cross_val_predict_groups(LinearProbe(), X, y, g, folds)
    expect = np.empty_like(y)
    for tr, te in folds:
        expect[te] = fit_probe(LinearProbe(), X[tr], y[tr], g[tr]).predict(X[te])
    assert (pred == expect).all()


def test_warm_start_reaches_the_same_optimum_in_fewer_steps():
    X, y = blobs(80, 3, 15, 0.4, seed=6)
    cold = LinearProbe(tol=1e-7).fit(X, y)
    warm = LinearProbe(tol=1e-7, warm_start=True).fit(X[:200], y[:200])
    warm.fit(X, y)  # from the first fit's weights
    assert np.abs(warm.predict_log_proba(X) - cold.predict_log_proba(X)).max() < 1e-3
    assert warm.n_iter_ < cold.n_iter_
    again = LinearProbe(tol=1e-7, warm_start=True).fit(X, y)
    n_before = again.n_iter_
    again.fit(X, y)  # at the optimum already
    assert again.n_iter_ < n_before
    other = LinearProbe(warm_start=True).fit(X, y).fit(X, y % 2)  # other classes: a cold start, no error
    assert other.coef_.shape == (1, 15)


def test_warm_start_must_be_a_bool():
    X, y = blobs(10, 2, 3, 1.0)
    with pytest.raises(ConfigError, match="warm_start"):
        LinearProbe(warm_start=1).fit(X, y)


def test_float32_and_float64_input_fit_the_same_probe():
    X, y = blobs(50, 3, 8, 0.5, seed=7)
    p32 = LinearProbe(tol=1e-7).fit(X, y)
    p64 = LinearProbe(tol=1e-7).fit(X.astype(np.float64), y)
    np.testing.assert_allclose(p32.mean_, p64.mean_, rtol=1e-6)
    np.testing.assert_allclose(p32.scale_, p64.scale_, rtol=1e-5)
    assert np.abs(p32.predict_log_proba(X) - p64.predict_log_proba(X)).max() < 1e-3
    Xc = X.copy()
    LinearProbe().fit(Xc, y)
    assert (Xc == X).all()  # the caller's array is left as it was


def test_fit_many_fits_large_problems_one_by_one(monkeypatch):
    import xlprobe.probes.linear as linear

    X, y = blobs(30, 3, 6, 0.5, seed=8)
    problems = [(X, y), (X[::2], y[::2])]
    batched = fit_many(LinearProbe(), problems)
    monkeypatch.setattr(linear, "BATCH_MAX", 0)  # every problem "large": solved alone
    alone = fit_many(LinearProbe(), problems)
    for a, b in zip(batched, alone):
        np.testing.assert_allclose(a.coef_, b.coef_, atol=1e-5)
        assert (a.predict(X) == b.predict(X)).all()
