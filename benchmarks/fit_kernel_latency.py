"""Fit ``kernel_latency_s``, the fixed device time per kernel of a forward pass, to published batch-1/low-batch
decode steps of CUDA-graph serving engines.

At batch 1 a decode step of a 61-layer model on 8 fast GPUs moves a few GB per GPU (well under a millisecond at
HBM rates) yet takes 6-25 ms: the step is a chain of ~1,300 small dependent kernels, each paying its launch gap,
ramp-up and tail. capsim charges ``kernel_latency_s`` for every kernel the decoder layers launch
(``capsim.engine.roofline.kernels_per_pass``); this script finds the value that best matches the points below
(least squares in log time over a grid), prints each point's prediction with and without it, and a
leave-one-out check. The points are TensorRT-LLM's published batch-1 B200 step and the published cases on a
datacenter GPU (CUDA/HIP-graph engines) at 1-4 sequences per step that the shipped values were fitted on
(:data:`FITTED_ON`); the cases with larger batches are printed as a check that the floor leaves long kernels
alone, and small-batch cases added to the set later as out-of-sample points, with what a refit over them too
would give (whether to refit is a model decision, docs/validation.md §5.6).

Usage: python benchmarks/fit_kernel_latency.py
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from capsim.engine.predict import predict
from capsim.engine.scenario import Scenario
from capsim.hardware.db import load_hardware_db
from capsim.hardware.entries import Efficiency
from capsim.validation.published import load_published, predict_case


@dataclass(frozen=True)
class Point:
    label: str
    engine: str
    source: str
    measured: float
    predict: Callable[[], float]
    """capsim's prediction of the measured quantity (a time, or a throughput for throughput cases) with the
    current kernel latency."""


def _scenario_tpot(**settings: object) -> Callable[[], float]:
    def run() -> float:
        return float(predict(Scenario(**settings)).tpot_s)  # type: ignore[arg-type]

    return run


def _case(case_id: str) -> Callable[[], float]:
    # predicted without the case's engine profile: the fit varies the device class's kernel latency
    case = replace(next(c for c in load_published() if c.id == case_id), engine=None)

    def run() -> float:
        result = predict_case(case)
        assert result.predicted is not None, result.reason
        return result.predicted

    return run


GPU_CLASS = "datacenter-gpu"
SMALL_BATCH = 4
"""Cases with at most this many sequences per step are fitted: there the kernel chain, not bandwidth, sets the
step. The larger ones are the check that the floor does not bind where kernels are long."""
checks: list[Point] = []
held_out: list[Point] = []

FITTED_ON = frozenset(
    {
        "dstack-dsr1-h200x8-sglang-online-c4",
        "dstack-dsr1-h200x8-vllm-online-c4",
        "dstack-dsr1-mi300x8-vllm-online-c4",
        "trtllm-blog-dsr1-h200x8-fp8-minlatency-bs1",
        "baseten-mixtral8x7b-a100-int8-trtllm-bs1",
    }
)
"""The small-batch published cases the shipped kernel latencies were fitted on (vLLM 0.7 / SGLang 0.4 of early
2025, TensorRT-LLM). Small-batch cases added later (e.g. vLLM 0.10 gpt-oss-120b rows) are out of sample here;
the vLLM 0.10-0.11 profile is fitted on its own release's cases by benchmarks/fit_vllm_release.py."""


def points() -> list[Point]:
    """The fit points: TensorRT-LLM's B200 batch-1 row (not in the published set) and every published case on a
    datacenter GPU (CUDA/HIP-graph engines: TensorRT-LLM, vLLM, SGLang) with at most SMALL_BATCH sequences per
    step; the larger cases go to :data:`checks`."""
    blog = (
        "NVIDIA/TensorRT-LLM docs/source/blogs/tech_blog/blog1_Pushing_Latency_Boundaries_Optimizing_DeepSeek-R1_"
        "Performance_on_NVIDIA_B200_GPUs.md (commit 01c4ece), MTP table, row 'Without MTP': 111 TPS/user"
    )
    out = [
        Point(
            "trtllm-blog1-dsr1-b200x8-nomtp-bs1 (TP8 attention bf16, EP4xTP2 nvfp4 experts)",
            "tensorrt-llm",
            blog,
            1.0 / 111.0,
            # nvfp4 (4.5 bits per weight with its fp8 scale per 16) read as capsim's mxfp4 (4.25 bits)
            _scenario_tpot(
                model="deepseek-r1",
                hardware="b200",
                gpus=8,
                tp=8,
                ep=4,
                weight_dtype="bf16",
                expert_dtype="mxfp4",
                batch=1,
                prompt_len=1024,
                gen_len=2048,
            ),
        )
    ]
    db = load_hardware_db()
    checks.clear()
    held_out.clear()
    for case in load_published():
        if case.hardware is None or case.placement != "gpu":
            continue
        if db.get(case.hardware).device_class != GPU_CLASS:  # type: ignore[union-attr]
            continue
        if case.batch > SMALL_BATCH:
            checks.append(Point(case.id, str(case.engine), case.id, case.value, _case(case.id)))
            continue
        if case.id not in FITTED_ON:
            held_out.append(Point(case.id, str(case.engine), case.id, case.value, _case(case.id)))
            continue
        out.append(
            Point(
                case.id,
                str(case.engine),
                f"validation/published/measurements.toml: {case.id}",
                case.value,
                _case(case.id),
            )
        )
    return out


def with_latency(latency_s: float, fn: Callable[[], float]) -> float:
    """``fn()`` with every device class's kernel latency set to ``latency_s`` (a fit-time override)."""
    original = Efficiency.kernel_latency_s
    Efficiency.kernel_latency_s = property(lambda self: latency_s)  # type: ignore[method-assign,assignment]
    try:
        return fn()
    finally:
        Efficiency.kernel_latency_s = original  # type: ignore[method-assign]


def fit(pts: list[Point], grid: np.ndarray) -> tuple[float, np.ndarray]:
    """Grid value minimising Σ ln(predicted/measured)²; the predictions at every grid value (grid x points)."""
    pred = np.array([[with_latency(t, p.predict) for p in pts] for t in grid])
    measured = np.array([p.measured for p in pts])
    loss = (np.log(pred / measured) ** 2).sum(axis=1)
    return float(grid[int(np.argmin(loss))]), pred


def main() -> None:
    grid = np.arange(0.0, 40.01, 0.25) * 1e-6
    pts = points()
    groups = {
        "tensorrt-llm": [p for p in pts if p.engine == "tensorrt-llm"],
        "vllm, sglang": [p for p in pts if p.engine in ("vllm", "sglang")],
    }
    for name, group in groups.items():
        value, _ = fit(group, grid)
        print(
            f"engines.toml [{name}] kernel_latency_s, fitted over {len(group)} points: {value * 1e6:.2f} us"
        )
    best, pred = fit(pts, grid)
    i = int(np.argmin(np.abs(grid - best)))
    print(
        f"efficiency.toml [datacenter-gpu] kernel_latency_s (engine unknown), all {len(pts)} points: "
        f"{best * 1e6:.2f} us\n"
    )
    print(f"{'point':<70} {'measured':>10} {'t_k = 0':>8} {'fitted':>8}   (predicted / measured)")
    for j, p in enumerate(pts):
        print(
            f"{p.label[:70]:<70} {p.measured:10.4g} {pred[0, j] / p.measured:8.2f} {pred[i, j] / p.measured:8.2f}"
        )
    for label, col in (("t_k = 0", 0), ("fitted", i)):
        err = np.abs(pred[col] / np.array([p.measured for p in pts]) - 1)
        print(f"median |error| {label}: {np.median(err):.1%}")
    print("\ncheck: the cases with larger batches (not fitted), predicted / measured")
    for p in checks:
        print(
            f"  {p.label[:70]:<70} {with_latency(0.0, p.predict) / p.measured:8.2f} {with_latency(best, p.predict) / p.measured:8.2f}"
        )
    print(
        "\nout of sample: small-batch cases added after the fit, predicted / measured at t_k = 0 and fitted"
    )
    for p in held_out:
        engine_value, _ = fit(
            [
                q
                for q in pts
                if q.engine in (("vllm", "sglang") if p.engine in ("vllm", "sglang") else (p.engine,))
            ],
            grid,
        )
        print(
            f"  {p.label[:70]:<70} {with_latency(0.0, p.predict) / p.measured:8.2f} "
            f"{with_latency(engine_value, p.predict) / p.measured:8.2f}"
        )
    if held_out:
        everything = pts + held_out
        py = [q for q in everything if q.engine in ("vllm", "sglang")]
        print(
            f"a refit over them too would give: vllm/sglang {fit(py, grid)[0] * 1e6:.2f} us ({len(py)} points), "
            f"class default {fit(everything, grid)[0] * 1e6:.2f} us ({len(everything)} points)"
        )
    print("\nleave one out (fit on the others, predict the one left out):")
    for j, p in enumerate(pts):
        rest = [q for k, q in enumerate(pts) if k != j]
        loss = (np.log(np.delete(pred, j, axis=1) / np.array([q.measured for q in rest])) ** 2).sum(axis=1)
        k = int(np.argmin(loss))
        print(f"  {p.label[:70]:<70} t_k {grid[k] * 1e6:5.2f} us -> {pred[k, j] / p.measured:5.2f}")
    assert math.isfinite(best)


if __name__ == "__main__":
    main()
