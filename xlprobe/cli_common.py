"""What every ``xlprobe`` command shares: the consoles, the one way to fail, flags, choices and progress lines."""
from __future__ import annotations

import contextlib
import difflib
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from xlprobe.devices import rank_device, resolve_device
from xlprobe.errors import XlprobeError

__all__ = ["rank_device", "console", "err_console", "fail", "flag", "choice", "did_you_mean", "progress_lines", "say",
           "quiet_model_loading", "BATCH_SIZE_HELP", "MAX_LENGTH_HELP", "DEVICE_HELP", "SUITE_DEVICE_HELP",
           "device_option",
           "resolve_device"]

# A pipe or a log file gets 120 columns rather than rich's 80, so result tables keep whole cells there.
console = Console() if sys.stdout.isatty() or os.environ.get("COLUMNS") else Console(width=120)
err_console = Console(stderr=True)

BATCH_SIZE_HELP = "Texts per forward pass (lower it if memory runs out)."
MAX_LENGTH_HELP = "Tokens kept per text; longer texts are truncated and counted (default: 256 or the model's limit)."
DEVICE_HELP = ("Where the model runs: cpu, cuda, cuda:N (the N-th GPU), mps, or auto (cuda when torch sees a GPU, "
               "else mps when there is one, else cpu).")
#: ``--device`` of the commands that run a suite (capture and path attribution): it replaces the suite's.
SUITE_DEVICE_HELP = ("Where the models run (capture, attribution.path): cpu, cuda, cuda:N, mps or auto; replaces "
                     "the suite's device: (default: the suite's, cpu when it names none).")


def fail(err: XlprobeError) -> None:
    """Print an xlprobe error (message and hint, the CLI wording when it has one) and exit with status 2."""
    err_console.print(f"[bold red]error:[/] {escape(err.message)}", soft_wrap=True)
    hint = getattr(err, "cli_hint", None) or err.hint
    if hint:
        err_console.print(f"  [yellow]hint:[/] {escape(hint)}", soft_wrap=True)
    raise typer.Exit(2)


def say(text: str, *, err: bool = False) -> None:
    """Print plain text (square brackets kept, never read as rich markup)."""
    (err_console if err else console).print(escape(text), soft_wrap=True, highlight=False)


def flag(*decls: str, help: str) -> Any:
    """A boolean option shown as a plain flag (``--json``), without a type column in ``--help``."""
    return typer.Option(False, *decls, help=help, metavar="")


def choice(default: str | None, *decls: str, values: Sequence[str], help: str) -> Any:
    """An option restricted to ``values``, refused while parsing (before any model is loaded)."""
    allowed = tuple(values)

    def check(value: str | None) -> str | None:
        """The value, or a usage error naming the allowed ones and the closest."""
        if value is not None and value not in allowed:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(allowed)}{did_you_mean(value, allowed)}")
        return value

    return typer.Option(default, *decls, help=help, callback=check, metavar="|".join(allowed))


def device_option(default: str | None = "cpu", help: str = DEVICE_HELP) -> Any:
    """``--device``: checked and resolved while parsing (``auto`` becomes cuda, mps or cpu), before any model loads."""

    def check(value: str | None) -> str | None:
        """The resolved device, or a usage error saying what is missing and the fix."""
        if value is None:
            return None
        try:
            return resolve_device(value)
        except XlprobeError as err:
            raise typer.BadParameter(f"{err.message}; {err.hint}" if err.hint else err.message) from None

    return typer.Option(default, "--device", help=help, callback=check, metavar="cpu|cuda|cuda:N|mps|auto")


#: Names users reach for that are not the option's own: what they mean.
SYNONYMS = {"avg": "mean", "average": "mean", "cls": "first", "eos": "last", "float": "float32",
            "fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16", "lang": "language"}


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``choices`` (or a known synonym), or ``""``."""
    if SYNONYMS.get(word.lower()) in choices:
        return f" (did you mean {SYNONYMS[word.lower()]!r}?)"
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Lines(logging.Handler):
    """Prints log records on stderr as plain progress lines with the elapsed time."""

    def __init__(self, skip: Sequence[str]) -> None:
        super().__init__(logging.INFO)
        self.t0, self.skip = time.perf_counter(), tuple(skip)

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno > logging.INFO:  # warnings go where they always go (the root's handler)
            for handler in logging.getLogger().handlers:
                handler.handle(record)
            return
        msg = record.getMessage()
        if not msg.startswith(self.skip):
            err_console.print(f"[dim]{time.perf_counter() - self.t0:6.1f}s[/] {escape(msg)}", soft_wrap=True,
                              highlight=False)


@contextlib.contextmanager
def progress_lines(*loggers: str, skip: Sequence[str] = ()) -> Iterator[None]:
    """Show the info records of ``loggers`` on stderr as progress lines, also without ``--verbose``."""
    if logging.getLogger().getEffectiveLevel() <= logging.INFO:  # --verbose: the root handler shows them
        yield
        return
    handler = _Lines(skip)
    saved = {name: (logging.getLogger(name).level, logging.getLogger(name).propagate) for name in loggers}
    for name in loggers:
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.propagate = False  # the handler passes warnings on itself: no line is printed twice
        logger.addHandler(handler)
    try:
        yield
    finally:
        for name, (level, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate


def quiet_model_loading() -> None:
    """No tqdm bars from transformers / huggingface_hub while loading models (this process, the CLI)."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if "transformers" in sys.modules or "huggingface_hub" in sys.modules:
        with contextlib.suppress(ImportError, AttributeError):
            import huggingface_hub.utils as hub_utils
            import transformers.utils.logging as tf_logging

            tf_logging.disable_progress_bar()
            hub_utils.disable_progress_bars()
