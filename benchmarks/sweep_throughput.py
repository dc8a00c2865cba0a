"""Configurations per second: a 1,000,000-point grid through the vectorised sweep path on one core, and the
same grid's time through the scalar ``predict`` path (extrapolated from a random sample of it).

Run: OMP_NUM_THREADS=1 python benchmarks/sweep_throughput.py [--samples 16] [--chunk 50000]
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

from capsim.engine import predict  # noqa: E402
from capsim.errors import DoesNotFitError  # noqa: E402
from capsim.hardware import load_hardware_db  # noqa: E402
from capsim.scenario import Scenario  # noqa: E402
from capsim.sweep.grid import Grid  # noqa: E402
from capsim.sweep.run import evaluate_chunk, resolve_groups  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=16, help="decode steps evaluated per configuration")
    parser.add_argument("--chunk", type=int, default=50_000)
    parser.add_argument("--scalar-sample", type=int, default=200)
    args = parser.parse_args()

    # 2 models x 5 devices x 4 GPU counts x 250 batches x 10 prompt lengths x 10 gen lengths = 1,000,000
    grid = Grid(
        models=("mixtral-8x7b", "qwen3-30b-a3b"),
        hardware=("h100-sxm", "h200-sxm", "a100-sxm-80gb", "mi300x", "b200"),
        gpus=(1, 2, 4, 8),
        batch=tuple(range(1, 251)),
        prompt_len=tuple(int(x) for x in np.geomspace(128, 32768, 10).round()),
        gen_len=tuple(int(x) for x in np.geomspace(16, 4096, 10).round()),
        decode_samples=args.samples,
    )
    db = load_hardware_db()
    groups = resolve_groups(grid, db)
    start = time.perf_counter()
    for begin in range(0, grid.size, args.chunk):
        evaluate_chunk(grid, groups, begin, min(grid.size, begin + args.chunk))
    vector_s = time.perf_counter() - start
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    rng = np.random.default_rng(0)
    rows = rng.choice(grid.size, size=args.scalar_sample, replace=False)
    start = time.perf_counter()
    for row in rows:
        g, offset = divmod(int(row), grid.numeric_size)
        model, hw, gpus, _, _ = grid.group_keys[g]
        b, p, n = (int(a[0]) for a in grid.numeric_points(offset, offset + 1))
        try:
            predict(Scenario(model=model, hardware=hw, gpus=gpus, batch=b, prompt_len=p, gen_len=n), hardware_db=db)
        except DoesNotFitError:
            pass
    scalar_per_config = (time.perf_counter() - start) / args.scalar_sample

    print(f"grid: {grid.size:,} configurations, decode_samples={args.samples}, chunk={args.chunk:,}")
    print(f"vectorised: {vector_s:.1f} s  ->  {grid.size / vector_s:,.0f} configurations/s (one core)")
    print(f"peak RSS: {peak_rss_mb:,.0f} MB")
    print(f"scalar predict: {scalar_per_config * 1e3:.2f} ms/configuration -> {grid.size * scalar_per_config / 60:,.1f} "
          f"min for the grid (extrapolated from {args.scalar_sample} random points)")


if __name__ == "__main__":
    main()
