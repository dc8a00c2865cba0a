"""GENERATED from capsim/engine/formulas.py by `python -m capsim.engine.formulas > capsim/engine/_formulas_compiled.py`;
do not edit (tests/test_formulas_compiled.py fails when this file and the table differ)."""

# ruff: noqa
from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Arguments are Python numbers or numpy arrays (broadcast together); the result has their type.
Formula = Callable[..., Any]


def attn_proj__flops(N_attn: Any, T: Any, b_a: Any, b_w: Any, d: Any, w_o: Any, w_qkv: Any) -> Any:
    return 2*N_attn*T


def attn_proj__weight_bytes(N_attn: Any, T: Any, b_a: Any, b_w: Any, d: Any, w_o: Any, w_qkv: Any) -> Any:
    return N_attn*b_w


def attn_proj__other_bytes(N_attn: Any, T: Any, b_a: Any, b_w: Any, d: Any, w_o: Any, w_qkv: Any) -> Any:
    return T*b_a*(2*d + w_o + w_qkv)


def attn_core__flops(H: Any, T: Any, b_kv: Any, d_qk: Any, d_v: Any, kv_e: Any, kv_read_tokens: Any, pairs: Any) -> Any:
    return 2*H*pairs*(d_qk + d_v)


def attn_core__weight_bytes(H: Any, T: Any, b_kv: Any, d_qk: Any, d_v: Any, kv_e: Any, kv_read_tokens: Any, pairs: Any) -> Any:
    return 0


def attn_core__other_bytes(H: Any, T: Any, b_kv: Any, d_qk: Any, d_v: Any, kv_e: Any, kv_read_tokens: Any, pairs: Any) -> Any:
    return b_kv*kv_e*(T + kv_read_tokens)


def router__flops(E: Any, N_router: Any, T: Any, b_a: Any, b_w: Any, d: Any) -> Any:
    return 2*N_router*T


def router__weight_bytes(E: Any, N_router: Any, T: Any, b_a: Any, b_w: Any, d: Any) -> Any:
    return N_router*b_w


def router__other_bytes(E: Any, N_router: Any, T: Any, b_a: Any, b_w: Any, d: Any) -> Any:
    return T*b_a*(E + d)


def routed_experts__flops(A: Any, N_exp: Any, T: Any, b_a: Any, b_w: Any, d: Any, k: Any) -> Any:
    return 2*N_exp*T*k


def routed_experts__weight_bytes(A: Any, N_exp: Any, T: Any, b_a: Any, b_w: Any, d: Any, k: Any) -> Any:
    return A*N_exp*b_w


def routed_experts__other_bytes(A: Any, N_exp: Any, T: Any, b_a: Any, b_w: Any, d: Any, k: Any) -> Any:
    return 2*T*b_a*d*k


def routed_experts_dense__flops(E: Any, N_exp: Any, T: Any, b_a: Any, b_w: Any, d: Any) -> Any:
    return 2*E*N_exp*T


def routed_experts_dense__weight_bytes(E: Any, N_exp: Any, T: Any, b_a: Any, b_w: Any, d: Any) -> Any:
    return E*N_exp*b_w


def routed_experts_dense__other_bytes(E: Any, N_exp: Any, T: Any, b_a: Any, b_w: Any, d: Any) -> Any:
    return 2*E*T*b_a*d


def shared_experts__flops(N_sh: Any, T: Any, b_a: Any, b_w: Any, d: Any) -> Any:
    return 2*N_sh*T


def shared_experts__weight_bytes(N_sh: Any, T: Any, b_a: Any, b_w: Any, d: Any) -> Any:
    return N_sh*b_w


def shared_experts__other_bytes(N_sh: Any, T: Any, b_a: Any, b_w: Any, d: Any) -> Any:
    return 2*T*b_a*d


def dense_ffn__flops(N_dense: Any, T: Any, b_a: Any, b_w: Any, d: Any) -> Any:
    return 2*N_dense*T


def dense_ffn__weight_bytes(N_dense: Any, T: Any, b_a: Any, b_w: Any, d: Any) -> Any:
    return N_dense*b_w


def dense_ffn__other_bytes(N_dense: Any, T: Any, b_a: Any, b_w: Any, d: Any) -> Any:
    return 2*T*b_a*d


def lm_head__flops(B: Any, V: Any, b_a: Any, b_w: Any, d: Any) -> Any:
    return 2*B*V*d


def lm_head__weight_bytes(B: Any, V: Any, b_a: Any, b_w: Any, d: Any) -> Any:
    return V*b_w*d


def lm_head__other_bytes(B: Any, V: Any, b_a: Any, b_w: Any, d: Any) -> Any:
    return B*b_a*(V + d)


ARGS: dict[str, tuple[str, ...]] = {
    'attn_proj': ('N_attn', 'T', 'b_a', 'b_w', 'd', 'w_o', 'w_qkv'),
    'attn_core': ('H', 'T', 'b_kv', 'd_qk', 'd_v', 'kv_e', 'kv_read_tokens', 'pairs'),
    'router': ('E', 'N_router', 'T', 'b_a', 'b_w', 'd'),
    'routed_experts': ('A', 'N_exp', 'T', 'b_a', 'b_w', 'd', 'k'),
    'routed_experts_dense': ('E', 'N_exp', 'T', 'b_a', 'b_w', 'd'),
    'shared_experts': ('N_sh', 'T', 'b_a', 'b_w', 'd'),
    'dense_ffn': ('N_dense', 'T', 'b_a', 'b_w', 'd'),
    'lm_head': ('B', 'V', 'b_a', 'b_w', 'd'),
}

FUNCTIONS: dict[str, tuple[Formula, Formula, Formula]] = {
    'attn_proj': (attn_proj__flops, attn_proj__weight_bytes, attn_proj__other_bytes),
    'attn_core': (attn_core__flops, attn_core__weight_bytes, attn_core__other_bytes),
    'router': (router__flops, router__weight_bytes, router__other_bytes),
    'routed_experts': (routed_experts__flops, routed_experts__weight_bytes, routed_experts__other_bytes),
    'routed_experts_dense': (routed_experts_dense__flops, routed_experts_dense__weight_bytes, routed_experts_dense__other_bytes),
    'shared_experts': (shared_experts__flops, shared_experts__weight_bytes, shared_experts__other_bytes),
    'dense_ffn': (dense_ffn__flops, dense_ffn__weight_bytes, dense_ffn__other_bytes),
    'lm_head': (lm_head__flops, lm_head__weight_bytes, lm_head__other_bytes),
}
