"""Zero-shot transfer probe: train on one language, test on all; the gap reflects how aligned languages are."""
from __future__ import annotations

import numpy as np
import pytest

from xlprobe.errors import DataError
from xlprobe.probes.transfer import transfer_probe


def parallel(n_groups=200, d=16, rotate_fr=False, offset=0.0, seed=0):
    """en / fr / de items of the same groups; label = sign of the group's content along one direction."""
    rng = np.random.default_rng(seed)
    content = rng.normal(size=(n_groups, d))
    y_group = (content[:, 0] > 0).astype(int)
    langs = np.array(["en", "fr", "de"])
    rot = np.linalg.qr(rng.normal(size=(d, d)))[0]
    X, y, lg, g = [], [], [], []
    for i, lang in enumerate(langs):
        c = content @ rot if (rotate_fr and lang == "fr") else content
        X.append(c * 2 + rng.normal(size=(n_groups, d)) * 0.1 + offset * i)  # optional language offset
        y.append(y_group)
        lg += [lang] * n_groups
        g.append(np.arange(n_groups))
    return np.vstack(X), np.concatenate(y), np.array(lg), np.concatenate(g)


def test_aligned_languages_transfer_and_a_rotated_one_does_not():
    X, y, lg, g = parallel(rotate_fr=True)
    df = transfer_probe({"enc.2": X}, y, lg, g, train_lang="en", task="genre", n_boot=200, checkpoint="toy:mt")
    acc = df[(df.measure == "transfer.accuracy") & df.control.isna()].set_index("lang").value
    assert acc["en"] > 0.9 and acc["de"] > 0.9  # same geometry
    assert abs(acc["fr"] - 0.5) < 0.12  # a language-specific rotation breaks zero-shot transfer
    gap = df[df.measure == "transfer.gap"].set_index("lang")
    assert gap.loc["fr", "value"] > 0.3 and gap.loc["fr", "ci_low"] > 0.2
    assert abs(gap.loc["de", "value"]) < 0.1
    maj = df[df.control == "majority"].value.iloc[0]
    assert 0.4 < maj < 0.6
    assert set(df.train_lang) == {"en"} and set(df.task) == {"genre"}


def test_a_language_offset_hurts_transfer_and_centring_removes_it():
    X, y, lg, g = parallel(offset=1.5)
    raw = transfer_probe({"l": X}, y, lg, g, n_boot=0)
    cen = transfer_probe({"l": X}, y, lg, g, n_boot=0, center="language")
    pick = lambda df: df[(df.measure == "transfer.accuracy") & df.control.isna()].set_index("lang").value  # noqa: E731
    assert pick(raw)["de"] < 0.8 and pick(cen)["de"] > 0.9 and pick(cen)["en"] > 0.9
    assert set(cen.center) == {"language"}


def test_every_language_is_tested_on_the_same_held_out_groups():
    X, y, lg, g = parallel(n_groups=50)
    df = transfer_probe({"l": X}, y, lg, g, n_boot=0)
    n = df[(df.measure == "transfer.accuracy") & df.control.isna()].set_index("lang").n
    assert (n == 50).all()  # every group is held out once, in every language


def test_bad_input():
    X, y, lg, g = parallel(n_groups=20)
    with pytest.raises(DataError, match="train_lang 'sw' has no items"):
        transfer_probe({"l": X}, y, lg, g, train_lang="sw")
    with pytest.raises(DataError, match="single label"):
        transfer_probe({"l": X}, np.where(lg == "en", 1, y), lg, g)
    with pytest.raises(DataError, match="langs must be"):
        transfer_probe({"l": X}, y, lg[:3], g)
