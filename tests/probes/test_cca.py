"""SVCCA and PWCCA: canonical correlations against the textbook definition, invariances, weighting."""
from __future__ import annotations

import numpy as np
import pytest

from xlprobe.errors import ConfigError, DataError
from xlprobe.probes.cca import cca_correlations, pwcca, svcca
from xlprobe.probes.cka import cka
from xlprobe.registry import get_measure


def _inv_sqrt(S: np.ndarray) -> np.ndarray:
    w, V = np.linalg.eigh(S)
    return V @ np.diag(w**-0.5) @ V.T


def _ref_cca(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Canonical correlations as the singular values of Sxx^-1/2 Sxy Syy^-1/2 (Hotelling 1936)."""
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    Sxx, Syy, Sxy = Xc.T @ Xc, Yc.T @ Yc, Xc.T @ Yc
    return np.linalg.svd(_inv_sqrt(Sxx) @ Sxy @ _inv_sqrt(Syy), compute_uv=False)


def test_correlations_match_the_covariance_definition():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 6)) + 3.0
    Y = X[:, :4] @ rng.standard_normal((4, 8)) + rng.standard_normal((300, 8))
    got = cca_correlations(X, Y)
    assert got.shape == (6,)
    np.testing.assert_allclose(got, _ref_cca(X, Y)[:6], atol=1e-10)
    assert np.all(np.diff(got) <= 1e-12) and got.min() >= 0 and got.max() <= 1


@pytest.mark.parametrize("measure", [svcca, pwcca])
def test_near_one_for_linearly_related_and_low_for_random(measure):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((1000, 10))
    A = rng.standard_normal((10, 10))  # invertible, far from orthogonal
    assert measure(X, X @ A) > 0.999
    assert measure(X, X @ A + 0.1 * rng.standard_normal((1000, 10))) > 0.95
    assert measure(X, rng.standard_normal((1000, 12))) < 0.2


def test_cca_is_invariant_to_invertible_maps_where_cka_is_not():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((500, 8))
    Y = X @ rng.standard_normal((8, 8)) + rng.standard_normal((500, 8))
    A = np.diag(np.geomspace(1, 50, 8)) @ rng.standard_normal((8, 8))
    assert svcca(X, Y, keep=1.0) == pytest.approx(svcca(X @ A, Y, keep=1.0), abs=1e-10)
    assert abs(cka(X, Y) - cka(X @ A, Y)) > 0.05


def test_svd_step_keeps_the_variance_share():
    rng = np.random.default_rng(3)
    scales = np.array([10.0, 8.0, 6.0, 5.0, 0.01, 0.01, 0.01, 0.01])  # 4 directions carry > 99.99 %
    X = rng.standard_normal((400, 8)) * scales
    Y = rng.standard_normal((400, 6))
    assert cca_correlations(X, Y, keep=0.99).shape == (4,)
    assert cca_correlations(X, Y, keep=1.0).shape == (6,)
    # SVCCA ignores the low-variance noise: a copy with fresh noise in those directions scores 1
    X2 = X.copy()
    X2[:, 4:] = 0.01 * rng.standard_normal((400, 4))
    assert svcca(X, X2) == pytest.approx(1.0, abs=1e-10)
    assert svcca(X, X2, keep=1.0) < 0.7


def test_pwcca_weights_the_directions_that_carry_the_neurons():
    """Morcos et al. 2018: one shared high-variance direction among low-variance noise neurons."""
    rng = np.random.default_rng(4)
    n = 1000
    z = rng.standard_normal(n)
    X = np.column_stack([10 * z, 0.1 * rng.standard_normal((n, 9))])
    Y = np.column_stack([z + 0.05 * rng.standard_normal(n), 0.1 * rng.standard_normal((n, 9))])
    mean_cca = svcca(X, Y, keep=1.0)
    assert mean_cca < 0.3  # nine noise correlations drag the plain mean down
    assert pwcca(X, Y) > 0.8


def test_rank_deficient_inputs_use_their_rank():
    rng = np.random.default_rng(5)
    B = rng.standard_normal((200, 3))
    X = B @ rng.standard_normal((3, 10))  # rank 3 in 10 columns
    assert cca_correlations(X, B).shape == (3,)
    assert pwcca(X, B) == pytest.approx(1.0, abs=1e-8)
    assert svcca(X, B) == pytest.approx(1.0, abs=1e-8)


def test_bad_inputs():
    X = np.random.default_rng(0).standard_normal((20, 3))
    with pytest.raises(DataError, match="same rows"):
        svcca(X, X[:-1])
    with pytest.raises(DataError, match="constant"):
        pwcca(np.ones((20, 3)), X)
    with pytest.raises(DataError, match="2-D"):
        svcca(X[:, 0], X)
    with pytest.raises(ConfigError, match="keep"):
        svcca(X, X, keep=1.5)


def test_registered():
    for name in ("svcca", "pwcca"):
        spec = get_measure(name)
        assert (spec.kind, spec.direction) == ("paired", "similarity")
    X = np.random.default_rng(0).standard_normal((50, 3))
    assert get_measure("svcca")(X, X) == pytest.approx(1.0)


def test_pwcca_ignores_a_shift_and_is_asymmetric_on_equal_widths():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 12))
    Y = X @ rng.normal(size=(12, 12)) + 0.8 * rng.normal(size=(300, 12))
    base = pwcca(X, Y)
    shifted = pwcca(X + 50.0, Y - 7.0)  # CCA ignores a constant offset; so do these weights (centred neurons)
    assert abs(shifted - base) < 1e-9
    assert abs(pwcca(X, Y) - pwcca(Y, X)) > 1e-4  # equal widths: the weights come from the first argument


# ------------------------------------------------------------------------------------------ google/svcca
def _svcca_reference_pwcca(X: np.ndarray, Y: np.ndarray, *, whiten: bool = False, centre: bool = False) -> float:
    """google/svcca's compute_pwcca (commit 1f3fbf1, epsilon=0) restated in numpy, on [items, neurons] arrays.

    Covariances by np.cov, each scaled by its largest entry; u, s = SVD of Sxx^-1/2 Sxy Syy^-1/2 with
    the inverse square roots from pinv + eigh; the rows u' (x - mean) + mean are orthonormalised by QR
    and the raw neurons projected on them. ``whiten`` inserts Sxx^-1/2 (u' Sxx^-1/2: the canonical
    weights) and ``centre`` drops the means, the two steps where :func:`pwcca` differs.
    """
    A, B = X.T, Y.T  # the reference's (neurons, datapoints) layout
    assert A.shape[0] <= B.shape[0], "the reference raises IndexError when its first argument is wider"
    C = np.cov(A, B)
    d = A.shape[0]
    Sxx, Sxy, Syy = C[:d, :d], C[:d, d:], C[d:, d:]
    sx, sy = np.abs(Sxx).max(), np.abs(Syy).max()
    Sxx, Syy, Sxy = Sxx / sx, Syy / sy, Sxy / np.sqrt(sx * sy)

    def inv_sqrt(S):
        w, V = np.linalg.eigh(np.linalg.pinv(S))
        return V @ np.diag(np.sqrt(w)) @ V.T

    u, s, _ = np.linalg.svd(inv_sqrt(Sxx) @ Sxy @ inv_sqrt(Syy))
    mean = A.mean(axis=1, keepdims=True)
    rows = (u.T @ inv_sqrt(Sxx) if whiten else u.T) @ (A - mean) + (0.0 if centre else mean)
    P, _ = np.linalg.qr(rows.T)
    weights = np.abs(P.T @ (A - mean if centre else A).T).sum(axis=1)
    return float(np.sum(weights / weights.sum() * s))


def _offset_case():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 6)) + 3.0
    return X, X[:, :4] @ rng.standard_normal((4, 8)) + rng.standard_normal((300, 8))


def _equal_widths_case():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 12))
    return X, X @ rng.normal(size=(12, 12)) + 0.8 * rng.normal(size=(300, 12))


def test_pwcca_differs_from_google_svcca_by_whitening_and_centring_only():
    """The reference's numbers (pinned from google/svcca's own code) and the two steps that separate them."""
    X, Y = _offset_case()
    assert _svcca_reference_pwcca(X, Y) == pytest.approx(0.8281466920835108, abs=1e-12)  # compute_pwcca(X.T, Y.T)
    assert _svcca_reference_pwcca(X, Y, centre=True) == pytest.approx(0.6274, abs=1e-4)
    assert pwcca(X, Y) == pytest.approx(0.6226, abs=1e-4)
    E, F = _equal_widths_case()
    assert _svcca_reference_pwcca(E, F) == pytest.approx(0.8585096432597759, abs=1e-12)
    assert _svcca_reference_pwcca(F, E) == pytest.approx(0.9468127149425127, abs=1e-12)
    for A, B in ((X, Y), (E, F), (F, E)):
        assert pwcca(A, B) == pytest.approx(_svcca_reference_pwcca(A, B, whiten=True, centre=True), abs=1e-12)
    assert abs(_svcca_reference_pwcca(X + 50.0, Y) - _svcca_reference_pwcca(X, Y)) > 0.05  # the offset moves it


def test_pwcca_weights_by_the_first_argument_on_equal_widths_as_the_reference_does():
    E, F = _equal_widths_case()
    assert pwcca(E, F) == pytest.approx(0.8579, abs=1e-4) and pwcca(F, E) == pytest.approx(0.9458, abs=1e-4)
    # on unequal widths the narrower side weighs, whichever argument it is (the reference needs it first)
    X, Y = _offset_case()
    assert pwcca(Y, X) == pytest.approx(pwcca(X, Y), abs=1e-12)
