"""Out-of-sample check of the engine profiles: dstack's DeepSeek-R1 online sweep at 4-128 requests in flight.

Source: github:dstackai/benchmarks Deepseek-R1/raw_data/online_results.csv (commit 7f37e66), rows 'random',
3,200 input / 800 output tokens, column mean_tpot_ms (Feb-Mar 2025: vLLM 0.7.3-0.7.4, SGLang 0.4.3,
TensorRT-LLM of that date; launch commands in Deepseek-R1/README.md, commit 899aefb). Three of the 30 rows (H200
vLLM, H200 SGLang and MI300X vLLM at 4) are published cases and in the kernel-latency fit; the other 27 are not.
Each row is predicted like its concurrency-4 case (validation/published/measurements.toml) with the batch
changed; the MI300X SGLang and H200 TensorRT-LLM rows reuse the H200 SGLang and vLLM cases' layouts (DP
attention; TP8), which the CSV does not state.

Prints predicted / measured TPOT per row with the engine profiles as shipped and with every engine at the
device class's default. Usage: PYTHONPATH=. python benchmarks/check_dstack_concurrency.py
"""

from __future__ import annotations

import dataclasses

import numpy as np

from capsim.engine import engines
from capsim.validation.published import PublishedCase, load_published, predict_case

CONCURRENCY = (4, 8, 16, 32, 64, 128)
MEAN_TPOT_MS = {
    ("h200-sxm", "vllm"): (25.73, 31.28, 49.60, 51.67, 65.62, 71.86),
    ("h200-sxm", "sglang"): (43.58, 43.82, 52.51, 63.64, 80.24, 110.75),
    ("mi300x", "vllm"): (46.20, 50.87, 55.57, 61.93, 77.97, 109.07),
    ("mi300x", "sglang"): (34.94, 38.75, 47.09, 59.62, 84.95, 135.73),
    ("h200-sxm", "tensorrt-llm"): (55.12, 55.92, 57.55, 65.46, 81.65, 100.24),
}
BASE = {
    ("h200-sxm", "vllm"): "dstack-dsr1-h200x8-vllm-online-c4",
    ("h200-sxm", "sglang"): "dstack-dsr1-h200x8-sglang-online-c4",
    ("mi300x", "vllm"): "dstack-dsr1-mi300x8-vllm-online-c4",
    ("mi300x", "sglang"): "dstack-dsr1-h200x8-sglang-online-c4",
    ("h200-sxm", "tensorrt-llm"): "dstack-dsr1-h200x8-vllm-online-c4",
}


def ratios(class_default_only: bool) -> dict[tuple[str, str], list[float]]:
    """predicted / measured mean TPOT per series and concurrency."""
    cases = {c.id: c for c in load_published()}
    shipped = engines.load_engines()
    saved = dict(shipped)
    if class_default_only:
        for key, profile in shipped.items():
            shipped[key] = dataclasses.replace(profile, kernel_latency_s=None)
    try:
        out = {}
        for (hardware, engine), values in MEAN_TPOT_MS.items():
            base: PublishedCase = cases[BASE[hardware, engine]]
            row = []
            for batch, tpot_ms in zip(CONCURRENCY, values, strict=True):
                case = dataclasses.replace(
                    base, hardware=hardware, engine=engine, batch=batch, value=tpot_ms / 1e3
                )
                result = predict_case(case)
                assert result.predicted is not None, result.reason
                row.append(result.predicted / case.value)
            out[hardware, engine] = row
        return out
    finally:
        shipped.clear()
        shipped.update(saved)


def main() -> None:
    for label, default_only in (("engine profiles", False), ("class default for every engine", True)):
        table = ratios(default_only)
        print(f"\n{label}: predicted / measured mean TPOT at {', '.join(map(str, CONCURRENCY))} in flight")
        for (hardware, engine), row in table.items():
            print(f"  {hardware:9} {engine:13} " + " ".join(f"{r:5.2f}" for r in row))
        every = np.array([r for row in table.values() for r in row])
        print(
            f"  median |error| {np.median(np.abs(every - 1)):.1%}, "
            f"geo-mean predicted/measured {np.exp(np.log(every).mean()):.2f}"
        )


if __name__ == "__main__":
    main()
