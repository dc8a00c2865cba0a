"""Microbenchmarks of the machine the harness runs on, with PyTorch (CPU or CUDA).

Memory bandwidth, STREAM-style (McCalpin's STREAM counts the bytes a kernel must move, not write-allocate
traffic): ``copy`` c = a moves 2·N elements, ``triad`` a = b + s·c moves 3·N; plus ``read`` (a sum: N
elements read, nothing written) and ``gemv`` (y = W·x cycling over distinct 2048×2048 weights, one per call:
the weight-streaming access of a decode step, which is what capsim's memory term models). Arrays are far larger than the last-level cache
(default 256 MiB each on a CPU, 1 GiB on a GPU) so the figures are DRAM/HBM rates.

Compute: square matmuls per precision, size grown until one run lasts long enough to be timed well; the best
rate over the sizes tried is reported (small GEMMs are slower; that is the efficiency the engine's
``compute_fraction`` stands for). A dispatch overhead per op is measured with a 1-element in-place add.
On a GPU, host-to-device and device-to-host copy bandwidth from pinned memory.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

from capsim import units
from capsim.errors import ScenarioError
from capsim.profile._torch import dtype_of, require_torch, synchronizer
from capsim.profile.timing import Timing, time_op

CPU_ARRAY_BYTES = 256 * units.MIB
GEMV_WIDTH = 2048
GPU_GEMV_WIDTH = 8192
"""On a GPU a 2048x2048 weight (16 MiB fp32) is read in a few microseconds, so its GEMV times the kernel launch,
not the memory (an H200 read 1.0 TB/s there against 4.0 TB/s in the STREAM read); 8192x8192 weights (256 MiB
fp32, 128 MiB bf16) are the size of real projections and experts and stream at the memory's rate."""
"""Side of the square weights of the GEMV figure: 16 MiB in fp32, the size of one expert projection of the
small MoE models (OLMoE, Qwen3-30B-A3B, DeepSeek-V2-Lite have hidden 2048)."""
GPU_ARRAY_BYTES = 1 * units.GIB


@dataclass(frozen=True)
class Measurement:
    """One measured figure: ``value`` in ``unit`` (GB/s, TFLOPS or s), how it was obtained, its timing."""

    name: str
    value: float
    unit: str
    method: str
    timing: Timing
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "method": self.method,
            "timing": self.timing.to_dict(),
            "detail": dict(self.detail),
        }


def _rate_gb_s(bytes_moved: float, timing: Timing) -> float:
    return bytes_moved / timing.median_s / units.GB_PER_S


def memory_bandwidth(
    device: Any,
    *,
    array_bytes: float | None = None,
    warmup: int = 2,
    repetitions: int = 5,
) -> dict[str, Measurement]:
    """STREAM-style ``copy`` and ``triad``, plus ``read`` and ``gemv``, in GB/s (1 GB/s = 1e9 bytes/s).

    Each array holds ``array_bytes`` of fp32 (default :data:`CPU_ARRAY_BYTES` / :data:`GPU_ARRAY_BYTES`).
    Bytes counted: copy 2·N·4, triad 3·N·4, read N·4, gemv the weight only (2048²·4; x and y are tiny).
    """
    torch = require_torch("measuring memory bandwidth")
    if array_bytes is None:
        array_bytes = GPU_ARRAY_BYTES if device.type == "cuda" else CPU_ARRAY_BYTES
    n = int(array_bytes // 4)
    sync = synchronizer(torch, device)
    out = _stream(torch, device, n, warmup, repetitions, sync)
    width = GPU_GEMV_WIDTH if device.type == "cuda" else GEMV_WIDTH
    count = max(2, n // (width * width))
    weights = torch.empty(count, width, width, dtype=torch.float32, device=device).uniform_()
    x = torch.empty(1, width, dtype=torch.float32, device=device).uniform_()
    t = time_op(_linear_over_all(torch, x, weights), warmup=warmup, repetitions=repetitions, sync=sync)
    out["gemv"] = Measurement(
        "gemv",
        _rate_gb_s(count * width * width * 4, t),
        "GB/s",
        f"y = W·x, W {width}x{width} fp32, over {count} distinct weights in turn (like the experts and "
        "projections of a decode step): weight bytes / time",
        t,
    )
    return out


def _stream(
    torch: Any, device: Any, n: int, warmup: int, repetitions: int, sync: Any
) -> dict[str, Measurement]:
    """copy, triad and read over three arrays of ``n`` fp32 (freed on return)."""
    a = torch.empty(n, dtype=torch.float32, device=device).uniform_()
    b = torch.empty_like(a).uniform_()
    c = torch.empty_like(a)
    out: dict[str, Measurement] = {}
    t = time_op(lambda: c.copy_(a), warmup=warmup, repetitions=repetitions, sync=sync)
    out["copy"] = Measurement(
        "copy", _rate_gb_s(2 * n * 4, t), "GB/s", f"c = a over {n:,} fp32 (2·N·4 bytes)", t
    )
    t = time_op(lambda: torch.add(b, c, alpha=3.0, out=a), warmup=warmup, repetitions=repetitions, sync=sync)
    out["triad"] = Measurement(
        "triad", _rate_gb_s(3 * n * 4, t), "GB/s", f"a = b + s·c over {n:,} fp32 (3·N·4 bytes)", t
    )
    t = time_op(lambda: a.sum(), warmup=warmup, repetitions=repetitions, sync=sync)
    out["read"] = Measurement("read", _rate_gb_s(n * 4, t), "GB/s", f"sum(a) over {n:,} fp32 (N·4 bytes)", t)
    return out


def matmul_flops(
    device: Any,
    precision: str,
    *,
    start: int = 256,
    max_size: int | None = None,
    min_run_s: float = 0.05,
    warmup: int = 1,
    repetitions: int = 3,
) -> Measurement:
    """Best dense matmul rate in TFLOPS (1e12 FLOP/s) for ``precision`` over square sizes start, 2·start, …

    A size n costs 2·n³ FLOP. Growth stops at ``max_size`` (CPU 4096, GPU 16384) or once one run takes
    ``min_run_s``, so an emulated precision (bf16 on a CPU without native bf16) is measured quickly at a
    small size rather than for minutes.
    """
    torch = require_torch("measuring matmul FLOPS")
    dtype = dtype_of(torch, precision)
    if max_size is None:
        max_size = 16384 if device.type == "cuda" else 4096
    if not 1 <= start <= max_size:
        raise ScenarioError(
            f"matmul sizes need 1 <= start <= max_size, got start={start}, max_size={max_size}"
        )
    sync = synchronizer(torch, device)
    best: tuple[float, int, Timing] | None = None
    per_size: dict[str, float] = {}
    n = start
    while n <= max_size:
        a = torch.empty(n, n, dtype=dtype, device=device).uniform_(-1, 1)
        b = torch.empty(n, n, dtype=dtype, device=device).uniform_(-1, 1)
        t = time_op(functools.partial(torch.mm, a, b), warmup=warmup, repetitions=repetitions, sync=sync)
        tflops = 2.0 * n**3 / t.median_s / units.TFLOPS
        per_size[str(n)] = tflops
        if best is None or tflops > best[0]:
            best = (tflops, n, t)
        if t.median_s >= min_run_s:
            break
        n *= 2
    assert best is not None  # internal: the loop ran at least once (start <= max_size checked above)
    return Measurement(
        f"matmul_{precision}",
        best[0],
        "TFLOPS",
        f"best of square {precision} matmuls (2·n³ FLOP), n = {start}..{n}; best at n = {best[1]}",
        best[2],
        {"tflops_by_size": per_size},
    )


SKINNY_ROWS = (1, 2, 4, 8, 16, 64)
GPU_SKINNY_ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
"""A GPU streams a bf16 weight at full bandwidth up to M ≈ peak FLOPS / bandwidth (≈ 170 rows on an H100/H200),
so its table runs to 256 rows to show where the knee is."""


def skinny_gemm(
    device: Any,
    precision: str,
    *,
    rows: tuple[int, ...] | None = None,
    width: int | None = None,
    total_bytes: float | None = None,
    repetitions: int = 7,
) -> dict[str, Measurement]:
    """Effective weight bandwidth (GB/s) of x·Wᵀ with ``width``×``width`` weights and M = ``rows`` tokens.

    This is the shape of a decode step's GEMMs (an expert that received M tokens). Each repetition runs
    through distinct weights totalling ``total_bytes`` (default: the memory-bandwidth array size, far above
    the last-level cache), as successive experts do, so no GEMM finds its weight in cache. A roofline charges
    max(2·M·N / F, N·b / B); on CPUs whose BLAS packs the weight for M > 1 the measured time is well above that,
    and this table shows by how much (relative to M = 1 it is the entry's ``gemm_tokens_efficiency`` curve).
    """
    torch = require_torch("measuring skinny GEMMs")
    if rows is None:
        rows = GPU_SKINNY_ROWS if device.type == "cuda" else SKINNY_ROWS
    if width is None:
        width = GPU_GEMV_WIDTH if device.type == "cuda" else GEMV_WIDTH
    dtype = dtype_of(torch, precision)
    sync = synchronizer(torch, device)
    if total_bytes is None:
        total_bytes = GPU_ARRAY_BYTES if device.type == "cuda" else CPU_ARRAY_BYTES
    element = torch.empty((), dtype=dtype).element_size()
    count = max(2, math.ceil(total_bytes / (width * width * element)))
    weights = torch.empty(count, width, width, dtype=dtype, device=device).uniform_(-1, 1)
    weight_bytes = width * width * element
    out = {}
    for m in rows:
        x = torch.empty(m, width, dtype=dtype, device=device).uniform_(-1, 1)
        t = time_op(_linear_over_all(torch, x, weights), warmup=1, repetitions=repetitions, sync=sync)
        out[str(m)] = Measurement(
            f"gemm_m{m}",
            _rate_gb_s(count * weight_bytes, t),
            "GB/s",
            f"x·Wᵀ, x {m}x{width}, W {width}x{width} {precision}, over {count} weights in turn: weight bytes / time",
            t,
            {"gflops": count * 2.0 * m * width * width / t.median_s / units.GFLOPS},
        )
    return out


def _linear_over_all(torch: Any, x: Any, weights: Any) -> Any:
    """A no-argument op computing x·Wᵀ once with each of ``weights`` in turn (one timed repetition runs them
    all, so that on a GPU the synchronisation around it is small against the work)."""

    def run() -> None:
        for w in weights:
            torch.nn.functional.linear(x, w)

    return run


def op_overhead(device: Any, *, ops: int = 2000, repetitions: int = 5) -> Measurement:
    """Seconds per dispatched op: ``ops`` in-place adds on a 1-element tensor, total / ops.

    This is the fixed cost every PyTorch op pays on this machine (Python dispatch, and on a GPU the kernel
    launch), independent of its size.
    """
    torch = require_torch("measuring op dispatch overhead")
    sync = synchronizer(torch, device)
    z = torch.zeros(1, device=device)

    def run() -> None:
        for _ in range(ops):
            z.add_(1.0)

    t = time_op(run, warmup=1, repetitions=repetitions, sync=sync)
    return Measurement(
        "op_overhead", t.median_s / ops, "s", f"{ops} in-place adds on a 1-element tensor, time / {ops}", t
    )


def host_device_copy(
    device: Any, *, array_bytes: float = 1 * units.GIB, repetitions: int = 5
) -> dict[str, Measurement]:
    """Pinned host -> device and device -> host copy bandwidth in GB/s (GPU only; empty dict on a CPU)."""
    if device.type != "cuda":
        return {}
    torch = require_torch("measuring host-device bandwidth")
    sync = synchronizer(torch, device)
    n = int(array_bytes // 4)
    host = torch.empty(n, dtype=torch.float32, pin_memory=True)
    dev = torch.empty(n, dtype=torch.float32, device=device)
    t_h2d = time_op(lambda: dev.copy_(host, non_blocking=True), repetitions=repetitions, sync=sync)
    t_d2h = time_op(lambda: host.copy_(dev, non_blocking=True), repetitions=repetitions, sync=sync)
    return {
        "h2d": Measurement(
            "h2d", _rate_gb_s(n * 4, t_h2d), "GB/s", f"pinned host -> device, {n * 4:,} bytes", t_h2d
        ),
        "d2h": Measurement(
            "d2h", _rate_gb_s(n * 4, t_d2h), "GB/s", f"device -> pinned host, {n * 4:,} bytes", t_d2h
        ),
    }
