"""Per-layer curves: one panel per measure, a line per checkpoint in depth order, bands, controls styled."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from xlprobe.errors import DataError  # noqa: E402
from xlprobe.figures import layer_curves  # noqa: E402
from xlprobe.figures.curves import layer_order  # noqa: E402
from xlprobe.results import make_row, results_frame  # noqa: E402

LAYERS = ["encoder.final_norm", "encoder.1", "encoder.embeddings", "encoder.0", "encoder.10", "encoder.2"]


def _table() -> pd.DataFrame:
    rows = []
    for c, shift in (("toy:lm", 0.0), ("toy:mt", -0.2), ("random-init:toy:lm", -0.5)):
        for i, layer in enumerate(LAYERS[:4]):
            v = 0.9 + shift - 0.01 * i
            rows.append(make_row(checkpoint=c, layer=layer, measure="separability.knn", value=v, ci_low=v - 0.02,
                                 ci_high=v + 0.02, n=100))
            rows.append(make_row(checkpoint=c, layer=layer, measure="separability.knn", value=0.1, n=100,
                                 control="shuffled"))
    return results_frame(rows)


def test_layers_sort_by_depth_whatever_their_names_order():
    assert layer_order(LAYERS + ["decoder.0", "decoder.embeddings"]) == [
        "encoder.embeddings", "encoder.0", "encoder.1", "encoder.2", "encoder.10", "encoder.final_norm",
        "decoder.embeddings", "decoder.0"]


def test_a_line_per_checkpoint_in_depth_order_with_bands_and_styles():
    fig = layer_curves(_table(), ["separability.knn"], base="toy:lm", controls=["toy:mt"])
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"toy:lm", "toy:mt", "random-init:toy:lm"}
    lm = lines["toy:lm"]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == ["enc.embeddings", "enc.0", "enc.1", "enc.final_norm"]
    # values follow the depth order, not the table's order (final_norm was listed first)
    expected = {"encoder.final_norm": 0.9, "encoder.1": 0.89, "encoder.embeddings": 0.88, "encoder.0": 0.87}
    assert np.allclose(lm.get_ydata(), [expected[la] for la in layer_order(list(expected))])
    assert lm.get_linewidth() > lines["toy:mt"].get_linewidth()
    assert lines["toy:mt"].get_linestyle() == "--" and lines["random-init:toy:lm"].get_linestyle() == ":"
    assert len(ax.collections) == 3  # one interval band per checkpoint; control rows are not drawn
    matplotlib.pyplot.close(fig)


def test_bad_input_is_named():
    with pytest.raises(DataError, match="no rows of measure 'cka'"):
        layer_curves(_table(), "cka")
    doubled = pd.concat([_table(), _table().assign(task="book")], ignore_index=True)
    with pytest.raises(DataError, match="several rows for toy:lm"):
        layer_curves(doubled, "separability.knn")
