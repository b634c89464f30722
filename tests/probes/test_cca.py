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
