"""GGUF (llama.cpp) weight formats: bits per weight of the ggml block types, and which type each tensor of a
GGUF *file type* (Q4_K_M, Q8_0, IQ4_XS, ...) gets, so a ``--weight-dtype q4_k_m`` model reads as many bytes
as the file llama.cpp's quantizer writes.

Sources (read from the stored copies):

- Block sizes: ggml-org/llama.cpp ``ggml/src/ggml-common.h`` (commit 01243c58), the ``block_*`` structs and
  their ``static_assert(sizeof(...))``: e.g. block_q4_0 = fp16 scale + 16 bytes of nibbles = 18 bytes per 32
  weights = 4.5 bits; block_q6_K = 210 bytes per 256 = 6.5625 bits.
- Per-tensor types: ggml-org/llama.cpp ``src/llama-quant.cpp`` (commit 007dbbf3),
  ``llama_ftype_get_default_type`` (the file type's default ggml type) and ``llama_tensor_get_type_impl``
  (the exceptions: output.weight in Q6_K, attn_v / ffn_down in Q6_K on ``use_more_bits`` layers for
  Q4_K_M and Q5_K_M, attn_k / attn_v in Q8_0 for 8-expert models, ...); MXFP4_MOE (gpt-oss GGUFs): the
  output tensor and every 2-D tensor Q8_0, the 3-D expert tensors MXFP4 (block_mxfp4: 17 bytes per 32). ``n_layer`` of ``use_more_bits`` is
  the model's layer count (``init_quantize_state_counters``).

Modelled without an importance matrix (the Q4_0/Q5_0 imatrix exception of ffn_down is left out) and for the
default quantizer options (quantized output tensor, no --pure, no per-tensor overrides). Norms, the router
(``ffn_gate_inp``, never quantized) and biases keep capsim's bf16.
"""

from __future__ import annotations

from typing import Protocol

from capsim.models.ggml_types import FILE_TYPES, NATIVE_COMPUTE, bits
from capsim.models.parts import AttentionSpec, FFNKind, MoESpec
from capsim.models.precision import Precision


class LayerShapes(Protocol):
    """What the quantizer's per-tensor rules read of a model (capsim.models.spec.ModelSpec has all of it; a
    protocol, so that ModelSpec can ask this module for its GGUF precisions without an import cycle)."""

    @property
    def num_layers(self) -> int: ...
    @property
    def hidden_size(self) -> int: ...
    @property
    def attention(self) -> AttentionSpec: ...
    @property
    def moe(self) -> MoESpec | None: ...
    @property
    def ffn_kinds(self) -> tuple[FFNKind, ...]: ...
    @property
    def gated_ffn(self) -> bool: ...
    @property
    def tie_word_embeddings(self) -> bool: ...
    @property
    def attention_params_per_layer(self) -> int: ...


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    """llama-quant.cpp's ``use_more_bits``: the first and last eighth of the layers and every third between."""
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


def _ffn_down_type(ftype: str, base: str, i: int, n: int) -> str:
    """ffn_down (dense, shared-expert and routed-expert tensors alike) of layer ``i`` of ``n``."""
    if ftype == "q2_k":
        return "q3_k"
    if ftype == "q3_k_m":
        return "q5_k" if i < n // 16 else "q4_k"  # non-Falcon: use_more_bits or not, Q4_K
    if ftype == "q3_k_l":
        return "q5_k"
    if ftype == "q4_k_m":
        return "q6_k" if use_more_bits(i, n) else base
    if ftype in ("iq4_nl", "iq4_xs") and i < n // 8:
        return "q5_k"
    if ftype == "q5_k_m" and use_more_bits(i, n):
        return "q6_k"
    if ftype == "q4_k_s" and i < n // 8:
        return "q5_k"
    if ftype == "iq3_m" and i < n // 8:
        return "q4_k"
    return base


def _attn_v_type(ftype: str, base: str, i: int, n: int, gqa: int, n_expert: int) -> str:
    """attn_v (or MLA's attn_kv_b) of the i-th such tensor of n."""
    t = base
    if ftype in ("iq2_xxs", "iq2_xs", "iq1_s", "iq2_s", "iq2_m", "iq1_m"):
        t = "q4_k" if gqa >= 4 or n_expert >= 4 else ("iq3_s" if ftype in ("iq2_s", "iq2_m") else "q2_k")
        return t
    if ftype == "q2_k":
        t = "q4_k" if gqa >= 4 else "q3_k"
    elif ftype == "iq3_xxs":
        t = "q4_k" if gqa >= 4 else "iq3_s"
    elif (ftype in ("iq3_xs", "iq3_s") and gqa >= 4) or ftype == "iq3_m":
        t = "q4_k"
    elif ftype == "q3_k_m":
        t = "q5_k" if i < 2 else "q4_k"
    elif ftype == "q3_k_l" or (ftype in ("iq4_nl", "iq4_xs") and gqa >= 4):
        t = "q5_k"
    elif ftype in ("q4_k_m", "q5_k_m") and use_more_bits(i, n):
        t = "q6_k"
    elif ftype == "q4_k_s" and i < 4:
        t = "q5_k"
    if n_expert == 8:
        t = "q8_0"
    return t


def _attn_output_type(ftype: str, base: str, n_expert: int) -> str:
    if n_expert == 8:
        bumped = (
            "q2_k",
            "iq3_xs",
            "iq3_xxs",
            "q3_k_s",
            "q3_k_m",
            "iq4_nl",
            "q4_k_s",
            "q4_k_m",
            "iq3_s",
            "iq3_m",
            "iq4_xs",
            "iq2_xxs",
            "iq2_xs",
            "iq1_s",
            "iq2_s",
            "iq2_m",
            "iq1_m",
        )
        return "q5_k" if ftype in bumped else base
    return {"q2_k": "q3_k", "iq3_xxs": "iq3_s", "q3_k_m": "q4_k", "q3_k_l": "q5_k", "iq3_m": "q4_k"}.get(
        ftype, base
    )


def _output_type(ftype: str, base: str) -> str:
    """output.weight (the lm_head; also a tied token_embd)."""
    if ftype in ("iq2_xxs", "iq2_xs", "iq3_xxs", "iq1_s", "iq2_s", "iq2_m", "iq1_m"):
        return "q5_k"
    return base if base == "q8_0" else "q6_k"


def _token_embd_type(ftype: str, base: str) -> str:
    if ftype in ("iq2_xxs", "iq2_xs", "iq1_s", "iq1_m"):
        return "q2_k"
    if ftype in ("iq2_s", "iq2_m", "iq3_xxs"):
        return "iq3_s"
    return base


def _mix(parts: list[tuple[float, str]]) -> float:
    """Bits per weight of a set of tensors: parameter-weighted mean over (parameters, ggml type)."""
    total = sum(p for p, _ in parts)
    return sum(p * bits(t) for p, t in parts) / total if total else 0.0


def group_bits(model: LayerShapes, name: str) -> dict[str, float]:
    """Bits per weight of every quantised weight group of ``model`` stored as GGUF ``name``.

    Groups: attention, routed_experts, shared_experts, dense_ffn, embeddings, lm_head (router and norms are
    left to the caller). Mixed groups are parameter-weighted means over layers and tensors."""
    key = name.lower()
    pure = key not in FILE_TYPES
    base = FILE_TYPES.get(key, key)
    if key == "mxfp4_moe":
        # llama_tensor_get_type_impl: output.weight Q8_0; 3-D (expert) tensors MXFP4; every other tensor Q8_0
        q8 = bits("q8_0")
        return {
            "attention": q8,
            "routed_experts": bits("mxfp4"),
            "shared_experts": q8,
            "dense_ffn": q8,
            "embeddings": q8,
            "lm_head": q8,
        }
    if pure:
        b = bits(base)
        return dict.fromkeys(
            ("attention", "routed_experts", "shared_experts", "dense_ffn", "embeddings", "lm_head"), b
        )
    n = model.num_layers
    n_expert = model.moe.num_experts if model.moe else 0
    att = model.attention
    d = model.hidden_size
    gqa = att.num_heads // max(att.num_kv_heads, 1) if att.kind != "mla" else 1
    if att.kind == "mla":
        # attn_kv_b is the attn_v-like tensor; the q/kv down-projections and attn_output keep the others' rules
        v_like = att.kv_lora_rank * att.num_heads * (att.qk_nope_head_dim + att.v_head_dim)
        k_like = 0
        o = att.num_heads * att.v_head_dim * d
    else:
        v_like = k_like = d * att.num_kv_heads * att.head_dim
        o = att.num_heads * att.head_dim * d
    rest = max(model.attention_params_per_layer - v_like - k_like - o, 0)
    k_type = "q8_0" if n_expert == 8 else base
    attention: list[tuple[float, str]] = []
    for i in range(n):
        attention += [
            (v_like, _attn_v_type(key, base, i, n, gqa, n_expert)),
            (k_like, k_type),
            (o, _attn_output_type(key, base, n_expert)),
            (rest, base),
        ]
    # gate/up in the base type; down by layer: a third of a gated FFN's matrices, half of an ungated one's
    down_share = 1.0 / 3.0 if model.gated_ffn else 0.5
    moe_layers = [i for i, k in enumerate(model.ffn_kinds) if k.value == "moe"]
    dense_layers = [i for i, k in enumerate(model.ffn_kinds) if k.value != "moe"]

    def ffn(layers: list[int]) -> float:
        if not layers:
            return bits(base)
        parts: list[tuple[float, str]] = []
        for i in layers:
            parts += [(1.0 - down_share, base), (down_share, _ffn_down_type(key, base, i, n))]
        return _mix(parts)

    return {
        "attention": _mix(attention),
        "routed_experts": ffn(moe_layers),
        "shared_experts": ffn(moe_layers),
        "dense_ffn": ffn(dense_layers),
        "embeddings": bits(
            _output_type(key, base) if model.tie_word_embeddings else _token_embd_type(key, base)
        ),
        "lm_head": bits(_output_type(key, base)),
    }


def group_precisions(model: LayerShapes, name: str) -> dict[str, Precision]:
    """:func:`group_bits` as :class:`Precision` objects named after the file type."""
    key = name.lower()
    return {g: Precision(key, b, NATIVE_COMPUTE) for g, b in group_bits(model, key).items()}
