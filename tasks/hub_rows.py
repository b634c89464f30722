"""Row -> Record mappings of the hub datasets, plain functions over dicts (testable without the hub)."""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from xlprobe.types import Record

__all__ = ["align_parallel", "flores_records", "pawsx_records", "tatoeba_records", "xnli_records"]

_NLI_LABELS = {0: "entailment", 1: "neutral", 2: "contradiction"}
_PAWS_LABELS = {0: "no", 1: "yes"}


def _text(row: Mapping[str, Any], *keys: str) -> str:
    """The first present value among ``keys``, stripped ('' when none)."""
    for key in keys:
        if row.get(key) is not None:
            return str(row[key]).strip()
    return ""


def _label(value: Any, names: Mapping[int, str]) -> str | None:
    """A class id (int, or its string) -> its name; None for missing / -1 / unknown."""
    try:
        return names.get(int(value))
    except (TypeError, ValueError):
        return str(value) if str(value) in names.values() else None


def flores_records(rows: Iterable[Mapping[str, Any]], lang: str, split: str) -> list[Record]:
    """FLORES rows of one language -> Records grouped by sentence id (``flores:{split}:{id}``).

    Rows carry ``text`` (FLORES+) or ``sentence`` (facebook/flores); ``topic`` and ``domain``
    become labels when present. Rows with an empty text are skipped.
    """
    out = []
    for i, row in enumerate(rows):
        text = _text(row, "text", "sentence")
        if not text:
            continue
        group = f"flores:{split}:{row.get('id', i)}"
        labels = {"language": lang}
        labels.update({k: str(row[k]).strip() for k in ("topic", "domain") if str(row.get(k) or "").strip()})
        out.append(Record(id=f"{lang}:{group}", text=text, lang=lang, group=group, labels=labels))
    return out


def tatoeba_records(rows: Iterable[Mapping[str, Any]], lang: str, pivot: str, config: str) -> list[Record]:
    """Tatoeba pairs -> two Records per pair (``sentence1`` in ``lang``, ``sentence2`` in ``pivot``).

    Both sides share the group ``tatoeba:{config}:{row index}``; pairs with an empty side are skipped.
    """
    out = []
    for i, row in enumerate(rows):
        src, tgt = _text(row, "sentence1"), _text(row, "sentence2")
        if not src or not tgt:
            continue
        group = f"tatoeba:{config}:{i}"
        out.append(Record(id=f"{lang}:{group}", text=src, lang=lang, group=group, labels={"language": lang}))
        out.append(Record(id=f"{pivot}:{group}", text=tgt, lang=pivot, group=group, labels={"language": pivot}))
    return out


def _pair_records(rows: Iterable[Mapping[str, Any]], lang: str, prefix: str, keys: tuple[str, str],
                  task: str, names: Mapping[int, str], sep: str, use_id: bool) -> list[Record]:
    """Sentence-pair rows -> Records with text ``first + sep + second`` and a class label."""
    out = []
    for i, row in enumerate(rows):
        first, second = _text(row, keys[0]), _text(row, keys[1])
        label = _label(row.get("label"), names)
        if not first or not second or label is None:
            continue
        group = f"{prefix}:{row.get('id', i) if use_id else i}"
        out.append(Record(id=f"{lang}:{group}", text=f"{first}{sep}{second}", lang=lang, group=group,
                          labels={"language": lang, task: label}))
    return out


def xnli_records(rows: Iterable[Mapping[str, Any]], lang: str, split: str, sep: str = " ") -> list[Record]:
    """XNLI rows -> Records ``premise + sep + hypothesis`` with label ``nli``.

    The group is the row index (``xnli:{split}:{i}``): the validation and test sets are the same
    sentences in every language, in the same order. Rows without a valid label are skipped.
    """
    return _pair_records(rows, lang, f"xnli:{split}", ("premise", "hypothesis"), "nli", _NLI_LABELS, sep,
                         use_id=False)


def pawsx_records(rows: Iterable[Mapping[str, Any]], lang: str, split: str, sep: str = " ") -> list[Record]:
    """PAWS-X rows -> Records ``sentence1 + sep + sentence2`` with label ``paraphrase`` (yes/no).

    The group is the PAWS id (``pawsx:{split}:{id}``), shared by the translations of a pair.
    Rows with an empty sentence (untranslated pairs) or no label are skipped.
    """
    return _pair_records(rows, lang, f"pawsx:{split}", ("sentence1", "sentence2"), "paraphrase",
                         _PAWS_LABELS, sep, use_id=True)


def align_parallel(per_lang: Sequence[Sequence[Record]], parallel: bool = True) -> tuple[list[Record], int]:
    """Interleave per-language records by group (first-seen order), then language order.

    With ``parallel``, groups missing from any language are dropped; returns the records and the
    number of groups dropped.
    """
    by_group: dict[str, list[Record | None]] = {}
    for li, records in enumerate(per_lang):
        for r in records:
            slots = by_group.setdefault(str(r.group), [None] * len(per_lang))
            slots[li] = r
    out, dropped = [], 0
    for slots in by_group.values():
        if parallel and any(s is None for s in slots):
            dropped += 1
            continue
        out.extend(s for s in slots if s is not None)
    return out, dropped
