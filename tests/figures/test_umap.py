"""UMAP small multiples: aligned layouts per layer, deterministic from the seed, planted clusters kept apart."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from xlprobe.errors import DataError  # noqa: E402
from xlprobe.figures import umap_grid  # noqa: E402
from xlprobe.figures.umap import aligned_layouts  # noqa: E402
from xlprobe.results import make_row, results_frame  # noqa: E402


def _planted(n: int = 40, seed: int = 0) -> tuple[dict, list[str]]:
    """Two checkpoints: one separates two languages by a wide margin, one mixes them (noise only)."""
    rng = np.random.default_rng(seed)
    langs = ["en"] * n + ["fr"] * n
    apart = rng.normal(size=(2 * n, 16))
    apart[n:] += 3.0  # every feature: after standardisation the two languages sit about 6 apart
    mixed = rng.normal(size=(2 * n, 24))
    return {"a": {"encoder.0": apart}, "b": {"encoder.0": mixed}}, langs


def _same_language_neighbour(xy: np.ndarray, langs: list[str]) -> float:
    """Share of points whose nearest neighbour in the layout has their language."""
    d = ((xy[:, None] - xy[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    lab = np.asarray(langs)
    return float((lab[d.argmin(1)] == lab).mean())


@pytest.mark.slow
def test_layouts_are_deterministic_and_keep_a_planted_separation():
    reps, langs = _planted()
    first = aligned_layouts([reps["a"]["encoder.0"], reps["b"]["encoder.0"]], seed=3, n_neighbors=10)
    again = aligned_layouts([reps["a"]["encoder.0"], reps["b"]["encoder.0"]], seed=3, n_neighbors=10)
    assert all(np.array_equal(x, y) for x, y in zip(first, again))
    assert _same_language_neighbour(first[0], langs) == 1.0  # the separated checkpoint stays separated
    assert _same_language_neighbour(first[1], langs) < 0.75  # the mixed one stays mixed (chance 0.5)
    scores = results_frame([make_row(checkpoint="a", layer="encoder.0", measure="separability.knn", value=1.0,
                                     ci_low=0.99, ci_high=1.0, n=80)])
    fig = umap_grid(reps, langs, scores=scores, seed=3, n_neighbors=10)
    assert len(fig.axes) == 2 and [ax.get_title() for ax in fig.axes] == ["a", "b"]
    assert "knn 1.00 [0.99, 1.00]" in [t.get_text() for t in fig.axes[0].texts]
    matplotlib.pyplot.close(fig)


def test_bad_input_is_named():
    reps, langs = _planted()
    with pytest.raises(DataError, match="layer\\(s\\) missing"):
        umap_grid(reps, langs, layers=["encoder.1"])
    with pytest.raises(DataError, match="different numbers of rows"):
        aligned_layouts([np.zeros((30, 4)), np.zeros((31, 4))])
    with pytest.raises(DataError, match="n_neighbors"):
        aligned_layouts([np.zeros((10, 4)), np.zeros((10, 4))], n_neighbors=15)
