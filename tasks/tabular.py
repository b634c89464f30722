"""Generic loaders: TSV, CSV and JSON Lines files mapped to Records through a column mapping.

Every loader takes the same mapping: ``text=`` (column of the text), ``lang=`` (column of the
language) or ``fixed_lang=`` (one code for every row), ``id=``, ``group=`` (parallel group),
``labels=`` (label columns), ``target_text=`` and ``target_lang=`` / ``fixed_target_lang=``.
Errors name the file, the line and the column.
"""
from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xlprobe.errors import DataError
from xlprobe.tasks.sampling import check_limit, sample_indices
from xlprobe.types import Dataset, Record

__all__ = ["FORMATS", "ColumnMap", "load_csv", "load_jsonl", "load_table", "load_tsv"]

#: File formats and the extensions that select them in :func:`load_table`.
FORMATS = {"tsv": (".tsv", ".tab"), "csv": (".csv",), "jsonl": (".jsonl", ".ndjson")}

_ON_EMPTY = ("drop", "error")


@dataclass(frozen=True)
class ColumnMap:
    """Which column feeds which Record field; ``labels`` maps task name -> column."""

    text: str = "text"
    lang: str | None = "lang"
    fixed_lang: str | None = None
    id: str | None = None
    group: str | None = None
    labels: Mapping[str, str] | None = None
    target_text: str | None = None
    target_lang: str | None = None
    fixed_target_lang: str | None = None

    def required(self) -> dict[str, str]:
        """Record field (or ``label:task``) -> column, for every column that must exist."""
        out = {"text": self.text}
        if self.fixed_lang is None and self.lang is not None:
            out["lang"] = self.lang
        for name in ("id", "group", "target_text"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.target_lang is not None and self.fixed_target_lang is None:
            out["target_lang"] = self.target_lang
        out.update({f"label:{task}": col for task, col in (self.labels or {}).items()})
        return out


def _label_map(labels: str | Sequence[str] | Mapping[str, str] | None) -> dict[str, str] | None:
    """Label columns as ``{task: column}``; ``"a,b"`` and ``["a", "task:col"]`` are accepted."""
    if labels is None:
        return None
    if isinstance(labels, Mapping):
        return {str(k): str(v) for k, v in labels.items()}
    items = labels.split(",") if isinstance(labels, str) else list(labels)
    out = {}
    for item in (str(i).strip() for i in items):
        if item:
            task, _, col = item.partition(":")
            out[task] = col or task
    return out


def _column_map(text: str, lang: str | None, fixed_lang: str | None, id: str | None, group: str | None,
                labels: Any, target_text: str | None, target_lang: str | None,
                fixed_target_lang: str | None) -> ColumnMap:
    """Build and check the mapping (a language must come from somewhere)."""
    if fixed_lang is None and lang is None:
        raise DataError("no language given: lang=None and fixed_lang=None",
                        hint="pass lang=COLUMN, or fixed_lang='en' to give every row the same language")
    return ColumnMap(text, lang, fixed_lang, id, group, _label_map(labels), target_text, target_lang,
                     fixed_target_lang)


def _check_columns(path: Path, header: Sequence[str], cmap: ColumnMap, line: int) -> None:
    """Raise DataError listing every mapped column missing from ``header``."""
    missing = {field: col for field, col in cmap.required().items() if col not in header}
    if not missing:
        return
    shown = ", ".join(f"{col!r} (for {field})" for field, col in missing.items())
    hint = f"columns present: {list(header)!r}; map them with text=, lang=, labels=..."
    if "lang" in missing:
        hint += "; or fixed_lang='xx' to give every row the same language"
    raise DataError(f"{path}, line {line}: missing column(s) {shown}", hint=hint)


def _delimited_rows(path: Path, delimiter: str, columns: Sequence[str] | None) -> Iterator[tuple[int, dict]]:
    """(line number, row dict) of a TSV / CSV file; the header is the first row unless ``columns``."""
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh, delimiter=delimiter, quoting=quoting)
        header = list(columns) if columns is not None else next(reader, None)
        if header is None:
            raise DataError(f"{path} is empty", hint="the first line must name the columns (or pass columns=)")
        yield 1 if columns is None else 0, {"__header__": header}
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != len(header):
                raise DataError(f"{path}, line {reader.line_num}: {len(row)} field(s), the header has "
                                f"{len(header)} ({header!r})",
                                hint="a TSV cell may not contain a tab (no quoting)" if delimiter == "\t"
                                else "check the delimiter, and quote cells that contain commas")
            yield reader.line_num, dict(zip(header, row))


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) of a JSON Lines file, skipping blank lines."""
    with path.open(encoding="utf-8-sig") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}, line {n}: not valid JSON ({exc.msg} at column {exc.colno})",
                                hint="each line must hold one JSON object") from exc
            if not isinstance(obj, dict):
                raise DataError(f"{path}, line {n}: expected a JSON object, got {type(obj).__name__}",
                                hint='each line must look like {"text": "...", "lang": "en"}')
            yield n, obj


def _cell(path: Path, line: int, row: Mapping[str, Any], column: str, field: str) -> str:
    """The value of ``column`` as text; DataError naming file, line and column when absent."""
    if column not in row:
        raise DataError(f"{path}, line {line}: no key {column!r} (for {field})",
                        hint=f"keys present on that line: {sorted(row)!r}")
    value = row[column]
    return "" if value is None else str(value)


class _Builder:
    """Turns rows into Records under a ColumnMap, counting or refusing empty values."""

    def __init__(self, path: Path, cmap: ColumnMap, on_empty: str) -> None:
        self.path, self.cmap, self.on_empty = path, cmap, on_empty
        self.dropped = {"empty_text": 0, "empty_lang": 0, "empty_label": 0}
        self.seen: dict[str, int] = {}

    def _empty(self, line: int, column: str, field: str) -> None:
        """Count an empty value, or raise when ``on_empty='error'``."""
        if self.on_empty == "error":
            raise DataError(f"{self.path}, line {line}: empty {field} in column {column!r}",
                            hint="fix the row, or pass on_empty='drop' to skip such rows and count them")
        self.dropped["empty_label" if field.startswith("label") else f"empty_{field}"] += 1

    def record(self, line: int, row: Mapping[str, Any]) -> Record | None:
        """The Record of one row, or None when an empty value drops it."""
        c, p = self.cmap, self.path
        text = _cell(p, line, row, c.text, "text").strip()
        if not text:
            return self._empty(line, c.text, "text")
        lang = c.fixed_lang or _cell(p, line, row, c.lang or "lang", "lang").strip()
        if not lang:
            return self._empty(line, c.lang or "lang", "lang")
        labels = {}
        for task, col in (c.labels or {}).items():
            labels[task] = _cell(p, line, row, col, f"label {task!r}").strip()
            if not labels[task]:
                return self._empty(line, col, f"label {task!r}")
        rid = _cell(p, line, row, c.id, "id").strip() if c.id else f"{p.stem}:{line}"
        if rid in self.seen:
            raise DataError(f"{p}, line {line}: id {rid!r} already used on line {self.seen[rid]}",
                            hint="ids must be unique; drop id= to number rows by line")
        self.seen[rid] = line
        group = _cell(p, line, row, c.group, "group").strip() if c.group else ""
        return Record(
            id=rid, text=text, lang=lang, group=group or None, labels=labels,
            target_text=_cell(p, line, row, c.target_text, "target_text") if c.target_text else None,
            target_lang=c.fixed_target_lang or (_cell(p, line, row, c.target_lang, "target_lang")
                                                if c.target_lang else None),
        )


def _limit_records(records: list[Record], limit: int | None, seed: int, by_group: bool) -> list[Record]:
    """A seeded sample of ``limit`` groups (or records), kept in file order."""
    if limit is None:
        return records
    if not by_group:
        return [records[i] for i in sample_indices(len(records), limit, seed)]
    groups = list(dict.fromkeys(r.group if r.group is not None else f"id:{r.id}" for r in records))
    keep = {groups[i] for i in sample_indices(len(groups), limit, seed)}
    return [r for r in records if (r.group if r.group is not None else f"id:{r.id}") in keep]


def _load(path: str | Path, fmt: str, cmap: ColumnMap, *, columns: Sequence[str] | None, on_empty: str,
          limit: int | None, seed: int, name: str | None) -> Dataset:
    """Shared body of the three loaders."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"data file {str(p)!r} not found", hint="check the path (relative to the working directory)")
    if on_empty not in _ON_EMPTY:
        raise DataError(f"on_empty must be one of {_ON_EMPTY!r}, got {on_empty!r}", hint="on_empty='drop'")
    limit = check_limit(limit)
    builder, records, n_rows = _Builder(p, cmap, on_empty), [], 0
    rows: Iterable[tuple[int, dict]] = _jsonl_rows(p) if fmt == "jsonl" else _delimited_rows(
        p, "\t" if fmt == "tsv" else ",", columns)
    for line, row in rows:
        if "__header__" in row:
            _check_columns(p, row["__header__"], cmap, line)
            continue
        n_rows += 1
        rec = builder.record(line, row)
        if rec is not None:
            records.append(rec)
    if not records:
        raise DataError(f"{p}: no usable rows ({n_rows} read, dropped: {builder.dropped})",
                        hint="check the column mapping and that the file has data rows")
    kept = _limit_records(records, limit, seed, by_group=cmap.group is not None)
    meta = {
        "source": fmt, "path": str(p), "columns": {k: v for k, v in vars(cmap).items() if v is not None},
        "n_rows": n_rows, "dropped": builder.dropped, "limit": limit, "seed": seed,
        "labels": sorted(cmap.labels or {}), "n_records": len(kept),
    }
    return Dataset(name or p.stem, kept, meta)


_DOC_PARAMS = """
    Parameters
    ----------
    path : str or Path
        The file (UTF-8; a byte-order mark is ignored).
    text : str, default "text"
        Column holding the text.
    lang : str or None, default "lang"
        Column holding the language code; ignored when ``fixed_lang`` is given.
    fixed_lang : str, optional
        Language code of every row.
    id : str, optional
        Column of unique record ids; by default ``"{file stem}:{line}"``.
    group : str, optional
        Column of the parallel group (rows that translate each other share it).
    labels : str, sequence of str or mapping, optional
        Label columns: ``"topic,genre"``, ``["topic", "task:column"]`` or ``{"task": "column"}``.
    target_text, target_lang : str, optional
        Columns of the decoder-side text and its language (teacher forcing).
    fixed_target_lang : str, optional
        Target language of every row.
    on_empty : {"drop", "error"}, default "drop"
        Rows with an empty text, language or label are dropped and counted in
        ``meta["dropped"]``, or raise DataError naming the line and column.
    limit : int, optional
        Keep a seeded sample of this many groups (of records when there is no ``group``).
    seed : int, default 0
    name : str, optional
        Dataset name; the file stem by default.

    Returns
    -------
    Dataset
        Records in file order; ``meta`` has the path, mapping, row count and drop counts.
"""


def load_tsv(path: str | Path, *, text: str = "text", lang: str | None = "lang", fixed_lang: str | None = None,
             id: str | None = None, group: str | None = None,
             labels: str | Sequence[str] | Mapping[str, str] | None = None, target_text: str | None = None,
             target_lang: str | None = None, fixed_target_lang: str | None = None,
             columns: Sequence[str] | None = None, on_empty: str = "drop", limit: int | None = None,
             seed: int = 0, name: str | None = None) -> Dataset:
    """Load a tab-separated file (no quoting: a cell is everything between two tabs)."""
    cmap = _column_map(text, lang, fixed_lang, id, group, labels, target_text, target_lang, fixed_target_lang)
    return _load(path, "tsv", cmap, columns=columns, on_empty=on_empty, limit=limit, seed=seed, name=name)


def load_csv(path: str | Path, *, text: str = "text", lang: str | None = "lang", fixed_lang: str | None = None,
             id: str | None = None, group: str | None = None,
             labels: str | Sequence[str] | Mapping[str, str] | None = None, target_text: str | None = None,
             target_lang: str | None = None, fixed_target_lang: str | None = None,
             columns: Sequence[str] | None = None, on_empty: str = "drop", limit: int | None = None,
             seed: int = 0, name: str | None = None) -> Dataset:
    """Load a comma-separated file with standard CSV quoting."""
    cmap = _column_map(text, lang, fixed_lang, id, group, labels, target_text, target_lang, fixed_target_lang)
    return _load(path, "csv", cmap, columns=columns, on_empty=on_empty, limit=limit, seed=seed, name=name)


def load_jsonl(path: str | Path, *, text: str = "text", lang: str | None = "lang", fixed_lang: str | None = None,
               id: str | None = None, group: str | None = None,
               labels: str | Sequence[str] | Mapping[str, str] | None = None, target_text: str | None = None,
               target_lang: str | None = None, fixed_target_lang: str | None = None,
               on_empty: str = "drop", limit: int | None = None, seed: int = 0,
               name: str | None = None) -> Dataset:
    """Load a JSON Lines file: one JSON object per line, keys used as columns."""
    cmap = _column_map(text, lang, fixed_lang, id, group, labels, target_text, target_lang, fixed_target_lang)
    return _load(path, "jsonl", cmap, columns=None, on_empty=on_empty, limit=limit, seed=seed, name=name)


def load_table(path: str | Path, format: str | None = None, **kw: Any) -> Dataset:
    """Load a TSV, CSV or JSONL file, the format taken from ``format`` or the file extension.

    Keyword arguments are those of :func:`load_tsv`.
    """
    fmt = format or next((f for f, exts in FORMATS.items() if Path(path).suffix.lower() in exts), None)
    if fmt not in FORMATS:
        raise DataError(f"cannot tell the format of {str(path)!r} (format={format!r})",
                        hint=f"pass format= one of {sorted(FORMATS)}, or use a known extension {FORMATS}")
    loader = {"tsv": load_tsv, "csv": load_csv, "jsonl": load_jsonl}[fmt]
    return loader(path, **kw)


for _fn in (load_tsv, load_csv, load_jsonl):
    _fn.__doc__ = (_fn.__doc__ or "") + "\n" + _DOC_PARAMS
del _fn
