"""Issue 15 regressions: every bad or unusual input the issue lists gets one clear line and the documented exit
status (0 done, 1 capsim error, 2 usage error), or correct data. One test per input class; the fuzz suite
(tests/test_cli_fuzz.py, scripts/fuzz_cli.py) generalises them."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from capsim.cli import app

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]
SWEEP = ["sweep", "--model", "mixtral-8x7b", "--hardware", "h100-sxm"]


def _error_line(result) -> str:  # type: ignore[no-untyped-def]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ---- sweep: output paths ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "out,message",
    [
        ("/proc/capsim-grid.csv", "--out /proc/capsim-grid.csv: cannot write in /proc"),
        ("file.npz/grid.csv", "file.npz is a file, not a folder; choose another path"),
        ("adir.csv", "--out adir.csv is a folder; give a file name inside it"),
    ],
)
def test_sweep_out_unwritable_or_not_a_folder(tmp_path: Path, out: str, message: str) -> None:
    (tmp_path / "file.npz").write_bytes(b"not a folder")
    (tmp_path / "adir.csv").mkdir()
    before = _files(tmp_path)
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        result = runner.invoke(app, [*SWEEP, "--out", out])
    finally:
        os.chdir(old)
    assert result.exit_code == 1
    assert message in _error_line(result)
    assert _files(tmp_path) == before  # nothing written, no .parts folder left behind


def test_sweep_pareto_unwritable_is_refused_before_the_csv_is_written(tmp_path: Path) -> None:
    out = tmp_path / "grid.csv"
    result = runner.invoke(app, [*SWEEP, "--out", str(out), "--pareto", "/proc/front.json"])
    assert result.exit_code == 1
    assert "--pareto /proc/front.json: cannot write in /proc" in _error_line(result)
    assert _files(tmp_path) == []


def test_sweep_pareto_is_written_atomically(tmp_path: Path) -> None:
    out, front = tmp_path / "grid.csv", tmp_path / "sub" / "front.json"
    result = runner.invoke(app, [*SWEEP, "--gpus", "2", "--out", str(out), "--pareto", str(front)])
    assert result.exit_code == 0, result.output
    assert json.loads(front.read_text())[0]["model"] == "mixtral-8x7b"
    assert _files(tmp_path) == ["grid.csv", "sub", "sub/front.json"]


# ---- sweep: axis values ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "option,value,message",
    [
        ("--batch", "-1:8:x2", "--batch range '-1:8:x2': values must be between 1 and 2,147,483,647"),
        (
            "--batch",
            "0:8:x2",
            "--batch range '0:8:x2': values must be between 1 and 2,147,483,647",
        ),  # hung at 4 GB
        ("--gen-len", "99999999999999999999999", "--gen-len values must be between 1 and 2,147,483,647"),
        (
            "--batch",
            "1:100000000:+1",
            "--batch range '1:100000000:+1' has 100,000,000 values; an axis holds at most 1,000,000",
        ),
        ("--batch", "8:1:x2", "--batch range '8:1:x2' is empty: STOP 1 is below START 8"),
        ("--batch", "1:8:x1", "the factor after x must be a number > 1"),
        ("--batch", "1:8:+0", "the step after + must be >= 1"),
    ],
)
def test_sweep_bad_axes_are_refused_quickly(tmp_path: Path, option: str, value: str, message: str) -> None:
    start = time.perf_counter()
    result = runner.invoke(app, [*SWEEP, "--out", str(tmp_path / "g.csv"), option, value])
    assert result.exit_code == 1
    assert message in _error_line(result)
    assert time.perf_counter() - start < 10  # counted, never expanded
    assert _files(tmp_path) == []


def test_sweep_huge_grid_needs_force(tmp_path: Path) -> None:
    # 1,000,000 batches x 1,000 prompts = 10^9 rows > ROW_LIMIT (10^8); CSV at 300 B/row = 300 GB
    args = [*SWEEP, "--out", str(tmp_path / "g.csv"), "--batch", "1:1000000:+1", "--prompt-len", "1:1000:+1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    line = _error_line(result)
    assert "the grid has 1,000,000,000 rows, about 300.0 GB of output" in line
    assert "above 100,000,000 rows a sweep needs --force" in line
    assert _files(tmp_path) == []


def test_sweep_chunk_larger_than_memory_is_refused(tmp_path: Path) -> None:
    from capsim.sweep.guard import SweepEstimate, check_size

    with pytest.raises(Exception, match="over a quarter of this machine's"):
        check_size(
            SweepEstimate(rows=10, output_bytes=10, chunk_bytes=10**18), tmp_path / "g.csv", force=False
        )
    check_size(SweepEstimate(rows=10, output_bytes=10, chunk_bytes=10**18), tmp_path / "g.csv", force=True)


# ---- sweep: state that must not block the next run -------------------------------------------------------
def test_stale_parts_folder_does_not_block(tmp_path: Path) -> None:
    out = tmp_path / "g.csv"
    parts = tmp_path / "g.csv.parts"
    parts.mkdir()
    (parts / "manifest.json").write_text('{"grid": "an older, different grid"}')  # what the overflow left
    result = runner.invoke(app, [*SWEEP, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.exists() and not parts.exists()


def test_failed_sweep_leaves_no_parts_folder(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import capsim.sweep.run as run_module

    def explode(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(run_module.SweepRun, "write_part", explode)
    result = runner.invoke(app, [*SWEEP, "--out", str(tmp_path / "g.csv")])
    assert result.exit_code != 0
    assert _files(tmp_path) == []  # the run wrote no chunk, so nothing stays to block the next one


def test_two_identical_sweeps_started_together(tmp_path: Path) -> None:
    """The second run of the same output stops with one line while the first holds the lock (it used to
    crash when the first removed the parts folder under it); the first finishes normally."""
    out = tmp_path / "g.csv"
    args = [
        *SWEEP,
        "--gpus",
        "1,2,4,8",
        "--batch",
        "1:4096:+1",
        "--prompt-len",
        "128,512",
        "--chunk-rows",
        "64",
        "--out",
        str(out),
        "--json",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    code = "import sys; from capsim.cli import main; sys.argv = ['capsim'] + sys.argv[1:]; main()"
    first = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lock = tmp_path / "g.csv.parts" / "lock"
    deadline = time.monotonic() + 60
    while not lock.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    second = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=False
    )
    _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err
    if second.returncode != 0:  # it met the first run's lock
        assert second.returncode == 1
        assert second.stderr.strip().splitlines() == [
            (
                "error: another capsim sweep is writing g.csv right now; wait for it to finish (it resumes from the "
                "same parts), or write to another --out"
            )
        ]
    assert "Traceback" not in second.stderr
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert len(rows) == 4 * 4096 * 2  # every row once
    assert not (tmp_path / "g.csv.parts").exists()


def test_lock_is_exclusive_in_one_process(tmp_path: Path) -> None:
    from capsim.errors import ScenarioError
    from capsim.sweep.guard import sweep_lock

    with (
        sweep_lock(tmp_path / "x.csv.parts"),
        pytest.raises(ScenarioError, match="another capsim sweep"),
        sweep_lock(tmp_path / "x.csv.parts"),
    ):
        pass
    with sweep_lock(tmp_path / "x.csv.parts"):  # released with its holder
        pass


# ---- sweep: Dask -----------------------------------------------------------------------------------------
def test_dask_workers_zero_is_refused(tmp_path: Path) -> None:
    result = runner.invoke(
        app, [*SWEEP, "--out", str(tmp_path / "g.csv"), "--backend", "dask", "--workers", "0"]
    )
    assert result.exit_code == 1
    assert _error_line(result) == "error: --workers must be >= 1 for a local Dask cluster, got 0"
    assert _files(tmp_path) == []


def test_unreachable_scheduler_is_one_line(tmp_path: Path) -> None:
    pytest.importorskip("dask.distributed")
    result = runner.invoke(
        app,
        [*SWEEP, "--out", str(tmp_path / "g.csv"), "--backend", "dask", "--scheduler", "tcp://127.0.0.1:9"],
    )
    assert result.exit_code == 1
    assert "cannot reach the Dask scheduler 'tcp://127.0.0.1:9'" in result.stderr
    assert "Traceback" not in result.stderr
    assert _files(tmp_path) == []


# ---- sweep: --gpus --------------------------------------------------------------------------------------
def test_gpus_beyond_a_node_keep_their_count(tmp_path: Path) -> None:
    out = tmp_path / "g.csv"
    result = runner.invoke(
        app,
        [
            "sweep",
            "--model",
            "mixtral-8x7b",
            "--hardware",
            "h100-sxm,mi300x",
            "--gpus",
            "2,16",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert [(r["hardware"], r["gpus"], r["feasible"].lower()) for r in rows] == [
        ("h100-sxm", "2", "true"),
        ("h100-sxm", "16", "false"),
        ("mi300x", "2", "true"),
        ("mi300x", "16", "false"),
    ]
    assert "at most 8 devices" in rows[1]["bottleneck"]


def test_gpus_zero_mixes_with_counts(tmp_path: Path) -> None:
    out = tmp_path / "g.csv"
    result = runner.invoke(
        app,
        [
            "sweep",
            "--model",
            "mixtral-8x7b",
            "--hardware",
            "dgx-h100,h100-sxm",
            "--gpus",
            "0,4",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = {(r["hardware"], r["gpus"]): r for r in csv.DictReader(out.read_text().splitlines())}
    assert rows[("dgx-h100", "8")]["feasible"].lower() == "true"  # 0 = all 8 GPUs of the DGX
    assert rows[("h100-sxm", "4")]["feasible"].lower() == "true"
    assert "--gpus 0 means all devices of a system" in rows[("h100-sxm", "0")]["bottleneck"]


# ---- exit codes ------------------------------------------------------------------------------------------
def test_fit_unknown_model_exits_1() -> None:
    result = runner.invoke(app, ["fit", "--model", "nosuch"])
    assert result.exit_code == 1
    assert _error_line(result).startswith("error: unknown model 'nosuch'")


def test_fit_with_no_mode_that_runs_exits_1() -> None:
    result = runner.invoke(
        app,
        ["fit", "--model", "deepseek-v3", "--hardware", "h100-sxm", "--gpus", "1", "--host-memory-gb", "1"],
    )
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: no mode runs deepseek-v3 on h100-sxm; the reasons are in the table above"
    )


def test_usage_errors_are_one_line_exit_2() -> None:
    result = runner.invoke(app, ["predict", "--batch", "x"])
    assert result.exit_code == 2
    assert _error_line(result) == (
        "error: Invalid value for '--batch': Input should be a valid integer, unable to "
        "parse string as an integer (see: capsim predict --help)"
    )
    result = runner.invoke(app, ["predcit"])
    assert result.exit_code == 2
    assert (
        _error_line(result)
        == "error: No such command 'predcit'. Did you mean 'predict'? (see: capsim --help)"
    )


def test_version() -> None:
    from capsim import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"capsim {__version__}\n"


# ---- units -----------------------------------------------------------------------------------------------
def test_sweep_slo_needs_a_unit(tmp_path: Path) -> None:
    result = runner.invoke(app, [*SWEEP, "--out", str(tmp_path / "g.csv"), "--slo-tpot", "50"])
    assert result.exit_code == 1
    assert _error_line(result) == "error: --slo-tpot '50' has no unit; write 50ms or 50s"
    result = runner.invoke(app, [*SWEEP, "--out", str(tmp_path / "g.csv"), "--slo-tpot", "50ms", "--json"])
    assert result.exit_code == 0, result.output


# ---- trace stats ----------------------------------------------------------------------------------------
def test_trace_stats_steps_beyond_the_trace() -> None:
    # the shipped deepseek-v3-group trace holds 192 tokens
    result = runner.invoke(app, ["trace", "stats", "deepseek-v3-group", "-t", "100000", "--no-png"])
    assert result.exit_code == 1
    assert _error_line(result) == (
        "error: --tokens 100000: a step takes 1 to 192 tokens of this 192-token trace; "
        "choose step sizes in that range"
    )


# ---- CPU-only out of the box -------------------------------------------------------------------------------
def test_cpu_only_system_predicts_out_of_the_box() -> None:
    result = runner.invoke(
        app, ["predict", "--hardware", "epyc-9654-2s", "--model", "mixtral-8x7b", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["deployment"]["mode"] == "cpu"
    assert data["tpot_s"] > 0


def test_moe_dense_mbu_above_100_percent_is_explained() -> None:
    result = runner.invoke(app, ["predict", "--hardware", "epyc-9654-2s", "--model", "mixtral-8x7b"])
    assert result.exit_code == 0
    assert "note: dense MBU/MFU above 100% (prefill, decode) is expected for a MoE model" in result.stdout


# ---- results never overwritten silently ---------------------------------------------------------------------
def test_radar_default_name_names_the_inputs_and_never_overwrites(tmp_path: Path) -> None:
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        for _ in range(2):
            result = runner.invoke(app, ["radar", "--model", "mixtral-8x7b", "--hardware", "h100-sxm,mi300x"])
            assert result.exit_code == 0, result.output
    finally:
        os.chdir(old)
    assert _files(tmp_path) == [
        "capsim-radar-mixtral-8x7b-h100-sxm-mi300x-b1-2.png",
        "capsim-radar-mixtral-8x7b-h100-sxm-mi300x-b1-2.svg",
        "capsim-radar-mixtral-8x7b-h100-sxm-mi300x-b1.png",
        "capsim-radar-mixtral-8x7b-h100-sxm-mi300x-b1.svg",
    ]


def test_profile_run_folders_are_not_reused(tmp_path: Path) -> None:
    from capsim.cli.profile import _run_dir

    first = _run_dir(tmp_path, "cpu-x", quick=True)
    first.mkdir()
    second = _run_dir(tmp_path, "cpu-x", quick=True)
    assert second.name == first.name + "-2"


# ---- small ones -----------------------------------------------------------------------------------------
def test_hardware_list_shows_whole_ids() -> None:
    result = runner.invoke(app, ["hardware", "list"])
    assert result.exit_code == 0
    first_cells = {line.split("│")[1].strip() for line in result.stdout.splitlines() if line.startswith("│")}
    assert {"a100-pcie-40gb", "epyc-9654-2s", "gb200-nvl72"} <= first_cells


def test_duplicate_id_error_names_the_cli_option(tmp_path: Path) -> None:
    shipped = REPO / "hardware_db" / "accelerators" / "h100-sxm.toml"
    (tmp_path / "h100-sxm.toml").write_text(shipped.read_text())
    result = runner.invoke(
        app, ["hardware", "show", "h100-sxm", "--hardware-db", str(tmp_path / "h100-sxm.toml")]
    )
    assert result.exit_code == 1
    assert "give it a new id, or pass --override to replace it" in _error_line(result)
