"""Fit KTransformers' CPU-side profile (capsim/engine/engines.toml ``[ktransformers]``) to its published runs.

Two values: ``cpu_kernel_bw_fraction`` (the share of the CPU's sustained bandwidth its expert kernels reach in
decode; the cpu class's 0.41 is a geometric mean over four engines) and ``replicate_socket_share`` (with
``--numa replicate``, USE_NUMA=1: what the second socket adds, as a share of one socket). KTransformers' own
tutorial publishes the same machine with one and two Xeon 6454S sockets (V0.2 table: decode 8.73 -> 12.21
tok/s, x1.40; prefill 54.21 -> 82.94 tok/s, x1.53), where --numa replicate's perfect scaling would give about
x1.8 and x2. The points are every published case with ``engine = "ktransformers"`` (one- and two-socket
decode and prefill, V0.2.1's two-socket 8K decode, a user's single EPYC 9654): least squares in ln(predicted /
measured) over a grid; leave-one-out refits both values without each case.

Usage: PYTHONPATH=. python benchmarks/fit_ktransformers_cpu.py
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from capsim.validation.published import PublishedCase, load_published

sys.path.insert(0, str(Path(__file__).resolve().parent))  # profile_fit, when loaded by path

import profile_fit
from profile_fit import best

PROFILE = "ktransformers"
KERNEL_GRID = np.round(np.arange(0.30, 0.7001, 0.01), 2)
SHARE_GRID = np.round(np.arange(0.20, 1.0001, 0.02), 2)


def fit_cases() -> list[PublishedCase]:
    return [c for c in load_published() if c.engine == PROFILE]


def log_ratios(cases: list[PublishedCase]) -> np.ndarray:
    """ln(predicted/measured), shape (kernel grid, share grid, cases)."""
    return profile_fit.log_ratios(
        PROFILE, ("cpu_kernel_bw_fraction", "replicate_socket_share"), (KERNEL_GRID, SHARE_GRID), cases
    )


def main() -> None:
    cases = fit_cases()
    lr = log_ratios(cases)
    i, j = best(lr)
    print(
        f"fit over {len(cases)} cases: cpu_kernel_bw_fraction = {KERNEL_GRID[i]:.2f}, "
        f"replicate_socket_share = {SHARE_GRID[j]:.2f}"
    )
    print(f"{'case':56s} {'speed ratio fit':>15s} {'leave-one-out':>14s}  (kernel, share)")
    loo = []
    for k, case in enumerate(cases):
        a, b = best(np.delete(lr, k, axis=-1))
        sign = -1.0 if case.is_time else 1.0
        loo.append(abs(math.exp(lr[a, b, k]) - 1))
        print(
            f"{case.id:56s} {math.exp(sign * lr[i, j, k]):15.2f} {math.exp(sign * lr[a, b, k]):14.2f}  "
            f"({KERNEL_GRID[a]:.2f}, {SHARE_GRID[b]:.2f})"
        )
    print(
        f"median |error|: fitted {np.median(np.abs(np.exp(lr[i, j]) - 1)):.1%}, leave-one-out {np.median(loo):.1%}"
    )
    one = [k for k, c in enumerate(cases) if (c.cpu_sockets or 1) == 1]
    a, b = best(lr[..., one])
    print(f"single-socket cases only -> cpu_kernel_bw_fraction {KERNEL_GRID[a]:.2f} (share not constrained)")


if __name__ == "__main__":
    main()
