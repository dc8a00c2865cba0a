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


def _classes(model_id: str, spec: str):  # type: ignore[no-untyped-def]
    from capsim.engine.cache_model import ExpertClasses

    model = resolve_model(model_id)
    router = make_router(spec, model, seed=0)
    mask = np.ones(router.inclusion.shape, dtype=bool)
    return model, router, mask, ExpertClasses.of(router.inclusion, router.new_origin, mask, model.moe.top_k)


def test_expert_classes_count_every_expert_once() -> None:
    """Uniform Mixtral (32 layers x 8 experts, π = 2/8 everywhere): one class of weight 256, 8 per layer in one
    layer class of 32 layers. A shuffled Zipf profile: one layer class (every layer holds the same multiset of
    π), 8 classes of one expert per layer (weight 32 each). Each expert maps back to a class of its own π."""
    _, _, _, uniform = _classes("mixtral-8x7b", "uniform")
    assert uniform.weight.tolist() == [256.0] and uniform.per_layer.tolist() == [8.0]
    assert uniform.layer_count.tolist() == [32.0] and uniform.size == 256
    _, router, mask, zipf = _classes("mixtral-8x7b", "zipf:1.0")
    assert len(zipf.layer_start) == 2 and zipf.weight.tolist() == [32.0] * 8
    pi = np.clip(router.inclusion, 0.0, 1.0 - 1e-12)[np.nonzero(mask)]
    assert np.array_equal(np.log1p(-pi), zipf.log_first[zipf.of_item])


@pytest.mark.parametrize("spec", ["uniform", "zipf:1.2,reuse=0.5", "dirichlet:0.3,reuse=0.3,affinity=0.5"])
def test_pairs_evaluated_together_equal_each_alone(spec: str) -> None:
    """A sweep evaluates many (batch, capacity) pairs in one call; predict evaluates one. Each pair's numbers
    must be bit-identical either way, so a sweep's rows do not depend on its chunking (or on which chunks a Dask
    worker saw before)."""
    from capsim.engine.cache_model import lru_outcomes

    _, _, _, classes = _classes("qwen3-30b-a3b", spec)
    rng = np.random.default_rng(1)
    batch, capacity = rng.integers(1, 200, 12), rng.integers(1, classes.size, 12)
    accesses, misses, per_expert = lru_outcomes(classes, batch, capacity)
    for j in range(batch.size):
        a, m, p = lru_outcomes(classes, int(batch[j]), int(capacity[j]))
        assert (a[0], m[0]) == (accesses[j], misses[j])
        assert np.array_equal(p[:, 0], per_expert[:, j])


@pytest.mark.parametrize("spec", ["uniform", "zipf:1.0"])
def test_nearly_full_caches_match_the_simulation(spec: str) -> None:
    """Caches of 95-99.5 % of Mixtral's 256 experts, where a window of reuse may never fill the cache: within
    0.05 of the simulated hit rate (the model before the band's tail end read 0.00 at batch 16 and 250 slots with
    Zipf routing, the simulation 0.93)."""
    from capsim.engine.cache_model import lru_outcomes

    _, router, mask, classes = _classes("mixtral-8x7b", spec)
    tiers = np.full(mask.shape, DRAM, dtype=np.int8)
    for batch in (1, 16):
        for capacity in (243, 250, 254):
            accesses, misses, _ = lru_outcomes(classes, batch, capacity)
            simulated = _simulated(router, mask, tiers, batch, capacity, steps=400).hit_rate
            assert 1 - misses[0] / accesses[0] == pytest.approx(simulated, abs=0.05), (batch, capacity)


def _hit_rates(classes, batch, capacity):  # type: ignore[no-untyped-def]
    from capsim.engine.cache_model import lru_outcomes

    accesses, misses, _ = lru_outcomes(classes, batch, capacity)
    return 1 - misses / accesses


@pytest.mark.parametrize(
    ("model_id", "spec"), [("mixtral-8x7b", "zipf:0.8,reuse=0.8"), ("qwen3-30b-a3b", "zipf:1.0")]
)
def test_the_sum_over_gaps_is_resolved(model_id: str, spec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """64 gap points, band ends to 1/8 and the CDF interpolated past 16 classes against 192 points, integer band
    ends and one CDF per class: hit rates within 2e-3 from 5 % to 99.5 % of the experts cached."""
    from capsim.engine import cache_model

    _, _, _, classes = _classes(model_id, spec)
    batch = np.repeat([1, 3, 16, 64], 7)
    capacity = np.tile((np.array([0.05, 0.3, 0.6, 0.8, 0.9, 0.97, 0.995]) * classes.size).astype(int), 4)
    fast = _hit_rates(classes, batch, capacity)
    monkeypatch.setattr(cache_model, "MAX_GAP_POINTS", 192)
    monkeypatch.setattr(cache_model, "BAND_EDGE_TOLERANCE", 0.0)
    monkeypatch.setattr(cache_model, "EXACT_CDF_CLASSES", 1 << 30)
    fine = _hit_rates(classes, batch, capacity)
    assert np.abs(fast - fine).max() < 2e-3
