"""Configurations per second of a sweep over parallel layouts (attention DP, EP, EPLB, DP replicas, MTP), against
the scalar ``predict`` path on a random sample of the same grid, and the scalar predict time of EP scenarios.

Grid: DeepSeek-V3 fp8 on one 8 x H200 node, 8 layouts x 128 batches x 8 prompt lengths x 8 generated lengths =
65,536 rows, Zipf(1.2)-skewed routing (so the straggler factors differ per layer and per step shape). Both paths
give the same numbers row for row (tests/test_issue_12_layouts.py), so the comparison is like for like.

Run: PYTHONPATH=. python benchmarks/sweep_layouts_throughput.py [--scalar-sample 40]
(OMP_NUM_THREADS etc. are pinned to 1 below, before numpy loads: one core.)
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import contextlib
import time

import numpy as np

from capsim.engine.predict import predict
from capsim.engine.scenario import Scenario
from capsim.errors import DoesNotFitError
from capsim.hardware.db import load_hardware_db
from capsim.sweep.grid import Grid, parse_layout
from capsim.sweep.run import evaluate_chunk, resolve_groups

LAYOUTS = (
    "tp=8",
    "tp=8,ep=8",
    "tp=8,ep=4",
    "tp=1,attention_dp=8,ep=8",
    "tp=2,attention_dp=4,ep=8",
    "tp=1,attention_dp=8,ep=8,redundant_experts=8",
    "tp=1,attention_dp=8,ep=8,spec=mtp:1",
    "tp=8,ep=4,spec=mtp:3",
)


def benchmark_grid() -> Grid:
    return Grid(
        models=("deepseek-v3",),
        hardware=("dgx-h200",),
        gpus=(8,),
        weight_dtype=("fp8",),
        routing="zipf:1.2",
        batch=tuple(int(x) for x in np.unique(np.geomspace(1, 2048, 128).round())),
        prompt_len=tuple(int(x) for x in np.geomspace(128, 16384, 8).round()),
        gen_len=tuple(int(x) for x in np.geomspace(16, 2048, 8).round()),
        layout=LAYOUTS,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--scalar-sample", type=int, default=40, help="random grid points timed through predict"
    )
    args = parser.parse_args()
    grid = benchmark_grid()
    db = load_hardware_db()
    t0 = time.perf_counter()
    groups = resolve_groups(grid, db)
    resolve_s = time.perf_counter() - t0
    evaluate_chunk(grid, groups, 0, 10)  # one-off: lambdify the formulas
    t0 = time.perf_counter()
    cols = evaluate_chunk(grid, groups, 0, grid.size)
    vector_s = time.perf_counter() - t0
    feasible = int(cols["feasible"].sum())

    rng = np.random.default_rng(0)
    sample = rng.choice(grid.size, size=args.scalar_sample, replace=False)
    times = []
    for row in sample:
        scenario = Scenario(
            model="deepseek-v3",
            hardware="dgx-h200",
            gpus=8,
            weight_dtype="fp8",
            routing="zipf:1.2",
            batch=int(cols["batch"][row]),
            prompt_len=int(cols["prompt_len"][row]),
            gen_len=int(cols["gen_len"][row]),
            **parse_layout(str(cols["layout"][row])),
        )
        t0 = time.perf_counter()
        with contextlib.suppress(DoesNotFitError):
            predict(scenario, hardware_db=db)
        times.append(time.perf_counter() - t0)
    scalar = float(np.mean(times))

    ep = Scenario(
        model="deepseek-v3",
        hardware="dgx-h200",
        gpus=8,
        weight_dtype="fp8",
        batch=256,
        prompt_len=2000,
        gen_len=512,
        tp=1,
        attention_dp=8,
        ep=8,
        routing="zipf:1.2",
    )
    predict(ep, hardware_db=db)
    ep_times = []
    for _ in range(10):
        t0 = time.perf_counter()
        predict(ep, hardware_db=db)
        ep_times.append(time.perf_counter() - t0)

    print(
        f"grid: {grid.size:,} rows ({len(LAYOUTS)} layouts), {feasible:,} feasible; groups resolved in {resolve_s:.2f} s"
    )
    print(f"vectorised: {vector_s:.2f} s = {grid.size / vector_s:,.0f} rows/s")
    print(
        f"scalar predict: {1e3 * scalar:.1f} ms per row (mean of {len(times)}) = {1 / scalar:,.0f} rows/s; "
        f"whole grid ~{grid.size * scalar:,.0f} s; speed-up {grid.size * scalar / vector_s:,.0f}x"
    )
    print(
        f"scalar predict, DeepSeek-V3 attention-DP 8 x EP 8, Zipf routing, 511 decode steps: "
        f"median {1e3 * float(np.median(ep_times)):.1f} ms (first call included the straggler model's cache fill)"
    )


if __name__ == "__main__":
    main()
