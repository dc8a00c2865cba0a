"""The one Pareto helper: which rows no other row beats on two objectives, both minimised.

Sweeps minimise (TPOT, -throughput), plan and compare (cost per Mtok, TPOT); both call :func:`pareto_mask`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray


def pareto_mask(first: ArrayLike, second: ArrayLike) -> NDArray[np.bool_]:
    """Rows not dominated in (``first``, ``second``), both lower-is-better; of exact duplicates the first is kept.

    Sorted by ``first`` (ties by ``second``), a row is on the front when its ``second`` is strictly below every
    earlier row's: O(n log n)."""
    a = np.asarray(first, dtype=np.float64)
    b = np.asarray(second, dtype=np.float64)
    order = np.lexsort((b, a))
    ordered = b[order]
    best_before = np.minimum.accumulate(np.concatenate([[np.inf], ordered[:-1]])) if ordered.size else ordered
    keep = np.zeros(a.shape[0], dtype=bool)
    keep[order] = ordered < best_before
    return keep
