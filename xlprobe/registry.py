"""The measure registry: a name -> :class:`MeasureSpec` map that the runner and the CLI read.

Every name that can appear in the ``measure`` column of a results table is registered here, with the
:func:`register_measure` decorator on the function that computes (or produces) it. The registry is a
core module: measures import it to register, it imports no measure.

Where the measures come from
----------------------------
* **Built-in**: the measure modules under ``xlprobe.probes`` (``xlprobe/probes/__init__.py`` imports
  each one explicitly) and ``xlprobe.finetune``. The package root, ``xlprobe/__init__.py``, hands
  the registry a loader that imports them (:func:`add_builtin_loader`); the registry runs it the
  first time it is read. ``import xlprobe.registry`` always runs ``xlprobe/__init__.py`` first, so
  the built-ins are there for every reader, the runner, the CLI and a user's own code alike.
* **Plugins**: other packages add measures through the entry-point group ``xlprobe.measures``; each
  entry point names a module (or an object in one) whose import registers its measures with the
  same decorator, e.g. in the plugin's ``pyproject.toml``::

    [project.entry-points."xlprobe.measures"]
    my_measures = "my_package.measures"

Why not register the built-ins through this package's own entry point, as plugins do: entry points
are install metadata, and a stale copy of it wins. A source checkout holds an ``xlprobe.egg-info``
from an earlier install; when the current directory is on ``sys.path`` (``python -m pytest``,
``python -c`` from the checkout) ``importlib.metadata`` finds that copy before the installed one, and
an editable install made before the entry point existed has none either: the built-in measures, the
main probe included, would silently vanish. Importing them is exact and needs no metadata; only the
package root and the runners name the measure modules (the layering rule of tests/test_layering.py).

Each **kind** has a fixed call shape, so the runner can feed any measure of the first four from the
store (all of those take ``seed=``):

========== ====================================================================================
labelled   ``fn(X, y, groups, *, seed=0, ...)``: ``y`` is what :attr:`MeasureSpec.reads` says,
           the task's labels (``"labels"``) or the items' languages (``"languages"``)
unlabelled ``fn(X, *, seed=0, ...)``
paired     ``fn(X, Y, *, seed=0, ...)``
weights    ``fn(model_a, model_b, *, seed=0, ...)``
table      ``fn(...) -> results table``: rows that a producer writes beside others and that no
           single call on arrays gives (a probe's selectivity needs the control task's item types,
           transfer needs languages and labels, fine-tuning a model); ``fn`` is that producer
           (``probe_layers``, ``transfer_probe``, ``finetune_transfer``) and the runner never
           calls it per layer
========== ====================================================================================

Controls are not names of their own: a measure's control rows (``majority``, ``shuffled``,
``control-task``) carry the same ``measure`` and say which control in the ``control`` column.
"""
from __future__ import annotations

import difflib
import inspect
import logging
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeVar

from xlprobe.errors import ConfigError

__all__ = ["MeasureSpec", "register_measure", "get_measure", "list_measures", "add_builtin_loader", "KINDS",
           "DIRECTIONS", "READS", "ENTRY_POINT_GROUP"]

logger = logging.getLogger(__name__)

#: Call shapes a measure may have (see the module docstring).
KINDS = ("labelled", "unlabelled", "paired", "weights", "table")
#: What a larger value means: similarity / distance between two representations, or a score.
DIRECTIONS = ("similarity", "distance", "higher_better", "lower_better")
#: What a labelled measure's ``y`` is: the task's labels or the items' languages; every other kind
#: reads neither (``"none"``).
READS = ("labels", "languages", "none")
#: Entry-point group through which other packages add measures.
ENTRY_POINT_GROUP = "xlprobe.measures"

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class MeasureSpec:
    """What the registry knows about one measure: data the runner and the CLI read.

    Attributes
    ----------
    name : str
        The registry name, as suites spell it (``cka.linear``).
    kind : str
        One of :data:`KINDS`: the measure's call shape.
    fn : callable
        The function that computes it.
    direction : str
        One of :data:`DIRECTIONS`.
    reads : str
        One of :data:`READS`: what the runner passes as ``y`` to a labelled measure, the task's
        labels (``"labels"``) or the items' languages (``"languages"``, retrieval); ``"none"`` for
        every other kind.
    defaults : mapping
        Keyword arguments the registered name fixes (``kernel="rbf"`` for ``cka.rbf``); a call's own
        keyword arguments override them. Read-only.
    doc : str
        The function's docstring, cleaned (``inspect.cleandoc``).
    """

    name: str
    kind: str
    fn: Callable[..., Any]
    direction: str
    reads: str
    defaults: Mapping[str, Any]
    doc: str

    @property
    def summary(self) -> str:
        """The first line of :attr:`doc` (what ``xlprobe measures`` prints)."""
        return self.doc.strip().splitlines()[0] if self.doc.strip() else ""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call :attr:`fn` with :attr:`defaults` under the call's keyword arguments."""
        return self.fn(*args, **{**self.defaults, **kwargs})


#: The registry itself, and the loaders of the built-in measures not yet run: the module's only state.
_MEASURES: dict[str, MeasureSpec] = {}
_BUILTIN_LOADERS: list[Callable[[], object]] = []


def _check_choice(what: str, value: object, allowed: tuple[str, ...], name: str) -> None:
    if value not in allowed:
        raise ConfigError(f"{what} of measure {name!r} must be one of {list(allowed)}; got {value!r}",
                          hint=f"pass {what}=" + " or ".join(repr(a) for a in allowed))


def _check_reads(name: str, kind: str, reads: str | None) -> str:
    """``reads`` given or implied by the kind: labelled measures read labels or languages, others nothing."""
    if reads is None:
        return "labels" if kind == "labelled" else "none"
    _check_choice("reads", reads, READS, name)
    allowed = ("labels", "languages") if kind == "labelled" else ("none",)
    if reads not in allowed:
        raise ConfigError(f"a {kind} measure reads {' or '.join(repr(a) for a in allowed)}; measure {name!r} "
                          f"got reads={reads!r}",
                          hint="only labelled measures take a y, and it is the task's labels or the languages")
    return reads


def _check_signature(name: str, kind: str, fn: Callable[..., Any], defaults: Mapping[str, Any]) -> None:
    """The function takes every default by keyword, and ``seed=`` unless it produces a table (or has
    ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # some builtins have no signature: nothing to check
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    by_keyword = {n for n, p in params.items()
                  if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)}
    missing = [k for k in (*(() if kind == "table" else ("seed",)), *defaults) if k not in by_keyword]
    if missing:
        raise ConfigError(f"measure {name!r}: {getattr(fn, '__qualname__', fn)!r} takes no keyword "
                          f"argument(s) {missing}",
                          hint="every measure takes seed: int = 0 (unused when it is deterministic), and "
                               "defaults given to register_measure must be keyword arguments of the function")


def _same_definition(old: Callable[..., Any], new: Callable[..., Any]) -> bool:
    """True when ``new`` is the same source definition as ``old`` loaded again (a reload, or the same
    file imported under another module name, as doctest collection does): that replaces the entry."""
    co_old, co_new = getattr(old, "__code__", None), getattr(new, "__code__", None)
    if co_old is None or co_new is None:
        return False
    return (co_old.co_filename, co_old.co_firstlineno, old.__qualname__) == \
        (co_new.co_filename, co_new.co_firstlineno, new.__qualname__)


def register_measure(name: str, *, kind: str, direction: str, reads: str | None = None, doc: str | None = None,
                     **defaults: Any) -> Callable[[F], F]:
    """Decorator: register a function as the measure ``name``; the function is returned unchanged.

    Stack it to register one function under several names with different ``defaults``.

    Parameters
    ----------
    name : str
        Registry name, as suites and ``xlprobe measures`` spell it (``family.variant``).
    kind : {"labelled", "unlabelled", "paired", "weights", "table"}
        The call shape (see the module docstring).
    direction : {"similarity", "distance", "higher_better", "lower_better"}
        What a larger value means.
    reads : {"labels", "languages", "none"}, optional
        What a labelled measure's ``y`` is (default ``"labels"``); every other kind reads ``"none"``
        (the default).
    doc : str, optional
        The measure's doc when the function's docstring describes more than this name (a ``table``
        producer writes several); default: the function's docstring.
    **defaults
        Keyword arguments this name fixes (they must be keyword arguments of the function).

    Raises
    ------
    ConfigError
        On a name already registered by another function (the same definition loaded again, by
        ``importlib.reload`` for instance, replaces its entry), an unknown kind, direction or reads
        (or reads that the kind does not take), or a function that does not take the defaults by
        keyword, or ``seed=`` (every kind but ``table``).

    Examples
    --------
    >>> @register_measure("cka.rbf", kind="paired", direction="similarity", kernel="rbf")  # doctest: +SKIP
    ... def cka(X, Y, *, kernel="linear", debiased=False, seed=0): ...
    """
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise ConfigError(f"a measure name must be a non-empty string without surrounding spaces; got {name!r}",
                          hint="use family.variant, e.g. 'cka.linear'")
    _check_choice("kind", kind, KINDS, name)
    _check_choice("direction", direction, DIRECTIONS, name)
    reads = _check_reads(name, kind, reads)
    if doc is not None and not isinstance(doc, str):
        raise ConfigError(f"doc of measure {name!r} must be a string; got {type(doc).__name__}")

    def decorate(fn: F) -> F:
        if not callable(fn):
            raise ConfigError(f"register_measure({name!r}) decorates a function; got {type(fn).__name__}")
        if name in _MEASURES and not _same_definition(_MEASURES[name].fn, fn):
            old = _MEASURES[name].fn
            raise ConfigError(f"measure {name!r} is already registered (by {old.__module__}.{old.__qualname__})",
                              hint="choose another name; a measure cannot be replaced once registered")
        _check_signature(name, kind, fn, defaults)
        _MEASURES[name] = MeasureSpec(name=name, kind=kind, fn=fn, direction=direction,
                                      reads=reads, defaults=MappingProxyType(dict(defaults)),
                                      doc=inspect.cleandoc((fn.__doc__ if doc is None else doc) or ""))
        return fn

    return decorate


def add_builtin_loader(loader: Callable[[], object]) -> None:
    """Run ``loader`` (it registers measures, by importing their modules) before the registry is first read.

    The package root, ``xlprobe/__init__.py``, gives the loader of the built-in measures; this keeps
    the registry free of any import of them (see the module docstring). Plugins use the entry-point
    group :data:`ENTRY_POINT_GROUP` instead.
    """
    if not callable(loader):
        raise ConfigError(f"add_builtin_loader takes a callable; got {type(loader).__name__}")
    _BUILTIN_LOADERS.append(loader)


def _load_builtins() -> None:
    """Run the built-in loaders not yet run, each once (one that raises stays, to raise again)."""
    while _BUILTIN_LOADERS:
        loader = _BUILTIN_LOADERS.pop(0)  # out first: a measure module that reads the registry does not re-run it
        try:
            loader()
        except BaseException:
            _BUILTIN_LOADERS.insert(0, loader)
            raise


def _load_sources() -> None:
    """Load the built-in measures, then every ``xlprobe.measures`` entry point (imports are cached).

    A plugin that fails to load is reported with a warning and skipped, so one broken package does
    not hide the other measures.
    """
    import importlib.metadata  # here, not at the top: `import xlprobe` imports this module

    _load_builtins()
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as exc:  # noqa: BLE001 (a third party's import may raise anything)
            msg = f"xlprobe measures plugin {ep.name!r} ({ep.value}) failed to load: {exc!r}"
            logger.warning(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=3)


def get_measure(name: str) -> MeasureSpec:
    """The :class:`MeasureSpec` registered as ``name``.

    Raises
    ------
    ConfigError
        If no measure has that name; the hint suggests the closest names and lists the known ones.
    """
    _load_builtins()
    if name not in _MEASURES:
        _load_sources()
    if name in _MEASURES:
        return _MEASURES[name]
    known = sorted(_MEASURES)
    close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.6)
    hint = (f"did you mean {' or '.join(repr(c) for c in close)}? " if close else "") + \
        f"known measures: {', '.join(known)} (`xlprobe measures` describes them)"
    raise ConfigError(f"unknown measure {name!r}", hint=hint)


def list_measures(kind: str | None = None) -> list[MeasureSpec]:
    """Every registered measure (built-in and plugins), sorted by name; only ``kind`` if given."""
    if kind is not None:
        _check_choice("kind", kind, KINDS, "<filter>")
    _load_sources()
    return [s for _, s in sorted(_MEASURES.items()) if kind is None or s.kind == kind]
