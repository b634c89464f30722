"""xlprobe.figures: read tidy results tables and arrays, return matplotlib Figures.

Empty for now (the figures follow): nothing is public yet, and README.md's "Public API" table says so.
"""
from __future__ import annotations

__all__: list[str] = []
