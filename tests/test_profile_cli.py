"""The CLI of the harness: commands exist where users look for them, PyTorch stays optional, bad input gets one
clear line. The real-machine runs are marked slow (they build GB-sized models)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from capsim.cli import app
from capsim.profile import _torch


@pytest.mark.parametrize("command", [["hardware", "calibrate"], ["calibrate"], ["profile"], ["validate"]])
def test_commands_are_registered(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output


def test_capsim_imports_without_loading_torch() -> None:
    code = "import sys, capsim, capsim.profile, capsim.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.fixture
def no_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import torch`` fail inside capsim, as on a machine without the profile extra."""
    real = _torch.importlib.import_module

    def fake(name: str, *args: object) -> object:
        if name == "torch":
            raise ImportError("No module named 'torch'")
        return real(name, *args)

    monkeypatch.setattr(_torch.importlib, "import_module", fake)


def test_missing_torch_is_one_clear_line(no_torch: None) -> None:
    with pytest.raises(_torch.TorchMissingError) as info:
        _torch.require_torch("capsim hardware calibrate")
    assert str(info.value) == (
        "capsim hardware calibrate needs PyTorch, which is not installed; install the profiling extra: "
        "pip install 'capsim[profile]' (on a CPU-only machine install the CPU wheel first, e.g. pip install "
        "torch==2.13.0)"
    )
    result = CliRunner().invoke(app, ["hardware", "calibrate", "--quick"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        "error: capsim hardware calibrate needs PyTorch, which is not installed; install"
    )


def test_bad_prefill_case_is_one_clear_line() -> None:
    result = CliRunner().invoke(app, ["profile", "--prefill", "512"])
    assert result.exit_code == 1
    assert result.output.strip() == "error: --prefill '512' must be BATCHxPROMPT, e.g. 1x512"


@pytest.mark.slow
def test_profile_command_on_this_machine(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "profile",
            "--quick",
            "--layers",
            "1",
            "--batch",
            "1",
            "--context",
            "16",
            "--prefill",
            "1x16",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [c["name"] for c in data["cases"]] == ["decode-b1-c16", "prefill-b1-p16"]
    assert (out / "traces" / "decode-b1-c16.npz").is_file()


@pytest.mark.slow
def test_quick_validation_on_this_machine_and_a_wrong_entry(tmp_path: Path) -> None:
    """The CI job: `capsim validate --quick` for real, then the same measurements against the calibrated entry
    with every bandwidth x4, which must fail with exit status 1 and a larger error."""
    pytest.importorskip("torch")
    runner = CliRunner()
    first = runner.invoke(app, ["validate", "--quick", "--out-dir", str(tmp_path), "--json"])
    assert first.exit_code in (0, 1), first.output
    report = json.loads(first.stdout)
    entry = Path(report["hardware_file"])
    text = entry.read_text()
    wrong = tmp_path / "wrong" / f"{entry.stem}.toml"
    wrong.parent.mkdir()
    bw = float(text.split("memory_bandwidth_gb_s = { value = ")[1].split(",")[0])
    # x4 the bandwidth with the same fraction: 4x the effective rate the engine uses
    wrong.write_text(
        text.replace(
            f"memory_bandwidth_gb_s = {{ value = {bw!r}", f"memory_bandwidth_gb_s = {{ value = {4 * bw!r}"
        )
    )
    assert f"{4 * bw!r}" in wrong.read_text()
    profile = entry.parent / "profile.json"
    second = runner.invoke(
        app,
        [
            "validate",
            "--profile",
            str(profile),
            "--hardware-db",
            str(wrong),
            "--out-dir",
            str(tmp_path / "w"),
            "--json",
        ],
    )
    assert second.exit_code == 1
    bad = json.loads(second.stdout)
    assert bad["summary"]["decode"]["median_error"] < report["summary"]["decode"]["median_error"]
    assert bad["summary"]["decode"]["median_abs_error"] > 0.25
