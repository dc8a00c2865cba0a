"""capsim speed suite (issue 16), on one core: sweep evaluation and end-to-end output rates for three grids,
scalar ``predict`` time per execution mode, and the ratio to the peers' per-configuration figures.

Grids:
- GPU-resident: 2 models x 5 devices x 4 GPU counts x 250 batches x 10 prompt x 10 generated lengths = 10^6
  (benchmarks/sweep_throughput.py's grid);
- mixed-mode: GPU-resident, offload, CPU-expert and EP groups in one grid, where the sweep has those axes;
- EP/offload: only expert-parallel and offload groups, likewise.
A grid whose axes the sweep does not have yet is reported as such (not timed through ``predict``).

Peers (per configuration, one core, measured side by side in issue 16): LLM-Viewer 0.14 ms, llm-analysis
0.55 ms, GenZ 260 ms. "x peer" = peer's time per configuration / capsim's.

Run: PYTHONPATH=. python benchmarks/suite.py [--quick] [--skip-e2e]
Threads are pinned to one (env vars before numpy loads) and the process to one CPU (sched_setaffinity).
CPU time (process_time) is printed next to wall time: on a shared machine it is the figure to quote.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "ARROW_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sweep_throughput import benchmark_grid  # noqa: E402

from capsim.engine import predict  # noqa: E402
from capsim.errors import CapsimError  # noqa: E402
from capsim.hardware import load_hardware_db  # noqa: E402
from capsim.scenario import Scenario  # noqa: E402
from capsim.sweep.grid import Grid  # noqa: E402
from capsim.sweep.run import Filters, SweepRun, evaluate_chunk, resolve_groups, run_local  # noqa: E402

PEERS_MS = {"LLM-Viewer": 0.14, "llm-analysis": 0.55, "GenZ": 260.0}
"""Per-configuration times of the peers on one core, as quoted in issue 16."""

SCALAR_CASES: dict[str, dict[str, Any]] = {
    "gpu (Mixtral, 2x H100)": dict(model="mixtral-8x7b", hardware="h100-sxm", gpus=2, batch=32),
    "gpu (DeepSeek-V3, 8x H200)": dict(model="deepseek-v3", hardware="dgx-h200", gpus=8, batch=64, weight_dtype="fp8"),
    "offload (Mixtral, 1x H100, LRU)": dict(model="mixtral-8x7b", hardware="h100-sxm", gpus=1, batch=8, mode="offload"),
    "offload (DeepSeek-V3, 8x H100, LRU)": dict(model="deepseek-v3", hardware="h100-sxm", gpus=8, batch=64,
                                                mode="offload"),
    "cpu-experts (Mixtral, EPYC+4090)": dict(model="mixtral-8x7b", hardware="epyc-9654-4090", gpus=1, batch=4,
                                             mode="cpu-experts", weight_dtype="int4"),
    # the database has no DRAM capacity for this system: 768 GB is a benchmark input, not a sourced figure
    "cpu (Mixtral int4, 2x EPYC 9654)": dict(model="mixtral-8x7b", hardware="epyc-9654-2s", batch=4, mode="cpu",
                                             weight_dtype="int4", host_memory_gb=768.0),
    "ep (DeepSeek-V3, 8x H200, EP8 x attention-DP8)": dict(model="deepseek-v3", hardware="h200-sxm", gpus=8,
                                                            attention_dp=8, ep=8, batch=256, weight_dtype="fp8"),
    "ep (DeepSeek-R1, 8x H200, TP8 EP4)": dict(model="deepseek-r1", hardware="h200-sxm", gpus=8, tp=8, ep=4,
                                                weight_dtype="fp8", batch=2),
}


def pin_one_core() -> str:
    try:
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    except (AttributeError, OSError):
        return "not pinned (no sched_setaffinity)"


def mixed_grid() -> Grid | None:
    """GPU-resident, offload, CPU-expert and EP groups together, if the sweep has mode and EP axes."""
    fields = {f.name for f in dataclasses.fields(Grid)}
    if not {"mode", "ep"} <= fields:
        return None
    return Grid(models=("mixtral-8x7b", "qwen3-30b-a3b"), hardware=("h100-sxm", "epyc-9654-4090"),  # type: ignore[call-arg]
                gpus=(1, 2), batch=tuple(range(1, 101)), prompt_len=(128, 512, 2048, 8192),
                gen_len=(16, 128, 512, 2048), mode=("gpu", "offload", "cpu-experts"), ep=(1, 2))


def ep_offload_grid() -> Grid | None:
    fields = {f.name for f in dataclasses.fields(Grid)}
    if not {"mode", "ep"} <= fields:
        return None
    return Grid(models=("deepseek-v3", "qwen3-235b-a22b"), hardware=("h100-sxm", "h200-sxm"),  # type: ignore[call-arg]
                gpus=(8,), batch=tuple(range(1, 257)), prompt_len=(512, 4096), gen_len=(128, 1024),
                mode=("gpu", "offload"), ep=(1, 8))


def timed(fn: Any) -> tuple[float, float]:
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - start_cpu


def evaluation_rate(grid: Grid, db: Any, chunk: int) -> tuple[float, float, int]:
    groups = resolve_groups(grid, db)
    evaluate_chunk(grid, groups, 0, min(10, grid.size))  # one-off: lambdify the formulas
    feasible = 0

    def run() -> None:
        nonlocal feasible
        for begin in range(0, grid.size, chunk):
            feasible += int(evaluate_chunk(grid, groups, begin, min(grid.size, begin + chunk))["feasible"].sum())

    wall, cpu = timed(run)
    return grid.size / wall, grid.size / cpu, feasible


def end_to_end_rate(grid: Grid, db: Any, fmt: str, chunk: int, folder: Path) -> tuple[float, float, float]:
    out = folder / f"grid.{fmt}"

    def run() -> None:
        sweep = SweepRun(grid, out, fmt, chunk, Filters())
        run_local(sweep, db, sweep.prepare())
        sweep.finish()

    wall, cpu = timed(run)
    size_mb = out.stat().st_size / 1e6
    out.unlink()
    return grid.size / wall, grid.size / cpu, size_mb


def scalar_times(db: Any, repeats: int) -> dict[str, float | str]:
    out: dict[str, float | str] = {}
    for name, kwargs in SCALAR_CASES.items():
        try:
            scenario = Scenario(**kwargs)
            predict(scenario, hardware_db=db)  # warm: formulas lambdified, caches filled as a server would
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                predict(scenario, hardware_db=db)
                times.append(time.perf_counter() - start)
            out[name] = statistics.median(times)
        except (CapsimError, TypeError) as exc:
            out[name] = f"not run: {exc}"
    return out


def peer_ratios(per_config_s: float) -> str:
    return ", ".join(f"{PEERS_MS[p] * 1e-3 / per_config_s:,.3g}x {p}" for p in PEERS_MS)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunk", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=5, help="scalar predict repeats per mode (median)")
    parser.add_argument("--skip-e2e", action="store_true", help="evaluation rates only (no output written)")
    parser.add_argument("--quick", action="store_true", help="a 10x smaller GPU-resident grid")
    args = parser.parse_args()
    print(f"one core: {pin_one_core()}; numpy {np.__version__}")
    db = load_hardware_db()
    grids: dict[str, Grid | None] = {"GPU-resident": benchmark_grid(), "mixed-mode": mixed_grid(),
                                     "EP/offload": ep_offload_grid()}
    if args.quick:
        g = grids["GPU-resident"]
        assert g is not None
        grids["GPU-resident"] = dataclasses.replace(g, batch=g.batch[:25])
    with tempfile.TemporaryDirectory() as tmp:
        for name, grid in grids.items():
            if grid is None:
                print(f"{name}: not sweepable yet (the sweep grid has no mode/EP axis)")
                continue
            try:
                wall_rate, cpu_rate, feasible = evaluation_rate(grid, db, args.chunk)
            except CapsimError as exc:
                print(f"{name}: {exc}")
                continue
            print(f"{name}: {grid.size:,} configurations ({feasible:,} fit)")
            print(f"  evaluation : {wall_rate:>12,.0f} configs/s wall {cpu_rate:>12,.0f} configs/s CPU   "
                  f"({peer_ratios(1 / cpu_rate)})")
            if args.skip_e2e:
                continue
            for fmt in ("parquet", "csv"):
                wall_rate, cpu_rate, size_mb = end_to_end_rate(grid, db, fmt, args.chunk, Path(tmp))
                print(f"  end to end {fmt:<8}: {wall_rate:>9,.0f} rows/s wall {cpu_rate:>12,.0f} rows/s CPU   "
                      f"({size_mb:,.0f} MB; {peer_ratios(1 / cpu_rate)})")
    print("scalar predict, median of", args.repeats, "(warm):")
    for name, value in scalar_times(db, args.repeats).items():
        if isinstance(value, str):
            print(f"  {name:<48} {value}")
        else:
            print(f"  {name:<48} {value * 1e3:8.2f} ms   ({peer_ratios(value)})")


if __name__ == "__main__":
    main()
