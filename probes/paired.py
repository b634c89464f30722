"""Paired comparison of two checkpoints on the same items: difference, cluster-bootstrap interval, p-value.

The study asks whether checkpoint A (``mt``) differs from checkpoint B (``lm``) at a layer, and by more
than a control (``lm-cont``) does. Both were measured on the same items, which come in parallel groups
(one verse in several languages), so the errors of a group are correlated and the group is the unit
of every resampling here.

* Per-item scores (a probe's out-of-fold correctness, kNN correctness, retrieval hits, an MDL block's
  bits per item): :func:`paired_item_stats` takes ``a`` and ``b`` as [n, L] arrays (L layers or
  measures, compared column by column with the *same* draws) and returns, per column, the mean
  difference, a paired cluster-bootstrap percentile interval (groups resampled with replacement, the
  same groups for A and B: Davison & Hinkley 1997, sect. 3.8) and a sign-flip permutation p-value
  (under H0 the two checkpoints are exchangeable within a group, so each group's summed difference is
  as likely to have either sign: Good 2005, sect. 3.1). Both are vectorised: the groups' sums are
  formed once, a draw is a row of counts or signs, and every column shares it.
* Statistics of a whole set (CKA, Fisher ratio, effective rank): :func:`paired_set_stats` recomputes
  ``stat_fn`` on both checkpoints for each *half-sample* of groups (half the groups, without
  replacement: no duplicated rows, which bias statistics such as effective rank downwards under the
  bootstrap); the spread of the half-sample differences is the standard error (McCarthy 1969), the
  interval normal, the p-value the normal test. There is no sign-flip test for these: rows of two
  different representation spaces cannot be swapped.
* :func:`adjust_pvalues`: Holm (1979) controls the family-wise error, Benjamini & Hochberg (1995) the
  false discovery rate, over the layers of one comparison.

Randomness comes only from ``np.random.default_rng(seed)``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from statistics import NormalDist
from typing import Any, NamedTuple

import numpy as np

from xlprobe.errors import ConfigError, DataError, XlprobeError
from xlprobe.probes.arrays import as_groups, check_float, check_int

__all__ = ["PairedStats", "paired_item_stats", "paired_set_stats", "mean_interval", "bootstrap_means",
           "draws_interval", "adjust_pvalues", "CORRECTIONS", "resample_counts", "half_samples",
           "half_sample_interval"]

#: Multiple-testing corrections :func:`adjust_pvalues` knows.
CORRECTIONS = ("holm", "bh", "none")
_NORMAL = NormalDist()


class PairedStats(NamedTuple):
    """Per column: mean difference a - b, its interval, the p-value; and how it was tested."""

    difference: np.ndarray
    low: np.ndarray
    high: np.ndarray
    p_value: np.ndarray
    n_groups: int
    test: str


def _scores(x: Any, name: str) -> np.ndarray:
    """Per-item scores as a float64 [n, L] array (a 1-D array becomes one column)."""
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name} must be numeric per-item scores; got {type(x).__name__} ({exc})") from None
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] == 0:
        raise DataError(f"{name} must be [n items] or [n items, L columns] with n >= 1; got shape {a.shape}",
                        hint="one row per item, one column per layer")
    return a


def _group_sums(a: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum of each group's rows [G, L] and each group's size [G]."""
    G = int(codes.max()) + 1
    sums = np.zeros((G, a.shape[1]))
    np.add.at(sums, codes, a)
    return sums, np.bincount(codes, minlength=G).astype(np.float64)


def resample_counts(n_units: int, n_boot: int, seed: int) -> np.ndarray:
    """How many times each unit is drawn in each of ``n_boot`` resamples with replacement [n_boot, n_units]."""
    draws = np.random.default_rng(seed).integers(0, n_units, size=(n_boot, n_units))
    flat = (draws + (np.arange(n_boot) * n_units)[:, None]).ravel()
    return np.bincount(flat, minlength=n_boot * n_units).reshape(n_boot, n_units).astype(np.float64)


def _codes(groups: Any, n: int) -> np.ndarray:
    """Group codes of the items (each item its own group when ``groups`` is None)."""
    codes = as_groups(groups, n)
    return np.arange(n, dtype=np.int64) if codes is None else codes


def _percentiles(draws: np.ndarray, ci: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of each column of ``draws`` [B, L], ignoring non-finite draws."""
    alpha = (1.0 - ci) / 2.0
    with np.errstate(all="ignore"):
        lo, hi = np.nanquantile(np.where(np.isfinite(draws), draws, np.nan), [alpha, 1.0 - alpha], axis=0)
    return lo, hi


def bootstrap_means(scores: Any, groups: Any = None, *, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """Means of every column over ``n_boot`` cluster-bootstrap resamples of the groups [n_boot, L].

    One resample is one vector of group counts, shared by every column, so columns stay paired.
    """
    a = _scores(scores, "scores")
    n_boot = check_int("n_boot", n_boot, 1)
    sums, sizes = _group_sums(a, _codes(groups, a.shape[0]))
    W = resample_counts(sizes.size, n_boot, seed)
    with np.errstate(all="ignore"):
        return (W @ sums) / (W @ sizes)[:, None]


def mean_interval(scores: Any, groups: Any = None, *, n_boot: int = 1000, ci: float = 0.95, seed: int = 0
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean of per-item scores per column and its cluster-bootstrap percentile interval (vectorised).

    The same resampled groups serve every column. A column with a NaN score gets NaN throughout.
    Returns ``(mean [L], low [L], high [L])``.
    """
    a = _scores(scores, "scores")
    ci = check_float("ci", ci, 0.0, 1.0, open_low=True, open_high=True)
    lo, hi = _percentiles(bootstrap_means(a, groups, n_boot=n_boot, seed=seed), ci)
    bad = ~np.isfinite(a).all(axis=0)
    mean = a.mean(axis=0)
    return tuple(np.where(bad, np.nan, v) for v in (mean, lo, hi))  # type: ignore[return-value]


def draws_interval(scores: Any, groups: Any = None, *, n_boot: int = 1000, ci: float = 0.95, seed: int = 0
                   ) -> tuple[float, float, float]:
    """Mean over items and random draws (columns), with an interval that holds both sources of spread.

    ``scores`` [n, D] are per-item scores under D random draws of a control (control labels, a shuffle).
    Each bootstrap resample of groups is paired with one draw chosen at random (a two-level bootstrap:
    Davison & Hinkley 1997, sect. 2.4), so the interval is as wide as the items' sampling and the
    draws' disagreement together. Returns ``(mean, low, high)``.
    """
    a = _scores(scores, "scores")
    ci = check_float("ci", ci, 0.0, 1.0, open_low=True, open_high=True)
    if not np.isfinite(a).all():
        return float("nan"), float("nan"), float("nan")
    means = bootstrap_means(a, groups, n_boot=n_boot, seed=seed)
    pick = np.random.default_rng(seed + 1).integers(0, a.shape[1], size=means.shape[0])
    lo, hi = _percentiles(means[np.arange(means.shape[0]), pick][:, None], ci)
    return float(a.mean()), float(lo[0]), float(hi[0])


def _sign_flip_p(D: np.ndarray, n: int, n_perm: int, seed: int) -> tuple[np.ndarray, str]:
    """Two-sided sign-flip p-value of each column of the groups' summed differences D [G, L]."""
    G = D.shape[0]
    observed = np.abs(D.sum(axis=0)) / n
    tol = 1e-12 * np.maximum(np.abs(D).sum(axis=0) / n, 1e-300)
    if G < 63 and 2**G <= n_perm:
        codes = np.arange(2**G, dtype=np.int64)[:, None]
        signs = 1.0 - 2.0 * ((codes >> np.arange(G)) & 1)
        count = (np.abs(signs @ D) / n >= observed - tol).sum(axis=0)
        return count / 2.0**G, f"sign-flip, exact ({2**G} flips)"
    rng = np.random.default_rng(seed)
    count = np.zeros(D.shape[1])
    done, block = 0, max(1, min(n_perm, 2**21 // max(G, 1)))
    while done < n_perm:
        m = min(block, n_perm - done)
        signs = 1.0 - 2.0 * rng.integers(0, 2, size=(m, G))
        count += (np.abs(signs @ D) / n >= observed - tol).sum(axis=0)
        done += m
    return (1.0 + count) / (1.0 + n_perm), f"sign-flip ({n_perm} flips)"


def paired_item_stats(a: Any, b: Any, groups: Any = None, *, n_boot: int = 1000, n_perm: int = 10_000,
                      ci: float = 0.95, seed: int = 0) -> PairedStats:
    """Mean difference a - b per column, its paired cluster-bootstrap interval and sign-flip p-value.

    Parameters
    ----------
    a, b : array-like [n] or [n, L]
        Per-item scores of the two checkpoints (row i of both is the same item); columns are compared
        separately (layers), with the same bootstrap draws and the same sign flips.
    groups : array-like [n], optional
        Parallel group of each item: resampled and flipped as a whole. None: every item alone.
    n_boot, n_perm : int
        Bootstrap resamples, random sign flips (all 2^G are enumerated instead when that is at most
        ``n_perm``: an exact p-value).
    ci : float
        Coverage of the interval.
    seed : int

    Returns
    -------
    PairedStats
        Columns with a non-finite score get NaN difference, interval and p-value.
    """
    A, B = _scores(a, "a"), _scores(b, "b")
    if A.shape != B.shape:
        raise DataError(f"a and b must hold the same items and columns; got shapes {A.shape} and {B.shape}",
                        hint="score both checkpoints on the same items (match them by record id first)")
    n_perm = check_int("n_perm", n_perm, 1)
    n = A.shape[0]
    codes = _codes(groups, n)
    if int(codes.max()) + 1 < 2:
        raise DataError("a paired comparison needs at least 2 groups; got 1", hint="capture more parallel groups")
    diff = A - B
    bad = ~np.isfinite(diff).all(axis=0)
    diff[:, bad] = 0.0
    mean, lo, hi = mean_interval(diff, codes, n_boot=n_boot, ci=ci, seed=seed)
    D, _ = _group_sums(diff, codes)
    p, test = _sign_flip_p(D, n, n_perm, seed + 1)
    out = [np.where(bad, np.nan, v) for v in (mean, lo, hi, p)]
    return PairedStats(*out, n_groups=D.shape[0], test=test)


def half_samples(groups: Any, n: int, n_half: int, seed: int) -> list[np.ndarray]:
    """Row indices of ``n_half`` random half-samples: half the groups each, drawn without replacement."""
    codes = _codes(groups, n)
    sizes = np.bincount(codes)
    G = sizes.size
    if G < 4:
        raise DataError(f"half-sampling needs at least 4 groups; got {G}", hint="capture more parallel groups")
    order = np.argsort(codes, kind="stable")
    starts = np.cumsum(sizes) - sizes
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_half):
        chosen = np.sort(rng.choice(G, size=G // 2, replace=False))
        out.append(np.concatenate([order[starts[c]:starts[c] + sizes[c]] for c in chosen]))
    return out


def _normal_interval(value: np.ndarray, sd: np.ndarray, ci: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """value -/+ z sd, and the two-sided normal p-value of value = 0 (1 where both are 0)."""
    z = _NORMAL.inv_cdf(0.5 + ci / 2.0)
    with np.errstate(all="ignore"):
        p = np.where(sd > 0, 2.0 * np.vectorize(lambda t: _NORMAL.cdf(-abs(t)))(value / np.where(sd > 0, sd, 1.0)),
                     np.where(value == 0, 1.0, 0.0))
    return value - z * sd, value + z * sd, p


def half_sample_interval(stat_fn: Callable[..., float], *arrays: Any, groups: Any = None, n_half: int = 100,
                         ci: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """A set statistic with a half-sampling interval over groups: value -/+ z sd(half-sample values).

    The bootstrap's duplicated rows bias statistics that count distinct directions (effective rank
    falls with every duplicate); a half-sample (half the groups, without replacement) has none, and the
    spread of a statistic over half-samples estimates its full-sample standard error (for a mean it is
    exact up to (G - 1) / G: McCarthy 1969, "Pseudo-replication: half samples", Rev. ISI 37).
    """
    arrs = [np.asarray(a) for a in arrays]
    value = float(stat_fn(*arrs))
    draws = np.array([float(stat_fn(*(a[r] for a in arrs)))
                      for r in half_samples(groups, len(arrs[0]), n_half, seed)])
    draws = draws[np.isfinite(draws)]
    if draws.size < 2 or not np.isfinite(value):
        return value, float("nan"), float("nan")
    lo, hi, _ = _normal_interval(np.array([value]), np.array([draws.std(ddof=1)]), ci)
    return value, float(lo[0]), float(hi[0])


def paired_set_stats(stat_fn: Callable[..., float], reps_a: Sequence[Any], reps_b: Sequence[Any],
                     groups: Any = None, *, n_half: int = 100, ci: float = 0.95, seed: int = 0) -> PairedStats:
    """Difference stat(A_l) - stat(B_l) per layer l, with a paired half-sampling interval and normal p-value.

    ``reps_a`` and ``reps_b`` are sequences of L arrays [n, d] (one per layer) on the same items, or of
    L tuples of such arrays when ``stat_fn`` takes several (``cka(X, Y)`` against a reference); each
    half-sample of groups (:func:`half_samples`) is applied to every array of every layer of both
    sides, so the two checkpoints stay paired; a layer on which ``stat_fn`` raises an xlprobe error (a
    constant layer) gets NaN. The standard error of the difference is the spread of
    the half-sample differences (see :func:`half_sample_interval`); the p-value is the two-sided normal
    test of difference / standard error.
    """
    if len(reps_a) != len(reps_b) or not len(reps_a):
        raise DataError(f"reps_a and reps_b must list the same layers; got {len(reps_a)} and {len(reps_b)}")
    n_half = check_int("n_half", n_half, 2)
    ci = check_float("ci", ci, 0.0, 1.0, open_low=True, open_high=True)
    parts = [X for layer in (*reps_a, *reps_b) for X in (layer if isinstance(layer, tuple) else (layer,))]
    n = len(parts[0])
    if any(len(X) != n for X in parts):
        raise DataError("every layer of both checkpoints must hold the same n items",
                        hint="match the two checkpoints' rows by record id first")

    def stat(layer: Any, idx: np.ndarray | None) -> float:
        arrays = layer if isinstance(layer, tuple) else (layer,)
        try:
            return float(stat_fn(*(np.asarray(X) if idx is None else np.asarray(X)[idx] for X in arrays)))
        except XlprobeError:  # a degenerate layer (constant rows): NaN, as the per-layer rows do
            return float("nan")

    def diff(idx: np.ndarray | None) -> np.ndarray:
        return np.array([stat(la, idx) - stat(lb, idx) for la, lb in zip(reps_a, reps_b)])

    observed = diff(None)
    halves = half_samples(groups, n, n_half, seed)
    draws = np.stack([diff(r) for r in halves])
    with np.errstate(all="ignore"):
        sd = np.array([np.std(c[np.isfinite(c)], ddof=1) if np.isfinite(c).sum() > 1 else np.nan for c in draws.T])
    lo, hi, p = _normal_interval(observed, sd, ci)
    bad = ~np.isfinite(observed) | ~np.isfinite(sd)
    out = [np.where(bad, np.nan, v) for v in (observed, lo, hi, p)]
    return PairedStats(*out, n_groups=int(np.unique(_codes(groups, n)).size),
                       test=f"half-sampling ({n_half} half-samples), normal")


def adjust_pvalues(p: Any, method: str = "holm") -> np.ndarray:
    """p-values adjusted for testing them together: Holm (family-wise), Benjamini-Hochberg (FDR) or none.

    NaN entries stay NaN and do not count in the family size.
    """
    if method not in CORRECTIONS:
        raise ConfigError(f"correction must be one of {list(CORRECTIONS)}; got {method!r}",
                          hint="holm controls the family-wise error rate, bh the false discovery rate")
    q = np.asarray(p, dtype=np.float64).copy()
    ok = np.isfinite(q)
    if method == "none" or not ok.any():
        return q
    v = q[ok]
    m = v.size
    order = np.argsort(v, kind="stable")
    ranked = v[order]
    if method == "holm":
        adj = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * ranked))
    else:
        adj = np.minimum.accumulate((m / np.arange(1, m + 1) * ranked)[::-1])[::-1]
        adj = np.minimum(adj, 1.0)
    out = np.empty(m)
    out[order] = adj
    q[ok] = out
    return q
