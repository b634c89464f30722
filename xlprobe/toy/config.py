"""Settings of the toy-family recipe and its presets, ``quick`` (tests) and ``full`` (the shipped family)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from xlprobe.errors import ConfigError
from xlprobe.toy.data import HELDOUT_BOOKS, LANG_TRANSLATION

__all__ = ["ToyConfig", "PRESETS", "get_preset", "STAGES", "MT_LENGTH", "ENCODER_ONLY", "ARCHITECTURE"]

#: Stage name -> the stage it continues from (None: from the seeded random init). ``mt`` translates
#: many-to-many, ``mt-o2m`` English into the other languages, ``mt-m2o`` the others into English (the
#: paper's three MT directions); ``lm-cont`` denoises for as many steps (the control); ``mlm`` is an
#: encoder-only XLM-R masked LM from its own random init (the paper's "other multilingual model").
STAGES: dict[str, str | None] = {"lm": None, "mt": "lm", "lm-cont": "lm", "mt-o2m": "lm", "mt-m2o": "lm",
                                 "mlm": None}
#: Stages that run as many steps as ``mt`` (and from the same parent).
MT_LENGTH = ("mt", "lm-cont", "mt-o2m", "mt-m2o")
#: Encoder-only stages (no translation, no chrF); the others are MBart seq2seq models.
ENCODER_ONLY = ("mlm",)


@dataclass(frozen=True)
class ToyConfig:
    """Everything that determines a toy-family run (with the seed)."""

    langs: tuple[str, ...] = tuple(LANG_TRANSLATION)
    heldout_books: tuple[int, ...] = HELDOUT_BOOKS
    max_rows: int | None = None  # cap on training verse keys (quick preset)
    # tokenizer
    vocab_size: int = 8000
    tok_every: int = 3  # train the tokenizer on every k-th training verse of each language
    # model
    d_model: int = 128
    layers: int = 3
    heads: int = 4
    ffn: int = 512
    dropout: float = 0.0
    max_len: int = 128  # tokens per sequence, specials included
    # optimisation
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 300
    cont_lr: float = 1.5e-3
    cont_warmup: int = 200
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    clip: float = 1.0
    steps: dict[str, int] = field(default_factory=lambda: {"lm": 2400, "mt": 3200})  # lm-cont = mt, mlm = lm
    mask_ratio: float = 0.35
    poisson_lambda: float = 3.5
    pivot: str = "en"
    pivot_prob: float = 0.5
    # bookkeeping
    threads: int = 2
    log_every: int = 50
    checkpoint_every_s: float = 300.0
    # evaluation
    eval_directions: tuple[tuple[str, str], ...] = (
        ("en", "es"), ("es", "en"), ("en", "fr"), ("fr", "en"), ("en", "de"), ("de", "en"),
        ("en", "ru"), ("ru", "en"), ("ar", "en"), ("en", "vi"), ("fr", "de"), ("es", "it"),
    )
    eval_verses: int = 100
    eval_denoise_verses: int = 100
    eval_batch: int = 50
    eval_beams: int = 1
    eval_no_repeat_ngram: int = 3  # stops greedy decoding's loops ("de la de la ..."); 0 to switch off

    def stage_steps(self, stage: str) -> int:
        """Number of optimiser steps of ``stage`` (lm-cont, mt-o2m and mt-m2o mirror mt; mlm, unset, lm)."""
        if stage == "mlm" and "mlm" not in self.steps:
            return self.steps["lm"]
        return self.steps["mt" if stage in MT_LENGTH else stage]

    def to_dict(self) -> dict:
        """JSON-ready settings (tuples become lists)."""
        return asdict(self)


#: The settings that fix the tokenizer and the architecture: a run continued from shipped weights must
#: keep them (the others, steps, data cap, evaluation, may differ).
ARCHITECTURE = ("langs", "heldout_books", "vocab_size", "tok_every", "d_model", "layers", "heads", "ffn", "max_len")


PRESETS: dict[str, ToyConfig] = {
    "full": ToyConfig(),
    "quick": ToyConfig(
        langs=("en", "fr", "de", "ru"),
        max_rows=240,
        vocab_size=600,
        tok_every=1,
        d_model=32,
        layers=1,
        heads=2,
        ffn=64,
        max_len=64,
        batch_size=16,
        lr=3e-3,
        warmup=5,
        cont_warmup=3,
        steps={"lm": 24, "mt": 16},
        log_every=4,
        checkpoint_every_s=1e9,
        eval_directions=(("en", "fr"), ("fr", "en"), ("en", "ru")),
        eval_verses=8,
        eval_denoise_verses=8,
        eval_batch=8,
    ),
}


def get_preset(preset: str | ToyConfig, **overrides: object) -> ToyConfig:
    """A preset by name (or a config as is), with field overrides."""
    if isinstance(preset, ToyConfig):
        cfg = preset
    elif preset in PRESETS:
        cfg = PRESETS[preset]
    else:
        raise ConfigError(f"unknown toy preset {preset!r}", hint="choose one of " + ", ".join(PRESETS))
    bad = [k for k in overrides if k not in ToyConfig.__dataclass_fields__]
    if bad:
        raise ConfigError(f"unknown toy setting(s) {bad!r}", hint="see xlprobe.toy.config.ToyConfig")
    return replace(cfg, **overrides)
