"""Routing analytics on hand-made traces: loads, imbalance, reuse distance, LRU hits, window counts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from strategies import topk_id_arrays

from capsim import ScenarioError
from capsim.routing import (
    TraceRouter,
    expert_counts,
    load_imbalance,
    lru_hit_rate,
    rank_load_imbalance,
    reuse_distance_histogram,
    reuse_distances,
    step_load_imbalance,
    trace_stats,
    unique_per_step,
)
from capsim.routing.traces import Trace

# one layer, E = 3, k = 1, tokens route to 0, 0, 1, 2
SMALL = np.array([[[0], [0], [1], [2]]])


def test_counts_and_imbalance_by_hand():
    counts = expert_counts(SMALL, 3)
    assert counts.tolist() == [[2, 1, 1]]
    # max/mean = 2 / (4/3) = 1.5
    assert load_imbalance(counts) == pytest.approx([1.5])
    # steps of 2 tokens: {0,0} -> loads (2,0,0), max/mean = 2/(2/3) = 3; {1,2} -> (0,1,1) = 1.5; mean 2.25
    assert step_load_imbalance(SMALL, 3, 2) == pytest.approx([2.25])
    assert unique_per_step(SMALL, 3, 2).tolist() == [[1, 2]]


def test_rank_imbalance_by_hand():
    # loads 4, 0, 1, 1 on 2 ranks of 2 experts: rank loads 4 and 2, max/mean = 4/3
    assert rank_load_imbalance(np.array([[4, 0, 1, 1]]), 2) == pytest.approx([4 / 3])
    with pytest.raises(ScenarioError, match="expert-parallel size must divide E=4, got 3"):
        rank_load_imbalance(np.array([[4, 0, 1, 1]]), 3)


def test_reuse_distance_by_hand():
    # E = 4, k = 1, experts 0, 1, 2, 0, 1, 1. Token 3 reuses 0 after {1, 2} -> 2; token 4 reuses 1 after
    # {2, 0} -> 2; token 5 reuses 1 right away -> 0; the first three are cold (-1).
    ids = np.array([[[0], [1], [2], [0], [1], [1]]])
    (dist,) = reuse_distances(ids, 4)
    assert dist.tolist() == [-1, -1, -1, 2, 2, 0]
    assert reuse_distance_histogram([dist], 4).tolist() == [[1, 0, 2, 0]]
    # LRU of capacity C hits surely when d + k <= C: C = 1 -> only d = 0 (1 of 6); C = 3 -> all 3 warm (3 of 6)
    assert lru_hit_rate([dist], 1, 1) == pytest.approx([1 / 6])
    assert lru_hit_rate([dist], 3, 1) == pytest.approx([3 / 6])


def test_reuse_distance_counts_co_activated_experts_once():
    # k = 2: tokens {0,1}, {2,3}, {0,2}. Expert 0 at token 2: between tokens 0 and 2 lies token 1 with {2,3}
    # -> 2; expert 2 at token 2: nothing in between -> 0.
    ids = np.array([[[0, 1], [2, 3], [0, 2]]])
    (dist,) = reuse_distances(ids, 4)
    assert dist.tolist() == [-1, -1, -1, -1, 2, 0]


@settings(deadline=None)
@given(topk_id_arrays())
def test_window_count_equals_brute_force(case):
    """The gap-table formula for windows equals counting distinct experts in every window directly."""
    ids, num_experts = case
    router = TraceRouter(Trace.from_arrays(ids, model_id="t", num_experts=num_experts, top_k=ids.shape[2]))
    n = ids.shape[1]
    for m in sorted({1, min(2, n), n // 2 + 1, n}):
        brute = np.array(
            [
                np.mean([len(np.unique(ids[layer, s : s + m])) for s in range(n - m + 1)])
                for layer in range(ids.shape[0])
            ]
        )
        np.testing.assert_allclose(router.activated_per_layer(m, sequences=1), brute, rtol=1e-12, atol=1e-12)


@settings(deadline=None)
@given(topk_id_arrays())
def test_trace_activation_invariants(case):
    """Both trace modes: A(0) = 0, A(1) = k, k <= A <= experts seen, non-decreasing in T."""
    ids, num_experts = case
    k = ids.shape[2]
    router = TraceRouter(Trace.from_arrays(ids, model_id="t", num_experts=num_experts, top_k=k))
    seen = (router.counts > 0).sum(axis=1)
    t = np.array([0.0, 1.0, 1.5, 2.0, 3.0, 7.0, 40.0, 1000.0])
    for sequences in (None, 1, 2):
        a = router.activated_per_layer(t, sequences=sequences)
        assert np.all(a[:, 0] == 0)
        np.testing.assert_allclose(a[:, 1], k, rtol=1e-12)
        assert np.all(a[:, 1:] >= k - 1e-9)
        assert np.all(a <= seen[:, None] + 1e-9)
        assert np.all(np.diff(a, axis=1) >= -1e-9)


def test_trace_stats_bundle():
    ids = np.array([[[0], [0], [1], [2]], [[1], [1], [1], [1]]])
    stats = trace_stats(Trace.from_arrays(ids, model_id="t", num_experts=3, top_k=1), steps=(1, 2))
    assert stats.experts_used.tolist() == [3, 1]
    # layer 1 sends everything to expert 1: max/mean = 4/(4/3) = 3
    assert stats.load_imbalance == pytest.approx([1.5, 3.0])
    assert stats.activated_window[:, 1] == pytest.approx([5 / 3, 1.0])
    d = stats.to_dict()
    assert d["layers"][1]["tokens_per_expert"] == [0, 4, 0]
    assert d["steps"] == [1, 2]
    with pytest.raises(ScenarioError, match=r"step sizes must be >= 1 tokens, got \[0\]"):
        trace_stats(Trace.from_arrays(ids, model_id="t", num_experts=3, top_k=1), steps=(0,))
