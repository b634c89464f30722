"""``xlprobe weights BASE OTHER... [--control C]``: which parameters moved, per layer and module, beyond a control."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd
import typer
from rich.table import Table

from xlprobe.cli_common import console, fail
from xlprobe.errors import XlprobeError

__all__ = ["weights_command", "top_changes"]


def top_changes(df: pd.DataFrame, checkpoint: str, control: str, n: int = 10) -> pd.DataFrame:
    """The ``n`` (layer, module) groups whose relative change in ``checkpoint`` most exceeds the control's."""
    from xlprobe.probes.weights import aggregate_weights

    agg = aggregate_weights(df, ["layer", "module"]).pivot_table(index=["layer", "module"], columns="checkpoint",
                                                                 values="value")
    agg["beyond"] = agg[checkpoint] - agg[control]
    return agg.sort_values("beyond", ascending=False).head(n).reset_index()


def weights_command(
    base: str = typer.Argument(..., help="The checkpoint others are compared with (e.g. toy:lm)."),
    others: list[str] = typer.Argument(..., help="Checkpoints of the same architecture (e.g. toy:mt toy:lm-cont)."),
    control: Optional[str] = typer.Option(None, "--control", help="The control checkpoint (e.g. toy:lm-cont): "
                                          "changes are also ranked by how much they exceed its."),
    k: int = typer.Option(16, "--k", help="Top singular directions for subspace overlap and update share."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for weights.parquet / .csv."),
) -> None:
    """Weight divergence per parameter tensor against BASE, pooled per layer; the most changed modules."""
    from xlprobe.loading import load_model
    from xlprobe.probes.weights import aggregate_weights, compare_weights
    from xlprobe.results import write_results

    names = list(dict.fromkeys([*others, *([control] if control else [])]))
    try:
        model_a, _ = load_model(base)
        df = pd.concat([compare_weights(model_a, load_model(name)[0], k=k, checkpoint=name, ref_checkpoint=base)
                        for name in names], ignore_index=True)
        if out is not None:
            write_results(df, out, name="weights")
    except XlprobeError as err:
        fail(err)
    by_layer = aggregate_weights(df, "layer").pivot(index="layer", columns="checkpoint", values="value")
    by_layer = by_layer.reindex([la for la in pd.unique(df.layer) if la in by_layer.index])  # the model's order
    table = Table(title=f"relative change ||B - A|| / ||A|| per layer, A = {base}")
    for col in ("layer", *names, *([f"{c} - {control}" for c in names if c != control] if control else [])):
        table.add_column(col)
    for layer, row in by_layer.iterrows():
        beyond = [f"{row[c] - row[control]:+.4f}" for c in names if c != control] if control else []
        table.add_row(str(layer), *(f"{row[c]:.4f}" for c in names), *beyond)
    console.print(table)
    for name in (c for c in names if control and c != control):
        top = top_changes(df, name, control)
        t = Table(title=f"the ten modules {name} changed most beyond {control}")
        for col in ("layer", "module", name, control, "beyond"):
            t.add_column(col)
        for _, r in top.iterrows():
            t.add_row(str(r["layer"]), str(r["module"]), f"{r[name]:.4f}", f"{r[control]:.4f}", f"{r['beyond']:+.4f}")
        console.print(t)
    if out is not None:
        console.print(f"{len(df)} rows -> {out / 'weights.parquet'} and .csv")
