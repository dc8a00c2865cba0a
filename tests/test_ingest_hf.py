"""capsim.models.ingest_hf: per-family field maps, hand-computed counts, layer rules, windows, dtypes, every error.

Configs come from the shipped model_db/ (verbatim copies of /work/shared/reference/models/*.json); each
test that modifies one works on a deep copy. Arithmetic is written out in the comments.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from capsim._paths import data_dir
from capsim.errors import CapsimError, ConfigFieldError, DataFileError, UnsupportedModelError
from capsim.models.ingest_hf import SUPPORTED_FAMILIES, detect_family, load_config_file, spec_from_config
from capsim.models.parts import FFNKind


def _config(model_id: str) -> dict[str, Any]:
    """A fresh copy of a shipped config (tests may mutate it)."""
    return json.loads((data_dir("model_db") / f"{model_id}.json").read_text())


def _spec(model_id: str, **kw: Any):  # type: ignore[no-untyped-def]
    return spec_from_config(_config(model_id), model_id=model_id, path=f"{model_id}.json", **kw)


# ---- hand-computed parameter counts ------------------------------------------------------------------------
def test_mixtral_8x7b_counts_by_hand() -> None:
    m = _spec("mixtral-8x7b")
    # q,k,v: 4096 -> 4096 + 2*(8 kv heads * 128) = 4096 + 2*1024; o: 4096*4096
    assert m.attention_params_per_layer == 4096 * (4096 + 2 * 1024) + 4096 * 4096 == 41_943_040
    # one SwiGLU expert: gate, up, down = 3 * 4096 * 14336
    assert m.expert_params == 3 * 4096 * 14336 == 176_160_768
    assert m.router_params_per_moe_layer == 4096 * 8
    groups = m.params_by_group()
    assert groups["attention"] == 32 * 41_943_040 == 1_342_177_280
    assert groups["routed_experts"] == 32 * 8 * 176_160_768 == 45_097_156_608
    assert groups["norms"] == 32 * 2 * 4096 + 4096  # two RMSNorms per layer + the final one
    assert groups["embeddings"] == groups["lm_head"] == 32000 * 4096  # untied
    # 1,342,177,280 + 1,048,576 + 45,097,156,608 + 266,240 + 2 * 131,072,000
    assert m.total_params == 46_702_792_704
    # active: top-2 experts, no input-embedding table: 1,342,177,280 + 1,048,576 + 32*2*176,160,768
    #         + 266,240 + 131,072,000 = 12,748,853,248
    assert m.active_params == 12_748_853_248
    # GQA KV: 2 * 8 * 128 = 2048 elements per layer, * 32 layers
    assert m.kv_elements_per_token() == 2 * 8 * 128 * 32 == 65_536
    assert m.native_dtypes["routed_experts"] == "bf16"


def test_deepseek_v3_mla_kv_and_attention_by_hand() -> None:
    m = _spec("deepseek-v3")
    # MLA caches the compressed latent plus the decoupled RoPE key: 512 + 64 (models.md §3)
    assert m.attention.kv_elements_per_token() == 512 + 64
    assert m.kv_elements_per_token() == 61 * 576 == 35_136
    assert m.kv_cache_bytes_per_token("bf16") == 35_136 * 2
    # q: 7168*1536 + 1536 (q_a norm) + 1536*128*(128+64) = 48,760,320
    # kv: 7168*(512+64) + 512 (kv_a norm) + 512*128*(128+128) = 20,906,496
    # o: 128*128*7168 = 117,440,512
    q = 7168 * 1536 + 1536 + 1536 * 128 * 192
    kv = 7168 * 576 + 512 + 512 * 128 * 256
    o = 128 * 128 * 7168
    assert m.attention_params_per_layer == q + kv + o == 187_107_328
    # router: 7168*256 weights + 256 e_score_correction_bias (topk_method noaux_tc)
    assert m.router_params_per_moe_layer == 7168 * 256 + 256
    assert m.moe is not None and m.moe.score_correction_bias and (m.moe.n_group, m.moe.topk_group) == (8, 4)
    # one shared expert of moe_intermediate_size 2048
    assert m.shared_params_per_moe_layer == 3 * 7168 * 2048
    assert m.dense_ffn_params_per_layer == 3 * 7168 * 18432


def test_deepseek_v3_layer_rule_three_dense_then_58_moe() -> None:
    m = _spec("deepseek-v3")
    assert m.ffn_kinds[:3] == (FFNKind.DENSE,) * 3
    assert m.ffn_kinds[3:] == (FFNKind.MOE,) * 58
    assert (m.num_dense_layers, m.num_moe_layers) == (3, 58)


def test_deepseek_moe_layer_freq_on_modified_config() -> None:
    cfg = _config("deepseek-v2-lite")
    cfg["moe_layer_freq"] = 2  # MoE iff i >= 1 and i % 2 == 0: layers 2, 4, ..., 26 -> 13 layers
    m = spec_from_config(cfg, model_id="x")
    assert [i for i, k in enumerate(m.ffn_kinds) if k is FFNKind.MOE] == list(range(2, 27, 2))


def test_deepseek_v2_lite_without_query_compression() -> None:
    m = _spec("deepseek-v2-lite")
    assert m.attention.q_lora_rank is None
    # q: 2048*16*192; kv: 2048*576 + 512 + 512*16*256; o: 16*128*2048
    assert (
        m.attention_params_per_layer
        == 2048 * 16 * 192 + (2048 * 576 + 512 + 512 * 16 * 256) + 16 * 128 * 2048
    )
    assert m.moe is not None and m.moe.shared_intermediate_size == 2 * 1408  # 2 shared experts
    assert not m.moe.score_correction_bias  # topk_method greedy


def test_deepseek_fp8_native_dtypes() -> None:
    m = _spec("deepseek-r1")
    for group in ("attention", "routed_experts", "shared_experts", "dense_ffn"):
        assert m.native_dtypes[group] == "fp8"
    for group in ("router", "embeddings", "lm_head", "norms"):
        assert m.native_dtypes[group] == "bf16"
    # fp8 = 1 byte per weight: routed expert bytes = 58 * 256 * 3*7168*2048 * 1
    assert m.weight_bytes_by_group()["routed_experts"] == 58 * 256 * 3 * 7168 * 2048


def test_gpt_oss_20b_counts_and_windowed_kv_by_hand() -> None:
    m = _spec("gpt-oss-20b")
    # q: 64*64 = 4096 wide, k/v: 8*64 = 512 wide; biases on q,k,v (4096+1024) and o (2880); 64 sinks
    assert m.attention_params_per_layer == 2880 * (4096 + 1024) + 4096 * 2880 + 5120 + 2880 + 64 == 26_550_144
    # expert: gate_up 2880 x 2*2880 (+ 2*2880 bias), down 2880 x 2880 (+ 2880 bias)
    assert m.expert_params == 3 * 2880 * 2880 + 2 * 2880 + 2880 == 24_891_840
    assert m.router_params_per_moe_layer == 2880 * 32 + 32  # router weight + bias
    # windows: layer_types alternates sliding(128) / full, starting with sliding
    assert m.layer_windows[:2] == (128, None) and m.layer_windows.count(128) == 12
    # KV per layer 2*8*64 = 1024 elements. At context 4096: 12 full layers hold 1024 each; 12 sliding layers
    # hold 128 of 4096 tokens -> 1024 * 128/4096 = 32 per token on average.
    # 12*1024 + 12*32 = 12,288 + 384 = 12,672 elements per token; bf16 -> 25,344 bytes
    assert m.kv_elements_per_token(context=4096) == pytest.approx(12_672)
    assert m.kv_cache_bytes_per_token("bf16", context=4096) == pytest.approx(25_344)
    assert m.kv_elements_per_token() == 24 * 1024  # no context given: every layer at full length
    assert m.native_dtypes["routed_experts"] == "mxfp4"
    assert all(m.native_dtypes[g] == "bf16" for g in ("attention", "router", "embeddings", "lm_head"))
    # mxfp4 = 4.25 bits: 24 layers * 32 experts * 24,891,840 params * 4.25/8 bytes
    assert m.weight_bytes_by_group()["routed_experts"] == pytest.approx(24 * 32 * 24_891_840 * 4.25 / 8)


def test_qwen15_moe_shared_expert_and_qkv_bias() -> None:
    m = _spec("qwen1.5-moe-a2.7b")
    # shared expert 3*2048*5632 plus the d->1 sigmoid gate (2048)
    assert m.shared_params_per_moe_layer == 3 * 2048 * 5632 + 2048 == 34_605_056
    # MHA 16 heads * 128; biases on q, k, v only: 3 * 2048
    assert m.attention_params_per_layer == 4 * 2048 * 2048 + 3 * 2048
    assert m.moe is not None and (m.moe.num_experts, m.moe.top_k) == (60, 4)


def test_qwen3_mlp_only_layers_honoured_on_modified_config() -> None:
    cfg = _config("qwen3-30b-a3b")
    cfg["mlp_only_layers"] = [0, 47]
    m = spec_from_config(cfg, model_id="q")
    assert m.ffn_kinds[0] is FFNKind.DENSE and m.ffn_kinds[47] is FFNKind.DENSE
    assert (m.num_moe_layers, m.num_dense_layers) == (46, 2)
    # dense layers use intermediate_size 6144: 2 * 3*2048*6144
    assert m.params_by_group()["dense_ffn"] == 2 * 3 * 2048 * 6144
    base = _spec("qwen3-30b-a3b")
    assert base.num_moe_layers == 48 and base.dense_intermediate_size == 0


def test_qwen_decoder_sparse_step() -> None:
    cfg = _config("qwen2-57b-a14b")
    cfg["decoder_sparse_step"] = 2  # MoE iff (i+1) % 2 == 0: layers 1, 3, ..., 27
    m = spec_from_config(cfg, model_id="q")
    assert [i for i, k in enumerate(m.ffn_kinds) if k is FFNKind.MOE] == list(range(1, 28, 2))
    assert m.dense_intermediate_size == 18944


def test_qwen3_qk_norm_over_head_dim() -> None:
    m = _spec("qwen3-30b-a3b")
    # q: 32*128 = 4096, k/v: 4*128 = 512; q_norm and k_norm are RMSNorm(128) each
    assert m.attention_params_per_layer == 2048 * (4096 + 1024) + 4096 * 2048 + 128 + 128


def test_olmoe_qk_norm_over_full_width() -> None:
    m = _spec("olmoe-1b-7b")
    # MHA 16*128 = 2048; q_norm over 2048, k_norm over 16 kv heads * 128 = 2048
    assert m.attention_params_per_layer == 4 * 2048 * 2048 + 2048 + 2048 == 16_781_312
    assert m.expert_params == 3 * 2048 * 1024  # intermediate_size is the per-expert width in OLMoE
    cfg = _config("olmoe-1b-7b")
    cfg["num_key_value_heads"] = 4  # GQA variant: k_norm shrinks to 4*128
    g = spec_from_config(cfg, model_id="o")
    assert g.attention_params_per_layer == 2048 * (2048 + 2 * 512) + 2048 * 2048 + 2048 + 512


def test_dbrx_nested_keys() -> None:
    m = _spec("dbrx")
    assert (m.hidden_size, m.num_layers, m.attention.num_kv_heads) == (6144, 40, 8)
    assert m.moe is not None and (m.moe.num_experts, m.moe.top_k, m.moe.expert_intermediate_size) == (
        16,
        4,
        10752,
    )
    assert m.attention_params_per_layer == 6144 * (6144 + 2 * 1024) + 6144 * 6144 == 88_080_384
    assert m.max_context == 32768  # max_seq_len


def test_llama4_maverick_interleaved_layers() -> None:
    m = _spec("llama-4-maverick")
    # interleave_moe_layer_step 2: moe_layers = range(1, 48, 2)
    assert [i for i, k in enumerate(m.ffn_kinds) if k is FFNKind.MOE] == list(range(1, 48, 2))
    assert (m.num_moe_layers, m.num_dense_layers) == (24, 24)
    assert m.dense_ffn_params_per_layer == 3 * 5120 * 16384  # intermediate_size_mlp
    assert m.shared_params_per_moe_layer == 3 * 5120 * 8192  # one shared expert, intermediate_size wide
    assert m.moe is not None and (m.moe.num_experts, m.moe.top_k) == (128, 1)


def test_llama4_scout_chunked_attention_is_soft() -> None:
    m = _spec("llama-4-scout")
    assert m.num_moe_layers == 48 and m.window_kind == "chunked"
    # layers 3, 7, ... (every 4th) are global; the other 36 keep an 8192-token chunk
    assert [i for i, w in enumerate(m.layer_windows) if w is None] == list(range(3, 48, 4))
    assert m.layer_windows.count(8192) == 36
    assert any(n.startswith("soft:") and "iRoPE" in n for n in m.notes)
    # KV at context 32768: 12 full layers * 2048 + 36 chunked * 2048 * 8192/32768 = 24,576 + 18,432
    assert m.kv_elements_per_token(context=32768) == pytest.approx(12 * 2048 + 36 * 512)


def test_llama4_explicit_no_rope_layers_wins() -> None:
    cfg = _config("llama-4-scout")
    cfg["text_config"]["no_rope_layers"] = [1, 0] * 24  # odd layers global
    m = spec_from_config(cfg, model_id="l")
    assert m.layer_windows.count(8192) == 24 and m.layer_windows[1] is None
    assert not any(n.startswith("soft:") for n in m.notes)


def test_phimoe_layernorm_and_lm_head_bias() -> None:
    m = _spec("phi-3.5-moe")
    assert m.norm_params_per_layer == 2 * 2 * 4096  # two LayerNorms, weight + bias each
    assert m.params_by_group()["lm_head"] == 32064 * 4096 + 32064  # lm_head_bias true
    # attention_bias true: q, k, v and o biases (4096 + 2*1024 + 4096)
    assert m.attention_params_per_layer == 4096 * (4096 + 2048) + 4096 * 4096 + 4096 + 2048 + 4096
    assert m.layer_windows == ()  # sliding_window 131072 = max context: no effective window


def test_grok1_recognised_by_source_tied_and_four_norms() -> None:
    cfg = _config("grok-1")
    assert "model_type" not in cfg
    assert detect_family(cfg) == "grok1"
    m = spec_from_config(cfg, model_id="grok-1")
    assert m.tie_word_embeddings and m.params_by_group()["lm_head"] == 0
    assert m.active_params_by_group()["lm_head"] == 131072 * 6144  # tied table still read per token
    assert m.norm_params_per_layer == 4 * 6144
    assert m.native_dtypes["routed_experts"] == "int8"
    assert m.expert_params == 3 * 6144 * 32768


def test_grok1_without_source_needs_explicit_family() -> None:
    cfg = _config("grok-1")
    del cfg["_source"]
    with pytest.raises(ConfigFieldError, match="pass --family"):
        spec_from_config(cfg, model_id="g", path="g.json")
    assert spec_from_config(cfg, model_id="g", family="grok1").family == "grok1"
    assert spec_from_config(cfg, model_id="g", family="Grok-1").family == "grok1"


def test_family_from_architectures_when_model_type_absent() -> None:
    cfg = _config("mixtral-8x7b")
    del cfg["model_type"]
    assert detect_family(cfg) == "mixtral"


def test_source_and_name() -> None:
    m = spec_from_config(_config("dbrx"), model_id="dbrx", name="DBRX")
    assert m.source == "https://huggingface.co/databricks/dbrx-instruct/blob/main/config.json"
    assert (m.id, m.name) == ("dbrx", "DBRX")
    cfg = _config("dbrx")
    del cfg["_source"]
    assert spec_from_config(cfg, model_id="d", path="/tmp/d.json").source == "/tmp/d.json"


def test_supported_families() -> None:
    assert SUPPORTED_FAMILIES == (
        "dbrx",
        "deepseek_v2",
        "deepseek_v3",
        "gpt_oss",
        "grok1",
        "llama4",
        "mixtral",
        "olmoe",
        "phimoe",
        "qwen2_moe",
        "qwen3_moe",
    )


def test_load_config_file_and_folder(tmp_path: Path) -> None:
    folder = tmp_path / "Mixtral-8x7B-v0.1"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(_config("mixtral-8x7b")))
    m = load_config_file(folder)
    assert m.id == "Mixtral-8x7B-v0.1" and m.total_params == 46_702_792_704
    assert load_config_file(folder / "config.json", model_id="mine").id == "mine"


# ---- errors: exact messages -------------------------------------------------------------------------------
def test_missing_required_field() -> None:
    cfg = _config("mixtral-8x7b")
    del cfg["hidden_size"]
    with pytest.raises(ConfigFieldError) as info:
        spec_from_config(cfg, model_id="m", path="cfg.json")
    assert str(info.value) == (
        "cfg.json: field 'hidden_size' is missing; mixtral configs need it "
        "(copy it from the model's published config.json)"
    )
    assert (info.value.field, info.value.path) == ("hidden_size", "cfg.json")
    assert isinstance(info.value, CapsimError) and isinstance(info.value, ValueError)


def test_wrong_type_field() -> None:
    cfg = _config("mixtral-8x7b")
    cfg["num_local_experts"] = "8"
    with pytest.raises(ConfigFieldError) as info:
        spec_from_config(cfg, model_id="m", path="cfg.json")
    assert str(info.value) == (
        "cfg.json: field 'num_local_experts' must be a positive integer, got '8'; correct it in the config file"
    )


@pytest.mark.parametrize("bad", [True, 0, -4, 2.0, None])
def test_non_positive_or_non_int_rejected(bad: Any) -> None:
    cfg = _config("qwen3-30b-a3b")
    cfg["num_experts_per_tok"] = bad
    with pytest.raises(ConfigFieldError, match="field 'num_experts_per_tok' must be a positive integer"):
        spec_from_config(cfg, model_id="q")


def test_nested_field_named_with_its_parent() -> None:
    cfg = _config("dbrx")
    del cfg["ffn_config"]["moe_top_k"]
    with pytest.raises(ConfigFieldError) as info:
        spec_from_config(cfg, model_id="d", path="dbrx.json")
    assert str(info.value) == (
        "dbrx.json: field 'ffn_config.moe_top_k' is missing; dbrx configs need it "
        "(copy it from the model's published config.json)"
    )


def test_q_lora_rank_must_be_present() -> None:
    cfg = _config("deepseek-v2")
    del cfg["q_lora_rank"]
    with pytest.raises(ConfigFieldError) as info:
        spec_from_config(cfg, model_id="d", path="d.json")
    assert str(info.value) == (
        "d.json: field 'q_lora_rank' is missing; give the query LoRA rank, or null for no query compression"
    )


def test_mlp_only_layers_out_of_range() -> None:
    cfg = _config("qwen3-30b-a3b")
    cfg["mlp_only_layers"] = [48]
    with pytest.raises(ConfigFieldError) as info:
        spec_from_config(cfg, model_id="q", path="q.json")
    assert (
        str(info.value)
        == "q.json: field 'mlp_only_layers' lists layer 48, outside 0..47; correct the config file"
    )


def test_layer_types_length_mismatch() -> None:
    cfg = _config("gpt-oss-20b")
    cfg["layer_types"] = cfg["layer_types"][:-1]
    with pytest.raises(ConfigFieldError) as info:
        spec_from_config(cfg, model_id="g", path="g.json")
    assert str(info.value) == "g.json: field 'layer_types' has 23 entries for 24 layers; give one per layer"


def test_kv_heads_must_divide_heads() -> None:
    cfg = _config("mixtral-8x7b")
    cfg["num_key_value_heads"] = 5
    with pytest.raises(ConfigFieldError) as info:
        spec_from_config(cfg, model_id="m", path="m.json")
    assert str(info.value) == (
        "m.json: field 'num_key_value_heads' (5) must divide num_attention_heads (32); correct the config file"
    )


def test_unknown_model_type_lists_families() -> None:
    with pytest.raises(UnsupportedModelError) as info:
        spec_from_config({"model_type": "llama"}, model_id="x", path="x.json")
    assert str(info.value) == (
        "x.json: model_type 'llama' is not a supported MoE family; supported: dbrx, deepseek_v2, deepseek_v3, "
        "gpt_oss, grok1, llama4, mixtral, olmoe, phimoe, qwen2_moe, qwen3_moe"
    )


def test_unknown_family_typed_by_user_suggests_close_family() -> None:
    # a typed --family gets close matches; a config's model_type does not ('llama' is not 'llama4')
    with pytest.raises(
        UnsupportedModelError,
        match="family 'qwen2moe' is not a supported MoE family; did you mean 'qwen2_moe'\\?",
    ):
        spec_from_config({"model_type": "qwen2_moe"}, model_id="x", family="qwen2moe")


def test_unknown_explicit_family() -> None:
    with pytest.raises(
        UnsupportedModelError, match="family 'grok2' is not a supported MoE family; did you mean"
    ):
        spec_from_config(_config("grok-1"), model_id="g", family="grok2")


def test_encoder_decoder_rejected() -> None:
    switch = {"model_type": "switch_transformers", "is_encoder_decoder": True, "num_experts": 8}
    with pytest.raises(UnsupportedModelError) as info:
        spec_from_config(switch, model_id="s", path="switch.json")
    assert str(info.value) == (
        "switch.json: 'switch_transformers' is an encoder-decoder model; capsim models decoder-only MoE "
        "language models"
    )


def test_encoder_decoder_reference_file() -> None:
    ref = Path("/work/shared/reference/models/Switch-Transformer-base-8.json")
    if not ref.is_file():
        pytest.skip("reference sheet not available in this checkout")
    with pytest.raises(UnsupportedModelError, match="encoder-decoder"):
        load_config_file(ref)


def test_missing_model_type_and_architectures() -> None:
    with pytest.raises(ConfigFieldError) as info:
        spec_from_config({"hidden_size": 8}, model_id="x", path="x.json")
    assert str(info.value) == (
        "x.json: field 'model_type' is missing and no known 'architectures' entry names the family; add "
        "model_type or pass --family (one of dbrx, deepseek_v2, deepseek_v3, gpt_oss, grok1, llama4, mixtral, "
        "olmoe, phimoe, qwen2_moe, qwen3_moe)"
    )


def test_non_json_file(tmp_path: Path) -> None:
    bad = tmp_path / "config.json"
    bad.write_text("model_type: mixtral\n")
    with pytest.raises(DataFileError) as info:
        load_config_file(bad)
    assert str(info.value) == (
        f"{bad}: is not valid JSON (Expecting value at line 1 column 1); give a Hugging Face config.json"
    )


def test_json_that_is_not_an_object(tmp_path: Path) -> None:
    bad = tmp_path / "c.json"
    bad.write_text("[1, 2]")
    with pytest.raises(DataFileError) as info:
        load_config_file(bad)
    assert str(info.value) == f"{bad}: top level must be a JSON object (a Hugging Face config.json)"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataFileError) as info:
        load_config_file(tmp_path / "nope.json")
    assert (
        str(info.value)
        == f"{tmp_path / 'nope.json'}: no such file; give the path of a Hugging Face config.json"
    )


def test_unknown_torch_dtype() -> None:
    cfg = _config("mixtral-8x7b")
    cfg["torch_dtype"] = "float8"
    with pytest.raises(ConfigFieldError, match="field 'torch_dtype' is 'float8'; expected one of bfloat16"):
        spec_from_config(cfg, model_id="m")


# ---- properties -------------------------------------------------------------------------------------------
@st.composite
def mixtral_like_configs(draw: st.DrawFn) -> dict[str, Any]:
    """Mixtral-family configs. Ranges include the edges that break formulas: top-k = 1 and top-k = E, one
    layer, MHA (kv heads = heads) and a single KV head."""
    heads = draw(st.sampled_from([1, 2, 4, 8]))
    kv_heads = draw(st.sampled_from([h for h in (1, 2, 4, 8) if heads % h == 0]))
    experts = draw(st.integers(1, 64))
    return {
        "model_type": "mixtral",
        "hidden_size": heads * draw(st.integers(1, 64)),
        "num_hidden_layers": draw(st.integers(1, 8)),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "vocab_size": draw(st.integers(1, 5000)),
        "intermediate_size": draw(st.integers(1, 512)),
        "num_local_experts": experts,
        "num_experts_per_tok": draw(st.integers(1, experts)),
        "tie_word_embeddings": draw(st.booleans()),
    }


@st.composite
def deepseek_like_configs(draw: st.DrawFn) -> dict[str, Any]:
    """DeepSeek-V3-family configs: dense prefix (possibly all layers dense), shared experts 0..2, q_lora null
    or set, moe_layer_freq 1..3."""
    layers = draw(st.integers(1, 8))
    experts = draw(st.integers(1, 32))
    return {
        "model_type": "deepseek_v3",
        "hidden_size": draw(st.integers(1, 64)),
        "num_hidden_layers": layers,
        "num_attention_heads": draw(st.integers(1, 8)),
        "vocab_size": draw(st.integers(1, 5000)),
        "intermediate_size": draw(st.integers(1, 256)),
        "moe_intermediate_size": draw(st.integers(1, 128)),
        "n_routed_experts": experts,
        "num_experts_per_tok": draw(st.integers(1, experts)),
        "n_shared_experts": draw(st.integers(0, 2)),
        "first_k_dense_replace": draw(st.integers(0, layers)),
        "moe_layer_freq": draw(st.integers(1, 3)),
        "q_lora_rank": draw(st.one_of(st.none(), st.integers(1, 64))),
        "kv_lora_rank": draw(st.integers(1, 64)),
        "qk_nope_head_dim": draw(st.integers(1, 32)),
        "qk_rope_head_dim": draw(st.integers(1, 16)),
        "v_head_dim": draw(st.integers(1, 32)),
        "topk_method": draw(st.sampled_from(["greedy", "noaux_tc"])),
    }


@settings(max_examples=60, deadline=None)
@given(st.one_of(mixtral_like_configs(), deepseek_like_configs()))
@example(
    {
        "model_type": "mixtral",
        "hidden_size": 1,
        "num_hidden_layers": 1,
        "num_attention_heads": 1,
        "vocab_size": 1,
        "intermediate_size": 1,
        "num_local_experts": 1,
        "num_experts_per_tok": 1,
    }
)
def test_active_never_exceeds_total(cfg: dict[str, Any]) -> None:
    m = spec_from_config(cfg, model_id="p")
    assert m.active_params <= m.total_params + (m.embedding_params if m.tie_word_embeddings else 0)
    if not m.tie_word_embeddings:
        assert m.active_params <= m.total_params
    for group, active in m.active_params_by_group().items():
        if group != "lm_head":
            assert 0 <= active <= m.params_by_group()[group]


@settings(max_examples=60, deadline=None)
@given(st.one_of(mixtral_like_configs(), deepseek_like_configs()), st.integers(2, 5))
def test_routed_expert_params_scale_linearly_with_num_experts(cfg: dict[str, Any], factor: int) -> None:
    key = "num_local_experts" if cfg["model_type"] == "mixtral" else "n_routed_experts"
    scaled = copy.deepcopy(cfg)
    scaled[key] = cfg[key] * factor
    a = spec_from_config(cfg, model_id="a")
    b = spec_from_config(scaled, model_id="b")
    assert b.params_by_group()["routed_experts"] == factor * a.params_by_group()["routed_experts"]
    # nothing else but the router (one column per expert) changes; active counts do not change at all
    assert b.active_params_by_group()["routed_experts"] == a.active_params_by_group()["routed_experts"]
    for group in ("attention", "shared_experts", "dense_ffn", "norms", "embeddings", "lm_head"):
        assert b.params_by_group()[group] == a.params_by_group()[group]
