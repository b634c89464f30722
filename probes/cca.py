"""Canonical correlation measures between two representations of the same items: SVCCA and PWCCA.

Canonical correlation analysis (CCA) finds directions u_i of X and v_i of Y whose projections are
maximally correlated, uncorrelated with the earlier ones; the correlations rho_1 >= rho_2 >= ... are
the singular values of Qx' Qy, where Qx and Qy are orthonormal bases of the centred column spaces
of X [n, d1] and Y [n, d2] (Björck & Golub 1973, "Numerical methods for computing angles between
linear subspaces"). Bases come from a thin SVD; directions whose singular value is below
``max(n, d) * eps * s_max`` are dropped as numerically null.

* **SVCCA** (Raghu, Gilmer, Yosinski & Sohl-Dickstein 2017, "SVCCA: Singular Vector Canonical
  Correlation Analysis for Deep Learning Dynamics and Interpretability", NeurIPS): keep on each side
  the top singular directions that explain ``keep`` (99 %) of the variance, run CCA on them and
  report the mean of the min(k1, k2) canonical correlations.
* **PWCCA** (Morcos, Raghu & Bengio 2018, "Insights on representational similarity in neural
  networks with canonical correlation", NeurIPS, eq. 1): a weighted mean sum_i alpha_i rho_i, with
  alpha_i proportional to sum_j |<h_i, z_j>|, h_i the i-th canonical variate (unit norm) and z_j the
  j-th centred neuron of the same side. The weights come from the side with fewer directions, the
  first argument on a tie, as in the authors' code (google/svcca ``pwcca.compute_pwcca``, which
  always weights by its first argument): so PWCCA is not symmetric, even for equal widths. All
  non-null directions are kept (no 99 % truncation), as in the paper. Where the values differ from
  the reference code, and why, is in :func:`pwcca`'s notes.

CCA overfits when n is not much larger than the number of directions: with k1 + k2 >= n the
correlations are 1 whatever the data. A warning is logged when max(k1, k2) > n / 2.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from xlprobe.errors import ConfigError, DataError
from xlprobe.probes.arrays import as_pair
from xlprobe.registry import register_measure

__all__ = ["cca_correlations", "svcca", "pwcca"]

logger = logging.getLogger(__name__)


def _check_pair(X: Any, Y: Any) -> tuple[np.ndarray, np.ndarray]:
    """Private float64 copies of two representations of the same items (CCA centres them in place)."""
    return as_pair(X, Y, copy=True, min_rows=2)


def _basis(A: np.ndarray, keep: float | None, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Centre ``A`` in place; return an orthonormal basis [n, k] of its (kept) column space, and A centred."""
    A -= A.mean(axis=0, keepdims=True)
    U, s, _ = np.linalg.svd(A, full_matrices=False)
    if s.size == 0 or s[0] == 0:
        raise DataError(f"{name} is constant across rows, so CCA is undefined",
                        hint="a constant representation (e.g. a dead layer) cannot be compared")
    rank = int((s > s[0] * max(A.shape) * np.finfo(np.float64).eps).sum())
    k = rank
    if keep is not None:
        energy = np.cumsum(s[:rank] ** 2) / np.sum(s[:rank] ** 2)
        k = min(rank, int(np.searchsorted(energy, keep - 1e-12)) + 1)
    return U[:, :k], A


def _warn_overfit(n: int, kx: int, ky: int) -> None:
    if max(kx, ky) > n / 2:
        logger.warning("CCA on %d items with %d and %d directions: canonical correlations are inflated when "
                       "the number of directions approaches n (trivially 1 when kx + ky >= n); use more items",
                       n, kx, ky)


def _cca(Qx: np.ndarray, Qy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Canonical correlations (descending, in [0, 1]) and X's canonical variates [n, m] (orthonormal)."""
    U, rho, _ = np.linalg.svd(Qx.T @ Qy, full_matrices=False)
    m = min(Qx.shape[1], Qy.shape[1])
    return np.clip(rho[:m], 0.0, 1.0), Qx @ U[:, :m]


def cca_correlations(X: np.ndarray, Y: np.ndarray, *, keep: float | None = None) -> np.ndarray:
    """Canonical correlations between X [n, d1] and Y [n, d2], descending, in [0, 1].

    Parameters
    ----------
    X, Y : array [n, d]
        Two representations of the same items.
    keep : float in (0, 1], optional
        Keep on each side the top singular directions explaining this share of variance first (the
        SV step of SVCCA); None keeps every non-null direction.

    Returns
    -------
    numpy.ndarray
        min(k1, k2) correlations, k the number of directions kept on each side.
    """
    if keep is not None and not (isinstance(keep, (int, float)) and not isinstance(keep, bool) and 0 < keep <= 1):
        raise ConfigError(f"keep must be a share of variance in (0, 1] or None; got {keep!r}",
                          hint="SVCCA keeps 0.99 of the variance")
    A, B = _check_pair(X, Y)
    Qx, _ = _basis(A, keep, "X")
    Qy, _ = _basis(B, keep, "Y")
    _warn_overfit(A.shape[0], Qx.shape[1], Qy.shape[1])
    return _cca(Qx, Qy)[0]


@register_measure("svcca", kind="paired", direction="similarity")
def svcca(X: np.ndarray, Y: np.ndarray, *, keep: float = 0.99, seed: int = 0) -> float:
    """SVCCA similarity (Raghu et al. 2017): mean canonical correlation after keeping 99 % of the variance.

    Parameters
    ----------
    X, Y : array [n, d]
        Two representations of the same items (n should be well above the directions kept).
    keep : float, default 0.99
        Share of variance kept on each side by the SVD step.
    seed : int, default 0
        Unused (deterministic); every measure takes ``seed``.

    Returns
    -------
    float
        In [0, 1]; 1 when one side is an invertible linear map of the other.
    """
    return float(np.mean(cca_correlations(X, Y, keep=keep)))


@register_measure("pwcca", kind="paired", direction="similarity")
def pwcca(X: np.ndarray, Y: np.ndarray, *, seed: int = 0) -> float:
    """PWCCA similarity (Morcos et al. 2018): canonical correlations weighted by how much of the neurons they carry.

    Parameters
    ----------
    X, Y : array [n, d]
        Two representations of the same items.
    seed : int, default 0
        Unused (deterministic); every measure takes ``seed``.

    Returns
    -------
    float
        In [0, 1]; sum_i alpha_i rho_i with alpha_i ~ sum_j |<h_i, z_j>| on the side with fewer
        directions (X, the first argument, on a tie).

    Notes
    -----
    Compared with Morcos et al.'s reference code (google/svcca ``pwcca.compute_pwcca``, commit 1f3fbf1),
    transcribed in numpy in tests/probes/test_cca.py and equal to it to 1e-12 on the pinned case:

    1. *Directions.* The reference orthonormalises (QR) the rows ``u_i' (z - mean) + mean``, with u_i
       the left singular vectors of Sxx^-1/2 Sxy Syy^-1/2. Without the whitening Sxx^-1/2 those are
       rotated neurons, not the canonical variates h_i of the paper's equation (which the same
       package's ``get_cca_similarity(compute_dirns=True)`` does compute, with ``invsqrt_xx``). Here
       the h_i are the canonical variates.
    2. *Offsets.* It adds each neuron's mean back to those rows and projects the raw, uncentred
       neurons, so its weights move with a constant shift of the neurons, which CCA ignores. Here
       both are centred, and a shift of X or Y changes nothing (tested).

    With those two steps changed (whitened, centred) the reference's algorithm gives this function's
    value to 1e-12 (tested): they are the whole difference. On the pinned case (seed 0; X 300 x 6
    plus 3.0, Y 300 x 8) the reference gives 0.8281 and this function 0.6226: centring alone takes
    the reference to 0.6274, whitening then to 0.6226. On 300 x 12 vs 300 x 12 with no offset they
    differ by whitening only: 0.8585 vs 0.8579.

    3. *Which side.* The reference weights by its first argument: with equal widths (and nothing
       dropped by its ``epsilon``) it takes ``acts1``, and with a wider first argument it raises
       IndexError (its other branch indexes ``acts1`` with Y's mask; google/svcca pull request 9).
       Here the side with fewer directions, X on a tie: the same side wherever the reference runs.
       Both are therefore asymmetric on equal widths: ``pwcca(X, Y)`` weights by X's neurons and
       ``pwcca(Y, X)`` by Y's (0.8579 vs 0.9458 on the 12-wide case; reference 0.8585 vs 0.9468).
       Average both orders for a symmetric score.
    4. *Rank.* The reference drops neurons whose variance is below ``epsilon`` (0 by default, so
       none) and inverts covariances with ``pinv``; here the bases come from an SVD with a relative
       rank cut (:func:`svcca`'s basis). The same on full-rank data.
    """
    A, B = _check_pair(X, Y)
    Qx, Ac = _basis(A, None, "X")
    Qy, Bc = _basis(B, None, "Y")
    _warn_overfit(A.shape[0], Qx.shape[1], Qy.shape[1])
    if Qx.shape[1] <= Qy.shape[1]:
        rho, H = _cca(Qx, Qy)
        Z = Ac
    else:
        rho, H = _cca(Qy, Qx)
        Z = Bc
    alpha = np.abs(H.T @ Z).sum(axis=1)
    return float(alpha @ rho / alpha.sum())
