"""Paired differences: checkpoint minus reference per layer, with intervals, the corrected tests marked.

:func:`paired_differences` reads a comparisons table (``comparisons.parquet`` of ``xlprobe run`` /
``probe`` / ``similarity``: ``checkpoint``, ``layer``, ``measure``, ``value`` = the checkpoint's value
minus the reference's, ``ci_low`` / ``ci_high``, ``ref_checkpoint``, ``contrast``, ``p_adjusted``,
``correction``) and draws one panel per (contrast, measure): the difference against depth (layers in
:func:`~xlprobe.figures.curves.layer_order`), a line per checkpoint with its 95 % interval as error bars
(checkpoints dodged sideways so that the bars do not hide each other), a zero line, and each point
filled where its adjusted p-value is below ``alpha``, open elsewhere (the legend says so, with the
correction the table used). The reference is named in each panel's title. Colours as
:func:`~xlprobe.figures.curves.layer_curves` (Okabe-Ito), the control role dashed, ``random-init:...``
grey dotted.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pandas as pd

from xlprobe.errors import DataError
from xlprobe.figures.common import check_columns, finish_figure, legend_handles
from xlprobe.figures.curves import OKABE_ITO, layer_order

__all__ = ["paired_differences", "checkpoint_colours", "NEEDED"]

#: Columns a comparisons table must have.
NEEDED = ("checkpoint", "layer", "measure", "value", "ci_low", "ci_high", "ref_checkpoint", "contrast", "p_adjusted")


def checkpoint_colours(names: Sequence[str], order: Sequence[str] | None = None) -> dict[str, str]:
    """Okabe-Ito colours by position in ``order`` (default: ``names``), ``random-init:...`` grey.

    Passing one run's checkpoint list as ``order`` gives a checkpoint the same colour in every figure.
    """
    known = [c for c in dict.fromkeys([*(order or ()), *names]) if not c.startswith("random-init")]
    colour = {c: OKABE_ITO[i % 6] for i, c in enumerate(known)}  # blue .. sky blue: all legible on white
    return {c: colour.get(c, "#555555") for c in names}  # grey: a floor, not a model


def _panel_rows(rows: pd.DataFrame, contrast: str, measure: str, centring: str) -> pd.DataFrame:
    """One row per (checkpoint, layer) of a contrast and measure (one CKA centring), or DataError."""
    if "centring" in rows and rows.centring.notna().any():
        rows = rows[rows.centring.isna() | (rows.centring == centring)]
    dup = rows.duplicated(["checkpoint", "layer"])
    if dup.any():
        first = rows[dup].iloc[0]
        raise DataError(f"contrast {contrast!r} of {measure!r} has several rows for {first.checkpoint} at "
                        f"{first.layer} (several tasks, probes, seeds or references)",
                        hint="filter the table first, e.g. comparisons[comparisons.task == 'language']")
    return rows


def _correction_text(rows: pd.DataFrame) -> str:
    """The table's corrections in a few words ("holm over 5 layers" and "... 4 layers" -> one phrase)."""
    if "correction" not in rows or rows.correction.isna().all():
        return "adjusted p"
    said = dict.fromkeys(re.sub(r"over \d+ layers", "over each checkpoint's layers", str(c))
                         for c in rows.correction.dropna())
    return "; ".join(said)


def _title(measure: str, contrast: str, refs: list[str]) -> str:
    """Measure on the first line, then the contrast with its reference (unless the contrast names it)."""
    ref = ", ".join(refs)
    named = all(re.search(rf"(?<![\w:.-]){re.escape(r)}(?![\w:.-])", contrast) for r in refs)
    second = contrast if named else f"{contrast}: minus {ref}"
    return f"{measure}\n{second}"


def paired_differences(comparisons: pd.DataFrame, measures: str | Sequence[str] | None = None, *,
                       contrast: str | Sequence[str] = "vs control", alpha: float = 0.05,
                       title: str | None = None, controls: Sequence[str] = (), centring: str = "pooled",
                       order: Sequence[str] | None = None, width: float = 3.6, ncols: int = 3) -> Any:
    """One panel per (contrast, measure): checkpoint minus reference against depth, significance marked.

    Parameters
    ----------
    comparisons : DataFrame
        A comparisons table (the columns of :data:`NEEDED`, ``correction`` optional).
    measures : str or sequence of str, optional
        The measures to draw; by default every measure the contrasts have, in table order.
    contrast : str or sequence of str
        The contrast(s) to draw (``"vs control"``, ``"vs base"``, the CKA contrast's text ...); with
        several, each measure gets a panel per contrast.
    alpha : float
        Points with ``p_adjusted < alpha`` are filled, the others open.
    title : str, optional
        The figure's title.
    controls : sequence of str
        Checkpoints drawn dashed (the control role) besides every ``random-init:...`` one (dotted).
    centring : str
        The CKA centring drawn where the table has several (``pooled`` or ``language``).
    order : sequence of str, optional
        Checkpoints in colour order (a run's list: the same colour for a checkpoint in every figure).
    width : float
        Inches per panel.
    ncols : int
        Panels per row (readable at paper size: 3).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    check_columns(comparisons, NEEDED, "comparisons table",
                   "pass comparisons.parquet of a run (paired differences with p_adjusted), not results.parquet")
    if not 0 < alpha < 1:
        raise DataError(f"alpha must be in (0, 1); got {alpha}")
    contrasts = [contrast] if isinstance(contrast, str) else list(contrast)
    have = list(dict.fromkeys(comparisons.contrast.dropna()))
    unknown = [c for c in contrasts if c not in have]
    if unknown or not contrasts:
        raise DataError(f"no rows of contrast(s) {unknown or contrasts}", hint=f"contrasts in the table: {have}")
    rows = comparisons[comparisons.contrast.isin(contrasts)]
    if measures is None:
        measures = list(dict.fromkeys(rows.measure))
    measures = [measures] if isinstance(measures, str) else list(measures)
    absent = [m for m in measures if m not in set(rows.measure)]
    if absent or not measures:
        raise DataError(f"no rows of measure(s) {absent or measures} under contrast(s) {contrasts}",
                        hint=f"measures there: {sorted(set(rows.measure))}")
    panels = [(c, m, _panel_rows(rows[(rows.contrast == c) & (rows.measure == m)], c, m, centring))
              for c in contrasts for m in measures]
    panels = [p for p in panels if not p[2].empty]
    checkpoints = list(dict.fromkeys(c for *_, r in panels for c in r.checkpoint))
    colour = checkpoint_colours(checkpoints, order)
    cols = max(1, min(ncols, len(panels)))
    nrows = -(-len(panels) // cols)
    fig, grid = plt.subplots(nrows, cols, figsize=(width * cols + 2.2, 3.3 * nrows + 0.4), squeeze=False,
                             constrained_layout=True)
    axes = list(grid.ravel())
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    for ax, (c, m, r) in zip(axes, panels):
        depth = layer_order(r.layer.tolist())
        x = {layer: i for i, layer in enumerate(depth)}
        here = [k for k in checkpoints if k in set(r.checkpoint)]
        step = min(0.6 / max(len(here), 1), 0.15)
        ax.axhline(0.0, color="black", lw=0.8, zorder=1)
        for j, k in enumerate(here):
            g = r[r.checkpoint == k]
            g = g.assign(_x=g.layer.map(x) + (j - (len(here) - 1) / 2) * step).sort_values("_x")
            style = ":" if k.startswith("random-init") else "--" if k in controls else "-"
            ax.plot(g._x, g.value, color=colour[k], ls=style, lw=1.2, zorder=2, label=k)
            low, high = (g.value - g.ci_low).clip(lower=0), (g.ci_high - g.value).clip(lower=0)
            ax.errorbar(g._x, g.value, yerr=[low.fillna(0), high.fillna(0)], fmt="none", ecolor=colour[k],
                        elinewidth=1.0, capsize=2, zorder=2)
            sig = (g.p_adjusted < alpha).to_numpy()
            gx, gy = g._x.to_numpy(), g.value.to_numpy()
            ax.scatter(gx[sig], gy[sig], s=30, marker="o", color=colour[k], edgecolors=colour[k],
                       linewidths=1.2, zorder=3)
            ax.scatter(gx[~sig], gy[~sig], s=30, marker="o", facecolors="white", edgecolors=colour[k],
                       linewidths=1.2, zorder=3)
        ax.set_xticks(range(len(depth)), [la.replace("encoder.", "enc.").replace("decoder.", "dec.")
                                         for la in depth], rotation=45, ha="right", fontsize=8)
        ax.set_title(_title(m, c, list(dict.fromkeys(r.ref_checkpoint.dropna()))), fontsize=9)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(alpha=0.3)
    for row in grid:
        row[0].set_ylabel("difference (95 % interval)", fontsize=9)
    handles = legend_handles(axes[:len(panels)])
    correction = _correction_text(pd.concat([r for *_, r in panels]))
    handles[f"p_adjusted < {alpha:g}"] = Line2D([], [], ls="", marker="o", color="#444444", markersize=6)
    handles[f"p_adjusted \u2265 {alpha:g}"] = Line2D([], [], ls="", marker="o", markerfacecolor="white",
                                                     markeredgecolor="#444444", markersize=6)
    return finish_figure(fig, handles, title, title="filled: significant\n" + "\n".join(_wrap(correction, 24)),
                         title_fontsize=8)


def _wrap(text: str, width: int) -> list[str]:
    """Words in lines of about ``width`` characters (the legend's title stays narrow)."""
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines
