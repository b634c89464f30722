"""xlprobe.figures: read tidy results tables and arrays, return matplotlib Figures.

- ``layer_curves``: a measure against depth, a line per checkpoint with its interval band, controls dashed.
- ``cka_heatmap``: layer x layer CKA between checkpoints, one panel per pair, one 0-1 scale.
- ``paired_differences``: checkpoint minus reference per layer with intervals, corrected significance marked.
- ``weight_bars``: per-layer and per-module weight divergence from the base, a bar per checkpoint.
- ``weight_spectra``: singular value spectra of chosen matrices and of their updates, a line per checkpoint.
- ``attribution_bars``: parameter groups' shares of a metric's change, with the completeness error.
- ``umap_grid``: UMAP small multiples, layer x checkpoint, coloured by language, aligned across checkpoints.
"""
from __future__ import annotations

from xlprobe.figures.attribution import attribution_bars
from xlprobe.figures.curves import layer_curves
from xlprobe.figures.heatmaps import cka_heatmap
from xlprobe.figures.paired import paired_differences
from xlprobe.figures.umap import umap_grid
from xlprobe.figures.weights import weight_bars, weight_spectra

__all__ = ["layer_curves", "cka_heatmap", "umap_grid", "paired_differences", "weight_bars", "weight_spectra",
           "attribution_bars"]
