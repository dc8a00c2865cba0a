"""Configurations per second: a 1,000,000-point grid through the vectorised sweep path on one core, and the
same grid's time through the scalar ``predict`` path (extrapolated from a random sample of it).

Both paths give the same TTFT, TPOT and decode metrics (exact sums over every decode step; see
docs/sweep.md), so the comparison is like for like. GPU-resident scenarios, analytic uniform routing.

Run: PYTHONPATH=. python benchmarks/sweep_throughput.py [--chunk 50000] [--scalar-sample 200]
(OMP_NUM_THREADS etc. are pinned to 1 below, before numpy loads: one core.)
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import resource
import time

import numpy as np

from capsim.engine.predict import predict
from capsim.engine.scenario import Scenario
from capsim.errors import DoesNotFitError, ScenarioError
from capsim.hardware.db import load_hardware_db
from capsim.sweep.grid import Grid
from capsim.sweep.run import evaluate_chunk, resolve_groups


def benchmark_grid(single_gen: bool = False) -> Grid:
    """2 models x 5 devices x 4 GPU counts x 250 batches x 10 prompt lengths x 10 gen lengths = 1,000,000;
    ``single_gen``: 100 prompt lengths x one gen length instead (no two rows share a prefill shape)."""
    prompts, gens = (100, 1) if single_gen else (10, 10)
    return Grid(
        models=("mixtral-8x7b", "qwen3-30b-a3b"),
        hardware=("h100-sxm", "h200-sxm", "a100-sxm-80gb", "mi300x", "b200"),
        gpus=(1, 2, 4, 8),
        batch=tuple(range(1, 251)),
        prompt_len=tuple(int(x) for x in np.geomspace(128, 32768, prompts).round()),
        gen_len=tuple(int(x) for x in np.geomspace(16, 4096, gens).round()) if gens > 1 else (256,),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunk", type=int, default=50_000, help="rows per chunk (bounds memory)")
    parser.add_argument(
        "--scalar-sample", type=int, default=200, help="random grid points timed through predict"
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="time the vectorised pass this many times (best)"
    )
    parser.add_argument("--single-gen", action="store_true", help="100 prompt lengths x 1 gen length instead")
    args = parser.parse_args()

    grid = benchmark_grid(args.single_gen)
    db = load_hardware_db()
    groups = resolve_groups(grid, db)
    evaluate_chunk(grid, groups, 0, 10)  # one-off: lambdify the formulas (~0.1 s per process)
    best, best_cpu = float("inf"), float("inf")
    feasible = 0
    for _ in range(args.repeats):
        feasible = 0
        start, start_cpu = time.perf_counter(), time.process_time()
        for begin in range(0, grid.size, args.chunk):
            cols = evaluate_chunk(grid, groups, begin, min(grid.size, begin + args.chunk))
            feasible += int(cols["feasible"].sum())
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - start_cpu)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    rng = np.random.default_rng(0)
    rows = rng.choice(grid.size, size=args.scalar_sample, replace=False)
    start = time.perf_counter()
    for row in rows:
        g, offset = divmod(int(row), grid.numeric_size)
        model, hw, gpus = grid.group_keys[g][:3]
        b, p, n = (int(a[0]) for a in grid.numeric_points(offset, offset + 1))
        try:
            predict(
                Scenario(model=model, hardware=hw, gpus=gpus, batch=b, prompt_len=p, gen_len=n),
                hardware_db=db,
            )
        except (DoesNotFitError, ScenarioError):  # rows the sweep marks as not running
            pass
    scalar_per_config = (time.perf_counter() - start) / args.scalar_sample

    print(f"grid: {grid.size:,} configurations ({feasible:,} fit in memory), chunk={args.chunk:,} rows")
    print(f"vectorised: {best:.2f} s wall  ->  {grid.size / best:,.0f} configurations/s (one core)")
    print(
        f"            {best_cpu:.2f} s CPU   ->  {grid.size / best_cpu:,.0f} configurations/s of CPU time "
        "(the figure to quote on a shared machine)"
    )
    print(f"peak RSS: {peak_rss_mb:,.0f} MB")
    print(
        f"scalar predict: {scalar_per_config * 1e3:.2f} ms/configuration -> {grid.size * scalar_per_config / 60:,.1f} "
        f"min for the grid (extrapolated from {args.scalar_sample} random points)"
    )


if __name__ == "__main__":
    main()
