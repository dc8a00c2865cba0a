"""Fit the late-2025 vLLM profile (capsim/engine/engines.toml ``[vllm]``, releases 0.10-0.11) to the published
cases that ran those releases.

Two values: ``kernel_latency_s`` (the device time per kernel that sets a small-batch decode step under CUDA
graphs) and ``compute_fraction`` (the share of dense peak FLOP/s that the engine's compute-bound kernels sustain:
the prefill GEMMs, grouped MoE GEMMs and attention of long prompts). The points are every published case with
``engine = "vllm"`` and an ``engine_version`` in 0.10-0.11 (GPUStack's performance lab: gpt-oss-120b on H100 at
TP1/TP2, Qwen3-235B-A22B on H100 at TP8 bf16 / TP4 fp8, DeepSeek-R1-0528 on H200 at TP8): two decode runs at 4
requests in flight (kernel latency binds), five 32K-prompt runs (compute binds) and two runs of 500 prompts
(both). The fit minimises Σ ln(predicted/measured)² over a grid; the leave-one-out check refits without each
case and predicts it; the split check fits on the gpt-oss-120b runs of vLLM 0.10.2 only and predicts the
Qwen3 / DeepSeek-R1 runs of vLLM 0.11.0 (other models, other GPUs, other release).

Usage: python benchmarks/fit_vllm_release.py
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from capsim.engine import engines
from capsim.engine.engines import parse_release
from capsim.validation.published import PublishedCase, load_published

sys.path.insert(0, str(Path(__file__).resolve().parent))  # profile_fit, when loaded by path

import profile_fit
from profile_fit import best

PROFILE = "vllm"
KERNEL_LATENCY_GRID = np.arange(4.0, 16.01, 0.25) * 1e-6
COMPUTE_FRACTION_GRID = np.round(np.arange(0.18, 0.4001, 0.01), 2)


def fit_cases() -> list[PublishedCase]:
    """The published cases that ran a release the [vllm] profile covers."""
    profile = engines.load_engines()[PROFILE]
    return [
        c
        for c in load_published()
        if c.engine == "vllm" and c.engine_version and profile.covers(parse_release(c.engine_version))
    ]


def predictions(cases: list[PublishedCase]) -> np.ndarray:
    """ln(predicted/measured) for every (kernel latency, compute fraction) of the grids x case."""
    return profile_fit.log_ratios(
        PROFILE, ("kernel_latency_s", "compute_fraction"), (KERNEL_LATENCY_GRID, COMPUTE_FRACTION_GRID), cases
    )


def main() -> None:
    cases = fit_cases()
    lr = predictions(cases)
    i, j = best(lr)
    kl, cf = KERNEL_LATENCY_GRID[i], COMPUTE_FRACTION_GRID[j]
    print(f"fit over {len(cases)} cases: kernel_latency_s = {kl * 1e6:.2f} us, compute_fraction = {cf:.2f}")
    print(f"{'case':58s} {'speed ratio fit':>15s} {'leave-one-out':>15s}  (kl us, cf)")
    loo = []
    for k, case in enumerate(cases):
        rest = np.delete(lr, k, axis=-1)
        a, b = best(rest)
        # speed ratio = predicted speed / measured speed
        sign = -1.0 if case.is_time else 1.0
        fit_speed = math.exp(sign * lr[i, j, k])
        loo_speed = math.exp(sign * lr[a, b, k])
        loo.append(abs(math.exp(lr[a, b, k]) - 1))
        print(
            f"{case.id:58s} {fit_speed:15.2f} {loo_speed:15.2f}  "
            f"({KERNEL_LATENCY_GRID[a] * 1e6:.1f}, {COMPUTE_FRACTION_GRID[b]:.2f})"
        )
    fit_err = np.abs(np.exp(lr[i, j]) - 1)
    print(f"median |error|: fitted {np.median(fit_err):.1%}, leave-one-out {np.median(loo):.1%}")
    train = np.array([c.engine_version == "0.10.2" for c in cases])
    a, b = best(lr[..., train])
    print(
        f"split: fitted on the {train.sum()} vLLM 0.10.2 cases -> kernel_latency_s "
        f"{KERNEL_LATENCY_GRID[a] * 1e6:.2f} us, compute_fraction {COMPUTE_FRACTION_GRID[b]:.2f}; predicted:"
    )
    held = []
    for k, case in enumerate(cases):
        if not train[k]:
            held.append(abs(math.exp(lr[a, b, k]) - 1))
            sign = -1.0 if case.is_time else 1.0
            print(f"  {case.id:56s} speed ratio {math.exp(sign * lr[a, b, k]):.2f}")
    print(f"  median |error| on the {len(held)} held-out 0.11.0 cases: {np.median(held):.1%}")


if __name__ == "__main__":
    main()
