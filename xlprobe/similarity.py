"""The ``xlprobe similarity`` suite: CKA between checkpoints, pooled and language-centred, with intervals and a null.

Biased CKA has a floor that grows with d / n (independent random representations at n = 1200, d = 1024
score 0.46) and, pooled over languages, shared language offsets dominate it (0.988 for
representations that share only the offsets; 0.002 once each language is centred). So by default:

* **debiased** CKA (unbiased HSIC, Song et al. 2012; Nguyen, Raghu & Kornblith 2021), near 0 for
  independent representations at any d / n;
* two **centrings**, in the ``centring`` column: ``pooled`` (the representations as captured) and
  ``language`` (each language's mean subtracted on both sides: what the two share beyond where
  they put each language);
* for the same layer of two checkpoints (the cells the study reads), a **half-sampling interval**
  over parallel groups (:func:`xlprobe.probes.paired.half_sample_interval`: no duplicated rows, which
  the unbiased estimator would read as perfectly similar pairs) and a **null**: the same measure
  between the first representation and the second with its parallel groups permuted, language by
  language (each keeps its spectrum and its languages; their items no longer correspond),
  ``null_mean`` and ``null_high`` (its 97.5th percentile) over ``n_null`` permutations: pooled, the
  null keeps what shared language structure alone gives; centred per language, it is near 0;
* with **roles** (``base`` and ``control``): for every other checkpoint X and layer, the paired
  difference CKA(base, X) - CKA(base, control) (does X move away from the base more than the
  control does?), with a paired half-sampling interval and p-value corrected over layers, in the
  comparisons table (``similarity_comparisons.parquet``; ``df.attrs["comparisons"]``).

Every checkpoint pair, every layer pair (the full layer x layer table), on the items they share (by
record id; ``n`` says how many). Layers with no variance get NaN and a warning.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xlprobe.errors import DataError, StoreError

__all__ = ["similarity_run", "centre_by_language", "role_contrasts", "reference_contrasts", "CENTRINGS"]

log = logging.getLogger(__name__)

#: The centrings similarity_run reports.
CENTRINGS = ("pooled", "language")


def centre_by_language(X: np.ndarray, langs: np.ndarray) -> np.ndarray:
    """X with each language's mean row subtracted from that language's rows."""
    out = np.asarray(X, dtype=np.float64).copy()
    for lang in np.unique(langs):
        rows = langs == lang
        out[rows] -= out[rows].mean(axis=0)
    return out


def _shared_rows(ids_a: list[str], ids_b: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the items two datasets share (by record id), in the first dataset's order."""
    where = {rid: j for j, rid in enumerate(ids_b)}
    pairs = [(i, where[rid]) for i, rid in enumerate(ids_a) if rid in where]
    return (np.array([p[0] for p in pairs], np.int64), np.array([p[1] for p in pairs], np.int64))


def _null(stat: Any, X: np.ndarray, Y: np.ndarray, groups: np.ndarray, langs: np.ndarray, n_null: int, seed: int
          ) -> tuple[float, float]:
    """Mean and 97.5th percentile of ``stat(X, Y')``, Y' being Y with its parallel groups permuted.

    Row (group g, language l) of Y' is Y's row (pi(g), l): each side keeps its spectrum and its
    languages, the items no longer correspond. A row whose (pi(g), l) is missing (incomplete group)
    takes a random row of its language.
    """
    rng = np.random.default_rng(seed)
    names = np.unique(groups)
    where = {(g, lang): i for i, (g, lang) in enumerate(zip(groups, langs))}
    by_lang = {lang: np.flatnonzero(langs == lang) for lang in np.unique(langs)}
    values = []
    for _ in range(n_null):
        pi = dict(zip(names, rng.permutation(names)))
        take = np.array([where.get((pi[g], lang), -1) for g, lang in zip(groups, langs)])
        for i in np.flatnonzero(take < 0):
            take[i] = rng.choice(by_lang[langs[i]])
        values.append(float(stat(X, Y[take])))
    v = np.asarray(values)
    v = v[np.isfinite(v)]
    return (float(v.mean()), float(np.quantile(v, 0.975))) if v.size else (float("nan"), float("nan"))


class _Side:
    """One checkpoint's layers on one dataset, with the records' languages and parallel groups."""

    def __init__(self, layers: dict[str, np.ndarray], ids: list[str], langs: np.ndarray, groups: np.ndarray):
        self.layers, self.ids, self.langs, self.groups = layers, ids, langs, groups

    def take(self, rows: np.ndarray, centring: str) -> dict[str, np.ndarray]:
        """Every layer on ``rows``, centred per language when asked."""
        langs = self.langs[rows]
        return {k: (centre_by_language(v[rows], langs) if centring == "language" else v[rows])
                for k, v in self.layers.items()}


def _load(store: Any, pooling: str) -> dict[tuple[str, str], _Side]:
    """``(checkpoint, dataset) -> _Side`` for every checkpoint captured with ``pooling``."""
    from xlprobe.runs import checkpoint_names, labels_for
    from xlprobe.tasks.splits import group_ids

    keys = store.keys(pooling=pooling)
    if not keys:
        raise StoreError(f"the store has no shards with pooling {pooling!r}", hint="capture with --pooling mean")
    names = checkpoint_names(store)
    meta: dict[str, tuple] = {}
    sides: dict[tuple[str, str], _Side] = {}
    for key in keys:
        if key.data not in meta:
            data = store.records(key.data)
            meta[key.data] = ([r.id for r in data], labels_for(data, "language"), group_ids(data, "group"))
        side = sides.setdefault((names[key.model], key.data), _Side({}, *meta[key.data]))
        side.layers[store.entry(key).get("info", {}).get("alias") or key.point] = store.read(key)
    return sides


def similarity_run(run_dir: str | Path, *, pooling: str = "mean", kernel: str = "linear", debiased: bool = True,
                   centrings: Sequence[str] = CENTRINGS, n_half: int = 100, n_null: int = 20,
                   base: str | None = None, control: str | None = None, correction: str = "holm", seed: int = 0,
                   out: str | Path | None = None) -> pd.DataFrame:
    """Layer x layer CKA between every pair of checkpoints, with intervals, a null and role contrasts.

    Parameters
    ----------
    run_dir : path
        The activation store.
    pooling, kernel : str
        Which shards; ``linear`` or ``rbf`` kernel.
    debiased : bool, default True
        Unbiased HSIC (``cka.linear.debiased``); False for the biased estimate of Kornblith et al.
    centrings : sequence of {"pooled", "language"}
    n_half, n_null : int
        Half-samples behind the same-layer intervals and the role contrasts; permutations of the null
        (0: none).
    base, control : str, optional
        Roles; with both, the contrasts CKA(base, X) - CKA(base, control) per layer.
    correction : {"holm", "bh", "none"}
    seed : int
    out : path, optional
        Folder for ``similarity.parquet`` / ``.csv`` (default ``run_dir``).
    """
    from xlprobe.comparisons import resolve_checkpoint
    from xlprobe.probe_suite import is_control_rep
    from xlprobe.probes.cka import cka, cka_matrix
    from xlprobe.probes.paired import adjust_pvalues
    from xlprobe.registry import get_measure
    from xlprobe.results import make_row, results_frame, write_results
    from xlprobe.runs import open_store

    measure = get_measure(f"cka.{kernel}" + (".debiased" if debiased else "")).name  # unknown kernel: ConfigError
    adjust_pvalues([], correction)
    bad = [c for c in centrings if c not in CENTRINGS]
    if bad or not centrings:
        raise DataError(f"centrings must be among {list(CENTRINGS)}; got {list(centrings)}")
    store_path = Path(run_dir)
    sides = _load(open_store(store_path), pooling)
    names = [c for c in dict.fromkeys(c for c, _ in sides) if not is_control_rep(c)]
    base, control = resolve_checkpoint(base, names, "base"), resolve_checkpoint(control, names, "control")

    def stat(X: np.ndarray, Y: np.ndarray) -> float:
        return cka(X, Y, kernel=kernel, debiased=debiased)

    runs = list(sides)
    rows, apart = [], []
    for i, (a, da) in enumerate(runs):
        for b, db in runs[i:]:
            if a == b and da != db:
                continue  # one checkpoint on two datasets: not a comparison
            rows_a, rows_b = _shared_rows(sides[a, da].ids, sides[b, db].ids)
            if rows_a.size == 0:
                apart.append((a, b))
                continue
            if da != db:
                log.info("%s vs %s: %d shared items (of %d and %d)", a, b, rows_a.size, len(sides[a, da].ids),
                         len(sides[b, db].ids))
            groups = sides[a, da].groups[rows_a]
            for centring in centrings:
                reps_a, reps_b = sides[a, da].take(rows_a, centring), sides[b, db].take(rows_b, centring)
                table = cka_matrix(reps_a, reps_b, kernel=kernel, debiased=debiased, constant="nan")
                for name in table.attrs["constant"]:
                    log.warning("%s vs %s: %s not computed for %s: no variance across rows (CKA undefined)",
                                a, b, measure, name.replace("reps_a", a).replace("reps_b", b))
                for la in table.index:
                    for lb in table.columns:
                        value = float(table.loc[la, lb])
                        extra: dict[str, Any] = {}
                        if a != b and la == lb and np.isfinite(value):
                            extra = _diagonal(stat, reps_a[la], reps_b[lb], groups, sides[a, da].langs[rows_a],
                                              n_half, n_null, seed)
                        rows.append(make_row(checkpoint=a, layer=la, ref_checkpoint=b, ref_layer=lb, measure=measure,
                                             value=value, n=int(rows_a.size), data=da, ref_data=db,
                                             centring=centring, seed=seed, **extra))
    _check_apart(rows, apart)
    df = results_frame(rows)
    write_results(df, out or store_path, name="similarity")
    comparisons = pd.DataFrame()
    if base is not None and control is not None:
        comparisons = role_contrasts(sides, base, control, centrings=centrings, stat=stat, measure=measure,
                                     n_half=n_half, correction=correction, seed=seed)
        if len(comparisons):
            write_results(comparisons, out or store_path, name="similarity_comparisons")
    df.attrs["comparisons"] = comparisons
    return df


def _diagonal(stat: Any, X: np.ndarray, Y: np.ndarray, groups: np.ndarray, langs: np.ndarray, n_half: int,
              n_null: int, seed: int) -> dict[str, Any]:
    """Interval and null columns of a same-layer cell."""
    from xlprobe.probes.paired import half_sample_interval

    extra: dict[str, Any] = {}
    if n_half:
        _, lo, hi = half_sample_interval(stat, X, Y, groups=groups, n_half=n_half, seed=seed)
        extra.update(ci_low=lo, ci_high=hi)
    if n_null:
        extra["null_mean"], extra["null_high"] = _null(stat, X, Y, groups, langs, n_null, seed)
    return extra


def _check_apart(rows: list[dict], apart: list[tuple[str, str]]) -> None:
    """Error when no two checkpoints share an item; a warning per pair that shares none."""
    compared = {(r["checkpoint"], r["ref_checkpoint"]) for r in rows}
    never = sorted({p for p in apart if p not in compared})
    if never and not any(a != b for a, b in compared):
        raise DataError(f"no two checkpoints of the store were captured on shared items ({never[0][0]} and "
                        f"{never[0][1]} share none)", hint="capture every checkpoint with the same --data and --limit")
    for a, b in never:
        log.warning("%s and %s share no captured item: not compared", a, b)


def role_contrasts(sides: dict[tuple[str, str], Any], base: str, control: str, *, centrings: Sequence[str],
                   stat: Any, measure: str, n_half: int, correction: str, seed: int,
                   base_layer: str | None = None) -> pd.DataFrame:
    """Rows CKA(base, X) - CKA(base, control) per layer for every other checkpoint X, paired by half-sampling.

    ``base_layer``: compare every layer of X and of the control with this one layer of the base (an
    anchor of another architecture, e.g. a reference model's top layer; ``ref_layer`` says which);
    by default each layer with the base's layer of the same name.
    """
    from xlprobe.probe_suite import is_control_rep
    from xlprobe.probes.paired import adjust_pvalues, paired_set_stats
    from xlprobe.results import make_row, results_frame

    first = {}
    for c, d in sides:
        first.setdefault(c, sides[c, d])
    rows = []
    for x in [c for c in first if c not in (base, control) and not is_control_rep(c)]:
        b, ctl, other = first[base], first[control], first[x]
        ids = [i for i in b.ids if i in set(other.ids) and i in set(ctl.ids)]
        if len(ids) < 4:
            log.warning("%s, %s and %s share %d items: no role contrast", base, x, control, len(ids))
            continue
        pos = [{rid: j for j, rid in enumerate(s.ids)} for s in (b, other, ctl)]
        rows_b, rows_x, rows_c = (np.array([p[i] for i in ids]) for p in pos)
        layers = [la for la in other.layers if la in ctl.layers and (base_layer or la) in b.layers]
        for centring in centrings:
            B, X, C = b.take(rows_b, centring), other.take(rows_x, centring), ctl.take(rows_c, centring)
            B = {la: B[base_layer or la] for la in layers}
            stats = paired_set_stats(stat, [(B[la], X[la]) for la in layers], [(B[la], C[la]) for la in layers],
                                     b.groups[rows_b], n_half=n_half, seed=seed)
            p_adj = adjust_pvalues(stats.p_value, correction)
            family = int(np.isfinite(stats.p_value).sum())
            rows += [make_row(checkpoint=x, ref_checkpoint=control, layer=la, measure=measure, n=len(ids),
                              value=float(stats.difference[i]), ci_low=float(stats.low[i]),
                              ci_high=float(stats.high[i]), p_value=float(stats.p_value[i]),
                              p_adjusted=float(p_adj[i]), correction=f"{correction} over {family} layers",
                              test=stats.test, contrast=f"CKA({base}, X) - CKA({base}, {control})", base=base,
                              centring=centring, seed=seed, **({"ref_layer": base_layer} if base_layer else {}))
                     for i, la in enumerate(layers)]
    return results_frame(rows) if rows else pd.DataFrame()


def reference_contrasts(run_dir: str | Path, reference: str, control: str, *, pooling: str = "mean",
                        kernel: str = "linear", debiased: bool = True, centrings: Sequence[str] = ("pooled",),
                        n_half: int = 100, correction: str = "holm", seed: int = 0) -> pd.DataFrame:
    """CKA(reference top layer, X) - CKA(reference top layer, control) per layer of every other checkpoint.

    The paper's "MT models are less similar to other multilingual models" as a paired test: the
    reference (an encoder of another family, e.g. XLM-R) is read at its last captured layer (depth
    order), which every layer of X and of the control is compared with on the same items.
    """
    from xlprobe.comparisons import resolve_checkpoint
    from xlprobe.probes.cka import cka
    from xlprobe.registry import get_measure
    from xlprobe.runs import open_store

    measure = get_measure(f"cka.{kernel}" + (".debiased" if debiased else "")).name
    sides = _load(open_store(Path(run_dir)), pooling)
    names = list(dict.fromkeys(c for c, _ in sides))
    reference, control = resolve_checkpoint(reference, names, "reference"), resolve_checkpoint(control, names, "control")
    ref_side = next(v for (c, _), v in sides.items() if c == reference)
    top = _top_layer(list(ref_side.layers))
    return role_contrasts(sides, reference, control, centrings=centrings, measure=measure, n_half=n_half,
                          correction=correction, seed=seed, base_layer=top,
                          stat=lambda X, Y: cka(X, Y, kernel=kernel, debiased=debiased))


def _top_layer(layers: list[str]) -> str:
    """The deepest block of a checkpoint's layers (``encoder.11`` over ``encoder.final_norm``), else the last."""
    blocks = [la for la in layers if la.rsplit(".", 1)[-1].isdigit()]
    return max(blocks, key=lambda la: (la.startswith("decoder"), int(la.rsplit(".", 1)[-1]))) if blocks else layers[-1]
