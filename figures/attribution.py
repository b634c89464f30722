"""Attribution bars: which parameter groups account for a metric's change between two checkpoints.

:func:`attribution_bars` reads ``attribution.path`` rows (:meth:`xlprobe.probes.attribution.
ParameterPathAttribution.attribute`: a row per parameter group with ``group``, ``grouping``, ``value``
= the group's integrated-gradients attribution, whose sum over groups is the change M_b - M_a,
``share`` = value / change, ``delta`` = the completeness error |sum - change|, ``metric_a`` /
``metric_b`` the metric at both ends) and draws one panel per (checkpoint, ref_checkpoint) pair: a
horizontal bar per group, the ``top`` groups by |value| largest first, the others summed into one grey
"other" bar, positive attributions blue and negative vermillion (Okabe-Ito), the total change and the
completeness error in the panel's title. Groups at exactly 0 (parameters the metric never reads, e.g. the
decoder for an encoder-layer metric) are left out and counted under the axis. Panels share the x axis,
so that pairs compare.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from xlprobe.errors import DataError
from xlprobe.figures.common import check_columns

__all__ = ["attribution_bars", "top_groups"]

#: Columns the attribution rows must have.
NEEDED = ("checkpoint", "ref_checkpoint", "measure", "value", "delta", "group")
_UP, _DOWN, _OTHER = "#0072B2", "#D55E00", "#999999"


def top_groups(rows: pd.DataFrame, top: int = 12) -> pd.DataFrame:
    """The ``top`` groups of one pair by |value| (largest first) and an ``other`` row summing the rest."""
    if top < 1:
        raise DataError(f"top must be at least 1; got {top}")
    ranked = rows.assign(_abs=rows.value.abs()).sort_values(["_abs", "group"], ascending=[False, True])
    head = ranked.head(top)[["group", "value"]]
    rest = ranked.iloc[top:]
    if not rest.empty:
        head = pd.concat([head, pd.DataFrame({"group": [f"other ({len(rest)} groups)"],
                                              "value": [float(rest.value.sum())]})], ignore_index=True)
    return head.reset_index(drop=True)


def _pairs(rows: pd.DataFrame) -> list[tuple[str, str]]:
    """The (checkpoint, ref_checkpoint) pairs, one group row each, or DataError naming the filter."""
    dup = rows.duplicated(["checkpoint", "ref_checkpoint", "group"])
    if dup.any():
        first = rows[dup].iloc[0]
        several = [c for c in ("grouping", "metric", "task", "read_point", "train_lang") if c in rows and rows[c].nunique() > 1]
        raise DataError(f"attribution rows of {first.checkpoint} vs {first.ref_checkpoint} have group "
                        f"{first.group!r} more than once" + (f" (several {', '.join(several)})" if several else ""),
                        hint="filter the table to one grouping and one metric, e.g. rows[rows.grouping == 'layer']")
    return list(dict.fromkeys(zip(rows.checkpoint, rows.ref_checkpoint)))


def _title(a: str, b: str, r: pd.DataFrame) -> str:
    """Pair, total change (with the metric's end values when the rows have them), completeness error."""
    total = float(r.value.sum())
    ends = ""
    if {"metric_a", "metric_b"} <= set(r.columns) and r.metric_a.notna().any():
        ma, mb = float(r.metric_a.iloc[0]), float(r.metric_b.iloc[0])
        total = mb - ma
        ends = f" ({ma:.3f} \u2192 {mb:.3f})"
    delta = float(r.delta.iloc[0])
    rel = f", {100 * delta / abs(total):.2g} % of it" if total else ""
    return f"{a} vs {b}\nchange {total:+.4f}{ends}\ncompleteness error {delta:.1e}{rel}"


def attribution_bars(rows: pd.DataFrame, top: int = 12, *, order: Sequence[str] | None = None,
                     title: str | None = None, ncols: int = 2, width: float = 4.6, sharex: bool = True) -> Any:
    """One panel per (checkpoint, reference): a horizontal bar per parameter group, the rest as "other".

    Parameters
    ----------
    rows : DataFrame
        ``attribution.path`` rows (other measures are left out) of one grouping and one metric.
    top : int
        Groups drawn per panel, by |attribution|; the others are summed into one "other" bar.
    order : sequence of str, optional
        Checkpoints in panel order (a run's list); by default the table's order.
    title : str, optional
        The figure's title.
    ncols : int
        Panels per row.
    width : float
        Inches per panel.
    sharex : bool
        One x scale for every panel (pairs compare; a small change then has short bars).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    check_columns(rows, NEEDED, "attribution table",
                   "pass the rows of ParameterPathAttribution.attribute (measure attribution.path)")
    rows = rows[rows.measure == "attribution.path"]
    if rows.empty:
        raise DataError("no rows of measure 'attribution.path'",
                        hint="attribute a metric's change first: ParameterPathAttribution(metric).attribute(a, b)")
    pairs = _pairs(rows)
    rank = {c: i for i, c in enumerate(dict.fromkeys([*(order or ()), *rows.checkpoint]))}
    pairs.sort(key=lambda p: rank[p[0]])
    pair_rows = {p: rows[(rows.checkpoint == p[0]) & (rows.ref_checkpoint == p[1])] for p in pairs}
    # groups at exactly 0 hold parameters the metric never reads (the decoder, for an encoder metric)
    unused = {p: int((r.value == 0).sum()) if (r.value != 0).any() else 0 for p, r in pair_rows.items()}
    bars = {p: top_groups(r[r.value != 0] if unused[p] else r, top) for p, r in pair_rows.items()}
    cols = max(1, min(ncols, len(pairs)))
    nrows = -(-len(pairs) // cols)
    height = 0.24 * max(len(b) for b in bars.values()) + 1.3
    fig, grid = plt.subplots(nrows, cols, figsize=(width * cols + 0.6, height * nrows + 0.5), squeeze=False,
                             sharex=sharex, constrained_layout=True)
    axes = list(grid.ravel())
    for ax in axes[len(pairs):]:
        ax.set_visible(False)
    for ax, (a, b) in zip(axes, pairs):
        t = bars[(a, b)]
        other = t.group.str.startswith("other (")
        colours = [_OTHER if o else _UP if v >= 0 else _DOWN for v, o in zip(t.value, other)]
        y = list(range(len(t)))[::-1]  # the largest at the top, "other" at the bottom
        ax.barh(y, t.value, color=colours, height=0.7, zorder=2)
        ax.set_yticks(y, [g.replace("encoder.", "enc.").replace("decoder.", "dec.") for g in t.group], fontsize=7)
        ax.axvline(0.0, color="black", lw=0.8, zorder=3)
        ax.grid(axis="x", alpha=0.3, zorder=0)
        ax.tick_params(axis="x", labelsize=7, labelbottom=True)
        ax.set_title(_title(a, b, pair_rows[(a, b)]), fontsize=8)
        zero = unused[(a, b)]
        ax.set_xlabel("attribution (sum = change \u00b1 completeness error)" + (f"\n{zero} group(s) at exactly 0 (not read by the "
                                                              "metric) left out" if zero else ""),
                      fontsize=8)
    legend = [Patch(color=_UP, label="raises the metric"), Patch(color=_DOWN, label="lowers the metric")]
    if any(t.group.str.startswith("other (").any() for t in bars.values()):
        legend.append(Patch(color=_OTHER, label="other groups, summed"))
    fig.legend(handles=legend, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig
