"""Build, check and write the tidy results table: one row per (checkpoint, layer, measure, ...).

Only this module builds the table. Its columns are :data:`~xlprobe.types.RESULT_COLUMNS` first,
always in that order, then the known extras in the order of :data:`EXTRA_COLUMNS`, then any other
extras in the order they first appear. Confidence-interval columns are NaN, never missing, when a
row has no interval. Figures and the report read the table back with :func:`read_results`.

=============== ======== ==================================================================
column          dtype    meaning
=============== ======== ==================================================================
checkpoint      str      model id or path the representation comes from
layer           str      capture-point alias (``encoder.3``)
measure         str      registry name (``cka.linear``); the probes issue calls it ``metric``
value           float64  the measure's value (NaN allowed: a measure that could not be computed)
ci_low/ci_high  float64  confidence interval, NaN when there is none (both or neither)
n               int64    number of items the value was computed on (>= 0)
task            str      probing task (``language``), or missing
control         str      control-task name (``shuffled``, ``hewitt-liang``), missing for the real task
ref_checkpoint  str      for paired measures: the other side's checkpoint
ref_layer       str      for paired measures: the other side's layer
lang            str      language code of the items, when a row is per language
seed            Int64    seed of the random parts (nullable integer)
delta           float64  the row's own check, e.g. an attribution's completeness error
=============== ======== ==================================================================
"""
from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xlprobe.durable import atomic_write
from xlprobe.errors import DataError
from xlprobe.types import RESULT_COLUMNS

__all__ = ["RESULT_COLUMNS", "EXTRA_COLUMNS", "make_row", "make_rows", "results_frame", "write_results",
           "read_results", "PARQUET", "CSV"]

#: Optional columns with a fixed meaning and type, in the order they follow RESULT_COLUMNS.
EXTRA_COLUMNS = ("task", "control", "ref_checkpoint", "ref_layer", "lang", "seed", "delta")
PARQUET = "results.parquet"
CSV = "results.csv"

_STR_REQUIRED = ("checkpoint", "layer", "measure")
_STR_OPTIONAL = ("task", "control", "ref_checkpoint", "ref_layer", "lang")
_FLOAT = ("value", "ci_low", "ci_high", "delta")
_NAN = float("nan")


def _is_missing(v: Any) -> bool:
    """None, or a float NaN / pandas NA (what a missing optional value looks like)."""
    if v is None or v is pd.NA:
        return True
    return isinstance(v, float) and math.isnan(v)


def _where(i: int | None) -> str:
    return "" if i is None else f"row {i}: "


def _as_str(col: str, v: Any, i: int | None, *, required: bool) -> str | None:
    if not required and _is_missing(v):
        return None
    if not isinstance(v, str) or not v:
        need = "a non-empty string" + ("" if required else " or None")
        raise DataError(f"{_where(i)}column {col!r} must be {need}; got {v!r}",
                        hint=f"pass {col}=str(...)" if not isinstance(v, str) else f"give a {col} name")
    return v


def _as_float(col: str, v: Any, i: int | None) -> float:
    if v is None or v is pd.NA:
        return _NAN
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        if isinstance(v, np.ndarray) and v.ndim == 0 and v.dtype.kind in "fiu":
            return float(v)
        raise DataError(f"{_where(i)}column {col!r} must be a real number (NaN / None when absent); got {v!r}",
                        hint="measures return a Python float; reduce arrays before making a row")
    return float(v)


def _as_int(col: str, v: Any, i: int | None, *, required: bool) -> int | None:
    if not required and _is_missing(v):
        return None
    ok = isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))
    if not ok and isinstance(v, float) and v.is_integer():  # ints that went through a float column
        v, ok = int(v), True
    if not ok or int(v) < 0:
        raise DataError(f"{_where(i)}column {col!r} must be a non-negative integer; got {v!r}",
                        hint=f"{col} counts items" if col == "n" else f"pass {col}=int(...)")
    return int(v)


def _check_row(row: Mapping[str, Any], i: int | None = None) -> dict[str, Any]:
    """One row, checked and normalised (missing CIs -> NaN); DataError naming the row and column."""
    if not isinstance(row, Mapping):
        raise DataError(f"{_where(i)}a result row must be a mapping of column -> value; got {type(row).__name__}",
                        hint="build rows with xlprobe.results.make_row(...)")
    missing = [c for c in ("checkpoint", "layer", "measure", "value", "n") if c not in row]
    if missing:
        raise DataError(f"{_where(i)}result row lacks required column(s) {missing}; it has {sorted(map(str, row))}",
                        hint=f"every row has {list(RESULT_COLUMNS)} (ci_low / ci_high may be omitted: NaN)")
    out: dict[str, Any] = {}
    for col, v in row.items():
        if not isinstance(col, str) or not col:
            raise DataError(f"{_where(i)}column names must be non-empty strings; got {col!r}")
        if col in _STR_REQUIRED:
            out[col] = _as_str(col, v, i, required=True)
        elif col in _STR_OPTIONAL:
            out[col] = _as_str(col, v, i, required=False)
        elif col in _FLOAT:
            out[col] = _as_float(col, v, i)
        elif col == "n":
            out[col] = _as_int(col, v, i, required=True)
        elif col == "seed":
            out[col] = _as_int(col, v, i, required=False)
        else:
            out[col] = v
    out.setdefault("ci_low", _NAN)
    out.setdefault("ci_high", _NAN)
    lo, hi = out["ci_low"], out["ci_high"]
    if math.isnan(lo) != math.isnan(hi):
        raise DataError(f"{_where(i)}ci_low={lo!r} and ci_high={hi!r}: give both ends of the interval or neither",
                        hint="NaN in both when there is no interval")
    if not math.isnan(lo) and lo > hi:
        raise DataError(f"{_where(i)}ci_low={lo!r} is above ci_high={hi!r}", hint="swap them")
    return out


def make_row(*, checkpoint: str, layer: str, measure: str, value: float, n: int,
             ci_low: float | None = None, ci_high: float | None = None, **extras: Any) -> dict[str, Any]:
    """One checked result row (a dict); missing CI ends become NaN.

    Parameters
    ----------
    checkpoint, layer, measure : str
        Model id, capture-point alias and registry name.
    value : float
        The measure's value.
    n : int
        Number of items it was computed on.
    ci_low, ci_high : float, optional
        Confidence interval; NaN when not given.
    **extras
        ``task``, ``control``, ``ref_checkpoint``, ``ref_layer``, ``lang``, ``seed``, ``delta`` (checked
        types) or any other column (kept as given).

    Raises
    ------
    DataError
        On a wrong type, a negative ``n``, or an interval with one end or ``ci_low > ci_high``.
    """
    return _check_row({"checkpoint": checkpoint, "layer": layer, "measure": measure, "value": value, "n": n,
                       "ci_low": ci_low, "ci_high": ci_high, **extras})


def make_rows(**columns: Any) -> list[dict[str, Any]]:
    """Checked rows from columns: sequences (all of one length) and scalars repeated on every row.

    Strings count as scalars. Takes the arguments of :func:`make_row`.

    Examples
    --------
    >>> rows = make_rows(checkpoint="m", layer=["encoder.0", "encoder.1"], measure="cka.linear",
    ...                  value=[0.9, 0.8], n=500, ref_checkpoint="m2", ref_layer="encoder.0")
    >>> len(rows)
    2
    """
    lengths = {k: len(v) for k, v in columns.items()
               if isinstance(v, (Sequence, np.ndarray, pd.Series)) and not isinstance(v, (str, bytes))}
    if len(set(lengths.values())) > 1:
        raise DataError(f"make_rows: columns have different lengths {lengths}",
                        hint="give every sequence column one value per row; scalars are repeated")
    m = next(iter(lengths.values()), 1)
    rows = []
    for i in range(m):
        row = {k: (list(v)[i] if k in lengths else v) for k, v in columns.items()}
        for k in lengths:
            if isinstance(row[k], np.generic):
                row[k] = row[k].item()
        try:
            rows.append(make_row(**row))
        except TypeError as exc:  # a required column missing
            raise DataError(f"make_rows: {exc}", hint=f"give {list(RESULT_COLUMNS)}") from None
    return rows


def _column_order(cols: Iterable[str]) -> list[str]:
    seen = list(dict.fromkeys(cols))
    others = [c for c in seen if c not in RESULT_COLUMNS and c not in EXTRA_COLUMNS]
    return [*RESULT_COLUMNS, *(c for c in EXTRA_COLUMNS if c in seen), *others]


def results_frame(rows: Iterable[Mapping[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """The tidy results table of ``rows`` (mappings, or a frame to re-check), columns in canonical order.

    Every row is checked as by :func:`make_row`. Columns that some rows lack are filled with NaN
    (missing) there. Known columns get fixed dtypes (see the module docstring); an empty input gives
    an empty table with the seven result columns.

    Raises
    ------
    DataError
        Naming the first bad row and column.
    """
    if isinstance(rows, pd.DataFrame):
        records = rows.to_dict(orient="records")
    elif isinstance(rows, Mapping):
        raise DataError("results_frame takes a list of rows; got a single mapping", hint="wrap it in a list")
    else:
        records = list(rows)
    checked = [_check_row(r, i) for i, r in enumerate(records)]
    cols = _column_order(c for r in checked for c in r) if checked else list(RESULT_COLUMNS)
    if isinstance(rows, pd.DataFrame):
        cols = _column_order([*cols, *map(str, rows.columns)])
    data = {c: [r.get(c) for r in checked] for c in cols}
    df = pd.DataFrame(data, columns=cols)
    for c in cols:
        if c in _STR_REQUIRED or c in _STR_OPTIONAL:
            # pandas' own string inference: ``str`` (missing = NaN) in pandas 3, object (None) in pandas 2
            df[c] = pd.Series(data[c], dtype=None if any(isinstance(v, str) for v in data[c]) else object)
        elif c in _FLOAT:
            df[c] = pd.Series([_NAN if v is None else v for v in data[c]], dtype="float64")
        elif c == "n":
            df[c] = pd.Series(data[c], dtype="int64")
        elif c == "seed":
            df[c] = pd.Series(data[c], dtype="Int64")
    return df


def write_results(df: pd.DataFrame | Iterable[Mapping[str, Any]], out_dir: str | os.PathLike[str],
                  name: str = "results") -> dict[str, Path]:
    """Check a results table and write ``<name>.parquet`` and ``<name>.csv`` into ``out_dir``.

    Each file is written to a temp file in ``out_dir``, fsynced and renamed into place
    (:func:`xlprobe.durable.atomic_write`), so a reader never sees a half-written file and a crash
    leaves the previous version.

    Returns
    -------
    dict
        ``{"parquet": path, "csv": path}``.

    Raises
    ------
    DataError
        If the table does not check (see :func:`results_frame`).
    """
    frame = results_frame(df)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not name or "/" in name or name.startswith("."):
        raise DataError(f"results name {name!r} must be a plain file stem", hint="e.g. 'results' or 'similarity'")
    paths = {"parquet": out / f"{name}.parquet", "csv": out / f"{name}.csv"}
    atomic_write(paths["parquet"], lambda p: frame.to_parquet(p, index=False, engine="pyarrow"))
    atomic_write(paths["csv"], lambda p: frame.to_csv(p, index=False, na_rep=""))
    return paths


def read_results(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a results table (a directory from :func:`write_results`, a .parquet or a .csv) and check it."""
    p = Path(path)
    if p.is_dir():
        p = p / PARQUET
    if not p.is_file():
        raise DataError(f"no results table at {str(p)!r}", hint="write one with xlprobe.results.write_results")
    df = pd.read_csv(p, keep_default_na=True) if p.suffix == ".csv" else pd.read_parquet(p)
    return results_frame(df)
