"""Per-layer curves: a measure against depth, a line per checkpoint with its interval band, controls dashed.

:func:`layer_curves` reads a tidy results table (``results.parquet`` of ``xlprobe run`` / ``probe``) and
returns a matplotlib Figure with one panel per measure. Layers are ordered by depth (embeddings, blocks
by index, the final norm last), so checkpoints of different depths share the axis. Colours are the
Okabe-Ito palette (distinguishable with the common colour-vision deficiencies; its yellow left out, too
faint on white); the ``control`` role is dashed, ``random-init:...`` checkpoints grey and dotted (a floor),
the base drawn thicker.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import pandas as pd

from xlprobe.errors import DataError
from xlprobe.figures.common import finish_figure, legend_handles

__all__ = ["layer_curves", "layer_order", "OKABE_ITO"]

#: Okabe & Ito (2008) colour-blind-safe palette (black last: it reads as a default).
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")


def _depth(layer: str) -> tuple[int, int, str]:
    """Sort key of a layer alias: side (encoder first), then embeddings, blocks by index, final norm."""
    side = 1 if layer.startswith("decoder") else 0
    tail = layer.rsplit(".", 1)[-1]
    if tail == "embeddings":
        return side, -1, layer
    if tail == "final_norm":
        return side, 10_000, layer
    m = re.fullmatch(r"\d+", tail)
    return side, int(m.group()) if m else 5_000, layer


def layer_order(layers: Sequence[str]) -> list[str]:
    """The distinct layers sorted by depth (checkpoints of different depths share one axis)."""
    return sorted(dict.fromkeys(layers), key=_depth)


def _main_rows(results: pd.DataFrame, measure: str) -> pd.DataFrame:
    """One row per (checkpoint, layer) of ``measure``: the result itself, not its control rows."""
    rows = results[results.measure == measure]
    if "control" in rows:
        rows = rows[rows.control.isna()]
    if rows.empty:
        have = ", ".join(sorted(set(results.measure)))
        raise DataError(f"no rows of measure {measure!r}", hint=f"measures in the table: {have}")
    dup = rows.duplicated(["checkpoint", "layer"])
    if dup.any():
        first = rows[dup].iloc[0]
        raise DataError(f"measure {measure!r} has several rows for {first.checkpoint} at {first.layer} "
                        "(several tasks, probes or languages)",
                        hint="filter the table first, e.g. results[results.task == 'language']")
    return rows


def layer_curves(results: pd.DataFrame, measures: str | Sequence[str], *, base: str | None = None,
                 controls: Sequence[str] = (), title: str | None = None, width: float = 3.6, ncols: int = 3):
    """One panel per measure: value against layer, a line per checkpoint, its ci band; controls dashed.

    Parameters
    ----------
    results : DataFrame
        A tidy results table (``measure``, ``checkpoint``, ``layer``, ``value``, ``ci_low``, ``ci_high``).
    measures : str or sequence of str
        The measures to draw, one panel each.
    base : str, optional
        The base checkpoint (drawn thicker).
    controls : sequence of str
        Checkpoints drawn dashed besides every ``random-init:...`` one (the control role).
    title : str, optional
        The figure's title.
    width : float
        Inches per panel.
    ncols : int
        Panels per row (readable at paper size: 3).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    measures = [measures] if isinstance(measures, str) else list(measures)
    if not measures:
        raise DataError("no measure to draw")
    frames = {m: _main_rows(results, m) for m in measures}
    checkpoints = list(dict.fromkeys(c for f in frames.values() for c in f.checkpoint))
    trained = [c for c in checkpoints if not c.startswith("random-init")]
    colour = {c: OKABE_ITO[i % 6] for i, c in enumerate(trained)}  # blue .. sky blue: all legible on white
    colour |= {c: "#555555" for c in checkpoints if c.startswith("random-init")}  # grey: a floor, not a model
    cols = max(1, min(ncols, len(measures)))
    nrows = -(-len(measures) // cols)
    fig, grid = plt.subplots(nrows, cols, figsize=(width * cols + 1.6, 3.1 * nrows + 0.3), squeeze=False,
                             constrained_layout=True)
    axes = [list(grid.ravel())]
    for ax in axes[0][len(measures):]:
        ax.set_visible(False)
    for ax, m in zip(axes[0], measures):
        rows = frames[m]
        order = layer_order(rows.layer.tolist())
        x = {layer: i for i, layer in enumerate(order)}
        for c in checkpoints:
            r = rows[rows.checkpoint == c]
            if r.empty:
                continue
            r = r.assign(_x=r.layer.map(x)).sort_values("_x")
            style = ":" if c.startswith("random-init") else "--" if c in controls else "-"
            ax.plot(r._x, r.value, color=colour[c], ls=style, lw=2.4 if c == base else 1.5,
                    marker="o", ms=3, label=c)
            if r.ci_low.notna().any():
                ax.fill_between(r._x, r.ci_low, r.ci_high, color=colour[c], alpha=0.15, lw=0)
        ax.set_xticks(range(len(order)), [la.replace("encoder.", "enc.").replace("decoder.", "dec.")
                                         for la in order], rotation=45, ha="right", fontsize=8)
        ax.set_title(m, fontsize=10)
        ax.grid(alpha=0.3)
    for row in grid:
        row[0].set_ylabel("value (95 % interval band)")
    return finish_figure(fig, legend_handles(axes[0]), title)
