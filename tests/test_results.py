"""The tidy results table: column order, NaN CIs, type checks, atomic parquet + csv writes."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xlprobe import results as results_mod
from xlprobe.errors import DataError
from xlprobe.results import make_row, make_rows, read_results, results_frame, write_results
from xlprobe.types import RESULT_COLUMNS


def _rows():
    rows = make_rows(checkpoint="facebook/mbart-large-50", layer=["encoder.0", "encoder.1"],
                     measure="cka.linear", value=np.array([0.9, 0.8]), n=500,
                     ref_checkpoint="facebook/mbart-large-50-many-to-many-mmt", ref_layer="encoder.0", kernel="linear")
    rows.append(make_row(checkpoint="facebook/mbart-large-50", layer="encoder.0", measure="probe.linear",
                         value=0.97, ci_low=0.95, ci_high=0.99, n=400, seed=0, task="language", lang="fr",
                         control="shuffled"))
    return rows


def test_columns_in_canonical_order_and_types():
    df = results_frame(_rows())
    assert tuple(df.columns[:7]) == RESULT_COLUMNS
    assert list(df.columns[7:]) == ["task", "control", "ref_checkpoint", "ref_layer", "lang", "seed", "kernel"]
    assert df["value"].dtype == np.float64 and df["n"].dtype == np.int64 and str(df["seed"].dtype) == "Int64"
    assert df["ci_low"].isna().tolist() == [True, True, False]  # NaN, not missing
    assert df.loc[2, "ci_high"] == 0.99 and pd.isna(df.loc[0, "task"]) and pd.isna(df.loc[2, "ref_layer"])


def test_missing_cis_are_nan_columns_even_when_no_row_has_one():
    df = results_frame([make_row(checkpoint="m", layer="encoder.0", measure="svcca", value=0.5, n=10)])
    assert list(df.columns) == list(RESULT_COLUMNS)
    assert math.isnan(df.loc[0, "ci_low"]) and math.isnan(df.loc[0, "ci_high"])
    empty = results_frame([])
    assert list(empty.columns) == list(RESULT_COLUMNS) and len(empty) == 0


@pytest.mark.parametrize("change,match", [
    ({"value": "0.5"}, "value"),
    ({"value": [0.5]}, "value"),
    ({"n": -1}, "n"),
    ({"n": True}, "n"),
    ({"n": 2.5}, "n"),
    ({"checkpoint": None}, "checkpoint"),
    ({"layer": ""}, "layer"),
    ({"ci_low": 0.1}, "both ends"),
    ({"ci_low": 0.9, "ci_high": 0.1}, "above"),
    ({"seed": 1.5}, "seed"),
    ({"lang": 3}, "lang"),
])
def test_bad_rows_are_refused(change, match):
    row = {"checkpoint": "m", "layer": "encoder.0", "measure": "cka", "value": 0.5, "n": 10, **change}
    with pytest.raises(DataError, match=match):
        results_frame([row])


def test_missing_required_column_and_bad_shapes():
    with pytest.raises(DataError, match="lacks required"):
        results_frame([{"checkpoint": "m", "layer": "l", "measure": "cka", "value": 0.5}])
    with pytest.raises(DataError, match="row 1"):
        results_frame([make_row(checkpoint="m", layer="l", measure="c", value=1.0, n=1), {"checkpoint": "m"}])
    with pytest.raises(DataError, match="different lengths"):
        make_rows(checkpoint="m", layer=["a", "b"], measure="c", value=[1.0], n=3)
    with pytest.raises(DataError, match="single mapping"):
        results_frame(make_row(checkpoint="m", layer="l", measure="c", value=1.0, n=1))


def test_write_and_read_back(tmp_path: Path):
    df = results_frame(_rows())
    paths = write_results(df, tmp_path / "out")
    assert set(paths) == {"parquet", "csv"} and all(p.is_file() for p in paths.values())
    assert sorted(os.listdir(tmp_path / "out")) == ["results.csv", "results.parquet"]  # no temp files left
    pd.testing.assert_frame_equal(read_results(tmp_path / "out"), df)
    back = read_results(paths["csv"])
    assert list(back.columns) == list(df.columns)
    np.testing.assert_allclose(back["value"], df["value"])
    assert back["ci_low"].isna().sum() == 2 and back["seed"].tolist()[2] == 0


def test_writes_are_atomic(tmp_path: Path, monkeypatch):
    out = tmp_path / "out"
    write_results(_rows()[:1], out)
    before = (out / "results.parquet").read_bytes()

    def broken(self, path, **kw):
        Path(path).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", broken)
    with pytest.raises(OSError, match="disk full"):
        write_results(_rows(), out)
    assert (out / "results.parquet").read_bytes() == before  # the old table is intact
    assert sorted(os.listdir(out)) == ["results.csv", "results.parquet"]


def test_write_refuses_an_unchecked_table(tmp_path: Path):
    bad = pd.DataFrame({"checkpoint": ["m"], "layer": ["l"], "measure": ["c"], "value": ["high"], "n": [1]})
    with pytest.raises(DataError, match="value"):
        write_results(bad, tmp_path)
    assert not (tmp_path / results_mod.PARQUET).exists()
