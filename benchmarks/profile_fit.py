"""The two-value grid fit the engine-profile scripts share (fit_vllm_release.py, fit_trtllm_release.py,
fit_ktransformers_cpu.py): ln(predicted/measured) of published cases over a grid of two fields of one engine
profile, and the grid point of least squared log error.

The profile is swapped into capsim's loaded engine table (a cached dict) for each grid point and restored
afterwards, so every prediction goes through ``predict`` as the published cases do."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import numpy as np

from capsim.engine import engines
from capsim.validation.published import PublishedCase, predict_case


def log_ratios(
    profile: str,
    fields: tuple[str, str],
    grids: tuple[np.ndarray, np.ndarray],
    cases: list[PublishedCase],
) -> np.ndarray:
    """ln(predicted/measured), shape (first grid, second grid, cases), with the profile's two ``fields`` set to
    each pair of grid values."""
    table = engines.load_engines()
    shipped = table[profile]
    out = np.empty((len(grids[0]), len(grids[1]), len(cases)))
    try:
        for (i, a), (j, b) in itertools.product(enumerate(grids[0]), enumerate(grids[1])):
            table[profile] = replace(shipped, **{fields[0]: float(a), fields[1]: float(b)})
            for k, case in enumerate(cases):
                r = predict_case(case)
                assert r.ratio is not None, (case.id, r.reason)
                out[i, j, k] = math.log(r.ratio)
    finally:
        table[profile] = shipped
    return out


def best(log_ratio: np.ndarray) -> tuple[int, int]:
    """Grid indices of the least sum of squared log errors over the cases (the last axis)."""
    loss = (log_ratio**2).sum(axis=-1)
    i, j = np.unravel_index(int(np.argmin(loss)), loss.shape)
    return int(i), int(j)
