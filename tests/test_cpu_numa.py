"""CPU execution: NUMA modes over sockets, --threads, W8A8 on AMX, the per-CPU sustained bandwidth and the fitted
kernel fraction (capsim.engine.deployment, capsim.engine.offload, hardware_db/efficiency.toml [cpu]).

Hand arithmetic uses the shipped entries: xeon-6980p has 12 channels per socket; MRDIMM-8800 moves 70.4 GB/s
per channel (8800 MT/s x 8 B), so one socket peaks at 844.8 GB/s; its socket link is 6 UPI links x 24 GT/s x
2 B = 288 GB/s per direction.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capsim import Scenario, load_hardware_db, predict
from capsim.engine.deployment import Deployment, cpu_rates, socket_allreduce_time
from capsim.errors import MissingValueError, ScenarioError
from capsim.hardware.db import load_hardware_db_with

SYSTEM = {
    "schema": 1,
    "id": "test-2x6980p",
    "kind": "system",
    "name": "2x Xeon 6980P (test)",
    "source": "test system built from the shipped xeon-6980p and mrdimm-8800 entries",
    "cpus": {"id": "xeon-6980p", "count": 2},
    "dram": {"kind": "mrdimm-8800", "channels": 24, "capacity_gb": 1536},
    "fabric": "none",
}


@pytest.fixture(scope="module")
def db():  # type: ignore[no-untyped-def]
    """The shipped database plus the test system (read-only: do not mutate)."""
    return load_hardware_db_with(load_hardware_db(), [SYSTEM])


@pytest.mark.parametrize(
    ("numa", "gb_s", "sockets"),
    [
        ("single", 844.8, 1),  # one socket: 12 x 70.4
        ("replicate", 2 * 844.8, 2),  # a copy per socket, each read locally
        ("tp", 2 * 844.8, 2),  # a shard per socket, each read locally
        ("interleave", 2 * 576.0, 2),  # half of every socket's reads cross the link: min(844.8, 288 x 2/1)
    ],
)
def test_numa_bandwidth(db, numa: str, gb_s: float, sockets: int) -> None:  # type: ignore[no-untyped-def]
    bandwidth, peaks, used, _ = cpu_rates(db.node("test-2x6980p"), Deployment(mode="cpu", numa=numa))
    assert bandwidth == pytest.approx(gb_s * 1e9)
    assert used == sockets
    assert peaks["int8"] == pytest.approx(sockets * 524.288e12)  # AMX-INT8 peak of one socket x sockets


def test_threads_scale_compute_not_bandwidth(db) -> None:  # type: ignore[no-untyped-def]
    node = db.node("test-2x6980p")
    full = cpu_rates(node, Deployment(mode="cpu", numa="replicate"))
    half = cpu_rates(node, Deployment(mode="cpu", numa="replicate", threads=128))  # 128 of 256 cores
    assert half[1]["bf16"] == pytest.approx(full[1]["bf16"] / 2)
    assert half[0] == full[0]
    capped = cpu_rates(node, Deployment(mode="cpu", numa="single", threads=1000))  # more threads than cores
    assert capped[1]["bf16"] == pytest.approx(262.144e12)


def test_socket_allreduce_time_by_hand(db) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    node = db.node("test-2x6980p")
    t = socket_allreduce_time(node, Deployment(mode="cpu", numa="tp"), np.array([1.0]), 7168, 6.6e-6)
    # one token x 7168 x 2 bytes, half of it crosses: 7168 B / 288 GB/s = 24.9 ns, plus the 6.6 us latency
    assert t[0] == pytest.approx(6.6e-6 + 7168 / 288e9)
    assert (
        socket_allreduce_time(node, Deployment(mode="cpu", numa="replicate"), np.array([1.0]), 7168, 6.6e-6)[
            0
        ]
        == 0
    )


def test_interleave_needs_the_socket_link() -> None:
    node = load_hardware_db().node("epyc-9654-2s")
    assert cpu_rates(node, Deployment(mode="cpu", numa="interleave"))[0] > 0  # epyc-9654 lists its xGMI links
    sys_9965 = {
        **SYSTEM,
        "id": "test-2x9965",
        "cpus": {"id": "epyc-9965", "count": 2},
        "dram": {"kind": "ddr5-6400", "channels": 24},
    }
    node = load_hardware_db_with(load_hardware_db(), [sys_9965]).node("test-2x9965")
    with pytest.raises(MissingValueError, match="socket_link_gb_s_per_dir"):
        cpu_rates(node, Deployment(mode="cpu", numa="interleave"))


def test_bad_threads_is_one_error_line() -> None:
    with pytest.raises(ScenarioError, match="--threads must be an integer >= 1"):
        Deployment(threads=0).validate()


BASE = Scenario(
    model="deepseek-r1",
    hardware="test-2x6980p",
    mode="cpu",
    weight_dtype="w8a8",
    batch=1,
    prompt_len=64,
    gen_len=8,
)


@settings(max_examples=8, deadline=None)
@given(st.sampled_from([("single", "replicate"), ("interleave", "replicate"), ("single", "interleave")]))
def test_more_bandwidth_is_never_slower(db, pair: tuple[str, str]) -> None:  # type: ignore[no-untyped-def]
    slow, fast = (predict(replace(BASE, numa=n), hardware_db=db).tpot_s for n in pair)
    assert fast <= slow


def test_w8a8_prefill_runs_at_the_amx_int8_rate(db) -> None:  # type: ignore[no-untyped-def]
    w8a8 = predict(replace(BASE, prompt_len=2048, numa="replicate"), hardware_db=db)
    w8a16 = predict(replace(BASE, prompt_len=2048, numa="replicate", weight_dtype="int8"), hardware_db=db)
    assert w8a8.to_dict()["assumptions"]["compute_precision"]["routed_experts"] == "int8"
    assert w8a8.ttft_s < w8a16.ttft_s  # AMX-INT8 peak is twice AMX-BF16


def test_cpu_sustained_bandwidth_and_kernel_fraction_are_sourced() -> None:
    db = load_hardware_db()
    eff = db.efficiency_for(db.cpu("xeon-6980p"))
    assert eff.memory_bw_fraction == 0.85  # lmsys blog: 85 % = 1.45 TB/s on this CPU
    assert "lmsys" in eff.provenance["memory_bw_fraction"].source
    cpu_class = db.efficiency("cpu")
    assert cpu_class.kernel_bw_fraction == 0.41
    assert "fitted" in cpu_class.provenance["kernel_bw_fraction"].source
    # geometric mean of the four fitted cases' fractions, as docs/validation.md shows
    assert pytest.approx(0.41, abs=0.005) == (0.388 * 0.409 * 0.381 * 0.486) ** 0.25
    assert db.efficiency("datacenter-gpu").kernel_bw_fraction == 1.0  # absent: no effect


def test_cpu_decode_time_by_hand(db) -> None:  # type: ignore[no-untyped-def]
    """Decode on one socket is bandwidth bound: the weights read per step / (844.8 GB/s x 0.85 x 0.41)."""
    p = predict(replace(BASE, numa="single"), hardware_db=db)
    d = p.to_dict()["decode"]
    memory_s = d["time_by_resource_s"]["memory"] / d["passes"]
    rate = 844.8e9 * 0.85 * 0.41
    bytes_per_step = memory_s * rate
    # DeepSeek-R1 at batch 1 reads about 37 B active parameters at 1 byte (w8a8) plus the lm_head (bf16)
    assert 36e9 < bytes_per_step < 42e9
