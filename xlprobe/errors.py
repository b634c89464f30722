"""Errors raised by xlprobe: each says what is wrong and, in ``hint``, how to fix it."""
from __future__ import annotations

__all__ = [
    "XlprobeError",
    "ConfigError",
    "ModelFamilyError",
    "ModelNotFoundError",
    "CapturePointError",
    "LanguageCodeError",
    "DataError",
    "StoreError",
    "StoreCorruptError",
    "StoreMismatchError",
    "NumericalError",
    "ProbeNotFittedError",  # noqa: F822 (built on first use by __getattr__)
]


class XlprobeError(Exception):
    """Base class: a message saying what is wrong and an optional hint saying what to do."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message)

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class ConfigError(XlprobeError, ValueError):
    """A suite, an option or a measure name that is not valid."""


class ModelFamilyError(XlprobeError):
    """The model's architecture has no row in ``xlprobe.hooks.families`` and could not be discovered."""


class ModelNotFoundError(XlprobeError, OSError):
    """A model id or path that cannot be loaded (offline, typo, missing files)."""


class CapturePointError(XlprobeError, KeyError):
    """A layer name that is not a capture point of the model."""

    def __str__(self) -> str:  # KeyError would repr() the message otherwise
        return XlprobeError.__str__(self)


class LanguageCodeError(XlprobeError, ValueError):
    """A language code the tokenizer / family does not know."""


class DataError(XlprobeError, ValueError):
    """Bad input data: empty texts, mismatched lengths, a single class, bad shapes."""


class StoreError(XlprobeError):
    """Something wrong with an activation store."""


class StoreCorruptError(StoreError):
    """A shard whose checksum or size does not match its manifest entry."""


class StoreMismatchError(StoreError):
    """A store whose recorded fingerprint differs from what the request expects."""


class NumericalError(XlprobeError, FloatingPointError):
    """Activations that overflowed to inf / NaN (typically in float16)."""


def __getattr__(name: str) -> type:
    """Build ``ProbeNotFittedError`` on first use, so importing xlprobe does not import scikit-learn."""
    if name == "ProbeNotFittedError":
        from sklearn.exceptions import NotFittedError

        cls = type("ProbeNotFittedError", (XlprobeError, NotFittedError),
                   {"__doc__": "A probe used before ``fit`` (a scikit-learn NotFittedError).", "__module__": __name__})
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
