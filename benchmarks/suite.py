"""capsim speed suite (issue 16), on one core: sweep evaluation and end-to-end output rates for three grids,
scalar ``predict`` time per execution mode, and the ratio to the peers' per-configuration figures.

Grids:
- GPU-resident: 2 models x 5 devices x 4 GPU counts x 250 batches x 10 prompt x 10 generated lengths = 10^6
  (benchmarks/sweep_throughput.py's grid);
- mixed: GPU-resident, offload (``mode=offload``, LRU cache model), CPU-expert (``mode=cpu-experts``) and EP
  groups; each kind's own rate is printed too: its share of the aggregate pass, and alone in a fresh process
  (``--one-kind``), cold (its first pass) and warm (its second);
- EP layouts: DeepSeek-V3 and Qwen3-235B expert-parallel layouts on 8 GPUs.
End-to-end output rates are timed for the GPU-resident grid.

Peers (per configuration, one core, measured side by side in issue 16): LLM-Viewer 0.14 ms, llm-analysis
0.55 ms, GenZ 260 ms. "x peer" = peer's time per configuration / capsim's.

Run: PYTHONPATH=. python benchmarks/suite.py [--quick] [--skip-e2e]
Threads are pinned to one (env vars before numpy loads) and the process to one CPU (sched_setaffinity).
CPU time (process_time) is printed next to wall time: on a shared machine it is the figure to quote.
Every aggregate rate is COLD: a user's first pass, after resolving the groups and lambdifying the formulas
(one 10-row chunk), with the router's expectations, straggler factors and cache outcomes still to compute.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "ARROW_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sweep_throughput import benchmark_grid

from capsim.engine.predict import predict
from capsim.engine.scenario import Scenario
from capsim.errors import CapsimError
from capsim.hardware.db import load_hardware_db
from capsim.sweep.grid import Grid
from capsim.sweep.run import (
    Filters,
    SweepRun,
    evaluate_chunk,
    long_lived_heap,
    resolve_groups,
    run_local,
)

PEERS_MS = {"LLM-Viewer": 0.14, "llm-analysis": 0.55, "GenZ": 260.0}
"""Per-configuration times of the peers on one core, as quoted in issue 16."""

SCALAR_CASES: dict[str, dict[str, Any]] = {
    "gpu (Mixtral, 2x H100)": dict(model="mixtral-8x7b", hardware="h100-sxm", gpus=2, batch=32),
    "gpu (DeepSeek-V3, 8x H200)": dict(
        model="deepseek-v3", hardware="dgx-h200", gpus=8, batch=64, weight_dtype="fp8"
    ),
    "offload (Mixtral, 1x H100, LRU)": dict(
        model="mixtral-8x7b", hardware="h100-sxm", gpus=1, batch=8, mode="offload"
    ),
    "offload (DeepSeek-V3, 8x H100, LRU)": dict(
        model="deepseek-v3", hardware="h100-sxm", gpus=8, batch=64, mode="offload"
    ),
    "cpu-experts (Mixtral, EPYC+4090)": dict(
        model="mixtral-8x7b",
        hardware="epyc-9654-4090",
        gpus=1,
        batch=4,
        mode="cpu-experts",
        weight_dtype="int4",
    ),
    # the database has no DRAM capacity for this system: 768 GB is a benchmark input, not a sourced figure
    "cpu (Mixtral int4, 2x EPYC 9654)": dict(
        model="mixtral-8x7b",
        hardware="epyc-9654-2s",
        batch=4,
        mode="cpu",
        weight_dtype="int4",
        host_memory_gb=768.0,
    ),
    "ep (DeepSeek-V3, 8x H200, EP8 x attention-DP8)": dict(
        model="deepseek-v3", hardware="h200-sxm", gpus=8, attention_dp=8, ep=8, batch=256, weight_dtype="fp8"
    ),
    "ep (DeepSeek-R1, 8x H200, TP8 EP4)": dict(
        model="deepseek-r1", hardware="h200-sxm", gpus=8, tp=8, ep=4, weight_dtype="fp8", batch=2
    ),
}


def pin_one_core() -> str:
    try:
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    except (AttributeError, OSError):
        return "not pinned (no sched_setaffinity)"


NUMERIC = dict(batch=tuple(range(1, 101)), prompt_len=(128, 512, 2048, 8192), gen_len=(16, 128, 512, 2048))


def mixed_grids() -> list[Grid]:
    """GPU-resident, offload, CPU-expert and EP groups (every group valid: a product grid would add cheap "does
    not run" rows)."""
    return [
        Grid(
            models=("mixtral-8x7b", "qwen3-30b-a3b"), hardware=("h100-sxm", "h200-sxm"), gpus=(2,), **NUMERIC
        ),
        Grid(
            models=("mixtral-8x7b", "qwen3-30b-a3b"),
            hardware=("h100-sxm",),
            gpus=(1,),
            layout=("mode=offload",),
            **NUMERIC,
        ),
        Grid(
            models=("mixtral-8x7b", "qwen3-30b-a3b"),
            hardware=("epyc-9654-4090",),
            gpus=(1,),
            weight_dtype=("int4",),
            layout=("mode=cpu-experts",),
            **NUMERIC,
        ),
        Grid(
            models=("qwen3-30b-a3b", "mixtral-8x7b"),
            hardware=("h100-sxm",),
            gpus=(8,),
            layout=("tp=8,ep=8", "tp=1,attention_dp=8,ep=8"),
            **NUMERIC,
        ),
    ]


def ep_grids() -> list[Grid]:
    """Expert-parallel layouts of DeepSeek-V3 (fp8) on 8 H200 and Qwen3-235B on 8 H100."""
    numeric = dict(batch=tuple(range(1, 257)), prompt_len=(512, 4096), gen_len=(128, 1024))
    return [
        Grid(
            models=("deepseek-v3",),
            hardware=("h200-sxm",),
            gpus=(8,),
            weight_dtype=("fp8",),
            layout=("tp=8,ep=8", "tp=1,attention_dp=8,ep=8", "tp=8,ep=4"),
            **numeric,
        ),
        Grid(
            models=("qwen3-235b-a22b",),
            hardware=("h100-sxm",),
            gpus=(8,),
            layout=("tp=8,ep=8", "tp=1,attention_dp=8,ep=8"),
            **numeric,
        ),
    ]


def timed(fn: Any) -> tuple[float, float]:
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - start_cpu


@dataclasses.dataclass
class Rates:
    """One pass over some grids: configurations/s (wall and CPU time), rows, rows that fit, and the reasons
    groups did not run; ``member_cpu_s``: each grid's CPU seconds inside the pass."""

    wall: float
    cpu: float
    rows: int
    feasible: int
    reasons: list[str]
    member_cpu_s: list[float]


def evaluation_rate(grids: list[Grid], db: Any, chunk: int, passes: int = 1) -> list[Rates]:
    """The rates of ``passes`` successive passes over the grids. The first is COLD, as a user's first sweep:
    only the groups are resolved and the formulas lambdified beforehand (one 10-row chunk of each grid's
    first group); the router's expectations, the straggler factors and the cache outcomes are computed in it.
    Later passes find them memoised (warm)."""
    resolved = [(grid, resolve_groups(grid, db)) for grid in grids]
    for grid, groups in resolved:
        evaluate_chunk(grid, groups, 0, min(10, grid.size))  # one-off: lambdify the formulas
    reasons = sorted({g.error for _, groups in resolved for g in groups if g.error})
    rows = sum(grid.size for grid in grids)
    out = []
    for _ in range(passes):
        rates = Rates(0.0, 0.0, rows, 0, reasons, [])

        def run(rates: Rates = rates) -> None:
            for grid, groups in resolved:
                start_cpu = time.process_time()
                for begin in range(0, grid.size, chunk):
                    cols = evaluate_chunk(grid, groups, begin, min(grid.size, begin + chunk))
                    rates.feasible += int(cols["feasible"].sum())
                rates.member_cpu_s.append(time.process_time() - start_cpu)

        with long_lived_heap():  # as run_local evaluates a sweep
            wall, cpu = timed(run)
        rates.wall, rates.cpu = rows / wall, rows / cpu
        out.append(rates)
    return out


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


GRID_SETS = {"mixed": mixed_grids, "ep": ep_grids}


def kind_name(member: Grid) -> str:
    return ";".join(member.layout) or f"gpu-resident {member.hardware[0]}"


def one_kind(spec: str, chunk: int) -> None:
    """``--one-kind SET:INDEX``: that grid alone in this (fresh) process, a cold then a warm pass, as JSON."""
    name, index = spec.split(":")
    member = GRID_SETS[name]()[int(index)]
    cold, warm = evaluation_rate([member], load_hardware_db(), chunk, passes=2)
    print(json.dumps({"rows": cold.rows, "cold": [cold.wall, cold.cpu], "warm": [warm.wall, warm.cpu]}))


def kind_alone(spec: str, chunk: int) -> dict[str, Any]:
    """One grid's cold and warm rates, measured in a fresh Python process (nothing memoised before it)."""
    done = subprocess.run(
        [sys.executable, __file__, "--one-kind", spec, "--chunk", str(chunk)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunk", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=5, help="scalar predict repeats per mode (median)")
    parser.add_argument("--skip-e2e", action="store_true", help="evaluation rates only (no output written)")
    parser.add_argument("--quick", action="store_true", help="a 10x smaller GPU-resident grid")
    parser.add_argument("--one-kind", help=argparse.SUPPRESS)  # internal: one grid in a fresh process
    args = parser.parse_args()
    if args.one_kind:
        pin_one_core()
        one_kind(args.one_kind, args.chunk)
        return
    print(f"one core: {pin_one_core()}; numpy {np.__version__}")
    db = load_hardware_db()
    gpu_grid = benchmark_grid()
    if args.quick:
        gpu_grid = dataclasses.replace(gpu_grid, batch=gpu_grid.batch[:25])
    grids: dict[str, tuple[str | None, list[Grid]]] = {
        "GPU-resident": (None, [gpu_grid]),
        "mixed (GPU, offload, CPU-expert, EP groups)": ("mixed", mixed_grids()),
        "EP layouts": ("ep", ep_grids()),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, (set_name, members) in grids.items():
            cold = evaluation_rate(members, db, args.chunk)[0]
            print(f"{name}: {cold.rows:,} configurations ({cold.feasible:,} fit)")
            for reason in cold.reasons:
                print(f"  a group did not run: {reason}")
            print(
                f"  evaluation, cold (first pass): {cold.wall:>10,.0f} configs/s wall {cold.cpu:>10,.0f} "
                f"configs/s CPU   ({peer_ratios(1 / cold.cpu)})"
            )
            if set_name is not None:
                print(
                    "    per kind: its CPU time inside that pass | alone in a fresh process: cold (first pass), "
                    "warm (second pass), configs/s CPU"
                )
                for i, member in enumerate(members):
                    alone = kind_alone(f"{set_name}:{i}", args.chunk)
                    print(
                        f"    {kind_name(member):<44} {member.size:>7,} rows "
                        f"{member.size / cold.member_cpu_s[i]:>10,.0f} in the pass | "
                        f"cold {alone['cold'][1]:>10,.0f}  warm {alone['warm'][1]:>10,.0f}"
                    )
            if args.skip_e2e or len(members) > 1:
                continue
            grid = members[0]
            for fmt in ("parquet", "csv"):
                wall_rate, cpu_rate, size_mb = end_to_end_rate(grid, db, fmt, args.chunk, Path(tmp))
                print(
                    f"  end to end {fmt:<8}: {wall_rate:>9,.0f} rows/s wall {cpu_rate:>12,.0f} rows/s CPU   "
                    f"({size_mb:,.0f} MB; {peer_ratios(1 / cpu_rate)})"
                )
    print("scalar predict, median of", args.repeats, "(warm):")
    for name, value in scalar_times(db, args.repeats).items():
        if isinstance(value, str):
            print(f"  {name:<48} {value}")
        else:
            print(f"  {name:<48} {value * 1e3:8.2f} ms   ({peer_ratios(value)})")


if __name__ == "__main__":
    main()
