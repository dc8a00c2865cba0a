"""``capsim hardware list`` / ``show`` through typer's CliRunner: exit codes, key lines, JSON shape."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from capsim.cli import app
from capsim.hardware.db import HardwareDB

# out_console() renders 120 columns when stdout is not a terminal, so long names wrap onto a second line
runner = CliRunner(env={"NO_COLOR": "1"})
WriteTree = Callable[[Path, dict[str, str]], Path]

MY_GPU = """
schema = 1
id = "my-gpu"
kind = "accelerator"
name = "My GPU"
vendor = "Example"
device_class = "consumer-gpu"
source = "test: a user-defined device"
memory_capacity_gb = 16
memory_bandwidth_gb_s = 500
[links]
host = "pcie4-x16"
"""


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()]


def test_list_shows_every_entry(default_hardware_db: HardwareDB) -> None:
    result = runner.invoke(app, ["hardware", "list"])
    assert result.exit_code == 0, result.output
    assert (
        f"{len(default_hardware_db)} entries; '?' = soft value. Sources: capsim hardware show ID"
        in result.output
    )
    row = next(line for line in _lines(result.output) if line.startswith("│ h100-sxm "))
    cells = [c.strip() for c in row.strip("│").split("│")]
    # hardware.md §1-§3: 80 GB, 3,350 GB/s, 989.4 dense BF16 TFLOPS, 700 W, $30,678 (soft: Intel's slide)
    assert cells[:2] + cells[3:] == [
        "h100-sxm",
        "accelerator",
        "80 GB",
        "3,350 GB/s",
        "989.4",
        "700 W",
        "$30,678?",
    ]
    assert cells[2].startswith("NVIDIA H100")


def test_list_kind_filter_and_soft_marks() -> None:
    result = runner.invoke(app, ["hardware", "list", "--kind", "cpu"])
    assert result.exit_code == 0, result.output
    assert "9 entries" in result.output  # 6 + xeon-6454s, epyc-9b14, core-i9-10900x (published set)
    row = next(line for line in _lines(result.output) if line.startswith("│ epyc-9965 "))
    assert "55.3?" in row  # §4: 55.3 TF BF16 (?) -> soft -> trailing '?'
    assert "h100-sxm" not in result.output


def test_list_json_is_built_from_the_entries() -> None:
    result = runner.invoke(app, ["hardware", "list", "--kind", "link", "--json"])
    assert result.exit_code == 0, result.output
    links = json.loads(result.stdout)
    assert {link["kind"] for link in links} == {"link"}
    nvlink4 = next(link for link in links if link["id"] == "nvlink4")
    assert nvlink4["gb_s_per_dir"] == 450 and nvlink4["technology"] == "nvlink"
    assert nvlink4["topology"] == "switch"
    assert nvlink4["provenance"]["gb_s_per_dir"]["source"].startswith("NVIDIA H100 datasheet")


def test_show_system_prints_topology_and_bandwidths() -> None:
    result = runner.invoke(app, ["hardware", "show", "dgx-h100"])
    assert result.exit_code == 0, result.output
    lines = _lines(result.output)
    assert lines[0] == "dgx-h100 (system): NVIDIA DGX H100"
    assert "GPU-GPU bandwidth: 450.00 GB/s per direction (widest path)" in lines
    # PCIe 5.0 x16 per direction (§7) is the host -> GPU bottleneck
    assert "host-GPU bandwidth: 63.00 GB/s per direction (widest path)" in lines
    assert any(line.startswith("│ gpu0 ") and "nvswitch" in line and "450.00" in line for line in lines)


def test_show_json_has_sources_efficiency_and_computed_bandwidths() -> None:
    result = runner.invoke(app, ["hardware", "show", "workstation-4090", "--json"])
    assert result.exit_code == 0, result.output
    ws = json.loads(result.stdout)
    assert ws["computed"] == {"gpu_to_gpu_gb_s": None, "host_to_gpu_gb_s": 31.5}
    assert {"from": "dram0", "to": "cpu0", "bandwidth_gb_s": pytest.approx(83.2), "link": "ddr5-5200"} in ws[
        "topology"
    ]["edges"]

    result = runner.invoke(app, ["hardware", "show", "h100-sxm", "--json"])
    h100 = json.loads(result.stdout)
    assert h100["peak_tflops_dense"]["bf16"] == 989.4
    assert h100["provenance"]["price.purchase_usd"]["soft"] is True
    assert h100["efficiency"]["device_class"] == "datacenter-gpu"
    assert h100["efficiency"]["provenance"]["gpu_memory_utilization"]["value"] == 0.9


def test_show_accelerator_lists_values_with_sources() -> None:
    result = runner.invoke(app, ["hardware", "show", "gb200"])
    assert result.exit_code == 0, result.output
    row = next(line for line in _lines(result.output) if line.startswith("│ memory_capacity_gb "))
    assert "186.0?" in row and "NVL72: 13.4 TB / 72 (?)" in row
    assert "efficiency (device class datacenter-gpu)" in result.output


def test_unknown_id_is_one_error_line() -> None:
    result = runner.invoke(app, ["hardware", "show", "h100"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("error: ")
    assert "unknown hardware 'h100'; did you mean 'h100-sxm', 'dgx-h100', 'h100-pcie'?" in result.stderr


def test_unknown_kind_is_an_error() -> None:
    result = runner.invoke(app, ["hardware", "list", "--kind", "gpu"])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: unknown hardware kind 'gpu'; choose one of accelerator, cpu, dram, ssd, link, system"
    )


def test_hardware_db_option_adds_and_overrides(tmp_path: Path, write_hardware_tree: WriteTree) -> None:
    root = write_hardware_tree(tmp_path / "mine", {"my-gpu.toml": MY_GPU})
    result = runner.invoke(app, ["hardware", "list", "--kind", "accelerator", "--hardware-db", str(root)])
    assert result.exit_code == 0, result.output
    assert any(line.startswith("│ my-gpu ") and "500 GB/s" in line for line in _lines(result.output))

    clash = write_hardware_tree(tmp_path / "clash", {"l4.toml": MY_GPU.replace('"my-gpu"', '"l4"')})
    result = runner.invoke(app, ["hardware", "show", "l4", "--hardware-db", str(clash)])
    assert result.exit_code == 1
    assert "id 'l4' is already defined in" in result.stderr and "--override" in result.stderr
    result = runner.invoke(
        app, ["hardware", "show", "l4", "--json", "--hardware-db", str(clash), "--override"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["memory_bandwidth_gb_s"] == 500


def test_malformed_hardware_db_names_file_and_field(tmp_path: Path, write_hardware_tree: WriteTree) -> None:
    root = write_hardware_tree(tmp_path, {"my-gpu.toml": MY_GPU.replace("memory_bandwidth_gb_s = 500", "")})
    result = runner.invoke(app, ["hardware", "list", "--hardware-db", str(root)])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"error: {root / 'my-gpu.toml'}: missing required field 'memory_bandwidth_gb_s' for an accelerator entry"
    )
