"""Design-space sweeps: grids of scenarios evaluated with the engine's own formulas, vectorised over
configurations, written in resumable chunks (see docs/sweep.md)."""

from __future__ import annotations

from capsim.sweep.decode import QUANTITIES, decode_totals
from capsim.sweep.evaluate import COLUMNS, evaluate_segment, resolve_group, ttft_of
from capsim.sweep.grid import Grid, load_grid_toml, parse_int_axis

__all__ = [
    "COLUMNS",
    "QUANTITIES",
    "Grid",
    "decode_totals",
    "evaluate_segment",
    "load_grid_toml",
    "parse_int_axis",
    "resolve_group",
    "ttft_of",
]
