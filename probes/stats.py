"""Uncertainty for measures: bootstrap confidence intervals and a paired sign-flip permutation test.

* :func:`bootstrap_ci` resamples items with replacement (Efron & Tibshirani 1993, "An Introduction to
  the Bootstrap", ch. 13), or whole groups when ``groups`` is given: a cluster bootstrap (Davison &
  Hinkley 1997, "Bootstrap Methods and their Application", sect. 3.8), the right unit when items come
  in parallel groups (the same verse in several languages), whose errors are correlated. Several
  arrays are resampled with the same indices (paired rows: X and Y of a CKA, X and y of a probe).
  The interval is the percentile interval, or BCa (Efron 1987, "Better Bootstrap Confidence
  Intervals", JASA 82; bias correction from the bootstrap distribution, acceleration from the
  jackknife over the resampling units).
* :func:`paired_permutation_test` compares two checkpoints scored on the same items: under the null
  hypothesis that they are exchangeable, each item's difference a_i - b_i is as likely to have either
  sign, so the statistic mean(a - b) is referred to its distribution under random sign flips (Fisher
  1935; Good 2005, "Permutation, Parametric and Bootstrap Tests of Hypotheses", sect. 3.1). With
  ``groups``, a whole group flips together. When the 2^G flips number at most ``n_perm`` they are
  all enumerated (an exact p-value); otherwise ``n_perm`` random ones give
  p = (1 + #{at least as extreme}) / (1 + n_perm), which is never 0 (Phipson & Smyth 2010).

Randomness comes only from ``np.random.default_rng(seed)``.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from statistics import NormalDist
from typing import Any, NamedTuple

import numpy as np

from xlprobe.errors import ConfigError, DataError
from xlprobe.probes.arrays import as_groups, check_int

__all__ = ["bootstrap_ci", "paired_permutation_test", "BootstrapCI", "PermutationResult"]

logger = logging.getLogger(__name__)
_NORMAL = NormalDist()


class BootstrapCI(NamedTuple):
    """A statistic on the full data and its bootstrap confidence interval."""

    value: float
    low: float
    high: float
    n_boot: int
    method: str


class PermutationResult(NamedTuple):
    """Observed mean difference (a - b), its p-value, the flips used, and whether they were all enumerated."""

    difference: float
    p_value: float
    n_perm: int
    exact: bool


class _GroupIndex:
    """Rows of each group, laid out so a resample of groups becomes row indices without a Python loop."""

    def __init__(self, codes: np.ndarray) -> None:
        self.order = np.argsort(codes, kind="stable")
        self.counts = np.bincount(codes)
        self.starts = np.cumsum(self.counts) - self.counts
        self.n_groups = self.counts.size

    def rows(self, chosen: np.ndarray) -> np.ndarray:
        counts = self.counts[chosen]
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        return self.order[np.repeat(self.starts[chosen], counts) + offsets]


def _take(arrays: tuple[np.ndarray, ...], idx: np.ndarray) -> tuple[np.ndarray, ...]:
    return tuple(a[idx] for a in arrays)


def _stat(stat_fn: Callable[..., Any], arrays: tuple[np.ndarray, ...]) -> float:
    v = stat_fn(*arrays)
    try:
        return float(v)
    except (TypeError, ValueError):
        raise DataError(f"stat_fn must return a number; got {type(v).__name__} {v!r}",
                        hint="reduce to a scalar, e.g. lambda X, Y: cka(X, Y)") from None


def bootstrap_ci(stat_fn: Callable[..., Any], *arrays: Any, groups: Any = None, n_boot: int = 1000,
                 ci: float = 0.95, seed: int = 0, method: str = "percentile") -> BootstrapCI:
    """Bootstrap confidence interval of ``stat_fn(*arrays)``, resampling items or whole groups.

    Parameters
    ----------
    stat_fn : callable
        ``stat_fn(*arrays) -> float``, called on the full data and on every resample.
    *arrays : array-like
        One or more arrays sharing their first dimension (the items); all are resampled with the
        same row indices.
    groups : array-like [n], optional
        Group of each item (e.g. the parallel verse id). Given, whole groups are resampled (a
        cluster bootstrap); a resample then has about, not exactly, n items.
    n_boot : int, default 1000
        Number of resamples.
    ci : float, default 0.95
        Coverage of the interval, in (0, 1).
    seed : int, default 0
        Seed of ``np.random.default_rng``.
    method : {"percentile", "bca"}, default "percentile"
        Percentile interval, or bias-corrected and accelerated (BCa; costs one extra ``stat_fn``
        call per item or group for the jackknife).

    Returns
    -------
    BootstrapCI
        ``(value, low, high, n_boot, method)``: ``value`` is the statistic on the full data.
        Resamples on which ``stat_fn`` is not finite are dropped (logged); if none is left the
        interval is NaN.

    Raises
    ------
    DataError
        On no arrays, arrays of different lengths, fewer than 2 items or groups, or bad groups.
    ConfigError
        On a bad ``n_boot``, ``ci`` or ``method``.

    Examples
    --------
    >>> x = np.random.default_rng(1).normal(3.0, 1.0, 200)
    >>> r = bootstrap_ci(np.mean, x, n_boot=500, seed=0)
    >>> bool(r.low < 3.0 < r.high)
    True
    """
    if not callable(stat_fn):
        raise ConfigError(f"stat_fn must be callable; got {type(stat_fn).__name__}",
                          hint="bootstrap_ci(stat_fn, *arrays): the function comes first")
    n_boot = check_int("n_boot", n_boot, 1)
    if not (isinstance(ci, (int, float)) and not isinstance(ci, bool) and 0 < ci < 1):
        raise ConfigError(f"ci must be a coverage in (0, 1); got {ci!r}", hint="ci=0.95 for a 95 % interval")
    if method not in ("percentile", "bca"):
        raise ConfigError(f"method must be 'percentile' or 'bca'; got {method!r}")
    if not arrays:
        raise DataError("bootstrap_ci needs at least one data array", hint="bootstrap_ci(np.mean, x)")
    arrs = tuple(np.asarray(a) for a in arrays)
    if any(a.ndim == 0 for a in arrs):
        raise DataError("every data array needs a first (item) dimension; got a scalar")
    lengths = [a.shape[0] for a in arrs]
    if len(set(lengths)) != 1:
        raise DataError(f"the arrays must share their first (item) dimension; got lengths {lengths}",
                        hint="pass arrays with one row per item, in the same order")
    n = lengths[0]
    index = None if groups is None else _GroupIndex(as_groups(groups, n))
    units = n if index is None else index.n_groups
    if units < 2:
        raise DataError(f"bootstrap needs at least 2 {'items' if index is None else 'groups'}; got {units}")
    rng = np.random.default_rng(seed)
    value = _stat(stat_fn, arrs)
    boots = np.empty(n_boot)
    for b in range(n_boot):
        draw = rng.integers(0, units, size=units)
        boots[b] = _stat(stat_fn, _take(arrs, draw if index is None else index.rows(draw)))
    finite = np.isfinite(boots)
    if not finite.all():
        logger.warning("bootstrap_ci: %d of %d resamples gave a non-finite statistic and were dropped",
                       int((~finite).sum()), n_boot)
        boots = boots[finite]
    if boots.size == 0:
        return BootstrapCI(value, float("nan"), float("nan"), n_boot, method)
    alpha = (1.0 - ci) / 2.0
    q = np.array([alpha, 1.0 - alpha])
    if method == "bca":
        q = _bca_levels(stat_fn, arrs, index, units, boots, value, q)
    low, high = np.quantile(boots, q)
    return BootstrapCI(value, float(low), float(high), n_boot, method)


def _bca_levels(stat_fn: Callable[..., Any], arrs: tuple[np.ndarray, ...], index: _GroupIndex | None,
                units: int, boots: np.ndarray, value: float, q: np.ndarray) -> np.ndarray:
    """BCa quantile levels (Efron 1987): bias z0 from the bootstrap distribution, acceleration from the jackknife."""
    prop = (np.sum(boots < value) + 0.5 * np.sum(boots == value)) / boots.size
    if not 0 < prop < 1 or not np.isfinite(value):
        logger.warning("bootstrap_ci: BCa bias correction undefined (all resamples on one side); "
                       "falling back to the percentile interval")
        return q
    z0 = _NORMAL.inv_cdf(float(prop))
    every = np.arange(arrs[0].shape[0])
    jack = np.empty(units)
    for u in range(units):
        if index is None:
            rows = np.delete(every, u)
        else:
            rows = index.rows(np.delete(np.arange(units), u))
        jack[u] = _stat(stat_fn, _take(arrs, rows))
    jack = jack[np.isfinite(jack)]
    dev = jack.mean() - jack if jack.size else np.zeros(1)
    denom = 6.0 * float(np.sum(dev**2)) ** 1.5
    a = float(np.sum(dev**3)) / denom if denom > 0 else 0.0
    z = np.array([_NORMAL.inv_cdf(float(p)) for p in q])
    adj = z0 + (z0 + z) / (1.0 - a * (z0 + z))
    return np.array([_NORMAL.cdf(float(v)) for v in adj])


def paired_permutation_test(a: Any, b: Any, *, n_perm: int = 10_000, seed: int = 0, groups: Any = None,
                            alternative: str = "two-sided") -> PermutationResult:
    """Sign-flip permutation test of the mean difference between two checkpoints on the same items.

    Parameters
    ----------
    a, b : array-like [n]
        Per-item scores of the two checkpoints (accuracy 0/1, loss, similarity...), item i of ``a``
        and item i of ``b`` being the same item.
    n_perm : int, default 10000
        Random sign flips to draw; if all 2^G flips (G items or groups) are at most this many, they
        are enumerated instead and the p-value is exact.
    seed : int, default 0
        Seed of ``np.random.default_rng``.
    groups : array-like [n], optional
        Group of each item: the items of a group flip together (for parallel groups, whose
        differences are correlated).
    alternative : {"two-sided", "greater", "less"}, default "two-sided"
        "greater" tests mean(a - b) > 0, "less" mean(a - b) < 0.

    Returns
    -------
    PermutationResult
        ``(difference, p_value, n_perm, exact)``: difference = mean(a - b); n_perm is the number of
        flips used (2^G when exact).

    Raises
    ------
    DataError
        On arrays that are not 1-D of the same length >= 1, or contain NaN / inf.
    ConfigError
        On a bad ``n_perm`` or ``alternative``.
    """
    n_perm = check_int("n_perm", n_perm, 1)
    if alternative not in ("two-sided", "greater", "less"):
        raise ConfigError(f"alternative must be 'two-sided', 'greater' or 'less'; got {alternative!r}")
    try:
        x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"a and b must be numeric 1-D arrays of per-item scores ({exc})") from None
    if x.ndim != 1 or y.ndim != 1 or x.shape != y.shape or x.size == 0:
        raise DataError(f"a and b must be 1-D with one score per item, of the same length >= 1; got shapes "
                        f"{x.shape} and {y.shape}", hint="score both checkpoints on the same items, in order")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise DataError("a or b contains NaN or inf", hint="drop those items from both")
    diff = x - y
    n = diff.size
    if groups is None:
        units = diff
    else:
        units = np.bincount(as_groups(groups, n), weights=diff)  # flipping a group flips its sum
    observed = float(diff.mean())
    G = units.size
    scale = float(np.abs(units).sum()) / n
    tol = 1e-12 * max(scale, 1e-300)

    def extreme(null: np.ndarray) -> int:
        if alternative == "two-sided":
            return int(np.sum(np.abs(null) >= abs(observed) - tol))
        if alternative == "greater":
            return int(np.sum(null >= observed - tol))
        return int(np.sum(null <= observed + tol))

    if G < 63 and 2**G <= n_perm:
        codes = np.arange(2**G, dtype=np.int64)[:, None]
        signs = 1.0 - 2.0 * ((codes >> np.arange(G)) & 1)
        count = extreme(signs @ units / n)
        return PermutationResult(observed, count / 2**G, 2**G, True)
    rng = np.random.default_rng(seed)
    count, done, block = 0, 0, max(1, min(n_perm, 2**22 // max(G, 1)))
    while done < n_perm:
        m = min(block, n_perm - done)
        signs = 1.0 - 2.0 * rng.integers(0, 2, size=(m, G))
        count += extreme(signs @ units / n)
        done += m
    return PermutationResult(observed, (1 + count) / (1 + n_perm), n_perm, False)
