"""``capsim explain``: the formulas the engine evaluates, with a model's values substituted.

The expressions are the sympy objects of :mod:`capsim.formulas` (the ones predict and sweeps lambdify), so
what this prints is what runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from . import formulas as F
from .model import ModelSpec
from .roofline import attention_dims


@dataclass(frozen=True)
class ExplainedOp:
    """One operation: its symbolic FLOPs and bytes, and the same with the model's constants substituted."""

    name: str
    description: str
    applies_to: str
    flops: sp.Expr
    bytes: sp.Expr
    flops_model: sp.Expr
    bytes_model: sp.Expr


def model_values(model: ModelSpec, phase: str = "decode") -> dict[sp.Symbol, int]:
    """The model constants each formula needs (dims, parameter counts); bytes per element stay symbolic."""
    att = model.attention
    d_qk, d_v = attention_dims(model, phase)
    values: dict[sp.Symbol, int] = {
        F.d: model.hidden_size,
        F.V: model.vocab_size,
        F.N_attn: model.attention_params_per_layer,
        F.w_qkv: att.num_heads * att.qk_head_dim + 2 * att.num_kv_heads * att.head_dim,
        F.w_o: att.num_heads * att.value_head_dim,
        F.H: att.num_heads,
        F.d_qk: int(d_qk),
        F.d_v: int(d_v),
        F.kv_e: att.kv_elements_per_token(),
        F.N_dense: model.dense_ffn_params_per_layer,
    }
    if model.moe is not None:
        values.update({
            F.E: model.moe.num_experts, F.k: model.moe.top_k, F.N_exp: model.expert_params,
            F.N_sh: model.shared_params_per_moe_layer, F.N_router: model.router_params_per_moe_layer,
        })
    return values


def explain(model: ModelSpec, phase: str = "decode") -> list[ExplainedOp]:
    """Every operation of ``model``'s layers with its formulas, generic and substituted."""
    values = model_values(model, phase)
    applies = {
        "attn_proj": f"every layer ({model.num_layers})",
        "attn_core": f"every layer ({model.num_layers})",
        "router": f"MoE layers ({model.num_moe_layers})",
        "routed_experts": f"MoE layers ({model.num_moe_layers})",
        "routed_experts_dense": "dense MBU/MFU only",
        "shared_experts": f"MoE layers ({model.num_moe_layers})",
        "dense_ffn": f"dense layers ({model.num_dense_layers})",
        "lm_head": "once per step",
    }
    ops = []
    for name, op in F.OPS.items():
        if name in ("router", "routed_experts", "routed_experts_dense") and not model.is_moe:
            continue
        if name == "shared_experts" and not model.shared_params_per_moe_layer:
            continue
        if name == "dense_ffn" and not (model.num_dense_layers and model.dense_ffn_params_per_layer):
            continue
        ops.append(ExplainedOp(
            name=name, description=op.description, applies_to=applies[name], flops=op.flops, bytes=op.bytes,
            flops_model=sp.simplify(op.flops.subs(values)), bytes_model=sp.expand(op.bytes.subs(values)),
        ))
    return ops
