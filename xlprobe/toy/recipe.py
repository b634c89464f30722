"""The recipe of the toy mBART family: tokenizer, stages lm -> {mt, lm-cont, ...}, mlm, fp16 export, evaluation.

Resumable after a kill: each stage checkpoints model, optimizer, scheduler and step (the data order and
every random draw are functions of (seed, stage, step), see ``batches.py``) atomically every few minutes;
a restart skips finished stages and continues inside the unfinished one.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import (
    AutoModelForMaskedLM,
    AutoModelForSeq2SeqLM,
    GenerationConfig,
    MBartConfig,
    MBartForConditionalGeneration,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from xlprobe.errors import ConfigError
from xlprobe.toy.batches import IGNORE, TokenizedCorpus, collate, make_stream
from xlprobe.toy.config import ENCODER_ONLY, STAGES, ToyConfig, get_preset
from xlprobe.toy.data import LANG_CODES, ParallelCorpus, load_corpus
from xlprobe.toy.evaluate import evaluate_model
from xlprobe.toy.mlm import build_mlm_model, evaluate_mlm, mlm_collate, xlmr_tokenizer
from xlprobe.toy.tokenizer import build_tokenizer, lang_id, load_tokenizer

__all__ = ["train", "build_model", "build_stage_model", "tokenize_corpus", "export_checkpoint", "main"]

log = logging.getLogger("xlprobe.toy")
_STREAM_ID = {"lm": 1, "mt": 2, "lm-cont": 3, "mt-o2m": 4, "mt-m2o": 5, "mlm": 6}


# ---------------------------------------------------------------- files
def _write_json(path: Path, obj: object) -> None:
    """Write JSON atomically (temp file + fsync + rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _save_torch(path: Path, obj: object) -> None:
    """``torch.save`` atomically (temp file + fsync + rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_json(path: Path, default: object) -> object:
    """Read JSON, or ``default`` when the file does not exist."""
    return json.loads(path.read_text()) if path.exists() else default


@contextlib.contextmanager
def _log_to(log_file: Path) -> Iterator[None]:
    """Send the ``xlprobe.toy`` loggers to ``log_file`` (appending) for the duration."""
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("xlprobe.toy")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        handler.close()


# ---------------------------------------------------------------- data and model
def tokenize_corpus(
    corpus: ParallelCorpus, tokenizer: PreTrainedTokenizerBase, max_len: int
) -> TokenizedCorpus:
    """Token ids (no specials, truncated to ``max_len - 2``) of every text, with the special ids."""
    ids: dict[str, list[list[int] | None]] = {}
    for lang in corpus.langs:
        texts = corpus.texts[lang]
        present = [i for i, t in enumerate(texts) if t]
        enc = tokenizer([texts[i] for i in present], add_special_tokens=False)["input_ids"] if present else []
        col: list[list[int] | None] = [None] * len(texts)
        for i, e in zip(present, enc):
            col[i] = list(e[: max_len - 2]) or None
        ids[lang] = col
    return TokenizedCorpus(
        tuple(corpus.langs), ids, {lang: lang_id(tokenizer, LANG_CODES[lang]) for lang in corpus.langs},
        tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.mask_token_id, tokenizer.bos_token_id,
        min(getattr(tokenizer, "lang_code_to_id", {}).values(), default=tokenizer.mask_token_id),
    )


def build_model(cfg: ToyConfig, vocab_size: int, seed: int) -> MBartForConditionalGeneration:
    """A randomly initialised small MBart, from ``seed`` (the caller's torch RNG is left untouched)."""
    config = MBartConfig(
        vocab_size=vocab_size, d_model=cfg.d_model, encoder_layers=cfg.layers, decoder_layers=cfg.layers,
        encoder_attention_heads=cfg.heads, decoder_attention_heads=cfg.heads, encoder_ffn_dim=cfg.ffn,
        decoder_ffn_dim=cfg.ffn, max_position_embeddings=cfg.max_len, dropout=cfg.dropout,
        attention_dropout=0.0, activation_dropout=0.0, scale_embedding=True, pad_token_id=1, bos_token_id=0,
        eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=2, tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MBartForConditionalGeneration(config)
    model.generation_config = _generation_config(cfg)
    return model


def build_stage_model(cfg: ToyConfig, stage: str, vocab_size: int, seed: int) -> PreTrainedModel:
    """The seeded random init of ``stage``: an XLM-R masked LM for ``mlm``, else the small MBart."""
    return build_mlm_model(cfg, vocab_size, seed) if stage in ENCODER_ONLY else build_model(cfg, vocab_size, seed)


def _generation_config(cfg: ToyConfig) -> GenerationConfig:
    """mBART-50 generation conventions: start with </s>, force the target code (per call), end with </s>."""
    return GenerationConfig(
        bos_token_id=0, pad_token_id=1, eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=2,
        num_beams=1, do_sample=False,
    )


def export_checkpoint(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: Path, meta: dict
) -> int:
    """Save an fp16 safetensors folder loadable by AutoModelForSeq2SeqLM / AutoTokenizer; returns bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    half = copy.deepcopy(model).to(torch.float16)
    half.save_pretrained(str(folder))
    (xlmr_tokenizer(tokenizer) if meta.get("stage") in ENCODER_ONLY else tokenizer).save_pretrained(str(folder))
    _write_json(folder / "xlprobe_toy.json", meta)
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def _optimizer(
    model: torch.nn.Module, cfg: ToyConfig, stage: str
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with linear warm-up then cosine decay to ``min_lr_ratio`` over the stage's steps."""
    first = STAGES[stage] is None
    lr, warmup, total = (cfg.lr if first else cfg.cont_lr), (cfg.warmup if first else cfg.cont_warmup), \
        cfg.stage_steps(stage)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "norm" in name else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98), eps=1e-6)

    def factor(step: int) -> float:
        """Multiplier of the peak learning rate at ``step``."""
        if step < warmup:
            return (step + 1) / warmup
        t = min(1.0, (step - warmup) / max(1, total - warmup))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


# ---------------------------------------------------------------- one stage
def _write_curve(path: Path, curve: list[dict]) -> None:
    """Write a stage's per-step loss curve as CSV and JSON."""
    _write_json(path.with_suffix(".json"), curve)
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["step", "loss", "tokens", "lr", "seconds"])
        w.writeheader()
        w.writerows(curve)
    os.replace(tmp, path.with_suffix(".csv"))


def _run_stage(stage: str, cfg: ToyConfig, seed: int, out: Path, model: torch.nn.Module,
               tc: TokenizedCorpus, rows: list[int], resume: bool) -> dict:
    """Train one stage to its step count from its checkpoint (if any); returns its summary."""
    total = cfg.stage_steps(stage)
    state_path = out / "state" / f"{stage}.pt"
    opt, sched = _optimizer(model, cfg, stage)
    step, curve, elapsed = 0, [], 0.0
    if resume and state_path.exists():
        st = torch.load(state_path, weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        step, curve, elapsed = st["step"], st["curve"], st["elapsed"]
        log.info("stage %s: resumed at step %d/%d", stage, step, total)
    # mt and its control read the very same (row, language pair) sequence
    kind_seed = _STREAM_ID["mt" if stage == "lm-cont" else stage]
    stream = make_stream(stage, tc, rows, batch_size=cfg.batch_size, seed=seed, stream_id=kind_seed,
                         pivot=cfg.pivot, pivot_prob=cfg.pivot_prob)
    log.info("stage %s: %d steps of %d examples (%d per epoch)", stage, total, cfg.batch_size,
             stream.n_examples)

    def save() -> None:
        """Checkpoint the stage atomically and refresh its loss curve files."""
        _save_torch(state_path, {"stage": stage, "step": step, "model": model.state_dict(),
                                 "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                 "curve": curve, "elapsed": elapsed, "seed": seed})
        _write_curve(out / "curves" / stage, curve)

    model.train()
    last_save, t_win, tok_win, loss_win = time.time(), time.time(), 0, []
    with torch.random.fork_rng(devices=[]):
        while step < total:
            t0 = time.time()
            torch.manual_seed(seed * 1_000_003 + _STREAM_ID[stage] * 10_007 + step)  # dropout, per step
            rng = np.random.default_rng([seed, _STREAM_ID[stage], 2, step])  # noise, per step
            examples = stream.batch(step)
            batch = mlm_collate(examples, tc, rng) if stage in ENCODER_ONLY else \
                collate(examples, tc, rng, mask_ratio=cfg.mask_ratio, poisson_lambda=cfg.poisson_lambda)
            labels = batch.pop("labels")
            logits = model(**batch).logits
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(),
                                                     ignore_index=IGNORE)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            lr = opt.param_groups[0]["lr"]
            opt.step()
            sched.step()
            step += 1
            loss_value = loss.detach().item()
            ntok = int(batch["attention_mask"].sum() + (labels != IGNORE).sum())
            elapsed += time.time() - t0
            curve.append({"step": step, "loss": round(loss_value, 5), "tokens": ntok, "lr": lr,
                          "seconds": round(elapsed, 2)})
            tok_win += ntok
            loss_win.append(loss_value)
            if step % cfg.log_every == 0 or step == total:
                dt = time.time() - t_win
                eta = elapsed / step * (total - step)
                log.info("stage %s step %d/%d loss %.4f lr %.2e tok/s %.0f elapsed %.0fs eta %.0fs",
                         stage, step, total, sum(loss_win) / len(loss_win), lr, tok_win / max(dt, 1e-9),
                         elapsed, eta)
                t_win, tok_win, loss_win = time.time(), 0, []
            if time.time() - last_save > cfg.checkpoint_every_s:
                save()
                last_save = time.time()
                log.info("stage %s: checkpoint at step %d", stage, step)
    save()
    tail = curve[-min(len(curve), 100):]
    return {"steps": total, "final_loss": sum(c["loss"] for c in tail) / max(len(tail), 1),
            "seconds": round(elapsed, 1), "tokens": sum(c["tokens"] for c in curve),
            "tokens_per_s": round(sum(c["tokens"] for c in curve) / max(elapsed, 1e-9), 1)}


# ---------------------------------------------------------------- the recipe
def _prepare(out: Path, cfg: ToyConfig) -> tuple[ParallelCorpus, ParallelCorpus, PreTrainedTokenizerBase]:
    """Load the corpus, split off the held-out books, and build (or reload) the tokenizer."""
    corpus = load_corpus(cfg.langs)
    train_rows = corpus.indices(False, cfg.heldout_books)
    if cfg.max_rows is not None:
        train_rows = [train_rows[int(i)] for i in np.linspace(0, len(train_rows) - 1, cfg.max_rows).round()]
    train_c = corpus.subset(train_rows)
    held_c = corpus.subset(corpus.indices(True, cfg.heldout_books))
    tok_dir = out / "tokenizer"
    if (tok_dir / "tokenizer.json").exists():
        tokenizer = load_tokenizer(tok_dir)
    else:
        t0 = time.time()
        texts = [t for lang in cfg.langs for t in train_c.texts[lang][:: cfg.tok_every] if t]
        tmp = out / "tokenizer.tmp"  # built aside, then renamed: a kill never leaves half a tokenizer
        shutil.rmtree(tmp, ignore_errors=True)
        build_tokenizer(texts, cfg.vocab_size, tmp)
        shutil.rmtree(tok_dir, ignore_errors=True)
        os.replace(tmp, tok_dir)
        tokenizer = load_tokenizer(tok_dir)
        log.info("tokenizer: %d ids from %d texts in %.1fs", len(tokenizer), len(texts), time.time() - t0)
    log.info("data: %d training verse keys, %d held-out (books %s); dropped per language: %s",
             len(train_c.keys), len(held_c.keys), list(cfg.heldout_books), corpus.dropped)
    return train_c, held_c, tokenizer


def _check_config(out: Path, record: dict, resume: bool) -> None:
    """Refuse to resume a run directory made with other settings."""
    path = out / "config.json"
    old = _read_json(path, None)
    if resume and old is not None and old != record:
        diff = sorted(k for k in set(old) | set(record) if old.get(k) != record.get(k))
        raise ConfigError(f"{out} holds a run with other settings (differ: {diff})",
                          hint="use another out_dir, the same preset and seed, or resume=False")
    _write_json(path, record)


def _selected(stages: Sequence[str] | None, done: dict) -> list[str]:
    """The stages to run, in recipe order; each one's parent must be done or selected before it."""
    todo = list(STAGES) if stages is None else [s for s in STAGES if s in set(stages)]
    unknown = sorted(set(stages or ()) - set(STAGES))
    if unknown:
        raise ConfigError(f"unknown toy stage(s) {unknown}", hint="stages: " + ", ".join(STAGES))
    for stage in todo:
        parent = STAGES[stage]
        if parent is not None and parent not in done and parent not in todo[: todo.index(stage)]:
            raise ConfigError(f"stage {stage!r} continues from {parent!r}, which this run has not trained",
                              hint=f"add {parent!r} to the stages, or seed the run from the shipped family "
                              "(xlprobe.toy.extend.seed_from_shipped)")
    return todo


def train(out_dir: str | Path, preset: str | ToyConfig = "full", seed: int = 0, resume: bool = True,
          log_file: str | Path | None = None, stages: Sequence[str] | None = None, **overrides: object) -> dict:
    """Run (or resume) the whole toy-family recipe in ``out_dir``; returns the run summary.

    Parameters
    ----------
    out_dir : folder for tokenizer, state, curves, fp16 checkpoints (``checkpoints/<stage>``) and eval.
    preset : ``"full"``, ``"quick"`` or a ``ToyConfig``; ``overrides`` replace fields of it.
    seed : the one seed every stage, batch and noise draw derives from.
    resume : continue from what ``out_dir`` holds (False: start over, overwriting).
    log_file : progress log (default ``out_dir/train.log``).
    stages : the stages to train and evaluate (default all of :data:`STAGES`), in recipe order; a
        parent must be done already (e.g. seeded from the shipped family) or selected too.
    """
    cfg = get_preset(preset, **overrides)
    out = Path(out_dir)
    for sub in ("state", "curves", "checkpoints"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    record = {"seed": seed, "config": json.loads(json.dumps(cfg.to_dict()))}
    progress_path = out / "progress.json"
    with _log_to(Path(log_file) if log_file else out / "train.log"):
        _check_config(out, record, resume)
        if not resume:
            for p in (out / "state").glob("*.pt"):
                p.unlink()
            for p in (progress_path, out / "eval.json", out / "summary.json"):
                p.unlink(missing_ok=True)
            for p in (out / "tokenizer").glob("*"):
                p.unlink()
        progress = _read_json(progress_path, {"done": {}, "evaluated": []})
        log.info("toy family run in %s (seed %d, %d threads); done: %s", out, seed, cfg.threads,
                 list(progress["done"]))
        train_c, held_c, tokenizer = _prepare(out, cfg)
        tc = tokenize_corpus(train_c, tokenizer, cfg.max_len)
        rows = list(range(len(train_c.keys)))
        todo = _selected(stages, progress["done"])
        for stage in todo:
            parent = STAGES[stage]
            if stage in progress["done"]:
                continue
            model = build_stage_model(cfg, stage, len(tokenizer), seed)
            if parent is not None:
                model.load_state_dict(torch.load(out / "state" / f"{parent}.final.pt", weights_only=True))
            n_params = sum(p.numel() for p in model.parameters())
            log.info("stage %s: %d parameters, from %s", stage, n_params, parent or f"seed {seed}")
            summary = _run_stage(stage, cfg, seed, out, model, tc, rows, resume)
            _save_torch(out / "state" / f"{stage}.final.pt", model.state_dict())
            meta = {"family": "xlprobe-toy", "stage": stage, "parent": parent, "seed": seed,
                    "langs": {lang: LANG_CODES[lang] for lang in cfg.langs},
                    "heldout_books": cfg.heldout_books,
                    "steps": summary["steps"],
                    "usage": "AutoModelForMaskedLM; no language code: <s> text </s>" if stage in ENCODER_ONLY
                    else "tokenizer.src_lang = '<code>'; model.generate(**enc, "
                    "forced_bos_token_id=tokenizer.convert_tokens_to_ids('<tgt code>'))"}
            summary["bytes"] = export_checkpoint(model, tokenizer, out / "checkpoints" / stage, meta)
            progress["done"][stage] = summary
            _write_json(progress_path, progress)
            log.info("stage %s done: %s", stage, summary)
        held_tc = tokenize_corpus(held_c, tokenizer, cfg.max_len)
        results = _read_json(out / "eval.json", {})
        for stage in todo:
            if stage in results:
                continue
            log.info("evaluating %s on held-out books", stage)
            folder = out / "checkpoints" / stage
            if stage in ENCODER_ONLY:
                model = AutoModelForMaskedLM.from_pretrained(str(folder), dtype=torch.float32)
                results[stage] = evaluate_mlm(model, held_c, held_tc, n_verses=cfg.eval_denoise_verses,
                                              seed=seed, batch_size=cfg.eval_batch)
            else:
                model = AutoModelForSeq2SeqLM.from_pretrained(str(folder), dtype=torch.float32)
                results[stage] = evaluate_model(
                    model, load_tokenizer(folder), held_c, held_tc, cfg.eval_directions, n_verses=cfg.eval_verses,
                    n_denoise=cfg.eval_denoise_verses, seed=seed, batch_size=cfg.eval_batch,
                    num_beams=cfg.eval_beams, max_length=cfg.max_len, no_repeat_ngram_size=cfg.eval_no_repeat_ngram)
            _write_json(out / "eval.json", results)
        scores = {s: {k: r[k] for k in ("chrf", "denoise_loss", "mlm_loss") if k in r} for s, r in results.items()}
        summary = {"stages": progress["done"], "eval": scores,
                   "checkpoint_bytes": sum(v["bytes"] for v in progress["done"].values())}
        _write_json(out / "summary.json", summary)
        log.info("toy family complete: %s", json.dumps(summary["eval"]))
    return summary


def main(argv: list[str] | None = None) -> int:
    """``python -m xlprobe.toy.recipe --out DIR [--preset full|quick] [--seed N] [--no-resume]``."""
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--preset", default="full")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-resume", action="store_true")
    ap.add_argument("--log-file", default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    train(args.out, args.preset, seed=args.seed, resume=not args.no_resume, log_file=args.log_file)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
