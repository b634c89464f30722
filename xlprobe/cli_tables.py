"""The tables ``xlprobe probe`` and ``xlprobe similarity`` print: probe accuracies with controls, paired differences."""
from __future__ import annotations

from typing import Any

from rich.table import Table

__all__ = ["probe_table", "comparison_table", "difference_table", "SHOWN"]


def difference_table(cmp: Any, title: str, by: tuple[str, ...]) -> Table:
    """Paired differences with their interval and corrected p-value, a star where it is below 0.05."""
    table = Table(title=title)
    for col in (*by, "difference [95% CI]", "p", "p adj."):
        table.add_column(col)
    for r in cmp.itertuples():
        star = " *" if r.p_adjusted < 0.05 else ""
        table.add_row(*(str(getattr(r, c)) for c in by), f"{r.value:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]",
                      _p(r.p_value), _p(r.p_adjusted) + star)
    return table


def probe_table(df: Any, title: str) -> Table:
    """One line per (checkpoint, layer, pooling): task accuracy, each control, selectivity, chance-corrected task."""
    def fmt(rows: Any, ci: bool = True) -> str:
        if rows.empty:
            return "-"
        r = rows.iloc[0]
        if not ci or r.ci_low != r.ci_low:
            return f"{r.value:.3f}"
        return f"{r.value:.3f}±{(r.ci_high - r.ci_low) / 2:.2f}".replace("±0.", "±.")

    from rich import box

    df = df[df.measure.str.startswith("probe.")]  # the per-layer measures are in the files, not this table
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
    for col in ("checkpoint", "layer", "pool", "task", "maj.", "shuf.", "ctrl", "sel.ctrl", "sel.rep", "chance"):
        table.add_column(col, no_wrap=True)
    for (ckpt, layer, pool), g in df.groupby(["checkpoint", "layer", "pooling"], sort=False):
        sel = g.measure.str.endswith(".selectivity")
        corrected = g.measure.str.endswith(".chance_corrected")
        acc = g[~sel & ~corrected]
        rep = g[sel & (g.control == "random-init")]
        rep = rep if len(rep) else g[sel & (g.control == "embeddings")]
        table.add_row(str(ckpt), str(layer), str(pool), fmt(acc[acc.control.isna()]),
                      *(fmt(acc[acc.control == c], ci=False) for c in ("majority", "shuffled", "control-task")),
                      fmt(g[sel & (g.control == "control-task")]),
                      ("" if rep.empty else f"{'r' if rep.control.iloc[0] == 'random-init' else 'e'} ") + fmt(rep),
                      fmt(g[corrected & g.control.isna()]))
    return table


#: Measures the printed comparison shows, in this order (every measure is in comparisons.parquet).
#: Measures the printed comparison shows, in this order, with their column headers (every measure is in
#: comparisons.parquet; the headers keep the table within 120 columns).
SHOWN = {"probe.linear": "probe", "probe.mlp": "mlp probe", "separability.knn": "kNN", "retrieval.p_at_1": "P@1",
         "alignment.neighbour_overlap": "overlap", "separability.fisher": "Fisher",
         "geometry.effective_rank": "eff. rank"}


def _cell(value: float, low: float, high: float, p_adj: float) -> str:
    """``+.553±.08*``: the difference, half its interval, a star where the corrected p is below 0.05."""
    def short(v: float, digits: int) -> str:
        text = f"{v:+.{digits}f}" if abs(v) < 1 else f"{v:+.{1 if abs(v) >= 10 else 2}f}"
        return text.replace("0.", ".", 1)
    return f"{short(value, 3)}±{short((high - low) / 2, 2).lstrip('+')}" + ("*" if p_adj < 0.05 else "")


def comparison_table(cmp: Any, contrast: str, correction: str) -> Table:
    """Per layer, the paired difference of each discriminating measure: value ± half its CI, * if p adj. < 0.05."""
    from rich import box

    pairs = ", ".join(dict.fromkeys(f"{a} - {b}" for a, b in zip(cmp.checkpoint, cmp.ref_checkpoint)))
    table = Table(title=f"{contrast}: {pairs}; difference ± half the 95% CI, * where the p-value corrected "
                        f"over layers ({correction}) is < 0.05", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
    shown = [m for m in SHOWN if m in set(cmp.measure)]
    for col in ("checkpoint", "layer", *[SHOWN[m] for m in shown]):
        table.add_column(col, no_wrap=True)
    cells = cmp.set_index(["checkpoint", "layer", "measure"])
    for ckpt, layer in dict.fromkeys(zip(cmp.checkpoint, cmp.layer)):
        row = []
        for m in shown:
            r = cells.loc[(ckpt, layer, m)] if (ckpt, layer, m) in cells.index else None
            row.append("-" if r is None else _cell(r.value, r.ci_low, r.ci_high, r.p_adjusted))
        table.add_row(str(ckpt), str(layer), *row)
    return table


def _p(p: float) -> str:
    """A p-value for people: below 1e-15 (a normal tail past double precision) says so."""
    return "<1e-15" if p < 1e-15 else f"{p:.3g}"
