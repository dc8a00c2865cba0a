"""A sweep killed mid-way (SIGKILL, no chance to clean up) resumes where it stopped: the final output equals an
uninterrupted run byte for byte, so no row is lost or written twice.

The output is streamed into ``<out>.parts/output.partial`` and committed after each chunk in
``progress.json`` (chunks committed, committed length); what lies past the committed length when a run dies is
a torn tail that the resumed run cuts off."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from capsim.sweep import Grid
from capsim.sweep.run import Filters, SweepRun, run_local

REPO = Path(__file__).resolve().parents[1]
ARGS = [
    "--model",
    "qwen3-30b-a3b,mixtral-8x7b",
    "--hardware",
    "h100-sxm,a100-sxm-80gb",
    "--gpus",
    "1,2",
    "--batch",
    "1:50:+1",
    "--prompt-len",
    "256,4096",
    "--gen-len",
    "16,256",
    "--chunk-rows",
    "16",
]
GRID = Grid(
    models=("qwen3-30b-a3b", "mixtral-8x7b"),
    hardware=("h100-sxm", "a100-sxm-80gb"),
    gpus=(1, 2),
    batch=tuple(range(1, 51)),
    prompt_len=(256, 4096),
    gen_len=(16, 256),
)


def _committed(parts: Path) -> int:
    """Chunks the interrupted run committed (0 before its first commit or while the record is replaced)."""
    try:
        return int(json.loads((parts / "progress.json").read_text())["chunks"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


def _sweep(out: Path, output: int, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    code = "import sys; from capsim.cli import main; sys.argv = ['capsim'] + sys.argv[1:]; main()"
    return subprocess.Popen(
        [sys.executable, "-c", code, "sweep", *ARGS, *extra, "--out", str(out), "--json"],
        env=env,
        stdout=output,
        stderr=output,
    )


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_killed_sweep_resumes_exactly_once(tmp_path: Path, default_hardware_db, fmt: str) -> None:  # type: ignore[no-untyped-def]
    if fmt != "jsonl":
        pytest.importorskip("pyarrow")
    reference = SweepRun(GRID, tmp_path / f"reference.{fmt}", fmt, 16, Filters())  # same arguments
    run_local(reference, default_hardware_db, reference.prepare())
    reference.finish()

    out = tmp_path / f"killed.{fmt}"
    parts = out.with_name(out.name + ".parts")
    total_chunks = -(-GRID.size // 16)  # 1,600 rows in chunks of 16 = 100 chunks
    proc = _sweep(out, subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while _committed(parts) < 10:
        assert proc.poll() is None, "the sweep finished before it could be interrupted"
        assert time.monotonic() < deadline, "no chunk was committed"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _committed(parts)
    assert 10 <= done < total_chunks
    assert not out.exists()
    # a torn write past the last commit (a crash mid-append) must not reach the output
    with (parts / "output.partial").open("ab") as fh:
        fh.write(b"torn tail of an uncommitted chunk")

    proc = _sweep(out, subprocess.PIPE)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr.decode()
    summary = json.loads(stdout)
    assert summary["resumed_chunks"] == done
    assert summary["rows_written_this_run"] == GRID.size - 16 * done
    assert out.read_bytes() == (tmp_path / f"reference.{fmt}").read_bytes()
    assert not parts.exists()
    if fmt == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(out)
        assert table.num_rows == GRID.size  # every row once: 1,600
        assert pq.ParquetFile(out).metadata.num_row_groups == total_chunks
