"""``xlprobe run SUITE.yaml --out DIR [--dry-run]``: a validated suite, captured and measured in one command."""
from __future__ import annotations

import sys
from pathlib import Path

import typer

from xlprobe.cli_common import SUITE_DEVICE_HELP, console, device_option, fail
from xlprobe.errors import XlprobeError

__all__ = ["run_command"]


def run_command(
    suite_file: Path = typer.Argument(..., help="The suite YAML (e.g. xlprobe/suites/toy.yaml)."),
    out: Path = typer.Option(None, "--out", "-o", help="Run folder (created; the same command resumes it)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate, print the plan and an estimate of disk and "
                                 "time; load no model."),
    device: str | None = device_option(None, help=SUITE_DEVICE_HELP),
    nproc: int | None = typer.Option(None, "--nproc", min=1, help="Processes on this machine (launches torchrun): "
                                     "they split every checkpoint's capture batches (with --device cuda, one GPU "
                                     "each); process 0 then computes the measures, figures and report."),
) -> None:
    """Validate a suite, capture every checkpoint once, compute every measure; results.parquet in --out."""
    from xlprobe.hooks.distributed import env_rank, env_world, launch_command
    from xlprobe.suite import load_suite, unavailable_checkpoints
    from xlprobe.suite_run import estimate_suite, plan_suite, run_suite

    if nproc is not None and nproc > 1 and env_world() == 1 and not dry_run:
        import subprocess

        if out is None:
            raise typer.BadParameter("give --out DIR (or --dry-run)")
        try:
            load_suite(suite_file, check_models=True, device=device)  # a bad suite fails here once, not N times
        except XlprobeError as err:
            fail(err)
        raise typer.Exit(subprocess.run(launch_command(nproc, sys.argv[1:])).returncode)
    if env_rank() > 0:
        console.quiet = True  # process 0 reports

    try:
        # a run refuses a model not here (and a device not here), before any loads; --device replaces device:
        suite = load_suite(suite_file, check_models=not dry_run, device=device)
        plan = plan_suite(suite)
        console.print(f"suite {suite.name!r}: {len(suite.checkpoints)} checkpoint(s): "
                      + ", ".join(c.label + (f" ({c.role})" if c.role else "") for c in suite.checkpoints))
        for line in plan.lines():
            console.print(f"  {line}")
        if dry_run:
            console.print("estimate (from configs; no model loaded):")
            for line in estimate_suite(suite, plan).lines():
                console.print(f"  {line}", highlight=False)
            for i, message, _ in unavailable_checkpoints(suite):
                console.print(f"  not here to load: {suite.checkpoints[i].label}: {message}", highlight=False)
            return
        if out is None:
            raise typer.BadParameter("give --out DIR (or --dry-run)")
        results = run_suite(suite, out, progress=True)
    except XlprobeError as err:
        fail(err)
    console.print(f"{len(results)} rows -> {out / 'results.parquet'} and .csv; provenance.json beside them")
