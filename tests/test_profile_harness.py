"""The PyTorch harness: model correctness (KV cache, MLA absorption, windows), routing traces that round-trip
and match what the router chose, and an end-to-end profile run. Models here have invented tiny shapes
(labelled as such), so the whole file runs in seconds on 2 cores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from capsim.errors import ScenarioError, UnsupportedModelError
from capsim.models.parts import AttentionSpec, FFNKind, MoESpec
from capsim.models.spec import ModelSpec
from capsim.routing.traces import load_trace

torch = pytest.importorskip("torch")

from capsim.profile.harness import (
    ProfileCase,
    ProfilePlan,
    _token_batches,
    grid,
    load_run,
    quick_plan,
    run_profile,
)
from capsim.profile.moe_torch import MoEBlock, MoEDecoder

INVENTED = "invented tiny shapes for capsim tests; not a published model"


def tiny_spec(
    attention: AttentionSpec | None = None,
    kinds: tuple[FFNKind, ...] = (FFNKind.MOE, FFNKind.MOE),
    moe: MoESpec | None = None,
    windows: tuple[int | None, ...] = (),
    dense: int = 0,
) -> ModelSpec:
    return ModelSpec(
        id="tiny-test",
        name="tiny test model",
        family="test",
        source=INVENTED,
        hidden_size=32,
        num_layers=len(kinds),
        vocab_size=50,
        attention=attention or AttentionSpec(kind="gqa", num_heads=4, num_kv_heads=2, head_dim=8),
        ffn_kinds=kinds,
        moe=moe or MoESpec(num_experts=8, top_k=2, expert_intermediate_size=16),
        layer_windows=windows,
        dense_intermediate_size=dense,
    )


MLA = AttentionSpec(
    kind="mla",
    num_heads=4,
    num_kv_heads=4,
    head_dim=12,
    kv_lora_rank=16,
    qk_nope_head_dim=8,
    qk_rope_head_dim=4,
    v_head_dim=8,
)
VARIANTS = {
    # Qwen3-style GQA with per-head QK-norm
    "gqa-qknorm-per-head": tiny_spec(
        AttentionSpec(kind="gqa", num_heads=4, num_kv_heads=2, head_dim=8, qk_norm=True, qk_norm_width=8)
    ),
    # OLMoE-style MHA with QK-norm over the full q/k width
    "mha-qknorm-full": tiny_spec(
        AttentionSpec(kind="gqa", num_heads=4, num_kv_heads=4, head_dim=8, qk_norm=True, qk_norm_width=32)
    ),
    # a sliding window of 4 tokens on the first layer (GPT-OSS-style alternation)
    "sliding-window": tiny_spec(windows=(4, None)),
    # DeepSeek-V2-Lite-style: MLA, leading dense layer, shared experts
    "mla-dense-first-shared": tiny_spec(
        MLA,
        kinds=(FFNKind.DENSE, FFNKind.MOE),
        moe=MoESpec(
            num_experts=8,
            top_k=2,
            expert_intermediate_size=16,
            num_shared_experts=2,
            shared_intermediate_size=32,
        ),
        dense=48,
    ),
    # DeepSeek-V3-style: MLA with a q low-rank path, sigmoid router with correction bias, group-limited
    "mla-qlora-group-router": tiny_spec(
        AttentionSpec(
            kind="mla",
            num_heads=4,
            num_kv_heads=4,
            head_dim=12,
            q_lora_rank=24,
            kv_lora_rank=16,
            qk_nope_head_dim=8,
            qk_rope_head_dim=4,
            v_head_dim=8,
        ),
        moe=MoESpec(
            num_experts=8,
            top_k=2,
            expert_intermediate_size=16,
            score_correction_bias=True,
            n_group=4,
            topk_group=2,
        ),
    ),
    # Qwen1.5-MoE-style: qkv bias, gated shared expert
    "qkv-bias-gated-shared": tiny_spec(
        AttentionSpec(kind="gqa", num_heads=4, num_kv_heads=4, head_dim=8, qkv_bias=True),
        moe=MoESpec(
            num_experts=8,
            top_k=2,
            expert_intermediate_size=16,
            num_shared_experts=1,
            shared_intermediate_size=32,
            shared_expert_gate=True,
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_decode_with_cache_equals_full_prefill(name: str) -> None:
    """Logits of token 10 computed by a prefill of all 10 tokens must equal those of a prefill of 9 tokens
    followed by one cached decode step: this checks the KV cache, RoPE positions, windows and, for MLA, that
    the weight-absorbed decode computes the same attention as the decompressed prefill."""
    torch.manual_seed(0)
    model = MoEDecoder(VARIANTS[name], 16, torch.device("cpu"), torch.float64)
    model.allocate_cache(2)
    ids = torch.randint(0, 50, (2, 10))
    full = model.logits(ids, 0)
    model.logits(ids[:, :9], 0)
    decoded = model.logits(ids[:, 9:], 9)
    # float64 rounding differs between the two orders of summation by up to ~1e-11 on some CPUs' kernels
    # (seen: 1.2e-11 on logits of magnitude 0.28 for the group-limited MLA variant); a wrong cache, position
    # or absorption gives differences of order 1e-2
    assert torch.allclose(full, decoded, rtol=0, atol=1e-10)
    assert full.abs().max() > 1e-3  # not trivially zero


def test_recorded_routing_is_what_the_router_chose() -> None:
    torch.manual_seed(1)
    model = MoEDecoder(tiny_spec(), 16, torch.device("cpu"), torch.float32)
    model.allocate_cache(3)
    inputs: list[torch.Tensor] = []
    for block in model.modules():
        if isinstance(block, MoEBlock):
            block.register_forward_pre_hook(lambda mod, args: inputs.append(args[0].reshape(-1, 32).clone()))
    ids = torch.randint(0, 50, (3, 1))
    model.recorder.active = True
    model.step(ids, 5)
    topk, gates = model.recorder.stacked()
    assert topk.shape == (2, 3, 2) and gates.shape == (2, 3, 2)  # (MoE layers, tokens, k)
    blocks = [b for b in model.modules() if isinstance(b, MoEBlock)]
    for layer, (block, x) in enumerate(zip(blocks, inputs)):
        probs = torch.softmax(x @ block.w_router.T, dim=-1)
        expect_gates, expect_ids = probs.topk(2, dim=-1)
        np.testing.assert_array_equal(topk[layer], expect_ids.numpy())
        np.testing.assert_allclose(gates[layer], expect_gates.numpy(), rtol=1e-6)


def test_unsupported_attention_is_refused_clearly() -> None:
    sinks = tiny_spec(AttentionSpec(kind="gqa", num_heads=4, num_kv_heads=2, head_dim=8, sinks=True))
    with pytest.raises(UnsupportedModelError, match="attention sinks"):
        MoEDecoder(sinks, 8, torch.device("cpu"), torch.float32)


CASES = (ProfileCase("decode", 2, 8), ProfileCase("decode", 3, 12), ProfileCase("prefill", 2, 6))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One harness run on the invented tiny model (3 cases, 3 repetitions). Read-only: do not mutate."""
    plan = ProfilePlan(
        model="tiny-test",
        cases=CASES,
        num_layers=2,
        dtype="fp32",
        device="cpu",
        repetitions=3,
        seed=7,
        threads=1,
    )
    out = tmp_path_factory.mktemp("profile")
    return run_profile(plan, out, command="pytest", spec=tiny_spec()), plan


def test_profile_run_times_every_case(tiny_run) -> None:  # type: ignore[no-untyped-def]
    run, _ = tiny_run
    assert [c.case for c in run.cases] == list(CASES)
    for result in run.cases:
        assert len(result.timing.samples_s) == 3
        assert all(s > 0 for s in result.timing.samples_s)
    assert run.num_layers == 2 and run.dtype == "fp32" and run.command == "pytest"
    assert run.machine["device_type"] == "cpu" and run.machine["torch_threads"] == 1


def test_profile_results_round_trip(tiny_run) -> None:  # type: ignore[no-untyped-def]
    run, _ = tiny_run
    assert run.path is not None and run.path.name == "profile.json"
    again = load_run(run.path)
    assert again.to_dict() == run.to_dict()
    assert json.loads(run.path.read_text())["format"] == "capsim-profile"


def test_traces_round_trip_with_the_tokens_that_were_timed(tiny_run) -> None:  # type: ignore[no-untyped-def]
    run, _ = tiny_run
    for result in run.cases:
        trace = load_trace(run.trace_path(result))
        steps = 3 if result.case.phase == "decode" else 1  # decode cycles 3 token batches, prefill one prompt
        assert trace.topk_ids.shape == (2, steps * result.case.tokens, 2)
        assert trace.gate_weights is not None and trace.gate_weights.shape == trace.topk_ids.shape
        assert trace.num_experts == 8 and trace.top_k == 2 and trace.model_id == "tiny-test-2L"
        assert trace.metadata["case"] == result.case.name
        # the per-layer mean of distinct experts per step, recomputed from the file
        per_step = trace.topk_ids.reshape(2, steps, result.case.tokens * 2)
        distinct = [[len(np.unique(per_step[layer, s])) for s in range(steps)] for layer in range(2)]
        assert result.activated_experts == pytest.approx([np.mean(d) for d in distinct])


def test_trace_matches_a_replay_of_the_router(tiny_run) -> None:  # type: ignore[no-untyped-def]
    """Rebuild the model exactly as run_profile did (same seed), replay the first decode batch with hooks on
    the MoE blocks, and compare the router's top-k with the first step in the recorded trace."""
    run, plan = tiny_run
    first = run.cases[0]
    torch.manual_seed(plan.seed)
    model = MoEDecoder(_scaled(), plan.max_context, torch.device("cpu"), torch.float32)
    model.allocate_cache(plan.max_batch)
    inputs: list[torch.Tensor] = []
    for block in model.modules():
        if isinstance(block, MoEBlock):
            block.register_forward_pre_hook(lambda mod, args: inputs.append(args[0].reshape(-1, 32).clone()))
    batch = _token_batches(
        torch, first.case, 50, 3, plan.seed + first.case.batch + first.case.context, torch.device("cpu")
    )[0]
    model.step(batch, first.case.context - 1)
    trace = load_trace(run.trace_path(first))
    blocks = [b for b in model.modules() if isinstance(b, MoEBlock)]
    for layer, (block, x) in enumerate(zip(blocks, inputs)):
        chosen = torch.softmax(x @ block.w_router.T, dim=-1).topk(2, dim=-1).indices.numpy()
        np.testing.assert_array_equal(trace.topk_ids[layer, : first.case.batch], chosen)


def _scaled() -> ModelSpec:
    from capsim.profile.scaling import truncate_layers

    return truncate_layers(tiny_spec(), 2, "fp32")


def test_plans_are_valid_and_quick_is_small() -> None:
    plan = quick_plan()
    plan.validate()
    assert plan.max_layers == 2 and plan.threads == 1
    assert {c.phase for c in plan.cases} == {"decode", "prefill"}
    assert grid((1,), (8,), ((1, 4),)) == (ProfileCase("decode", 1, 8), ProfileCase("prefill", 1, 4))
    with pytest.raises(ScenarioError, match="context must be >= 2"):
        ProfilePlan(model="x", cases=(ProfileCase("decode", 1, 1),)).validate()


def test_profiling_writes_nothing_outside_its_folder(tiny_run) -> None:  # type: ignore[no-untyped-def]
    run, _ = tiny_run
    folder = Path(str(run.path)).parent
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert names == ["profile.json"] + [f"traces/{c.name}.npz" for c in sorted(CASES, key=lambda c: c.name)]
