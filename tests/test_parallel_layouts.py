"""Pipeline and data parallelism, multi-node layouts, and every invalid layout's error."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capsim import MissingValueError, ScenarioError, predict
from capsim.engine.layout import Layout, layout_for
from capsim.engine.scenario import Scenario
from capsim.errors import UnknownHardwareError

NVLINK4 = 450e9  # H100 SXM NVLink 4 per direction through NVSwitch (hardware.md)
NCCL_BASE = 6.6e-6  # NCCL baseLat[Ring][LL] (hardware_db/efficiency.toml)
BASE = dict(model="mixtral-8x7b", hardware="dgx-h100", prompt_len=512, gen_len=16)


def test_pipeline_tpot_is_every_stage_plus_hops(default_hardware_db) -> None:
    """tp 4 x pp 2 on a DGX H100, batch 16: m = min(16, 2) = 2 micro-batches of 8. Each stage holds
    ceil(32/2) = 16 of 32 layers, so one stage takes half of the whole model's step at 8 sequences on 4
    GPUs; a token passes both stages: TPOT = 2 x 16/32 x t(4 GPUs, batch 8) + one hop of
    8 x 4096 x 2 / 4 = 16,384 bytes per rank over NVLink (450 GB/s) + 6.6 us."""
    pp = predict(Scenario(**BASE, batch=16, tp=4, pp=2), hardware_db=default_hardware_db)
    ref = predict(Scenario(**BASE, batch=8, gpus=4), hardware_db=default_hardware_db)
    hop = NCCL_BASE + 8 * 4096 * 2 / 4 / NVLINK4
    assert 8 * 4096 * 2 / 4 == 16_384
    assert pp.tpot_s == pytest.approx(2 * 16 / 32 * ref.tpot_s + hop, rel=1e-9)
    assert pp.decode_tokens_per_s == pytest.approx(16 / pp.tpot_s)
    assert pp.deployment["micro_batches"] == 2
    # each stage reads its weights once per micro-batch: S-MBU over the 8 devices of the replica equals the
    # reference's over 4 devices scaled by (time 4 GPUs) / (time 8 GPUs) ... checked through bytes: 2 x ref
    assert pp.decode.s_mbu * 8 * pp.decode.time_s == pytest.approx(
        2 * ref.decode.s_mbu * 4 * ref.decode.time_s, rel=1e-9
    )


def test_pipeline_memory_holds_half_the_layers(default_hardware_db) -> None:
    """Mixtral bf16 weights: per layer groups 46.4e9 params... checked against the tp-only plan: a stage of 16
    of 32 layers keeps half of every layer group and the heavier end (embeddings = lm_head = 32000 x 4096)."""
    one = predict(Scenario(**BASE, batch=1, gpus=4), hardware_db=default_hardware_db).memory
    two = predict(Scenario(**BASE, batch=1, tp=4, pp=2), hardware_db=default_hardware_db).memory
    g1, g2 = one.weights_bytes_by_group, two.weights_bytes_by_group
    for group in ("attention", "routed_experts", "router", "norms"):
        assert g2[group] == pytest.approx(g1[group] / 2)
    assert g2["embeddings"] == pytest.approx(g1["embeddings"]) and g2["lm_head"] == 0.0
    assert two.kv_bytes_per_sequence == pytest.approx(one.kv_bytes_per_sequence / 2)
    assert two.devices == 8


def test_data_parallel_replicas_split_the_batch(default_hardware_db) -> None:
    dp = predict(Scenario(**BASE, batch=16, tp=4, dp=2), hardware_db=default_hardware_db)
    ref = predict(Scenario(**BASE, batch=8, gpus=4), hardware_db=default_hardware_db)
    assert dp.tpot_s == pytest.approx(ref.tpot_s, rel=1e-12)
    assert dp.decode_tokens_per_s == pytest.approx(2 * 8 / ref.tpot_s)
    assert dp.scenario["batch"] == 16 and dp.scenario["gpus"] == 8


def test_multi_node_pipeline_crosses_the_network(default_hardware_db) -> None:
    """Two DGX H100 nodes, tp 8 x pp 2: the one stage boundary crosses nodes over InfiniBand NDR, 8 ports of
    50 GB/s for 8 GPUs = 50 GB/s per GPU; batch 2 -> micro-batches of 1 token: 4096 x 2 / 8 = 1,024 bytes."""
    two = predict(Scenario(**BASE, batch=2, tp=8, pp=2, nodes=2), hardware_db=default_hardware_db)
    ref = predict(Scenario(**BASE, batch=1), hardware_db=default_hardware_db)
    hop = NCCL_BASE + 1024 / 50e9
    assert two.tpot_s == pytest.approx(2 * 16 / 32 * ref.tpot_s + hop, rel=1e-9)
    assert two.deployment["layout"]["nodes"] == 2


def test_inter_node_hops_follow_the_layout() -> None:
    # TP innermost, then stages: 4 stages of tp 2 on nodes of 4 devices -> stages 0,1 on node 0, 2,3 on node 1
    assert Layout(tp=2, pp=4, dp=1, nodes=2, devices_per_node=4).inter_node_hops() == 1
    assert Layout(tp=4, pp=4, dp=1, nodes=4, devices_per_node=4).inter_node_hops() == 3
    assert Layout(tp=4, pp=1, dp=4, nodes=4, devices_per_node=4).inter_node_hops() == 0


@settings(max_examples=40, deadline=None)
@given(
    tp=st.sampled_from([1, 2, 4, 8]),
    pp=st.integers(1, 8),
    dp=st.integers(1, 4),
    nodes=st.integers(1, 4),
    per_node=st.sampled_from([1, 2, 4, 8]),
)
def test_valid_layouts_multiply_out(tp: int, pp: int, dp: int, nodes: int, per_node: int) -> None:
    try:
        layout = layout_for(tp, pp, dp, 1, nodes, per_node, 32)
    except ScenarioError:
        assert tp * pp * dp != nodes * per_node or tp > per_node or per_node % tp
        return
    assert layout.devices == nodes * per_node
    assert 0 <= layout.inter_node_hops() <= min(pp - 1, nodes - 1)


@pytest.mark.parametrize(
    "kw,error,match",
    [
        (
            dict(tp=3),
            ScenarioError,
            r"--tp 3 x --pp 1 x --dp 1 = 3 devices, but 1 node\(s\) x 8 devices = 8; use --gpus 3",
        ),
        (dict(tp=16, nodes=2), ScenarioError, "tensor parallelism across nodes is not modelled"),
        (dict(pp=3), ScenarioError, r"--pp 3 x --dp 1 does not divide the 8 devices"),
        (dict(pp=64, gpus=8, tp=1, dp=1, nodes=8), ScenarioError, "exceeds the model's 32 layers"),
        (dict(tp=4, pp=3, gpus=6, nodes=2), ScenarioError, "--tp 4 does not divide the 6 devices of a node"),
        (dict(pp=0), ScenarioError, "pp must be an integer >= 1"),
        (dict(dp=-1), ScenarioError, "dp must be an integer >= 1"),
        (
            dict(tp=4, dp=2, ep=8),
            ScenarioError,
            r"--ep 8 must divide both the 4 devices the MoE layers run on \(tp x attention-dp\) and the 8 experts; "
            "valid --ep: 1, 2, 4",
        ),
        (
            dict(tp=2, attention_dp=3),
            ScenarioError,
            r"--tp 2 x --attention-dp 3 x --pp 1 x --dp 1 = 6 devices, but 1 node\(s\) x 8 devices = 8",
        ),
        (
            dict(attention_dp=3),
            ScenarioError,
            r"--pp 1 x --dp 1 x --attention-dp 3 does not divide the 8 devices",
        ),
        (
            dict(tp=4, dp=2, mode="offload"),
            ScenarioError,
            "--pp/--dp with experts off the GPU is not modelled",
        ),
        (
            dict(hardware="h100-sxm", gpus=2, nodes=2),
            ScenarioError,
            "e.g. --pp 2 .stages across nodes., --dp 2 .replicas. or --attention-dp 2",
        ),
        (dict(hardware="h100-sxm", gpus=2, nodes=2, pp=2), MissingValueError, "pass --network LINK"),
        (
            dict(hardware="epyc-9654-2s", host_memory_gb=768, dp=2),
            ScenarioError,
            "CPU-only execution runs on one node",
        ),
        (dict(tp=8, pp=2, nodes=2, network="ib-ndx"), UnknownHardwareError, "did you mean .ib-ndr."),
    ],
)
def test_invalid_layouts_name_the_fix(default_hardware_db, kw, error, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=match):
        predict(Scenario(**{**BASE, "batch": 4, **kw}), hardware_db=default_hardware_db)


def test_more_pipeline_micro_batches_raise_throughput(default_hardware_db) -> None:
    few = predict(Scenario(**BASE, batch=1, tp=4, pp=2), hardware_db=default_hardware_db)
    many = predict(replace(Scenario(**BASE, batch=1, tp=4, pp=2), batch=8), hardware_db=default_hardware_db)
    assert few.deployment["micro_batches"] == 1 and many.deployment["micro_batches"] == 2
    assert many.decode_tokens_per_s > few.decode_tokens_per_s
