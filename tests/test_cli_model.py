"""``capsim model list`` / ``capsim model show`` through typer's CliRunner: exit codes, key lines, JSON."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from capsim._paths import data_dir
from capsim.cli import app

runner = CliRunner()


def _run(*args: str) -> Any:
    return runner.invoke(app, ["model", *args])


def _json(*args: str) -> Any:
    result = _run(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# ---- list ---------------------------------------------------------------------------------------------------
def test_list_table() -> None:
    result = _run("list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    row = next(line for line in lines if line.startswith("mixtral-8x7b "))
    # id, family, layers (MoE), top-k of E, total, published, active, published (* = counts embeddings)
    assert row.split() == [
        "mixtral-8x7b",
        "mixtral",
        "32",
        "(32)",
        "2",
        "of",
        "8",
        "46.7",
        "46.7",
        "12.75",
        "12.9*",
    ]
    row = next(line for line in lines if line.startswith("deepseek-v3 "))
    assert row.split() == [
        "deepseek-v3",
        "deepseek_v3",
        "61",
        "(58)",
        "8",
        "of",
        "256",
        "+1",
        "671",
        "671",
        "36.63",
        "37",
    ]
    row = next(line for line in lines if line.startswith("grok-1 "))
    assert row.split()[-1] == "79-86?"
    assert (
        sum(
            1
            for line in lines
            if line.split()
            and line.split()[0]
            in {"dbrx", "qwen3-30b-a3b", "llama-4-maverick", "gpt-oss-120b", "phi-3.5-moe"}
        )
        == 5
    )


def test_list_json() -> None:
    rows = _json("list")
    assert len(rows) == 18
    by_id = {r["id"]: r for r in rows}
    r = by_id["qwen1.5-moe-a2.7b"]
    assert (r["family"], r["num_layers"], r["num_experts"], r["top_k"], r["num_shared_experts"]) == (
        "qwen2_moe",
        24,
        60,
        4,
        1,
    )
    assert (r["published_total_params"], r["published_active_params"]) == (14.3e9, 2.7e9)
    assert r["published_active_counts_embedding"] is True
    assert by_id["mixtral-8x7b"]["total_params"] == 46_702_792_704
    assert by_id["llama-4-maverick"]["num_moe_layers"] == 24
    assert all(abs(r["total_rel_diff"]) < 0.02 for r in rows)


# ---- show ---------------------------------------------------------------------------------------------------
def test_show_mixtral_key_lines() -> None:
    result = _run("show", "mixtral-8x7b")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "Mixtral-8x7B  (id mixtral-8x7b, family mixtral)"
    assert "  layers:      32 (32 MoE, 0 dense)" in lines
    assert "  attention:   GQA, 32 query / 8 KV heads, head_dim 128" in lines
    assert "  total params:  46,702,792,704 (46.70 B)" in lines
    # 2 (K,V) * 8 heads * 128 * 32 layers * 2 bytes = 131,072 B = 128 KiB
    assert "  kv_cache_bytes_per_token: 131,072 (128.0 KiB), all layers at full length" in lines
    # routed experts: 45,097,156,608 params * 2 bytes = 90.194 GB
    assert "  routed_experts  bf16      45,097,156,608     90.194" in lines
    assert "  total:  46.7 B; capsim differs by +0.01 %" in lines


def test_show_json_keys_and_values() -> None:
    d = _json("show", "deepseek-v3")
    for key in (
        "id",
        "family",
        "total_params",
        "active_params",
        "kv_cache_bytes_per_token",
        "weight_bytes_by_group",
        "published",
    ):
        assert key in d
    assert (d["id"], d["family"]) == ("deepseek-v3", "deepseek_v3")
    assert d["total_params"] == 671_026_419_200
    assert d["kv_cache_bytes_per_token"] == 61 * (512 + 64) * 2  # MLA latent + RoPE key, bf16
    assert d["kv_cache_bytes_per_token_at_context"] == {}  # no windowed layers
    assert d["weight_dtypes"]["routed_experts"] == "fp8"
    assert d["weight_bytes_by_group"]["routed_experts"] == 58 * 256 * 3 * 7168 * 2048  # 1 byte each
    assert list(d["weight_bytes_by_group"]) == [
        "attention",
        "router",
        "routed_experts",
        "shared_experts",
        "dense_ffn",
        "norms",
        "embeddings",
        "lm_head",
    ]
    assert d["published"]["total_params"] == 671e9 and d["published"]["active_counts_embedding"] is False
    assert d["published"]["active_rel_diff"] == pytest.approx((36_625_618_432 - 37e9) / 37e9)
    assert d["architecture"]["num_dense_layers"] == 3


def test_show_windowed_kv_at_contexts() -> None:
    d = _json("show", "gpt-oss-20b")
    # 12 full layers * 1024 + 12 sliding layers * 1024 * 128/4096 = 12,672 elements; bf16 -> 25,344 B
    assert d["kv_cache_bytes_per_token_at_context"]["4096"] == pytest.approx(25_344)
    assert list(d["kv_cache_bytes_per_token_at_context"]) == ["4096", "32768", "131072"]
    result = _run("show", "gpt-oss-20b", "--kv-dtype", "fp8")
    # fp8 KV: 12,672 B per token at 4096; 12,672 * 4096 = 51.9 MB per sequence
    assert (
        "  at context 4,096: 12,672 B per token on average, 51.9 MB per sequence"
        in result.stdout.splitlines()
    )


def test_show_weight_dtype_override() -> None:
    d = _json("show", "mixtral-8x7b", "--weight-dtype", "int4")
    # the override applies to the GEMM weights; router, norms, embeddings and lm_head stay bf16 (as in the engine)
    assert d["weight_dtypes"] == {
        "attention": "int4",
        "router": "bf16",
        "routed_experts": "int4",
        "shared_experts": "int4",
        "dense_ffn": "int4",
        "norms": "bf16",
        "embeddings": "bf16",
        "lm_head": "bf16",
    }
    # int4 with group-128 fp16 scales = 4.125 bits per weight (capsim.models.precision):
    # (1,342,177,280 + 45,097,156,608) * 4.125/8 + (1,048,576 + 266,240 + 2*131,072,000) * 2
    expected = (1_342_177_280 + 45_097_156_608) * 4.125 / 8 + (1_048_576 + 266_240 + 2 * 131_072_000) * 2
    assert d["weight_bytes_total"] == pytest.approx(expected)


def test_show_config_path(tmp_path: Path) -> None:
    cfg = json.loads((data_dir("model_db") / "qwen3-30b-a3b.json").read_text())
    cfg["mlp_only_layers"] = [0]
    path = tmp_path / "my-qwen.json"
    path.write_text(json.dumps(cfg))
    d = _json("show", "--config", str(path))
    assert (d["id"], d["architecture"]["num_dense_layers"]) == ("my-qwen", 1)
    assert d["published"] is None  # a user's file is not compared with the database's published counts
    d = _json("show", "custom-name", "--config", str(path))
    assert d["id"] == "custom-name"
    assert _json("show", str(path))["id"] == "my-qwen"  # a path given as the argument


def test_show_config_with_family(tmp_path: Path) -> None:
    cfg = json.loads((data_dir("model_db") / "grok-1.json").read_text())
    del cfg["_source"]
    path = tmp_path / "grok.json"
    path.write_text(json.dumps(cfg))
    result = _run("show", "--config", str(path))
    assert result.exit_code == 1
    assert "field 'model_type' is missing" in result.output
    assert _json("show", "--config", str(path), "--family", "grok1")["family"] == "grok1"


def test_show_case_insensitive_id() -> None:
    assert _json("show", "DBRX")["id"] == "dbrx"


# ---- errors -------------------------------------------------------------------------------------------------
def test_unknown_id_close_matches() -> None:
    result = _run("show", "mixtral-8x7")
    assert result.exit_code == 1
    assert "error: " in result.output
    assert "unknown model 'mixtral-8x7'; did you mean 'mixtral-8x7b', 'mixtral-8x22b'?" in result.output
    assert "Traceback" not in result.output


def test_bad_weight_dtype() -> None:
    result = _run("show", "mixtral-8x7b", "--weight-dtype", "fp3")
    assert result.exit_code == 1
    assert (
        "unknown weight dtype 'fp3'; choose one of fp32, bf16, fp16, fp8, int8, w8a8, int4, mxfp4"
        in result.output
    )


def test_missing_config_file(tmp_path: Path) -> None:
    result = _run("show", str(tmp_path / "none.json"))
    assert result.exit_code == 1
    assert "none.json: no such file" in result.output


def test_non_json_config(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{not json")
    result = _run("show", "--config", str(path))
    assert result.exit_code == 1
    assert "is not valid JSON (Expecting property name enclosed in double quotes at line 1 column 2)" in (
        result.output
    )


def test_encoder_decoder_config(tmp_path: Path) -> None:
    path = tmp_path / "switch.json"
    path.write_text(json.dumps({"model_type": "switch_transformers", "is_encoder_decoder": True}))
    result = _run("show", "--config", str(path))
    assert result.exit_code == 1
    assert "'switch_transformers' is an encoder-decoder model" in result.output


def test_show_needs_an_id_or_config() -> None:
    result = _run("show")
    assert result.exit_code == 2
    assert "give a model id" in result.output


def test_db_folder_path_argument(tmp_path: Path) -> None:
    folder = tmp_path / "Mixtral-8x22B"
    folder.mkdir()
    shutil.copy(data_dir("model_db") / "mixtral-8x22b.json", folder / "config.json")
    assert _json("show", str(folder))["total_params"] == _json("show", "mixtral-8x22b")["total_params"]
