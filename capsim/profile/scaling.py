"""Scaling a published model to the machine: keep every layer's width, cut the number of layers.

The profiled model is the real model truncated to its first ``n`` decoder layers (so DeepSeek's leading dense
layer stays first), with every weight group stored in the precision the harness runs in. That truncated
:class:`ModelSpec` is also what validation predicts, so measurement and prediction describe one model.
"""

from __future__ import annotations

import math
from dataclasses import replace

from capsim.errors import DoesNotFitError, ScenarioError
from capsim.models.precision import weight_precision
from capsim.models.spec import WEIGHT_GROUPS, ModelSpec


def truncate_layers(spec: ModelSpec, num_layers: int, dtype: str) -> ModelSpec:
    """``spec`` cut to its first ``num_layers`` layers, every weight group stored as ``dtype``.

    The id becomes ``<id>-<n>L`` so a truncated model is never mistaken for the published one.
    Raises ScenarioError when ``num_layers`` is out of range or keeps no MoE layer.
    """
    if not isinstance(num_layers, int) or not 1 <= num_layers <= spec.num_layers:
        raise ScenarioError(
            f"{spec.id} has {spec.num_layers} layers; the profiled layer count must be 1..{spec.num_layers}, "
            f"got {num_layers!r}"
        )
    weight_precision(dtype)  # validates the name
    kinds = spec.ffn_kinds[:num_layers]
    if spec.moe is None or all(k.value != "moe" for k in kinds):
        first_moe = next((i for i, k in enumerate(spec.ffn_kinds) if k.value == "moe"), None)
        hint = f"use at least {first_moe + 1} layers" if first_moe is not None else "choose a MoE model"
        raise ScenarioError(f"the first {num_layers} layer(s) of {spec.id} contain no MoE layer; {hint}")
    return replace(
        spec,
        id=f"{spec.id}-{num_layers}L",
        name=f"{spec.name} (first {num_layers} of {spec.num_layers} layers)",
        num_layers=num_layers,
        ffn_kinds=kinds,
        layer_windows=spec.layer_windows[:num_layers],
        native_dtypes=dict.fromkeys(WEIGHT_GROUPS, dtype),
    )


def min_layers_for_moe(spec: ModelSpec) -> int:
    """The fewest leading layers that include one MoE layer (DeepSeek-V2-Lite: 2, its first is dense)."""
    for i, kind in enumerate(spec.ffn_kinds):
        if kind.value == "moe":
            return i + 1
    raise ScenarioError(f"{spec.id} has no MoE layer; the harness profiles MoE models")


def layer_bytes(spec: ModelSpec, dtype: str, batch: int, context: int) -> float:
    """Bytes of one *MoE* decoder layer: its weights plus its KV cache for ``batch`` × ``context`` tokens.

    A MoE layer is used as the unit because it is the largest layer of every supported family.
    """
    b = weight_precision(dtype).bytes_per_element
    moe_params = (
        spec.attention_params_per_layer
        + spec.router_params_per_moe_layer
        + (spec.moe.num_experts if spec.moe else 0) * spec.expert_params
        + spec.shared_params_per_moe_layer
        + spec.norm_params_per_layer
    )
    dense_params = (
        spec.attention_params_per_layer + spec.dense_ffn_params_per_layer + spec.norm_params_per_layer
    )
    kv = batch * context * spec.attention.kv_elements_per_token()
    return (max(moe_params, dense_params) + kv) * b


def fixed_bytes(spec: ModelSpec, dtype: str) -> float:
    """Bytes of the parts that do not scale with depth: input embedding and lm_head."""
    b = weight_precision(dtype).bytes_per_element
    tables = 1 if spec.tie_word_embeddings else 2
    return tables * spec.vocab_size * spec.hidden_size * b


def layers_that_fit(
    spec: ModelSpec,
    dtype: str,
    *,
    budget_bytes: float,
    batch: int,
    context: int,
    max_layers: int | None = None,
) -> int:
    """Most leading layers of ``spec`` whose weights and KV cache fit in ``budget_bytes``, capped at
    ``max_layers`` and at the model's depth: n = ⌊(budget − embeddings − lm_head) / bytes per layer⌋.

    Raises DoesNotFitError when not even the fewest layers holding one MoE layer fit.
    """
    per_layer = layer_bytes(spec, dtype, batch, context)
    fixed = fixed_bytes(spec, dtype)
    n = math.floor((budget_bytes - fixed) / per_layer) if budget_bytes > fixed else 0
    cap = spec.num_layers if max_layers is None else min(max_layers, spec.num_layers)
    n = min(n, cap)
    least = min_layers_for_moe(spec)
    if n < least:
        raise DoesNotFitError(
            fixed + least * per_layer,
            budget_bytes,
            "the profiling memory budget",
            f"profile with a smaller batch or context, or a smaller model than {spec.id}",
        )
    return n
