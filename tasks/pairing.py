"""Pair each record of a parallel dataset with the verse its decoder is teacher-forced on (the MT setting).

Without targets an encoder-decoder's decoder reads only its start prompt (``</s> [tgt_lang]``): a
constant ``decoder.embeddings`` and deeper states that see the source through cross-attention alone.
:func:`with_targets` gives every record the parallel text of its group in a target language, so the
decoder reads the translation, as in MT training:

- ``tgt="en"``: one row per record, teacher-forced on the English verse of its group; ids unchanged.
  Records that are English themselves are dropped (``own="drop"``, the default, counted in the log
  and in ``meta["targets"]``) or paired with another language (``own="fr"``).
- ``tgt="each"`` (or several codes, ``"en,fr"``): one row per record and target language other than
  its own, ids ``"{id}>{lang}"``.

Every row gets the label ``tgt_lang``. The target verses come from the dataset itself or from another
corpus (``tgt="bible:en"``, a data spec, or ``pool=``), matched by parallel group.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from xlprobe.errors import DataError
from xlprobe.tasks.sampling import with_cli_hint
from xlprobe.tasks.spec import SCHEMES, load_data
from xlprobe.types import Dataset, Record

__all__ = ["with_targets", "is_data_spec", "EACH", "TARGET_LABEL"]

log = logging.getLogger(__name__)

#: ``tgt`` value that pairs every record with every other language of its group.
EACH = "each"
#: Label every paired record carries: the language its decoder reads.
TARGET_LABEL = "tgt_lang"


def is_data_spec(tgt: str) -> bool:
    """True when ``tgt`` names a corpus (``bible:en``, ``x.tsv``) rather than language codes."""
    head = tgt.partition("?")[0]
    return "?" in tgt or head.partition(":")[0].lower() in SCHEMES or "/" in head or "." in head


def with_targets(data: Dataset, tgt: str | Sequence[str] = "en", *, pool: Dataset | None = None,
                 own: str = "drop", incomplete: str = "error", seed: int = 0) -> Dataset:
    """Records paired with the parallel text their decoder is teacher-forced on (target text and language).

    Parameters
    ----------
    data : Dataset
        Parallel records (each with a ``group``) and no targets yet.
    tgt : str or sequence of str, default "en"
        A language code; several (``"en,fr"`` or a list); ``"each"`` (every language of the pool); or
        a data spec (``"bible:en"``) whose corpus is the pool and whose languages are the targets.
    pool : Dataset, optional
        Where the target texts come from, matched by ``group``; default ``data`` itself.
    own : str, default "drop"
        With one target language, what records of that language get: ``"drop"`` (counted in the log
        and ``meta["targets"]["dropped_own"]``) or a language code to pair them with instead.
    incomplete : {"error", "drop"}, default "error"
        A group whose pool lacks a target language: DataError naming it, or drop the whole group.
    seed : int, default 0
        Seed of loading a pool given as a data spec.

    Returns
    -------
    Dataset
        One row per (record, target language): ``target_text`` / ``target_lang`` set, label
        ``tgt_lang``; ids unchanged with one target language, ``"{id}>{lang}"`` with several.
        ``meta["targets"]`` says what the decoder reads and what was dropped.
    """
    _check_input(data, own, incomplete)
    spec = None
    if isinstance(tgt, str) and is_data_spec(tgt):
        spec, pool = tgt, load_data(tgt, seed=seed)
    pool = data if pool is None else pool
    langs = _target_langs(tgt, pool, spec)
    table = _lookup(pool, langs + ([own] if own != "drop" else []))
    kept, dropped_groups = _complete_groups(data, table, langs, incomplete, spec)
    rows, dropped_own = _pair(kept, table, langs, own)
    if dropped_own:
        log.warning("with_targets: %d record(s) of language %r dropped (they would read their own verse); "
                    "own='<lang>' pairs them with another language instead", dropped_own, langs[0])
    if not rows:
        raise with_cli_hint(DataError(f"no record of {data.name!r} is left to pair with {langs}",
                                      hint="load languages other than the target (e.g. bible:fr,de with tgt='en')"),
                            "load languages other than the target (e.g. --data bible:en,fr,de --tgt en), or "
                            "--tgt-own fr to pair the target's own records with another language")
    targets = {"tgt": tgt if isinstance(tgt, str) else ",".join(tgt), "langs": langs,
               "pool": spec or ("data" if pool is data else pool.meta.get("spec", pool.name)),
               "own": own, "dropped_own": dropped_own, "incomplete": incomplete,
               "dropped_groups": dropped_groups, "n_sources": len(data), "n_rows": len(rows)}
    return Dataset(f"{data.name}>{targets['tgt']}", tuple(rows), {**data.meta, "targets": targets})


def _check_input(data: Dataset, own: str, incomplete: str) -> None:
    """DataError for a dataset that is not parallel or already has targets, or for bad options."""
    if incomplete not in ("error", "drop"):
        raise with_cli_hint(DataError(f"incomplete={incomplete!r} is not 'error' or 'drop'",
                                      hint="incomplete='drop' drops groups lacking a target language; 'error' "
                                      "names them"),
                            "--tgt-incomplete drop drops verses lacking a target language; error names them")
    if not own or not isinstance(own, str):
        raise with_cli_hint(DataError(f"own={own!r} is not 'drop' or a language code",
                                      hint="e.g. own='drop' or own='fr'"), "e.g. --tgt-own drop or --tgt-own fr")
    if len(data) == 0:
        raise DataError(f"dataset {data.name!r} is empty", hint="load some records first")
    loose = [r.id for r in data if r.group is None]
    if loose:
        raise DataError(f"{len(loose)} record(s) of {data.name!r} have no parallel group (first: {loose[:3]})",
                        hint="pairing needs parallel data: load a corpus with groups (bible:..., flores:...)")
    paired = [r.id for r in data if r.target_text is not None]
    if paired:
        raise DataError(f"{len(paired)} record(s) of {data.name!r} already have a target (first: {paired[:3]})",
                        hint="pair the dataset as loaded, before any target is set")


def _target_langs(tgt: str | Sequence[str], pool: Dataset, spec: str | None) -> list[str]:
    """The target languages ``tgt`` names, checked against the pool's."""
    have = list(dict.fromkeys(pool.langs))
    if spec is not None or tgt == EACH:
        return have
    langs = [t.strip() for t in (tgt.split(",") if isinstance(tgt, str) else tgt) if t.strip()]
    if not langs:
        raise with_cli_hint(DataError(f"tgt={tgt!r} names no language",
                                      hint="e.g. tgt='en', tgt='each' or tgt='bible:en'"),
                            "e.g. --tgt en, --tgt each or --tgt bible:en")
    absent = [lang for lang in langs if lang not in have]
    if absent:
        raise DataError(f"target language(s) {absent} absent from {pool.name!r} (languages: {have})",
                        hint=f"add them to the data (e.g. bible:{','.join(have + absent)}) or take the targets "
                             f"from another corpus: tgt='bible:{absent[0]}'")
    return langs


def _lookup(pool: Dataset, langs: Sequence[str]) -> dict[tuple[str, str], str]:
    """``{(group, lang): text}`` for the given languages; DataError when a language has two translations."""
    table: dict[tuple[str, str], str] = {}
    for r in pool:
        if r.lang not in langs or r.group is None:
            continue
        key = (r.group, r.lang)
        if key in table and table[key] != r.text:
            raise with_cli_hint(
                DataError(f"{pool.name!r} holds two {r.lang!r} texts of group {r.group!r} (e.g. two translations)",
                          hint="take the targets from one translation per language, e.g. tgt='bible:en' "
                               "(its default translation)"),
                "take the targets from one translation per language, e.g. --tgt bible:en (its default translation)")
        table[key] = r.text
    return table


def _complete_groups(data: Dataset, table: dict[tuple[str, str], str], langs: Sequence[str], incomplete: str,
                     spec: str | None) -> tuple[list[Record], int]:
    """The records whose group has every target language; DataError or a logged drop for the others."""
    missing: dict[str, list[str]] = defaultdict(list)
    for g in dict.fromkeys(data.groups):
        for lang in langs:
            if (g, lang) not in table:
                missing[str(g)].append(lang)
    if not missing:
        return list(data), 0
    if incomplete == "error":
        first = list(missing.items())[:5]
        everywhere = [lang for lang in langs if all(lang not in m for m in missing.values())]
        raise DataError(f"{len(missing)} of {len(set(data.groups))} group(s) lack a target text "
                        f"(group: missing languages, first ones: {first})",
                        hint=f"choose target languages present in every group ({everywhere or 'none is'}), "
                             "or drop those groups: incomplete='drop' (CLI --tgt-incomplete drop)"
                             + ("" if spec is None else f"; the targets come from {spec!r}"))
    log.warning("with_targets: %d group(s) dropped, lacking a target text (first: %s)", len(missing),
                list(missing)[:3])
    return [r for r in data if str(r.group) not in missing], len(missing)


def _pair(records: Sequence[Record], table: dict[tuple[str, str], str], langs: Sequence[str],
          own: str) -> tuple[list[Record], int]:
    """One row per record and target language other than its own; the count of records left unpaired."""
    rows: list[Record] = []
    dropped = 0
    for r in records:
        mine = [lang for lang in langs if lang != r.lang]
        if not mine and own != "drop" and own != r.lang:
            mine = [own]
        if not mine:
            dropped += 1
            continue
        for lang in mine:
            text = table.get((str(r.group), lang))
            if text is None:  # only a fallback language can be absent here
                raise with_cli_hint(
                    DataError(f"group {r.group!r} has no {lang!r} text to pair record {r.id!r} with (own={own!r})",
                              hint="choose an own= language present in every group, or own='drop'"),
                    "choose a --tgt-own language present in every verse, or --tgt-own drop")
            rows.append(_paired(r, lang, text, single=len(langs) == 1))
    return rows, dropped


def _paired(r: Record, lang: str, text: str, *, single: bool) -> Record:
    """``r`` teacher-forced on ``text`` in ``lang``: id kept with one target language, suffixed otherwise."""
    labels: dict[str, Any] = {**r.labels, TARGET_LABEL: lang}
    return replace(r, id=r.id if single else f"{r.id}>{lang}", labels=labels, target_text=text, target_lang=lang)
