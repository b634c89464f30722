"""A probe suite as YAML, validated before any model loads: every error names the file, line, key and fix.

A suite says which checkpoints to compare (with the roles ``base`` and ``control``, once each, and
``mt`` / ``reference`` for the paper's claims: the MT-trained checkpoints and the other multilingual
models they are compared with, any number), on which data,
at which layers and pooling, which registered measures (with their parameters), which figures, and the
seeds and bootstrap size::

    name: toy
    checkpoints:
      - {model: toy:lm, role: base}
      - toy:mt
      - {model: toy:lm-cont, role: control}
    data:
      corpus: bible
      languages: [en, fr, de, ru]
      books: [Ruth, Jonah, John]
      size: 300
    layers: encoder.*
    pooling: mean
    measures:
      - probe.linear: {task: language}
      - separability.knn
      - transfer.gap: {task: book, train_lang: en}
      - attribution.path: {n_steps: 16}
    figures: [umap, layer_curves]
    seeds: [0]
    n_boot: 1000
    device: cpu        # or cuda, cuda:1, mps, auto (a GPU when there is one)

:func:`load_suite` parses the YAML keeping every node's line (PyYAML's composer), validates it with
pydantic (unknown keys are errors, never ignored), then checks what pydantic cannot: measure names
against the registry (with the closest names), measure parameters against the function's keywords,
model specs by their syntax (``toy:`` names, ``tiny:`` families, ``random-init`` forms; nothing is
loaded), roles used at most once. Table measures run by the suite: ``transfer.gap`` /
``transfer.accuracy`` need ``task`` (the record label the probe transfers); ``attribution.path`` takes
the parameters of :data:`SUITE_PARAMS` (``task``, ``train_lang``, ``layer`` the read point, ``n_steps``,
``max_items``, ``groups``, ``ridge``, ``tau``, ``languages`` the metric reads); ``checkpoint``, ``seed``, ``n_boot`` come from the suite.
Every failure is one :class:`~xlprobe.errors.ConfigError` whose message starts ``FILE:LINE: key.path:`` and whose hint says what is allowed.
"""
from __future__ import annotations

import difflib
import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from xlprobe.errors import ConfigError

__all__ = ["unavailable_checkpoints", "Suite", "CheckpointSpec", "DataSpec", "MeasureCall", "load_suite", "parse_suite", "FIGURES",
           "SUITE_PARAMS", "RUNNER_SET"]

#: Figures a suite may ask for (xlprobe.figures draws them from the results).
FIGURES = ("umap", "layer_curves", "paired_differences", "cka_heatmap", "weight_spectra", "weight_bars",
           "attribution_bars")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CheckpointSpec(_Strict):
    """One checkpoint: a model spec (hub id, folder, ``toy:...``, ``tiny:...``, ``random-init:...``) and its role."""

    model: str = Field(min_length=1)
    role: Literal["base", "control", "mt", "reference"] | None = None
    name: str | None = None  # how results name it (default: the model spec)

    @property
    def label(self) -> str:
        """The name results carry."""
        return self.name or self.model


class DataSpec(_Strict):
    """The data: a corpus scheme, its languages, books (Bible), size (parallel groups) and split.

    ``balance: book`` draws the parallel groups class by class (``size`` split equally between the
    label's classes, at most the rarest class's count each), so that a task on that label (transfer)
    has chance as its majority baseline; otherwise ``size`` groups are sampled in proportion.
    """

    corpus: str = Field(min_length=1)
    languages: list[str] = Field(min_length=1)
    books: list[str] | None = None
    size: int | None = Field(default=None, ge=1)
    split: Literal["heldout", "train", "all"] = "heldout"
    balance: str | None = None  # a record label: size groups split equally between its classes


class MeasureCall(_Strict):
    """A registered measure and the keyword parameters it is called with."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class Suite(_Strict):
    """A validated suite (see the module docstring for the YAML)."""

    name: str = Field(min_length=1)
    checkpoints: list[CheckpointSpec] = Field(min_length=1)
    data: DataSpec
    layers: str | list[str] = "encoder.*"
    pooling: Literal["mean", "first", "last", "max", "tag"] = "mean"
    measures: list[MeasureCall] = Field(min_length=1)
    figures: list[Literal["umap", "layer_curves", "paired_differences", "cka_heatmap", "weight_spectra",
                          "weight_bars", "attribution_bars"]] = Field(default_factory=list)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    n_boot: int = Field(default=1000, ge=0)
    #: where models run (capture, fine-tuning, attribution.path): cpu (the default, results bit-identical across machines),
    #: cuda, cuda:N, mps, or auto (cuda when torch sees a GPU, else mps, else cpu); checked by ``xlprobe run``
    device: str = Field(default="cpu", pattern=r"^(cpu|auto|mps|cuda(:[0-9]+)?)$")

    @field_validator("checkpoints", mode="before")
    @classmethod
    def _bare_strings(cls, value: Any) -> Any:
        """A bare string is a checkpoint without a role."""
        return [{"model": v} if isinstance(v, str) else v for v in value] if isinstance(value, list) else value

    @field_validator("measures", mode="before")
    @classmethod
    def _measure_items(cls, value: Any) -> Any:
        """``- name`` or ``- name: {params}`` become MeasureCall fields."""
        if not isinstance(value, list):
            return value
        out = []
        for item in value:
            if isinstance(item, str):
                out.append({"name": item})
            elif isinstance(item, dict) and len(item) == 1:
                (name, params), = item.items()
                out.append({"name": name, "params": {} if params is None else params})
            else:
                out.append(item)
        return out

    def role(self, role: str) -> CheckpointSpec | None:
        """The checkpoint with ``role`` (``base`` or ``control``), if any."""
        return next((c for c in self.checkpoints if c.role == role), None)

    def labels(self, role: str) -> list[str]:
        """The names of every checkpoint with ``role`` (``mt`` and ``reference`` may be several)."""
        return [c.label for c in self.checkpoints if c.role == role]


# ------------------------------------------------------------------ lines of the YAML nodes
def _lines(node: yaml.Node, path: tuple = ()) -> dict[tuple, int]:
    """1-based line of every node, keyed by its path of mapping keys and sequence indices."""
    out = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            out[(*path, key.value)] = key.start_mark.line + 1
            out |= {k: v for k, v in _lines(value, (*path, key.value)).items() if k != (*path, key.value)}
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            out |= _lines(value, (*path, i))
    return out


def _line_of(lines: dict[tuple, int], loc: Sequence[Any]) -> int:
    """The line of the deepest known prefix of ``loc`` (pydantic locations may end in a model's field)."""
    loc = tuple(loc)
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return 1


def _yaml_loc(loc: Sequence[Any], raw: dict) -> tuple:
    """A pydantic location mapped back onto the YAML (a measure's ``name`` / ``params`` are the item's key)."""
    loc = tuple(x for x in loc if not (isinstance(x, str) and x.startswith(("literal[", "str", "list["))))
    if len(loc) >= 2 and loc[0] == "measures" and isinstance(loc[1], int):
        item = raw.get("measures", [])[loc[1]] if loc[1] < len(raw.get("measures", [])) else None
        if isinstance(item, dict) and len(item) == 1:
            name = next(iter(item))
            rest = loc[2:]
            if rest[:1] == ("name",):
                return ("measures", loc[1], name)
            if rest[:1] == ("params",):
                return ("measures", loc[1], name, *rest[1:])
    if len(loc) >= 2 and loc[0] == "checkpoints" and isinstance(loc[1], int):
        item = raw.get("checkpoints", [])[loc[1]] if loc[1] < len(raw.get("checkpoints", [])) else None
        if isinstance(item, str):
            return loc[:2]
    return loc


def _key(loc: Sequence[Any]) -> str:
    """``measures[2].params.k`` from a location."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _fail(file: str, lines: dict, loc: Sequence[Any], message: str, hint: str) -> ConfigError:
    """The one error format: FILE:LINE: key: message, with the fix as hint."""
    return ConfigError(f"{file}:{_line_of(lines, loc)}: {_key(loc)}: {message}", hint=hint)


def _pydantic_hint(err: dict) -> str:
    """What to write instead, from a pydantic error."""
    if err["type"] == "extra_forbidden":
        return "remove or rename it"
    if err["type"] == "literal_error":
        return "allowed: " + str(err.get("ctx", {}).get("expected", ""))
    if err["type"] == "missing":
        return "add it (see xlprobe/suites/toy.yaml for a complete suite)"
    if err["type"] == "string_pattern_mismatch" and tuple(err.get("loc", ())) == ("device",):
        return "device: cpu, cuda, cuda:N (e.g. cuda:1), mps or auto (a GPU when there is one, else the CPU)"
    return "see the suite format in the xlprobe.suite docstring"


# ------------------------------------------------------------------ checks beyond the schema
def _allowed_fields(model: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    """The keys allowed where an unknown key was found."""
    where = {(): Suite, ("data",): DataSpec}
    if len(loc) >= 2 and loc[0] == "checkpoints":
        return list(CheckpointSpec.model_fields)
    return list(where.get(tuple(loc[:-1]), model).model_fields)


#: Parameters of the table measures a suite runs itself (their producers take arrays or metric objects,
#: not what a suite names): ``attribution.path`` attributes a :class:`~xlprobe.path_metrics.TransferGap`
#: at ``layer`` (the read point) between the base and each checkpoint of its architecture.
SUITE_PARAMS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "attribution.path": {"task": str, "train_lang": str, "layer": str, "n_steps": int, "max_items": int,
                         "groups": str, "ridge": (int, float), "tau": (int, float), "languages": list},
}
#: Keywords of a table producer that the suite sets itself (the checkpoint's name, the seed and the
#: bootstrap size from ``seeds:`` and ``n_boot:``, the per-item scores the comparisons read).
RUNNER_SET = ("checkpoint", "seed", "n_boot", "scores")
_TRANSFER = ("transfer.gap", "transfer.accuracy")


def _check_table_call(call: MeasureCall, suite: Suite, file: str, lines: dict, loc: tuple) -> None:
    """What a suite needs of a transfer / attribution call: a task, parameters of the right type."""
    if call.name in _TRANSFER and not isinstance(call.params.get("task"), str):
        raise _fail(file, lines, loc, f"{call.name} needs task: the record label the probe transfers",
                    f"e.g. `- {call.name}: {{task: book, train_lang: en}}` (labels: book, testament, genre ...)")
    if call.name == "attribution.path" and "task" not in call.params and not any(
            c.name in _TRANSFER and "task" in c.params for c in suite.measures):
        raise _fail(file, lines, loc, "attribution.path needs a task (the label of its transfer gap)",
                    "give `attribution.path: {task: book}` or a transfer.gap with a task")
    for key, kind in SUITE_PARAMS.get(call.name, {}).items():
        value = call.params.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)
                                  or (kind is int and value < 1)):
            what = "a positive integer" if kind is int else ("a string" if kind is str else "a number")
            raise _fail(file, lines, (*loc, key), f"{call.name}: {key} must be {what}; got {value!r}",
                        f"e.g. {key}: " + {"n_steps": "16", "max_items": "144", "layer": "encoder.2"}.get(key, "..."))
    langs = call.params.get("languages") if call.name == "attribution.path" else None
    if langs is not None and (not langs or not set(map(str, langs)) <= set(suite.data.languages)
                              or str(call.params.get("train_lang", "en")) not in map(str, langs)):
        raise _fail(file, lines, (*loc, "languages"), f"{call.name}: languages must be some of the data's "
                    f"languages, the training language among them; got {langs!r}",
                    f"e.g. languages: [{call.params.get('train_lang', 'en')}, ...] from {suite.data.languages}")
    if call.name == "attribution.path" and call.params.get("groups", "layer_module") not in _GROUPINGS:
        raise _fail(file, lines, (*loc, "groups"), f"groups must be one of {list(_GROUPINGS)}",
                    "layer_module (the default) sums per layer and module")


_GROUPINGS = ("param", "layer", "module", "layer_module")


def _check_measures(suite: Suite, file: str, lines: dict) -> None:
    """Every measure is registered and called with keywords its function takes."""
    from xlprobe.registry import get_measure, list_measures

    names = [m.name for m in list_measures()]
    for i, call in enumerate(suite.measures):
        loc = ("measures", i, call.name)
        if call.name not in names:
            close = difflib.get_close_matches(call.name, names, n=3, cutoff=0.5)
            raise _fail(file, lines, loc, f"unknown measure {call.name!r}",
                        (f"did you mean {', '.join(close)}? " if close else "") + "`xlprobe measures` lists all "
                        f"{len(names)}: " + ", ".join(names))
        spec = get_measure(call.name)
        params = inspect.signature(spec.fn).parameters
        keywords = [p for p, v in params.items() if v.default is not inspect.Parameter.empty]
        if spec.kind == "labelled" and spec.reads == "labels" and "task" not in keywords:
            keywords.append("task")  # the runner's: which record label is y (language, book, genre ...)
        takes_any = any(v.kind is inspect.Parameter.VAR_KEYWORD for v in params.values())
        if call.name in SUITE_PARAMS:
            keywords, takes_any = list(SUITE_PARAMS[call.name]), False
        elif spec.kind == "table":
            for key in call.params:
                if key in RUNNER_SET:
                    raise _fail(file, lines, (*loc, key), f"{call.name}: {key} is set by the suite",
                                "the suite's n_boot: and seeds: apply to every measure; checkpoints name the rows")
            keywords = [k for k in keywords if k not in RUNNER_SET]
        for key in call.params:
            if key not in keywords and not takes_any:
                raise _fail(file, lines, (*loc, key), f"{call.name} takes no parameter {key!r}",
                            "its parameters: " + (", ".join(keywords) or "none"))
            if spec.kind != "table" and key != "task":  # per-layer, CKA and weights steps use the defaults
                raise _fail(file, lines, (*loc, key), f"{call.name}: a suite runs it with its registered "
                            f"defaults, so {key}={call.params[key]!r} would be ignored",
                            f"register a variant that fixes it (register_measure('{call.name}.custom', ..., "
                            f"{key}=...), as cka.rbf fixes kernel) and name that here; only task: is read")
        _check_table_call(call, suite, file, lines, loc)


def _check_checkpoints(suite: Suite, file: str, lines: dict) -> None:
    """Model specs well formed (nothing loaded), names unique, each role used at most once."""
    from xlprobe.loading import random_init_spec
    from xlprobe.tiny import FAMILY_NAMES
    from xlprobe.toy.shipped import NAMES

    seen: dict[str, int] = {}
    for i, c in enumerate(suite.checkpoints):
        loc = ("checkpoints", i)
        spec = c.model
        try:
            inner = random_init_spec(spec)
        except ConfigError as err:
            raise _fail(file, lines, loc, str(err), err.hint or "") from None
        spec = inner[0] if inner else spec
        for prefix, valid in (("toy:", NAMES), ("tiny:", FAMILY_NAMES)):
            if spec.startswith(prefix) and spec[len(prefix):] not in valid:
                raise _fail(file, lines, loc, f"no checkpoint {spec!r}",
                            f"{prefix}<name> takes one of: " + ", ".join(valid))
        if c.label in seen:
            raise _fail(file, lines, loc, f"checkpoint {c.label!r} is listed twice (also item {seen[c.label]})",
                        "list each checkpoint once; give `name:` to tell two loads apart")
        seen[c.label] = i
    for role in ("base", "control"):
        holders = [i for i, c in enumerate(suite.checkpoints) if c.role == role]
        if len(holders) > 1:
            raise _fail(file, lines, ("checkpoints", holders[1], "role"), f"role {role!r} is given twice",
                        "one checkpoint is the base, one the control")


# ------------------------------------------------------------------ entry points
def parse_suite(text: str, file: str = "<suite>") -> Suite:
    """A validated :class:`Suite` from YAML text; ConfigError ``FILE:LINE: key: ...`` otherwise."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{file}:{line}: YAML syntax error: {problem}",
                          hint="check indentation and that lists use '- ' and mappings 'key: value'") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}:1: a suite is a YAML mapping (name:, checkpoints:, data:, measures: ...)",
                          hint="see xlprobe/suites/toy.yaml")
    lines = _lines(node)
    try:
        suite = Suite.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = _yaml_loc(err["loc"], raw)
        hint = _pydantic_hint(err)
        if err["type"] == "extra_forbidden":
            hint = "allowed keys here: " + ", ".join(_allowed_fields(Suite, err["loc"]))
        raise _fail(file, lines, loc, err["msg"], hint) from None
    _check_checkpoints(suite, file, lines)
    _check_measures(suite, file, lines)
    return suite


def load_suite(path: str | Path, *, check_models: bool = False, device: str | None = None) -> Suite:
    """A validated :class:`Suite` from a YAML file (see :func:`parse_suite`).

    ``check_models``: also refuse, at the checkpoint's line, a model whose weights are not here to load
    (:func:`unavailable_checkpoints`), before any model is loaded; ``xlprobe run`` does, ``--dry-run``
    lists them instead. ``device`` (already resolved, e.g. ``--device``) replaces the suite's ``device:``.
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"suite file {str(file)!r} does not exist",
                          hint="give the path of a .yaml suite, e.g. xlprobe/suites/toy.yaml")
    text = file.read_text(encoding="utf-8")
    suite = parse_suite(text, str(file))
    if device is not None:
        suite = suite.model_copy(update={"device": device})
    if check_models:
        _check_device(suite, str(file), text)
    missing = unavailable_checkpoints(suite) if check_models else []
    if missing:
        i, message, hint = missing[0]
        more = f" ({len(missing) - 1} more checkpoint(s) not here either)" if len(missing) > 1 else ""
        raise _fail(str(file), _lines(yaml.compose(text, Loader=yaml.SafeLoader)), ("checkpoints", i),
                    message + more, hint)
    return suite


def _check_device(suite: Suite, file: str, text: str) -> None:
    """The suite's ``device:`` exists on this machine (``cuda`` without a GPU is refused at its line)."""
    from xlprobe.devices import resolve_device

    try:
        resolve_device(suite.device)
    except ConfigError as err:
        raise _fail(file, _lines(yaml.compose(text, Loader=yaml.SafeLoader)), ("device",), err.message,
                    (err.hint or "").replace("--device ", "device: ")) from None


def unavailable_checkpoints(suite: Suite) -> list[tuple[int, str, str]]:
    """(index, message, hint) of every checkpoint whose weights cannot be loaded here; nothing is loaded."""
    from xlprobe.errors import ModelNotFoundError
    from xlprobe.loading import check_available

    out = []
    for i, c in enumerate(suite.checkpoints):
        try:
            check_available(c.model)
        except ModelNotFoundError as err:
            out.append((i, err.message, err.hint or ""))
    return out
