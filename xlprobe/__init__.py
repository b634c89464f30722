"""xlprobe: probing and interpretability for multilingual transformers before and after MT training.

Data flows one way: ``xlprobe.tasks`` (datasets) -> ``xlprobe.hooks`` (capture) -> ``ActivationStore``
-> ``xlprobe.probes`` (measures) -> ``xlprobe.figures`` / report.

This namespace holds the capture pipeline (data, model, extract, store), the core types and the
errors. Measures are in ``xlprobe.probes``, fine-tuning in ``xlprobe.finetune``, the CLI suites in
``xlprobe.runs``; README.md's "Public API" table lists every package's names.
"""
from __future__ import annotations

from xlprobe import registry as _registry
from xlprobe.errors import (
    CapturePointError,
    ConfigError,
    DataError,
    LanguageCodeError,
    ModelFamilyError,
    ModelNotFoundError,
    NumericalError,
    StoreCorruptError,
    StoreError,
    StoreMismatchError,
    XlprobeError,
)
from xlprobe.types import POOLINGS, CapturePoint, Dataset, Record, StoreKey


def _builtin_measures() -> None:
    """Register the built-in measures: the registry runs this the first time it is read (never at import)."""
    import xlprobe.finetune  # noqa: F401  (finetune.*)
    import xlprobe.probes  # noqa: F401  (every measure on arrays, the probes' table names)


# The package root wires the registry (a core module) to the measures that register into it; see
# "Where the measures come from" in xlprobe/registry.py for why this is not an entry point.
_registry.add_builtin_loader(_builtin_measures)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # core types
    "Record", "Dataset", "CapturePoint", "StoreKey", "POOLINGS",
    # capture
    "Capture", "extract", "capture_points", "resolve_points", "Activations", "TokenStates",
    # store
    "ActivationStore",
    # data
    "load_data", "load_bible",
    # models
    "load_model",
    # errors
    "XlprobeError", "ConfigError", "DataError", "CapturePointError", "LanguageCodeError", "ModelFamilyError",
    "ModelNotFoundError", "NumericalError", "StoreError", "StoreCorruptError", "StoreMismatchError",
    "ProbeNotFittedError",
]

_LAZY = {
    "Capture": "xlprobe.hooks.capture",
    "extract": "xlprobe.hooks.extract",
    "Activations": "xlprobe.hooks.extract",
    "TokenStates": "xlprobe.hooks.extract",
    "capture_points": "xlprobe.hooks.points",
    "resolve_points": "xlprobe.hooks.points",
    "ActivationStore": "xlprobe.store",
    "load_data": "xlprobe.tasks",
    "load_bible": "xlprobe.tasks",
    "load_model": "xlprobe.loading",
    "ProbeNotFittedError": "xlprobe.errors",  # a scikit-learn NotFittedError: built on first use
}


def __getattr__(name: str):
    """Import heavy parts (torch, transformers) only when first used, so `import xlprobe` is instant."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'xlprobe' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The loaded names and the lazy ones, so completion shows the whole public API."""
    return sorted(set(globals()) | set(__all__))
