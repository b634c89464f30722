"""Text infilling, pair sampling and batch layout of the toy recipe."""
from __future__ import annotations

import numpy as np
import pytest

from xlprobe.errors import DataError
from xlprobe.toy.batches import IGNORE, Example, TokenizedCorpus, collate, infill, make_stream

MASK = 99


def _corpus(n: int = 40) -> TokenizedCorpus:
    """A synthetic tokenized corpus of three languages with rows of varied length."""
    rng = np.random.default_rng(0)
    ids = {lang: [list(rng.integers(10, 90, size=int(rng.integers(3, 30)))) for _ in range(n)]
           for lang in ("en", "fr", "ru")}
    ids["ru"][0] = None
    return TokenizedCorpus(("en", "fr", "ru"), ids, {"en": 95, "fr": 96, "ru": 97}, 2, 1, MASK)


def test_infill_masks_about_35_percent() -> None:
    """Over many sentences ~35 % of tokens are masked and each span becomes one <mask>."""
    rng = np.random.default_rng(1)
    kept = total = 0
    for _ in range(300):
        ids = list(range(10, 60))
        out = infill(ids, rng, MASK, 0.35, 3.5)
        kept += sum(t != MASK for t in out)
        total += len(ids)
        unmasked = [t for t in out if t != MASK]
        assert unmasked == sorted(unmasked)  # order preserved, nothing invented
    assert 0.28 < 1 - kept / total < 0.40


def test_infill_is_a_function_of_the_rng() -> None:
    """The same generator seed gives the same noise."""
    ids = list(range(10, 50))
    a = infill(ids, np.random.default_rng([3, 4]), MASK, 0.35, 3.5)
    b = infill(ids, np.random.default_rng([3, 4]), MASK, 0.35, 3.5)
    assert a == b and MASK in a


def test_collate_layout() -> None:
    """Source ``[src] X </s>``, labels ``[tgt] Y </s>`` padded with -100, decoder input ``</s> [tgt] Y``."""
    tc = _corpus()
    exs = [Example(1, "en", "fr", False), Example(2, "fr", "en", False)]
    b = collate(exs, tc, np.random.default_rng(0))
    for i, ex in enumerate(exs):
        n_src = len(tc.ids[ex.src][ex.row]) + 2
        assert b["input_ids"][i, :n_src].tolist() == [tc.lang_ids[ex.src], *tc.ids[ex.src][ex.row], 2]
        assert b["input_ids"][i, n_src:].eq(1).all() and b["attention_mask"][i].sum() == n_src
        n_tgt = len(tc.ids[ex.tgt][ex.row]) + 2
        assert b["labels"][i, :n_tgt].tolist() == [tc.lang_ids[ex.tgt], *tc.ids[ex.tgt][ex.row], 2]
        assert b["labels"][i, n_tgt:].eq(IGNORE).all()
        assert b["decoder_input_ids"][i, :n_tgt].tolist() == [2, tc.lang_ids[ex.tgt], *tc.ids[ex.tgt][ex.row]]


def test_streams_are_reproducible_and_cover_epochs() -> None:
    """batch(step) depends only on (seed, stream, step); an epoch visits every example once."""
    tc = _corpus()
    rows = list(range(40))
    a = make_stream("lm", tc, rows, batch_size=8, seed=5, stream_id=1)
    b = make_stream("lm", tc, rows, batch_size=8, seed=5, stream_id=1)
    assert [b.batch(s) for s in (7, 0, 3)] == [a.batch(s) for s in (7, 0, 3)]
    epoch = [ex for s in range(a.batches_per_epoch()) for ex in a.batch(s)]
    assert len(set(epoch)) == len(epoch) == a.batches_per_epoch() * 8
    assert a.batch(0) != make_stream("lm", tc, rows, batch_size=8, seed=6, stream_id=1).batch(0)


def test_control_stream_mirrors_mt() -> None:
    """lm-cont reads the same rows and target languages as mt, denoising the target text."""
    tc = _corpus()
    mt = make_stream("mt", tc, range(40), batch_size=8, seed=0, stream_id=2)
    ctl = make_stream("lm-cont", tc, range(40), batch_size=8, seed=0, stream_id=2)
    for step in range(12):
        m, c = mt.batch(step), ctl.batch(step)
        assert [(e.row, e.tgt) for e in m] == [(e.row, e.tgt) for e in c]
        assert all(e.src != e.tgt and not e.noise for e in m)
        assert all(e.src == e.tgt and e.noise for e in c)
        assert all(tc.ids[e.src][e.row] and tc.ids[e.tgt][e.row] for e in m)


def test_too_few_examples_raise() -> None:
    """A batch larger than the data is a DataError with a hint."""
    with pytest.raises(DataError, match="batch"):
        make_stream("mt", _corpus(4), range(4), batch_size=8, seed=0, stream_id=2)
