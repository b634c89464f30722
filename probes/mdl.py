"""MDL probing: the online (prequential) codelength of labels given a representation.

Voita & Titov 2020, "Information-Theoretic Probing with Minimum Description Length" (EMNLP), section
3.2. Instead of asking how accurate a probe is, ask how many bits it takes to *transmit* the labels y
to a receiver who already has the representations X. A representation in which y is easy to extract
gives a short code; one in which y is absent costs about the uniform code, n log2 K bits.

The online code (:func:`online_codelength`): the items are put in a seeded random order and cut at
timesteps 1 <= t_1 < t_2 < ... < t_S = n (``fractions`` of n, by default 0.1%, 0.2%, 0.4%, ..., 50%,
100% as in the paper). The first block, items 1..t_1, is sent with the uniform code (t_1 log2 K bits).
Each later block, items t_i+1..t_{i+1}, is sent with a fresh probe fitted on items 1..t_i, which the
receiver can fit too (it has already decoded those labels), at a cost of sum_j -log2 p(y_j | x_j)
bits over the block. The total codelength is the sum over blocks; ``compression`` is uniform / online.

Details this implementation fixes (the paper leaves them open):

* **Block boundaries**: t_i = max(1, floor(f_i n)) and t_S = n. When n is too small for the
  fractions, several boundaries coincide; they are merged (each block has at least one item and the
  boundaries increase strictly), and :attr:`MDLResult.n_merged` says how many were dropped.
* **Groups** (parallel data: the same verse in several languages): the order shuffles whole groups,
  keeping each group's items next to each other (in a seeded order within the group), and every
  boundary is moved to the nearest group edge (ties to the later one; never to 0). So no group is
  ever split between a training prefix and the block it encodes: a probe never encodes an item after
  seeing its translation, which would shorten the code for labels shared within a group (topic,
  verse id) without saying anything about the representation. Snapping can merge boundaries when
  groups are large relative to the early blocks; ``n_merged`` counts those too.
* **Classes missing from a training prefix**: the probe only has columns for the classes it saw, so
  it would give an unseen class probability 0 and an infinite codelength. The unseen classes get what
  the Laplace (add-one) estimator on the prefix gives them, 1 / (m + K) each, with m the prefix size
  and K the number of classes in y; the seen classes share the remaining 1 - U / (m + K) (U unseen
  classes) in the probe's proportions. The receiver knows the prefix, so this is a valid code; the
  mass is large for short prefixes and vanishes as they grow, and when every class has been seen the
  probe's distribution is used unchanged (U = 0), as in the paper.
* **Prefixes with a single class** (no probe can be fitted): the block is sent with the Laplace
  estimator itself, p(k) = (count_k + 1) / (m + K).

Costs: one probe fit per block after the first (11 with the default fractions), on prefixes that
double in size, so the last fits (on n/4 and n/2 items) dominate: the cost is about two fits on
the whole data. n = 20k, d = 1024 took 2.5 s (K = 2) to 5 s (K = 50) with the default
:class:`LinearProbe` on two CPU cores.

* **Regularisation chosen on each prefix** (``select_C``, LinearProbe only): the paper early-stops
  each block's probe on a held-out tenth of its training portion. Here each prefix of at least 40
  items is split 90 / 10 (whole groups, seeded), every C of the grid is fitted on the 90 % and scored
  by its codelength on the 10 %, and the best C is refitted on the whole prefix; smaller prefixes use
  the strongest C. The receiver can repeat all of it (it only reads the prefix), so the code stays
  valid. Without it a fixed C = 1 overfits the small early blocks of wide representations and pays
  for confident mistakes: on random labels, n = 20k, d = 1024, compression fell to 0.60 (K = 2) and
  0.27 (K = 50), where the right answer is about 1 (0.96 and 0.99 with the default ``select_C``).

* **The default probe is scikit-learn's logistic regression**: :class:`LinearProbe` fits
  ``LogisticRegression``'s model and objective, for two classes one weight vector and a sigmoid, so a
  block sent with ``LinearProbe(C=c)`` costs what ``LogisticRegression(C=c)`` fitted on the same
  standardised prefix makes it cost. (Earlier versions fitted two classes as a two-column softmax
  whose penalty was half scikit-learn's, i.e. ``C = 2c``; their two-class codelengths differ, 0.57
  instead of 0.60 in the example above.)

Reading the numbers: compression is about 1 when X says nothing about y and grows with how easily a
probe extracts y. Compare layers with the same probe and settings, against a control task.
"""
from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import clone

from xlprobe.errors import ConfigError, DataError
from xlprobe.probes.arrays import as_groups, as_labels, as_rep, check_int
from xlprobe.probes.classifiers import PROBES, fit_probe, make_probe, probe_measure
from xlprobe.registry import register_measure

__all__ = ["MDLResult", "online_codelength", "mdl_codelength", "mdl_compression", "DEFAULT_FRACTIONS"]

logger = logging.getLogger(__name__)

#: Block boundaries as fractions of the data: Voita & Titov's timesteps (0.1% ... 100%).
DEFAULT_FRACTIONS = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.0625, 0.125, 0.25, 0.5, 1.0)
#: Inverse L2 strengths a LinearProbe chooses from on each prefix (``select_C``), strongest first.
DEFAULT_C_GRID = (0.001, 0.01, 0.1, 1.0)
#: Prefixes smaller than this are too small to hold out a validation part: the strongest C is used.
_MIN_SELECT = 40
_LN2 = math.log(2.0)


@dataclass(frozen=True, eq=False)
class MDLResult:
    """The online codelength of labels y given X, block by block.

    Attributes
    ----------
    codelength_bits : float
        The online codelength, in bits (the sum of ``block_bits``).
    uniform_bits : float
        The uniform codelength n log2 K, in bits.
    compression : float
        ``uniform_bits / codelength_bits``: 1 for labels the probe cannot predict, larger is better.
    block_bits : tuple of float
        Bits spent on each block; the first is ``block_sizes[0] * log2(n_classes)``.
    block_sizes : tuple of int
        Items in each block (each >= 1; they sum to ``n``).
    block_code : tuple of str
        How each block was sent: ``"uniform"`` (the first), ``"probe"`` (a probe fitted on the prefix),
        or ``"counts"`` (the Laplace estimator, when the prefix has a single class).
    block_unseen : tuple of int
        Classes absent from each block's training prefix (``n_classes`` for the first block); where it
        is > 0 for a ``"probe"`` block, the unseen-class fallback of the module docstring applied.
    n : int
        Number of items.
    n_classes : int
        Number of classes K in y.
    block_C : tuple of float or None
        The C each probe block used (chosen on its prefix, see ``select_C``); NaN for blocks not sent
        with a probe; None when no selection was made.
    n_merged : int
        Requested boundaries dropped because they coincided with another one (n too small for the
        fractions, or boundaries snapped to the same group edge); 0 when every fraction made a block.
    order : ndarray [n], int64, read-only
        The transmission order: ``order[:block_sizes[0]]`` are the indices (rows of X) of the first
        block, and so on.
    """

    codelength_bits: float
    uniform_bits: float
    compression: float
    block_bits: tuple[float, ...]
    block_sizes: tuple[int, ...]
    block_code: tuple[str, ...]
    block_unseen: tuple[int, ...]
    n: int
    n_classes: int
    n_merged: int
    order: np.ndarray
    block_C: tuple[float, ...] | None = None

    @property
    def codelength_kbits(self) -> float:
        """The online codelength in kbits (1000 bits), the unit of the paper's tables."""
        return self.codelength_bits / 1000.0

    @property
    def boundaries(self) -> tuple[int, ...]:
        """The end of each block in ``order`` (t_1, ..., t_S = n)."""
        return tuple(int(t) for t in np.cumsum(self.block_sizes))


# ------------------------------------------------------------------------------------------ checks
def _check_fractions(fractions: Any) -> tuple[float, ...]:
    """At least two fractions in (0, 1], strictly increasing, the last 1.0."""
    if isinstance(fractions, (str, bytes)) or not isinstance(fractions, Sequence):
        raise ConfigError(f"fractions must be a sequence of numbers in (0, 1]; got {fractions!r}",
                          hint=f"e.g. fractions={DEFAULT_FRACTIONS}")
    f = tuple(fractions)
    ok = all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and 0 < v <= 1
             for v in f)
    if not ok or len(f) < 2 or any(b <= a for a, b in zip(f, f[1:])) or f[-1] != 1:
        raise ConfigError(f"fractions must be at least two strictly increasing numbers in (0, 1], the last "
                          f"1.0; got {fractions!r}",
                          hint=f"the first fraction is sent with the uniform code; e.g. {DEFAULT_FRACTIONS}")
    return tuple(float(v) for v in f)


def _check_probe(probe: Any) -> Any:
    """An unfitted estimator to clone, by :func:`~xlprobe.probes.classifiers.make_probe`; it must give
    log-probabilities."""
    if probe is None or isinstance(probe, str):
        return make_probe(probe)  # an unknown name: ConfigError "probe must be one of ..."
    if not (callable(getattr(probe, "fit", None)) and callable(getattr(probe, "predict_log_proba", None))
            and hasattr(probe, "get_params")):
        raise ConfigError(f"probe must be None, one of {list(PROBES)} or a scikit-learn classifier with "
                          f"predict_log_proba; got {probe!r}",
                          hint="pass e.g. probe=LinearProbe(C=0.1) or probe=MLPProbe(max_epochs=20)")
    return make_probe(probe)


# ------------------------------------------------------------------------------------------ order and blocks
def _order(n: int, g: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """A random order of the items; with groups, whole groups in random order, items shuffled within."""
    tie = rng.permutation(n)
    if g is None:
        return tie.astype(np.int64)
    position = rng.permutation(int(g.max()) + 1)  # a random position for every group
    return np.lexsort((tie, position[g])).astype(np.int64)


def _boundaries(fractions: tuple[float, ...], n: int, g_ordered: np.ndarray | None) -> np.ndarray:
    """Strictly increasing block ends t_1 < ... < t_S = n, each >= 1 (snapped to group edges if given)."""
    if g_ordered is None:
        t = np.maximum(1, np.floor(np.asarray(fractions) * n).astype(np.int64))
    else:
        edges = np.flatnonzero(np.diff(g_ordered)) + 1  # where a new group starts in the order
        edges = np.append(edges, n)  # ends of the groups, increasing, the last n
        target = np.asarray(fractions) * n
        hi = np.minimum(np.searchsorted(edges, target), edges.size - 1)  # first edge >= target
        lo = np.maximum(hi - 1, 0)
        t = np.where(target - edges[lo] < edges[hi] - target, edges[lo], edges[hi])
    t[-1] = n
    return np.unique(t)


def _laplace_log2(counts: np.ndarray) -> np.ndarray:
    """log2 of the add-one estimate (count_k + 1) / (m + K) of every class."""
    return np.log2(counts + 1.0) - math.log2(counts.sum() + counts.size)


def _select_C(base: Any, grid: Sequence[float], A: np.ndarray, c: np.ndarray, g: np.ndarray | None, K: int,
              rng: np.random.Generator) -> float:
    """The C of ``grid`` whose probe, fitted on 90 % of the prefix, sends the other 10 % in the fewest bits."""
    m = c.size
    if m < _MIN_SELECT:
        return float(min(grid))
    units = np.arange(m) if g is None else g
    uniq = np.unique(units)
    if uniq.size < 5:
        return float(min(grid))
    held = rng.choice(uniq, size=max(1, int(round(0.1 * uniq.size))), replace=False)
    val = np.isin(units, held)
    if np.unique(c[~val]).size < 2:
        return float(min(grid))
    best, best_bits = float(min(grid)), math.inf
    warm = clone(base) if _warm_startable(base) else None
    for C in sorted(grid):  # increasing C: each fit starts from the previous optimum where the probe can
        if warm is not None:
            warm.set_params(C=C, warm_start=True).fit(A[~val], c[~val])
            bits = _fitted_block_bits(warm, int((~val).sum()), A[val], c[val], K)
        else:
            est = clone(base).set_params(C=C)
            bits = _probe_block_bits(est, A[~val], c[~val], None if g is None else g[~val], A[val], c[val], K)
        if bits < best_bits - 1e-9:
            best, best_bits = float(C), bits
    return best


def _warm_startable(est: Any) -> bool:
    """Whether a probe can continue from its last fit (``warm_start``) and takes no groups in ``fit``."""
    return "warm_start" in est.get_params() and not getattr(type(est), "fit_takes_groups", False)


def _probe_block_bits(est: Any, A_prefix: np.ndarray, c_prefix: np.ndarray, g_prefix: np.ndarray | None,
                      A_block: np.ndarray, c_block: np.ndarray, K: int) -> float:
    """Bits to send the block's labels with ``est`` fitted on the prefix (unseen classes: see the docstring)."""
    groups = g_prefix if g_prefix is not None and np.unique(g_prefix).size >= 2 else None
    return _fitted_block_bits(fit_probe(est, A_prefix, c_prefix, groups), c_prefix.size, A_block, c_block, K)


def _fitted_block_bits(est: Any, m: int, A_block: np.ndarray, c_block: np.ndarray, K: int) -> float:
    """Bits to send the block's labels with a probe fitted on a prefix of ``m`` items."""
    seen = np.asarray(est.classes_).astype(np.int64)
    logp = np.asarray(est.predict_log_proba(A_block), dtype=np.float64)
    if logp.shape != (A_block.shape[0], seen.size):
        raise DataError(f"{type(est).__name__}.predict_log_proba returned shape {logp.shape}; expected "
                        f"{(A_block.shape[0], seen.size)} (one column per class in classes_)")
    unseen = K - seen.size
    full = np.full((A_block.shape[0], K), -math.log(m + K))  # natural log of 1 / (m + K)
    full[:, seen] = logp + (math.log1p(-unseen / (m + K)) if unseen else 0.0)
    bits = -full[np.arange(c_block.size), c_block].sum() / _LN2
    if not math.isfinite(bits):
        raise DataError(f"{type(est).__name__} gave a non-finite log-probability to a label",
                        hint="check the probe (a diverged fit?) or use the default LinearProbe")
    return float(bits)


# ------------------------------------------------------------------------------------------ the code
def online_codelength(X: Any, y: Any, groups: Any = None, *, probe: Any = None,
                      fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0,
                      select_C: Sequence[float] | None = DEFAULT_C_GRID) -> MDLResult:
    """Online (prequential) codelength of y given X with a probe (Voita & Titov 2020).

    The items are sent in a seeded random order, in blocks ending at ``fractions`` of n: the first
    block with the uniform code, each later one with a clone of ``probe`` fitted on every item before
    it (see the module docstring for boundaries, groups and classes missing from a prefix).

    Parameters
    ----------
    X : array [n, d]
        Representation, one row per item (n >= 2).
    y : array [n]
        Labels, two classes or more.
    groups : array [n], optional
        Parallel-group id of each item: groups stay whole and contiguous in the order, and block
        boundaries fall between groups. Passed on to the probe's ``fit`` when it takes ``groups``.
    probe : estimator, "linear" or "mlp", default None
        A scikit-learn classifier with ``predict_log_proba``, cloned for every block; None or
        ``"linear"`` is ``LinearProbe()``, ``"mlp"`` is ``MLPProbe()``. Its own parameters (its
        ``random_state`` included) are kept; it is fitted on class codes 0..K-1.
    fractions : sequence of float, default :data:`DEFAULT_FRACTIONS`
        Block ends as fractions of n: strictly increasing in (0, 1], the last 1.0.
    seed : int, default 0
        Seeds the order of the items (and the validation splits of ``select_C``).
    select_C : sequence of float or None, default :data:`DEFAULT_C_GRID`
        For a :class:`LinearProbe`, choose its C on each prefix from these values (see the module
        docstring); None keeps the probe's own C. Ignored for other probes.

    Returns
    -------
    MDLResult
        The codelength, the uniform codelength, their ratio and the per-block details.

    Raises
    ------
    DataError
        Bad X / y / groups, fewer than two classes, or data that makes a single block.
    ConfigError
        Bad ``fractions``, ``probe`` or ``seed``.
    """
    seed = check_int("seed", seed, 0)
    f = _check_fractions(fractions)
    base = _check_probe(probe)
    A = as_rep(X, dtype=np.float32, min_rows=2)
    n = A.shape[0]
    codes, classes = as_labels(y, n)
    g = as_groups(groups, n)
    K = classes.size
    order = _order(n, g, np.random.default_rng(seed))
    g_ord = None if g is None else g[order]
    t = _boundaries(f, n, g_ord)
    if t.size < 2:
        raise DataError(f"the data make a single block (n={n}"
                        f"{'' if g is None else f', {int(g.max()) + 1} group(s)'}), so nothing is sent "
                        "with a probe", hint="pass more items" + ("" if g is None else " or more groups"))
    A, c = A[order], codes[order]
    log2K = math.log2(K)
    grid = None
    if select_C is not None and probe_measure(base) == "probe.linear":
        grid = tuple(float(v) for v in select_C)
        if not grid or any(not (math.isfinite(v) and v > 0) for v in grid):
            raise ConfigError(f"select_C must be positive numbers; got {select_C!r}", hint="e.g. (0.01, 0.1, 1.0)")
    sel_rng = np.random.default_rng([seed, 1])
    bits, code, unseen, chosen = [t[0] * log2K], ["uniform"], [K], [math.nan]
    for start, stop in zip(t[:-1], t[1:]):
        counts = np.bincount(c[:start], minlength=K).astype(np.float64)
        n_seen = int(np.count_nonzero(counts))
        unseen.append(K - n_seen)
        if n_seen < 2:
            bits.append(float(-_laplace_log2(counts)[c[start:stop]].sum()))
            code.append("counts")
            chosen.append(math.nan)
        else:
            g_pre = None if g_ord is None else g_ord[:start]
            est = clone(base)
            if grid is not None:
                est.set_params(C=_select_C(base, grid, A[:start], c[:start], g_pre, K, sel_rng))
            chosen.append(float(est.get_params().get("C", math.nan)))
            bits.append(_probe_block_bits(est, A[:start], c[:start], g_pre, A[start:stop], c[start:stop], K))
            code.append("probe")
        logger.debug("mdl: block %d..%d (%s, %d unseen) %.1f bits", start, stop, code[-1], unseen[-1], bits[-1])
    total = float(sum(bits))
    uniform = n * log2K
    n_merged = len(f) - t.size
    if n_merged:
        logger.debug("mdl: %d of %d block boundaries merged (n=%d)", n_merged, len(f), n)
    order.setflags(write=False)
    sizes = tuple(int(s) for s in np.diff(t, prepend=0))
    return MDLResult(codelength_bits=total, uniform_bits=uniform, compression=uniform / total,
                     block_bits=tuple(float(b) for b in bits), block_sizes=sizes, block_code=tuple(code),
                     block_unseen=tuple(unseen), n=n, n_classes=K, n_merged=n_merged, order=order,
                     block_C=tuple(chosen) if grid is not None else None)


@register_measure("mdl.codelength", kind="labelled", direction="lower_better")
def mdl_codelength(X: Any, y: Any, groups: Any = None, *, seed: int = 0, probe: Any = None,
                   fractions: Sequence[float] = DEFAULT_FRACTIONS) -> float:
    """Online MDL codelength of the labels given X, in kbits (Voita & Titov 2020); lower is better.

    Depends on n and K: compare layers or checkpoints on the same items and labels, or use
    ``mdl.compression``. Parameters as :func:`online_codelength`.

    Returns
    -------
    float
        ``online_codelength(...).codelength_bits / 1000``.
    """
    return online_codelength(X, y, groups, probe=probe, fractions=fractions, seed=seed).codelength_kbits


@register_measure("mdl.compression", kind="labelled", direction="higher_better")
def mdl_compression(X: Any, y: Any, groups: Any = None, *, seed: int = 0, probe: Any = None,
                    fractions: Sequence[float] = DEFAULT_FRACTIONS) -> float:
    """MDL compression: uniform codelength / online codelength of the labels given X; higher is better.

    About 1 when X says nothing about y (and somewhat below 1 when the probe overfits early blocks).
    Parameters as :func:`online_codelength`.

    Returns
    -------
    float
        ``online_codelength(...).compression``.
    """
    return online_codelength(X, y, groups, probe=probe, fractions=fractions, seed=seed).compression
