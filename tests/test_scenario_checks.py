"""The one scenario validation layer (capsim.engine.checks), shared by predict, sweep, fit and plan:
the same impossible configuration is refused with the same line everywhere (issue 15)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from typer.testing import CliRunner

from capsim import Scenario, predict
from capsim.cli import app
from capsim.engine.checks import (
    SCENARIO_CHECKS,
    check_scenario,
    context_window_exceeded,
    scenario_check,
    valid_tp_degrees,
)
from capsim.engine.layout import Layout
from capsim.errors import ScenarioError
from capsim.models.db import resolve_model

runner = CliRunner()


def test_prompt_beyond_context_window_is_refused() -> None:
    # Mixtral-8x7B: max_position_embeddings = 32768 (model_db); 100000 + 128 = 100128 > 32768
    with pytest.raises(ScenarioError, match=r"100,128 tokens exceed mixtral-8x7b's context window of 32,768"):
        predict(Scenario(model="mixtral-8x7b", hardware="h100-sxm", gpus=2, prompt_len=100_000))


def test_context_window_edge_is_allowed() -> None:
    # 32640 + 128 = 32768 tokens: exactly the window, so it runs
    p = predict(Scenario(model="mixtral-8x7b", hardware="h100-sxm", gpus=2, prompt_len=32_640, gen_len=128))
    assert p.tpot_s > 0


def test_context_window_mask_is_vectorised() -> None:
    model = resolve_model("mixtral-8x7b")
    mask = context_window_exceeded(model, np.array([32_640, 32_641, 512]), np.array([128, 128, 128]))
    assert mask.tolist() == [False, True, False]


@pytest.mark.parametrize("model,gpus,heads", [("mixtral-8x7b", 3, 32), ("qwen3-30b-a3b", 6, 32)])
def test_tp_not_dividing_heads_is_refused(model: str, gpus: int, heads: int) -> None:
    with pytest.raises(
        ScenarioError, match=rf"--tp {gpus} does not divide the model's {heads} attention heads"
    ):
        predict(Scenario(model=model, hardware="h100-sxm", gpus=gpus))


def test_valid_tp_degrees_name_the_choices() -> None:
    # Mixtral: 32 query heads, 8 KV heads. TP must divide 32, and 8 % TP == 0 or TP % 8 == 0:
    # 1, 2, 4, 8 (KV split) and 16, 32 (KV replicated)
    assert valid_tp_degrees(resolve_model("mixtral-8x7b")) == [1, 2, 4, 8, 16, 32]


def test_same_line_from_predict_sweep_and_fit(tmp_path) -> None:
    expected = "--tp 3 does not divide the model's 32 attention heads; valid --tp: 1, 2 "
    r = runner.invoke(app, ["predict", "--gpus", "3"])
    assert r.exit_code == 1 and expected in r.stderr
    out = tmp_path / "g.csv"
    r = runner.invoke(
        app, ["sweep", "--model", "mixtral-8x7b", "--hardware", "h100-sxm", "--gpus", "3", "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    assert [row["bottleneck"] for row in csv.DictReader(out.read_text().splitlines())] == [
        "does not run: "
        + expected.rstrip()
        + " (set --gpus or --tp to one of them, or put the other devices in "
        "--attention-dp, --pp or --dp)"
    ]
    r = runner.invoke(app, ["fit", "--hardware", "h100-sxm", "--gpus", "3", "--json"])
    assert expected in r.stdout


def test_sweep_rows_beyond_the_context_window_do_not_run(tmp_path) -> None:
    out = tmp_path / "g.csv"
    r = runner.invoke(
        app,
        [
            "sweep",
            "--model",
            "mixtral-8x7b",
            "--hardware",
            "h100-sxm",
            "--gpus",
            "2",
            "--prompt-len",
            "512,40000",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert [(r["prompt_len"], r["feasible"].lower()) for r in rows] == [("512", "true"), ("40000", "false")]
    assert rows[1]["bottleneck"] == "does not run: exceeds the 32768-token context window"


def test_checks_are_extensible() -> None:
    model = resolve_model("mixtral-8x7b")

    @scenario_check
    def no_batch_seven(scenario, model, layout):  # type: ignore[no-untyped-def]
        if scenario.batch == 7:
            raise ScenarioError("batch 7 refused by a test check")

    try:
        with pytest.raises(ScenarioError, match="batch 7 refused"):
            check_scenario(Scenario(batch=7), model, Layout())
        check_scenario(Scenario(batch=6), model, Layout())
    finally:
        SCENARIO_CHECKS.remove(no_batch_seven)


def test_layout_product_is_checked() -> None:
    model = resolve_model("mixtral-8x7b")
    with pytest.raises(
        ScenarioError, match=r"--tp 2 x --pp 1 x --dp 1 = 2 devices, but the layout has 1 node\(s\) x 4 = 4"
    ):
        check_scenario(Scenario(), model, Layout(tp=2, devices_per_node=4))


def test_expert_divisibility_names_valid_degrees() -> None:
    # Qwen1.5-MoE-A2.7B: 16 heads (TP 8 splits them), 60 experts
    model = resolve_model("qwen1.5-moe-a2.7b")
    # (the divisors of 60 among the 8 devices: 1, 2, 4)
    with pytest.raises(
        ScenarioError,
        match=r"--ep 8 must divide both the 8 devices .* and the 60 experts; valid --ep: 1, 2, 4$",
    ):
        check_scenario(Scenario(model=model), model, Layout(tp=8, devices_per_node=8, ep=8))


@pytest.mark.parametrize("command", ["predict", "fit"])
def test_host_memory_finite_in_gb_but_not_in_bytes_is_refused(command: str) -> None:
    """Regression (long fuzz run): --host-memory-gb 1.7976931348623157e+308 is a finite number of GB, but
    times 1e9 bytes/GB it is inf, and the DRAM expert-slot count became inf // x = NaN (a ValueError
    traceback from fit). Above 1e9 GB (an exabyte) is refused with one line."""
    with pytest.raises(ScenarioError, match=r"beyond what capsim models \(at most 1,000,000,000 GB\)"):
        Scenario(host_memory_gb=1.7976931348623157e308).validate()
    result = runner.invoke(app, [command, "--host-memory-gb", "1.7976931348623157e+308", "--json"])
    assert result.exit_code == 1, result.output
    assert "beyond what capsim models" in result.output
    Scenario(host_memory_gb=1e9).validate()  # the bound itself is accepted
