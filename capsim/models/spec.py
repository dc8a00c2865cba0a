"""MoE model descriptors: the architecture facts the engine needs, and the quantities derived from them.

A :class:`ModelSpec` is built from a published Hugging Face ``config.json`` by :mod:`capsim.models.ingest_hf`
(one family-aware loader); nothing here reads files. Parameter counts are exact integer arithmetic over the
weight matrices (biases and norms included), so they can be checked against the published totals.

Conventions (docs/metrics.md):
- *total* parameters: every weight, input embedding and lm_head included.
- *active* parameters per token: attention, router, the top-k routed experts, shared experts, dense FFNs,
  norms and the lm_head; the input embedding table is excluded, because a token reads one row of it, not
  the table (OpenAI's gpt-oss card counts this way; for Mixtral it moves the count by 1 %).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from capsim.models.parts import AttentionSpec, FFNKind, MoESpec
from capsim.models.precision import Precision, kv_precision, weight_precision

WEIGHT_GROUPS: tuple[str, ...] = (
    "attention",
    "router",
    "routed_experts",
    "shared_experts",
    "dense_ffn",
    "norms",
    "embeddings",
    "lm_head",
)
"""The weight groups bytes are reported by, in display order."""

QUANTISABLE_GROUPS: tuple[str, ...] = ("attention", "routed_experts", "shared_experts", "dense_ffn")
"""The GEMM weights a ``--weight-dtype`` override applies to; router, norms, embeddings and lm_head stay bf16
(as quantised checkpoints keep them, and as capsim.engine.resolve.weight_precisions does)."""


@dataclass(frozen=True)
class ModelSpec:
    """One decoder-only MoE language model, as published. Units: counts of parameters/elements."""

    id: str
    name: str
    family: str
    source: str
    hidden_size: int
    num_layers: int
    vocab_size: int
    attention: AttentionSpec
    ffn_kinds: tuple[FFNKind, ...]
    """The FFN of each decoder layer, in order (len == num_layers)."""
    moe: MoESpec | None
    dense_intermediate_size: int = 0
    """FFN width of the dense (non-MoE) layers; 0 if there are none."""
    gated_ffn: bool = True
    """SwiGLU-style FFN with gate, up and down projections (3 matrices) vs up/down only (2)."""
    tie_word_embeddings: bool = False
    layer_windows: tuple[int | None, ...] = ()
    """Attention window (tokens kept in the KV cache) per layer; None = full attention. Empty = all full."""
    max_context: int | None = None
    native_dtypes: dict[str, str] = field(default_factory=dict)
    """Published storage precision per weight group (e.g. GPT-OSS routed_experts: mxfp4); default bf16."""
    notes: tuple[str, ...] = ()
    norms_per_layer: int = 2
    """Norm weight vectors per decoder layer: 2 (pre-attention, pre-FFN); Grok-1 has 4 (post-norms too)."""
    norm_bias: bool = False
    """LayerNorm with a bias vector (Phi-3.5-MoE) instead of a weight-only RMSNorm."""
    lm_head_bias: bool = False
    """A bias on the output projection (Phi-3.5-MoE ``lm_head_bias``): vocab_size extra parameters."""
    mtp_modules: int = 0
    """Multi-token-prediction modules in the checkpoint (DeepSeek-V3 ``num_nextn_predict_layers``): one decoder
    layer each plus a 2d x d projection, sharing the embedding and lm_head. Plain decoding does not run them;
    ``--spec mtp:K`` drafts with them (capsim.engine.speculative)."""
    window_kind: Literal["sliding", "chunked"] = "sliding"
    """How windowed layers attend: a sliding window of the last W tokens (GPT-OSS) or fixed chunks of W
    tokens (Llama-4 chunked attention). Both keep at most W tokens of KV per layer."""

    # ---- layer structure -------------------------------------------------------------------------------
    @property
    def num_moe_layers(self) -> int:
        return sum(1 for k in self.ffn_kinds if k is FFNKind.MOE)

    @property
    def num_dense_layers(self) -> int:
        return self.num_layers - self.num_moe_layers

    @property
    def is_moe(self) -> bool:
        return self.moe is not None and self.num_moe_layers > 0

    def window(self, layer: int) -> int | None:
        return self.layer_windows[layer] if self.layer_windows else None

    # ---- per-block parameter counts --------------------------------------------------------------------
    def _ffn_params(self, width: int, bias: bool = False) -> int:
        d = self.hidden_size
        n_mat = 3 if self.gated_ffn else 2
        total = n_mat * d * width
        if bias:
            total += (2 * width if self.gated_ffn else width) + d
        return total

    @property
    def attention_params_per_layer(self) -> int:
        return self.attention.params(self.hidden_size)

    @property
    def expert_params(self) -> int:
        """Parameters of one routed expert."""
        if self.moe is None:
            return 0
        return self._ffn_params(self.moe.expert_intermediate_size, self.moe.expert_bias)

    @property
    def router_params_per_moe_layer(self) -> int:
        if self.moe is None:
            return 0
        e = self.moe.num_experts
        total = self.hidden_size * e
        if self.moe.router_bias:
            total += e
        if self.moe.score_correction_bias:
            total += e
        return total

    @property
    def shared_params_per_moe_layer(self) -> int:
        if self.moe is None or self.moe.shared_intermediate_size == 0:
            return 0
        total = self._ffn_params(self.moe.shared_intermediate_size)
        if self.moe.shared_expert_gate:
            total += self.hidden_size
        return total

    @property
    def dense_ffn_params_per_layer(self) -> int:
        return self._ffn_params(self.dense_intermediate_size) if self.dense_intermediate_size else 0

    @property
    def norm_params_per_layer(self) -> int:
        """Norm parameters per decoder layer: ``norms_per_layer`` vectors of hidden_size (x2 with a bias)."""
        return self.norms_per_layer * self._norm_params

    @property
    def _norm_params(self) -> int:
        return self.hidden_size * (2 if self.norm_bias else 1)

    @property
    def embedding_params(self) -> int:
        """Parameters of the input embedding table, vocab_size x hidden_size."""
        return self.vocab_size * self.hidden_size

    @property
    def _lm_head_params(self) -> int:
        """The output projection as used per token: the (possibly tied) table plus an optional bias."""
        return self.embedding_params + (self.vocab_size if self.lm_head_bias else 0)

    # ---- whole-model counts ----------------------------------------------------------------------------
    def params_by_group(self) -> dict[str, int]:
        """Total parameters per weight group (see :data:`WEIGHT_GROUPS`)."""
        n_moe, n_dense = self.num_moe_layers, self.num_dense_layers
        e = self.moe.num_experts if self.moe else 0
        embed = self.embedding_params
        # a tied lm_head stores no matrix of its own, but a bias (Phi-3.5-MoE) is still a separate vector
        lm_head = self._lm_head_params - (embed if self.tie_word_embeddings else 0)
        return {
            "attention": self.num_layers * self.attention_params_per_layer,
            "router": n_moe * self.router_params_per_moe_layer,
            "routed_experts": n_moe * e * self.expert_params,
            "shared_experts": n_moe * self.shared_params_per_moe_layer,
            "dense_ffn": n_dense * self.dense_ffn_params_per_layer,
            "norms": self.num_layers * self.norm_params_per_layer + self._norm_params,
            "embeddings": embed,
            "lm_head": lm_head,
        }

    def active_params_by_group(self) -> dict[str, int]:
        """Parameters one token computes with: top-k routed experts, no input-embedding table."""
        groups = self.params_by_group()
        k = self.moe.top_k if self.moe else 0
        groups["routed_experts"] = self.num_moe_layers * k * self.expert_params
        groups["embeddings"] = 0
        # every token's logits read the whole output matrix, tied to the input table or not
        groups["lm_head"] = self._lm_head_params
        return groups

    @property
    def total_params(self) -> int:
        return sum(self.params_by_group().values())

    @property
    def active_params(self) -> int:
        return sum(self.active_params_by_group().values())

    # ---- KV cache ---------------------------------------------------------------------------------------
    def kv_elements_per_token(self, context: int | None = None) -> float:
        """KV-cache elements per token of context, summed over layers.

        With ``context`` given, sliding-window/chunked layers hold at most ``window`` tokens, so their share
        is scaled by min(context, window)/context: the figure becomes the *average* per token at that length.
        """
        per_layer = self.attention.kv_elements_per_token()
        if context is None or not self.layer_windows:
            return float(per_layer * self.num_layers)
        total = 0.0
        for layer in range(self.num_layers):
            w = self.window(layer)
            total += per_layer * (1.0 if w is None or context <= 0 else min(context, w) / context)
        return total

    def kv_cache_bytes_per_token(self, kv_dtype: str = "bf16", context: int | None = None) -> float:
        """KV-cache bytes per token of context: :meth:`kv_elements_per_token` x bytes per element of
        ``kv_dtype`` (see :mod:`capsim.models.precision`). MLA-aware (compressed latent) and, with ``context``,
        window-aware (average per token at that context length)."""
        return self.kv_elements_per_token(context) * kv_precision(kv_dtype).bytes_per_element

    # ---- weight storage ---------------------------------------------------------------------------------
    def weight_dtype(self, group: str) -> str:
        """Published storage precision of weight ``group`` (``native_dtypes``; bf16 where not listed)."""
        return self.native_dtypes.get(group, "bf16")

    def weight_precisions(self, weight_dtype: str | None = None) -> dict[str, Precision]:
        """Storage precision per weight group: the native dtypes; or ``weight_dtype`` for the
        :data:`QUANTISABLE_GROUPS` with the other groups in bf16; or, for a GGUF file type (``q4_k_m``), the
        mix llama.cpp's quantizer writes per group, embeddings and lm_head included (:mod:`capsim.models.gguf`)."""
        if weight_dtype is None:
            return {g: weight_precision(self.weight_dtype(g)) for g in WEIGHT_GROUPS}
        from capsim.models.ggml_types import is_gguf
        from capsim.models.gguf import group_precisions

        if is_gguf(weight_dtype):
            mixed = group_precisions(self, weight_dtype)
            return {g: mixed.get(g, weight_precision("bf16")) for g in WEIGHT_GROUPS}
        chosen = weight_precision(weight_dtype)
        return {g: chosen if g in QUANTISABLE_GROUPS else weight_precision("bf16") for g in WEIGHT_GROUPS}

    def weight_dtypes(self, weight_dtype: str | None = None) -> dict[str, str]:
        """Names of :meth:`weight_precisions` per group."""
        return {g: p.name for g, p in self.weight_precisions(weight_dtype).items()}

    def weight_bytes_by_group(self, weight_dtype: str | None = None) -> dict[str, float]:
        """Bytes of each weight group: params_by_group x bytes per element of :meth:`weight_precisions`.
        Block-scale overheads are included through ``Precision.bits_per_element`` (mxfp4: 4.25 bits)."""
        precisions = self.weight_precisions(weight_dtype)
        return {g: n * precisions[g].bytes_per_element for g, n in self.params_by_group().items()}
