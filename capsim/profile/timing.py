"""Timing discipline shared by every measurement: warm-up, repetitions, synchronisation, median.

The median of several repetitions is robust to the odd slow run (a page fault, a scheduler hiccup) that
a mean would absorb; the spread (min, max) is kept so a noisy measurement is visible in the results.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from capsim.errors import ScenarioError


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of repeated runs of one operation. ``median_s`` is the figure reported."""

    samples_s: tuple[float, ...]

    @property
    def median_s(self) -> float:
        return float(statistics.median(self.samples_s))

    @property
    def min_s(self) -> float:
        return min(self.samples_s)

    @property
    def max_s(self) -> float:
        return max(self.samples_s)

    @property
    def spread(self) -> float:
        """(max − min) / median: how noisy the repetitions were."""
        return (self.max_s - self.min_s) / self.median_s if self.median_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "median_s": self.median_s,
            "min_s": self.min_s,
            "max_s": self.max_s,
            "repetitions": len(self.samples_s),
            "samples_s": list(self.samples_s),
        }


def time_op(
    fn: Callable[[], object],
    *,
    warmup: int = 2,
    repetitions: int = 5,
    sync: Callable[[], object] = lambda: None,
    clock: Callable[[], float] = time.perf_counter,
) -> Timing:
    """Run ``fn`` ``warmup`` times untimed, then time ``repetitions`` runs, each bracketed by ``sync()``.

    ``sync`` must wait for queued device work (``torch.cuda.synchronize`` on a GPU); without it a GPU
    timing would measure only the kernel launches.
    """
    if repetitions < 1 or warmup < 0:
        raise ScenarioError(f"timing needs repetitions >= 1 and warm-up >= 0, got {repetitions} and {warmup}")
    for _ in range(warmup):
        fn()
    sync()
    samples = []
    for _ in range(repetitions):
        sync()
        start = clock()
        fn()
        sync()
        samples.append(clock() - start)
    return Timing(tuple(samples))


def repetitions_for(budget_s: float, single_s: float, *, minimum: int = 3, maximum: int = 20) -> int:
    """How many repetitions of an operation taking ``single_s`` fit in ``budget_s`` (clamped)."""
    if single_s <= 0:
        return maximum
    return max(minimum, min(maximum, int(budget_s / single_s)))
