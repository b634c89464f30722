"""The figures of a suite run: read its results and store, draw with :mod:`xlprobe.figures`, save PNG and SVG.

``layer_curves``: every per-layer measure of the language task that has one row per (checkpoint,
layer), one panel each (CKA and weights rows have their own figures). ``umap``: the store's states of up
to three layers (first block, middle, last, shared by every checkpoint) for a seeded sample of at most
``UMAP_GROUPS`` parallel groups, annotated with ``separability.knn``. ``cka_heatmap``: the base against every other checkpoint (up to six). A figure already in
``figures/`` is not redrawn (a resumed run keeps it); the kinds not drawn yet are returned as pending.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xlprobe.suite import Suite

__all__ = ["draw_figures", "UMAP_GROUPS", "DRAWN"]

#: Parallel groups (verses) a UMAP figure shows at most: AlignedUMAP's time grows with points x checkpoints.
UMAP_GROUPS = 100
#: Figure kinds a suite run draws today.
DRAWN = ("layer_curves", "umap", "cka_heatmap")
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
    from xlprobe.figures import cka_heatmap, layer_curves, umap_grid

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
        fig = umap_grid(reps, langs, layers=layers, scores=results, seed=suite.seeds[0],
                        n_neighbors=min(15, max(2, len(langs) // 4)),
                        title=f"suite {suite.name}: {len(langs)} sentences, AlignedUMAP per layer")
        written += _save(fig, folder, "umap")
    if "cka_heatmap" in suite.figures and not (folder / "cka_heatmap.png").is_file() and \
            results.measure.str.startswith("cka").any():
        first = (base or suite.checkpoints[0]).label
        others = [c.label for c in suite.checkpoints if c.label != first][:6]
        fig = cka_heatmap(results, [(first, o) for o in others], title=f"suite {suite.name}: CKA, {first} down")
        written += _save(fig, folder, "cka_heatmap")
    return written, [f for f in suite.figures if f not in DRAWN]
