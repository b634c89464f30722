"""Training examples as pure functions of (seed, stream, step): text infilling, pair sampling, batches.

Every batch is rebuilt from integers alone (``np.random.default_rng([seed, stream, ...])``), so the
data-order position saved in a checkpoint is just the step number and resuming replays nothing.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from xlprobe.errors import DataError

__all__ = ["TokenizedCorpus", "Example", "Stream", "infill", "make_stream", "collate", "pad_ids", "IGNORE"]

IGNORE = -100


@dataclass(frozen=True)
class TokenizedCorpus:
    """Token ids (no specials) per language and row, ``None`` where the verse was dropped."""

    langs: tuple[str, ...]
    ids: dict[str, list[list[int] | None]]
    lang_ids: dict[str, int]  # language -> id of its mBART-50 code
    eos_id: int
    pad_id: int
    mask_id: int
    bos_id: int = 0
    piece_end: int = 0  # ids [4, piece_end) are ordinary pieces (language codes and <mask> follow)

    @property
    def n_rows(self) -> int:
        """Number of verse rows."""
        return len(next(iter(self.ids.values())))


@dataclass(frozen=True)
class Example:
    """One training pair: source row/lang, target row/lang (same row), and whether to noise the source."""

    row: int
    src: str
    tgt: str
    noise: bool


def infill(ids: Sequence[int], rng: np.random.Generator, mask_id: int, ratio: float, lam: float) -> list[int]:
    """mBART text infilling: Poisson(lam) spans covering ~ratio of tokens, each span -> one <mask>."""
    n = len(ids)
    target = int(round(n * ratio))
    if n == 0 or target == 0:
        return list(ids)
    lengths: list[int] = []
    while sum(lengths) < target:
        lengths.append(int(rng.poisson(lam)))
    lengths[-1] -= sum(lengths) - target
    starts = rng.choice(n, size=len(lengths), replace=len(lengths) > n)
    masked = np.zeros(n, dtype=bool)
    inserts = np.zeros(n, dtype=bool)
    for s, length in zip(starts, lengths):
        if length == 0:
            inserts[s] = True  # a zero-length span inserts a <mask>, as in BART
        else:
            masked[s : s + length] = True
    out: list[int] = []
    for i, tok in enumerate(ids):
        if inserts[i] and not masked[i]:
            out.append(mask_id)
        if masked[i]:
            if i == 0 or not masked[i - 1]:
                out.append(mask_id)
        else:
            out.append(tok)
    return out


@dataclass
class Stream:
    """An endless, epoch-wise, length-bucketed sequence of batches of examples."""

    examples_of_epoch: Callable[[int], list[Example]]
    lengths_of: Callable[[Example], int]
    n_examples: int
    batch_size: int
    seed: int
    stream_id: int
    bucket: int = 50
    transform: Callable[[Example], Example] | None = None  # applied after ordering (lm-cont)
    _cache: tuple[int, list[list[Example]]] | None = None

    def batches_per_epoch(self) -> int:
        """Full batches in one epoch (the last partial batch is dropped)."""
        return self.n_examples // self.batch_size

    def _epoch(self, epoch: int) -> list[list[Example]]:
        """Batches of one epoch: shuffle, sort chunks of ``bucket`` batches by length, shuffle batches."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, self.stream_id, 0, epoch])
        exs = self.examples_of_epoch(epoch)
        exs = [exs[i] for i in rng.permutation(len(exs))]
        n_batches = self.batches_per_epoch()
        exs = exs[: n_batches * self.batch_size]
        batches: list[list[Example]] = []
        chunk = self.batch_size * self.bucket
        for c in range(0, len(exs), chunk):
            part = sorted(exs[c : c + chunk], key=self.lengths_of)
            batches += [part[i : i + self.batch_size] for i in range(0, len(part), self.batch_size)]
        batches = [batches[i] for i in rng.permutation(len(batches))]
        self._cache = (epoch, batches)
        return batches

    def batch(self, step: int) -> list[Example]:
        """The examples of training step ``step`` (0-based)."""
        n = self.batches_per_epoch()
        batch = self._epoch(step // n)[step % n]
        return batch if self.transform is None else [self.transform(ex) for ex in batch]


def _pair(
    rng: np.random.Generator, avail: list[str], pivot: str | None, pivot_prob: float
) -> tuple[str, str]:
    """Pick a (src, tgt) pair of distinct languages; with ``pivot_prob`` one side is ``pivot``."""
    if pivot in avail and rng.random() < pivot_prob:
        other = [lang for lang in avail if lang != pivot]
        o = other[int(rng.integers(len(other)))]
        return (pivot, o) if rng.random() < 0.5 else (o, pivot)
    i, j = rng.choice(len(avail), size=2, replace=False)
    return avail[int(i)], avail[int(j)]


def make_stream(
    kind: str,
    corpus: TokenizedCorpus,
    rows: Sequence[int],
    *,
    batch_size: int,
    seed: int,
    stream_id: int,
    pivot: str | None = "en",
    pivot_prob: float = 0.5,
) -> Stream:
    """Stream ``lm`` (denoise verses; ``mlm`` reads the same), ``mt`` (random pairs), ``lm-cont`` (denoise
    mt's targets), ``mt-o2m`` (pivot -> a random other language) or ``mt-m2o`` (a random other language -> pivot)."""
    rows = list(rows)
    if kind in ("lm", "mlm"):
        base = [Example(r, lang, lang, True) for r in rows for lang in corpus.langs if corpus.ids[lang][r]]

        def examples_of_epoch(epoch: int) -> list[Example]:
            """Every (verse, language): the same set each epoch."""
            return base
    elif kind in ("mt", "lm-cont"):
        avail = {r: [lang for lang in corpus.langs if corpus.ids[lang][r]] for r in rows}
        usable = [r for r in rows if len(avail[r]) >= 2]

        def examples_of_epoch(epoch: int) -> list[Example]:
            """Each usable verse once, with a language pair drawn for this epoch."""
            rng = np.random.default_rng([seed, stream_id, 1, epoch])
            out = []
            for r in usable:
                s, t = _pair(rng, avail[r], pivot, pivot_prob)
                out.append(Example(r, s, t, False))
            return out
    elif kind in ("mt-o2m", "mt-m2o"):
        if pivot is None:
            raise DataError(f"stream {kind!r} translates from or into the pivot language; got pivot=None",
                            hint="pass pivot='en'")
        others = {r: [lang for lang in corpus.langs if lang != pivot and corpus.ids[lang][r]] for r in rows}
        usable = [r for r in rows if pivot in corpus.langs and corpus.ids[pivot][r] and others[r]]

        def examples_of_epoch(epoch: int) -> list[Example]:
            """Each usable verse once, pivot -> a language drawn for this epoch (or the reverse for m2o)."""
            rng = np.random.default_rng([seed, stream_id, 1, epoch])
            out = []
            for r in usable:
                o = others[r][int(rng.integers(len(others[r])))]
                out.append(Example(r, pivot, o, False) if kind == "mt-o2m" else Example(r, o, pivot, False))
            return out
    else:
        raise DataError(f"unknown stream kind {kind!r}", hint="one of 'lm', 'mlm', 'mt', 'lm-cont', 'mt-o2m', 'mt-m2o'")

    def length(ex: Example) -> int:
        """Source plus target tokens, the key of length bucketing."""
        return len(corpus.ids[ex.src][ex.row]) + len(corpus.ids[ex.tgt][ex.row])

    n_examples = len(base) if kind in ("lm", "mlm") else len(usable)
    if n_examples < batch_size:
        raise DataError(f"{n_examples} {kind} examples cannot fill one batch of {batch_size}",
                        hint="lower batch_size or use more verses")
    # lm-cont is ordered exactly as mt (same lengths, same buckets), then denoises mt's target side
    transform = (lambda ex: Example(ex.row, ex.tgt, ex.tgt, True)) if kind == "lm-cont" else None
    return Stream(examples_of_epoch, length, n_examples, batch_size, seed, stream_id, transform=transform)


def pad_ids(seqs: list[list[int]], value: int) -> torch.Tensor:
    """Right-pad int sequences to a [n, max_len] long tensor."""
    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def collate(
    examples: Sequence[Example],
    corpus: TokenizedCorpus,
    rng: np.random.Generator,
    *,
    mask_ratio: float = 0.35,
    poisson_lambda: float = 3.5,
) -> dict[str, torch.Tensor]:
    """MBart tensors: ``[src] X </s>`` -> labels ``[tgt] Y </s>``, decoder input ``</s> [tgt] Y``."""
    srcs, tgts = [], []
    for ex in examples:
        x = corpus.ids[ex.src][ex.row]
        y = corpus.ids[ex.tgt][ex.row]
        if ex.noise:
            x = infill(x, rng, corpus.mask_id, mask_ratio, poisson_lambda)
        srcs.append([corpus.lang_ids[ex.src], *x, corpus.eos_id])
        tgts.append([corpus.lang_ids[ex.tgt], *y, corpus.eos_id])
    input_ids = pad_ids(srcs, corpus.pad_id)
    labels = pad_ids(tgts, IGNORE)
    dec = pad_ids([[corpus.eos_id, *t[:-1]] for t in tgts], corpus.pad_id)
    return {
        "input_ids": input_ids,
        "attention_mask": (input_ids != corpus.pad_id).long(),
        "decoder_input_ids": dec,
        "decoder_attention_mask": (dec != corpus.pad_id).long(),
        "labels": labels,
    }
