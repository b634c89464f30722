"""What every ``xlprobe`` command shares: the consoles and the one way to fail on an xlprobe error."""
from __future__ import annotations

import os
import sys

import typer
from rich.console import Console
from rich.markup import escape

from xlprobe.errors import XlprobeError

__all__ = ["console", "err_console", "fail"]

# A pipe or a log file gets 120 columns rather than rich's 80, so result tables keep whole cells there.
console = Console() if sys.stdout.isatty() or os.environ.get("COLUMNS") else Console(width=120)
err_console = Console(stderr=True)


def fail(err: XlprobeError) -> None:
    """Print an xlprobe error (message and hint) and exit with status 2."""
    err_console.print(f"[bold red]error:[/] {escape(err.message)}", soft_wrap=True)
    if err.hint:
        err_console.print(f"  [yellow]hint:[/] {escape(err.hint)}", soft_wrap=True)
    raise typer.Exit(2)
