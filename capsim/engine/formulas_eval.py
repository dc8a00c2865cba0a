"""Evaluate the formula table of :mod:`capsim.engine.formulas` with numpy, without importing sympy.

:mod:`capsim.engine.formulas` holds each operation's FLOPs and bytes as sympy expressions (what ``capsim explain``
prints). Importing sympy costs most of a second, more than a whole ``capsim predict``, so the numeric path
runs the same expressions from :mod:`capsim.engine._formulas_compiled`, Python source generated from that table
by :func:`capsim.engine.formulas.compiled_source` (``python -m capsim.engine.formulas > capsim/engine/_formulas_compiled.py``).
A test regenerates it and fails when it differs, so the two cannot drift.
"""

from __future__ import annotations

from typing import overload

import numpy as np
from numpy.typing import NDArray


def evaluate(name: str, values: dict[str, object]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flops, weight_bytes, other_bytes) of operation ``name`` with symbol values taken from ``values``."""
    from capsim.engine import (
        _formulas_compiled as _compiled,  # generated from the table (see the module docstring)
    )

    args = [values[a] for a in _compiled.ARGS[name]]
    flops, weight_bytes, other_bytes = _compiled.FUNCTIONS[name]
    as_array = np.asarray
    return (
        as_array(flops(*args), dtype=np.float64),
        as_array(weight_bytes(*args), dtype=np.float64),
        as_array(other_bytes(*args), dtype=np.float64),
    )


@overload
def ring_allreduce_time(
    message_bytes: float, ranks: int, link_bytes_s: float, hop_latency_s: float, base_latency_s: float = 0.0
) -> float: ...
@overload
def ring_allreduce_time(
    message_bytes: NDArray[np.float64],
    ranks: int,
    link_bytes_s: float,
    hop_latency_s: float,
    base_latency_s: float = 0.0,
) -> NDArray[np.float64]: ...
def ring_allreduce_time(
    message_bytes: float | NDArray[np.float64],
    ranks: int,
    link_bytes_s: float,
    hop_latency_s: float,
    base_latency_s: float = 0.0,
) -> float | NDArray[np.float64]:
    """Ring all-reduce of ``message_bytes`` over ``ranks``: a base launch latency, 2(N−1) hops of latency,
    and 2(N−1)/N of the message over each link direction (reduce-scatter then all-gather; Patarasuk & Yuan
    2009; NCCL's tuning model has the same base + per-hop latency terms)."""
    if ranks <= 1:
        return 0.0 * message_bytes
    steps = 2 * (ranks - 1)
    return base_latency_s + steps * hop_latency_s + steps / ranks * message_bytes / link_bytes_s
