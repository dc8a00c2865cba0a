"""The analytic LRU expert-cache model (capsim.engine.cache_model) against the simulated cache (capsim.engine.offload
.simulate_tiers on a sampled routing stream) it replaces for LRU on synthetic routers."""

from __future__ import annotations

import numpy as np
import pytest

from capsim.engine.cache_model import device_cache_misses
from capsim.engine.deployment import access_stream, step_accesses
from capsim.engine.offload import simulate_tiers
from capsim.engine.placement import DRAM
from capsim.models.db import resolve_model
from capsim.routing import make_router

ROUTERS = [
    "uniform",
    "zipf:1.0",
    "zipf:1.2,reuse=0.5",
    "zipf:0.8,reuse=0.8",
    "dirichlet:0.3,reuse=0.3,affinity=0.5",
]


def _simulated(router, mask, tiers, batch, capacity, page_slots=0, two_level=False, steps=300):  # type: ignore[no-untyped-def]
    stream = access_stream(step_accesses(router, batch, steps, 0), mask)
    return simulate_tiers(stream, tiers, capacity, page_slots, "lru", two_level)


@pytest.mark.parametrize("spec", ROUTERS)
def test_lru_hit_rate_matches_the_simulation(spec: str) -> None:
    """Mixtral's 32 MoE layers x 8 experts (256 cacheable), batches 1, 4, 32, caches of 25-90 % of the experts.

    Within 0.05 of the simulated steady-state hit rate, except within ±15 % of a step's working set
    W = Σ_i 1 − (1 − π_i)^B: there LRU's layer-ordered scan has a cliff (C < W: every expert is evicted before
    its reuse) and a few experts more or less move the rate a lot; on the far side of the cliff both are ~0."""
    model = resolve_model("mixtral-8x7b")
    router = make_router(spec, model, seed=0)
    pi = router.inclusion
    mask = np.ones(pi.shape, dtype=bool)
    tiers = np.full(pi.shape, DRAM, dtype=np.int8)
    checked = 0
    for batch in (1, 4, 32):
        working_set = float((1 - (1 - pi) ** batch).sum())
        for fraction in (0.25, 0.5, 0.75, 0.9):
            capacity = int(fraction * pi.size)
            accesses, misses, _ = device_cache_misses(pi, router.new_origin, mask, batch, capacity, 2)
            analytic = 1 - misses / accesses
            simulated = _simulated(router, mask, tiers, batch, capacity).hit_rate
            assert accesses == pytest.approx(working_set)
            if capacity < 0.85 * working_set:
                assert analytic < 0.02 and simulated < 0.02, (batch, capacity, analytic, simulated)
            elif capacity > 1.15 * working_set:
                assert analytic == pytest.approx(simulated, abs=0.05), (batch, capacity, analytic, simulated)
                checked += 1
    assert checked >= 4


def test_predict_uses_the_model_where_it_applies(default_hardware_db) -> None:  # type: ignore[no-untyped-def]
    """LRU on a synthetic router: analytic, no routing sample; LFU: simulated as before."""
    from capsim.engine.predict import predict
    from capsim.engine.scenario import Scenario

    base = dict(model="mixtral-8x7b", hardware="h100-sxm", gpus=1, batch=8, mode="offload")
    lru = predict(Scenario(**base), hardware_db=default_hardware_db).deployment  # type: ignore[arg-type]
    lfu = predict(Scenario(**base, cache_policy="lfu"), hardware_db=default_hardware_db).deployment  # type: ignore[arg-type]
    assert (lru["cache_model"], lru["sampled_steps"]) == ("analytic", 0)
    assert lfu["cache_model"] == "simulated" and lfu["sampled_steps"] > 0
    assert 0.0 <= lru["hit_rate"] <= 1.0


def test_trivial_caches() -> None:
    """A cache holding every expert never misses; a step's accesses are Σ 1 − (1 − π)^B (uniform 8 experts,
    top-2, B = 3: 8·(1 − 0.75³) = 4.625 per layer, 2 layers)."""
    pi = np.full((2, 8), 0.25)
    accesses, misses, _ = device_cache_misses(pi, np.ones(2), np.ones((2, 8), bool), 3, 16, 2)
    assert accesses == pytest.approx(2 * 8 * (1 - 0.75**3))
    assert misses == 0.0
