"""`capsim predict` takes its scenario options from Scenario's fields (declared once, issue 10)."""

from __future__ import annotations

import inspect
import json
from dataclasses import fields

from typer.testing import CliRunner

from capsim.cli import app
from capsim.cli.scenario_options import scenario_options
from capsim.engine.scenario import Scenario

runner = CliRunner()


def test_every_scenario_field_is_an_option_with_its_default() -> None:
    seen: dict[str, Scenario] = {}

    @scenario_options
    def command(scenario: Scenario, json_out: bool = False) -> None:
        seen["scenario"] = scenario

    params = inspect.signature(command).parameters
    assert [f.name for f in fields(Scenario)] == list(params)[: len(fields(Scenario))]
    assert list(params)[-1] == "json_out"
    for f in fields(Scenario):
        assert params[f.name].default == f.default
    command(**{f.name: f.default for f in fields(Scenario)}, json_out=True)
    assert seen["scenario"] == Scenario()


def test_flags_reach_the_scenario() -> None:
    args = [
        "predict",
        "--model",
        "mixtral-8x7b",
        "--hardware",
        "rtx-4090",
        "--gpus",
        "1",
        "--mode",
        "offload",
    ]
    result = runner.invoke(app, [*args, "--batch", "3", "--no-prefetch", "--prefill-chunk", "1024", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert (out["scenario"]["batch"], out["scenario"]["prefill_chunk_tokens"]) == (3, 1024)
    assert out["deployment"]["prefetch"] is False
