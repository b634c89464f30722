"""``xlprobe demo``, ``xlprobe compare A B`` and ``xlprobe report RUN``: the study without writing a YAML.

``demo`` runs the shipped ``toy.yaml`` (the toy family on books it never saw) and prints where the
report is; ``compare`` builds a two-checkpoint suite from its flags (validated like a YAML one) and
runs it; ``report`` rebuilds ``report.html`` / ``report.md`` of a finished run from its tables.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from xlprobe.cli_common import SUITE_DEVICE_HELP, console, device_option, fail
from xlprobe.errors import XlprobeError

__all__ = ["demo_command", "compare_command", "report_command", "compare_suite_text", "TOY_SUITE"]

#: The shipped toy suite (package data).
TOY_SUITE = Path(__file__).resolve().parent / "suites" / "toy.yaml"
#: What ``xlprobe compare`` measures: probes with controls, separability, retrieval, CKA, weights.
COMPARE_MEASURES = ("probe.linear", "separability.knn", "retrieval.p_at_1", "cka.linear.debiased",
                    "weights.rel_change")


def _run_and_report(suite: Any, out: Path) -> tuple[Any, Path]:
    """run_suite with its progress bar (it writes the report last); the results and the report's path."""
    from xlprobe.suite_run import run_suite

    return run_suite(suite, out, progress=True), out / "report.html"


def demo_command(
    out: Path = typer.Option(Path("runs/toy-demo"), "--out", "-o",
                             help="Run folder (created; the same command resumes it)."),
    device: str | None = device_option(None, help=SUITE_DEVICE_HELP),
) -> None:
    """Run the shipped toy suite end to end (7 checkpoints, 8 languages, held-out books); print the report's path."""
    from xlprobe.suite import load_suite

    try:
        suite = load_suite(TOY_SUITE, device=device)
        console.print(f"demo: suite {suite.name!r} ({TOY_SUITE}) into {out}; a few minutes on 2 cores, resumable")
        t0 = time.perf_counter()
        results, page = _run_and_report(suite, out)
    except XlprobeError as err:
        fail(err)
    console.print(f"{len(results)} result rows in {time.perf_counter() - t0:.0f} s")
    console.print(f"report: {page.resolve()}  (Markdown twin: {out / 'report.md'}; figures in {out / 'figures'})")


def compare_suite_text(a: str, b: str, *, data: str, languages: list[str], books: list[str] | None,
                       size: int, layers: str, control: str | None, n_boot: int, device: str = "cpu") -> str:
    """The YAML of a two-checkpoint suite (a third with ``control``), validated like any suite file."""
    import yaml

    checkpoints: list[Any] = [{"model": a, "role": "base"}, b]
    if control:
        checkpoints.append({"model": control, "role": "control"})
    suite = {"name": "compare", "checkpoints": checkpoints,
             "data": {"corpus": data, "languages": languages, "size": size,
                      **({"books": books} if books and data == "bible" else {})},
             "layers": layers, "measures": [{"probe.linear": {"task": "language"}}, *COMPARE_MEASURES[1:]],
             "figures": ["layer_curves", "paired_differences", "cka_heatmap", "umap"], "n_boot": n_boot,
             **({"device": device} if device != "cpu" else {})}
    return yaml.safe_dump(suite, sort_keys=False)


def compare_command(
    a: str = typer.Argument(..., help="The base checkpoint (hub id, folder, toy:lm, tiny:...)."),
    b: str = typer.Argument(..., help="The checkpoint compared with it (e.g. toy:mt)."),
    out: Path = typer.Option(None, "--out", "-o", help="Run folder (default runs/compare-A-B; resumable)."),
    control: str = typer.Option(None, "--control", help="A control checkpoint (e.g. toy:lm-cont): contrasts vs it."),
    data: str = typer.Option("bible", "--data", help="Corpus scheme (bible; flores / xnli need the hub extra)."),
    languages: str = typer.Option("en,fr,de,ru", "--languages", help="Comma-separated language codes."),
    books: str = typer.Option("Ruth,Jonah,John", "--books", help="Bible books (comma-separated; '' for all)."),
    size: int = typer.Option(200, "--size", help="Parallel groups (verses) per language."),
    layers: str = typer.Option("encoder.*", "--layers", help="Capture points (glob or comma-separated aliases)."),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap draws behind every interval."),
    device: str = device_option(),
) -> None:
    """Compare two checkpoints without a YAML: probes with controls, separability, retrieval, CKA, weights, report."""
    from xlprobe.errors import ModelNotFoundError
    from xlprobe.suite import parse_suite, unavailable_checkpoints

    try:
        text = compare_suite_text(a, b, data=data, languages=[x for x in languages.split(",") if x],
                                  books=[x for x in books.split(",") if x] or None, size=size,
                                  layers=layers, control=control, n_boot=n_boot, device=device)
        suite = parse_suite(text, file="<xlprobe compare>")
        for i, message, hint in unavailable_checkpoints(suite)[:1]:
            raise ModelNotFoundError(f"{suite.checkpoints[i].model}: {message}", hint=hint)
        out = out or Path("runs") / ("compare-" + "-".join(_slug(s) for s in (a, b)))
        results, page = _run_and_report(suite, out)
    except XlprobeError as err:
        fail(err)
    console.print(f"{len(results)} result rows -> {out / 'results.parquet'}; report: {page.resolve()}")


def _slug(spec: str) -> str:
    """A folder-safe form of a model spec (``toy:mt`` -> ``toy_mt``)."""
    return "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in spec.rstrip("/").split("/")[-1])


def report_command(
    run_dir: Path = typer.Argument(..., help="A finished run folder (xlprobe run / demo / compare --out)."),
) -> None:
    """Rebuild report.html and report.md of a finished run from its tables (nothing is recomputed)."""
    from xlprobe.report import write_report

    try:
        page, md = write_report(run_dir)
    except XlprobeError as err:
        fail(err)
    console.print(f"report: {page.resolve()} and {md}")
