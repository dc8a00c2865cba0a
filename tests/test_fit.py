"""capsim fit: modes ranked by TPOT; the largest batch and longest context agree with the memory plan."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from capsim import DoesNotFitError, predict
from capsim.cli import app
from capsim.fit import max_batch_at, max_context_at, placements
from capsim.scenario import Scenario

runner = CliRunner()


def test_placements_ranked_and_failures_explained(default_hardware_db) -> None:
    base = Scenario(model="mixtral-8x7b", hardware="workstation-4090", gpus=1, weight_dtype="int4",
                    host_memory_gb=64)
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
    result = runner.invoke(app, ["fit", "--model", "deepseek-v2-lite", "--hardware", "h100-sxm", "--gpus", "1",
                                 "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["placements"][0]["mode"] in ("gpu", "offload")
    assert data["limits"]["max_batch"] >= 1
    assert data["limits"]["max_context_at_batch"] >= 2


def test_cli_predict_offload_table() -> None:
    result = runner.invoke(app, ["predict", "--model", "mixtral-8x7b", "--hardware", "workstation-4090",
                                 "--gpus", "1", "--mode", "offload"])
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
    result = runner.invoke(app, ["predict", "--hardware", "epyc-9654-2s", "--host-memory-gb", "768", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["scenario"]["mode"] == "cpu"


def test_nothing_fits_raises(default_hardware_db) -> None:
    with pytest.raises(DoesNotFitError):
        max_batch_at(Scenario(model="deepseek-v3", hardware="rtx-4090", gpus=1), default_hardware_db)


def test_fit_tries_auto_placements(default_hardware_db) -> None:
    """Mixtral int4 on a 24 GB card: auto keeps the hottest experts on the GPU, which must beat computing
    every expert on the CPU (the GPU reads its experts at 1008 GB/s, the CPU at 83.2 GB/s)."""
    base = Scenario(model="mixtral-8x7b", hardware="workstation-4090", gpus=1, weight_dtype="int4",
                    host_memory_gb=64, gen_len=16)
    ranked = placements(base, default_hardware_db)
    auto = next(r for r in ranked if r.mode == "cpu-experts" and r.placement == "auto")
    every = next(r for r in ranked if r.mode == "cpu-experts" and r.placement is None)
    assert "experts on gpu" in auto.detail
    assert auto.tpot_s < every.tpot_s


def test_fit_lists_a_model_that_fits_once(default_hardware_db) -> None:
    # auto placement of a model the GPUs hold is the gpu row, not a second one
    ranked = placements(Scenario(model="mixtral-8x7b", hardware="h100-sxm", gpus=2), default_hardware_db)
    assert [r.mode for r in ranked if r.error is None].count("gpu") == 1
