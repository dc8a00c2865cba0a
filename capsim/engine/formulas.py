"""The per-operation FLOPs and bytes of a decoder step, written once as symbolic formulas.

Each formula is a sympy expression over the symbols below; :func:`compiled` lambdifies it to a numpy
function once, and both the scalar ``predict`` path and vectorised sweeps evaluate those same functions, so
they cannot disagree. ``capsim explain`` prints the expressions.

Conventions (per decoder layer, per step, whole model replica, before any tensor-parallel split):
- A GEMM with N weight parameters over T tokens costs 2·T·N FLOPs (one multiply and one add per weight per
  token) and reads N·b_w bytes of weights once per step, plus T·(d_in + d_out)·b_a bytes of activations.
- Attention over the KV cache: 2·H·pairs·(d_qk + d_v) FLOPs, where ``pairs`` is the number of
  (query, key) pairs the step scores (decode: B·c; causal prefill of P tokens: B·P(P+1)/2, window-capped),
  and it reads ``kv_read_tokens``·kv_e·b_kv bytes of cache and writes T·kv_e·b_kv.
- Routed experts: every token computes its top-k experts (2·T·k·N_exp FLOPs) but the step reads only the
  A distinct experts the batch activates (A·N_exp·b_w bytes): the sparsity MoE-CAP's S-MBU counts.
  The *dense* variants (``*_dense``) charge all E experts, as dense MBU/MFU assume.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
import sympy as sp

# --- symbols ---------------------------------------------------------------------------------------------
T, B, pairs, kv_read = sp.symbols("T B pairs kv_read_tokens", nonnegative=True)
d, V = sp.symbols("d V", positive=True)
N_attn, w_qkv, w_o = sp.symbols("N_attn w_qkv w_o", nonnegative=True)
H, d_qk, d_v, kv_e = sp.symbols("H d_qk d_v kv_e", nonnegative=True)
E, k, A, N_exp, N_sh, N_router, N_dense = sp.symbols("E k A N_exp N_sh N_router N_dense", nonnegative=True)
b_w, b_kv, b_a = sp.symbols("b_w b_kv b_a", positive=True)

SYMBOL_MEANINGS: dict[sp.Symbol, str] = {
    T: "tokens processed in the step (decode: batch; prefill: prompt tokens in the chunk)",
    B: "sequences in the step",
    pairs: "query-key pairs scored by attention in the step",
    kv_read: "tokens of KV cache read from memory in the step",
    d: "hidden size",
    V: "vocabulary size",
    N_attn: "attention projection parameters per layer",
    w_qkv: "width of the fused q, k, v projection output",
    w_o: "width of the attention output projection input (H·d_v)",
    H: "query heads",
    d_qk: "query/key head width in the score product (MLA absorbed: kv_lora_rank + rope dim)",
    d_v: "value head width in the weighted sum (MLA absorbed: kv_lora_rank)",
    kv_e: "KV-cache elements per token per layer",
    E: "routed experts per MoE layer",
    k: "experts per token (top-k)",
    A: "distinct routed experts activated by the step",
    N_exp: "parameters of one routed expert",
    N_sh: "parameters of the shared expert(s) of a MoE layer",
    N_router: "router parameters per MoE layer",
    N_dense: "parameters of a dense FFN layer",
    b_w: "bytes per weight",
    b_kv: "bytes per KV-cache element",
    b_a: "bytes per activation element",
}


@dataclass(frozen=True)
class OpFormula:
    """FLOPs and bytes of one operation as sympy expressions. ``weight_bytes`` is the part of ``bytes``
    that is weights (what S-MBU's S_activated counts); the rest is activations and KV cache."""

    name: str
    description: str
    flops: sp.Expr
    weight_bytes: sp.Expr
    other_bytes: sp.Expr

    @property
    def bytes(self) -> sp.Expr:
        return self.weight_bytes + self.other_bytes


_ZERO = sp.Integer(0)

OPS: dict[str, OpFormula] = {
    op.name: op
    for op in (
        OpFormula(
            "attn_proj",
            "q, k, v and output projections",
            flops=2 * T * N_attn,
            weight_bytes=N_attn * b_w,
            other_bytes=T * (d + w_qkv + w_o + d) * b_a,
        ),
        OpFormula(
            "attn_core",
            "scores and weighted sum over the KV cache",
            flops=2 * H * pairs * (d_qk + d_v),
            weight_bytes=_ZERO,
            other_bytes=(kv_read + T) * kv_e * b_kv,
        ),
        OpFormula(
            "router",
            "gate logits and top-k",
            flops=2 * T * N_router,
            weight_bytes=N_router * b_w,
            other_bytes=T * (d + E) * b_a,
        ),
        OpFormula(
            "routed_experts",
            "activated routed experts (top-k per token, A distinct per step)",
            flops=2 * T * k * N_exp,
            weight_bytes=A * N_exp * b_w,
            other_bytes=2 * T * k * d * b_a,
        ),
        OpFormula(
            "routed_experts_dense",
            "all E routed experts, as dense MBU/MFU assume",
            flops=2 * T * E * N_exp,
            weight_bytes=E * N_exp * b_w,
            other_bytes=2 * T * E * d * b_a,
        ),
        OpFormula(
            "shared_experts",
            "always-active shared expert(s)",
            flops=2 * T * N_sh,
            weight_bytes=N_sh * b_w,
            other_bytes=2 * T * d * b_a,
        ),
        OpFormula(
            "dense_ffn",
            "dense FFN of a non-MoE layer",
            flops=2 * T * N_dense,
            weight_bytes=N_dense * b_w,
            other_bytes=2 * T * d * b_a,
        ),
        OpFormula(
            "lm_head",
            "output projection for the last token of each sequence",
            flops=2 * B * d * V,
            weight_bytes=d * V * b_w,
            other_bytes=B * (d + V) * b_a,
        ),
    )
}


@dataclass(frozen=True)
class CompiledOp:
    """numpy-callable versions of an :class:`OpFormula` (keyword arguments named after the symbols)."""

    name: str
    args: tuple[str, ...]
    flops: Callable[..., np.ndarray]
    weight_bytes: Callable[..., np.ndarray]
    other_bytes: Callable[..., np.ndarray]


def _lambdify(expr: sp.Expr, args: tuple[sp.Symbol, ...]) -> Callable[..., np.ndarray]:
    fn: Callable[..., np.ndarray] = sp.lambdify(args, expr, modules="numpy")  # sympy is untyped
    return fn


@cache
def compiled(name: str) -> CompiledOp:
    """Lambdify operation ``name`` once; call the result with keyword arrays (broadcasting applies)."""
    op = OPS[name]
    symbols = tuple(
        sorted(op.flops.free_symbols | op.weight_bytes.free_symbols | op.other_bytes.free_symbols, key=str)
    )
    return CompiledOp(
        name=name,
        args=tuple(str(s) for s in symbols),
        flops=_lambdify(op.flops, symbols),
        weight_bytes=_lambdify(op.weight_bytes, symbols),
        other_bytes=_lambdify(op.other_bytes, symbols),
    )


# The numeric path (evaluate, ring_allreduce_time) lives in capsim.engine.formulas_eval so that predict runs
# without importing sympy; re-exported here for callers that use the table and its evaluation together.
from capsim.engine.formulas_eval import evaluate, ring_allreduce_time  # noqa: E402, F401  (re-exported)


def compiled_source() -> str:
    """Python source of :mod:`capsim.engine._formulas_compiled`: every operation's three expressions as plain
    functions of their symbols (sorted by name, the order :func:`compiled` uses)."""
    from sympy.printing.pycode import PythonCodePrinter

    printer = PythonCodePrinter()
    lines = [
        '"""GENERATED from capsim/engine/formulas.py by `python -m capsim.engine.formulas > capsim/engine/_formulas_compiled.py`;',
        'do not edit (tests/test_formulas_compiled.py fails when this file and the table differ)."""',
        "",
        "# ruff: noqa",
        "from __future__ import annotations",
        "",
        "from collections.abc import Callable",
        "from typing import Any",
        "",
        "# Arguments are Python numbers or numpy arrays (broadcast together); the result has their type.",
        "Formula = Callable[..., Any]",
        "",
        "",
    ]
    args_table, functions = [], []
    for name, op in OPS.items():
        symbols = sorted(
            op.flops.free_symbols | op.weight_bytes.free_symbols | op.other_bytes.free_symbols, key=str
        )
        arg_names = [str(s) for s in symbols]
        args_table.append(f"    {name!r}: {tuple(arg_names)!r},")
        parts = []
        for part in ("flops", "weight_bytes", "other_bytes"):
            expr = getattr(op, part)
            lines += [
                f"def {name}__{part}({', '.join(f'{a}: Any' for a in arg_names)}) -> Any:",
                f"    return {printer.doprint(expr)}",
                "",
                "",
            ]
            parts.append(f"{name}__{part}")
        functions.append(f"    {name!r}: ({', '.join(parts)}),")
    lines += [
        "ARGS: dict[str, tuple[str, ...]] = {",
        *args_table,
        "}",
        "",
        "FUNCTIONS: dict[str, tuple[Formula, Formula, Formula]] = {",
        *functions,
        "}",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    sys.stdout.write(compiled_source())
