"""Fit the TensorRT-LLM 0.17 profile (capsim/engine/engines.toml ``["tensorrt-llm-0.17"]``) to the published
cases that ran that release.

Two values: ``compute_fraction``, the share of dense peak FLOP/s that TensorRT-LLM 0.17's compute-bound kernels
(FP8 GEMMs, MoE GEMMs and attention of TensorRT engines) sustain, and ``per_sequence_s``, the time a step adds per
sequence that emits a token in it (sampling, stop checks, per-request bookkeeping of the runtime). The points are
every published case with ``engine = "tensorrt-llm"`` and ``engine_version`` 0.17: the Mixtral rows of NVIDIA's
perf-overview table for that release (docs/validation.md §5.9), twelve added and scored before the first fit and
six more added after it. The kernel latency is not fitted: none of the rows is a small-batch decode, where it
binds. The fit minimises the sum of ln(predicted/measured)^2 over a grid; the leave-one-out check refits without
each case and predicts it; the split check fits on the twelve first rows only and predicts the six added later.

Usage: python benchmarks/fit_trtllm_release.py
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

PROFILE = "tensorrt-llm-0.17"
COMPUTE_FRACTION_GRID = np.round(np.arange(0.40, 0.8001, 0.01), 2)
PER_SEQUENCE_GRID = np.arange(0.0, 16.01, 0.5) * 1e-6
HELD_OUT_NOTE = "added after the tensorrt-llm-0.17 profile was fitted"
"""The case note that marks the six rows added after the first fit (the split check predicts them)."""


def fit_cases() -> list[PublishedCase]:
    """The published cases that ran a release the profile covers."""
    profile = engines.load_engines()[PROFILE]
    return [
        c
        for c in load_published()
        if c.engine == profile.family and c.engine_version and profile.covers(parse_release(c.engine_version))
    ]


def predictions(cases: list[PublishedCase]) -> np.ndarray:
    """ln(predicted/measured) for every (compute fraction, per-sequence time) of the grids x case."""
    return profile_fit.log_ratios(
        PROFILE, ("compute_fraction", "per_sequence_s"), (COMPUTE_FRACTION_GRID, PER_SEQUENCE_GRID), cases
    )


def speed(case: PublishedCase, log_ratio: float) -> float:
    """Speed ratio (predicted / measured speed) from ln(predicted / measured) of the published metric."""
    return math.exp(-log_ratio if case.is_time else log_ratio)


def _label(i: int, j: int) -> str:
    return f"({COMPUTE_FRACTION_GRID[i]:.2f}, {PER_SEQUENCE_GRID[j] * 1e6:.1f})"


def main() -> None:
    cases = fit_cases()
    lr = predictions(cases)
    i, j = best(lr)
    print(
        f"fit over {len(cases)} cases: compute_fraction = {COMPUTE_FRACTION_GRID[i]:.2f}, "
        f"per_sequence_s = {PER_SEQUENCE_GRID[j] * 1e6:.1f} us"
    )
    # 'class': the device class's 0.70 and no per-sequence time, which the cases took before the profile existed
    c0 = (int(np.argmin(np.abs(COMPUTE_FRACTION_GRID - 0.70))), 0)
    # 'cf only': the best compute fraction with no per-sequence time (the profile as first fitted, on all rows)
    c1 = (int(np.argmin((lr[:, 0, :] ** 2).sum(axis=-1))), 0)
    print(f"{'case':52s} {'class':>6s} {'cf only':>8s} {'fit':>6s} {'left out':>9s}  (cf, us)")
    loo = []
    for k, case in enumerate(cases):
        a, b = best(np.delete(lr, k, axis=-1))
        loo.append(abs(math.exp(lr[a, b, k]) - 1))
        print(
            f"{case.id:52s} {speed(case, lr[c0][k]):6.2f} {speed(case, lr[c1][k]):8.2f} "
            f"{speed(case, lr[i, j, k]):6.2f} {speed(case, lr[a, b, k]):9.2f}  {_label(a, b)}"
        )
    for name, (a, b) in (("class 0.70", c0), (f"cf only {_label(*c1)}", c1), (f"fit {_label(i, j)}", (i, j))):
        err = np.abs(np.exp(lr[a, b]) - 1)
        geo = math.exp(float(np.mean([math.log(speed(c, lr[a, b, k])) for k, c in enumerate(cases)])))
        print(f"{name}: median |error| {np.median(err):.1%}, geo-mean speed ratio {geo:.2f}")
    print(f"leave-one-out: median |error| {np.median(loo):.1%}")
    late = np.array([any(HELD_OUT_NOTE in n for n in c.notes) for c in cases])
    a, b = best(lr[..., ~late])
    print(f"split: fitted on the {int((~late).sum())} first rows -> {_label(a, b)}; predicted:")
    held = []
    for k, case in enumerate(cases):
        if late[k]:
            held.append(abs(math.exp(lr[a, b, k]) - 1))
            print(f"  {case.id:50s} speed ratio {speed(case, lr[a, b, k]):.2f}")
    print(f"  median |error| on the {len(held)} rows added after the first fit: {np.median(held):.1%}")


if __name__ == "__main__":
    main()
