"""Weight bars pool per layer as aggregate_weights does; spectra draw a line per checkpoint on a log scale."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from xlprobe.errors import DataError  # noqa: E402
from xlprobe.figures import weight_bars, weight_spectra  # noqa: E402
from xlprobe.figures.weights import pool_weights  # noqa: E402

TENSORS = [("encoder.1", "q", 3.0, 1.0), ("encoder.1", "fc1", 4.0, 2.0), ("encoder.0", "q", 2.0, 0.5),
           ("encoder.embeddings", "positions", 1.0, 0.1)]


def _rows(checkpoints=("mt", "cont")):
    rows = []
    for k, c in enumerate(checkpoints):
        for layer, module, na, nd in TENSORS:
            rows.append(dict(checkpoint=c, ref_checkpoint="lm", layer=layer, module=module,
                             param=f"{layer}.{module}.weight", measure="weights.rel_change", value=nd * (k + 1) / na,
                             norm_a=na, norm_delta=nd * (k + 1), n=4))
            rows.append(dict(checkpoint=c, ref_checkpoint="lm", layer=layer, module=module,
                             param=f"{layer}.{module}.weight", measure="weights.cosine", value=0.5 + 0.1 * k, n=4))
    return pd.DataFrame(rows)


def test_pooling_is_the_norm_weighted_relative_change_as_aggregate_weights():
    from xlprobe.probes.weights import aggregate_weights

    pooled = pool_weights(_rows(), "layer")
    enc1 = pooled[(pooled.checkpoint == "mt") & (pooled.layer == "encoder.1")].value.item()
    assert enc1 == pytest.approx(np.sqrt(1 + 4) / np.sqrt(9 + 16))  # not the mean of 1/3 and 1/2
    theirs = aggregate_weights(_rows(), "layer").set_index(["checkpoint", "layer"]).value
    assert np.allclose(pooled.set_index(["checkpoint", "layer"]).value.loc[theirs.index], theirs)
    cosine = pool_weights(_rows(), "module", "weights.cosine")
    assert set(cosine[cosine.checkpoint == "cont"].value.round(6)) == {0.6}


def test_a_bar_per_checkpoint_and_group_a_panel_per_grouping_the_control_hatched():
    fig = weight_bars(_rows(), controls=["cont"], order=["lm", "cont", "mt"])
    layer_ax, module_ax = fig.axes
    assert len(layer_ax.patches) == 2 * 3 and len(module_ax.patches) == 2 * 3  # 3 layers / 3 module types
    assert [t.get_text() for t in layer_ax.get_xticklabels()] == ["enc.embeddings", "enc.0", "enc.1"]
    assert [t.get_text() for t in module_ax.get_xticklabels()] == ["positions", "q", "fc1"]
    hatched = {p.get_hatch() for p in layer_ax.patches[3:]}  # the control comes last
    assert hatched == {"////"} and {p.get_hatch() for p in layer_ax.patches[:3]} == {None}
    heights = sorted(round(p.get_height(), 6) for p in layer_ax.patches[:3])
    assert heights == sorted(round(v, 6) for v in (0.1, 0.25, np.sqrt(5 / 25)))
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["mt", "cont (control)"]
    matplotlib.pyplot.close(fig)


def test_an_aggregated_table_is_drawn_as_it_is_and_missing_columns_are_named():
    pooled = pool_weights(_rows(), "layer")
    fig = weight_bars(pooled, by="layer")
    assert len(fig.axes) == 1 and len(fig.axes[0].patches) == 6
    matplotlib.pyplot.close(fig)
    with pytest.raises(DataError, match=r"lacks column\(s\) \['module'\]"):
        weight_bars(pooled)
    with pytest.raises(DataError, match="no rows of measure 'weights.stable_rank.a'"):
        weight_bars(_rows(), "weights.stable_rank.a")
    two_refs = pd.concat([_rows(), _rows().assign(ref_checkpoint="other")])
    with pytest.raises(DataError, match="several references"):
        weight_bars(two_refs)


def _spectrum(scale):
    rows = []
    for p in ("model.encoder.layers.0.fc1.weight", "model.decoder.layers.0.fc1.weight"):
        for which, s in (("a", 1.0), ("b", scale), ("delta", scale / 10)):
            rows += [dict(param=p, which=which, index=i, sigma=s * 2.0 ** -i) for i in range(8)]
    return pd.DataFrame(rows)


def test_spectra_a_line_per_checkpoint_the_reference_once_log_scale():
    fig = weight_spectra({"mt": _spectrum(2.0), "cont": _spectrum(1.5)}, controls=["cont"], reference="lm")
    grid = np.asarray(fig.axes).reshape(2, 2)
    assert all(ax.get_yscale() == "log" for ax in fig.axes)
    top = [line.get_label() for line in grid[0, 0].lines]
    assert top == ["lm (reference)", "mt", "cont"] and [ln.get_label() for ln in grid[1, 0].lines] == ["mt", "cont"]
    assert grid[0, 0].lines[2].get_linestyle() == "--"
    assert grid[0, 0].lines[1].get_ydata()[0] == pytest.approx(2.0)
    assert grid[1, 1].get_title() == "update of dec.layers.0.fc1"
    assert grid[0, 0].get_ylim()[0] == pytest.approx(2.0 ** -7 * 0.8)  # the reference's smallest, within 4 decades
    matplotlib.pyplot.close(fig)
    one = weight_spectra(pd.concat([_spectrum(2.0).assign(checkpoint="mt")]), ["model.encoder.layers.0.fc1.weight"],
                         which=("b",))
    assert len(one.axes) == 1
    matplotlib.pyplot.close(one)
    with pytest.raises(DataError, match="no spectra of"):
        weight_spectra({"mt": _spectrum(2.0)}, ["nope"])
    with pytest.raises(DataError, match=r"lacks column\(s\) \['checkpoint'\]"):
        weight_spectra(_spectrum(2.0))
