"""The parts of a model descriptor: attention variant, MoE block and the kind of each layer's feed-forward block."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal

AttentionKind = Literal["gqa", "mla"]


class FFNKind(str, Enum):
    """What the feed-forward block of a decoder layer is."""

    MOE = "moe"
    DENSE = "dense"


@dataclass(frozen=True)
class AttentionSpec:
    """Attention shapes of one decoder layer (identical across layers in every supported family).

    GQA/MHA: ``num_heads`` query heads and ``num_kv_heads`` key/value heads of ``head_dim``.
    MLA (DeepSeek-V2/V3): queries optionally through a low-rank ``q_lora_rank`` bottleneck; keys and values
    through a compressed latent of ``kv_lora_rank`` plus a decoupled RoPE key of ``qk_rope_head_dim``, which
    is what the KV cache stores (arXiv:2405.04434 §2.1).
    """

    kind: AttentionKind
    num_heads: int
    num_kv_heads: int
    head_dim: int
    qkv_bias: bool = False
    o_bias: bool = False
    sinks: bool = False
    """Learned per-head attention-sink logits (GPT-OSS): ``num_heads`` extra parameters per layer."""
    qk_norm: bool = False
    """Per-head RMSNorm on q and k (OLMoE: over the full q/k width; Qwen3: over head_dim)."""
    qk_norm_width: int = 0
    k_norm_width: int | None = None
    """Width of the k-norm weight where it differs from the q-norm's (OLMoE with GQA: H_kv·d_h); None: same."""
    # MLA only
    q_lora_rank: int | None = None
    kv_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0

    @property
    def qk_head_dim(self) -> int:
        """Width of one query/key head used in the score product."""
        if self.kind == "mla":
            return self.qk_nope_head_dim + self.qk_rope_head_dim
        return self.head_dim

    @property
    def value_head_dim(self) -> int:
        return self.v_head_dim if self.kind == "mla" else self.head_dim

    def kv_elements_per_token(self) -> int:
        """KV-cache elements stored per token per layer (per full replica, before any TP split).

        GQA: K and V of every KV head, 2·H_kv·d_h. MLA: the compressed latent plus the RoPE key,
        kv_lora_rank + qk_rope_head_dim (512 + 64 = 576 for DeepSeek-V2/V3; models.md §3).
        """
        if self.kind == "mla":
            return self.kv_lora_rank + self.qk_rope_head_dim
        return 2 * self.num_kv_heads * self.head_dim

    def params(self, hidden_size: int) -> int:
        """Weight parameters of one attention block (projections, biases, q/k norms, sinks; not the layer norm)."""
        d = hidden_size
        if self.kind == "mla":
            h = self.num_heads
            qk = self.qk_head_dim
            if self.q_lora_rank:
                # W_DQ, its RMSNorm, W_UQ
                q = d * self.q_lora_rank + self.q_lora_rank + self.q_lora_rank * h * qk
            else:
                q = d * h * qk
            # W_DKV together with W_KR (d -> r_kv + d_rope), the latent RMSNorm, W_UK and W_UV
            kv = d * (self.kv_lora_rank + self.qk_rope_head_dim) + self.kv_lora_rank
            kv += self.kv_lora_rank * h * (self.qk_nope_head_dim + self.v_head_dim)
            o = h * self.v_head_dim * d
            return q + kv + o
        q_out = self.num_heads * self.head_dim
        kv_out = self.num_kv_heads * self.head_dim
        total = d * (q_out + 2 * kv_out) + q_out * d
        if self.qkv_bias:
            total += q_out + 2 * kv_out
        if self.o_bias:
            total += d
        if self.sinks:
            total += self.num_heads
        if self.qk_norm:
            k_width = self.qk_norm_width if self.k_norm_width is None else self.k_norm_width
            total += self.qk_norm_width + k_width
        return total


@dataclass(frozen=True)
class MoESpec:
    """The mixture-of-experts block of a MoE layer.

    ``expert_intermediate_size`` is one routed expert's FFN width. Shared experts are always active; their
    combined width is ``shared_intermediate_size`` (DeepSeek: n_shared_experts x moe_intermediate_size;
    Qwen2-MoE: shared_expert_intermediate_size, plus a d->1 sigmoid gate).
    """

    num_experts: int
    top_k: int
    expert_intermediate_size: int
    num_shared_experts: int = 0
    shared_intermediate_size: int = 0
    shared_expert_gate: bool = False
    router_bias: bool = False
    expert_bias: bool = False
    """Biases on the expert projections (GPT-OSS)."""
    score_correction_bias: bool = False
    """DeepSeek-V3's per-expert bias for aux-loss-free balancing (E parameters)."""
    n_group: int = 1
    topk_group: int = 1
