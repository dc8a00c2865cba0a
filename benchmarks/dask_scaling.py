"""Dask backend against the local single process, end to end (evaluate, filter, encode, write, commit).

For each worker count: a local Dask cluster (one thread per worker process) sweeps the grid to Parquet (or
CSV); the same grid is swept by ``run_local`` in this process. Printed: wall time with and without the
cluster's start-up, the CPU time of this process and of the worker processes (psutil, sampled), and whether the output
is byte-identical to the local one (sha256). The grid is benchmarks/sweep_throughput.py's 10^6 rows times
``--scale`` batches, so start-up (process spawn, imports, database, formulas: a few seconds) is amortised.

Run: PYTHONPATH=. python benchmarks/dask_scaling.py [--workers 2,4,8] [--scale 4] [--format parquet]
Needs dask[distributed]. Measure on an otherwise idle machine: on a shared one, other jobs hold the cores the
workers would use (say so with the figures; the load average is printed).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "ARROW_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import dataclasses
import hashlib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sweep_throughput import benchmark_grid

from capsim.hardware.db import load_hardware_db
from capsim.sweep.grid import Grid
from capsim.sweep.run import Filters, SweepRun, run_dask, run_local


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class DescendantsCPU:
    """CPU seconds of this process's descendants (the Dask nannies and workers, also those a fork server
    starts, which are not this process's children): sampled every 0.1 s while running, the last reading of
    each process summed (up to 0.1 s of a process's last work can be missed)."""

    def __init__(self) -> None:
        import threading

        self.seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        while True:
            for child in me.children(recursive=True):
                try:
                    t = child.cpu_times()
                    self.seen[child.pid] = t.user + t.system
                except psutil.Error:
                    pass
            if self._stop.wait(0.1):
                return

    def __enter__(self) -> DescendantsCPU:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def total(self) -> float:
        return sum(self.seen.values())


def run_once(grid: Grid, out: Path, fmt: str, chunk: int, workers: int) -> tuple[float, float, float, float]:
    """(wall s, wall s after the cluster is up, this process's CPU s, workers' CPU s); workers = 0: local."""
    db = load_hardware_db()
    start, start_cpu = time.perf_counter(), time.process_time()
    sweep = SweepRun(grid, out, fmt, chunk, Filters())
    todo = sweep.prepare()
    first_chunk: list[float] = []
    if workers == 0:
        run_local(sweep, db, todo)
        cpu_workers = 0.0
    else:
        with DescendantsCPU() as descendants:
            run_dask(
                sweep,
                todo,
                None,
                (),
                on_chunk=lambda i, n: first_chunk.append(time.perf_counter()) if not first_chunk else None,
                workers=workers,
            )
        cpu_workers = descendants.total
    sweep.finish()
    wall = time.perf_counter() - start
    # start-up: until the first chunk came back (cluster up, workers resolved the groups, one chunk done)
    after_start = wall - (first_chunk[0] - start) if first_chunk else wall
    return wall, after_start, time.process_time() - start_cpu, cpu_workers


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", default="2", help="comma-separated worker counts")
    parser.add_argument("--scale", type=int, default=4, help="grid = 10^6 rows x scale (more batches)")
    parser.add_argument("--format", default="parquet", choices=("parquet", "csv"))
    parser.add_argument("--chunk", type=int, default=50_000)
    parser.add_argument(
        "--quick", action="store_true", help="a 10^5-row grid (a smoke test, not a measurement)"
    )
    args = parser.parse_args()
    base = benchmark_grid()
    batches = 25 if args.quick else 250 * args.scale
    grid = dataclasses.replace(base, batch=tuple(range(1, batches + 1)))
    load = os.getloadavg()
    print(f"{grid.size:,} rows, {args.format}, chunk {args.chunk:,}; cores {os.cpu_count()}, load {load}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        local_out = folder / f"local.{args.format}"
        wall, _, cpu, _ = run_once(grid, local_out, args.format, args.chunk, 0)
        reference = sha256(local_out)
        print(
            f"local, one process : {wall:7.2f} s wall ({grid.size / wall:>10,.0f} rows/s), "
            f"CPU {cpu:6.2f} s; {local_out.stat().st_size / 1e6:,.0f} MB"
        )
        for n in (int(w) for w in args.workers.split(",")):
            out = folder / f"dask{n}.{args.format}"
            wall_n, steady, cpu_n, cpu_w = run_once(grid, out, args.format, args.chunk, n)
            same = sha256(out) == reference
            out.unlink()
            print(
                f"dask, {n:2d} workers   : {wall_n:7.2f} s wall ({grid.size / wall_n:>10,.0f} rows/s; "
                f"{wall / wall_n:4.2f}x local), {steady:6.2f} s after the first chunk; CPU here {cpu_n:6.2f} s, "
                f"workers {cpu_w:6.2f} s; output identical to local: {same}"
            )
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
