"""`capsim predict` deployment options from the command line: placement, tiers and links in the output, errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from capsim.cli import app

runner = CliRunner()
EXPERT_BYTES = 3 * 4096 * 14336 * 2  # one Mixtral-8x7B expert in bf16


def run_json(*args: str) -> dict:  # type: ignore[type-arg]
    result = runner.invoke(app, ["predict", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_placement_json_reports_tiers_and_links() -> None:
    d = run_json(
        "--model",
        "mixtral-8x7b",
        "--hardware",
        "workstation-4090",
        "--gpus",
        "1",
        "--gen-len",
        "16",
        "--placement",
        "experts[4:]:dram",
    )
    dep = d["deployment"]
    assert dep["mode"] == "offload" and d["scenario"]["mode"] == "offload"
    # MoE layers 4..31 (28 x 8 = 224 experts) in DRAM, layers 0..3 (32 experts) on the GPU
    assert dep["tiers"]["dram"]["experts"] == 224 and dep["tiers"]["gpu"]["experts"] == 32
    assert dep["tiers"]["dram"]["gb"] == pytest.approx(224 * EXPERT_BYTES / 1e9)
    assert dep["offloaded_moe_layers"] == 28
    link = dep["links"]["host_to_device"]
    # PCIe 4.0 x16 31.5 GB/s x 0.78 measured pinned-copy efficiency (capsim/offload.py)
    assert link["path"].startswith("dram0 -> gpu0") and link["gb_s"] == pytest.approx(31.5 * 0.78)
    assert link["gb_per_step"] == pytest.approx(dep["misses_per_step"] * EXPERT_BYTES / 1e9)
    assert d["decode"]["bottleneck"] == "link"


def test_placement_table_shows_tiers_links_and_bottleneck() -> None:
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
            "--gen-len",
            "16",
            "--placement",
            "auto",
        ],
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "routed experts per tier" in out
    assert "time per decode step (bottleneck: link)" in out
    assert "dram0 -> gpu0" in out
    assert "--mode offload assumed" in out


def test_cpu_experts_table_shows_cpu_time() -> None:
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
            "--gen-len",
            "8",
            "--mode",
            "cpu-experts",
            "--weight-dtype",
            "int4",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "CPU (experts)" in result.stdout
    assert "bottleneck: cpu" in result.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["--placement", "experts:hbm"], "unknown tier 'hbm'"),
        (["--placement", "auto,gpu"], "write it alone"),
        (["--placement", "experts:dram", "--expert-layers", "0:4"], "not both"),
        (["--placement", "cold-experts:99:ssd"], "the model has 8"),
    ],
)
def test_bad_placement_is_one_error_line(args: list[str], message: str) -> None:
    result = runner.invoke(
        app, ["predict", "--model", "mixtral-8x7b", "--hardware", "workstation-4090", "--gpus", "1", *args]
    )
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
