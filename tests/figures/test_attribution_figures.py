"""Attribution bars: the top groups by |value|, the rest summed as "other", change and error in the title."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from xlprobe.errors import DataError  # noqa: E402
from xlprobe.figures import attribution_bars  # noqa: E402
from xlprobe.figures.attribution import top_groups  # noqa: E402

VALUES = {"embeddings": -0.05, "encoder.0": 0.03, "encoder.1": -0.01, "encoder.2": 0.004, "encoder.final_norm": 0.002,
          "decoder.0": 0.0}


def _rows(pairs=(("mt", "lm"), ("cont", "lm"))):
    rows = []
    for k, (c, r) in enumerate(pairs):
        total = sum(VALUES.values()) * (k + 1)
        for g, v in VALUES.items():
            rows.append(dict(checkpoint=c, ref_checkpoint=r, measure="attribution.path", layer=g, group=g,
                             grouping="layer", value=v * (k + 1), share=v / total * (k + 1), delta=1e-4,
                             n=16, metric_a=0.3, metric_b=0.3 + total + 1e-4))
    return pd.DataFrame(rows)


def test_top_groups_keeps_the_largest_and_sums_the_rest_into_other():
    t = top_groups(_rows()[lambda d: d.checkpoint == "mt"], top=2)
    assert t.group.tolist() == ["embeddings", "encoder.0", "other (4 groups)"]
    assert t.value.iloc[-1] == pytest.approx(-0.01 + 0.004 + 0.002 + 0.0)
    assert top_groups(_rows()[lambda d: d.checkpoint == "mt"], top=10).group.tolist()[-1] == "decoder.0"


def test_a_panel_per_pair_bars_signed_other_grey_and_the_totals_in_the_title():
    fig = attribution_bars(_rows(), top=3)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2
    mt = axes[0]
    assert len(mt.patches) == 4  # 3 groups and "other"; decoder.0 is exactly 0 and left out
    ticks = sorted(zip(mt.get_yticks(), (t.get_text() for t in mt.get_yticklabels())), reverse=True)
    assert [label for _, label in ticks] == ["embeddings", "enc.0", "enc.1", "other (2 groups)"]  # top down
    widths = [p.get_width() for p in mt.patches]
    assert widths == pytest.approx([-0.05, 0.03, -0.01, 0.006])
    assert sum(widths) == pytest.approx(sum(VALUES.values()))
    colours = [matplotlib.colors.to_hex(p.get_facecolor()) for p in mt.patches]
    assert colours == ["#d55e00", "#0072b2", "#d55e00", "#999999"]
    title = mt.get_title()
    assert "mt vs lm" in title and "change -0.0239" in title and "completeness error 1.0e-04" in title
    assert "1 group(s) at exactly 0" in mt.get_xlabel()
    assert "change -0.0479" in axes[1].get_title()
    matplotlib.pyplot.close(fig)
    fig = attribution_bars(_rows(), order=["lm", "cont", "mt"])
    assert [ax.get_title().split("\n")[0] for ax in fig.axes if ax.get_visible()] == ["cont vs lm", "mt vs lm"]
    assert len(fig.legends[0].get_texts()) == 2  # no "other" bar drawn: no "other" in the legend
    matplotlib.pyplot.close(fig)


def test_rows_lacking_columns_or_mixing_groupings_get_a_clear_error():
    with pytest.raises(DataError, match=r"lacks column\(s\) \['delta'\]"):
        attribution_bars(_rows().drop(columns="delta"))
    with pytest.raises(DataError, match="no rows of measure 'attribution.path'"):
        attribution_bars(_rows().assign(measure="transfer.gap"))
    mixed = pd.concat([_rows(), _rows().assign(grouping="module")])
    with pytest.raises(DataError, match="several grouping") as err:
        attribution_bars(mixed)
    assert "rows.grouping ==" in err.value.hint
    with pytest.raises(DataError, match="top must be at least 1"):
        attribution_bars(_rows(), top=0)
