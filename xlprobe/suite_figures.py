"""The figures of a suite run: read its results and store, draw with :mod:`xlprobe.figures`, save PNG and SVG.

``layer_curves``: every per-layer measure of the language task that has one row per (checkpoint,
layer), one panel each (CKA and weights rows have their own figures). ``umap``: the store's states of up
to three layers (first block, middle, last, shared by every checkpoint) for a seeded sample of at most
``UMAP_GROUPS`` parallel groups, annotated with ``separability.knn``. ``cka_heatmap``: the base against every other checkpoint (up to six).
``paired_differences``: ``comparisons.parquet`` of the run, the control contrast (else the base's) of
the language-task measures drawn in ``layer_curves`` and of the transfer gap (one task), and the CKA
contrast, significance marked.
``weight_bars``: the ``weights.rel_change`` rows pooled per layer and per module type.
``weight_spectra``: singular values of three matrices (the middle encoder block's ``fc1`` and ``q``, the
middle decoder block's cross-attention ``v`` or ``fc1``) of the base and of each checkpoint that has
weights rows, from the table the weights step wrote while it had the models loaded (no model loads here). ``attribution_bars``: the ``attribution.path`` rows (one
grouping: ``layer_module`` if there, else the first). A figure already in ``figures/`` is not redrawn (a
resumed run keeps it); the kinds asked for and not drawn (no rows for them yet, or not drawn by a suite
yet) are returned as pending.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xlprobe.errors import DataError
from xlprobe.suite import Suite

__all__ = ["draw_figures", "UMAP_GROUPS", "UMAP_EPOCHS", "DRAWN"]

log = logging.getLogger(__name__)

#: Parallel groups (verses) a UMAP figure shows at most: AlignedUMAP's time grows with points x checkpoints.
UMAP_GROUPS = 100
#: AlignedUMAP epochs in a suite's figure: half umap-learn's default at these sizes (one layer's fit of 7
#: checkpoints x 800 points: 16.5 s instead of 28 s on 2 cores); the layouts keep the same clusters.
UMAP_EPOCHS = 100
#: Figure kinds a suite run draws today (each when the run has its rows).
DRAWN = ("layer_curves", "umap", "cka_heatmap", "paired_differences", "weight_bars", "weight_spectra",
         "attribution_bars")
_OWN_FIGURES = ("cka", "weights.", "attribution.", "transfer.", "tokens.", "units.")
#: Per-layer measures drawn first when a run has them (the most informative about checkpoints first).
_PREFERRED = ("separability.knn", "retrieval.p_at_1", "alignment.neighbour_overlap", "mdl.compression",
              "separability.fisher", "probe.linear.selectivity", "probe.mlp.selectivity", "probe.linear")


def _save(fig: Any, folder: Path, name: str) -> list[Path]:
    """PNG (150 dpi) and SVG of a figure, each written to a temp name then renamed."""
    import matplotlib.pyplot as plt

    paths = []
    for ext, kw in (("png", {"dpi": 150}), ("svg", {})):
        path = folder / f"{name}.{ext}"
        tmp = folder / f".{name}.tmp.{ext}"
        fig.savefig(tmp, **kw)
        tmp.replace(path)
        paths.append(path)
    plt.close(fig)
    return paths


def _curve_measures(results: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The language-task main rows, and the measures with one row per (checkpoint, layer) there."""
    rows = results[results.control.isna()] if "control" in results else results
    if "task" in rows:
        rows = rows[rows.task.isna() | (rows.task == "language")]
    rows = rows[~rows.measure.str.startswith(_OWN_FIGURES)]
    keep = [m for m, g in rows.groupby("measure", sort=False) if not g.duplicated(["checkpoint", "layer"]).any()]
    return rows, sorted(keep, key=lambda m: _PREFERRED.index(m) if m in _PREFERRED else len(_PREFERRED))


def _paired(out: Path, results: pd.DataFrame) -> tuple[pd.DataFrame, list[str], list[str]] | None:
    """The language-task comparisons, the contrasts to draw and the measures (curves' order), or None."""
    file = out / "comparisons.parquet"
    if not file.is_file():
        return None
    comp = pd.read_parquet(file)
    if "task" in comp:  # the language task's measures, and the transfer gap (its own task) of every task
        comp = comp[comp.task.isna() | (comp.task == "language") | comp.measure.str.startswith("transfer.")]
    if comp.empty or "contrast" not in comp:
        return None
    have = list(dict.fromkeys(comp.contrast.dropna()))
    main = [c for c in ("vs control", "vs base") if c in have][:1]
    contrasts = main + [c for c in have if c.startswith("CKA(")][:1]
    if not contrasts:
        return None
    _, curves = _curve_measures(results)
    under = comp[comp.contrast.isin(main)]
    drawn = [m for m in curves if m in set(under.measure)][:6]
    drawn += [m for m in dict.fromkeys(under.measure) if m.startswith("transfer.")
              and not under[under.measure == m].duplicated(["contrast", "checkpoint", "layer"]).any()]
    measures = drawn + sorted(set(comp[comp.contrast.isin(contrasts[len(main):])].measure))
    return (comp, contrasts, measures) if measures else None


def _spectra(out: Path) -> tuple[pd.DataFrame, list[str]]:
    """The weights step's spectra table (``steps/weights/spectra.parquet``) and its matrices, in order."""
    path = out / "steps" / "weights" / "spectra.parquet"
    if not path.is_file():
        raise DataError(f"no spectra table at {path}: the weights step writes it when the suite lists "
                        "weight_spectra", hint="a run from before: remove steps/weights and rerun the suite")
    table = pd.read_parquet(path)
    return table, list(dict.fromkeys(table.param))


def _attribution_rows(results: pd.DataFrame) -> pd.DataFrame:
    """The attribution.path rows of one grouping (``layer_module`` if there, else the first)."""
    rows = results[results.measure == "attribution.path"]
    if "grouping" in rows and rows.grouping.nunique() > 1:
        have = list(dict.fromkeys(rows.grouping.dropna()))
        rows = rows[rows.grouping == ("layer_module" if "layer_module" in have else have[0])]
    return rows


def _umap_reps(out: Path, suite: Suite, seed: int) -> tuple[dict, list[str], list[str]]:
    """``{checkpoint: {layer: X}}`` of a seeded sample of groups, the languages, and up to three layers."""
    from xlprobe.figures.curves import layer_order
    from xlprobe.runs import checkpoint_names, open_store

    store = open_store(out / "store")
    names = checkpoint_names(store)
    reps: dict[str, dict[str, np.ndarray]] = {}
    data = None
    for key in store.keys(pooling=suite.pooling):
        data = data or store.records(key.data)
        alias = store.entry(key).get("info", {}).get("alias") or key.point
        reps.setdefault(names[key.model], {})[alias] = store.read(key)
    groups = np.asarray([str(r.group) for r in data])
    chosen = np.random.default_rng(seed).permutation(np.unique(groups))[:UMAP_GROUPS]
    rows = np.flatnonzero(np.isin(groups, chosen))
    shared = layer_order(sorted(set.intersection(*(set(v) for v in reps.values()))))
    blocks = [la for la in shared if la.rsplit(".", 1)[-1].isdigit()] or shared
    layers = list(dict.fromkeys([blocks[0], blocks[len(blocks) // 2], blocks[-1]]))
    sample = {c: {la: X[rows] for la, X in v.items() if la in layers} for c, v in reps.items()}
    return sample, [data.records[int(i)].lang for i in rows], layers


def draw_figures(suite: Suite, out: Path, results: pd.DataFrame) -> tuple[list[Path], list[str]]:
    """Draw the suite's figures into ``out/figures``; the files written and the kinds still pending."""
    from xlprobe.figures import (
        attribution_bars,
        cka_heatmap,
        layer_curves,
        paired_differences,
        umap_grid,
        weight_bars,
        weight_spectra,
    )

    folder = out / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    base, control = suite.role("base"), suite.role("control")
    written: list[Path] = []
    if "layer_curves" in suite.figures and not (folder / "layer_curves.png").is_file():
        rows, measures = _curve_measures(results)
        if measures:
            fig = layer_curves(rows, measures[:6], base=base.label if base else None,
                               controls=[control.label] if control else (), title=f"suite {suite.name}")
            written += _save(fig, folder, "layer_curves")
    if "umap" in suite.figures and not (folder / "umap.png").is_file():
        reps, langs, layers = _umap_reps(out, suite, suite.seeds[0])
        fig = umap_grid(reps, langs, layers=layers, scores=results, seed=suite.seeds[0], n_epochs=UMAP_EPOCHS,
                        n_neighbors=min(15, max(2, len(langs) // 4)),
                        title=f"suite {suite.name}: {len(langs)} sentences, AlignedUMAP per layer")
        written += _save(fig, folder, "umap")
    if "cka_heatmap" in suite.figures and not (folder / "cka_heatmap.png").is_file() and \
            results.measure.str.startswith("cka").any():
        first = (base or suite.checkpoints[0]).label
        others = [c.label for c in suite.checkpoints if c.label != first][:6]
        fig = cka_heatmap(results, [(first, o) for o in others], title=f"suite {suite.name}: CKA, {first} down")
        written += _save(fig, folder, "cka_heatmap")
    order = [c.label for c in suite.checkpoints]  # one colour per checkpoint in every figure
    controls = [control.label] if control else []
    weights = results[results.measure == "weights.rel_change"]

    def wanted(kind: str) -> bool:
        return kind in suite.figures and not (folder / f"{kind}.png").is_file()

    def draw(kind: str, make: Any) -> None:
        """Draw and save one figure; a table the figure cannot read leaves the kind pending (logged)."""
        try:
            fig = make()
        except DataError as exc:
            log.warning("figure %s not drawn: %s", kind, exc)
            return
        written.extend(_save(fig, folder, kind))

    if wanted("paired_differences") and (paired := _paired(out, results)):
        comp, contrasts, measures = paired
        draw("paired_differences", lambda: paired_differences(
            comp, measures, contrast=contrasts, controls=controls, order=order,
            title=f"suite {suite.name}: paired differences, filled where the corrected p < 0.05"))
    if wanted("weight_bars") and not weights.empty:
        draw("weight_bars", lambda: weight_bars(weights, controls=controls, order=order,
                                                title=f"suite {suite.name}: weight divergence"))
    if wanted("weight_spectra") and not weights.empty and {"param", "side", "module"} <= set(weights.columns):
        def spectra_figure() -> Any:
            table, params = _spectra(out)
            if table.empty:
                raise DataError("no matrices to draw the spectra of")
            return weight_spectra(table, params, controls=controls, order=order,
                                  title=f"suite {suite.name}: singular values, base in black")
        draw("weight_spectra", spectra_figure)
    attribution = _attribution_rows(results)
    if wanted("attribution_bars") and not attribution.empty:
        draw("attribution_bars", lambda: attribution_bars(
            attribution, order=order, title=f"suite {suite.name}: attribution of the metric's change to parameter groups"))
    return written, [f for f in suite.figures if not (folder / f"{f}.png").is_file()]
