"""Build a :class:`~capsim.models.spec.ModelSpec` from a published Hugging Face ``config.json``.

One loader, keyed by ``model_type`` (then ``architectures``), with a per-family field map: MoE families name
the same quantity differently (``num_local_experts`` / ``num_experts`` / ``n_routed_experts`` /
``ffn_config.moe_num_experts``; ``intermediate_size`` is the expert width in Mixtral and OLMoE but the dense
width in DeepSeek and Qwen) and differ in which layers are MoE (huggingface/trl PR#7069 crashed on exactly
this). Each family's builder reads only the keys that family defines, with the defaults of its
``transformers`` config class where one exists; a required key that is absent or of the wrong type raises
:class:`~capsim.errors.ConfigFieldError` naming the field and the file.

Families (docs/models.md has the full field map):

- ``mixtral``; ``phimoe`` (Phi-3.5-MoE: LayerNorm with bias, q/k/v/o and lm_head biases per config);
- ``deepseek_v2`` / ``deepseek_v3`` (MLA; dense layers before ``first_k_dense_replace``; shared experts;
  V3 ``noaux_tc`` adds a per-expert score-correction bias);
- ``qwen2_moe`` (shared expert of its own width with a d->1 sigmoid gate), ``qwen3_moe`` (q/k RMSNorm over
  head_dim); both with ``decoder_sparse_step`` and ``mlp_only_layers``;
- ``dbrx`` (nested ``attn_config`` / ``ffn_config``, its own key names), ``olmoe`` (QK-norm over the full q/k
  width);
- ``gpt_oss`` (``layer_types`` sliding/full attention, attention sinks, biases, mxfp4 experts);
- ``llama4`` (``text_config``; MoE every ``interleave_moe_layer_step`` layers, one shared expert per MoE
  layer, chunked attention);
- ``grok1``: Grok-1 has no HF config. The file shipped in model_db/ uses HF-style keys without
  ``model_type``; it is recognised by its ``_source`` pointing at github.com/xai-org/grok-1, or by an
  explicit ``family="grok1"`` (``--family grok1`` on the CLI) for a user's own copy.

Encoder-decoder models (Switch Transformers) raise :class:`~capsim.errors.UnsupportedModelError`.
"""

from __future__ import annotations

import builtins
import difflib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from capsim.errors import ConfigFieldError, DataFileError, UnsupportedModelError
from capsim.models.parts import AttentionSpec, FFNKind, MoESpec
from capsim.models.spec import ModelSpec

_REQUIRED: Any = object()
"""Sentinel default: the key must be present."""

_TORCH_DTYPES: dict[str, str] = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}

_LINEAR_GROUPS: tuple[str, ...] = ("attention", "routed_experts", "shared_experts", "dense_ffn")
"""Weight groups made of GEMM weights: what checkpoint quantisation converts."""

_ALL_GROUPS: tuple[str, ...] = (
    "attention",
    "router",
    "routed_experts",
    "shared_experts",
    "dense_ffn",
    "norms",
    "embeddings",
    "lm_head",
)

_ENCODER_DECODER_TYPES = frozenset({"switch_transformers", "nllb_moe", "t5", "mt5", "bart"})

_GROK1_SOURCE_MARK = "xai-org/grok-1"


# ---- typed field access ----------------------------------------------------------------------------------
class _Fields:
    """Typed, error-reporting access to one (possibly nested) config mapping.

    Every getter raises :class:`ConfigFieldError` naming the dotted field path and the file, with the fix.
    """

    def __init__(self, data: Mapping[str, Any], path: str, family: str, prefix: str = "") -> None:
        self.data = data
        self.path = path
        self.family = family
        self.prefix = prefix

    def _name(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def has(self, key: str) -> bool:
        return key in self.data and self.data[key] is not None

    def _raw(self, key: str, default: Any) -> Any:
        if key not in self.data:
            if default is _REQUIRED:
                raise ConfigFieldError(
                    self.path,
                    self._name(key),
                    f"is missing; {self.family} configs need it "
                    "(copy it from the model's published config.json)",
                )
            return default
        return self.data[key]

    def _bad(self, key: str, value: Any, expected: str) -> ConfigFieldError:
        return ConfigFieldError(
            self.path, self._name(key), f"must be {expected}, got {value!r}; correct it in the config file"
        )

    def int(self, key: str, default: Any = _REQUIRED, minimum: int = 1) -> int:
        value = self._raw(key, default)
        if value is default and default is not _REQUIRED:
            return value  # type: ignore[no-any-return]  # the caller's own default, returned as given
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            expected = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
            raise self._bad(key, value, expected)
        return value

    def optional_int(
        self, key: builtins.str, default: builtins.int | None = None, minimum: builtins.int = 1
    ) -> builtins.int | None:
        """An integer that may be JSON null (returned as None)."""
        value = self._raw(key, default)
        if value is None:
            return None
        return self.int(key, default=default, minimum=minimum)

    def bool(self, key: str, default: bool) -> bool:
        value = self._raw(key, default)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self._bad(key, value, "true or false")
        return value

    def str(self, key: str, default: Any = _REQUIRED) -> Any:
        value = self._raw(key, default)
        if value is default and default is not _REQUIRED:
            return value
        if not isinstance(value, str):
            raise self._bad(key, value, "a string")
        return value

    def int_list(
        self, key: builtins.str, default: Sequence[builtins.int] = (), minimum: builtins.int = 0
    ) -> tuple[builtins.int, ...]:
        value = self._raw(key, list(default))
        if value is None:
            return tuple(default)
        if not isinstance(value, list) or any(
            isinstance(v, bool) or not isinstance(v, int) or v < minimum for v in value
        ):
            raise self._bad(key, value, f"a list of integers >= {minimum}")
        return tuple(value)

    def str_list(self, key: builtins.str) -> tuple[builtins.str, ...] | None:
        value = self._raw(key, None)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._bad(key, value, "a list of strings")
        return tuple(value)

    def mapping(self, key: builtins.str, default: Any = _REQUIRED) -> Mapping[builtins.str, Any]:
        value = self._raw(key, default)
        if value is None and default is not _REQUIRED:
            return {}
        if not isinstance(value, Mapping):
            raise self._bad(key, value, "a JSON object")
        return value

    def nested(self, key: builtins.str, default: Any = _REQUIRED) -> _Fields:
        """Field access into the sub-object ``key`` (error names become ``key.sub``)."""
        return _Fields(self.mapping(key, default), self.path, self.family, f"{self.prefix}{key}.")

    def error(self, key: builtins.str, problem: builtins.str) -> ConfigFieldError:
        return ConfigFieldError(self.path, self._name(key), problem)


# ---- shared pieces ---------------------------------------------------------------------------------------
def _gqa(
    f: _Fields,
    hidden: int,
    *,
    heads_key: str = "num_attention_heads",
    kv_heads_key: str = "num_key_value_heads",
    head_dim_key: str | None = "head_dim",
    kv_heads_required: bool = False,
    **extra: Any,
) -> AttentionSpec:
    """Grouped-query attention. num_key_value_heads defaults to the query heads (MHA), head_dim to d/H:
    the defaults of the transformers config classes of these families."""
    heads = f.int(heads_key)
    kv_heads = f.int(kv_heads_key) if kv_heads_required else f.int(kv_heads_key, default=heads)
    if heads % kv_heads:
        raise f.error(
            kv_heads_key, f"({kv_heads}) must divide {heads_key} ({heads}); correct the config file"
        )
    head_dim = hidden // heads
    if head_dim_key is not None and f.has(head_dim_key):
        head_dim = f.int(head_dim_key)
    return AttentionSpec(kind="gqa", num_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim, **extra)


def _layer_kinds(n_layers: int, is_moe: Callable[[int], bool]) -> tuple[FFNKind, ...]:
    return tuple(FFNKind.MOE if is_moe(i) else FFNKind.DENSE for i in range(n_layers))


def _check_layer_indices(f: _Fields, key: str, indices: Sequence[int], n_layers: int) -> None:
    bad = [i for i in indices if i >= n_layers]
    if bad:
        raise f.error(key, f"lists layer {bad[0]}, outside 0..{n_layers - 1}; correct the config file")


def _native_dtypes(f: _Fields, notes: list[str]) -> dict[str, str]:
    """Storage precision per weight group: ``torch_dtype`` for every group, then ``quantization_config``.

    fp8 (DeepSeek-V3/R1: e4m3 with 128x128 block scales) converts the linear layers of attention and FFNs;
    the embeddings, lm_head, router and norms stay in torch_dtype (DeepSeek-V3 inference/model.py builds
    them in the default dtype). mxfp4 (GPT-OSS) converts the routed experts only: its
    ``modules_to_not_convert`` lists attention, router, embeddings and lm_head.
    """
    base = "bf16"
    if f.has("torch_dtype"):
        raw = f.str("torch_dtype")
        if raw not in _TORCH_DTYPES:
            raise f.error("torch_dtype", f"is {raw!r}; expected one of {', '.join(_TORCH_DTYPES)}")
        base = _TORCH_DTYPES[raw]
        if base == "fp32":
            notes.append(
                "torch_dtype float32: weights stored fp32; servers usually load them as bf16 "
                "(use --weight-dtype bf16)"
            )
    else:
        notes.append("torch_dtype absent: unquantised weights taken as bf16")
    dtypes = dict.fromkeys(_ALL_GROUPS, base)
    if not f.has("quantization_config"):
        return dtypes
    q = f.nested("quantization_config")
    method = q.str("quant_method", default="")
    if method == "fp8":
        for group in _LINEAR_GROUPS:
            dtypes[group] = "fp8"
        notes.append(
            "quantization_config fp8: attention and FFN linear weights stored fp8; "
            "embeddings, lm_head, router and norms in " + base
        )
    elif method == "mxfp4":
        dtypes["routed_experts"] = "mxfp4"
        notes.append("quantization_config mxfp4: routed experts stored mxfp4 (4.25 bits incl. block scales)")
    elif method in ("gptq", "awq") and q.int("bits", default=0, minimum=0) in (4, 8):
        bits = q.int("bits", minimum=1)
        for group in _LINEAR_GROUPS:
            dtypes[group] = "int4" if bits == 4 else "int8"
        notes.append(f"quantization_config {method} {bits}-bit: linear weights of attention and FFNs")
    else:
        notes.append(
            f"quantization_config {method or '(no quant_method)'} not interpreted: weights taken as "
            f"{base}; use --weight-dtype to override"
        )
    return dtypes


def _max_context(f: _Fields, key: str = "max_position_embeddings") -> int | None:
    return f.int(key) if f.has(key) else None


def _window_or_none(window: int | None, max_context: int | None) -> int | None:
    """A window as long as the context is no window: Phi-3.5-MoE and Qwen configs set one equal to it."""
    if window is None or (max_context is not None and window >= max_context):
        return None
    return window


# ---- family builders -------------------------------------------------------------------------------------
def _mixtral(f: _Fields, spec: dict[str, Any]) -> ModelSpec:
    notes: list[str] = []
    hidden = f.int("hidden_size")
    n_layers = f.int("num_hidden_layers")
    max_ctx = _max_context(f)
    window = _window_or_none(f.optional_int("sliding_window"), max_ctx)
    return ModelSpec(
        **spec,
        hidden_size=hidden,
        num_layers=n_layers,
        vocab_size=f.int("vocab_size"),
        attention=_gqa(f, hidden),
        ffn_kinds=(FFNKind.MOE,) * n_layers,
        moe=MoESpec(
            num_experts=f.int("num_local_experts"),
            top_k=f.int("num_experts_per_tok"),
            expert_intermediate_size=f.int("intermediate_size"),
        ),
        tie_word_embeddings=f.bool("tie_word_embeddings", False),
        layer_windows=(window,) * n_layers if window else (),
        max_context=max_ctx,
        native_dtypes=_native_dtypes(f, notes),
        notes=tuple(notes),
    )


def _phimoe(f: _Fields, spec: dict[str, Any]) -> ModelSpec:
    notes: list[str] = []
    hidden = f.int("hidden_size")
    n_layers = f.int("num_hidden_layers")
    max_ctx = _max_context(f)
    window = _window_or_none(f.optional_int("sliding_window"), max_ctx)
    bias = f.bool("attention_bias", False)  # PhimoeAttention: q/k/v/o all take config.attention_bias
    return ModelSpec(
        **spec,
        hidden_size=hidden,
        num_layers=n_layers,
        vocab_size=f.int("vocab_size"),
        attention=_gqa(f, hidden, head_dim_key=None, qkv_bias=bias, o_bias=bias),
        ffn_kinds=(FFNKind.MOE,) * n_layers,
        moe=MoESpec(
            num_experts=f.int("num_local_experts"),
            top_k=f.int("num_experts_per_tok"),
            expert_intermediate_size=f.int("intermediate_size"),
        ),
        tie_word_embeddings=f.bool("tie_word_embeddings", False),
        layer_windows=(window,) * n_layers if window else (),
        max_context=max_ctx,
        native_dtypes=_native_dtypes(f, notes),
        notes=tuple(notes),
        norm_bias=True,  # nn.LayerNorm (weight and bias), not RMSNorm, in every layer and at the end
        lm_head_bias=f.bool("lm_head_bias", False),
    )


def _deepseek(f: _Fields, spec: dict[str, Any]) -> ModelSpec:
    notes: list[str] = []
    hidden = f.int("hidden_size")
    n_layers = f.int("num_hidden_layers")
    heads = f.int("num_attention_heads")
    if f.bool("attention_bias", False):
        raise f.error(
            "attention_bias", "is true; capsim models MLA without projection biases (set it to false)"
        )
    if "q_lora_rank" not in f.data:
        raise f.error("q_lora_rank", "is missing; give the query LoRA rank, or null for no query compression")
    nope, rope = f.int("qk_nope_head_dim"), f.int("qk_rope_head_dim")
    attention = AttentionSpec(
        kind="mla",
        num_heads=heads,
        num_kv_heads=heads,
        head_dim=nope + rope,
        q_lora_rank=f.optional_int("q_lora_rank"),
        kv_lora_rank=f.int("kv_lora_rank"),
        qk_nope_head_dim=nope,
        qk_rope_head_dim=rope,
        v_head_dim=f.int("v_head_dim"),
    )
    first_dense = f.int("first_k_dense_replace", default=0, minimum=0)
    freq = f.int("moe_layer_freq", default=1)
    # modeling_deepseek.py: MoE iff n_routed_experts and layer_idx >= first_k_dense_replace
    # and layer_idx % moe_layer_freq == 0
    kinds = _layer_kinds(n_layers, lambda i: i >= first_dense and i % freq == 0)
    expert_width = f.int("moe_intermediate_size")
    n_shared = f.int("n_shared_experts", default=0, minimum=0) if f.has("n_shared_experts") else 0
    topk_method = f.str("topk_method", default="greedy")
    n_group = f.int("n_group", default=1)
    moe = MoESpec(
        num_experts=f.int("n_routed_experts"),
        top_k=f.int("num_experts_per_tok"),
        expert_intermediate_size=expert_width,
        num_shared_experts=n_shared,
        shared_intermediate_size=n_shared * expert_width,
        score_correction_bias=topk_method == "noaux_tc",
        n_group=n_group,
        topk_group=f.int("topk_group", default=n_group),
    )
    mtp_modules = f.int("num_nextn_predict_layers", default=0, minimum=0)
    if mtp_modules:
        notes.append(
            "multi-token-prediction module (num_nextn_predict_layers) not counted: plain decoding "
            "does not run it (--spec mtp:K does)"
        )
    return ModelSpec(
        **spec,
        hidden_size=hidden,
        num_layers=n_layers,
        vocab_size=f.int("vocab_size"),
        attention=attention,
        ffn_kinds=kinds,
        moe=moe,
        dense_intermediate_size=f.int("intermediate_size") if FFNKind.DENSE in kinds else 0,
        tie_word_embeddings=f.bool("tie_word_embeddings", False),
        max_context=_max_context(f),
        native_dtypes=_native_dtypes(f, notes),
        notes=tuple(notes),
        mtp_modules=mtp_modules,
    )


def _qwen_layer_rule(f: _Fields, n_layers: int) -> tuple[FFNKind, ...]:
    """Qwen2-MoE/Qwen3-MoE: layer i is MoE iff i not in mlp_only_layers and (i+1) % decoder_sparse_step == 0
    (Qwen2MoeDecoderLayer / Qwen3MoeDecoderLayer)."""
    step = f.int("decoder_sparse_step", default=1)
    mlp_only = f.int_list("mlp_only_layers")
    _check_layer_indices(f, "mlp_only_layers", mlp_only, n_layers)
    skip = set(mlp_only)
    return _layer_kinds(n_layers, lambda i: i not in skip and (i + 1) % step == 0)


def _qwen_windows(f: _Fields, n_layers: int, max_ctx: int | None) -> tuple[int | None, ...]:
    """Sliding window on layers >= max_window_layers when use_sliding_window (Qwen2/Qwen3 modeling code);
    an explicit ``layer_types`` list wins."""
    types = f.str_list("layer_types")
    if types is None and not f.bool("use_sliding_window", False):
        return ()
    window = _window_or_none(f.optional_int("sliding_window"), max_ctx)
    if window is None:
        return ()
    if types is None:
        start = f.int("max_window_layers", default=n_layers, minimum=0)
        return tuple(window if i >= start else None for i in range(n_layers))
    return _windows_from_types(f, types, n_layers, window, "sliding_attention")


def _windows_from_types(
    f: _Fields, types: Sequence[str], n_layers: int, window: int | None, windowed: str
) -> tuple[int | None, ...]:
    if len(types) != n_layers:
        raise f.error("layer_types", f"has {len(types)} entries for {n_layers} layers; give one per layer")
    allowed = {windowed, "full_attention"}
    for t in types:
        if t not in allowed:
            raise f.error("layer_types", f"has entry {t!r}; expected {windowed!r} or 'full_attention'")
    if windowed in types and window is None:
        key = "attention_chunk_size" if windowed == "chunked_attention" else "sliding_window"
        raise f.error(key, f"is missing; layer_types lists {windowed} layers, which need their window length")
    return tuple(window if t == windowed else None for t in types)


def _qwen2_moe(f: _Fields, spec: dict[str, Any]) -> ModelSpec:
    notes: list[str] = []
    hidden = f.int("hidden_size")
    n_layers = f.int("num_hidden_layers")
    kinds = _qwen_layer_rule(f, n_layers)
    max_ctx = _max_context(f)
    return ModelSpec(
        **spec,
        hidden_size=hidden,
        num_layers=n_layers,
        vocab_size=f.int("vocab_size"),
        # Qwen2 attention: biases on q, k and v, none on o
        attention=_gqa(f, hidden, head_dim_key=None, qkv_bias=True),
        ffn_kinds=kinds,
        moe=MoESpec(
            num_experts=f.int("num_experts"),
            top_k=f.int("num_experts_per_tok"),
            expert_intermediate_size=f.int("moe_intermediate_size"),
            num_shared_experts=1,
            shared_intermediate_size=f.int("shared_expert_intermediate_size"),
            shared_expert_gate=True,  # Linear(d, 1) with a sigmoid scales the shared expert's output
        ),
        dense_intermediate_size=f.int("intermediate_size") if FFNKind.DENSE in kinds else 0,
        tie_word_embeddings=f.bool("tie_word_embeddings", False),
        layer_windows=_qwen_windows(f, n_layers, max_ctx),
        max_context=max_ctx,
        native_dtypes=_native_dtypes(f, notes),
        notes=tuple(notes),
    )


def _qwen3_moe(f: _Fields, spec: dict[str, Any]) -> ModelSpec:
    notes: list[str] = []
    hidden = f.int("hidden_size")
    n_layers = f.int("num_hidden_layers")
    kinds = _qwen_layer_rule(f, n_layers)
    max_ctx = _max_context(f)
    bias = f.bool("attention_bias", False)
    attention = _gqa(f, hidden, qkv_bias=bias, o_bias=bias, qk_norm=True)
    # Qwen3 q_norm / k_norm are RMSNorm(head_dim), shared by all heads
    attention = _replace(attention, qk_norm_width=attention.head_dim)
    return ModelSpec(
        **spec,
        hidden_size=hidden,
        num_layers=n_layers,
        vocab_size=f.int("vocab_size"),
        attention=attention,
        ffn_kinds=kinds,
        moe=MoESpec(
            num_experts=f.int("num_experts"),
            top_k=f.int("num_experts_per_tok"),
            expert_intermediate_size=f.int("moe_intermediate_size"),
        ),
        dense_intermediate_size=f.int("intermediate_size") if FFNKind.DENSE in kinds else 0,
        tie_word_embeddings=f.bool("tie_word_embeddings", False),
        layer_windows=_qwen_windows(f, n_layers, max_ctx),
        max_context=max_ctx,
        native_dtypes=_native_dtypes(f, notes),
        notes=tuple(notes),
    )


def _dbrx(f: _Fields, spec: dict[str, Any]) -> ModelSpec:
    notes: list[str] = []
    hidden = f.int("d_model")
    n_layers = f.int("n_layers")
    attn = f.nested("attn_config")
    ffn = f.nested("ffn_config")
    heads = f.int("n_heads")
    kv_heads = attn.int("kv_n_heads")
    if heads % kv_heads:
        raise attn.error("kv_n_heads", f"({kv_heads}) must divide n_heads ({heads}); correct the config file")
    # DbrxAttention: one fused Wqkv and out_proj, no biases; norms are LayerNorm(bias=False)
    attention = AttentionSpec(kind="gqa", num_heads=heads, num_kv_heads=kv_heads, head_dim=hidden // heads)
    return ModelSpec(
        **spec,
        hidden_size=hidden,
        num_layers=n_layers,
        vocab_size=f.int("vocab_size"),
        attention=attention,
        ffn_kinds=(FFNKind.MOE,) * n_layers,
        moe=MoESpec(
            num_experts=ffn.int("moe_num_experts"),
            top_k=ffn.int("moe_top_k"),
            expert_intermediate_size=ffn.int("ffn_hidden_size"),
        ),
        tie_word_embeddings=f.bool("tie_word_embeddings", False),
        max_context=_max_context(f, "max_seq_len"),
        native_dtypes=_native_dtypes(f, notes),
        notes=tuple(notes),
    )


def _olmoe(f: _Fields, spec: dict[str, Any]) -> ModelSpec:
    notes: list[str] = []
    hidden = f.int("hidden_size")
    n_layers = f.int("num_hidden_layers")
    bias = f.bool("attention_bias", False)
    attention = _gqa(f, hidden, head_dim_key=None, qkv_bias=bias, o_bias=bias, qk_norm=True)
    # OlmoeAttention: q_norm = RMSNorm(hidden_size), k_norm = RMSNorm(head_dim * num_key_value_heads)
    attention = _replace(
        attention,
        qk_norm_width=attention.num_heads * attention.head_dim,
        k_norm_width=attention.num_kv_heads * attention.head_dim,
    )
    return ModelSpec(
        **spec,
        hidden_size=hidden,
        num_layers=n_layers,
        vocab_size=f.int("vocab_size"),
        attention=attention,
        ffn_kinds=(FFNKind.MOE,) * n_layers,
        moe=MoESpec(
            num_experts=f.int("num_experts"),
            top_k=f.int("num_experts_per_tok"),
            expert_intermediate_size=f.int("intermediate_size"),  # OLMoE: the per-expert width
        ),
        tie_word_embeddings=f.bool("tie_word_embeddings", False),
        max_context=_max_context(f),
        native_dtypes=_native_dtypes(f, notes),
        notes=tuple(notes),
    )


def _gpt_oss(f: _Fields, spec: dict[str, Any]) -> ModelSpec:
    notes: list[str] = []
    hidden = f.int("hidden_size")
    n_layers = f.int("num_hidden_layers")
    bias = f.bool("attention_bias", True)
    attention = _gqa(f, hidden, kv_heads_required=True, qkv_bias=bias, o_bias=bias, sinks=True)
    types = f.str_list("layer_types")
    if types is None:
        # GptOssConfig default: sliding on even layers, full on odd ones
        types = tuple("sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n_layers))
        notes.append("layer_types absent: alternating sliding/full attention assumed (GptOssConfig default)")
    window = f.int("sliding_window") if "sliding_attention" in types else None
    # the published config carries both spellings; accept either
    top_k_key = (
        "experts_per_token"
        if "num_experts_per_tok" not in f.data and "experts_per_token" in f.data
        else "num_experts_per_tok"
    )
    return ModelSpec(
        **spec,
        hidden_size=hidden,
        num_layers=n_layers,
        vocab_size=f.int("vocab_size"),
        attention=attention,
        ffn_kinds=(FFNKind.MOE,) * n_layers,
        moe=MoESpec(
            num_experts=f.int("num_local_experts"),
            top_k=f.int(top_k_key),
            expert_intermediate_size=f.int("intermediate_size"),
            router_bias=True,
            expert_bias=True,
        ),
        tie_word_embeddings=f.bool("tie_word_embeddings", False),
        layer_windows=_windows_from_types(f, types, n_layers, window, "sliding_attention"),
        max_context=_max_context(f),
        native_dtypes=_native_dtypes(f, notes),
        notes=tuple(notes),
    )


def _llama4(f: _Fields, spec: dict[str, Any]) -> ModelSpec:
    notes: list[str] = ["text decoder only: the vision encoder of the multimodal checkpoint is not counted"]
    top = f
    if f.has("text_config"):
        f = f.nested("text_config")
    hidden = f.int("hidden_size")
    n_layers = f.int("num_hidden_layers")
    if f.has("moe_layers"):
        moe_layers = set(f.int_list("moe_layers"))
        _check_layer_indices(f, "moe_layers", sorted(moe_layers), n_layers)
    else:
        step = f.int("interleave_moe_layer_step", default=1)
        # Llama4TextConfig: moe_layers = range(step - 1, num_hidden_layers, step)
        moe_layers = set(range(step - 1, n_layers, step))
    kinds = _layer_kinds(n_layers, lambda i: i in moe_layers)
    bias = f.bool("attention_bias", False)
    # use_qk_norm is an L2 norm without weights: no parameters
    attention = _gqa(f, hidden, qkv_bias=bias, o_bias=bias)
    chunk = f.int("attention_chunk_size") if f.has("attention_chunk_size") else None
    windows: tuple[int | None, ...] = ()
    types = f.str_list("layer_types")
    if types is not None:
        windows = _windows_from_types(f, types, n_layers, chunk, "chunked_attention")
    elif chunk is not None:
        if f.has("no_rope_layers"):
            rope_flags = f.int_list("no_rope_layers")
            if len(rope_flags) != n_layers:
                raise f.error("no_rope_layers", f"has {len(rope_flags)} entries for {n_layers} layers")
        else:
            # Llama4TextConfig default: no_rope_layers[i] = int((i + 1) % 4 != 0); the RoPE layers (flag 1)
            # use chunked attention, every 4th layer is a global NoPE layer (Meta's iRoPE description)
            rope_flags = tuple(int((i + 1) % 4 != 0) for i in range(n_layers))
            notes.append(
                "soft: chunked attention on 3 of every 4 layers assumed from Meta's iRoPE description "
                "(transformers Llama4TextConfig default; no_rope_layers is absent from this config)"
            )
        windows = tuple(chunk if flag else None for flag in rope_flags)
    expert_width = f.int("intermediate_size")
    return ModelSpec(
        **spec,
        hidden_size=hidden,
        num_layers=n_layers,
        vocab_size=f.int("vocab_size"),
        attention=attention,
        ffn_kinds=kinds,
        moe=MoESpec(
            num_experts=f.int("num_local_experts"),
            top_k=f.int("num_experts_per_tok"),
            expert_intermediate_size=expert_width,
            # Llama4TextMoe: one always-on shared expert of the routed experts' width
            num_shared_experts=1,
            shared_intermediate_size=expert_width,
        ),
        dense_intermediate_size=f.int("intermediate_size_mlp") if FFNKind.DENSE in kinds else 0,
        tie_word_embeddings=top.bool("tie_word_embeddings", False),
        layer_windows=windows,
        max_context=_max_context(f),
        native_dtypes=_native_dtypes(top if top.has("torch_dtype") else f, notes),
        notes=tuple(notes),
        window_kind="chunked",
    )


def _grok1(f: _Fields, spec: dict[str, Any]) -> ModelSpec:
    notes: list[str] = []
    hidden = f.int("hidden_size")
    n_layers = f.int("num_hidden_layers")
    dtypes = _native_dtypes(f, notes)
    # model.py MoELayer only runs with QuantizedWeight8bit expert weights (weight * scales): the release
    # stores the experts int8, dequantised to bf16 for the GEMM
    dtypes["routed_experts"] = "int8"
    notes.append(
        "routed experts stored int8 as released (QuantizedWeight8bit); soft (?): the other groups "
        "are taken as bf16"
    )
    tied = f.bool("tie_word_embeddings", True)
    if "tie_word_embeddings" not in f.data:
        notes.append(
            "embeddings tied to the output layer (xai-org/grok-1 model.py: 'here, we use tied weights')"
        )
    return ModelSpec(
        **spec,
        hidden_size=hidden,
        num_layers=n_layers,
        vocab_size=f.int("vocab_size"),
        attention=_gqa(f, hidden, kv_heads_required=True),
        ffn_kinds=(FFNKind.MOE,) * n_layers,
        moe=MoESpec(
            num_experts=f.int("num_local_experts"),
            top_k=f.int("num_experts_per_tok"),
            expert_intermediate_size=f.int("intermediate_size"),
        ),
        tie_word_embeddings=tied,
        max_context=_max_context(f),
        native_dtypes=dtypes,
        notes=tuple(notes),
        norms_per_layer=4,  # DecoderLayer: RMSNorm before and after both attention and the MoE block
    )


def _replace(attention: AttentionSpec, **changes: Any) -> AttentionSpec:
    from dataclasses import replace

    return replace(attention, **changes)


_BUILDERS: dict[str, Callable[[_Fields, dict[str, Any]], ModelSpec]] = {
    "dbrx": _dbrx,
    "deepseek_v2": _deepseek,
    "deepseek_v3": _deepseek,
    "gpt_oss": _gpt_oss,
    "grok1": _grok1,
    "llama4": _llama4,
    "mixtral": _mixtral,
    "olmoe": _olmoe,
    "phimoe": _phimoe,
    "qwen2_moe": _qwen2_moe,
    "qwen3_moe": _qwen3_moe,
}

SUPPORTED_FAMILIES: tuple[str, ...] = tuple(sorted(_BUILDERS))
"""Family names accepted by :func:`spec_from_config` (``model_type`` values, plus ``grok1``)."""

_MODEL_TYPE_ALIASES: dict[str, str] = {"llama4_text": "llama4", "grok-1": "grok1", "grok": "grok1"}

_ARCHITECTURES: dict[str, str] = {
    "DbrxForCausalLM": "dbrx",
    "DeepseekV2ForCausalLM": "deepseek_v2",
    "DeepseekV3ForCausalLM": "deepseek_v3",
    "GptOssForCausalLM": "gpt_oss",
    "Llama4ForConditionalGeneration": "llama4",
    "Llama4ForCausalLM": "llama4",
    "MixtralForCausalLM": "mixtral",
    "OlmoeForCausalLM": "olmoe",
    "PhiMoEForCausalLM": "phimoe",
    "PhimoeForCausalLM": "phimoe",
    "Qwen2MoeForCausalLM": "qwen2_moe",
    "Qwen3MoeForCausalLM": "qwen3_moe",
}


def _unsupported_family(name: str, path: str, what: str) -> UnsupportedModelError:
    # close matches only for a family the user typed: a config's model_type is a real HF value, and the
    # nearest supported name is a different model (mistral -> mixtral, llama -> llama4)
    close = difflib.get_close_matches(name, SUPPORTED_FAMILIES, n=1, cutoff=0.6) if what == "family" else []
    hint = f"did you mean {close[0]!r}? " if close else ""
    supported = ", ".join(SUPPORTED_FAMILIES)
    return UnsupportedModelError(
        f"{path}: {what} {name!r} is not a supported MoE family; {hint}supported: {supported}"
    )


def detect_family(config: Mapping[str, Any], path: str = "<config>", family: str | None = None) -> str:
    """The family whose field map reads ``config``: ``family`` if given, else ``model_type``, else
    ``architectures``, else Grok-1 by its ``_source``. Raises UnsupportedModelError for encoder-decoder and
    unknown families, ConfigFieldError when nothing identifies the family."""
    if family is not None:
        key = _MODEL_TYPE_ALIASES.get(family.lower(), family.lower())
        if key not in _BUILDERS:
            raise _unsupported_family(family, path, "family")
        return key
    model_type = config.get("model_type")
    if config.get("is_encoder_decoder") is True or model_type in _ENCODER_DECODER_TYPES:
        label = model_type if isinstance(model_type, str) else "this model"
        raise UnsupportedModelError(
            f"{path}: {label!r} is an encoder-decoder model; capsim models decoder-only MoE language models"
        )
    if model_type is not None:
        if not isinstance(model_type, str):
            raise ConfigFieldError(path, "model_type", f"must be a string, got {model_type!r}")
        key = _MODEL_TYPE_ALIASES.get(model_type, model_type)
        if key not in _BUILDERS:
            raise _unsupported_family(model_type, path, "model_type")
        return key
    archs = config.get("architectures")
    if isinstance(archs, list):
        for arch in archs:
            if isinstance(arch, str) and arch in _ARCHITECTURES:
                return _ARCHITECTURES[arch]
    source = config.get("_source")
    if isinstance(source, str) and _GROK1_SOURCE_MARK in source.lower():
        return "grok1"
    raise ConfigFieldError(
        path,
        "model_type",
        "is missing and no known 'architectures' entry names the family; add model_type or pass "
        f"--family (one of {', '.join(SUPPORTED_FAMILIES)})",
    )


def spec_from_config(
    config: Mapping[str, Any],
    *,
    model_id: str,
    path: str = "<config>",
    family: str | None = None,
    name: str | None = None,
) -> ModelSpec:
    """Build the :class:`ModelSpec` of a decoder-only MoE model from its HF ``config.json`` contents.

    ``path`` only labels error messages; ``family`` forces a family (e.g. ``grok1``); ``name`` is the display
    name (default ``model_id``). The spec's ``source`` is the config's ``_source`` key when present (the
    published URL, as in model_db/), else ``path``.
    """
    if not isinstance(config, Mapping):
        raise DataFileError(path, "top level must be a JSON object (a Hugging Face config.json)")
    key = detect_family(config, path, family)
    source = config.get("_source")
    spec = {
        "id": model_id,
        "name": name or model_id,
        "family": key,
        "source": source if isinstance(source, str) else path,
    }
    model = _BUILDERS[key](_Fields(config, path, key), spec)
    _check_moe(model, config, path)
    return model


_TOP_K_KEYS = ("num_experts_per_tok", "experts_per_token", "moe_top_k", "ffn_config.moe_top_k")


def _check_moe(model: ModelSpec, config: Mapping[str, Any], path: str) -> None:
    """Routing must be possible: top-k <= E, and DeepSeek's groups must split E and hold the top-k."""
    moe = model.moe
    if moe is None:
        return
    if moe.top_k > moe.num_experts:
        key = next((k for k in _TOP_K_KEYS if k.split(".")[0] in config), _TOP_K_KEYS[0])
        raise ConfigFieldError(
            path, key, f"({moe.top_k}) exceeds the {moe.num_experts} routed experts; correct the config file"
        )
    if moe.n_group > 1:
        if moe.num_experts % moe.n_group:
            raise ConfigFieldError(
                path,
                "n_group",
                f"({moe.n_group}) must divide the {moe.num_experts} routed experts; correct the config file",
            )
        if not 1 <= moe.topk_group <= moe.n_group:
            raise ConfigFieldError(
                path,
                "topk_group",
                f"({moe.topk_group}) must be in [1, n_group={moe.n_group}]; correct the config file",
            )
        if moe.top_k > moe.topk_group * (moe.num_experts // moe.n_group):
            raise ConfigFieldError(
                path,
                "topk_group",
                f"({moe.topk_group}) groups of {moe.num_experts // moe.n_group} experts "
                f"cannot hold top-{moe.top_k}; correct the config file",
            )


def read_config_json(path: Path) -> dict[str, Any]:
    """Parse a config.json, turning I/O and JSON errors into one-line DataFileErrors."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataFileError(str(path), "no such file; give the path of a Hugging Face config.json") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFileError(str(path), f"cannot be read ({exc.__class__.__name__}); check the path") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFileError(
            str(path),
            f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            "give a Hugging Face config.json",
        ) from None
    if not isinstance(data, dict):
        raise DataFileError(str(path), "top level must be a JSON object (a Hugging Face config.json)")
    return data


def load_config_file(
    path: Path, model_id: str | None = None, family: str | None = None, name: str | None = None
) -> ModelSpec:
    """Load a config.json file (or a folder holding one) into a ModelSpec; ``model_id`` defaults to the file
    stem, or the folder name for ``config.json`` itself."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    if model_id is None:
        model_id = path.parent.name if path.name == "config.json" and path.parent.name else path.stem
    return spec_from_config(
        read_config_json(path), model_id=model_id, path=str(path), family=family, name=name
    )
