"""Per-group weight precision (--expert-dtype) and compute-versus-dequantise per device: bytes and FLOPs
follow the format, speed follows what the device can compute in."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from capsim import ScenarioError, predict
from capsim.cli import app
from capsim.engine.scenario import Scenario

EXPERT_PARAMS = 3 * 4096 * 14336  # one Mixtral-8x7B expert: 176,160,768 parameters
ALL_EXPERTS = 32 * 8 * EXPERT_PARAMS  # 45,097,156,608


def mixtral(**kw):  # type: ignore[no-untyped-def]
    return Scenario(
        **{
            "model": "mixtral-8x7b",
            "hardware": "h100-sxm",
            "gpus": 1,
            "batch": 1,
            "prompt_len": 512,
            "gen_len": 8,
            **kw,
        }
    )


def test_expert_dtype_sets_only_the_experts(default_hardware_db) -> None:
    """int4 (group-128 fp16 scales: 4.125 bits) experts next to bf16 attention: 45,097,156,608 x 4.125/8 =
    23,253,221,376 bytes of experts; attention stays 1,342,177,280 x 2 bytes."""
    pred = predict(mixtral(expert_dtype="int4"), hardware_db=default_hardware_db)
    groups = pred.memory.weights_bytes_by_group
    assert ALL_EXPERTS * 4.125 / 8 == 23_253_221_376
    assert groups["routed_experts"] == pytest.approx(23_253_221_376)
    assert groups["attention"] == pytest.approx(1_342_177_280 * 2)
    assert pred.assumptions["weight_precision"]["routed_experts"] == "int4"
    assert pred.assumptions["weight_precision"]["attention"] == "bf16"
    # W4A16: the GEMM runs in bf16 after dequantisation
    assert pred.assumptions["compute_precision"]["routed_experts"] == "bf16"


def test_decode_expert_time_follows_bytes(max_roofline_db) -> None:
    """Batch-1 decode is memory-bound: per MoE layer the 2 activated experts' weights plus activations
    2 x T x k x d x 2 = 32,768 bytes (both halved over 2 TP ranks); under the plain roofline the int4/bf16
    expert time ratio is the byte ratio (the fitted soft roofline adds a little compute time to both)."""
    bf16 = predict(mixtral(gpus=2), hardware_db=max_roofline_db).decode.time_by_op_s["routed_experts"]
    int4 = predict(mixtral(gpus=2, expert_dtype="int4"), hardware_db=max_roofline_db).decode.time_by_op_s[
        "routed_experts"
    ]
    ratio = (2 * EXPERT_PARAMS * 4.125 / 8 + 32_768) / (2 * EXPERT_PARAMS * 2 + 32_768)
    assert int4 / bf16 == pytest.approx(ratio, rel=1e-9)


def test_mxfp4_block_scale_overhead(default_hardware_db) -> None:
    # mxfp4: 32 fp4 values share one 8-bit scale -> 4 + 8/32 = 4.25 bits per weight
    pred = predict(mixtral(expert_dtype="mxfp4"), hardware_db=default_hardware_db)
    assert pred.memory.weights_bytes_by_group["routed_experts"] == pytest.approx(ALL_EXPERTS * 4.25 / 8)


def test_fp8_is_faster_compute_only_where_the_device_has_fp8(max_roofline_db) -> None:
    """Compute-bound prefill of 8 x 2048 tokens: H100 has fp8 tensor cores (1978.9 vs 989.4 TFLOPS), so fp8
    experts halve the expert compute time; A100 has none, so fp8 weights are dequantised and the expert
    GEMMs run at bf16 (312 TFLOPS): the same time as bf16, not 'half the bits, twice the speed'."""

    def expert_prefill(hw: str, dtype: str) -> tuple[float, str]:
        sc = Scenario(
            model="mixtral-8x7b", hardware=hw, gpus=4, batch=8, prompt_len=2048, gen_len=2, expert_dtype=dtype
        )
        pred = predict(sc, hardware_db=max_roofline_db)  # plain roofline: compute-bound time = FLOPs / rate
        return pred.prefill.time_by_op_s["routed_experts"], pred.assumptions["compute_precision"][
            "routed_experts"
        ]

    h_bf16, _ = expert_prefill("h100-sxm", "bf16")
    h_fp8, h_key = expert_prefill("h100-sxm", "fp8")
    a_bf16, _ = expert_prefill("a100-sxm-80gb", "bf16")
    a_fp8, a_key = expert_prefill("a100-sxm-80gb", "fp8")
    assert h_key == "fp8" and a_key == "bf16"
    assert h_fp8 == pytest.approx(h_bf16 * 989.4 / 1978.9, rel=1e-9)
    assert a_fp8 == pytest.approx(a_bf16, rel=1e-9)


def test_expert_dtype_needs_experts(default_hardware_db) -> None:
    from dataclasses import replace

    from capsim.models.db import resolve_model
    from capsim.models.parts import FFNKind

    m = resolve_model("mixtral-8x7b")
    dense = replace(
        m, moe=None, ffn_kinds=tuple(FFNKind.DENSE for _ in range(32)), dense_intermediate_size=14336
    )
    with pytest.raises(ScenarioError, match="--expert-dtype sets the routed experts' precision"):
        predict(
            Scenario(model=dense, hardware="h100-sxm", gpus=1, expert_dtype="int4"),
            hardware_db=default_hardware_db,
        )


def test_cli_expert_dtype() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["predict", "--gpus", "1", "--expert-dtype", "int4", "--json"])
    assert result.exit_code == 0, result.output
    a = json.loads(result.stdout)["assumptions"]
    assert (
        a["weight_precision"]["routed_experts"] == "int4"
        and a["compute_precision"]["routed_experts"] == "bf16"
    )
    bad = runner.invoke(app, ["predict", "--expert-dtype", "int3"])
    assert bad.exit_code == 1
    assert bad.stderr.strip() == (
        "error: unknown expert dtype 'int3'; choose one of fp32, bf16, fp16, fp8, int8, "
        "w8a8, int4, mxfp4, or a GGUF type such as q4_k_m, q8_0, q4_0, iq4_xs (docs/deployment.md)"
    )
