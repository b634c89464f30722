"""xlprobe.figures: read tidy results tables and arrays, return matplotlib Figures.

- ``layer_curves``: a measure against depth, a line per checkpoint with its interval band, controls dashed.
- ``cka_heatmap``: layer x layer CKA between checkpoints, one panel per pair, one 0-1 scale.
- ``umap_grid``: UMAP small multiples, layer x checkpoint, coloured by language, aligned across checkpoints.
"""
from __future__ import annotations

from xlprobe.figures.curves import layer_curves
from xlprobe.figures.heatmaps import cka_heatmap
from xlprobe.figures.umap import umap_grid

__all__ = ["layer_curves", "cka_heatmap", "umap_grid"]
