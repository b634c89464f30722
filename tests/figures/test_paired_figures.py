"""Paired differences: a panel per (contrast, measure), significant points filled and only those."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from xlprobe.errors import DataError  # noqa: E402
from xlprobe.figures import paired_differences  # noqa: E402
from xlprobe.figures.paired import checkpoint_colours  # noqa: E402

LAYERS = ["encoder.final_norm", "encoder.0", "encoder.embeddings", "encoder.1"]


def _table():
    rows = []
    for contrast, ref in (("vs control", "cont"), ("vs base", "lm")):
        for measure in ("separability.knn", "retrieval.p_at_1"):
            for k, ck in enumerate(("mt", "mlm")):
                for i, layer in enumerate(LAYERS):
                    value = 0.1 * (i + 1) * (k + 1)
                    rows.append(dict(checkpoint=ck, layer=layer, measure=measure, value=value,
                                     ci_low=value - 0.05, ci_high=value + 0.05, ref_checkpoint=ref,
                                     contrast=contrast, p_value=0.01 * i, p_adjusted=[0.001, 0.2, 0.04, 0.5][i],
                                     correction=f"holm over {len(LAYERS) - k} layers", test="sign-flip"))
    return pd.DataFrame(rows)


def _filled(ax):
    """(x, y) of the filled and of the open points of a panel."""
    filled, hollow = [], []
    for coll in ax.collections:
        offsets = coll.get_offsets()
        if len(offsets) == 0 or not hasattr(coll, "get_sizes") or not len(coll.get_sizes()):
            continue
        face = coll.get_facecolors()
        white = len(face) and np.allclose(face[0][:3], 1.0)
        (hollow if white else filled).extend(map(tuple, np.asarray(offsets)))
    return filled, hollow


def test_a_panel_per_measure_the_reference_in_the_title_and_layers_in_depth_order():
    fig = paired_differences(_table())
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2
    assert [ax.get_title().split("\n")[0] for ax in axes] == ["separability.knn", "retrieval.p_at_1"]
    assert all("minus cont" in ax.get_title() for ax in axes)
    assert [t.get_text() for t in axes[0].get_xticklabels()] == ["enc.embeddings", "enc.0", "enc.1",
                                                                  "enc.final_norm"]
    assert any(list(line.get_ydata()) == [0.0, 0.0] for line in axes[0].lines)  # the zero line
    matplotlib.pyplot.close(fig)
    fig = paired_differences(_table(), "retrieval.p_at_1", contrast=["vs base", "vs control"])
    assert [ax.get_title().split("\n")[1] for ax in fig.axes if ax.get_visible()] == \
        ["vs base: minus lm", "vs control: minus cont"]
    matplotlib.pyplot.close(fig)


def test_points_are_filled_where_p_adjusted_is_below_alpha_and_only_there():
    table = _table()
    fig = paired_differences(table, "separability.knn", alpha=0.05)
    filled, hollow = _filled(fig.axes[0])
    rows = table[(table.contrast == "vs control") & (table.measure == "separability.knn")]
    assert sorted(round(y, 6) for _, y in filled) == sorted(rows[rows.p_adjusted < 0.05].value.round(6))
    assert sorted(round(y, 6) for _, y in hollow) == sorted(rows[rows.p_adjusted >= 0.05].value.round(6))
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "p_adjusted < 0.05" in labels and {"mt", "mlm"} <= set(labels)
    assert "holm over each checkpoint's layers" in fig.legends[0].get_title().get_text().replace("\n", " ")
    matplotlib.pyplot.close(fig)
    fig = paired_differences(table, "separability.knn", alpha=0.3)  # 0.2 now counts too
    assert len(_filled(fig.axes[0])[0]) == 6
    matplotlib.pyplot.close(fig)


def test_controls_dashed_colours_follow_the_given_order():
    fig = paired_differences(_table(), "separability.knn", controls=["mlm"], order=["lm", "mlm", "mt"])
    styles = {line.get_label(): line.get_linestyle() for line in fig.axes[0].lines if line.get_label() in ("mt", "mlm")}
    assert styles == {"mt": "-", "mlm": "--"}
    assert checkpoint_colours(["mt", "random-init:x"], ["lm", "mlm", "mt"]) == {"mt": "#009E73",
                                                                                  "random-init:x": "#555555"}
    matplotlib.pyplot.close(fig)


def test_a_table_lacking_what_it_needs_gets_a_clear_error():
    with pytest.raises(DataError, match=r"lacks column\(s\) \['p_adjusted'\]") as err:
        paired_differences(_table().drop(columns="p_adjusted"))
    assert "comparisons.parquet" in str(err.value.hint)
    with pytest.raises(DataError, match="no rows of contrast"):
        paired_differences(_table(), contrast="vs nothing")
    with pytest.raises(DataError, match="measure"):
        paired_differences(_table(), "mdl.compression")
    doubled = pd.concat([_table(), _table().assign(task="genre")])
    with pytest.raises(DataError, match="several rows for mt"):
        paired_differences(doubled)


def test_cka_rows_of_two_centrings_draw_the_chosen_one():
    t = _table()
    t = pd.concat([t.assign(centring="pooled"), t.assign(centring="language", value=t.value + 1)])
    fig = paired_differences(t, "separability.knn", centring="language")
    assert min(y for _, y in _filled(fig.axes[0])[0]) > 1
    matplotlib.pyplot.close(fig)
