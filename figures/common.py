"""What every figure module shares: the column check of an input table and the figure-wide legend."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from xlprobe.errors import DataError

__all__ = ["check_columns", "legend_handles", "finish_figure"]


def check_columns(table: pd.DataFrame, needed: Sequence[str], what: str, hint: str) -> None:
    """DataError naming the columns a table lacks."""
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise DataError(f"the {what} lacks column(s) {missing}", hint=hint)


def legend_handles(axes: Iterable[Any]) -> dict[str, Any]:
    """Label -> artist over several panels, first one kept: one figure-wide legend without repeats."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    return handles


def finish_figure(fig: Any, handles: dict[str, Any], suptitle: str | None, **legend: Any) -> Any:
    """The legend right of the panels (``legend``: more of ``fig.legend``'s keywords) and the title on top."""
    fig.legend(list(handles.values()), list(handles), **{"loc": "outside right center", "fontsize": 8,
                                                         "frameon": False, **legend})
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    return fig
