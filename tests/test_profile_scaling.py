"""Scaling a published model to the machine: truncate layers, keep widths (no PyTorch needed)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capsim.errors import DoesNotFitError, ScenarioError
from capsim.models.db import resolve_model
from capsim.models.parts import FFNKind
from capsim.profile.scaling import (
    fixed_bytes,
    layer_bytes,
    layers_that_fit,
    min_layers_for_moe,
    truncate_layers,
)

OLMOE = resolve_model("olmoe-1b-7b")

# OLMoE-1B-7B per layer, from its config (reference models/OLMoE-1B-7B.json): d = 2048, 16 heads x 128 (MHA),
# QK-norm over the full q and k widths, 64 experts of width 1024 (SwiGLU: 3 matrices), router d x E.
ATTN = 2048 * (2048 + 2 * 2048) + 2048 * 2048 + 2048 + 2048  # q, k, v, o + q-norm + k-norm = 16,781,312
ROUTER = 2048 * 64  # 131,072
EXPERTS = 64 * 3 * 2048 * 1024  # 402,653,184
NORMS = 2 * 2048
FP32 = 4


def test_truncate_keeps_widths_and_cuts_layers() -> None:
    spec = truncate_layers(OLMOE, 2, "fp32")
    assert spec.id == "olmoe-1b-7b-2L"
    assert spec.num_layers == 2 and spec.num_moe_layers == 2
    assert (
        spec.hidden_size == OLMOE.hidden_size and spec.moe == OLMOE.moe and spec.attention == OLMOE.attention
    )
    assert set(spec.native_dtypes.values()) == {"fp32"}
    assert spec.attention_params_per_layer == ATTN


def test_truncate_keeps_deepseek_leading_dense_layer() -> None:
    ds = resolve_model("deepseek-v2-lite")
    assert min_layers_for_moe(ds) == 2  # first_k_dense_replace = 1 (reference models/DeepSeek-V2-Lite.json)
    spec = truncate_layers(ds, 2, "bf16")
    assert spec.ffn_kinds == (FFNKind.DENSE, FFNKind.MOE)
    with pytest.raises(ScenarioError, match="contain no MoE layer; use at least 2 layers"):
        truncate_layers(ds, 1, "bf16")


@pytest.mark.parametrize("n", [0, 17, -1])
def test_truncate_rejects_out_of_range_layer_counts(n: int) -> None:
    with pytest.raises(ScenarioError, match="must be 1..16"):
        truncate_layers(OLMOE, n, "fp32")


def test_layer_and_fixed_bytes_by_hand() -> None:
    # batch 1, context 128: KV = 128 tokens x 2·16·128 elements
    kv = 128 * 2 * 16 * 128
    assert layer_bytes(OLMOE, "fp32", batch=1, context=128) == (ATTN + ROUTER + EXPERTS + NORMS + kv) * FP32
    # embedding and lm_head, untied: 2 x 50,304 x 2,048 x 4 bytes
    assert fixed_bytes(OLMOE, "fp32") == 2 * 50304 * 2048 * FP32


def test_layers_that_fit_floors_and_caps() -> None:
    per, fixed = layer_bytes(OLMOE, "fp32", 1, 128), fixed_bytes(OLMOE, "fp32")
    assert layers_that_fit(OLMOE, "fp32", budget_bytes=fixed + 3.5 * per, batch=1, context=128) == 3
    assert (
        layers_that_fit(OLMOE, "fp32", budget_bytes=fixed + 3.5 * per, batch=1, context=128, max_layers=2)
        == 2
    )
    assert layers_that_fit(OLMOE, "fp32", budget_bytes=1e15, batch=1, context=128) == 16  # the model's depth
    with pytest.raises(DoesNotFitError, match="profiling memory budget"):
        layers_that_fit(OLMOE, "fp32", budget_bytes=fixed + 0.5 * per, batch=1, context=128)


@given(st.floats(min_value=1.0, max_value=30.0), st.floats(min_value=0.0, max_value=10.0))
def test_layers_that_fit_is_monotone_and_within_budget(layers_worth: float, extra: float) -> None:
    per, fixed = layer_bytes(OLMOE, "fp32", 1, 128), fixed_bytes(OLMOE, "fp32")
    small = fixed + layers_worth * per
    n_small = layers_that_fit(OLMOE, "fp32", budget_bytes=small, batch=1, context=128)
    n_big = layers_that_fit(OLMOE, "fp32", budget_bytes=small + extra * per, batch=1, context=128)
    assert n_small <= n_big
    assert fixed + n_small * per <= small
