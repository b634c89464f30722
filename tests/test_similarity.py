"""The similarity suite on synthetic stores with known answers: floors, language offsets, the null, roles."""
from __future__ import annotations

import numpy as np
import pytest

from xlprobe.similarity import centre_by_language, reference_contrasts, similarity_run
from xlprobe.store import ActivationStore
from xlprobe.types import Dataset, Record, StoreKey

LANGS = ("en", "fr", "de", "ru")


def _store(path, reps: dict[str, dict[str, np.ndarray]], n_groups: int):
    """A store holding the given arrays as mean-pooled shards over n_groups verses x 4 languages."""
    records = [Record(id=f"{lang}:{g}", text=f"verse {g}", lang=lang, group=f"b.1.{g}")
               for g in range(n_groups) for lang in LANGS]
    data = Dataset("synthetic", records)
    store = ActivationStore.open(path)
    fp = store.write_records(data)
    for model, layers in reps.items():
        for layer, X in layers.items():
            store.write(StoreKey(model, layer, "mean", fp), X.astype(np.float32),
                        info={"alias": layer, "model_spec": model})
    return path


def _offsets(rng, n_groups: int, d: int, scale: float) -> np.ndarray:
    """Each row's language offset (one random vector per language)."""
    return np.tile(rng.normal(size=(len(LANGS), d)) * scale, (n_groups, 1))


def test_independent_representations_sit_inside_the_null_and_shared_offsets_only_inflate_pooled_cka(tmp_path):
    rng = np.random.default_rng(0)
    G, d = 60, 64
    n = G * len(LANGS)
    offsets = _offsets(rng, G, d, 4.0)
    reps = {"A": {"l0": rng.normal(size=(n, d)), "l1": offsets + rng.normal(size=(n, d))},
            "B": {"l0": rng.normal(size=(n, d)), "l1": offsets @ np.linalg.qr(rng.normal(size=(d, d)))[0]
                  + rng.normal(size=(n, d))}}
    df = similarity_run(_store(tmp_path, reps, G), n_half=40, n_null=20)
    cell = df[(df.checkpoint == "A") & (df.ref_checkpoint == "B") & (df.layer == df.ref_layer)].set_index(
        ["layer", "centring"])
    # independent content: debiased CKA ~0, pooled and centred, inside the null's spread
    for centring in ("pooled", "language"):
        r = cell.loc["l0", centring]
        assert abs(r.value) < 0.05 and r.value <= r.null_high and r.ci_low <= 0 <= r.ci_high
    # shared language offsets, independent content: pooled CKA is high, and the null (which keeps the
    # languages) is as high; centred per language, nothing is left
    pooled, centred = cell.loc["l1", "pooled"], cell.loc["l1", "language"]
    assert pooled.value > 0.8 and pooled.null_mean > 0.8
    assert abs(centred.value) < 0.05 and centred.value <= centred.null_high


def test_role_contrast_finds_the_checkpoint_that_moved_away_from_the_base(tmp_path):
    rng = np.random.default_rng(1)
    G, d = 50, 32
    n = G * len(LANGS)
    base = {f"l{i}": rng.normal(size=(n, d)) for i in range(3)}
    control = {k: v + 0.3 * rng.normal(size=(n, d)) for k, v in base.items()}
    moved = {k: (v + (2.0 if k == "l1" else 0.3) * rng.normal(size=(n, d))) for k, v in base.items()}
    rand = {k: rng.normal(size=(n, d)) for k in base}
    df = similarity_run(_store(tmp_path, {"toy:lm": base, "toy:lm-cont": control, "toy:mt": moved,
                                          "random-init:toy:lm": rand}, G),
                        base="lm", control="lm-cont", n_half=60, n_null=0, centrings=("pooled",))
    assert "random-init:toy:lm" in set(df.checkpoint) | set(df.ref_checkpoint)  # in the table, not a contrast
    cmp = df.attrs["comparisons"].set_index("layer")
    assert set(cmp.checkpoint) == {"toy:mt"} and set(cmp.ref_checkpoint) == {"toy:lm-cont"}
    assert cmp.loc["l1", "value"] < -0.3 and cmp.loc["l1", "p_adjusted"] < 0.01
    assert (cmp.drop("l1").p_adjusted > 0.05).all()
    assert (tmp_path / "similarity_comparisons.parquet").is_file()


def test_reference_contrast_reads_the_references_top_layer_against_every_layer(tmp_path):
    rng = np.random.default_rng(2)
    G, d = 50, 32
    n = G * len(LANGS)
    ref = {"encoder.0": rng.normal(size=(n, d)), "encoder.5": rng.normal(size=(n, d))}  # a deeper model
    top = ref["encoder.5"]
    control = {f"encoder.{i}": top + 0.5 * rng.normal(size=(n, d)) for i in range(3)}
    # the MT-like checkpoint: as close as the control to the reference's top at encoder.0, further at encoder.2
    mt = {f"encoder.{i}": top + (0.5 if i == 0 else 3.0) * rng.normal(size=(n, d)) for i in range(3)}
    path = _store(tmp_path, {"toy:mlm": ref, "toy:lm-cont": control, "toy:mt": mt}, G)
    cmp = reference_contrasts(path, "mlm", "lm-cont", n_half=60).set_index("layer")
    assert set(cmp.checkpoint) == {"toy:mt"} and set(cmp.ref_layer) == {"encoder.5"}
    assert set(cmp.contrast) == {"CKA(toy:mlm, X) - CKA(toy:mlm, toy:lm-cont)"}
    assert cmp.loc["encoder.2", "value"] < -0.3 and cmp.loc["encoder.2", "p_adjusted"] < 0.01
    assert cmp.loc["encoder.0", "p_adjusted"] > 0.05


def test_centre_by_language_removes_each_language_mean():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(40, 3)) + 5
    langs = np.array(["a", "b"] * 20)
    C = centre_by_language(X, langs)
    for lang in ("a", "b"):
        assert np.allclose(C[langs == lang].mean(axis=0), 0)
    np.testing.assert_allclose(np.diff(C[langs == "a"] - X[langs == "a"], axis=0), 0, atol=1e-12)


def test_unknown_centring_is_refused(tmp_path):
    from xlprobe.errors import DataError

    rng = np.random.default_rng(3)
    path = _store(tmp_path, {"A": {"l0": rng.normal(size=(16, 4))}, "B": {"l0": rng.normal(size=(16, 4))}}, 4)
    with pytest.raises(DataError, match="centrings"):
        similarity_run(path, centrings=("per-verse",))
