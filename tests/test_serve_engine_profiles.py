"""``capsim serve --engine``: the engine profile (capsim/engine/engines.toml) reaches every step cost of the
serving simulation, on the single-run, curve and fleet paths; ``--system`` implies its engine's profile unless
``--engine`` names one; eager profiles (host dispatch per MoE layer and per expert) work in serving.

Profile values used in the hand arithmetic (capsim/engine/engines.toml): vllm-0.7 and sglang kernel_latency_s
26.25 µs, tensorrt-llm 5.25 µs; transformers moe_host_s 0.78 ms, expert_host_s 0.275 ms. Kernels per forward
pass (capsim.engine.roofline.BLOCK_KERNELS): a GQA layer's attention block 6, a MoE block without shared
experts 2 (router) + 5 (routed experts), the lm_head 1.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from capsim.cli import app
from capsim.engine.passes import mixed_passes
from capsim.engine.scenario import Scenario
from capsim.errors import ScenarioError
from capsim.hardware.db import load_hardware_db
from capsim.serving import SchedulerConfig, build_replica
from capsim.serving.api import ServeRequest, engine_for
from capsim.serving.stepcost import StepCost

runner = CliRunner()
SCHED = SchedulerConfig(max_num_seqs=64, max_batched_tokens=512)
# Qwen3-30B-A3B: 48 GQA layers, every one MoE (128 experts, top-8, expert width 768, no shared expert), d 2048.
QWEN_KERNELS = 48 * 6 + 48 * (2 + 5) + 1  # = 625
# Mixtral-8x7B: 32 MoE layers, top-2
MIXTRAL_HOST_S = 32 * (0.78e-3 + 2 * 0.275e-3)  # = 42.56 ms of host dispatch per one-token step


def _qwen_cost(engine: str | None) -> StepCost:
    return build_replica(
        Scenario(model="qwen3-30b-a3b", hardware="h100-sxm", gpus=2, engine=engine), SCHED
    ).cost


def test_one_step_differs_by_kernels_times_latency() -> None:
    """A one-token prompt chunk (no token emitted, no attention pairs) on 2x H100 is latency-bound: every weight
    GEMM block of Qwen3-30B-A3B moves a few MB per device (attention 38 MB / 2, the 8 routed experts
    8·3·2048·768·2 B = 75 MB / 2 per layer: ~6-12 µs at 3.35 TB/s), below its floor of kernels x 5.25 µs
    (>= 6 x 5.25 = 31.5 µs per layer block). So the step's time moves by exactly kernels x Δlatency."""
    trt, v07, sgl = (_qwen_cost(e) for e in ("tensorrt-llm", "vllm-0.7", "sglang"))
    t = {k: c.time(1, 1, 0, 0.0, 0.0) for k, c in (("trt", trt), ("v07", v07), ("sgl", sgl))}
    assert QWEN_KERNELS == 625
    # 625 kernels x (26.25 − 5.25) µs = 13.125 ms
    assert t["v07"] - t["trt"] == pytest.approx(625 * 21.0e-6, rel=1e-9)
    assert t["v07"] - t["trt"] == pytest.approx(13.125e-3, rel=1e-9)
    assert t["sgl"] == pytest.approx(t["v07"], rel=1e-12)  # same fitted latency


def test_eager_profile_works_in_serving_and_is_host_bound() -> None:
    """Was: ``StepCost.check()`` refused eager profiles (the host term max(host, device) had been folded into
    the per-token table as if it added). A one-token step of Mixtral on 2x H100 reads ~26 GB / 2 devices
    (~4 ms), far below the host's 32 MoE layers x (0.78 + 2 x 0.275) ms = 42.56 ms, so the step is the host
    dispatch plus the step overhead."""
    rep = build_replica(
        Scenario(model="mixtral-8x7b", hardware="h100-sxm", gpus=2, engine="transformers"), SCHED
    )
    cost = rep.cost
    assert cost.check(samples=64, seed=7) < 1e-9
    overhead = rep.rs.rates.step_overhead_s
    assert cost.time(1, 1, 1, 0.0, 500.0) == pytest.approx(MIXTRAL_HOST_S + overhead, rel=1e-12)
    assert pytest.approx(42.56e-3, rel=1e-12) == MIXTRAL_HOST_S


@pytest.mark.parametrize("routing", ["temporal:0.5", "zipf:1.2,reuse=0.3"])
def test_eager_profile_with_sequence_dependent_routers(routing: str) -> None:
    """Routers whose activated experts depend on how many sequences the tokens come from change the host term
    as well; the step model still equals the engine (the check runs on random (T, S) steps)."""
    rep = build_replica(
        Scenario(model="mixtral-8x7b", hardware="h100-sxm", gpus=2, engine="moe-infinity", routing=routing),
        SCHED,
    )
    assert rep.cost.sequence_dependent
    assert rep.cost.check(samples=64, seed=3) < 1e-9


def _serve_json(*args: str) -> dict[str, Any]:
    result = runner.invoke(app, ["serve", "--hardware", "h100-sxm", "--gpus", "2", *args, "--json"])
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


ONE_REQUEST = ["--num-prompts", "1", "--offline", "--prompt-len", "100", "--output-len", "20"]


def test_cli_engine_reaches_the_step_cost() -> None:
    """One request alone: every decode step is one token. Between vllm-0.7 and tensorrt-llm only the kernel
    latency differs; the lm_head (151,936 x 2048 x 2 B / 2 devices = 311 MB, ~0.1 ms) is above both floors
    (1 kernel), every other block below both, so TPOT moves by (625 − 1) x 21 µs = 13.104 ms."""
    runs = {
        e: _serve_json("--model", "qwen3-30b-a3b", *ONE_REQUEST, "--engine", e)
        for e in ("vllm-0.7", "tensorrt-llm")
    }
    assert runs["vllm-0.7"]["mean_tpot_ms"] - runs["tensorrt-llm"]["mean_tpot_ms"] == pytest.approx(
        (625 - 1) * 21.0e-3, rel=1e-9
    )
    assert runs["vllm-0.7"]["config"]["engine"]["id"] == "vllm-0.7"
    assert runs["vllm-0.7"]["config"]["engine"]["kernel_latency_s"] == 2.625e-5
    assert runs["vllm-0.7"]["config"]["engine"]["selected_by"] == "--engine vllm-0.7"
    # the release syntax picks the same profile
    at = _serve_json("--model", "qwen3-30b-a3b", *ONE_REQUEST, "--engine", "vllm@0.7.3")
    assert at["config"]["engine"]["id"] == "vllm-0.7"
    assert at["mean_tpot_ms"] == runs["vllm-0.7"]["mean_tpot_ms"]


def test_cli_eager_engine_tpot_is_the_host_dispatch() -> None:
    data = _serve_json("--model", "mixtral-8x7b", *ONE_REQUEST, "--engine", "transformers")
    overhead = 0.002  # datacenter-gpu step_overhead_s (hardware_db/efficiency.toml, sgl-project/sglang#5593)
    assert load_hardware_db().efficiency("datacenter-gpu").step_overhead_s == overhead
    # 42.56 ms + 2 ms
    assert data["mean_tpot_ms"] == pytest.approx(1e3 * (MIXTRAL_HOST_S + overhead), rel=1e-12)
    assert data["config"]["engine"]["execution"] == "eager"
    assert data["config"]["engine"]["moe_host_s"] == 7.8e-4


@pytest.mark.parametrize(
    "system,engine,expected,by",
    [
        ("vllm-like", None, "vllm", "--system vllm-like"),
        ("sglang-like", None, "sglang", "--system sglang-like"),
        ("trtllm-like", None, "tensorrt-llm", "--system trtllm-like"),
        ("sglang-like", "tensorrt-llm", "tensorrt-llm", "--engine tensorrt-llm"),  # explicit --engine wins
        ("vllm-like", "none", None, "--engine none"),  # the device class's values
    ],
)
def test_system_implies_its_engine_unless_named(
    system: str, engine: str | None, expected: str | None, by: str
) -> None:
    scenario, chosen_by = engine_for(ServeRequest(scenario=Scenario(engine=engine), system=system))
    assert scenario.engine == expected and chosen_by == by
    args = ["--model", "qwen3-30b-a3b", *ONE_REQUEST, "--system", system]
    data = _serve_json(*args, *(["--engine", engine] if engine else []))
    assert data["config"]["engine"]["id"] == expected
    assert data["config"]["engine"]["selected_by"] == by


def test_implied_engine_equals_the_named_one() -> None:
    implied = _serve_json("--model", "qwen3-30b-a3b", *ONE_REQUEST, "--system", "sglang-like")
    named = _serve_json(
        "--model", "qwen3-30b-a3b", *ONE_REQUEST, "--system", "sglang-like", "--engine", "sglang"
    )
    assert implied["mean_tpot_ms"] == named["mean_tpot_ms"]
    assert implied["mean_ttft_ms"] == named["mean_ttft_ms"]


def test_table_output_names_the_engine() -> None:
    result = runner.invoke(
        app, ["serve", "--model", "qwen3-30b-a3b", "--hardware", "h100-sxm", "--gpus", "2", *ONE_REQUEST]
    )
    assert result.exit_code == 0, result.output
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("engine:"))
    assert "vllm — vLLM (0.10-0.11" in line and "kernel latency 6.75 µs" in line
    assert "chosen by --system vllm-like" in line


@pytest.mark.parametrize(
    "name,fragment",
    [
        ("vlm", "unknown engine 'vlm'; did you mean vllm, vllm-0.7?"),
        ("sglng", "unknown engine 'sglng'; did you mean sglang?"),
        ("vllm@0.3", "no vllm profile for release 0.3; profiles fitted on: vllm (0.10-0.11), vllm-0.7 (0.7)"),
    ],
)
def test_unknown_engine_is_one_error_line_with_close_matches(name: str, fragment: str) -> None:
    args = ["serve", "--model", "qwen3-30b-a3b", "--hardware", "h100-sxm", "--gpus", "2", *ONE_REQUEST]
    result = runner.invoke(app, [*args, "--engine", name])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert fragment in lines[0]
    # the same line as predict's (one parser: capsim.engine.engines.engine_profile)
    pred = runner.invoke(app, ["predict", "--model", "qwen3-30b-a3b", "--engine", name])
    assert pred.exit_code == 1 and pred.stderr.strip() == result.stderr.strip()
    with pytest.raises(ScenarioError, match=re.escape(fragment)):
        engine_for(ServeRequest(scenario=Scenario(engine=name)))


def test_curve_and_fleet_paths_carry_the_engine() -> None:
    """A rate range (curve) and fleet sizing build their replicas from the same scenario: the eager profile's
    42.56 ms + 2 ms TPOT of a lone one-token decode shows in both."""
    expected_ms = 1e3 * (MIXTRAL_HOST_S + 0.002)
    curve = _serve_json(
        "--model", "mixtral-8x7b", "--num-prompts", "1", "--prompt-len", "100", "--output-len", "20",
        "--rate", "0.01,0.02", "--engine", "transformers",
    )  # fmt: skip
    assert curve["engine"]["id"] == "transformers"
    assert [r["mean_tpot_s"] * 1e3 for r in curve["rates"]] == pytest.approx([expected_ms] * 2, rel=1e-12)
    result = runner.invoke(
        app,
        [
            "serve", "--model", "mixtral-8x7b", "--rate", "0.01", "--num-prompts", "1", "--prompt-len", "100",
            "--output-len", "20", "--slo", "tpot=100ms", "--fleet-candidates", "h100-sxm:2",
            "--engine", "transformers", "--json",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    fleet = json.loads(result.stdout)
    assert fleet["engine"] == {"id": "transformers", "selected_by": "--engine transformers"}
    assert fleet["cheapest"]["replicas"] == 1
    assert fleet["cheapest"]["p99_tpot_ms"] == pytest.approx(expected_ms, rel=1e-12)


@pytest.fixture(scope="module")
def eager_cost() -> StepCost:
    scenario = Scenario(
        model="mixtral-8x7b", hardware="h100-sxm", gpus=2, engine="transformers", routing="temporal:0.5"
    )
    return build_replica(scenario, SchedulerConfig(max_num_seqs=64, max_batched_tokens=256)).cost


@settings(max_examples=60, deadline=None)
@given(
    tokens=st.integers(1, 300),
    seqs_frac=st.floats(0.0, 1.0),
    lm_frac=st.floats(0.0, 1.0),
    pairs=st.floats(0.0, 1e9),
    kv=st.floats(0.0, 1e8),
)
def test_eager_step_equals_engine_and_is_a_max(
    eager_cost: StepCost, tokens: int, seqs_frac: float, lm_frac: float, pairs: float, kv: float
) -> None:
    """For any step (T tokens from S sequences, lm emitting, any attention load), the serving step time equals
    the engine's mixed_passes and is max(device time, host dispatch + step overhead): never their sum."""
    cost = eager_cost
    seqs = max(1, round(seqs_frac * tokens))
    lm = round(lm_frac * seqs)
    L = cost.num_layers
    ref = mixed_passes(
        cost.rs,
        np.array([float(tokens)]),
        np.array([float(seqs)]),
        np.array([float(lm)]),
        np.zeros((1, 1)),
        np.array([[pairs / L]]),
        np.array([[kv / L]]),
    )
    t = cost.time(tokens, seqs, lm, pairs, kv)
    assert t == pytest.approx(ref.time[0], rel=1e-11)
    host = next(h[0] for op, h, _ in ref.op_times if op == "host_dispatch")
    device = ref.time[0] - ref.time_by_op["host_dispatch"][0]
    assert t == pytest.approx(max(device, host + cost.rs.rates.step_overhead_s), rel=1e-11)


def test_per_sequence_overhead_reaches_the_step() -> None:
    """tensorrt-llm@0.17 charges 7.5 µs per sequence emitting a token (engines.toml per_sequence_s, inside the
    pass's overhead): a step of 64 decodes emitting 64 tokens costs its lm_head plus 64 x 7.5 µs = 0.48 ms
    more than the same step emitting none. (The step model refused this profile while it read the lm term
    from the lm_head alone.)"""
    rep = build_replica(
        Scenario(model="mixtral-8x7b", hardware="h100-sxm", gpus=2, engine="tensorrt-llm@0.17"), SCHED
    )
    assert rep.rs.rates.per_sequence_s == 7.5e-6
    cost = rep.cost
    z = np.zeros((1, 2))
    ref = mixed_passes(rep.rs, np.array([64.0, 64.0]), np.array([64.0, 64.0]), np.array([64.0, 0.0]), z, z, z)
    lm_head = ref.time_by_op["lm_head"][0] - ref.time_by_op["lm_head"][1]
    emitted = cost.time(64, 64, 64, 0.0, 6400.0) - cost.time(64, 64, 0, 0.0, 6400.0)
    assert emitted - lm_head == pytest.approx(64 * 7.5e-6, rel=1e-9)  # = 0.48 ms
