"""``xlprobe store`` (ls, verify) and ``xlprobe toy`` (train, list): the administrative commands."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from xlprobe.cli_common import choice, console, err_console, fail, flag
from xlprobe.errors import XlprobeError

__all__ = ["store_app", "toy_app"]

store_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Inspect and check activation stores.")
toy_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="The small mBART-style toy family trained here (lm, mt, lm-cont; mt-o2m, mt-m2o).")


@store_app.command("ls")
def store_ls(path: Path = typer.Argument(..., help="Activation store folder.")) -> None:
    """List the shards of a store."""
    from xlprobe.store import ActivationStore

    try:
        st = ActivationStore.open(path, create=False)
        keys = st.keys()
    except XlprobeError as err:
        fail(err)
    table = Table(title=f"{len(keys)} shard(s) in {path}")
    for col in ("alias", "pooling", "data", "model", "shape", "point"):
        table.add_column(col, no_wrap=col == "alias")
    for k in keys:
        e = st.entry(k)
        table.add_row(e.get("info", {}).get("alias", ""), k.pooling, k.data, k.model[:12], escape(str(e.get("shape"))),
                      k.point)
    console.print(table)


@store_app.command("verify")
def store_verify(
    path: Path = typer.Argument(..., help="Activation store folder."),
    repair: bool = flag("--repair", help="Drop damaged shards so the next capture rebuilds them, and stale part "
                        "folders of data-parallel captures."),
) -> None:
    """Check every shard's size and checksum, and look for stale part folders; exit 1 on a problem not repaired."""
    from xlprobe.store import ActivationStore

    try:
        problems = ActivationStore.open(path, create=False).verify(repair=repair)
    except XlprobeError as err:
        fail(err)
    if problems:
        for p in problems:
            err_console.print(f"[red]✗[/] {escape(p)}")
        if repair:
            console.print("damaged shards and stale part folders removed: re-run the capture command to rebuild "
                          "the shards")
            return
        raise typer.Exit(1)
    console.print("[green]all shards verified[/]")


@toy_app.command("train")
def toy_train(
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (reused to resume after a kill)."),
    preset: str = choice("full", "--preset", values=("full", "quick"), help="full (about 2 h on 2 cores) or quick "
                         "(about a minute)."),
    seed: int = typer.Option(0, "--seed"),
    fresh: bool = flag("--fresh", help="Start over instead of resuming what OUT holds."),
    stages: str = typer.Option("", "--stages", help="Comma-separated stages to train (default all: lm, mt, "
                               "lm-cont, mt-o2m, mt-m2o); a parent must be done or listed."),
    from_shipped: bool = flag("--from-shipped", help="Seed OUT with the shipped lm (tokenizer, weights, card "
                              "numbers), so new stages continue the shipped family."),
) -> None:
    """Train (or resume) the toy family: denoising lm, then mt, mt-o2m, mt-m2o and the lm-cont control from it."""
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # 2-4x faster on shared cores; read at torch import
    from xlprobe.toy import card, train

    chosen = [s.strip() for s in stages.split(",") if s.strip()] or None
    try:
        if from_shipped:
            from xlprobe.toy.extend import seed_from_shipped

            seed_from_shipped(out, preset)
            seed = int(card()["seed"])
        summary = train(out, preset=preset, seed=seed, resume=not fresh, stages=chosen)
    except XlprobeError as err:
        fail(err)
    _print_toy_summary(summary, out)


@toy_app.command("list")
def toy_list() -> None:
    """The shipped toy family: each checkpoint's stage, card numbers (chrF, losses) and folder."""
    from xlprobe.toy.shipped import NAMES, card, path

    try:
        c = card()
        folders = {n: path(n) for n in NAMES}
    except XlprobeError as err:
        fail(err)
    summary = {"stages": c["stages"],
               "eval": {s: {k: v[k] for k in ("chrf", "denoise_loss", "mlm_loss") if k in v}
                        for s, v in c["stages"].items()}}
    _print_toy_summary(summary, "shipped with xlprobe (see MODEL_CARD.md beside the weights)", footer=False)
    for n in NAMES:
        parent = c["stages"][n]["parent"]
        console.print(f"toy:{n:<8} {c['stages'][n]['objective']:<11} from {parent or 'seed ' + str(c['seed']):<8} "
                      f"{folders[n]}")


def _print_toy_summary(summary: dict, out: Path | str, footer: bool = True) -> None:
    """Stages (steps, loss, speed) and each checkpoint's chrF and denoising loss, as tables."""
    table = Table(title=f"toy family {out}" if not isinstance(out, Path) else f"toy family in {out}")
    for col in ("stage", "steps", "final loss", "tokens/s", "minutes"):
        table.add_column(col)
    for name, st in summary.get("stages", {}).items():
        table.add_row(name, str(st.get("steps")), f"{st.get('final_loss', float('nan')):.3f}",
                      f"{st.get('tokens_per_s', 0):.0f}", f"{st.get('seconds', 0) / 60:.1f}")
    console.print(table)
    evals = summary.get("eval", {})
    dirs = sorted({d for e in evals.values() for d in e.get("chrf", {})})  # an encoder-only stage has none
    table = Table(title="held-out books: chrF per direction, mean denoising loss (nats / token; mlm: masked-LM)")
    for col in ("checkpoint", *dirs, "denoise"):
        table.add_column(col)
    for name, e in evals.items():
        losses = list((e.get("denoise_loss") or e.get("mlm_loss") or {}).values())
        table.add_row(name, *(f"{e['chrf'][d]:.1f}" if d in e.get("chrf", {}) else "-" for d in dirs),
                      f"{sum(losses) / len(losses):.3f}" if losses else "-")
    console.print(table)
    if footer and isinstance(out, Path):
        console.print(f"summary: {out / 'summary.json'}; checkpoints: {out / 'checkpoints'}")
