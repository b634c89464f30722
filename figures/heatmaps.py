"""CKA heatmaps: layer x layer similarity between two checkpoints, one panel per pair, one colour scale.

:func:`cka_heatmap` reads the similarity table (``similarity.parquet`` of ``xlprobe similarity`` / a suite
run: ``checkpoint``, ``layer``, ``ref_checkpoint``, ``ref_layer``, ``value``, ``centring``) and draws
each pair's matrix with the base's layers down and the other's across, in depth order, values written
in the cells, on one 0-1 scale (viridis, readable in grey and with colour-vision deficiencies).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from xlprobe.errors import DataError
from xlprobe.figures.curves import layer_order

__all__ = ["cka_heatmap", "pair_matrix"]


def pair_matrix(results: pd.DataFrame, a: str, b: str, *, measure: str | None = None,
                centring: str = "pooled") -> pd.DataFrame:
    """The layer x layer matrix of ``measure`` between ``a`` (rows) and ``b`` (columns), in depth order."""
    rows = results[results.measure.str.startswith("cka")] if measure is None else results[results.measure == measure]
    if "centring" in rows:
        rows = rows[rows.centring == centring]
    direct = rows[(rows.checkpoint == a) & (rows.ref_checkpoint == b)]
    flipped = rows[(rows.checkpoint == b) & (rows.ref_checkpoint == a)]
    if direct.empty and flipped.empty:
        pairs = sorted(set(zip(rows.checkpoint, rows.ref_checkpoint)))[:6]
        raise DataError(f"no similarity rows between {a!r} and {b!r} (centring {centring!r})",
                        hint=f"pairs in the table: {pairs}")
    cells = pd.concat([direct[["layer", "ref_layer", "value"]],
                       flipped.rename(columns={"layer": "ref_layer", "ref_layer": "layer"})[["layer", "ref_layer",
                                                                                            "value"]]])
    m = cells.drop_duplicates(["layer", "ref_layer"]).pivot(index="layer", columns="ref_layer", values="value")
    return m.reindex(index=layer_order(m.index.tolist()), columns=layer_order(m.columns.tolist()))


def cka_heatmap(results: pd.DataFrame, pairs: Sequence[tuple[str, str]], *, measure: str | None = None,
                centring: str = "pooled", panel: float = 3.0, ncols: int = 3, title: str | None = None) -> Any:
    """One layer x layer CKA panel per (a, b) pair: a's layers down, b's across, values in the cells."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if not pairs:
        raise DataError("no pair of checkpoints to draw")
    mats = [pair_matrix(results, a, b, measure=measure, centring=centring) for a, b in pairs]
    cols = max(1, min(ncols, len(pairs)))
    nrows = -(-len(pairs) // cols)
    fig, grid = plt.subplots(nrows, cols, figsize=(panel * cols + 1.0, (panel + 0.6) * nrows), squeeze=False,
                             constrained_layout=True)
    axes = [list(grid.ravel())]
    for ax in axes[0][len(pairs):]:
        ax.set_visible(False)
    image = None
    for ax, (a, b), m in zip(axes[0], pairs, mats):
        image = ax.imshow(m.to_numpy(dtype=float), vmin=0, vmax=1, cmap="viridis", aspect="auto")
        short = [la.replace("encoder.", "enc.").replace("decoder.", "dec.") for la in m.columns]
        ax.set_xticks(range(m.shape[1]), short, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(m.shape[0]), [la.replace("encoder.", "enc.").replace("decoder.", "dec.")
                                          for la in m.index], fontsize=7)
        for (i, j), v in np.ndenumerate(m.to_numpy(dtype=float)):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                        color="black" if v > 0.6 else "white")
        ax.set_ylabel(a, fontsize=8)
        ax.set_xlabel(b, fontsize=8)
    fig.colorbar(image, ax=grid.ravel().tolist(), shrink=0.8, label=f"CKA ({centring})")
    if title:
        fig.suptitle(title, fontsize=11)
    return fig
