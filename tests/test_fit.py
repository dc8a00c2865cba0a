"""capsim fit: modes ranked by TPOT; the largest batch and longest context agree with the memory plan."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from capsim import DoesNotFitError, predict
from capsim.cli import app
from capsim.economics.feasibility import max_batch_at, max_context_at, placements
from capsim.engine.scenario import Scenario

runner = CliRunner()


def test_placements_ranked_and_failures_explained(default_hardware_db) -> None:
    base = Scenario(
        model="mixtral-8x7b", hardware="workstation-4090", gpus=1, weight_dtype="int4", host_memory_gb=64
    )
    ranked = placements(base, default_hardware_db)
    ok = [r for r in ranked if r.error is None]
    assert [r.tpot_s for r in ok] == sorted(r.tpot_s for r in ok)
    gpu = next(r for r in ranked if r.mode == "gpu")
    # int4 Mixtral: 46.7e9 x ~0.52 bytes = 24+ GB > 21.6 GB usable on a 24 GB card
    assert gpu.error is not None and gpu.error.startswith("does not fit")
    assert {r.mode for r in ok} == {"offload", "cpu-experts", "cpu"}


def test_max_batch_is_the_edge_of_fitting(default_hardware_db) -> None:
    base = Scenario(model="qwen3-30b-a3b", hardware="h100-sxm", gpus=1, prompt_len=4096, gen_len=512)
    best = max_batch_at(base, default_hardware_db)
    assert best > 1
    pred = predict(replace(base, batch=best), hardware_db=default_hardware_db)
    assert pred.memory.waves == 1
    over = predict(replace(base, batch=best + 1), hardware_db=default_hardware_db)
    assert over.memory.waves == 2


def test_max_context_is_the_edge_of_fitting(default_hardware_db) -> None:
    base = Scenario(model="mixtral-8x7b", hardware="h100-sxm", gpus=2, batch=64)
    ctx = max_context_at(base, default_hardware_db)
    assert ctx > 1000
    fits = predict(replace(base, prompt_len=ctx - 1, gen_len=1), hardware_db=default_hardware_db)
    assert fits.memory.waves == 1
    too_long = predict(replace(base, prompt_len=ctx, gen_len=1), hardware_db=default_hardware_db)
    assert too_long.memory.waves > 1


def test_cli_fit_json() -> None:
    result = runner.invoke(
        app, ["fit", "--model", "deepseek-v2-lite", "--hardware", "h100-sxm", "--gpus", "1", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["placements"][0]["mode"] in ("gpu", "offload")
    assert data["limits"]["max_batch"] >= 1
    assert data["limits"]["max_context_at_batch"] >= 2


def test_cli_predict_offload_table() -> None:
    result = runner.invoke(
        app,
        [
            "predict",
            "--model",
            "mixtral-8x7b",
            "--hardware",
            "workstation-4090",
            "--gpus",
            "1",
            "--mode",
            "offload",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "offload: experts of 32 MoE layers off the device" in result.stdout
    assert "hit rate 0.0%" in result.stdout
    # PCIe 4.0 x16 31.5 GB/s x 0.78 measured pinned-copy efficiency (capsim/offload.py) = 24.57 GB/s
    assert "dram0 -> gpu0" in result.stdout and "24.6 GB/s" in result.stdout


def test_cli_predict_cpu_only_needs_host_memory() -> None:
    # epyc-9654-2s ships a DRAM capacity since issue 15 (CPU-only out of the box); the workstation does not
    result = runner.invoke(app, ["predict", "--hardware", "workstation-4090", "--mode", "cpu"])
    assert result.exit_code == 1
    assert "pass --host-memory-gb" in result.stderr
    result = runner.invoke(
        app, ["predict", "--hardware", "epyc-9654-2s", "--host-memory-gb", "768", "--json"]
    )
    assert result.exit_code == 0
    assert json.loads(result.stdout)["scenario"]["mode"] == "cpu"


def test_nothing_fits_raises(default_hardware_db) -> None:
    with pytest.raises(DoesNotFitError):
        max_batch_at(Scenario(model="deepseek-v3", hardware="rtx-4090", gpus=1), default_hardware_db)


def test_fit_tries_auto_placements(default_hardware_db) -> None:
    """Mixtral int4 on a 24 GB card: auto keeps the hottest experts on the GPU, which must beat computing
    every expert on the CPU (the GPU reads its experts at 1008 GB/s, the CPU at 83.2 GB/s)."""
    base = Scenario(
        model="mixtral-8x7b",
        hardware="workstation-4090",
        gpus=1,
        weight_dtype="int4",
        host_memory_gb=64,
        gen_len=16,
    )
    ranked = placements(base, default_hardware_db)
    auto = next(r for r in ranked if r.mode == "cpu-experts" and r.placement == "auto")
    every = next(r for r in ranked if r.mode == "cpu-experts" and r.placement is None)
    assert "experts on gpu" in auto.detail
    assert auto.tpot_s < every.tpot_s


def test_fit_lists_a_model_that_fits_once(default_hardware_db) -> None:
    # auto placement of a model the GPUs hold is the gpu row, not a second one (the other gpu rows are the
    # parallel layouts at 2 devices, each listed once)
    ranked = placements(Scenario(model="mixtral-8x7b", hardware="h100-sxm", gpus=2), default_hardware_db)
    gpu_rows = [r.layout for r in ranked if r.error is None and r.mode == "gpu"]
    assert gpu_rows.count("TP2") == 1 and len(gpu_rows) == len(set(gpu_rows))
    assert (
        next(r for r in ranked if r.error is None and r.mode == "gpu" and r.options is None).layout == "TP2"
    )


# ---- parallel layouts (issue 12) -------------------------------------------------------------------------
def test_fit_lists_moe_layouts_equal_to_predict(default_hardware_db) -> None:
    """DeepSeek-V3 fp8 on 8x H200: besides the GPU mode (plain TP8) fit tries TP8+EP8, attention-DP8+EP8 (tp=1)
    and TP4 x attention-DP2 + EP8; each row's TPOT is predict's with those options, to the bit."""
    base = Scenario(model="deepseek-v3", hardware="h200-sxm", gpus=8, weight_dtype="fp8")
    ranked = placements(base, default_hardware_db)
    layouts = {r.layout: r for r in ranked if r.mode == "gpu"}
    assert set(layouts) == {"TP8", "TP8 EP8", "TP1 attn-DP8 EP8", "TP4 attn-DP2 EP8"}
    assert [r.layout for r in ranked].count("TP8") == 1  # plain TP over 8 is the gpu row, listed once
    adp = layouts["TP1 attn-DP8 EP8"]
    assert adp.error is None and adp.gpus == 8
    assert adp.options == {"tp": 1, "attention_dp": 8, "ep": 8, "pp": 1, "dp": 1}
    direct = predict(replace(base, tp=1, attention_dp=8, ep=8), hardware_db=default_hardware_db)
    assert adp.tpot_s == direct.tpot_s and adp.ttft_s == direct.ttft_s
    assert direct.deployment["layout"]["attention_dp"] == 8 and direct.deployment["ep"] == 8
    tp4 = layouts["TP4 attn-DP2 EP8"]  # 128 heads / 4 = 32 per rank
    assert (
        tp4.tpot_s
        == predict(replace(base, tp=4, attention_dp=2, ep=8), hardware_db=default_hardware_db).tpot_s
    )
    ok = [r.tpot_s for r in ranked if r.error is None]
    assert ok == sorted(ok)  # ranked together with the mode candidates


def test_fit_reports_impossible_layout_with_reason(default_hardware_db) -> None:
    """Qwen2-57B-A14B has 28 query heads and 4 KV heads: TP8 does not divide 28 (28 / 8 = 3.5), so plain TP8 and
    TP8+EP8 are listed with the validation layer's reason; TP4 (28 / 4 = 7 heads, 4 / 4 = 1 KV head per rank)
    x attention-DP2 + EP8 (64 experts / 8 = 8 per device) and attention-DP8 + EP8 run."""
    ranked = placements(Scenario(model="qwen2-57b-a14b", hardware="h200-sxm", gpus=8), default_hardware_db)
    by_layout = {r.layout: r for r in ranked if r.mode == "gpu"}
    bad = by_layout["TP8 EP8"]
    assert bad.error is not None and "--tp 8 does not divide the model's 28 attention heads" in bad.error
    assert by_layout["TP8"].error is not None and "28 attention heads" in by_layout["TP8"].error
    assert by_layout["TP4 attn-DP2 EP8"].error is None
    assert by_layout["TP1 attn-DP8 EP8"].error is None
    assert ranked[0].layout in (
        "TP4 attn-DP2 EP8",
        "TP1 attn-DP8 EP8",
    )  # the fastest row is a layout that runs


def test_fit_single_gpu_lists_no_layouts(default_hardware_db) -> None:
    for gpus in (
        1,
        None,
    ):  # None: the GPU mode picks the fewest devices that hold it (one H100 for 15.7B bf16)
        ranked = placements(
            Scenario(model="deepseek-v2-lite", hardware="h100-sxm", gpus=gpus), default_hardware_db
        )
        assert all(r.options is None for r in ranked)
        assert [r.layout for r in ranked if r.mode == "gpu" and r.error is None] == ["TP1"]


def test_cli_fit_shows_layouts() -> None:
    args = ["fit", "--model", "deepseek-v3", "--hardware", "h200-sxm", "--gpus", "8", "--weight-dtype", "fp8"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["layout"]: r for r in json.loads(result.stdout)["placements"] if r["mode"] == "gpu"}
    assert rows["TP1 attn-DP8 EP8"]["options"]["attention_dp"] == 8
    text = runner.invoke(app, args, terminal_width=200)
    assert text.exit_code == 0, text.output
    assert "TP1 attn-DP8 EP8" in text.stdout and "TP4 attn-DP2 EP8" in text.stdout
