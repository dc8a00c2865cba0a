"""Execution modes beyond GPU-resident serving: offload with an expert cache, CPU experts, CPU-only."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capsim import MissingValueError, ScenarioError, predict
from capsim.engine.deployment import simulate_cache
from capsim.engine.resolve import resolve
from capsim.engine.scenario import Scenario

EXPERT_BYTES = 3 * 4096 * 14336 * 2  # one Mixtral-8x7B expert in bf16 = 352,321,536 bytes
PCIE4 = (
    31.5e9 * 0.78
)  # PCIe 4.0 x16 per direction (hardware.md §7) x measured pinned-copy efficiency (offload.py)


COPY_CALLS = 64 * 3 * 6e-6  # 64 experts fetched per step x 3 copy calls x 6 us (offload.COPY_LATENCY_S)


def mixtral_on_4090(**kw):  # type: ignore[no-untyped-def]
    return Scenario(
        model="mixtral-8x7b",
        hardware="workstation-4090",
        gpus=1,
        batch=1,
        prompt_len=512,
        gen_len=64,
        mode="offload",
        **kw,
    )


def test_offload_mixtral_on_24gb_gpu_hand_computed(default_hardware_db) -> None:
    """Mixtral-8x7B bf16 on one RTX 4090 with every expert in DDR5 behind PCIe 4.

    GPU keeps the 3.2 GB of non-expert weights; the rest of 24 GB x 0.9 = 21.6 GB (minus KV and buffers)
    holds floor(~18.3 GB / 352,321,536 B) = 51 experts of the 256. Batch 1 reads 2 experts in each of 32
    layers = 64 (layer, expert) keys per step, and a key is reused only after >= 62 other keys: more than the
    51 slots, so LRU never hits. Every step copies 64 x 352,321,536 = 22,548,578,304 bytes over PCIe 4
    (31.5 GB/s x 0.78 pinned-copy efficiency = 24.57 GB/s): 22.5486e9 / 24.57e9 = 0.91773 s, plus 3 copy
    calls (gate, up, down) of 6 us per expert: 64 x 18 us = 1.152 ms, 0.91888 s per token, which dwarfs the
    GPU time (prefetch overlaps it).
    """
    pred = predict(mixtral_on_4090(), hardware_db=default_hardware_db)
    dep = pred.deployment
    assert dep["cache_experts"] == 51
    # the analytic LRU model (capsim.engine.cache_model): no hit, to rounding
    assert dep["hit_rate"] == pytest.approx(0.0, abs=1e-12)
    assert dep["misses_per_step"] == pytest.approx(64.0, rel=1e-12)
    assert dep["link_gb_per_step"] * 1e9 == pytest.approx(64 * EXPERT_BYTES)
    assert 64 * EXPERT_BYTES == 22_548_578_304
    assert pred.tpot_s == pytest.approx(22_548_578_304 / PCIE4 + COPY_CALLS, rel=1e-9)
    assert pred.tpot_s == pytest.approx(0.91888, rel=1e-4)
    assert pred.decode.bottleneck == "link"


def test_offload_without_prefetch_serialises(default_hardware_db) -> None:
    with_prefetch = predict(mixtral_on_4090(), hardware_db=default_hardware_db)
    serial = predict(mixtral_on_4090(prefetch=False), hardware_db=default_hardware_db)
    gpu_only = with_prefetch.decode.time_by_op_s
    gpu_time = sum(v for k, v in gpu_only.items() if k != "expert_fetch") / with_prefetch.decode.passes
    assert serial.tpot_s == pytest.approx(gpu_time + 22_548_578_304 / PCIE4 + COPY_CALLS, rel=1e-9)


def test_oracle_cache_beats_lru(default_hardware_db) -> None:
    lru = predict(mixtral_on_4090(cache_policy="lru"), hardware_db=default_hardware_db)
    oracle = predict(mixtral_on_4090(cache_policy="oracle"), hardware_db=default_hardware_db)
    assert oracle.deployment["hit_rate"] > lru.deployment["hit_rate"]
    assert oracle.tpot_s < lru.tpot_s


# ---- cache simulation against brute force ------------------------------------------------------------------


def brute_force_misses(stream: list[tuple[int, int]], capacity: int, policy: str) -> int:
    """Plain list-based reference implementations of LRU, LFU (ties: least recent) and Belady's MIN."""
    cache: list[tuple[int, int]] = []  # most recent last
    freq: dict[tuple[int, int], int] = {}
    misses = 0
    for i, key in enumerate(stream):
        freq[key] = freq.get(key, 0) + 1
        if key in cache:
            cache.remove(key)
            cache.append(key)
            continue
        misses += 1
        if len(cache) >= capacity:
            if policy == "lru":
                cache.pop(0)
            elif policy == "lfu":
                victim = min(cache, key=lambda k: (freq[k], cache.index(k)))
                cache.remove(victim)
            else:

                def next_use(k: tuple[int, int]) -> float:
                    for j in range(i + 1, len(stream)):
                        if stream[j] == k:
                            return j
                    return float("inf")

                cache.remove(max(cache, key=next_use))
        cache.append(key)
    return misses


@settings(max_examples=60, deadline=None)
@given(
    steps=st.integers(1, 12),
    layers=st.integers(1, 4),
    experts=st.integers(2, 8),
    capacity=st.integers(0, 12),
    policy=st.sampled_from(["lru", "lfu", "oracle"]),
    seed=st.integers(0, 10_000),
)
def test_cache_simulation_matches_brute_force(steps, layers, experts, capacity, policy, seed) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    accesses = [
        [np.unique(rng.integers(0, experts, size=rng.integers(1, experts + 1))) for _ in range(layers)]
        for _ in range(steps)
    ]
    mask = np.ones(layers, dtype=bool)
    total, misses, first = simulate_cache(accesses, mask, capacity, policy)
    assert first.sum() == len(
        {(layer, int(e)) for per_layer in accesses for layer in range(layers) for e in per_layer[layer]}
    )
    stream = [(layer, int(e)) for per_layer in accesses for layer in range(layers) for e in per_layer[layer]]
    assert total.sum() == len(stream)
    expected = len(stream) if capacity == 0 else brute_force_misses(stream, capacity, policy)
    if policy == "oracle":
        # Belady is optimal: never more misses than LRU, and equal to the reference MIN
        assert misses.sum() <= brute_force_misses(stream, max(capacity, 1), "lru") or capacity == 0
    assert misses.sum() == expected


# ---- monotonicity ---------------------------------------------------------------------------------------


def test_more_gpu_memory_never_slows_offload(default_hardware_db, tmp_path) -> None:
    from capsim.hardware.db import load_hardware_db

    src = default_hardware_db.accelerator("rtx-4090").file
    from pathlib import Path

    text = Path(src).read_text()
    times = []
    for gb in (24, 32, 48, 96):
        entry = text.replace('id = "rtx-4090"', f'id = "rtx-4090-{gb}gb"').replace(
            "memory_capacity_gb = 24", f"memory_capacity_gb = {gb}"
        )
        (tmp_path / f"rtx-4090-{gb}gb.toml").write_text(entry)
        db = load_hardware_db([tmp_path / f"rtx-4090-{gb}gb.toml"])
        sc = Scenario(
            model="mixtral-8x7b",
            hardware=f"rtx-4090-{gb}gb",
            gpus=1,
            batch=4,
            prompt_len=256,
            gen_len=32,
            mode="offload",
        )
        times.append(predict(sc, hardware_db=db).tpot_s)
    assert all(b <= a * (1 + 1e-12) for a, b in itertools.pairwise(times))
    assert times[-1] < times[0]


@pytest.mark.parametrize("factor", [1.5, 2.0, 4.0])
def test_faster_link_never_slows_offload(default_hardware_db, monkeypatch, factor) -> None:
    from capsim.engine import offload

    base = predict(mixtral_on_4090(prefetch=False), hardware_db=default_hardware_db).tpot_s
    original = offload.expert_link_bandwidth
    monkeypatch.setattr(
        offload, "expert_link_bandwidth", lambda node, dep: (original(node, dep)[0] * factor, "x")
    )
    faster = predict(mixtral_on_4090(prefetch=False), hardware_db=default_hardware_db).tpot_s
    assert faster < base


# ---- CPU experts and CPU-only -------------------------------------------------------------------------


def test_cpu_experts_hand_computed(default_hardware_db) -> None:
    """Mixtral int4 experts computed by a Ryzen 9 7950X from dual-channel DDR5-5200.

    Bytes per step: 2 experts x 32 layers x 176,160,768 params x 4.125/8 bytes = 5,813,305,344 bytes; the
    socket streams 2 x 41.6 = 83.2 GB/s x 0.775 (cpu class sustained fraction) x 0.41 (cpu class kernel fraction,
    fitted to published CPU MoE decode) = 26.44 GB/s -> 219.9 ms, far above the compute time (2 x 2 x 176,160,768 x 32 FLOPs / (4.608 TFLOPS x 0.5) = 9.8 ms).
    """
    sc = Scenario(
        model="mixtral-8x7b",
        hardware="workstation-4090",
        gpus=1,
        batch=1,
        prompt_len=128,
        gen_len=8,
        mode="cpu-experts",
        weight_dtype="int4",
    )
    pred = predict(sc, hardware_db=default_hardware_db)
    weight_bytes = 2 * 32 * 176_160_768 * 4.125 / 8
    assert weight_bytes == 5_813_305_344
    activation_bytes = 32 * 2 * 1 * 2 * 4096 * 2  # in and out of k=2 experts, bf16, per layer
    per_step = pred.decode.time_by_op_s["cpu_experts"] / pred.decode.passes
    assert per_step == pytest.approx((weight_bytes + activation_bytes) / (83.2e9 * 0.775 * 0.41), rel=1e-9)
    assert pred.decode.time_by_op_s["routed_experts"] == pytest.approx(0.0, abs=1e-12)
    assert pred.decode.bottleneck == "cpu"


def test_cpu_experts_of_some_layers_only(default_hardware_db) -> None:
    full = predict(
        Scenario(
            model="mixtral-8x7b", hardware="workstation-4090", gpus=1, mode="cpu-experts", weight_dtype="int4"
        ),
        hardware_db=default_hardware_db,
    )
    part = predict(
        Scenario(
            model="mixtral-8x7b",
            hardware="workstation-4090",
            gpus=1,
            mode="cpu-experts",
            weight_dtype="int4",
            expert_layers="0:16",
        ),
        hardware_db=default_hardware_db,
    )
    assert part.deployment["offloaded_moe_layers"] == 16
    assert part.tpot_s < full.tpot_s
    assert part.memory.weights_bytes > full.memory.weights_bytes  # 16 layers' experts are back on the GPU


def test_cpu_only_streams_one_socket_or_replicates(default_hardware_db) -> None:
    single = predict(
        Scenario(model="qwen3-30b-a3b", hardware="epyc-9654-2s", host_memory_gb=768),
        hardware_db=default_hardware_db,
    )
    assert single.assumptions["hardware"]["id"] == "epyc-9654-2s-cpu"
    # one socket: 12 channels of DDR5-4800 = 460.8 GB/s (hardware.md §4)
    assert single.assumptions["peaks"]["memory_bandwidth_gb_s"] == pytest.approx(460.8)
    both = predict(
        Scenario(model="qwen3-30b-a3b", hardware="epyc-9654-2s", host_memory_gb=768, numa="replicate"),
        hardware_db=default_hardware_db,
    )
    assert both.assumptions["peaks"]["memory_bandwidth_gb_s"] == pytest.approx(921.6)
    assert both.tpot_s < single.tpot_s
    assert both.memory.capacity_bytes == pytest.approx(single.memory.capacity_bytes / 2)


@pytest.mark.parametrize(
    "kw,error,match",
    [
        # (epyc-9654-2s now ships a DRAM capacity, issue 15; the workstation leaves it to the buyer)
        (
            dict(model="mixtral-8x7b", hardware="workstation-4090", mode="cpu"),
            MissingValueError,
            "dram.capacity_gb",
        ),
        (dict(hardware="m2-ultra", mode="cpu-experts"), ScenarioError, "unified memory"),
        (dict(hardware="h100-sxm", gpus=2, mode="offload", expert_tier="ssd"), MissingValueError, "ssds"),
        (
            dict(hardware="workstation-4090", gpus=1, mode="offload", expert_layers="5"),
            ScenarioError,
            "FIRST:LAST",
        ),
        (dict(hardware="epyc-9654-2s", mode="offload", host_memory_gb=512), ScenarioError, "has no GPU"),
        (dict(hardware="workstation-4090", gpus=1, mode="warp"), ScenarioError, "unknown mode 'warp'"),
    ],
)
def test_invalid_layouts(default_hardware_db, kw, error, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=match):
        predict(Scenario(**kw), hardware_db=default_hardware_db)


def test_offload_needs_an_moe_model(default_hardware_db) -> None:
    from capsim.models.db import resolve_model
    from capsim.models.parts import FFNKind

    m = resolve_model("mixtral-8x7b")
    dense = replace(
        m, moe=None, ffn_kinds=tuple(FFNKind.DENSE for _ in range(32)), dense_intermediate_size=14336
    )
    with pytest.raises(ScenarioError, match="moves routed experts"):
        resolve(
            Scenario(model=dense, hardware="workstation-4090", gpus=1, mode="offload"), default_hardware_db
        )


def test_cpu_gpu_handoff_hand_computed(default_hardware_db) -> None:
    """Two hand-offs per MoE layer with CPU experts: each 1 token x 4096 x 2 bytes over PCIe 4 (31.5 GB/s x 0.78
    pinned-copy efficiency = 24.57 GB/s) plus NCCL's base latency 6.6 us and one PCI hop 1.0 us (rtx-4090's
    efficiency class): 32 x 2 x (7.6e-6 + 8192 / 24.57e9) = 32 x 2 x 7.93340e-6 = 5.0774e-4 s per decode step."""
    sc = Scenario(
        model="mixtral-8x7b",
        hardware="workstation-4090",
        gpus=1,
        batch=1,
        prompt_len=128,
        gen_len=8,
        mode="cpu-experts",
        weight_dtype="int4",
    )
    pred = predict(sc, hardware_db=default_hardware_db)
    per_step = pred.decode.time_by_op_s["cpu_gpu_handoff"] / pred.decode.passes
    assert pred.deployment["handoff_latency_s"] == pytest.approx(6.6e-6 + 1.0e-6)
    assert per_step == pytest.approx(32 * 2 * (7.6e-6 + 4096 * 2 / (31.5e9 * 0.78)), rel=1e-9)
    assert per_step == pytest.approx(5.0774e-4, rel=1e-4)
