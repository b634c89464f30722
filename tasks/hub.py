"""Loaders for Hugging Face hub datasets: FLORES+, Tatoeba, XNLI and PAWS-X.

``datasets`` (the optional extra ``xlprobe[hub]``) is imported only when a loader runs. Where the hub
cannot be reached, pass ``data_dir=`` (a local copy) or fill the cache once and set
``HF_DATASETS_OFFLINE=1``; the error raised says so. The row -> Record mappings (``*_records``, in
``hub_rows.py`` and re-exported here) are plain functions over dicts, testable without the hub.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xlprobe.errors import DataError
from xlprobe.tasks.hub_rows import (
    align_parallel,
    flores_records,
    pawsx_records,
    tatoeba_records,
    xnli_records,
)
from xlprobe.tasks.sampling import check_limit, sample_indices
from xlprobe.types import Dataset, Record

__all__ = [
    "FLORES_CODES",
    "HUB_SOURCES",
    "PAWSX_LANGS",
    "TATOEBA_CODES",
    "XNLI_LANGS",
    "HubSource",
    "align_parallel",
    "flores_records",
    "load_flores",
    "load_pawsx",
    "load_tatoeba",
    "load_xnli",
    "pawsx_records",
    "tatoeba_records",
    "xnli_records",
]


@dataclass(frozen=True)
class HubSource:
    """A hub dataset: its id, splits, licence status (``yes``/``no``/``check``) and terms."""

    key: str
    name: str
    hub_id: str
    splits: tuple[str, ...]
    licence: str
    terms: str
    langs: str

    @property
    def shippable(self) -> bool:
        """True when artifacts derived from it may be shipped."""
        return self.licence == "yes"


#: The hub datasets xlprobe can load, by spec scheme.
HUB_SOURCES: dict[str, HubSource] = {
    s.key: s
    for s in (
        HubSource("flores", "FLORES+ (FLORES-200)", "openlanguagedata/flores_plus", ("dev", "devtest"),
                  "yes", "CC BY-SA 4.0; gated on the hub (accept the terms, then log in)",
                  "~200 language varieties, codes like eng_Latn"),
        HubSource("tatoeba", "Tatoeba bitext (MTEB)", "mteb/tatoeba-bitext-mining", ("test",),
                  "yes", "CC BY 2.0 FR", "~110 languages paired with English, ISO 639-3 codes like fra"),
        HubSource("xnli", "XNLI", "facebook/xnli", ("train", "validation", "test"),
                  "check", "CC BY-NC 4.0 (non-commercial)", "15 languages: ar bg de el en es fr hi ru sw th tr ur vi zh"),
        HubSource("pawsx", "PAWS-X", "google-research-datasets/paws-x", ("train", "validation", "test"),
                  "yes", "free use, acknowledge Google", "7 languages: de en es fr ja ko zh"),
    )
}

#: ISO 639-1 code -> FLORES+ config (other FLORES codes may be passed as they are).
FLORES_CODES = {
    "en": "eng_Latn", "fr": "fra_Latn", "de": "deu_Latn", "es": "spa_Latn", "it": "ita_Latn",
    "pt": "por_Latn", "ru": "rus_Cyrl", "uk": "ukr_Cyrl", "ar": "arb_Arab", "fa": "pes_Arab",
    "vi": "vie_Latn", "tl": "tgl_Latn", "zh": "cmn_Hans", "ja": "jpn_Jpan", "ko": "kor_Hang",
    "hi": "hin_Deva", "bn": "ben_Beng", "tr": "tur_Latn", "sw": "swh_Latn", "ro": "ron_Latn",
    "pl": "pol_Latn", "id": "ind_Latn", "nl": "nld_Latn", "cs": "ces_Latn", "fi": "fin_Latn",
    "sv": "swe_Latn", "he": "heb_Hebr", "th": "tha_Thai", "el": "ell_Grek", "hu": "hun_Latn",
}

#: ISO 639-1 code -> ISO 639-3 code used by the Tatoeba configs (``fra-eng``).
TATOEBA_CODES = {
    "en": "eng", "fr": "fra", "de": "deu", "es": "spa", "it": "ita", "pt": "por", "ru": "rus",
    "uk": "ukr", "ar": "ara", "fa": "pes", "vi": "vie", "tl": "tgl", "zh": "cmn", "ja": "jpn",
    "ko": "kor", "hi": "hin", "bn": "ben", "tr": "tur", "sw": "swh", "ro": "ron", "pl": "pol",
    "id": "ind", "nl": "nld", "cs": "ces", "fi": "fin", "sv": "swe", "he": "heb", "th": "tha",
    "el": "ell", "hu": "hun",
}

XNLI_LANGS = ("ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh")
PAWSX_LANGS = ("de", "en", "es", "fr", "ja", "ko", "zh")

logger = logging.getLogger(__name__)


def _import_datasets(src: HubSource) -> Any:
    """The ``datasets`` module, or a DataError saying how to install it or load a local copy."""
    try:
        import datasets
    except ImportError as exc:
        raise DataError(
            f"loading {src.name} ({src.hub_id}) needs the 'datasets' package, which is not installed",
            hint="pip install 'xlprobe[hub]'; or export the data to TSV/JSONL and use "
                 "load_tsv / load_jsonl ('tsv:FILE?text=COLUMN&lang=COLUMN')",
        ) from exc
    return datasets


def _unavailable(src: HubSource, target: str, config: str, split: str, exc: Exception) -> DataError:
    """The error raised when a hub dataset cannot be loaded, with every way around it."""
    gated = " FLORES+ is gated: accept its terms on the hub page, then `huggingface-cli login`." \
        if src.key == "flores" else ""
    return DataError(
        f"could not load {src.name} ({target}, config {config!r}, split {split!r}): "
        f"{type(exc).__name__}: {exc}",
        hint=(
            "the Hugging Face hub may be unreachable, or offline mode is on. Either download it where "
            f"there is network (huggingface-cli download --repo-type dataset {src.hub_id} --local-dir DIR, "
            "or save_to_disk one folder per config) and pass data_dir=DIR (spec: ?data_dir=DIR); or load it "
            "once online to fill the cache and then set HF_DATASETS_OFFLINE=1 (with cache_dir= if not the "
            "default); or export the rows to TSV/JSONL and use load_tsv / load_jsonl "
            "('tsv:FILE?text=COLUMN&lang=COLUMN')." + gated
        ),
    )


def _from_disk(datasets: Any, folder: Path, split: str) -> Any | None:
    """A split saved with ``save_to_disk`` under ``folder`` (DatasetDict or one Dataset), else None."""
    if (folder / "dataset_dict.json").is_file():
        return datasets.load_from_disk(str(folder))[split]
    if (folder / split / "state.json").is_file():
        return datasets.load_from_disk(str(folder / split))
    if (folder / "state.json").is_file():
        return datasets.load_from_disk(str(folder))
    return None


def _load_rows(src: HubSource, config: str, split: str, *, data_dir: str | Path | None,
               hub_id: str | None, cache_dir: str | Path | None) -> list[dict[str, Any]]:
    """Rows of one config / split, from ``data_dir`` when given, else from the hub (or its cache)."""
    if split not in src.splits:
        raise DataError(f"{src.name} has no split {split!r}", hint=f"splits: {list(src.splits)}")
    if data_dir is not None and not Path(data_dir).is_dir():
        raise DataError(f"data_dir {str(data_dir)!r} for {src.name} is not a directory",
                        hint=f"point it at a local copy of {src.hub_id} (a hub download or save_to_disk folders)")
    datasets = _import_datasets(src)
    target = str(data_dir) if data_dir is not None else hub_id or src.hub_id
    try:
        ds = None
        if data_dir is not None:
            ds = _from_disk(datasets, Path(data_dir) / config, split) or _from_disk(datasets, Path(data_dir), split)
        if ds is None:
            ds = datasets.load_dataset(target, config, split=split,
                                       cache_dir=str(cache_dir) if cache_dir is not None else None)
    except Exception as exc:  # the hub client raises many types (ConnectionError, OSError, ValueError...)
        raise _unavailable(src, target, config, split, exc) from exc
    return [dict(row) for row in ds]


def _check_langs(src: HubSource, langs: str | Iterable[str], valid: Sequence[str] | None) -> list[str]:
    """Requested languages as a list, checked against ``valid`` when the set is closed."""
    items = [x.strip() for x in (langs.split(",") if isinstance(langs, str) else langs) if x.strip()]
    if not items:
        raise DataError(f"no language given for {src.name}", hint=f"languages: {src.langs}")
    bad = [x for x in items if valid is not None and x not in valid]
    if bad:
        raise DataError(f"{src.name} has no language(s) {bad!r}", hint=f"languages: {', '.join(valid or [])}")
    return list(dict.fromkeys(items))


def _limit_groups(records: list[Record], limit: int | None, seed: int) -> list[Record]:
    """A seeded sample of ``limit`` groups, records kept in their order."""
    if limit is None:
        return records
    groups = list(dict.fromkeys(r.group for r in records))
    keep = {groups[i] for i in sample_indices(len(groups), limit, seed)}
    return [r for r in records if r.group in keep]


def _parallel_dataset(src: HubSource, langs: list[str], configs: list[str], split: str,
                      mapper: Callable[[list[dict[str, Any]], str], list[Record]], *, parallel: bool,
                      limit: int | None, seed: int, extra: Mapping[str, Any], **load: Any) -> Dataset:
    """Load one config per language, map rows, align groups, sample and describe the result."""
    limit = check_limit(limit)
    if not src.shippable:
        logger.warning("%s is licensed %s: probing it locally is fine, but check the terms before shipping "
                       "artifacts derived from it", src.name, src.terms)
    per_lang, dropped = [], {}
    for lang, config in zip(langs, configs):
        rows = _load_rows(src, config, split, **load)
        records = mapper(rows, lang)
        per_lang.append(records)
        dropped[lang] = {"unusable": len(rows) - len(records), "not_parallel": 0}
    records, n_partial = align_parallel(per_lang, parallel)
    kept_groups = {r.group for r in records}
    for lang, recs in zip(langs, per_lang):
        dropped[lang]["not_parallel"] = sum(r.group not in kept_groups for r in recs)
    records = _limit_groups(records, limit, seed)
    if not records:
        raise DataError(f"no usable rows in {src.name} for {langs!r} ({split})", hint="check the languages and split")
    meta = {"source": src.key, "hub_id": load.get("hub_id") or src.hub_id, "data_dir": _str(load.get("data_dir")),
            "configs": dict(zip(langs, configs)), "split": split, "licence": src.licence, "terms": src.terms,
            "shippable": src.shippable, "parallel": parallel, "limit": limit, "seed": seed, "dropped": dropped,
            "groups_not_parallel": n_partial, "n_records": len(records), **extra}
    return Dataset(f"{src.key}:{','.join(langs)}:{split}", records, meta)


def _str(value: Any) -> str | None:
    """``str(value)`` unless None."""
    return None if value is None else str(value)


_LOAD_DOC = """
    limit : int, optional
        Keep a seeded sample of this many groups.
    seed : int, default 0
    data_dir : str or Path, optional
        A local copy used instead of the hub: a download of the hub repository
        (``huggingface-cli download --repo-type dataset ID --local-dir DIR``) or folders written by
        ``save_to_disk`` (``DIR/<config>``, holding a DatasetDict or one folder per split).
    hub_id : str, optional
        Another hub repository with the same layout.
    cache_dir : str or Path, optional
        The ``datasets`` cache; with ``HF_DATASETS_OFFLINE=1`` a filled cache works without network.

    Returns
    -------
    Dataset
        Records per language with ``group`` ids shared by translations; ``meta`` has the hub id,
        configs, split, licence status and per-language drop counts.

    Raises
    ------
    DataError
        When ``datasets`` is missing or the data cannot be reached; the hint lists the ways around.
"""


def load_flores(langs: str | Iterable[str], split: str = "devtest", *, parallel: bool = True,
                limit: int | None = None, seed: int = 0, data_dir: str | Path | None = None,
                hub_id: str | None = None, cache_dir: str | Path | None = None) -> Dataset:
    """Load FLORES+ sentences in several languages, grouped by sentence (a multi-way parallel set).

    Parameters
    ----------
    langs : str or iterable of str
        FLORES codes (``eng_Latn``) or ISO 639-1 codes found in ``FLORES_CODES`` (``en``);
        ``Record.lang`` is the code as given.
    split : {"dev", "devtest"}, default "devtest"
    parallel : bool, default True
        Keep only sentences present in every language.
    """
    src = HUB_SOURCES["flores"]
    items = _check_langs(src, langs, None)
    configs = [FLORES_CODES.get(x, x) for x in items]
    return _parallel_dataset(src, items, configs, split, lambda rows, lang: flores_records(rows, lang, split),
                             parallel=parallel, limit=limit, seed=seed, extra={"labels": ["language", "topic", "domain"]},
                             data_dir=data_dir, hub_id=hub_id, cache_dir=cache_dir)


def _tatoeba_config(item: str, pivot: str) -> tuple[str, str, str]:
    """(config, language label, pivot label) of one requested language or ``xxx-eng`` config."""
    if "-" in item:
        lang, _, piv = item.partition("-")
        return item, lang, piv
    if item in TATOEBA_CODES:
        inverse = {v: k for k, v in TATOEBA_CODES.items()}
        return f"{TATOEBA_CODES[item]}-{pivot}", item, inverse.get(pivot, pivot)
    return f"{item}-{pivot}", item, pivot


def load_tatoeba(langs: str | Iterable[str], split: str = "test", *, pivot: str = "eng", limit: int | None = None,
                 seed: int = 0, data_dir: str | Path | None = None, hub_id: str | None = None,
                 cache_dir: str | Path | None = None) -> Dataset:
    """Load Tatoeba sentence pairs (each language with English) as two-record groups.

    Parameters
    ----------
    langs : str or iterable of str
        ISO 639-3 codes (``fra``), ISO 639-1 codes in ``TATOEBA_CODES`` (``fr``; the English side is
        then labelled ``en``), or whole configs (``fra-eng``).
    split : {"test"}, default "test"
    pivot : str, default "eng"
        The other side of every pair.
    """
    src = HUB_SOURCES["tatoeba"]
    items = _check_langs(src, langs, None)
    limit = check_limit(limit)
    records, dropped, configs = [], {}, {}
    for item in items:
        config, lang, piv = _tatoeba_config(item, pivot)
        rows = _load_rows(src, config, split, data_dir=data_dir, hub_id=hub_id, cache_dir=cache_dir)
        pairs = tatoeba_records(rows, lang, piv, config)
        records.extend(pairs)
        configs[item], dropped[item] = config, {"unusable": len(rows) - len(pairs) // 2}
    records = _limit_groups(records, limit, seed)
    if not records:
        raise DataError(f"no usable pairs in {src.name} for {items!r}", hint="check the language codes")
    meta = {"source": src.key, "hub_id": hub_id or src.hub_id, "data_dir": _str(data_dir), "configs": configs,
            "split": split, "licence": src.licence, "terms": src.terms, "shippable": src.shippable,
            "limit": limit, "seed": seed, "dropped": dropped, "labels": ["language"], "n_records": len(records)}
    return Dataset(f"tatoeba:{','.join(items)}:{split}", records, meta)


def load_xnli(langs: str | Iterable[str], split: str = "test", *, sep: str = " ", parallel: bool = True,
              limit: int | None = None, seed: int = 0, data_dir: str | Path | None = None,
              hub_id: str | None = None, cache_dir: str | Path | None = None) -> Dataset:
    """Load XNLI premise/hypothesis pairs with the ``nli`` label, grouped across languages.

    Parameters
    ----------
    langs : str or iterable of str
        Codes among ``XNLI_LANGS``.
    split : {"train", "validation", "test"}, default "test"
        validation and test are human translations of the same pairs (parallel); train is
        machine-translated.
    sep : str, default " "
        Joins premise and hypothesis into ``Record.text``.
    parallel : bool, default True
        Keep only pairs present in every language.
    """
    src = HUB_SOURCES["xnli"]
    items = _check_langs(src, langs, XNLI_LANGS)
    return _parallel_dataset(src, items, items, split, lambda rows, lang: xnli_records(rows, lang, split, sep),
                             parallel=parallel, limit=limit, seed=seed, extra={"labels": ["language", "nli"]},
                             data_dir=data_dir, hub_id=hub_id, cache_dir=cache_dir)


def load_pawsx(langs: str | Iterable[str], split: str = "test", *, sep: str = " ", parallel: bool = True,
               limit: int | None = None, seed: int = 0, data_dir: str | Path | None = None,
               hub_id: str | None = None, cache_dir: str | Path | None = None) -> Dataset:
    """Load PAWS-X sentence pairs with the ``paraphrase`` label (yes/no), grouped by PAWS id.

    Parameters
    ----------
    langs : str or iterable of str
        Codes among ``PAWSX_LANGS``.
    split : {"train", "validation", "test"}, default "test"
    sep : str, default " "
        Joins the two sentences into ``Record.text``.
    parallel : bool, default True
        Keep only pairs present in every language.
    """
    src = HUB_SOURCES["pawsx"]
    items = _check_langs(src, langs, PAWSX_LANGS)
    return _parallel_dataset(src, items, items, split, lambda rows, lang: pawsx_records(rows, lang, split, sep),
                             parallel=parallel, limit=limit, seed=seed, extra={"labels": ["language", "paraphrase"]},
                             data_dir=data_dir, hub_id=hub_id, cache_dir=cache_dir)


for _fn in (load_flores, load_tatoeba, load_xnli, load_pawsx):
    _fn.__doc__ = (_fn.__doc__ or "").rstrip() + "\n" + _LOAD_DOC.lstrip("\n")
del _fn
