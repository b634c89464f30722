"""One-line findings generated from a run's numbers, for the report: no sentence without its numbers.

Each function reads tidy tables (results, comparisons) and returns :class:`Finding` objects, or nothing
when the table lacks what the sentence needs (a report never says what its run did not measure). The
sentences are filled from the rows they cite: the value, its interval, the corrected p-value and the
test that gave it. The paper's claims are in :mod:`xlprobe.claims`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

__all__ = ["Finding", "fmt_interval", "contrast_finding", "controls_table", "cka_finding", "weights_finding",
           "attribution_finding", "preferred_contrast", "ALPHA"]

#: Significance level of every "significant" in a finding (on p-values corrected as the row says).
ALPHA = 0.05


@dataclass(frozen=True)
class Finding:
    """A sentence and the rows behind it: ``topic`` (a measure or claim), ``text``, ``evidence`` lines."""

    topic: str
    text: str
    evidence: tuple[str, ...] = field(default_factory=tuple)
    verdict: str | None = None


def _num(x: float, digits: int = 3) -> str:
    """A signed-aware compact number ("0.123", "-0.045", "n/a" for NaN)."""
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def fmt_interval(row: pd.Series, digits: int = 3, signed: bool = False) -> str:
    """``value [low, high]`` of a row (the interval left out when there is none)."""
    f = (lambda v: f"{v:+.{digits}f}") if signed else (lambda v: _num(v, digits))
    text = f(float(row["value"]))
    lo, hi = row.get("ci_low"), row.get("ci_high")
    if lo is not None and hi is not None and not (pd.isna(lo) or pd.isna(hi)):
        text += f" [{f(float(lo))}, {f(float(hi))}]"
    return text


def _p(row: pd.Series) -> str:
    """``p = 0.003 (holm over 5 layers, sign-flip ...)`` from a comparison row."""
    p = row.get("p_adjusted", float("nan"))
    p = row.get("p_value", float("nan")) if pd.isna(p) else p
    what = ", ".join(str(row[c]) for c in ("correction", "test") if c in row and not pd.isna(row[c]))
    shown = "p < 0.0001" if p < 1e-4 else f"p = {p:.2g}"
    return shown + (f" ({what})" if what else "")


def preferred_contrast(comparisons: pd.DataFrame, measure: str) -> str | None:
    """The contrast a finding on ``measure`` reads: against the control when there is one, else the base."""
    rows = comparisons[comparisons.measure == measure] if len(comparisons) else comparisons
    if rows.empty or "contrast" not in rows:
        return None
    have = list(dict.fromkeys(rows.contrast.dropna()))
    for want in ("vs control", "vs base"):
        if want in have:
            return want
    return have[0] if have else None


def _main_rows(comparisons: pd.DataFrame, measure: str, contrast: str | None) -> pd.DataFrame:
    """The measure's comparison rows under one contrast, pooled centring only (the language one is its control)."""
    rows = comparisons[(comparisons.measure == measure) & (comparisons.contrast == contrast)]
    if "centring" in rows and rows.centring.notna().any():
        rows = rows[rows.centring.isna() | (rows.centring == "pooled")]
    return rows[rows.value.notna()]


def contrast_finding(comparisons: pd.DataFrame, measure: str, contrast: str | None = None) -> Finding | None:
    """Where ``measure`` changes most between checkpoints (value, interval, corrected p) and how often it does."""
    contrast = contrast or preferred_contrast(comparisons, measure)
    if contrast is None:
        return None
    rows = _main_rows(comparisons, measure, contrast)
    if rows.empty:
        return None
    top = rows.loc[rows.value.abs().idxmax()]
    sig = rows[rows.p_adjusted < ALPHA] if "p_adjusted" in rows else rows.iloc[:0]
    ref = top.get("ref_checkpoint")
    text = (f"{measure}: the largest change against {ref} is {top.checkpoint} at {top.layer}, "
            f"{fmt_interval(top, signed=True)}, {_p(top)}; {len(sig)} of {len(rows)} (checkpoint, layer) "
            f"differences are significant at {ALPHA}")
    evidence = []
    for name, g in rows.groupby("checkpoint", sort=False):
        s = g[g.p_adjusted < ALPHA] if "p_adjusted" in g else g.iloc[:0]
        best = g.loc[g.value.abs().idxmax()]
        evidence.append(f"{name} - {ref}: largest at {best.layer} {fmt_interval(best, signed=True)}; "
                        f"significant at {len(s)} of {len(g)} layers"
                        + (f" ({', '.join(s.layer)})" if 0 < len(s) < len(g) else ""))
    return Finding(topic=measure, text=text, evidence=tuple(evidence))


def controls_table(results: pd.DataFrame, measure: str, layer: str) -> pd.DataFrame:
    """At one layer: each checkpoint's value [interval] beside its control rows' (shuffled labels, random-init...).

    A measure with a row per language (transfer) gets a column per language instead of one value.
    """
    rows = results[(results.measure == measure) & (results.layer == layer)]
    if rows.empty:
        return pd.DataFrame()
    if "task" in rows and rows.task.notna().any():
        rows = rows[rows.task.isna() | (rows.task == rows.task.dropna().iloc[0])]
    control = rows.control.fillna("") if "control" in rows else pd.Series("", index=rows.index)
    per_lang = "lang" in rows and rows[control == ""].lang.nunique() > 1
    kind = [c or (str(lg) if per_lang else measure)
            for c, lg in zip(control, rows.lang if per_lang else [""] * len(rows))]
    digits = 2 if per_lang else 3
    cells = rows.assign(kind=kind, cell=[fmt_interval(r, digits=digits) for _, r in rows.iterrows()])
    cells = cells.drop_duplicates(["checkpoint", "kind"])
    table = cells.pivot(index="checkpoint", columns="kind", values="cell")
    main = [k for k, c in dict.fromkeys(zip(kind, control)) if not c]
    table = table[main + sorted(c for c in table.columns if c not in main)]
    table = table.reindex(list(dict.fromkeys(rows.checkpoint))).fillna("")
    if "chance" in rows and rows.chance.notna().any():  # a uniform guess's value, beside the learned controls
        table["chance"] = rows.groupby("checkpoint").chance.first().reindex(table.index).map(
            lambda v: "" if pd.isna(v) else f"{v:.{digits}f}")
    table.columns.name = None
    return table


def cka_finding(results: pd.DataFrame, base: str, layer: str) -> Finding | None:
    """CKA of every checkpoint to the base at one layer (same layer both sides, pooled centring), lowest first."""
    rows = results[results.measure.str.startswith("cka") & (results.layer == layer)]
    rows = rows[(rows.get("ref_layer", rows.layer) == layer)]
    if "centring" in rows:
        rows = rows[rows.centring.isna() | (rows.centring == "pooled")]
    pairs = pd.concat([rows[(rows.checkpoint == base) & (rows.ref_checkpoint != base)].assign(other=lambda d: d.ref_checkpoint),
                       rows[(rows.ref_checkpoint == base) & (rows.checkpoint != base)].assign(other=lambda d: d.checkpoint)])
    pairs = pairs.drop_duplicates("other").sort_values("value")
    if pairs.empty:
        return None
    parts = [f"{r.other} {fmt_interval(r, digits=2)}" for _, r in pairs.iterrows()]
    null = pairs.null_high.dropna() if "null_high" in pairs else pd.Series(dtype=float)
    tail = f"; permutation null at most {null.max():.2f}" if len(null) else ""
    return Finding(topic=str(pairs.measure.iloc[0]),
                   text=f"{pairs.measure.iloc[0]} to {base} at {layer}, lowest first: " + ", ".join(parts) + tail)


def weights_finding(rows: pd.DataFrame, control: str | None = None) -> Finding | None:
    """Which weight matrix each checkpoint moved most (||B-A|| / ||A||), and most beyond the control's move.

    Matrices only: biases and norms are left out (a key bias gets no gradient and stays near zero, so
    its relative change is a ratio of two tiny numbers).
    """
    rows = rows[rows.measure == "weights.rel_change"] if len(rows) else rows
    if "param" in rows:
        rows = rows[rows.param.str.endswith("weight") & ~rows.module.isin(["layer_norm", "positions"])]
    if rows.empty:
        return None
    key = ["layer", "module"] if "module" in rows else ["layer"]
    ctl = rows[rows.checkpoint == control].set_index(key).value if control else pd.Series(dtype=float)
    ctl = ctl[~ctl.index.duplicated()]
    parts = []
    for name, g in rows.groupby("checkpoint", sort=False):
        top = g.loc[g.value.idxmax()]
        text = f"{name}: {' '.join(str(top[k]) for k in key)} {top.value:.2f}"
        if name != control and len(ctl):
            beyond = g.set_index(key).value - ctl.reindex(g.set_index(key).index).to_numpy()
            if beyond.notna().any():
                at = beyond.idxmax()
                text += f", beyond {control} most {' '.join(at) if isinstance(at, tuple) else at} {beyond.max():+.2f}"
        parts.append(text)
    ref = rows.ref_checkpoint.dropna().iloc[0] if "ref_checkpoint" in rows else "the base"
    return Finding(topic="weights.rel_change",
                   text=f"largest relative change of a weight matrix against {ref}: " + "; ".join(parts))


def attribution_finding(rows: pd.DataFrame, top: int = 3) -> list[Finding]:
    """Per (checkpoint, reference): the metric's change, the groups carrying most of it, the completeness error."""
    rows = rows[rows.measure == "attribution.path"] if len(rows) else rows
    out = []
    for (name, ref), g in rows.groupby(["checkpoint", "ref_checkpoint"], sort=False):
        ends = [g[c].iloc[0] if c in g else float("nan") for c in ("metric_a", "metric_b")]
        change = float(ends[1] - ends[0]) if not any(pd.isna(e) for e in ends) else float(g.value.sum())
        g = g.reindex(g.value.abs().sort_values(ascending=False).index)
        label = g["group"] if "group" in g else g.layer
        shares = [f"{lab} {v / change:.0%}" if change else f"{lab} {v:+.3g}" for lab, v in zip(label[:top], g.value[:top])]
        delta = float(g.delta.iloc[0]) if "delta" in g and not pd.isna(g.delta.iloc[0]) else float("nan")
        rel = f" ({abs(delta / change):.1%} of the change)" if change and not math.isnan(delta) else ""
        out.append(Finding(topic="attribution.path",
                           text=f"{ref} -> {name}: metric change {change:+.4f}, mostly {', '.join(shares)}; "
                                f"completeness error {_num(delta, 5)}{rel}"))
    return out
