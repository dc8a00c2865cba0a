"""``capsim explain``: the formulas the engine evaluates, with a model's values substituted.

The expressions are the sympy objects of :mod:`capsim.engine.formulas` (the ones predict and sweeps lambdify), and
the model constants come from the same helpers the roofline uses (:func:`capsim.engine.roofline.attention_dims`,
:func:`capsim.engine.roofline.projection_widths`), so what this prints is what runs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import sympy as sp

from capsim.engine import formulas as F
from capsim.engine.roofline import attention_dims, projection_widths
from capsim.models.spec import ModelSpec

CONTEXT = sp.Symbol("c", positive=True)
"""Decode: tokens each new token attends to (prompt + tokens generated so far)."""
PROMPT = sp.Symbol("P", positive=True)
"""Prefill: prompt length of each sequence."""


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


@dataclass(frozen=True)
class AttentionKind:
    """Layers sharing one attention window, and the attention core's inputs the engine gives them.

    Decode (B sequences, one new token each at context c): pairs = kv_read_tokens = B·min(c, w).
    Prefill of B prompts of P tokens: pairs = B·Σ_{i=1..P} min(i, w) (causal, window-capped), shared among the
    prefill chunks in proportion to their tokens; each chunk reads its own T tokens of KV.
    """

    window: int | None
    layers: int
    pairs: sp.Expr
    kv_read_tokens: sp.Expr


def model_values(model: ModelSpec, phase: str = "decode") -> dict[sp.Symbol, int]:
    """The model constants each formula needs (dims, parameter counts); bytes per element stay symbolic."""
    att = model.attention
    d_qk, d_v = attention_dims(model, phase)
    w_qkv, w_o = projection_widths(model)
    values: dict[sp.Symbol, int] = {
        F.d: model.hidden_size,
        F.V: model.vocab_size,
        F.N_attn: model.attention_params_per_layer,
        F.w_qkv: int(w_qkv),
        F.w_o: int(w_o),
        F.H: att.num_heads,
        F.d_qk: int(d_qk),
        F.d_v: int(d_v),
        F.kv_e: att.kv_elements_per_token(),
        F.N_dense: model.dense_ffn_params_per_layer,
    }
    if model.moe is not None:
        values.update(
            {
                F.E: model.moe.num_experts,
                F.k: model.moe.top_k,
                F.N_exp: model.expert_params,
                F.N_sh: model.shared_params_per_moe_layer,
                F.N_router: model.router_params_per_moe_layer,
            }
        )
    return values


def causal_pairs_expr(window: int | None) -> sp.Expr:
    """Σ_{i=1..P} min(i, w) as a sympy expression in P (the formula of :func:`capsim.engine.roofline.causal_pairs`)."""
    full = PROMPT * (PROMPT + 1) / 2
    if window is None:
        return full
    w = sp.Integer(window)
    return sp.Piecewise((full, w >= PROMPT), (w * (w + 1) / 2 + (PROMPT - w) * w, True))


def attention_kinds(model: ModelSpec, phase: str = "decode") -> list[AttentionKind]:
    """One entry per distinct attention window (None = full attention), with its layer count."""
    counts = Counter(model.window(i) for i in range(model.num_layers))
    kinds = []
    for window in sorted(counts, key=lambda w: (w is None, w or 0)):
        if phase == "decode":
            seen = CONTEXT if window is None else sp.Min(CONTEXT, sp.Integer(window))
            pairs = kv_read = F.B * seen
        else:
            pairs = F.B * causal_pairs_expr(window)
            kv_read = F.T
        kinds.append(AttentionKind(window, counts[window], pairs, kv_read))
    return kinds


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
        "lm_head": "once per step, for the sequences that emit a token",
    }
    ops = []
    for name, op in F.OPS.items():
        if name in ("router", "routed_experts", "routed_experts_dense") and not model.is_moe:
            continue
        if name == "shared_experts" and not (model.is_moe and model.shared_params_per_moe_layer):
            continue
        if name == "dense_ffn" and not (model.num_dense_layers and model.dense_ffn_params_per_layer):
            continue
        ops.append(
            ExplainedOp(
                name=name,
                description=op.description,
                applies_to=applies[name],
                flops=op.flops,
                bytes=op.bytes,
                flops_model=sp.simplify(op.flops.subs(values)),
                bytes_model=sp.expand(op.bytes.subs(values)),
            )
        )
    return ops
