"""A sweep killed mid-way (SIGKILL, no chance to clean up) resumes where it stopped: the final output equals an
uninterrupted run byte for byte, so no row is lost or written twice."""

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
ARGS = ["--model", "qwen3-30b-a3b,mixtral-8x7b", "--hardware", "h100-sxm,a100-sxm-80gb", "--gpus", "1,2",
        "--batch", "1:50:+1", "--prompt-len", "256,4096", "--gen-len", "16,256", "--chunk-rows", "16"]
GRID = Grid(models=("qwen3-30b-a3b", "mixtral-8x7b"), hardware=("h100-sxm", "a100-sxm-80gb"), gpus=(1, 2),
            batch=tuple(range(1, 51)), prompt_len=(256, 4096), gen_len=(16, 256))


def _sweep(out: Path, output: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    code = "import sys; from capsim.cli import main; sys.argv = ['capsim'] + sys.argv[1:]; main()"
    return subprocess.Popen([sys.executable, "-c", code, "sweep", *ARGS, "--out", str(out), "--json"], env=env,
                            stdout=output, stderr=output)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_killed_sweep_resumes_exactly_once(tmp_path: Path, default_hardware_db) -> None:  # type: ignore[no-untyped-def]
    reference = SweepRun(GRID, tmp_path / "reference.jsonl", "jsonl", 16, Filters())  # same arguments
    run_local(reference, default_hardware_db, reference.prepare())
    reference.finish()

    out = tmp_path / "killed.jsonl"
    parts = out.with_name(out.name + ".parts")
    total_chunks = -(-GRID.size // 16)  # 1,600 rows in chunks of 16 = 100 parts
    proc = _sweep(out, subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list(parts.glob("part-*.jsonl"))) < 10:
        assert proc.poll() is None, "the sweep finished before it could be interrupted"
        assert time.monotonic() < deadline, "no parts appeared"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(parts.glob("part-*.jsonl")))
    assert 10 <= done < total_chunks
    assert not out.exists()

    proc = _sweep(out, subprocess.PIPE)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr.decode()
    summary = json.loads(stdout)
    assert summary["resumed_chunks"] == done
    assert summary["rows_written_this_run"] == GRID.size - 16 * done
    assert out.read_bytes() == (tmp_path / "reference.jsonl").read_bytes()
    assert not parts.exists()
