"""CKA heatmaps: the matrix of a pair in depth order whichever way the table stores it."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from xlprobe.errors import DataError  # noqa: E402
from xlprobe.figures import cka_heatmap  # noqa: E402
from xlprobe.figures.heatmaps import pair_matrix  # noqa: E402
from xlprobe.results import make_row, results_frame  # noqa: E402

LAYERS = ["encoder.final_norm", "encoder.0", "encoder.embeddings"]


def _table():
    rows = []
    for i, la in enumerate(LAYERS):
        for j, lb in enumerate(LAYERS):
            for centring, shift in (("pooled", 0.0), ("language", 0.5)):
                rows.append(make_row(checkpoint="b", layer=lb, ref_checkpoint="a", ref_layer=la,
                                     measure="cka.linear.debiased", value=0.1 * i + 0.01 * j + shift, n=10,
                                     centring=centring))
    return results_frame(rows)


def test_the_matrix_is_in_depth_order_and_either_direction_gives_its_transpose():
    m = pair_matrix(_table(), "a", "b")
    assert m.index.tolist() == ["encoder.embeddings", "encoder.0", "encoder.final_norm"] == m.columns.tolist()
    assert m.loc["encoder.final_norm", "encoder.0"] == pytest.approx(0.01)  # a's final_norm (i=0), b's 0 (j=1)
    assert np.allclose(pair_matrix(_table(), "b", "a").to_numpy(), m.to_numpy().T)
    assert pair_matrix(_table(), "a", "b", centring="language").iloc[0, 0] == pytest.approx(m.iloc[0, 0] + 0.5)


def test_a_panel_per_pair_with_values_in_the_cells_and_bad_pairs_named():
    fig = cka_heatmap(_table(), [("a", "b"), ("b", "a")])
    assert len([ax for ax in fig.axes if ax.get_ylabel() in ("a", "b")]) == 2
    assert len(fig.axes[0].texts) == 9
    matplotlib.pyplot.close(fig)
    with pytest.raises(DataError, match="no similarity rows between 'a' and 'c'"):
        cka_heatmap(_table(), [("a", "c")])
