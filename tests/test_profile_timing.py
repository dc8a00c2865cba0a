"""Timing discipline of the profiling harness (no PyTorch needed): warm-up, synchronisation, median."""

from __future__ import annotations

import statistics

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from capsim.errors import ScenarioError
from capsim.profile.timing import Timing, repetitions_for, time_op


class FakeClock:
    """A clock that advances by scripted durations, one per timed call of the operation."""

    def __init__(self, durations: list[float]) -> None:
        self.now = 0.0
        self.durations = list(durations)
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now

    def run(self) -> None:
        self.now += self.durations.pop(0)


def test_time_op_runs_warmup_untimed_and_reports_the_median() -> None:
    calls: list[str] = []
    # 2 warm-up runs then 5 timed runs lasting 3, 1, 4, 1, 5 s
    clock = FakeClock([100.0, 100.0, 3.0, 1.0, 4.0, 1.0, 5.0])
    timing = time_op(
        lambda: (calls.append("op"), clock.run()),
        warmup=2,
        repetitions=5,
        sync=lambda: calls.append("sync"),
        clock=clock,
    )
    assert timing.samples_s == (3.0, 1.0, 4.0, 1.0, 5.0)  # the 100 s warm-ups are not timed
    assert timing.median_s == 3.0  # sorted 1, 1, 3, 4, 5
    assert timing.min_s == 1.0 and timing.max_s == 5.0
    assert timing.spread == pytest.approx((5.0 - 1.0) / 3.0)
    # each timed run is bracketed by a sync before the start and after the end (GPU discipline)
    timed = calls[3:]  # 2 warm-up ops and the sync after them come first
    assert calls[:3] == ["op", "op", "sync"]
    assert timed == ["sync", "op", "sync"] * 5


def test_time_op_rejects_zero_repetitions() -> None:
    with pytest.raises(ScenarioError, match="repetitions >= 1"):
        time_op(lambda: None, repetitions=0)


def test_timing_dict_round_trips_the_samples() -> None:
    t = Timing((0.2, 0.1, 0.4))
    d = t.to_dict()
    assert d["median_s"] == 0.2 and d["repetitions"] == 3 and d["samples_s"] == [0.2, 0.1, 0.4]


def test_repetitions_for_fits_the_budget() -> None:
    assert repetitions_for(1.0, 0.1) == 10  # 1 s / 0.1 s
    assert repetitions_for(1.0, 0.9) == 3  # at least 3
    assert repetitions_for(100.0, 0.001) == 20  # at most 20


@given(st.lists(st.floats(min_value=1e-9, max_value=1e3), min_size=1, max_size=30))
@example([1e-9])
def test_timing_median_lies_within_the_samples(samples: list[float]) -> None:
    t = Timing(tuple(samples))
    assert t.min_s <= t.median_s <= t.max_s
    assert t.median_s == statistics.median(samples)
    assert t.spread >= 0.0
