"""Placement of routed experts across tiers (GPU, host DRAM, SSD): the spec grammar, the tier map, auto
placement, the two-level cache, and predict end to end."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capsim import DoesNotFitError, ScenarioError, predict
from capsim.engine.deployment import AccessStream, cache_hits
from capsim.engine.offload import simulate_tiers
from capsim.engine.placement import (
    DEVICE,
    DRAM,
    SSD,
    auto_tier_map,
    expert_tier_map,
    parse_placement,
    tier_counts,
)
from capsim.engine.scenario import Scenario

EXPERT_BYTES = 3 * 4096 * 14336 * 2  # one Mixtral-8x7B expert in bf16 = 352,321,536 bytes
PCIE4 = (
    31.5e9 * 0.78
)  # PCIe 4.0 x16 per direction (hardware.md §7) x measured pinned-copy efficiency (offload.py)


# ---- grammar ------------------------------------------------------------------------------------------------


def test_parse_clauses_in_order() -> None:
    spec = parse_placement("experts:dram, hot-experts[0:4]:2:gpu ,cold-experts:3:ssd")
    assert not spec.auto
    assert [(c.what, c.layers, c.count, c.tier) for c in spec.clauses] == [
        ("experts", (None, None), None, "dram"),
        ("hot-experts", (0, 4), 2, "gpu"),
        ("cold-experts", (None, None), 3, "ssd"),
    ]
    assert parse_placement("AUTO").auto
    assert parse_placement("gpu").clauses[0].tier == "gpu"
    assert parse_placement("experts[10:]:dram").clauses[0].layers == (10, None)


@pytest.mark.parametrize(
    "text,match",
    [
        ("", "empty --placement"),
        ("auto,experts:dram", "write it alone"),
        ("experts:hbm", "unknown tier 'hbm'"),
        ("experts:4:dram", "a count goes with cold-experts/hot-experts only"),
        ("cold-experts:ssd", "needs a count per layer"),
        ("experts[9:3]:dram", "selects no layers"),
        ("layers:dram", "cannot read --placement clause 'layers:dram'"),
    ],
)
def test_bad_specs_name_the_clause(text: str, match: str) -> None:
    with pytest.raises(ScenarioError, match=match):
        parse_placement(text)


# ---- tier maps ----------------------------------------------------------------------------------------------


def test_layer_range_and_cold_hot_selection() -> None:
    pi = np.tile(np.array([0.1, 0.4, 0.1, 0.2, 0.05, 0.15]), (6, 1))  # rows sum to k = 1
    tiers = expert_tier_map(parse_placement("experts[2:5]:dram"), 6, 6, pi)
    assert (tiers[2:5] == DRAM).all() and (tiers[:2] == DEVICE).all() and (tiers[5:] == DEVICE).all()
    # the 3 coldest by π: expert 4 (0.05), then experts 0 and 2 (0.1 each; lower id first)
    cold = expert_tier_map(parse_placement("cold-experts:3:ssd"), 6, 6, pi)
    assert set(np.nonzero(cold[0] == SSD)[0]) == {4, 0, 2}
    # the hottest 2 back on the GPU after everything went to DRAM: experts 1 (0.4) and 3 (0.2)
    hot = expert_tier_map(parse_placement("experts:dram,hot-experts:2:gpu"), 6, 6, pi)
    assert set(np.nonzero(hot[3] == DEVICE)[0]) == {1, 3}
    assert tier_counts(hot) == {"gpu": 12, "dram": 24, "ssd": 0}


def test_dram_is_the_device_when_the_device_is_dram() -> None:
    tiers = expert_tier_map(
        parse_placement("experts:dram,cold-experts:1:ssd"), 2, 4, np.full((2, 4), 0.5), device_is_dram=True
    )
    assert tier_counts(tiers) == {"gpu": 6, "dram": 0, "ssd": 2}


@pytest.mark.parametrize(
    "text,match",
    [("experts[40:]:dram", "from 40, but the model has 32 MoE layers"), ("cold-experts:9:ssd", "has 8")],
)
def test_tier_map_errors(text: str, match: str) -> None:
    with pytest.raises(ScenarioError, match=match):
        expert_tier_map(parse_placement(text), 32, 8, np.full((32, 8), 0.25))


def test_auto_fills_device_then_dram_then_ssd_hottest_first() -> None:
    pi = np.array([[0.5, 0.1, 0.3, 0.1], [0.2, 0.6, 0.1, 0.1]])
    tiers = auto_tier_map(pi, device_slots=2, dram_slots=3, has_ssd=True)
    # hottest two over all layers: (1,1) 0.6 and (0,0) 0.5; next three: (0,2) 0.3, (1,0) 0.2, (0,1) 0.1
    assert tiers[1, 1] == DEVICE and tiers[0, 0] == DEVICE
    assert tiers[0, 2] == DRAM and tiers[1, 0] == DRAM and tiers[0, 1] == DRAM
    assert tier_counts(tiers) == {"gpu": 2, "dram": 3, "ssd": 3}
    with pytest.raises(ScenarioError, match="no SSD"):
        auto_tier_map(pi, device_slots=2, dram_slots=3, has_ssd=False)


# ---- two-level cache against brute force ----------------------------------------------------------------


def brute_two_level(
    keys: list[tuple[int, int]], on_ssd: set[tuple[int, int]], capacity: int, page_slots: int
) -> tuple[int, int]:
    """Reference: LRU device cache as a plain list; its misses of SSD experts go through a plain-list LRU
    page cache. Returns (device misses, SSD reads), counting every access (compulsory ones included)."""
    dev: list[tuple[int, int]] = []
    page: list[tuple[int, int]] = []
    misses = reads = 0

    def touch(cache: list[tuple[int, int]], key: tuple[int, int], size: int) -> bool:
        if key in cache:
            cache.remove(key)
            cache.append(key)
            return True
        if size > 0:
            if len(cache) >= size:
                cache.pop(0)
            cache.append(key)
        return False

    for key in keys:
        if touch(dev, key, capacity):
            continue
        misses += 1
        if key in on_ssd and not touch(page, key, page_slots):
            reads += 1
    return misses, reads


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 120),
    layers=st.integers(1, 3),
    experts=st.integers(2, 6),
    capacity=st.integers(0, 8),
    page=st.integers(0, 8),
    seed=st.integers(0, 10_000),
)
def test_two_level_cache_matches_brute_force(
    n: int, layers: int, experts: int, capacity: int, page: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    layer = rng.integers(0, layers, n)
    expert = rng.integers(0, experts, n)
    tiers = rng.choice([DRAM, SSD], size=(layers, experts)).astype(np.int8)
    stream = AccessStream(np.zeros(n, dtype=np.int64), layer, expert, 1)
    keys = list(zip(layer.tolist(), expert.tolist()))
    on_ssd = {(l_, e) for l_ in range(layers) for e in range(experts) if tiers[l_, e] == SSD}
    misses, reads = brute_two_level(keys, on_ssd, capacity, page)
    assert int((~cache_hits(stream, capacity, "lru")).sum()) == misses
    # simulate_tiers reports steady-state rates (compulsory accesses left out) per step; rebuild the counts
    out = simulate_tiers(stream, tiers, capacity, page, "lru", two_level=True)
    first = stream.first_ever()
    steady = n - int(first.sum())
    if steady:
        # every compulsory access is a device miss and, for an SSD expert, an SSD read
        first_ssd = sum(1 for i in np.nonzero(first)[0] if tiers[layer[i], expert[i]] == SSD)
        assert out.misses_per_step / n * steady == pytest.approx(misses - int(first.sum()))
        assert out.ssd_reads_per_step / n * steady == pytest.approx(reads - first_ssd)


# ---- predict end to end -------------------------------------------------------------------------------------


def mixtral_4090(**kw):  # type: ignore[no-untyped-def]
    base = dict(
        model="mixtral-8x7b", hardware="workstation-4090", gpus=1, batch=1, prompt_len=512, gen_len=32
    )
    return Scenario(**{**base, **kw})


def test_placement_experts_dram_equals_legacy_offload(default_hardware_db) -> None:
    spec = predict(mixtral_4090(placement="experts:dram"), hardware_db=default_hardware_db)
    legacy = predict(mixtral_4090(mode="offload"), hardware_db=default_hardware_db)
    assert spec.deployment["mode"] == "offload"  # implied by experts off the GPU
    assert "--mode offload assumed" in spec.deployment["note"]
    assert spec.tpot_s == pytest.approx(legacy.tpot_s, rel=1e-12)
    assert spec.deployment["tiers"]["dram"]["experts"] == 256


def test_auto_on_a_24gb_gpu_hand_computed(default_hardware_db) -> None:
    """Mixtral-8x7B bf16, batch 1, prompt 512 + gen 32 on one RTX 4090 with --placement auto.

    Usable 24e9 x 0.9 = 21.6e9 B. Non-expert weights 1,605,636,096 params x 2 B = 3,211,272,192 B (embeddings +
    lm_head 2 x 32000 x 4096, attention 32 x 41,943,040, router 32 x 8 x 4096 x 2 B, norms); buffers
    512 x (2 x 4096 + 2 x 2 x 14336) x 2 + 32000 x 4 = 67,236,864 B; KV 544 tokens x 131,072 B = 71,303,168 B.
    Free 21.6e9 - 3,349,812,224 = 18,250,187,776 B = 51.8 experts -> 51 slots; offload keeps top-k = 2 slots to
    stage a layer, so 49 experts are pinned: with uniform π (ties by layer, expert) layers 0-5 whole and
    expert 0 of layer 6. Cache left: (18,250,187,776 - 49 x 352,321,536) // 352,321,536 = 2 experts, too few
    to keep anything across the 26 layers, so each step misses every activated expert off the GPU:
    25 layers x 2 + layer 6's ~2 x 7/8 = ~51.75, each 352,321,536 B over PCIe 4 at 31.5 GB/s.
    """
    # uniform routing: the arithmetic above takes every expert as equally popular (pi = k/E)
    pred = predict(mixtral_4090(placement="auto", routing="uniform"), hardware_db=default_hardware_db)
    dep = pred.deployment
    assert pytest.approx(18_250_187_776) == 21.6e9 - 3_211_272_192 - 67_236_864 - 71_303_168
    assert dep["tiers"]["gpu"]["experts"] == 49
    assert dep["cache_experts"] == 2
    assert dep["offloaded_moe_layers"] == 26
    assert dep["hit_rate"] == 0.0
    assert 50.0 <= dep["misses_per_step"] <= 52.0
    # each fetched expert also pays 3 copy calls (gate, up, down) of 6 us (capsim.engine.offload.COPY_LATENCY_S)
    per_expert = EXPERT_BYTES / PCIE4 + 3 * 6e-6
    assert pred.tpot_s == pytest.approx(dep["misses_per_step"] * per_expert, rel=1e-9)
    assert pred.memory.weights_bytes == pytest.approx(3_211_272_192 + 49 * EXPERT_BYTES)


def test_auto_keeps_everything_on_a_gpu_that_holds_it(default_hardware_db) -> None:
    pred = predict(
        Scenario(model="mixtral-8x7b", hardware="h100-sxm", gpus=2, placement="auto"),
        hardware_db=default_hardware_db,
    )
    assert pred.deployment["mode"] == "gpu"


def test_cold_experts_on_ssd_read_less_than_hot_ones(default_hardware_db) -> None:
    """With a skewed router, the SSD sees fewer reads when it holds each layer's coldest experts."""
    # DRAM holds 6 x 32 x 352,321,536 = 67,645,734,912 B of experts; 68 GB leaves a 1-expert page cache
    kw = dict(routing="zipf:1.2", host_memory_gb=68, gen_len=48)
    cold = predict(
        mixtral_4090(placement="experts:dram,cold-experts:2:ssd", **kw), hardware_db=default_hardware_db
    )
    hot = predict(
        mixtral_4090(placement="experts:dram,hot-experts:2:ssd", **kw), hardware_db=default_hardware_db
    )
    # page cache: (68e9 - 192 x 352,321,536) // 352,321,536 = 1 expert
    assert cold.deployment["page_cache_experts"] == 1
    assert cold.deployment["ssd_reads_per_step"] < hot.deployment["ssd_reads_per_step"]
    assert cold.tpot_s <= hot.tpot_s


def test_dram_must_hold_its_experts(default_hardware_db) -> None:
    # 6 experts x 32 layers x 352,321,536 B = 67.6 GB of DRAM-placed experts in 64 GB
    with pytest.raises(DoesNotFitError, match="host DRAM of workstation-4090"):
        predict(
            mixtral_4090(placement="experts:dram,cold-experts:2:ssd", host_memory_gb=64),
            hardware_db=default_hardware_db,
        )


def test_cpu_only_pages_ssd_experts_into_dram(default_hardware_db) -> None:
    """CPU-only Mixtral int4 with every expert on the SSD and 16 GB of DRAM: non-expert weights 1.6e9 x
    4.125/8 B stay in DRAM, the rest of DRAM caches experts; misses are read at the SSD's 7.45 GB/s."""
    pred = predict(
        Scenario(
            model="mixtral-8x7b",
            hardware="workstation-4090",
            mode="cpu",
            weight_dtype="int4",
            placement="experts:ssd",
            host_memory_gb=16,
            gen_len=32,
        ),
        hardware_db=default_hardware_db,
    )
    dep = pred.deployment
    assert dep["mode"] == "cpu" and dep["link_path"] == "ssd0 -> dram0"
    assert dep["tiers"]["ssd"]["experts"] == 256
    assert 0 < dep["cache_experts"] < 256
    read_s = dep["links"]["ssd_to_host"]["s_per_step"]
    assert read_s == pytest.approx(dep["misses_per_step"] * 176_160_768 * 4.125 / 8 / 7.45e9)


def test_cpu_experts_with_ssd_paging_is_slower_than_dram(default_hardware_db) -> None:
    """int4 experts are 176,160,768 x 4.125/8 = 90,832,896 B: all 256 need 23.3 GB of DRAM; with 128 on the
    SSD, 14 GB of DRAM leaves (14e9 - 128 x 90,832,896) // 90,832,896 = 26 experts of page cache."""
    kw = dict(mode="cpu-experts", weight_dtype="int4")
    dram = predict(mixtral_4090(host_memory_gb=24, **kw), hardware_db=default_hardware_db)
    ssd = predict(
        mixtral_4090(placement="experts:dram,cold-experts:4:ssd", host_memory_gb=14, **kw),
        hardware_db=default_hardware_db,
    )
    assert dram.deployment["ssd_reads_per_step"] == 0.0
    assert ssd.deployment["tiers"]["ssd"]["experts"] == 128
    assert ssd.deployment["page_cache_experts"] == 26
    assert ssd.deployment["ssd_reads_per_step"] > 0
    assert ssd.tpot_s >= dram.tpot_s


@pytest.mark.parametrize(
    "kw,error,match",
    [
        (dict(placement="experts:dram", expert_layers="0:4"), ScenarioError, "not both"),
        (
            dict(mode="cpu", placement="experts:gpu", host_memory_gb=128),
            ScenarioError,
            "--mode cpu runs without a GPU",
        ),
        (dict(placement="experts[40:]:dram"), ScenarioError, "the model has 32 MoE layers"),
        (dict(placement="experts:tape"), ScenarioError, "unknown tier 'tape'"),
        (
            dict(placement="experts:dram", ep=2, gpus=2, hardware="h100-sxm"),
            ScenarioError,
            "--ep with experts off",
        ),
    ],
)
def test_invalid_placements(default_hardware_db, kw, error, match) -> None:  # type: ignore[no-untyped-def]
    base = dict(model="mixtral-8x7b", hardware="workstation-4090", gpus=1)
    with pytest.raises(error, match=match):
        predict(Scenario(**{**base, **kw}), hardware_db=default_hardware_db)


def test_placement_on_a_dense_model_is_an_error(default_hardware_db) -> None:
    from dataclasses import replace

    from capsim.models.db import resolve_model
    from capsim.models.parts import FFNKind

    m = resolve_model("mixtral-8x7b")
    dense = replace(
        m, moe=None, ffn_kinds=tuple(FFNKind.DENSE for _ in range(32)), dense_intermediate_size=14336
    )
    with pytest.raises(ScenarioError, match="--placement moves routed experts"):
        predict(
            Scenario(model=dense, hardware="h100-sxm", gpus=1, placement="experts:dram"),
            hardware_db=default_hardware_db,
        )


def test_more_gpu_memory_never_slows_auto_placement(default_hardware_db, tmp_path: Path) -> None:
    from capsim.hardware.db import load_hardware_db

    text = Path(default_hardware_db.accelerator("rtx-4090").file).read_text()
    times = []
    for gb in (24, 28, 40, 64, 120):
        entry = text.replace('id = "rtx-4090"', f'id = "rtx-4090-{gb}gb"').replace(
            "memory_capacity_gb = 24", f"memory_capacity_gb = {gb}"
        )
        (tmp_path / f"rtx-4090-{gb}gb.toml").write_text(entry)
        db = load_hardware_db([tmp_path / f"rtx-4090-{gb}gb.toml"])
        sc = Scenario(
            model="mixtral-8x7b",
            hardware=f"rtx-4090-{gb}gb",
            gpus=1,
            batch=2,
            prompt_len=256,
            gen_len=24,
            placement="auto",
        )
        times.append(predict(sc, hardware_db=db).tpot_s)
    assert all(b <= a * (1 + 1e-12) for a, b in itertools.pairwise(times))
    assert times[-1] < times[0]


@pytest.mark.parametrize("factor", [1.5, 3.0])
def test_faster_ssd_never_slows_offload(default_hardware_db, monkeypatch, factor) -> None:  # type: ignore[no-untyped-def]
    from capsim.engine import offload

    sc = mixtral_4090(placement="experts:ssd", prefetch=False)
    base = predict(sc, hardware_db=default_hardware_db).tpot_s
    original = offload.ssd_read_bandwidth
    monkeypatch.setattr(offload, "ssd_read_bandwidth", lambda node: (original(node)[0] * factor, "x"))
    assert predict(sc, hardware_db=default_hardware_db).tpot_s < base


def test_auto_on_cpu_only_spills_to_the_ssd(default_hardware_db) -> None:
    """CPU-only with 16 GB of DRAM: Mixtral int4 experts (256 x 90,832,896 B = 23.3 GB) cannot all stay in
    DRAM, so auto keeps the hottest in DRAM (the device) and pages the rest from the SSD."""
    pred = predict(
        Scenario(
            model="mixtral-8x7b",
            hardware="workstation-4090",
            mode="cpu",
            weight_dtype="int4",
            placement="auto",
            host_memory_gb=16,
            gen_len=16,
        ),
        hardware_db=default_hardware_db,
    )
    tiers = pred.deployment["tiers"]
    assert "dram" not in tiers  # no host tier apart from the device's own DRAM
    assert tiers["dram (device)"]["experts"] + tiers["ssd"]["experts"] == 256
    assert 0 < tiers["ssd"]["experts"] < 256
