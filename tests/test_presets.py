"""System presets fill in documented behaviour, keep explicit user choices, and say what they assume."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from capsim import ScenarioError, predict
from capsim.cli import app
from capsim.engine.presets import PRESETS, apply_preset
from capsim.engine.scenario import Scenario

runner = CliRunner()


def test_every_preset_has_a_source_and_applies() -> None:
    for name, preset in PRESETS.items():
        assert preset.source and preset.assumes
        sc, _ = apply_preset(name, Scenario(gpus=2))
        assert sc.mode == preset.settings["mode"]


def test_preset_keeps_explicit_choices() -> None:
    sc, _ = apply_preset("moe-infinity-like", Scenario(cache_policy="oracle"))
    assert sc.mode == "offload" and sc.cache_policy == "oracle" and sc.prefetch is True


def test_unknown_preset_lists_close_matches() -> None:
    with pytest.raises(
        ScenarioError, match="unknown system preset 'ktransformers'; did you mean 'ktransformers-like'"
    ):
        apply_preset("ktransformers", Scenario())


def test_ep_preset_needs_gpus() -> None:
    with pytest.raises(ScenarioError, match="give --gpus N"):
        apply_preset("vllm-ep-like", Scenario())


def test_cli_preset_json_reports_it() -> None:
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
            "--system",
            "ktransformers-like",
            "--weight-dtype",
            "int4",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["deployment"]["mode"] == "cpu-experts"
    assert data["assumptions"]["system_preset"]["source"].startswith(
        "https://github.com/kvcache-ai/ktransformers"
    )


def test_llamacpp_n_cpu_moe_count_places_the_first_layers(default_hardware_db) -> None:
    from capsim import predict

    sc, preset = apply_preset(
        "llamacpp-cpu-moe:12",
        Scenario(model="mixtral-8x7b", hardware="workstation-4090", gpus=1, weight_dtype="int4", gen_len=8),
    )
    assert sc.placement == "experts[0:12]:dram" and preset.settings["placement"] == sc.placement
    pred = predict(sc, hardware_db=default_hardware_db)
    assert pred.deployment["mode"] == "cpu-experts" and pred.deployment["offloaded_moe_layers"] == 12
    assert pred.deployment["tiers"]["dram"]["experts"] == 12 * 8


@pytest.mark.parametrize("name", ["vllm-like:3", "llamacpp-cpu-moe:x", "llamacpp-cpu-moe:0"])
def test_preset_count_errors(name: str) -> None:
    with pytest.raises(ScenarioError, match="only llamacpp-cpu-moe takes a count"):
        apply_preset(name, Scenario())


def test_cpu_expert_presets_name_their_engines() -> None:
    """ktransformers-like and llamacpp-cpu-moe carry their engines' profiles (capsim/engine/engines.toml): the
    KTransformers CPU kernel fraction 0.55 and socket share 0.48 reach the CPU-expert report."""
    assert PRESETS["ktransformers-like"].settings["engine"] == "ktransformers"
    assert PRESETS["llamacpp-cpu-moe"].settings["engine"] == "llama.cpp"
    scenario, _ = apply_preset(
        "ktransformers-like", Scenario(model="qwen3-30b-a3b", hardware="epyc-9654-4090")
    )
    report = predict(replace(scenario, weight_dtype="q4_k_m", batch=1, prompt_len=64, gen_len=8)).deployment
    assert report["cpu_efficiency"]["kernel_bw_fraction"] == 0.55
    assert report["cpu_efficiency"]["replicate_socket_share"] == 0.48
