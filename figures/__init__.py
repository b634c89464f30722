"""xlprobe.figures: read tidy results tables and arrays, return matplotlib Figures.

- ``layer_curves``: a measure against depth, a line per checkpoint with its interval band, controls dashed.
"""
from __future__ import annotations

from xlprobe.figures.curves import layer_curves

__all__ = ["layer_curves"]
