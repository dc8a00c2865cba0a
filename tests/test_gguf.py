"""GGUF weight formats (capsim.models.gguf): block bits, llama.cpp's per-tensor type rules, file sizes.

Sources: ggml-org/llama.cpp ggml/src/ggml-common.h (block structs) and src/llama-quant.cpp
(llama_tensor_get_type_impl); file sizes as printed by llama-bench in the published measurements
(../shared/published/measurements.yaml, carried into validation/published.yaml by the validation work).
"""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from typer.testing import CliRunner

from capsim import predict, resolve_model
from capsim.cli import app
from capsim.engine.scenario import Scenario
from capsim.errors import ScenarioError
from capsim.models.ggml_types import FILE_TYPES, GGML_BLOCKS, bits
from capsim.models.gguf import group_bits, use_more_bits
from capsim.models.precision import weight_precision
from capsim.units import GIB


def test_block_bits_from_the_structs() -> None:
    assert bits("q4_0") == 18 * 8 / 32 == 4.5  # fp16 scale + 16 bytes of nibbles per 32 weights
    assert bits("q8_0") == 34 * 8 / 32 == 8.5
    assert bits("q4_k") == 144 * 8 / 256 == 4.5
    assert bits("q6_k") == 210 * 8 / 256 == 6.5625
    assert bits("q2_k") == 84 * 8 / 256 == 2.625
    assert bits("iq4_xs") == 136 * 8 / 256 == 4.25
    assert bits("iq2_xxs") == 66 * 8 / 256 == 2.0625


def test_mxfp4_moe_file_type() -> None:
    """LLAMA_FTYPE_MOSTLY_MXFP4_MOE (llama-quant.cpp @ 007dbbf3, llama_tensor_get_type_impl): the 3-D expert
    tensors MXFP4 (block_mxfp4: 1 E8M0 byte + 16 bytes per 32 weights = 17 x 8 / 32 = 4.25 bits), output.weight
    and every other tensor Q8_0 (8.5 bits). gpt-oss-20b: experts 24 x 32 x 24,891,840 x 4.25 / 8 = 10.156 GB."""
    got = group_bits(resolve_model("gpt-oss-20b"), "mxfp4_moe")
    assert got["routed_experts"] == bits("mxfp4") == 17 * 8 / 32 == 4.25
    assert {got[g] for g in ("attention", "embeddings", "lm_head")} == {8.5}
    w = resolve_model("gpt-oss-20b").weight_bytes_by_group("mxfp4_moe")
    assert w["routed_experts"] == pytest.approx(24 * 32 * 24_891_840 * 4.25 / 8)
    # capsim's own mxfp4 weight dtype is not a GGUF type: experts MXFP4, the rest bf16 as the checkpoint ships
    assert weight_precision("mxfp4").native_compute == "fp4"


def test_use_more_bits_marks_half_of_48_layers() -> None:
    # n/8 = 6, 7n/8 = 42: layers 0-5 and 42-47, and (i - 6) % 3 == 2 -> 8, 11, ..., 41 (12 layers): 24 of 48
    marked = [i for i in range(48) if use_more_bits(i, 48)]
    assert len(marked) == 24
    assert marked[:8] == [0, 1, 2, 3, 4, 5, 8, 11]


def test_q4_k_m_experts_mix_q4_k_and_q6_k() -> None:
    spec = resolve_model("qwen3-30b-a3b")  # 48 MoE layers
    got = group_bits(spec, "q4_k_m")
    # gate and up in Q4_K (2/3 of an expert), down in Q6_K on 24 of 48 layers and Q4_K on the rest
    assert got["routed_experts"] == pytest.approx(2 / 3 * 4.5 + 1 / 3 * (0.5 * 6.5625 + 0.5 * 4.5))  # 4.84375
    assert got["lm_head"] == 6.5625  # output.weight -> Q6_K
    assert got["embeddings"] == 4.5  # token_embd keeps the default type


def test_q8_0_keeps_output_in_q8_0() -> None:
    got = group_bits(resolve_model("qwen3-30b-a3b"), "q8_0")
    assert set(got.values()) == {8.5}


def test_eight_expert_models_keep_attn_k_and_v_in_q8_0() -> None:
    spec = resolve_model("mixtral-8x7b")  # d 4096, 32 heads x 128, 8 KV heads x 128
    q = o = 4096 * 4096
    k = v = 4096 * 1024
    expected = (q * 4.5 + o * 4.5 + (k + v) * 8.5) / (q + o + k + v)  # Q4_0 file: q/o in Q4_0, k/v in Q8_0
    assert group_bits(spec, "q4_0")["attention"] == pytest.approx(expected)


@pytest.mark.parametrize(
    ("model", "ftype", "published_gib"),
    [
        ("qwen3-30b-a3b", "q4_k_m", 17.28),  # llama-bench size, EPYC 9B14 case (r/LocalLLaMA 1mieqcb)
        ("mixtral-8x7b", "q4_0", 24.62),  # llama-bench size, llama.cpp PR #4406 (M2 Max case)
        ("gpt-oss-20b", "mxfp4_moe", 11.27),  # llama-bench size, DGX Spark page (llamacpp-dgxspark-* cases)
        ("gpt-oss-120b", "mxfp4_moe", 59.02),  # llama-bench size, EPYC 9B14 and nvforum GB10 cases
    ],
)
def test_file_sizes_match_published_gguf_files(model: str, ftype: str, published_gib: float) -> None:
    total = sum(resolve_model(model).weight_bytes_by_group(ftype).values()) / GIB
    # norms stay bf16 here (f32 in the file) and a few tensors may fall back: within 0.5 %
    assert total == pytest.approx(published_gib, rel=5e-3)


LADDER = ("q2_k", "q3_k_m", "q4_k_m", "q5_k_m", "q6_k", "q8_0")


@given(
    st.sampled_from(["mixtral-8x7b", "qwen3-30b-a3b", "deepseek-v3", "gpt-oss-20b", "olmoe-1b-7b"]),
    st.integers(0, len(LADDER) - 2),
)
def test_bigger_k_quants_store_more_bytes(model: str, i: int) -> None:
    spec = resolve_model(model)
    small = sum(spec.weight_bytes_by_group(LADDER[i]).values())
    large = sum(spec.weight_bytes_by_group(LADDER[i + 1]).values())
    assert large > small


@given(st.sampled_from(sorted(FILE_TYPES)), st.sampled_from(["mixtral-8x7b", "qwen3-30b-a3b", "deepseek-v3"]))
@example("iq1_s", "deepseek-v3")  # a parameter-weighted mean of one type came out 1 ulp below it
def test_group_bits_lie_between_the_block_types(ftype: str, model: str) -> None:
    lo, hi = min(map(bits, GGML_BLOCKS)), max(map(bits, GGML_BLOCKS))
    for value in group_bits(resolve_model(model), ftype).values():
        assert lo * (1 - 1e-12) <= value <= hi * (1 + 1e-12)


def test_gguf_names_are_weight_dtypes() -> None:
    assert weight_precision("Q4_K_M").bits_per_element == 4.5  # the file type's default tensor type
    with pytest.raises(ScenarioError, match="GGUF type such as q4_k_m"):
        weight_precision("q4_k_x")


def test_predict_reads_the_gguf_bytes() -> None:
    """Batch-1 decode on a CPU is bandwidth bound: a Q8_0 model reads ~8.5/4.84 the bytes of Q4_K_M."""
    base = Scenario(
        model="qwen3-30b-a3b",
        hardware="epyc-9654-2s",
        batch=1,
        prompt_len=16,
        gen_len=8,
        host_memory_gb=768.0,
    )
    q4 = predict(Scenario(**{**base.__dict__, "weight_dtype": "q4_k_m"}))
    q8 = predict(Scenario(**{**base.__dict__, "weight_dtype": "q8_0"}))
    assert q8.memory.weights_bytes > 1.7 * q4.memory.weights_bytes
    assert q8.tpot_s > q4.tpot_s


def test_cli_accepts_gguf_expert_dtype() -> None:
    result = CliRunner().invoke(
        app,
        [
            "predict",
            "--model",
            "qwen3-30b-a3b",
            "--hardware",
            "epyc-9654-2s",
            "--expert-dtype",
            "q4_k_m",
            "--host-memory-gb",
            "768",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
