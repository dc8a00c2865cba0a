"""Issue 12: attention data parallelism, any EP degree, dispatch/combine, expert load balance (hand-computed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capsim import ScenarioError, predict
from capsim.engine.parallel import all_to_all_bytes, eplb_slots, imbalance
from capsim.engine.scenario import Scenario
from capsim.models.db import resolve_model
from capsim.routing import make_router

NVLINK4 = 450e9  # H100/H200 SXM NVLink 4 per direction through NVSwitch (hardware_db/links/nvlink4.toml)
NCCL_BASE, NCCL_HOP = (
    6.6e-6,
    0.6e-6,
)  # NCCL baseLat[Ring][LL], hwLat[NVLINK][Ring][LL] (hardware_db/efficiency.toml)
DSV3 = dict(
    model="deepseek-v3", hardware="h200-sxm", gpus=8, weight_dtype="fp8", prompt_len=1000, gen_len=1000
)


def test_kv_capacity_under_attention_dp_is_per_rank_capacity_times_dp(default_hardware_db) -> None:
    """DeepSeek-V3 (MLA) on 8 H200, attention-DP 8 x EP 8. Each rank keeps only its own sequences' KV: per
    sequence 61 layers x 576 latent elements (512 + 64 rope) x 2 bytes x 2000 tokens = 140,544,000 bytes (the
    whole latent, tp = 1), and the replica holds 8 x what one rank holds. Under TP 8 every rank would hold the
    same latent of every sequence (MLA is replicated on TP ranks), so the replica holds one rank's count."""
    adp = predict(
        Scenario(**DSV3, batch=20_000, attention_dp=8, ep=8), hardware_db=default_hardware_db
    ).memory
    tp8 = predict(Scenario(**DSV3, batch=20_000), hardware_db=default_hardware_db).memory
    kv_seq = 61 * 576 * 2 * 2000
    assert kv_seq == 140_544_000
    assert adp.kv_bytes_per_sequence == pytest.approx(kv_seq) == tp8.kv_bytes_per_sequence
    logits = 129_280 * 4  # fp32 logits of one resident sequence on a tp = 1 rank
    resident = min(20_000, adp.max_batch)
    fixed = adp.weights_bytes + adp.buffers_bytes - logits * math.ceil(resident / 8)
    per_rank = math.floor((adp.usable_bytes - fixed) / (kv_seq + logits))
    assert adp.max_batch == 8 * per_rank
    # the attention-side weights are whole on every rank (tp = 1), the routed experts split 8 ways either way
    g_adp, g_tp = adp.weights_bytes_by_group, tp8.weights_bytes_by_group
    assert g_adp["attention"] == pytest.approx(8 * g_tp["attention"])
    assert g_adp["routed_experts"] == pytest.approx(g_tp["routed_experts"])
    # the KV cache on a device is its rank's share of the resident sequences
    assert adp.kv_bytes == pytest.approx(kv_seq * math.ceil(resident / 8))
    # 26 GB of room per rank x 8 ranks against 42 GB on each TP rank holding every sequence: 4.6x the sequences
    assert adp.max_batch > 4 * tp8.max_batch


def test_all_to_all_bytes_per_token_per_layer() -> None:
    """EP = M = 72, one token per rank, top-8, d = 7168, bf16: 7168 x 8 x 2 x 71/72 bytes each way."""
    one_way = all_to_all_bytes(np.array([72.0]), 72, 72, 8, 7168)
    assert one_way[0] == pytest.approx(7168 * 8 * 2 * 71 / 72)
    # EP 4 over 8 devices: every expert split over 2 devices, so a token copy goes to both slices
    split = all_to_all_bytes(np.array([8.0]), 8, 4, 8, 7168)
    assert split[0] == pytest.approx(1 * 8 * 2 * 7168 * 2 * 3 / 4)


def test_dispatch_combine_time_in_predict(default_hardware_db) -> None:
    """DeepSeek-V3 on one 8 x H200 node, attention-DP 8, EP 8, NCCL, batch 64: 8 tokens per rank. One way:
    8 x 8 x 7168 x 2 x 7/8 = 802,816 bytes over NVLink (450 GB/s) + 6.6 us base + 7 x 0.6 us hops; dispatch +
    combine in each of the 58 MoE layers. tp = 1, so there is no all-reduce to take out."""
    p = predict(
        Scenario(**{**DSV3, "gen_len": 3}, batch=64, attention_dp=8, ep=8), hardware_db=default_hardware_db
    )
    one_way = 8 * 8 * 7168 * 2 * 7 / 8
    assert one_way == 802_816
    per_step = 58 * 2 * (NCCL_BASE + 7 * NCCL_HOP + one_way / NVLINK4)
    assert p.decode.time_by_op_s["all_to_all"] / p.decode.passes == pytest.approx(per_step, rel=1e-9)
    assert "allreduce" not in p.decode.time_by_op_s
    assert p.deployment["ep"] == 8 and p.deployment["attention_dp"] == 8


def test_busiest_attention_rank_sets_the_step(default_hardware_db) -> None:
    """Batch 9 over 8 attention ranks: one rank decodes ceil(9/8) = 2 sequences, as with batch 16."""
    nine = predict(
        Scenario(**{**DSV3, "gen_len": 3}, batch=9, attention_dp=8, ep=8), hardware_db=default_hardware_db
    )
    sixteen = predict(
        Scenario(**{**DSV3, "gen_len": 3}, batch=16, attention_dp=8, ep=8), hardware_db=default_hardware_db
    )
    eight = predict(
        Scenario(**{**DSV3, "gen_len": 3}, batch=8, attention_dp=8, ep=8), hardware_db=default_hardware_db
    )
    assert nine.decode.time_by_op_s["attn_core"] == pytest.approx(sixteen.decode.time_by_op_s["attn_core"])
    assert nine.decode.time_by_op_s["attn_core"] > eight.decode.time_by_op_s["attn_core"]


def test_uniform_routing_with_eplb_is_balanced_and_skew_is_not() -> None:
    """E = 256, EP 8, R = 8 redundant: 264 slots, 33 per group. Uniform π = 8/256: EPLB replicates 8 experts
    (half load each) and packs 31 whole + 2 halves per group = 32 x π, the mean: only the multinomial spread
    is left, which vanishes at a million tokens. A Zipf(1.2)-skewed router on contiguous blocks (no EPLB) puts
    the hot experts' groups far above the mean; EPLB with 8 redundant slots brings it down."""
    uniform = np.full((1, 256), 8 / 256)
    q, _ = eplb_slots(uniform[0], 8, 8)
    assert np.allclose(q.sum(axis=1), 32 * 8 / 256)
    tok, act = imbalance(uniform, 8, np.array([1e6]), redundant=8)
    assert 1.0 <= tok[0] < 1.01 and act[0] == pytest.approx(1.0)
    skew = make_router("zipf:1.2", resolve_model("deepseek-v3"), seed=0).inclusion
    plain, _ = imbalance(skew, 8, np.array([4096.0]))
    balanced, _ = imbalance(skew, 8, np.array([4096.0]), redundant=8)
    assert plain[0] > 1.3
    assert 1.0 <= balanced[0] < plain[0]


@settings(max_examples=30, deadline=None)
@given(t=st.integers(1, 100_000), ep=st.sampled_from([2, 4, 8, 16, 32]))
def test_straggler_factor_bounds(t: int, ep: int) -> None:
    """1 <= max/mean <= ep (a group can hold at most all pairs); activated experts' factor likewise."""
    uniform = np.full((1, 256), 8 / 256)
    tok, act = imbalance(uniform, ep, np.array([float(t)]))
    assert 1.0 <= tok[0] <= ep + 1e-9
    assert 1.0 <= act[0] <= ep + 1e-9


@pytest.mark.parametrize(
    "kw,match",
    [
        (
            dict(model="mixtral-8x7b", hardware="h100-sxm", gpus=6, tp=6),
            "--tp 6 does not divide the model's 32 attention heads; valid --tp: 1, 2, 4 ",
        ),
        (
            dict(model="deepseek-v3", hardware="h200-sxm", gpus=8, attention_dp=8, ep=3),
            "--ep 3 must divide both the 8 devices .* and the 256 experts; valid --ep: 1, 2, 4, 8$",
        ),
        (
            dict(model="deepseek-v3", hardware="h200-sxm", gpus=8, tp=2, attention_dp=2),
            r"--tp 2 x --attention-dp 2 x --pp 1 x --dp 1 = 4 devices, but 1 node\(s\) x 8 devices = 8",
        ),
        (
            dict(model="deepseek-v3", hardware="h200-sxm", gpus=8, attention_dp=8, redundant_experts=8),
            "--redundant-experts places extra expert replicas over EP groups; give --ep > 1",
        ),
    ],
)
def test_impossible_layouts_name_the_valid_choices(default_hardware_db, kw, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ScenarioError, match=match):
        predict(Scenario(**kw), hardware_db=default_hardware_db)


@pytest.mark.parametrize("name", ["sglang-dp-attention", "trtllm-dep", "vllm-dp-ep"])
def test_attention_dp_presets_fill_the_layout(name: str) -> None:
    """9 nodes x 8 GPUs: attention DP over all 72 devices (tp 1) and EP 72; with --tp 2 on one node: 4 x 2."""
    from capsim.engine.presets import apply_preset

    wide, _ = apply_preset(name, Scenario(model="deepseek-v3", hardware="h100-sxm", gpus=8, nodes=9))
    assert (wide.tp, wide.attention_dp, wide.ep) == (1, 72, 72)
    tp2, _ = apply_preset(name, Scenario(model="deepseek-v3", hardware="h100-sxm", gpus=8, tp=2))
    assert (tp2.tp, tp2.attention_dp, tp2.ep) == (2, 4, 8)


# ---- speculative decoding (MTP, draft models) ------------------------------------------------------------
R1_MINLAT = dict(
    model="deepseek-r1",
    hardware="h200-sxm",
    gpus=8,
    tp=8,
    ep=4,
    weight_dtype="fp8",
    batch=2,
    prompt_len=1024,
    gen_len=65,
)


def test_expected_tokens_per_verify_step() -> None:
    from capsim.engine.speculative import expected_tokens

    assert expected_tokens(0.0, 3) == 1.0  # nothing accepted: the verified token only
    assert expected_tokens(1.0, 3) == 4.0  # everything accepted: K + 1
    assert expected_tokens(0.875, 1) == pytest.approx(1.875)  # DeepSeek-V3: 85-90% second-token acceptance
    assert expected_tokens(0.5, 3) == pytest.approx(1 + 0.5 + 0.25 + 0.125)


def test_mtp_module_is_one_moe_layer_plus_projection() -> None:
    """DeepSeek-V3's MTP module: README_WEIGHTS.md (deepseek-ai/DeepSeek-V3) gives 11.5B unique parameters
    (embedding and head shared). One MoE layer (attention 187.1M, router 1.8M, 256 x 44.04M experts, shared
    44.0M) + 2 x 7168^2 projection = 11.6B."""
    from capsim.engine.speculative import mtp_module_params

    total = sum(mtp_module_params(resolve_model("deepseek-v3")).values())
    assert total == pytest.approx(11.5e9, rel=0.02)


def test_mtp_with_acceptance_zero_costs_a_module_per_draft_and_gains_nothing(default_hardware_db) -> None:
    """a = 0: every verify step yields 1 token, so there are G − 1 steps at the plain contexts P + j; each adds
    K = 2 MTP passes: one layer's share of the plain step (attention ops and all-reduces / 61 layers, MoE ops
    and all-to-all / 58 MoE layers), the lm_head, one per-layer overhead (8.7 us) and the 2 x 7168^2 fp8
    projection split over 8 ranks at 4.8 TB/s x 0.85 (memory-bound at 2 rows: 3.1 us), which as one kernel takes
    at least the class's kernel latency (15 us)."""
    plain = predict(Scenario(**R1_MINLAT), hardware_db=default_hardware_db)
    spec = predict(Scenario(**R1_MINLAT, spec="mtp:2", acceptance=0.0), hardware_db=default_hardware_db)
    assert spec.decode.passes == plain.decode.passes == 64
    ops = {k: v / plain.decode.passes for k, v in plain.decode.time_by_op_s.items()}
    layer = (ops["attn_proj"] + ops["attn_core"] + ops["allreduce"]) / 61 + (
        ops["router"] + ops["routed_experts"] + ops["shared_experts"] + ops["all_to_all"]
    ) / 58
    projection = max(2 * 7168**2 * 1 / 8 / (4800e9 * 0.85), 15.0e-6)
    module = layer + ops["lm_head"] + 8.7e-6 + projection
    assert spec.deployment["speculative"]["draft_s_per_step"] == pytest.approx(2 * module, rel=1e-6)
    assert spec.tpot_s > plain.tpot_s  # the verify step carries 3 tokens per sequence and the drafts on top
    assert spec.decode_tokens_per_s < plain.decode_tokens_per_s
    # S-MFU counts the verify step's 3 tokens per sequence
    assert spec.decode.tokens == pytest.approx(3 * plain.decode.tokens)


def test_mtp_with_acceptance_one_yields_k_plus_one_tokens_per_step(default_hardware_db) -> None:
    """a = 1, K = 3: 4 tokens per verify step, ceil(64 / 4) = 16 steps; TPOT = step / 4."""
    spec = predict(Scenario(**R1_MINLAT, spec="mtp:3", acceptance=1.0), hardware_db=default_hardware_db)
    assert spec.decode.passes == 16
    step = spec.decode.time_s / spec.decode.passes
    assert spec.tpot_s == pytest.approx(step / 4)
    assert spec.decode_tokens_per_s == pytest.approx(2 * 4 / step)
    assert spec.deployment["speculative"]["tokens_per_step"] == 4.0
    # the module's weights and its layer's KV are resident too
    assert spec.memory.weights_bytes_by_group["speculative_draft"] > 0


def test_draft_model_speculation(default_hardware_db) -> None:
    """DeepSeek-V2-Lite drafting for DeepSeek-V2 (same 102,400-token vocabulary): K passes of the draft model's
    whole decode step per verify step; its weights and KV are resident next to the target's."""
    base = dict(model="deepseek-v2", hardware="h200-sxm", gpus=8, batch=4, prompt_len=512, gen_len=33)
    spec = predict(
        Scenario(**base, spec="draft:deepseek-v2-lite:2", acceptance=0.0), hardware_db=default_hardware_db
    )
    lite = predict(Scenario(**{**base, "model": "deepseek-v2-lite"}), hardware_db=default_hardware_db)
    assert spec.deployment["speculative"]["draft_s_per_step"] == pytest.approx(2 * lite.tpot_s, rel=1e-9)
    assert spec.memory.weights_bytes_by_group["speculative_draft"] == pytest.approx(lite.memory.weights_bytes)


@pytest.mark.parametrize(
    "kw,match",
    [
        (
            dict(model="mixtral-8x7b", hardware="dgx-h100", spec="mtp:2"),
            "has no multi-token-prediction module",
        ),
        (
            dict(model="deepseek-v2", hardware="dgx-h100", spec="draft:deepseek-v2-lite:2"),
            "has no sourced default; give --acceptance",
        ),
        (dict(model="deepseek-v3", hardware="dgx-h200", spec="mtp:0"), "cannot read --spec 'mtp:0'"),
        (
            dict(model="deepseek-v3", hardware="dgx-h200", acceptance=0.5),
            "give --spec mtp:K or draft:MODEL:K",
        ),
        (
            dict(model="deepseek-v3", hardware="dgx-h200", spec="draft:mixtral-8x7b:2", acceptance=0.5),
            "needs the target's tokenizer",
        ),
    ],
)
def test_bad_speculation_is_one_line(default_hardware_db, kw, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ScenarioError, match=match):
        predict(Scenario(**kw), hardware_db=default_hardware_db)


# ---- sweeps over layouts --------------------------------------------------------------------------------
LAYOUTS = (
    "",
    "tp=1,attention_dp=8,ep=8",
    "tp=2,attention_dp=4,ep=4",
    "tp=8,ep=4,spec=mtp:3",
    "tp=1,attention_dp=8,ep=8,spec=mtp:2,acceptance=0.7",
    "tp=1,attention_dp=8,ep=8,redundant_experts=8",
    "tp=2,attention_dp=4",
    "tp=1,attention_dp=8,ep=8,two_batch_overlap=true,all_to_all=deepep",
)


@pytest.mark.parametrize(
    "model,hardware,dtype,layouts,routing",
    [
        ("deepseek-v3", "dgx-h200", "fp8", LAYOUTS, "uniform"),
        ("deepseek-v3", "dgx-h200", "fp8", LAYOUTS, "zipf:1.2"),
        (
            "qwen3-30b-a3b",
            "dgx-h100",
            "bf16",
            (
                "tp=4,dp=2",
                "tp=2,attention_dp=2,ep=4,dp=2",
                "tp=1,attention_dp=8,ep=8",
                "tp=2,attention_dp=4,ep=2,all_to_all=deepep",
            ),
            "zipf:1.2",
        ),
    ],
)
def test_sweep_over_layouts_equals_predict_row_by_row(
    default_hardware_db, model, hardware, dtype, layouts, routing
) -> None:  # type: ignore[no-untyped-def]
    """A grid mixing attention DP, EP of several degrees, EPLB, data parallelism and MTP on one 8 x H200 node:
    every row equals predict of the same scenario (batches that do and do not split over the ranks,
    single- and multi-chunk prefills, gen 1 = no decode step, gens that are not a multiple of E)."""
    from test_sweep import _assert_row_equals_prediction

    from capsim import DoesNotFitError
    from capsim.sweep import evaluate_segment, resolve_group
    from capsim.sweep.grid import Grid, parse_layout

    grid = Grid(
        models=(model,),
        hardware=(hardware,),
        gpus=(8,),
        batch=(1, 9, 300),
        prompt_len=(60, 3000),
        gen_len=(1, 2, 71),
        weight_dtype=(dtype,),
        layout=layouts,
        routing=routing,
    )
    rows = 0
    for _g, key in enumerate(grid.group_keys):
        group = resolve_group(grid, key, default_hardware_db)
        assert group.resolved is not None, group.error
        cols = evaluate_segment(grid, group, 0, grid.numeric_size)
        assert set(cols["layout"]) == {key[-1]}
        for i in range(grid.numeric_size):
            scenario = Scenario(
                model=model,
                hardware=hardware,
                gpus=8,
                weight_dtype=dtype,
                routing=routing,
                batch=int(cols["batch"][i]),
                prompt_len=int(cols["prompt_len"][i]),
                gen_len=int(cols["gen_len"][i]),
                **parse_layout(key[-1]),
            )
            try:
                pred = predict(scenario, hardware_db=default_hardware_db)
            except DoesNotFitError:
                assert not cols["feasible"][i]
                continue
            _assert_row_equals_prediction(cols, i, pred)
            assert cols["gpus"][i] == 8
            rows += 1
    assert rows == len(layouts) * 18


def test_sweep_layout_that_cannot_run_says_why(default_hardware_db) -> None:
    from capsim.sweep import evaluate_segment, resolve_group
    from capsim.sweep.grid import Grid

    grid = Grid(
        models=("deepseek-v3",), hardware=("dgx-h200",), gpus=(8,), layout=("tp=1,attention_dp=8,ep=3",)
    )
    group = resolve_group(grid, grid.group_keys[0], default_hardware_db)
    cols = evaluate_segment(grid, group, 0, 1)
    assert not cols["feasible"][0]
    assert "valid --ep: 1, 2, 4, 8" in str(cols["bottleneck"][0])
    with pytest.raises(ScenarioError, match="cannot read layout 'tp:8'"):
        Grid(models=("m",), hardware=("h",), layout=("tp:8",))


def test_ep_across_nodes_sends_the_remote_share_over_the_network(default_hardware_db) -> None:
    """DeepSeek-V3 on 2 nodes x 8 H200, attention-DP 16 x EP 16, NCCL, batch 256: 16 tokens per rank. One way
    per rank 16 x 8 x 7168 x 2 x 15/16 bytes, of which 7/15 go to the 7 other GPUs of the node over NVLink
    (450 GB/s) and 8/15 to the other node over InfiniBand NDR (50 GB/s per GPU: 8 ports per 8 GPUs of a
    DGX-class node, one per GPU with --network); the slower path sets the time, + 6.6 us + 15 x 0.6 us."""
    p = predict(
        Scenario(**{**DSV3, "gen_len": 3}, batch=256, nodes=2, attention_dp=16, ep=16, network="ib-ndr"),
        hardware_db=default_hardware_db,
    )
    one_way = 16 * 8 * 7168 * 2 * 15 / 16
    per_way = NCCL_BASE + 15 * NCCL_HOP + max(one_way * 7 / 15 / NVLINK4, one_way * 8 / 15 / 50e9)
    assert p.decode.time_by_op_s["all_to_all"] / p.decode.passes == pytest.approx(58 * 2 * per_way, rel=1e-9)
    assert p.scenario["gpus"] == 16
    efa = predict(
        Scenario(**{**DSV3, "gen_len": 3}, batch=256, nodes=2, attention_dp=16, ep=16, network="efa-v2"),
        hardware_db=default_hardware_db,
    )
    # EFA v2 on p5: 3,200 Gb/s per 8 GPUs = 50 GB/s per GPU, the same per-GPU rate as one NDR port per GPU
    assert efa.decode.time_by_op_s["all_to_all"] == pytest.approx(p.decode.time_by_op_s["all_to_all"])


def test_two_batch_overlap_hides_the_smaller_of_compute_and_communication(default_hardware_db) -> None:
    """Batch 128 as two micro-batches of 64: with one micro-batch's step split into dispatch/combine c, the
    per-step overhead o and the rest r, a step is 2 · max(r, c) + o (each micro-batch reads the weights
    again; the overhead is paid once), and S-MFU counts the two micro-batches' tokens."""
    kw = dict(**{**DSV3, "gen_len": 5}, attention_dp=8, ep=8)
    half = predict(Scenario(**kw, batch=64), hardware_db=default_hardware_db)
    tbo = predict(Scenario(**kw, batch=128, two_batch_overlap=True), hardware_db=default_hardware_db)
    plain = predict(Scenario(**kw, batch=128), hardware_db=default_hardware_db)
    n = half.decode.passes
    c = half.decode.time_by_op_s["all_to_all"] / n
    o = half.decode.time_by_op_s["overhead"] / n
    r = half.decode.time_s / n - c - o
    assert tbo.decode.time_s / tbo.decode.passes == pytest.approx(2 * max(r, c) + o, rel=1e-9)
    assert tbo.decode.time_by_op_s["all_to_all"] / n == pytest.approx(2 * max(c - r, 0.0), abs=1e-15)
    assert tbo.decode.tokens == pytest.approx(plain.decode.tokens)
    assert tbo.deployment["two_batch_overlap"] is True
    with pytest.raises(ScenarioError, match="give --ep > 1 or --attention-dp > 1"):
        predict(Scenario(**DSV3, batch=8, two_batch_overlap=True), hardware_db=default_hardware_db)


def test_mtp_default_tokens_per_step_are_trtllm_measurements() -> None:
    """Without --acceptance, MTP's tokens per verify step are TensorRT-LLM's measured DeepSeek-R1 figures
    (blog1 'Autoregressive MTP Layers' table: 1.92, 2.58, 2.82, 2.99, 3.01 for K = 1-5; K > 5 as K = 5), not
    the constant-a series (0.875 at every position would give 1 + 0.875 + 0.766 + 0.670 = 3.31 at K = 3)."""
    from capsim.engine.speculative import parse_spec

    assert parse_spec("mtp:1", None).tokens_per_step == 1.92
    assert parse_spec("mtp:3", None).tokens_per_step == 2.82
    assert parse_spec("mtp:8", None).tokens_per_step == 3.01
    assert parse_spec("mtp:3", None).acceptance == pytest.approx(0.92)  # the first draft's, reported
    # an explicit acceptance keeps the series
    assert parse_spec("mtp:3", 0.875).tokens_per_step == pytest.approx(1 + 0.875 + 0.875**2 + 0.875**3)
