"""Fit the llama.cpp CUDA profile's ``compute_fraction`` (capsim/engine/engines.toml ``["llama.cpp"]``) to the
published llama.cpp prefill runs on NVIDIA GPUs.

llama.cpp's CUDA backend multiplies block-quantized weights (GGUF k-/legacy quants, MXFP4) in its MMQ kernels:
activations quantised to 8 bits, int8 mma (the profile's ``quantized_compute``). A MoE layer runs them per
expert on that expert's tokens (``mul_mat_id``), with the ggml graph's unfused element-wise ops (f32 activations)
around them: measured prompt processing sits far below the int8 peak. One value is fitted: the share of the
dense peak the engine's compute-bound kernels sustain in prefill. The points are every published case with
``engine = "llama.cpp"``, metric ``prefill_tokens_per_s`` and a GPU of the profile's device classes (DGX Spark
gpt-oss-20b and -120b, RTX 4090 gpt-oss-20b, RTX 3090 DeepSeek-V2-Lite: three GPUs, three models, MXFP4 and
Q4_0). The fit minimises Σ ln(predicted/measured)² over a grid; leave-one-out refits without each case and
predicts it. Decode (tg) cases are printed as a check: they are bandwidth-bound and barely depend on the value.
So are three rows of the RTX 3090 case's own table that are not in the set (the same pp512 at microbatch 256,
128 and 64: 24, 12 and 6 tokens per expert), the check of whether one fraction carries across the tokens each
expert sees (it does not: docs/validation.md §5.8).

Usage: PYTHONPATH=. python benchmarks/fit_llamacpp_prefill.py
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from capsim.engine import engines
from capsim.hardware.db import load_hardware_db
from capsim.validation.published import PublishedCase, load_published, predict_case

PROFILE = "llama.cpp"
COMPUTE_FRACTION_GRID = np.round(np.arange(0.04, 0.3001, 0.005), 3)
SWEEP_CASE = "llamacpp-pr15525-rtx3090-dsv2lite-q4_0-pp512"
SWEEP = ((256, 3280.19), (128, 2103.93), (64, 1268.85))
"""(microbatch, baseline t/s) of the RTX 3090 DeepSeek-V2-Lite Q4_0 pp512 rows of ggml-org/llama.cpp#15525's
table (PR description, 'Microbatch size' column) below the case's microbatch 512: not in the set, not fitted."""


def gpu_cases() -> list[PublishedCase]:
    """The published llama.cpp cases that run on a GPU of the profile's device classes."""
    profile = engines.load_engines()[PROFILE]
    db = load_hardware_db()
    return [
        c
        for c in load_published()
        if c.engine == PROFILE
        and c.hardware is not None
        and c.placement in ("gpu", "unified-memory")
        and profile.applies_to(db.get(c.hardware).device_class)
    ]


def log_ratios(cases: list[PublishedCase]) -> np.ndarray:
    """ln(predicted/measured), shape (grid, cases)."""
    table = engines.load_engines()  # cached dict: the profile is swapped in place and restored
    shipped = table[PROFILE]
    out = np.empty((len(COMPUTE_FRACTION_GRID), len(cases)))
    try:
        for i, cf in enumerate(COMPUTE_FRACTION_GRID):
            table[PROFILE] = replace(shipped, compute_fraction=float(cf))
            for k, case in enumerate(cases):
                r = predict_case(case)
                assert r.ratio is not None, (case.id, r.reason)
                out[i, k] = math.log(r.ratio)
    finally:
        table[PROFILE] = shipped
    return out


def best(lr: np.ndarray) -> int:
    return int(np.argmin((lr**2).sum(axis=-1)))


def main() -> None:
    cases = gpu_cases()
    prefill = [c for c in cases if c.metric == "prefill_tokens_per_s"]
    lr = log_ratios(prefill)
    i = best(lr)
    print(f"fit over {len(prefill)} prefill cases: compute_fraction = {COMPUTE_FRACTION_GRID[i]:.3f}")
    print(f"{'case':52s} {'speed ratio fit':>15s} {'leave-one-out':>14s}  (cf)")
    loo = []
    for k, case in enumerate(prefill):
        j = best(np.delete(lr, k, axis=-1))
        loo.append(abs(math.exp(lr[j, k]) - 1))
        print(
            f"{case.id:52s} {math.exp(lr[i, k]):15.2f} {math.exp(lr[j, k]):14.2f}  ({COMPUTE_FRACTION_GRID[j]:.3f})"
        )
    fit_err = np.abs(np.exp(lr[i]) - 1)
    print(f"median |error|: fitted {np.median(fit_err):.1%}, leave-one-out {np.median(loo):.1%}")
    table = engines.load_engines()
    shipped = table[PROFILE]
    table[PROFILE] = replace(shipped, compute_fraction=float(COMPUTE_FRACTION_GRID[i]))
    try:
        print("decode cases at the fitted value (speed ratio, not fitted):")
        for case in cases:
            if case.metric != "prefill_tokens_per_s":
                r = predict_case(case)
                print(f"  {case.id:50s} {r.speed_ratio:.2f}")
        print("microbatch sweep of the RTX 3090 case at the fitted value (speed ratio, not fitted):")
        base = next(c for c in prefill if c.id == SWEEP_CASE)
        for ub, value in SWEEP:
            r = predict_case(replace(base, prefill_chunk=ub, value=value))
            print(
                f"  ub {ub:4d} ({ub * 6 / 64:4.1f} tokens per expert) measured {value:8.1f} tok/s, speed ratio {r.speed_ratio:.2f}"
            )
    finally:
        table[PROFILE] = shipped


if __name__ == "__main__":
    main()
