"""The measure registry: a name -> :class:`MeasureSpec` map that the runner and the CLI read.

Every measure registers itself with the :func:`register_measure` decorator, in its own module under
``xlprobe.probes``; ``xlprobe/probes/__init__.py`` imports every measure module explicitly, so the
built-in measures are registered in one place. Third-party packages add measures through the
entry-point group ``xlprobe.measures``: each entry point names a module (or an object in one) whose
import registers its measures with the same decorator, e.g. in the plugin's ``pyproject.toml``::

    [project.entry-points."xlprobe.measures"]
    my_measures = "my_package.measures"

Both are loaded lazily, by the first :func:`get_measure` / :func:`list_measures` that needs them.

Each **kind** has a fixed call shape, so the runner can feed any measure from the store (all take
``seed=``):

========== ==================================
labelled   ``fn(X, y, groups, *, seed=0, ...)``
unlabelled ``fn(X, *, seed=0, ...)``
paired     ``fn(X, Y, *, seed=0, ...)``
weights    ``fn(model_a, model_b, *, seed=0, ...)``
========== ==================================
"""
from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import inspect
import logging
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeVar

from xlprobe.errors import ConfigError

__all__ = ["MeasureSpec", "register_measure", "get_measure", "list_measures", "KINDS", "DIRECTIONS",
           "ENTRY_POINT_GROUP"]

logger = logging.getLogger(__name__)

#: Call shapes a measure may have (see the module docstring).
KINDS = ("labelled", "unlabelled", "paired", "weights")
#: What a larger value means: similarity / distance between two representations, or a score.
DIRECTIONS = ("similarity", "distance", "higher_better", "lower_better")
#: Entry-point group through which other packages add measures.
ENTRY_POINT_GROUP = "xlprobe.measures"
#: The package whose import registers the built-in measures.
_BUILTIN = "xlprobe.probes"

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
    needs_labels : bool
        True when the measure needs labels (``y``) to run.
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
    needs_labels: bool
    defaults: Mapping[str, Any]
    doc: str

    @property
    def summary(self) -> str:
        """The first line of :attr:`doc` (what ``xlprobe measures`` prints)."""
        return self.doc.strip().splitlines()[0] if self.doc.strip() else ""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call :attr:`fn` with :attr:`defaults` under the call's keyword arguments."""
        return self.fn(*args, **{**self.defaults, **kwargs})


#: The registry itself: the only mutable state of this module.
_MEASURES: dict[str, MeasureSpec] = {}


def _check_choice(what: str, value: object, allowed: tuple[str, ...], name: str) -> None:
    if value not in allowed:
        raise ConfigError(f"{what} of measure {name!r} must be one of {list(allowed)}; got {value!r}",
                          hint=f"pass {what}=" + " or ".join(repr(a) for a in allowed))


def _check_signature(name: str, fn: Callable[..., Any], defaults: Mapping[str, Any]) -> None:
    """The function takes ``seed=`` and every default by keyword (or has ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # some builtins have no signature: nothing to check
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    by_keyword = {n for n, p in params.items()
                  if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)}
    missing = [k for k in ("seed", *defaults) if k not in by_keyword]
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


def register_measure(name: str, *, kind: str, direction: str, needs_labels: bool = False,
                     **defaults: Any) -> Callable[[F], F]:
    """Decorator: register a function as the measure ``name``; the function is returned unchanged.

    Stack it to register one function under several names with different ``defaults``.

    Parameters
    ----------
    name : str
        Registry name, as suites and ``xlprobe measures`` spell it (``family.variant``).
    kind : {"labelled", "unlabelled", "paired", "weights"}
        The call shape (see the module docstring).
    direction : {"similarity", "distance", "higher_better", "lower_better"}
        What a larger value means.
    needs_labels : bool, default False
        True when the measure needs labels.
    **defaults
        Keyword arguments this name fixes (they must be keyword arguments of the function).

    Raises
    ------
    ConfigError
        On a name already registered by another function (the same definition loaded again, by
        ``importlib.reload`` for instance, replaces its entry), an unknown kind or direction, or a
        function that does not take ``seed=`` and the defaults by keyword.

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
    if not isinstance(needs_labels, bool):
        raise ConfigError(f"needs_labels of measure {name!r} must be a bool; got {needs_labels!r}")

    def decorate(fn: F) -> F:
        if not callable(fn):
            raise ConfigError(f"register_measure({name!r}) decorates a function; got {type(fn).__name__}")
        if name in _MEASURES and not _same_definition(_MEASURES[name].fn, fn):
            old = _MEASURES[name].fn
            raise ConfigError(f"measure {name!r} is already registered (by {old.__module__}.{old.__qualname__})",
                              hint="choose another name; a measure cannot be replaced once registered")
        _check_signature(name, fn, defaults)
        _MEASURES[name] = MeasureSpec(name=name, kind=kind, fn=fn, direction=direction,
                                      needs_labels=needs_labels, defaults=MappingProxyType(dict(defaults)),
                                      doc=inspect.cleandoc(fn.__doc__ or ""))
        return fn

    return decorate


def _load_sources() -> None:
    """Import the built-in measures and every ``xlprobe.measures`` entry point (imports are cached).

    A plugin that fails to load is reported with a warning and skipped, so one broken package does
    not hide the other measures.
    """
    importlib.import_module(_BUILTIN)
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
