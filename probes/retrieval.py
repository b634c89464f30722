"""Cross-lingual alignment: parallel-sentence retrieval (P@1) and CKA between languages.

Items are sentences with a language and a *parallel group* (the same verse in every language shares
a group). For a pair of languages (a, b) the **shared groups** are those with an item in both; each
language has at most one item per group, so the shared groups pair a's items with b's one to one
(:func:`pair_rows`).

**Retrieval** (:func:`retrieval_matrix`): every item of a whose group is shared with b is a query; the
candidates are b's items of the shared groups (not all of b's items). The nearest candidate by the
score is retrieved, and the query is correct when it has the query's group. With m shared groups
chance is exactly 1/m, and P@1(a -> b) and P@1(b -> a) are computed from the same m x m score matrix
(its row and column maxima). Restricting the candidates keeps P@1 comparable across pairs of
different coverage (Bible translations often cover different books); searching all of b's items
would add distractors that have no translation in a.

Scores:

* ``"cosine"``: cos(x, y).
* ``"margin"``: the ratio margin of Artetxe & Schwenk 2019 ("Margin-based Parallel Corpus Mining
  with Multilingual Sentence Embeddings", ACL, eq. 2 with the ratio)::

      score(x, y) = cos(x, y) / ( sum_{z in NN_k(x)} cos(x, z) / 2k + sum_{z in NN_k(y)} cos(y, z) / 2k )

  with NN_k(x) the k nearest candidates of a query x and NN_k(y) the k nearest queries of a candidate
  y, both within the pair's shared items (k is capped at m). It discounts *hubs*, vectors close to
  everything, which plain cosine retrieves for many queries (Radovanović et al. 2010). The ratio
  assumes positive neighbourhood means, as with anisotropic transformer states and k << m; where
  the denominator is <= 0 (cosines of a pair mostly negative, or centred vectors with k near m) it
  is floored at 1e-12, so there positive cosines rank first and negative ones last, with a
  RuntimeWarning.

``center="language"`` first subtracts each language's mean vector, over all of its items in ``X``,
so the centring does not depend on the pair (Libovický, Rosa & Fraser 2020, "On the Language
Neutrality of Pre-trained Multilingual Representations", Findings of EMNLP). A language-specific
offset o_a hurts raw cosine retrieval through the candidates' projections on the query language's
offset, <o_a, y_j>, which grow with ||o_a||; an offset shared by all languages largely cancels out.

Rows whose (centred) vector is zero have cosine 0 with everything. Ties go to the candidate with the
smallest group. Work is in float64 and in row blocks of ``block`` queries, so memory is
O(n d + block m) per pair, never n x n.

:func:`cross_language_cka` aligns a pair's items by group in the same way and applies
:func:`~xlprobe.probes.cka.cka` (which centres each side, so per-language offsets do not matter).
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from xlprobe.errors import ConfigError, DataError
from xlprobe.probes.arrays import as_groups, as_labels, as_rep, check_int
from xlprobe.probes.cka import KERNELS, cka
from xlprobe.registry import register_measure

__all__ = ["RetrievalResult", "retrieval_matrix", "retrieval_p_at_1", "cross_language_cka", "pair_rows",
           "CENTERS", "SCORINGS"]

logger = logging.getLogger(__name__)

#: Accepted values of ``center``.
CENTERS = ("none", "language")
#: Accepted values of ``scoring``.
SCORINGS = ("cosine", "margin")
#: Floor of the ratio margin's denominator (see the module docstring).
_TINY = 1e-12


# ------------------------------------------------------------------------------------------ validation
@dataclass(frozen=True)
class _Parallel:
    """Languages and groups of the items, indexed once: per language, its rows sorted by group."""

    langs: tuple[Any, ...]
    rows: tuple[np.ndarray, ...]  # rows[l]: row indices of language l, by increasing group code
    keys: tuple[np.ndarray, ...]  # keys[l]: their group codes (strictly increasing)

    def pair(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows of languages a and b in their shared groups, aligned (same group at the same position)."""
        _, ia, ib = np.intersect1d(self.keys[a], self.keys[b], assume_unique=True, return_indices=True)
        return self.rows[a][ia], self.rows[b][ib]


def _parallel(langs: Any, groups: Any, n: int, langs_name: str = "langs") -> _Parallel:
    """Check languages and groups (one each per item, >= 2 languages, one item per (language, group))."""
    codes, classes = as_labels(langs, n, langs_name, min_classes=2)
    if groups is None:
        raise DataError("groups is None; cross-lingual retrieval and CKA need the parallel group of every item",
                        hint="pass the group ids (records' .group: the same verse in every language shares one)")
    gcodes = as_groups(groups, n)
    order = np.lexsort((gcodes, codes))
    lc, gc = codes[order], gcodes[order]
    dup = (lc[1:] == lc[:-1]) & (gc[1:] == gc[:-1])
    if dup.any():
        gvalues = np.unique(np.asarray(groups))
        pairs, counts = np.unique(np.stack([lc[1:][dup], gc[1:][dup]], axis=1), axis=0, return_counts=True)
        examples = ", ".join(f"({classes[lang].item()!r}, {gvalues[g].item()!r}) x{c + 1}"
                             for (lang, g), c in zip(pairs[:5], counts[:5]))
        raise DataError(f"{len(pairs)} (language, group) pair(s) occur more than once, e.g. {examples}; each "
                        "language may have at most one item per parallel group",
                        hint="drop repeated items (the same verse twice in one language), or give them distinct groups")
    bounds = np.searchsorted(lc, np.arange(classes.size + 1))
    rows = tuple(order[bounds[i]:bounds[i + 1]] for i in range(classes.size))
    keys = tuple(gc[bounds[i]:bounds[i + 1]] for i in range(classes.size))
    return _Parallel(tuple(classes.tolist()), rows, keys)


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ConfigError(f"{name} must be one of {list(allowed)}; got {value!r}",
                          hint=f"pass {name}=" + " or ".join(repr(a) for a in allowed))
    return value


def _lang_index(par: _Parallel, lang: Any, name: str) -> int:
    try:
        return par.langs.index(lang)
    except ValueError:
        raise DataError(f"{name}={lang!r} is not one of the languages of the items: {list(par.langs)}",
                        hint="pass a language code that occurs in langs") from None


def _warn_skipped(skipped: list[tuple[Any, Any]], why: str, stacklevel: int) -> None:
    if not skipped:
        return
    shown = ", ".join(f"{a!r}-{b!r}" for a, b in skipped[:10]) + (", ..." if len(skipped) > 10 else "")
    msg = f"{len(skipped)} language pair(s) {why}; their entries are NaN: {shown}"
    logger.warning(msg)
    warnings.warn(msg, RuntimeWarning, stacklevel=stacklevel + 1)


# ------------------------------------------------------------------------------------------ retrieval
@dataclass(frozen=True, eq=False)
class RetrievalResult:
    """P@1 of parallel-sentence retrieval between every pair of languages.

    Attributes
    ----------
    langs : tuple
        The languages, sorted; they index the rows and columns of the matrices.
    p_at_1 : ndarray [L, L], float64, read-only
        ``p_at_1[i, j]``: the fraction of queries in ``langs[i]`` whose nearest item of ``langs[j]``
        (among the shared groups) is their translation. NaN on the diagonal and for pairs with no
        shared group.
    n : ndarray [L, L], int64, read-only
        Number of queries: items of the query language whose group has an item in the target
        language (symmetric; 0 on the diagonal). Chance P@1 is ``1 / n``.
    center, scoring, k
        The options used.
    """

    langs: tuple[Any, ...]
    p_at_1: np.ndarray
    n: np.ndarray
    center: str
    scoring: str
    k: int

    @property
    def chance(self) -> np.ndarray:
        """P@1 of a random guess, 1 / n (NaN where ``p_at_1`` is NaN)."""
        return np.where(self.n > 0, 1.0 / np.maximum(self.n, 1), np.nan)

    def mean(self) -> float:
        """Mean off-diagonal P@1 weighted by ``n`` (total correct / total queries); pairs with n = 0 skipped."""
        ok = self.n > 0
        total = int(self.n[ok].sum())
        if total == 0:
            return float("nan")
        return float((self.p_at_1[ok] * self.n[ok]).sum() / total)


def _unit_rows(A: np.ndarray, par: _Parallel, center: str) -> np.ndarray:
    """Centre each language (if asked) and scale rows to unit norm, in place (A is a private copy)."""
    if center == "language":
        for rows in par.rows:
            A[rows] -= A[rows].mean(axis=0)
    norms = np.linalg.norm(A, axis=1)
    A /= np.where(norms > 0, norms, 1.0)[:, None]  # zero rows stay zero: cosine 0 with everything
    return A


def _topk_means(Q: np.ndarray, C: np.ndarray, k: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean cosine of each query to its k nearest candidates, and of each candidate to its k nearest queries."""
    m = Q.shape[0]
    rq = np.empty(m)
    top = np.empty((0, m))  # running top-k (unordered) of each column
    for s in range(0, m, block):
        S = Q[s:s + block] @ C.T
        rq[s:s + block] = np.partition(S, m - k, axis=1)[:, m - k:].mean(axis=1)
        top = np.concatenate([top, S], axis=0)
        if top.shape[0] > k:
            top = np.partition(top, top.shape[0] - k, axis=0)[-k:]
    return rq, top.mean(axis=0)


def _pair_hits(Q: np.ndarray, C: np.ndarray, *, margin: bool, k: int, block: int) -> tuple[int, int, bool]:
    """Correct retrievals a -> b (rows) and b -> a (columns) of aligned unit rows Q (a) and C (b).

    Also returns whether a margin denominator had to be floored (see the module docstring).
    """
    m = Q.shape[0]
    if margin:
        rq, rc = _topk_means(Q, C, min(k, m), block)
        floored = bool(rq.min() + rc.min() <= 2 * _TINY)
    else:
        floored = False
    best = np.full(m, -np.inf)
    best_at = np.zeros(m, dtype=np.int64)
    hits_ab = 0
    for s in range(0, m, block):
        S = Q[s:s + block] @ C.T
        if margin:
            S /= np.maximum((rq[s:s + block, None] + rc[None, :]) / 2.0, _TINY)
        hits_ab += int((S.argmax(axis=1) == np.arange(s, s + S.shape[0])).sum())
        col_at = S.argmax(axis=0)
        col_max = S[col_at, np.arange(m)]
        better = col_max > best  # strict: an earlier block keeps a tie, as argmax over all rows would
        best[better] = col_max[better]
        best_at[better] = col_at[better] + s
    hits_ba = int((best_at == np.arange(m)).sum())
    return hits_ab, hits_ba, floored


def _retrieval(X: Any, langs: Any, groups: Any, *, center: str, scoring: str, k: int, block: int,
               langs_name: str) -> RetrievalResult:
    center = _check_choice("center", center, CENTERS)
    scoring = _check_choice("scoring", scoring, SCORINGS)
    k = check_int("k", k, 1)
    block = check_int("block", block, 1)
    A = as_rep(X, "X", copy=True, min_rows=2)
    par = _parallel(langs, groups, A.shape[0], langs_name)
    U = _unit_rows(A, par, center)
    L = len(par.langs)
    p = np.full((L, L), np.nan)
    n = np.zeros((L, L), dtype=np.int64)
    skipped, floored = [], []
    for a in range(L):
        for b in range(a + 1, L):
            ra, rb = par.pair(a, b)
            if ra.size == 0:
                skipped.append((par.langs[a], par.langs[b]))
                continue
            hab, hba, fl = _pair_hits(U[ra], U[rb], margin=scoring == "margin", k=k, block=block)
            if fl:
                floored.append((par.langs[a], par.langs[b]))
            n[a, b] = n[b, a] = ra.size
            p[a, b], p[b, a] = hab / ra.size, hba / ra.size
    if len(skipped) == L * (L - 1) // 2:
        raise DataError(f"no two languages share a parallel group ({L} languages: {list(par.langs)[:10]}), so "
                        "there is nothing to retrieve",
                        hint="groups must identify translations: the same verse in every language shares one group")
    _warn_skipped(skipped, "share no parallel group (nothing to retrieve)", stacklevel=3)
    if floored:
        msg = (f"ratio margin: the mean cosine to the k={k} nearest neighbours (capped at the shared groups) "
               f"is <= 0 for some items of {len(floored)} pair(s) (e.g. {floored[0]!r}); their denominators were "
               f"floored at {_TINY}, so the margin ranks those candidates by the sign of the cosine")
        logger.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)  # the caller of the public function
    p.flags.writeable = False
    n.flags.writeable = False
    return RetrievalResult(par.langs, p, n, center, scoring, k)


def retrieval_matrix(X: np.ndarray, langs: Any, groups: Any, *, center: str = "none", scoring: str = "cosine",
                     k: int = 4, block: int = 2048) -> RetrievalResult:
    """P@1 of parallel-sentence retrieval from every language to every other.

    For a query language a and a target language b, each item of a whose group has an item in b is
    a query; the candidates are b's items of those shared groups, so chance is 1 / (number of shared
    groups). The query is correct when its nearest candidate (by ``scoring``) is its translation.

    Parameters
    ----------
    X : array [n, d]
        One layer's pooled representation of every item.
    langs : array [n]
        Language of each item.
    groups : array [n]
        Parallel group of each item (the same verse in every language shares one); a language may
        have at most one item per group.
    center : {"none", "language"}, default "none"
        ``"language"`` subtracts each language's mean vector (over all its items) first.
    scoring : {"cosine", "margin"}, default "cosine"
        Plain cosine, or the ratio margin of Artetxe & Schwenk 2019 (see the module docstring).
    k : int, default 4
        Neighbourhood size of the margin (capped at the number of shared groups); unused for cosine.
    block : int, default 2048
        Queries scored at a time (memory O(block x shared groups) per pair).

    Returns
    -------
    RetrievalResult
        ``langs`` (sorted), ``p_at_1`` [L, L] (row: query language, column: target; NaN diagonal) and
        ``n`` [L, L] (queries per pair).

    Raises
    ------
    DataError
        On a bad ``X`` (shape, NaN), languages or groups that are not one per item, fewer than 2
        languages, missing groups, an item repeated in a (language, group), or no pair of languages
        sharing a group.
    ConfigError
        On an unknown ``center`` / ``scoring`` or a bad ``k`` / ``block``.

    Warns
    -----
    RuntimeWarning
        For language pairs with no shared group: their entries are NaN (and n = 0), the others are kept.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> S = rng.standard_normal((20, 8))
    >>> X = np.vstack([S, S + 0.01 * rng.standard_normal((20, 8))])
    >>> res = retrieval_matrix(X, ["en"] * 20 + ["fr"] * 20, np.tile(np.arange(20), 2))
    >>> res.langs, float(res.p_at_1[0, 1]), int(res.n[0, 1])
    (('en', 'fr'), 1.0, 20)
    """
    return _retrieval(X, langs, groups, center=center, scoring=scoring, k=k, block=block, langs_name="langs")


@register_measure("retrieval.p_at_1", kind="labelled", direction="higher_better", reads="languages")
@register_measure("retrieval.p_at_1.centered", kind="labelled", direction="higher_better", reads="languages",
                  center="language")
def retrieval_p_at_1(X: np.ndarray, y: Any, groups: Any, *, seed: int = 0, center: str = "none",
                     scoring: str = "cosine", k: int = 4, block: int = 2048) -> float:
    """Mean P@1 of parallel-sentence retrieval between languages (y: the languages), weighted by queries.

    The off-diagonal mean of :func:`retrieval_matrix`'s ``p_at_1``, each pair weighted by its number
    of queries (so it is total correct / total queries); pairs with no shared group are skipped.
    Registered as ``retrieval.p_at_1`` and, with ``center="language"``, ``retrieval.p_at_1.centered``.

    Parameters
    ----------
    X : array [n, d]
        One layer's pooled representation of every item.
    y : array [n]
        Language of each item.
    groups : array [n]
        Parallel group of each item.
    seed : int, default 0
        Unused (deterministic); every measure takes ``seed``.
    center, scoring, k, block
        As in :func:`retrieval_matrix`.

    Returns
    -------
    float
        In [0, 1].
    """
    res = _retrieval(X, y, groups, center=center, scoring=scoring, k=k, block=block, langs_name="y")
    return res.mean()


# ------------------------------------------------------------------------------------------ pairs, CKA
def pair_rows(langs: Any, groups: Any, a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of languages ``a`` and ``b`` in their shared groups, aligned by group.

    Parameters
    ----------
    langs, groups : array [n]
        Language and parallel group of each item (as in :func:`retrieval_matrix`).
    a, b : language
        Two languages of ``langs``.

    Returns
    -------
    rows_a, rows_b : ndarray of int64
        ``rows_a[i]`` and ``rows_b[i]`` are the items of a and b in the same group, by increasing
        group; empty when the two languages share no group.

    Raises
    ------
    DataError
        As :func:`retrieval_matrix` for bad languages / groups, and for ``a`` or ``b`` not in ``langs``.

    Examples
    --------
    >>> pair_rows(["en", "fr", "fr", "en"], [1, 2, 1, 2], "en", "fr")
    (array([0, 3]), array([2, 1]))
    """
    par = _parallel(langs, groups, np.shape(langs)[0] if np.ndim(langs) >= 1 else 0)
    return par.pair(_lang_index(par, a, "a"), _lang_index(par, b, "b"))


def cross_language_cka(X: np.ndarray, langs: Any, groups: Any, *, kernel: str = "linear",
                       debiased: bool = False) -> tuple[list[Any], np.ndarray]:
    """CKA between every pair of languages, on the items of their shared groups aligned by group.

    This measures **isomorphism, not alignment**: CKA is invariant to an orthogonal transform (and an
    isotropic scaling) of either side, so two languages whose spaces are rotated copies of each other
    score 1 while no verse lies near its translation. Whether translations meet in one space is
    retrieval's question (:func:`retrieval_matrix`, raw, language-centred or margin-scored). On the toy
    family the two disagree: cross-language CKA 0.818 (lm) vs 0.831 (mt) while P@1 goes 0.06 -> 0.56.

    Parameters
    ----------
    X : array [n, d]
        One layer's pooled representation of every item.
    langs, groups : array [n]
        Language and parallel group of each item (as in :func:`retrieval_matrix`).
    kernel, debiased
        As in :func:`~xlprobe.probes.cka.cka`.

    Returns
    -------
    langs : list
        The languages, sorted.
    matrix : ndarray [L, L]
        Symmetric, 1 on the diagonal; NaN for pairs with fewer shared groups than CKA needs (2, or 4
        when debiased), with a RuntimeWarning.

    Raises
    ------
    DataError
        As :func:`retrieval_matrix`, and when a language's shared items are constant (CKA undefined).
    ConfigError
        On an unknown kernel.
    """
    _check_choice("kernel", kernel, KERNELS)
    if not isinstance(debiased, (bool, np.bool_)):
        raise ConfigError(f"debiased must be True or False; got {debiased!r}")
    A = as_rep(X, "X", min_rows=2)
    par = _parallel(langs, groups, A.shape[0])
    L = len(par.langs)
    need = 4 if debiased else 2
    M = np.eye(L)
    skipped = []
    for a in range(L):
        for b in range(a + 1, L):
            ra, rb = par.pair(a, b)
            if ra.size < need:
                M[a, b] = M[b, a] = np.nan
                skipped.append((par.langs[a], par.langs[b]))
                continue
            try:
                M[a, b] = M[b, a] = cka(A[ra], A[rb], kernel=kernel, debiased=bool(debiased))
            except DataError as exc:
                raise DataError(f"CKA between {par.langs[a]!r} and {par.langs[b]!r} ({ra.size} shared groups): "
                                f"{exc.message}", hint=exc.hint) from exc
    _warn_skipped(skipped, f"share fewer than {need} parallel groups ({'debiased ' if debiased else ''}CKA "
                           f"needs {need})", stacklevel=2)
    return list(par.langs), M
