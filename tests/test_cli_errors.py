"""The CLI's contract for bad input: one `error: …` line on stderr, exit status 1, no traceback, nothing on
stdout. And the default `capsim predict` run (Mixtral-8x7B on 2x H100) with its JSON keys."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from capsim.cli import app

runner = CliRunner()

REQUIRED_JSON_KEYS = {
    "ttft_s",
    "tpot_s",
    "e2e_latency_s",
    "decode_tokens_per_s",
    "prefill_tokens_per_s",
    "mbu",
    "mfu",
    "s_mbu",
    "s_mfu",
    "activated_experts_per_layer",
    "memory",
    "bottleneck",
    "assumptions",
}


def test_default_predict_is_mixtral_on_two_h100() -> None:
    result = runner.invoke(app, ["predict", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) >= REQUIRED_JSON_KEYS
    assert {"weights_gb", "kv_cache_gb", "total_gb", "capacity_gb"} <= set(data["memory"])
    assert data["scenario"]["model"] == "mixtral-8x7b"
    assert data["scenario"]["gpus"] == 2
    assert data["assumptions"]["hardware"]["id"] == "h100-sxm"
    # 8 experts, top-2, batch 1: exactly 2 activated per layer in every one of 32 layers
    assert data["activated_experts_per_layer"] == [pytest.approx(2.0)] * 32
    # capacity: H100 SXM 80 GB (hardware.md §1)
    assert data["memory"]["capacity_gb"] == pytest.approx(80.0)


def test_default_predict_table_has_assumptions_block() -> None:
    result = runner.invoke(app, ["predict"])
    assert result.exit_code == 0
    assert "assumptions" in result.stdout
    # the default router: the model family's fit to MoE-CAP's measured activated experts (model_db/routing.toml)
    assert "routing: default (zipf:0.98: mixtral family; MoE-CAP" in result.stdout
    assert "memory_bw_fraction = 0.85" in result.stdout


@pytest.mark.parametrize(
    "args,expected",
    [
        (
            ["predict", "--model", "mixtral-8x7"],
            "error: unknown model 'mixtral-8x7'; did you mean 'mixtral-8x7b'",
        ),
        (["predict", "--hardware", "h100"], "error: unknown hardware 'h100'; did you mean 'h100-sxm'"),
        (["predict", "--batch", "0"], "error: batch must be an integer >= 1, got 0"),
        (["predict", "--prompt-len", "-5"], "error: prompt length must be an integer >= 1, got -5"),
        (["predict", "--gen-len", "0"], "error: generated length must be an integer >= 1, got 0"),
        (["predict", "--weight-dtype", "fp3"], "error: unknown weight dtype 'fp3'; choose one of"),
        (["predict", "--kv-dtype", "int2"], "error: unknown KV-cache dtype 'int2'; choose one of"),
        (
            ["predict", "--model", "deepseek-v3", "--hardware", "rtx-4090", "--gpus", "1"],
            "error: does not fit: needs ",
        ),
        (["predict", "--model", "/nonexistent/config.json"], "error: "),
    ],
)
def test_bad_input_gives_one_error_line(args: list[str], expected: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(expected), lines[0]
    assert "Traceback" not in result.stderr


def test_does_not_fit_reports_need_and_have_numbers() -> None:
    # DeepSeek-V3 is published in fp8: ~671e9 params x 1 byte ≈ 671 GB of weights alone; one RTX 4090 has
    # 24 GB (hardware.md §1), of which 90 % (vLLM's default gpu_memory_utilization) = 21.6 GB is usable.
    result = runner.invoke(
        app, ["predict", "--model", "deepseek-v3", "--hardware", "rtx-4090", "--gpus", "1"]
    )
    line = result.stderr.strip()
    assert "has 21.6 GB" in line
    needs = float(line.split("needs ")[1].split(" GB")[0].replace(",", ""))
    assert 671 < needs < 700


def test_malformed_config_names_the_field(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({"model_type": "mixtral", "hidden_size": 4096}))
    result = runner.invoke(app, ["predict", "--model", str(bad)])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    assert "field '" in result.stderr


def test_device_without_published_flops_says_which_value_is_missing() -> None:
    # Apple publishes no GPU FLOPS for the M3 Max (hardware.md §2): the value is absent, never invented
    result = runner.invoke(app, ["predict", "--model", "qwen3-30b-a3b", "--hardware", "m3-max"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: m3-max has no 'peak_tflops_dense.bf16' in its database entry")
