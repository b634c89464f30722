"""The few core types that flow between stages: Record, Dataset, CapturePoint, StoreKey."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Union

__all__ = [
    "Record",
    "Dataset",
    "CapturePoint",
    "LayerSpec",
    "StoreKey",
    "Side",
    "Where",
    "RESULT_COLUMNS",
    "POOLINGS",
]

Side = Literal["encoder", "decoder"]
Where = Literal["embeddings", "block_out", "final_norm"]

#: Poolings understood by the capture layer.
POOLINGS = ("mean", "first", "last", "max", "tag", "tokens")

#: Leading columns of every results table, always in this order.
RESULT_COLUMNS = ("checkpoint", "layer", "measure", "value", "ci_low", "ci_high", "n")


@dataclass(frozen=True)
class Record:
    """One text of a dataset: its id, text, language, parallel group and labels.

    ``lang`` is the dataset's language code (``en``, ``fr``...); the model family maps it to the
    model's own tag (``en_XX``). ``group`` ties together translations of the same sentence.
    ``target_text`` / ``target_lang`` are used to teacher-force a decoder.
    """

    id: str
    text: str
    lang: str
    group: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    target_text: str | None = None
    target_lang: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON / tables."""
        return {
            "id": self.id,
            "text": self.text,
            "lang": self.lang,
            "group": self.group,
            "labels": dict(self.labels),
            "target_text": self.target_text,
            "target_lang": self.target_lang,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Record:
        """Inverse of :meth:`to_dict`."""
        return cls(
            id=str(d["id"]),
            text=d["text"],
            lang=d["lang"],
            group=d.get("group"),
            labels=dict(d.get("labels") or {}),
            target_text=d.get("target_text"),
            target_lang=d.get("target_lang"),
        )


@dataclass(frozen=True)
class Dataset:
    """An ordered collection of records plus what the loader knows about them.

    ``meta`` carries provenance: the source, the selection, how many texts were filtered and why,
    licence status per source. ``fingerprint`` identifies the exact content and order.
    """

    name: str
    records: tuple[Record, ...]
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "records", tuple(self.records))

    def __len__(self) -> int:
        return len(self.records)

    @classmethod
    def from_texts(
        cls,
        texts: Sequence[str],
        langs: str | Sequence[str] = "und",
        *,
        labels: Mapping[str, Sequence[Any]] | None = None,
        groups: Sequence[str | None] | None = None,
        name: str = "texts",
    ) -> Dataset:
        """Build a dataset from parallel lists, refusing lists of different lengths."""
        from xlprobe.errors import DataError

        if isinstance(texts, str):
            raise DataError("texts must be a sequence of strings, got a single string", hint="wrap it in a list")
        n = len(texts)
        lang_list = [langs] * n if isinstance(langs, str) else list(langs)
        columns: dict[str, Sequence[Any]] = {"langs": lang_list, **{f"labels[{k!r}]": v for k, v in (labels or {}).items()}}
        if groups is not None:
            columns["groups"] = list(groups)
        for what, values in columns.items():
            if len(values) != n:
                raise DataError(f"{n} texts but {len(values)} {what}",
                                hint=f"give one value of {what} per text, in the same order")
        return cls(name, tuple(
            Record(str(i), t, lang_list[i], None if groups is None else groups[i],
                   {k: str(v[i]) for k, v in (labels or {}).items()})
            for i, t in enumerate(texts)))

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __getitem__(self, i: int) -> Record:
        return self.records[i]

    @property
    def texts(self) -> list[str]:
        """The texts, in order."""
        return [r.text for r in self.records]

    @property
    def langs(self) -> list[str]:
        """The language of each record, in order."""
        return [r.lang for r in self.records]

    @property
    def groups(self) -> list[str | None]:
        """The parallel group of each record, in order."""
        return [r.group for r in self.records]

    def labels(self, task: str) -> list[str]:
        """Labels of ``task`` for every record (``language`` falls back to ``lang``)."""
        out = []
        for r in self.records:
            if task in r.labels:
                out.append(r.labels[task])
            elif task in ("language", "lang"):
                out.append(r.lang)
            else:
                from xlprobe.errors import DataError

                raise DataError(
                    f"record {r.id!r} of dataset {self.name!r} has no label {task!r}",
                    hint=f"labels present: {sorted(r.labels)}",
                )
        return out

    def subset(self, indices: Sequence[int], name: str | None = None) -> Dataset:
        """A new dataset of the records at ``indices``, meta kept."""
        return Dataset(name or self.name, tuple(self.records[i] for i in indices), dict(self.meta))

    @property
    def fingerprint(self) -> str:
        """Hash of every record's content and position (16 hex chars)."""
        return records_fingerprint(self.records)


def records_fingerprint(records: Sequence[Record]) -> str:
    """Order-sensitive content hash of records, stable across processes and versions."""
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps(r.to_dict(), sort_keys=True, ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class CapturePoint:
    """A place in a model whose output xlprobe can capture.

    ``name`` is the model's own module path as loaded (``model.encoder.layers.3``); for the embedding
    output it is the first block's path with ``:input`` (the block's input, which every family feeds
    with its embedding output). ``alias`` is a short family-independent name (``encoder.3``,
    ``encoder.embeddings``, ``encoder.final_norm``). ``index`` is the block index (-1 for embeddings,
    the number of blocks for the final norm) and ``hidden_state`` the index into HF's
    ``*hidden_states`` tuple that holds the same tensor, or None when no entry does.
    """

    name: str
    alias: str
    side: Side
    index: int
    where: Where
    module: str
    hidden_state: int | None = None

    @property
    def is_input(self) -> bool:
        """True when the point reads the input of ``module`` (a forward pre-hook)."""
        return self.name.endswith(":input")


#: What a user may pass as ``layers``: a name or alias, a glob, a list of them, or a predicate.
LayerSpec = Union[str, Sequence[str], Callable[[CapturePoint], bool]]


@dataclass(frozen=True)
class StoreKey:
    """Identifies one shard: which model, which point, which pooling/options, which data."""

    model: str
    point: str
    pooling: str
    data: str
    options: str = ""

    @property
    def id(self) -> str:
        """Short stable id used as the shard's file stem."""
        raw = "|".join((self.model, self.point, self.pooling, self.data, self.options))
        return hashlib.sha256(raw.encode()).hexdigest()[:20]

    def to_dict(self) -> dict[str, str]:
        """Plain dict for the manifest."""
        return {
            "model": self.model,
            "point": self.point,
            "pooling": self.pooling,
            "data": self.data,
            "options": self.options,
        }
