"""Cross-lingual alignment by parallel-sentence retrieval: P@1 raw, language-centred or margin-scored.

Items have a language and a parallel group (see :mod:`xlprobe.probes.parallel`). Retrieval measures
**alignment**: whether an item lies nearest its translation in the shared space. It changes under a
rotation of one language, where cross-language CKA (:mod:`xlprobe.probes.alignment`, a measure of
isomorphism) does not.

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

**Per item** (:func:`retrieval_hits`): a query item i scores the number of other languages in which
its translation is the retrieved candidate, scaled as :func:`~xlprobe.probes.parallel.per_item_scores`
says, so the plain mean of the n scores is the registered P@1 (total correct / total queries over
every ordered pair of languages): on fully parallel data the score is the fraction of the other
languages in which i retrieves its translation. The registered measures compute through it.

Registered: ``retrieval.p_at_1`` (cosine), ``retrieval.p_at_1.centered`` (cosine after
``center="language"``) and ``retrieval.p_at_1.margin`` (ratio margin, k = 4, no centring).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from xlprobe.errors import DataError
from xlprobe.probes.arrays import as_rep, check_int
from xlprobe.probes.parallel import (
    CENTERS,
    ParallelIndex,
    check_choice,
    language_unit_rows,
    parallel_index,
    per_item_scores,
    warn_skipped,
)
from xlprobe.registry import register_measure

__all__ = ["RetrievalResult", "retrieval_matrix", "retrieval_p_at_1", "retrieval_hits", "CENTERS", "SCORINGS"]


#: Accepted values of ``scoring``.
SCORINGS = ("cosine", "margin")
#: Floor of the ratio margin's denominator (see the module docstring).
_TINY = 1e-12


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



def _pair_hits(Q: np.ndarray, C: np.ndarray, *, margin: bool, k: int,
               block: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Which queries retrieve their translation, a -> b (rows) and b -> a (columns), of aligned unit rows Q, C.

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
    hit_ab = np.zeros(m, dtype=bool)
    for s in range(0, m, block):
        S = Q[s:s + block] @ C.T
        if margin:
            S /= np.maximum((rq[s:s + block, None] + rc[None, :]) / 2.0, _TINY)
        hit_ab[s:s + S.shape[0]] = S.argmax(axis=1) == np.arange(s, s + S.shape[0])
        col_at = S.argmax(axis=0)
        col_max = S[col_at, np.arange(m)]
        better = col_max > best  # strict: an earlier block keeps a tie, as argmax over all rows would
        best[better] = col_max[better]
        best_at[better] = col_at[better] + s
    return hit_ab, best_at == np.arange(m), floored


def _warn_floored(floored: list[tuple[Any, Any]], k: int) -> None:
    """Warn (RuntimeWarning, at the public function's caller: once per calling line, not once per layer)
    about floored margin denominators."""
    if floored:
        msg = (f"ratio margin: the mean cosine to the k={k} nearest neighbours (capped at the shared groups) "
               f"is <= 0 for some items of {len(floored)} pair(s) (e.g. {floored[0]!r}); their denominators were "
               f"floored at {_TINY}, so the margin ranks those candidates by the sign of the cosine")
        warnings.warn(msg, RuntimeWarning, stacklevel=4)


def _check_options(center: str, scoring: str, k: int, block: int) -> tuple[str, str, int, int]:
    """The retrieval options, checked."""
    return (check_choice("center", center, CENTERS), check_choice("scoring", scoring, SCORINGS),
            check_int("k", k, 1), check_int("block", block, 1))


def _retrieve(X: Any, langs: Any, groups: Any, *, center: str, scoring: str, k: int, block: int,
              langs_name: str = "langs") -> tuple[RetrievalResult, np.ndarray, np.ndarray]:
    """The P@1 matrix, and per item its number of correct retrievals and of target languages."""
    center, scoring, k, block = _check_options(center, scoring, k, block)
    A = as_rep(X, "X", copy=True, min_rows=2)
    par = parallel_index(langs, groups, A.shape[0], langs_name)
    U = language_unit_rows(A, par, center)
    L = len(par.langs)
    p, n = np.full((L, L), np.nan), np.zeros((L, L), dtype=np.int64)
    correct, targets = np.zeros(A.shape[0]), np.zeros(A.shape[0])
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
            p[a, b], p[b, a] = hab.mean(), hba.mean()
            correct[ra] += hab
            correct[rb] += hba
            targets[ra] += 1
            targets[rb] += 1
    _check_some_pair(par, skipped)
    warn_skipped(skipped, "share no parallel group (nothing to retrieve)", stacklevel=3)
    _warn_floored(floored, k)
    p.flags.writeable = False
    n.flags.writeable = False
    return RetrievalResult(par.langs, p, n, center, scoring, k), correct, targets


def _check_some_pair(par: ParallelIndex, skipped: list[tuple[Any, Any]]) -> None:
    """DataError when no two languages share a parallel group."""
    L = len(par.langs)
    if len(skipped) == L * (L - 1) // 2:
        raise DataError(f"no two languages share a parallel group ({L} languages: {list(par.langs)[:10]}), so "
                        "there is nothing to retrieve",
                        hint="groups must identify translations: the same verse in every language shares one group")


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
    return _retrieve(X, langs, groups, center=center, scoring=scoring, k=k, block=block)[0]


def retrieval_hits(X: np.ndarray, langs: Any, groups: Any, *, center: str = "none", scoring: str = "cosine",
                   k: int = 4, block: int = 2048) -> np.ndarray:
    """Per-item retrieval scores whose plain mean is the registered P@1: the unit of paired item-level tests.

    Item i scores c_i * n / T: c_i the number of other languages in which i, as a query, retrieves its
    translation, T the total number of (query, target language) pairs over all items. So
    ``retrieval_hits(...).mean()`` equals :func:`retrieval_p_at_1` with the same options (total correct
    / total queries over every ordered pair of languages, each pair weighted by its shared groups).
    On fully parallel data (every group in every one of the L languages) T = n (L - 1) and the score is
    exactly the fraction c_i / (L - 1) of the other languages in which i retrieves its translation;
    with partial coverage it is that fraction times t_i / mean(t) (t_i: languages holding i's
    translation), and an item with no translation scores 0.

    Parameters
    ----------
    X, langs, groups, center, scoring, k, block
        As in :func:`retrieval_matrix`.

    Returns
    -------
    ndarray [n], float64
        One score per row of ``X``, in the order of the rows.

    Raises
    ------
    DataError, ConfigError
        As :func:`retrieval_matrix`.
    """
    _, correct, targets = _retrieve(X, langs, groups, center=center, scoring=scoring, k=k, block=block)
    return per_item_scores(correct, targets)


@register_measure("retrieval.p_at_1", kind="labelled", direction="higher_better", reads="languages")
@register_measure("retrieval.p_at_1.centered", kind="labelled", direction="higher_better", reads="languages",
                  center="language")
@register_measure("retrieval.p_at_1.margin", kind="labelled", direction="higher_better", reads="languages",
                  scoring="margin")
def retrieval_p_at_1(X: np.ndarray, y: Any, groups: Any, *, seed: int = 0, center: str = "none",
                     scoring: str = "cosine", k: int = 4, block: int = 2048) -> float:
    """Mean P@1 of parallel-sentence retrieval between languages (y: the languages), weighted by queries.

    Total correct / total queries over every ordered pair of languages: the off-diagonal mean of
    :func:`retrieval_matrix`'s ``p_at_1``, each pair weighted by its number of queries, and the mean
    of :func:`retrieval_hits` (computed through it); pairs with no shared group are skipped.
    Registered as ``retrieval.p_at_1`` (cosine), ``retrieval.p_at_1.centered`` (``center="language"``)
    and ``retrieval.p_at_1.margin`` (``scoring="margin"``: Artetxe & Schwenk's ratio margin, k = 4).

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
    _, correct, targets = _retrieve(X, y, groups, center=center, scoring=scoring, k=k, block=block, langs_name="y")
    return float(np.mean(per_item_scores(correct, targets)))
