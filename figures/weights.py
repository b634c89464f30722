"""Weight divergence: per-layer and per-module bars of each checkpoint against the base, and SVD spectra.

:func:`weight_bars` reads the per-tensor rows of :func:`xlprobe.probes.weights.compare_weights`
(``checkpoint``, ``ref_checkpoint``, ``layer``, ``module``, ``param``, ``value``, and on
``weights.rel_change`` rows ``norm_a`` = ||W_ref|| and ``norm_delta`` = ||W - W_ref||) and pools them
per group the way :func:`~xlprobe.probes.weights.aggregate_weights` does (figures do not import probes,
so the few lines are repeated here): the relative change of a layer is the norm-weighted
sqrt(sum ||Delta||^2) / sqrt(sum ||W_ref||^2) over all its tensors (matrices, biases, norms; the
matrices carry nearly all the energy), i.e. ||Delta|| / ||W_ref|| of the layer's parameters as one
vector. Other measures (``weights.cosine``, the ranks ...) are averaged over the group's tensors. A
table already pooled (one row per checkpoint and group, e.g. ``aggregate_weights``' output) is drawn as
it is. One panel per grouping (``layer`` in depth order, ``module`` types), a group of bars per layer or
module, a colour per checkpoint (Okabe-Ito), the control hatched with a dashed edge.

:func:`weight_spectra` reads singular values (the table of
:func:`xlprobe.probes.weights.weight_spectra`: ``param``, ``which`` in a / b / delta, ``index``,
``sigma``, one table per checkpoint or one with a ``checkpoint`` column) and draws a panel per chosen
matrix: the reference's spectrum in black, a line per checkpoint, log scale (four decades under the
largest value: a rank-deficient tail drops off the axis); a second row the spectra of the updates
Delta = W - W_ref.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from xlprobe.errors import DataError
from xlprobe.figures.common import check_columns, finish_figure, legend_handles
from xlprobe.figures.curves import layer_order
from xlprobe.figures.paired import checkpoint_colours

__all__ = ["weight_bars", "weight_spectra", "pool_weights", "MODULE_ORDER"]

#: Module types in the order a transformer block reads them (types not listed come after, sorted).
MODULE_ORDER = ("embeddings", "positions", "q", "k", "v", "out", "cross_q", "cross_k", "cross_v", "cross_out",
                "fc1", "fc2", "layer_norm", "lm_head")


def _short(label: str) -> str:
    return label.replace("encoder.", "enc.").replace("decoder.", "dec.")


def pool_weights(rows: pd.DataFrame, by: str, measure: str = "weights.rel_change") -> pd.DataFrame:
    """One row per (checkpoint, ref_checkpoint, ``by``): the group's pooled ``value`` and its tensor count.

    ``weights.rel_change`` with ``norm_a`` / ``norm_delta``: sqrt(sum ||Delta||^2) / sqrt(sum ||W||^2)
    (as ``aggregate_weights``); a table with one row per group already: its values; otherwise the mean.
    """
    check_columns(rows, ("checkpoint", "measure", "value", by), "weights table",
                   f"pass the rows of compare_weights (per tensor) or a table pooled per {by!r}")
    sel = rows[rows.measure == measure]
    if sel.empty:
        raise DataError(f"no rows of measure {measure!r} in the weights table",
                        hint=f"measures there: {sorted(set(rows.measure))}")
    if "ref_checkpoint" not in sel:
        sel = sel.assign(ref_checkpoint="reference")
    keys = ["checkpoint", "ref_checkpoint", by]
    refs = sel.groupby("checkpoint").ref_checkpoint.nunique()
    if (refs > 1).any():
        raise DataError(f"checkpoint {refs[refs > 1].index[0]!r} is compared with several references",
                        hint="filter the table to one ref_checkpoint")
    grouped = sel.groupby(keys, sort=False)
    if measure == "weights.rel_change" and {"norm_a", "norm_delta"} <= set(sel.columns):
        out = grouped.apply(lambda g: pd.Series({
            "value": float(np.sqrt((g.norm_delta ** 2).sum()) / np.sqrt((g.norm_a ** 2).sum())),
            "tensors": len(g)}), include_groups=False).reset_index()
    else:
        out = grouped.agg(value=("value", "mean"), tensors=("value", "size")).reset_index()
    out["measure"] = measure
    return out


def _group_order(values: Sequence[str], by: str) -> list[str]:
    if by == "layer":
        return layer_order(list(values))
    if by == "module":
        known = [m for m in MODULE_ORDER if m in set(values)]
        return known + sorted(set(values) - set(known))
    return sorted(set(values))


def weight_bars(weights_rows: pd.DataFrame, measure: str = "weights.rel_change", *,
                by: str | Sequence[str] = ("layer", "module"), controls: Sequence[str] = (),
                order: Sequence[str] | None = None, title: str | None = None, width: float = 10.0) -> Any:
    """Bars of each checkpoint's weight divergence from its reference, pooled per layer and per module type.

    Parameters
    ----------
    weights_rows : DataFrame
        Rows of ``compare_weights`` (per tensor), or a table pooled already (one row per checkpoint and group).
    measure : str
        The weights measure drawn (``weights.rel_change``: pooled norm-weighted; others: mean over tensors).
    by : str or sequence of str
        One panel per grouping column (``layer``, ``module``, ``side``), stacked.
    controls : sequence of str
        Checkpoints drawn hatched with a dashed edge (the control role).
    order : sequence of str, optional
        Checkpoints in colour order (a run's list: the same colour for a checkpoint in every figure).
    title : str, optional
        The figure's title.
    width : float
        The figure's width in inches (a full page: 10).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    groupings = [by] if isinstance(by, str) else list(by)
    if not groupings:
        raise DataError("no grouping to draw", hint="by='layer' or by=('layer', 'module')")
    pooled = {b: pool_weights(weights_rows, b, measure) for b in groupings}
    checkpoints = list(dict.fromkeys(c for p in pooled.values() for c in p.checkpoint))
    colour = checkpoint_colours(checkpoints, order)
    rank = {c: i for i, c in enumerate(dict.fromkeys([*(order or ()), *checkpoints]))}
    checkpoints.sort(key=lambda c: (c in controls, rank[c]))  # colour order, the controls last
    refs = list(dict.fromkeys(r for p in pooled.values() for r in p.ref_checkpoint))
    how = ("||\u0394W|| / ||W_ref|| pooled over the group's tensors" if measure == "weights.rel_change"
           and {"norm_a", "norm_delta"} <= set(weights_rows.columns) else "per group")
    fig, axes = plt.subplots(len(groupings), 1, figsize=(width, 2.9 * len(groupings) + 0.5), squeeze=False,
                             constrained_layout=True)
    for ax, b in zip(axes[:, 0], groupings):
        p = pooled[b]
        groups = _group_order(p[b].astype(str).tolist(), b)
        x = {g: i for i, g in enumerate(groups)}
        step = 0.8 / len(checkpoints)
        for j, c in enumerate(checkpoints):
            r = p[p.checkpoint == c]
            xs = r[b].astype(str).map(x).to_numpy() + (j - (len(checkpoints) - 1) / 2) * step
            control = c in controls
            ax.bar(xs, r.value.to_numpy(), width=step * 0.95, label=c + (" (control)" if control else ""),
                   color="white" if control else colour[c], edgecolor=colour[c],
                   hatch="////" if control else None, linestyle="--" if control else "-",
                   linewidth=1.0 if control else 0.5, zorder=2)
        ax.set_xticks(range(len(groups)), [_short(g) for g in groups], rotation=30, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(groups) - 0.4)
        ax.set_ylabel("||\u0394W|| / ||W_ref||" if measure == "weights.rel_change" else measure, fontsize=9)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="y", alpha=0.3, zorder=0)
        ax.set_title(f"per {b}: {measure} against {', '.join(refs)}, {how}", fontsize=9)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def _spectra_table(spectra: pd.DataFrame | Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One table with a ``checkpoint`` column, checked."""
    if isinstance(spectra, Mapping):
        if not spectra:
            raise DataError("no spectra to draw", hint="pass {checkpoint: weight_spectra(base, model)}")
        spectra = pd.concat([t.assign(checkpoint=c) for c, t in spectra.items()], ignore_index=True)
    check_columns(spectra, ("checkpoint", "param", "which", "index", "sigma"), "spectra table",
                   "pass weight_spectra(base, model) per checkpoint, as {checkpoint: table} or concatenated "
                   "with a checkpoint column")
    return spectra


def weight_spectra(spectra: pd.DataFrame | Mapping[str, pd.DataFrame], params: Sequence[str] | None = None, *,
                   which: Sequence[str] = ("b", "delta"), reference: str | None = None,
                   controls: Sequence[str] = (), order: Sequence[str] | None = None, title: str | None = None,
                   panel: float = 3.4) -> Any:
    """Singular value spectra of chosen matrices: a panel per matrix (and per ``which``), a line per checkpoint.

    Parameters
    ----------
    spectra : DataFrame or mapping
        ``weight_spectra(base, model)`` per checkpoint: ``{checkpoint: table}``, or the tables
        concatenated with a ``checkpoint`` column.
    params : sequence of str, optional
        The matrices (parameter names) to draw, a column of panels each; by default every one (up to 4).
    which : sequence of {"b", "delta"}
        Rows of panels: ``b`` the checkpoint's matrix (with the reference's, ``a``, in black), ``delta``
        the update W - W_ref.
    reference : str, optional
        The reference's name in the legend (default: the table's ``ref_checkpoint``, else "reference").
    controls : sequence of str
        Checkpoints drawn dashed.
    order : sequence of str, optional
        Checkpoints in colour order.
    title : str, optional
        The figure's title.
    panel : float
        Inches per panel.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    table = _spectra_table(spectra)
    bad = [w for w in which if w not in ("b", "delta")]
    if bad or not which:
        raise DataError(f"which must name 'b' and/or 'delta'; got {list(which)}")
    have = list(dict.fromkeys(table.param))
    if params is None:
        if len(have) > 4:
            raise DataError(f"the spectra table has {len(have)} matrices: choose up to 4",
                            hint=f"params=[...] among e.g. {have[:4]}")
        params = have
    params = list(params)
    missing = [p for p in params if p not in have]
    if missing or not params:
        raise DataError(f"no spectra of {missing or params}", hint=f"matrices in the table: {have[:8]}")
    if reference is None:
        refs = table.ref_checkpoint.dropna().unique() if "ref_checkpoint" in table else []
        reference = ", ".join(map(str, refs)) or "reference"
    checkpoints = list(dict.fromkeys(table.checkpoint))
    colour = checkpoint_colours(checkpoints, order)
    fig, grid = plt.subplots(len(which), len(params), figsize=(panel * len(params) + 1.8, 2.9 * len(which) + 0.4),
                             squeeze=False, constrained_layout=True)
    for i, w in enumerate(which):
        for j, p in enumerate(params):
            ax = grid[i, j]
            rows = table[table.param == p]
            if w == "b":
                a = rows[rows.which == "a"].drop_duplicates("index").sort_values("index")
                if not a.empty:
                    ax.plot(a["index"] + 1, a.sigma, color="black", lw=2.2, label=f"{reference} (reference)")
            for c in checkpoints:
                r = rows[(rows.checkpoint == c) & (rows.which == w)].sort_values("index")
                if not r.empty:
                    ax.plot(r["index"] + 1, r.sigma.clip(lower=1e-12), color=colour[c], lw=1.3,
                            ls="--" if c in controls else "-", label=c)
            ax.set_yscale("log")
            shown = rows[rows.which.isin(["a", w] if w == "b" else [w])].sigma
            if (shown > 0).any():  # 4 decades under the largest: a rank-deficient tail drops off the axis
                top = float(shown.max())
                ax.set_ylim(max(float(shown[shown > 0].min()) * 0.8, top * 1e-4), top * 1.6)
            ax.grid(alpha=0.3)
            ax.tick_params(which="both", labelsize=7)  # a short range labels minor ticks (2 x 10^0 ...) too
            name = _short(p.removeprefix("model.").removesuffix(".weight"))
            ax.set_title(name if w == "b" else f"update of {name}", fontsize=9)
            if i == len(which) - 1:
                ax.set_xlabel("singular value index", fontsize=8)
        grid[i, 0].set_ylabel("\u03c3 of W" if w == "b" else "\u03c3 of \u0394 = W \u2212 W_ref", fontsize=9)
    return finish_figure(fig, legend_handles(grid.ravel()), title)
