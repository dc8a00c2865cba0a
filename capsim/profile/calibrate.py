"""``capsim hardware calibrate``: measure this machine and write a hardware entry the rest of capsim loads
with ``--hardware-db PATH`` like any other.

What goes into the entry (every value sourced ``measured on <date> by capsim calibrate``):

- ``memory_bandwidth_gb_s``: the nominal peak when given (``--peak-bw-gb-s``), else the best bandwidth
  measured (copy, triad, read or GEMV), labelled as achieved, not nominal;
- ``efficiency.memory_bw_fraction`` = GEMV bandwidth / ``memory_bandwidth_gb_s``: the share of it that the
  weight-streaming access of a decode step achieves;
- ``peak_tflops_dense.<p>``: the nominal peak when given, else the best measured matmul rate. A precision
  whose matmuls run *slower than fp32* (bf16 on a CPU without AVX512-BF16/AMX, where PyTorch converts in
  software) is left out of the table: no engine would run in it, and capsim's compute-key fallback then uses
  the rate the harness actually runs at. Its measured figure stays in the comments;
- ``efficiency.compute_fraction`` = measured / nominal for the primary precision (bf16 on a GPU, fp32 on a
  CPU) when a nominal peak is given, else 1 (the table already holds achieved rates);
- ``efficiency.per_layer_overhead_s`` and ``step_overhead_s``: the time of tiny models of the harness's own
  decoder layer (hidden 64, 64 experts, top-8, so a batch-1 step runs 8 experts like OLMoE's) with 1 and 3
  layers: per layer = (t₃ − t₁)/2, per step = t₁ − per layer. At that width the arithmetic is negligible, so
  these are the dispatch and framework costs of eager PyTorch on this machine;
- ``efficiency.gemm_tokens_efficiency``: for M = 1, 2, 4, 8, 16, 64 token rows (GPU: 1 … 256), the weight
  bandwidth of x·Wᵀ (W 2048×2048; GPU: 8192×8192, see microbench.GPU_GEMV_WIDTH) at M over that at M = 1: how much slower than the GEMV rate a weight GEMM over M rows
  streams its weight (the roofline multiplies the bandwidth of weight GEMMs by it).

The entry is written atomically (temporary file + ``os.replace``) and then loaded back through
:func:`capsim.hardware.db.load_hardware_db`, so a file that the database would reject is never left behind.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from capsim import units
from capsim.errors import ScenarioError
from capsim.models.parts import AttentionSpec, FFNKind, MoESpec
from capsim.models.spec import ModelSpec
from capsim.profile._torch import require_torch, resolve_device, synchronizer
from capsim.profile.harness import machine_info, set_threads
from capsim.profile.microbench import (
    Measurement,
    host_device_copy,
    matmul_flops,
    memory_bandwidth,
    op_overhead,
    skinny_gemm,
)
from capsim.profile.timing import time_op

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class Calibration:
    """Everything one calibration measured, plus the nominal peaks the user supplied (if any)."""

    machine: dict[str, Any]
    date: str
    command: str
    memory: dict[str, Measurement]
    matmul: dict[str, Measurement]
    op_overhead: Measurement
    layer_overhead: dict[str, Measurement]
    host_device: dict[str, Measurement] = field(default_factory=dict)
    skinny_gemm: dict[str, Measurement] = field(default_factory=dict)
    """Weight bandwidth of x·Wᵀ by token count M (decode-shaped GEMMs); relative to M = 1 it becomes the
    entry's ``gemm_tokens_efficiency`` curve."""
    nominal_bw_gb_s: float | None = None
    nominal_tflops: dict[str, float] = field(default_factory=dict)

    # ---- derived entry values ------------------------------------------------------------------------
    @property
    def device_type(self) -> str:
        return str(self.machine["device_type"])

    @property
    def primary_precision(self) -> str:
        """The precision the harness runs the model in on this device (bf16 on a GPU, fp32 on a CPU)."""
        return "bf16" if self.device_type == "cuda" else "fp32"

    @property
    def best_stream_gb_s(self) -> float:
        """The highest of the four bandwidth figures (so GEMV / it ≤ 1, the schema's range for a fraction)."""
        return max(self.memory[k].value for k in ("copy", "triad", "read", "gemv"))

    @property
    def memory_bandwidth_gb_s(self) -> float:
        return self.nominal_bw_gb_s if self.nominal_bw_gb_s is not None else self.best_stream_gb_s

    @property
    def memory_bw_fraction(self) -> float:
        """GEMV bandwidth / entry bandwidth, capped at 1 (the schema's range)."""
        return min(1.0, self.memory["gemv"].value / self.memory_bandwidth_gb_s)

    def native_precisions(self) -> list[str]:
        """Precisions listed in the entry: fp32, and any other whose matmul is at least as fast as fp32."""
        fp32 = self.matmul["fp32"].value
        return [p for p in PRECISIONS if p in self.matmul and (p == "fp32" or self.matmul[p].value >= fp32)]

    def peak_tflops(self) -> dict[str, float]:
        """The ``peak_tflops_dense`` table: nominal where given, else measured, for the native precisions."""
        return {p: self.nominal_tflops.get(p, self.matmul[p].value) for p in self.native_precisions()}

    @property
    def compute_fraction(self) -> float:
        p = self.primary_precision
        if p in self.nominal_tflops and p in self.matmul:
            return min(1.0, self.matmul[p].value / self.nominal_tflops[p])
        return 1.0

    @property
    def per_layer_overhead_s(self) -> float:
        """(t₃ − t₁)/2 from the overhead probes (positive: :func:`calibrate` rejects noisier runs)."""
        one, three = self.layer_overhead["1_layer"].value, self.layer_overhead["3_layers"].value
        return (three - one) / 2.0

    @property
    def step_overhead_s(self) -> float:
        """t₁ − per-layer overhead, floored at 1 ns (the schema needs a positive number)."""
        return max(self.layer_overhead["1_layer"].value - self.per_layer_overhead_s, 1e-9)

    @property
    def memory_capacity_gb(self) -> float:
        key = "gpu_memory_bytes" if self.device_type == "cuda" else "host_memory_bytes"
        value = self.machine.get(key)
        if not value:
            raise ScenarioError("could not read this machine's memory size; it is needed for the entry")
        return float(value) / units.GB

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "capsim-calibration",
            "version": 1,
            "date": self.date,
            "command": self.command,
            "machine": self.machine,
            "memory": {k: m.to_dict() for k, m in self.memory.items()},
            "matmul": {k: m.to_dict() for k, m in self.matmul.items()},
            "op_overhead": self.op_overhead.to_dict(),
            "layer_overhead": {k: m.to_dict() for k, m in self.layer_overhead.items()},
            "host_device": {k: m.to_dict() for k, m in self.host_device.items()},
            "skinny_gemm": {k: m.to_dict() for k, m in self.skinny_gemm.items()},
            "nominal": {
                "memory_bandwidth_gb_s": self.nominal_bw_gb_s,
                "peak_tflops_dense": self.nominal_tflops,
            },
            "entry": {
                "memory_bandwidth_gb_s": self.memory_bandwidth_gb_s,
                "memory_bw_fraction": self.memory_bw_fraction,
                "peak_tflops_dense": self.peak_tflops(),
                "compute_fraction": self.compute_fraction,
                "per_layer_overhead_s": self.per_layer_overhead_s,
                "step_overhead_s": self.step_overhead_s,
                "memory_capacity_gb": self.memory_capacity_gb,
                "gemm_tokens_efficiency": {str(k): v for k, v in gemm_tokens_efficiency(self).items()},
            },
        }


# ------------------------------------------------------------------------------------------------- measuring
def overhead_spec(num_layers: int) -> ModelSpec:
    """An invented tiny MoE model (not a real one) whose step time is almost all dispatch overhead:
    hidden 64, 4 heads of 16, 64 experts of width 64, top-8, vocabulary 256."""
    return ModelSpec(
        id=f"overhead-probe-{num_layers}L",
        name="capsim overhead probe (invented tiny shapes)",
        family="probe",
        source="invented by capsim calibrate to measure per-layer dispatch overhead; not a published model",
        hidden_size=64,
        num_layers=num_layers,
        vocab_size=256,
        attention=AttentionSpec(kind="gqa", num_heads=4, num_kv_heads=4, head_dim=16),
        ffn_kinds=(FFNKind.MOE,) * num_layers,
        moe=MoESpec(num_experts=64, top_k=8, expert_intermediate_size=64),
    )


def measure_layer_overhead(device: Any, *, repetitions: int = 30) -> dict[str, Measurement]:
    """Median decode-step time (batch 1, context 64) of the 1- and 3-layer overhead probes."""
    torch = require_torch("measuring layer overhead")
    from capsim.profile.moe_torch import MoEDecoder

    sync = synchronizer(torch, device)
    out = {}
    for n, key in ((1, "1_layer"), (3, "3_layers")):
        torch.manual_seed(0)
        model = MoEDecoder(overhead_spec(n), 64, device, torch.float32)
        model.allocate_cache(1)
        ids = torch.randint(0, 256, (1, 1), device=device)
        t = time_op(functools.partial(model.step, ids, 63), warmup=5, repetitions=repetitions, sync=sync)
        out[key] = Measurement(
            f"probe_step_{key}",
            t.median_s,
            "s",
            f"decode step (batch 1, context 64) of the {n}-layer overhead probe (hidden 64, 64 experts, top-8)",
            t,
        )
    return out


def calibrate(
    *,
    device: str = "auto",
    quick: bool = False,
    nominal_bw_gb_s: float | None = None,
    nominal_tflops: dict[str, float] | None = None,
    command: str | None = None,
    threads: int | None = None,
    progress: Any = lambda message: None,
) -> Calibration:
    """Run every microbenchmark on ``device`` and return the :class:`Calibration`.

    ``quick`` uses 128 MiB arrays on a CPU (still 4× a 32 MiB L3) and fewer repetitions: about 20 s on 2 cores.
    """
    torch = require_torch("capsim hardware calibrate")
    set_threads(torch, threads)
    dev = resolve_device(torch, device)
    for name, value in (
        ("--peak-bw-gb-s", nominal_bw_gb_s),
        *((f"--peak-tflops-{k}", v) for k, v in (nominal_tflops or {}).items()),
    ):
        if value is not None and not value > 0:
            raise ScenarioError(f"{name} must be a positive number, got {value}")
    reps = 3 if quick else 7
    array_bytes = (128 * units.MIB if dev.type == "cpu" else 512 * units.MIB) if quick else None
    progress("memory bandwidth (copy, triad, read, gemv) ...")
    memory = memory_bandwidth(dev, array_bytes=array_bytes, repetitions=reps)
    matmul = {}
    for precision in PRECISIONS:
        progress(f"matmul {precision} ...")
        matmul[precision] = matmul_flops(dev, precision, min_run_s=0.05 if quick else 0.2, repetitions=reps)
    progress("op and layer overhead ...")
    overhead = op_overhead(dev, repetitions=reps)
    layers = measure_layer_overhead(dev, repetitions=15 if quick else 30)
    if layers["3_layers"].value <= layers["1_layer"].value:
        raise ScenarioError(
            "calibration too noisy: the 3-layer overhead probe ran faster than the 1-layer one "
            f"({layers['3_layers'].value * 1e3:.2f} vs {layers['1_layer'].value * 1e3:.2f} ms); something else "
            "is using the machine: re-run when it is idle, or with --threads 1"
        )
    host = host_device_copy(dev, repetitions=reps)
    progress("decode-shaped GEMMs ...")
    skinny = skinny_gemm(dev, "bf16" if dev.type == "cuda" else "fp32", repetitions=reps)
    return Calibration(
        machine=machine_info(dev),
        date=datetime.now(UTC).isoformat(timespec="seconds"),
        command=command if command is not None else shlex.join(sys.argv),
        memory=memory,
        matmul=matmul,
        op_overhead=overhead,
        layer_overhead=layers,
        host_device=host,
        skinny_gemm=skinny,
        nominal_bw_gb_s=nominal_bw_gb_s,
        nominal_tflops=dict(nominal_tflops or {}),
    )


# ------------------------------------------------------------------------------------------------- writing
def _toml_str(text: str) -> str:
    # JSON string escapes are a subset of TOML basic-string escapes
    return json.dumps(text, ensure_ascii=False)


def _num(x: float) -> str:
    return repr(float(f"{x:.6g}"))


def _sourced(value: float, source: str, note: str = "") -> str:
    out = f"{{ value = {_num(value)}, source = {_toml_str(source)}"
    if note:
        out += f", note = {_toml_str(note)}"
    return out + " }"


def default_entry_id(cal: Calibration) -> str:
    return f"calibrated-{cal.machine['slug']}"


def _device_class(cal: Calibration) -> str:
    if cal.device_type != "cuda":
        return "cpu"
    name = str(cal.machine.get("gpu", ""))
    return "consumer-gpu" if "GeForce" in name or "RTX" in name else "datacenter-gpu"


def entry_toml(cal: Calibration, entry_id: str | None = None) -> str:
    """The hardware entry (schema 1, kind accelerator) for this calibration, as TOML text."""
    entry_id = entry_id or default_entry_id(cal)
    day = cal.date[:10]
    src = f"measured on {day} by capsim calibrate (command: {cal.command})"
    device_name = str(cal.machine.get("gpu") or cal.machine["cpu"])
    threads = cal.machine.get("torch_threads")
    label = (
        device_name
        if cal.device_type == "cuda"
        else f"{device_name} ({threads} thread{'' if threads == 1 else 's'})"
    )
    mem = cal.memory
    stream_note = ", ".join(f"{k} {mem[k].value:.1f}" for k in ("copy", "triad", "read", "gemv")) + " GB/s"
    if cal.nominal_bw_gb_s is not None:
        bw_line = _sourced(
            cal.nominal_bw_gb_s,
            "nominal peak given to capsim calibrate (--peak-bw-gb-s)",
            f"measured: {stream_note}",
        )
    else:
        bw_line = _sourced(
            cal.best_stream_gb_s,
            src,
            f"achieved, not nominal: best of {stream_note} (no nominal peak given)",
        )
    lines = [
        "# Written by `capsim hardware calibrate`: measured on this machine, not a vendor figure.",
        f"# Machine: {label}; torch {cal.machine.get('torch')}; {cal.machine.get('platform')}",
        f"# Memory bandwidth (GB/s = 1e9 B/s): {stream_note}",
        "# Matmul (best over square sizes, TFLOPS): "
        + ", ".join(f"{p} {m.value:.4g}" for p, m in cal.matmul.items()),
        f"# Op dispatch overhead: {cal.op_overhead.value * 1e6:.2f} us per op",
    ]
    for k, m in cal.host_device.items():
        lines.append(f"# Host-device copy {k}: {m.value:.1f} GB/s")
    if cal.skinny_gemm:
        lines.append(
            "# Decode-shaped GEMM x·Wᵀ, weight GB/s by tokens M: "
            + ", ".join(f"M={k} {m.value:.1f}" for k, m in cal.skinny_gemm.items())
        )
    left_out = [p for p in cal.matmul if p not in cal.native_precisions()]
    if left_out:
        lines.append(f"# Not listed as peaks (slower than fp32, i.e. emulated here): {', '.join(left_out)}")
    lines += [
        "",
        "schema = 1",
        f"id = {_toml_str(entry_id)}",
        'kind = "accelerator"',
        f"name = {_toml_str(label + ' (calibrated)')}",
        f"vendor = {_toml_str(device_name.split()[0] if device_name.split() else device_name)}",
        f"device_class = {_toml_str(_device_class(cal))}",
        f"source = {_toml_str(src)}",
        f"memory_capacity_gb = {_num(cal.memory_capacity_gb)}",
        f"memory_bandwidth_gb_s = {bw_line}",
        f"unified_memory = {'false' if cal.device_type == 'cuda' else 'true'}",
        "",
        "[peak_tflops_dense]",
    ]
    for p, value in cal.peak_tflops().items():
        if p in cal.nominal_tflops:
            lines.append(
                f"{p} = "
                + _sourced(
                    value,
                    f"nominal peak given to capsim calibrate (--peak-tflops-{p})",
                    f"measured {cal.matmul[p].value:.4g} TFLOPS",
                )
            )
        else:
            lines.append(f"{p} = " + _sourced(value, src, f"achieved: {cal.matmul[p].method}"))
    probe1, probe3 = cal.layer_overhead["1_layer"].value, cal.layer_overhead["3_layers"].value
    lines += [
        "",
        "[efficiency]",
        "memory_bw_fraction = "
        + _sourced(
            cal.memory_bw_fraction,
            src,
            f"GEMV {mem['gemv'].value:.1f} GB/s / {cal.memory_bandwidth_gb_s:.1f} GB/s",
        ),
        "compute_fraction = "
        + _sourced(
            cal.compute_fraction,
            src,
            f"measured {cal.primary_precision} / nominal peak"
            if cal.primary_precision in cal.nominal_tflops
            else "1: the peak table holds achieved rates",
        ),
        "step_overhead_s = "
        + _sourced(cal.step_overhead_s, src, f"1-layer probe step {probe1 * 1e3:.3f} ms minus one layer"),
        "per_layer_overhead_s = "
        + _sourced(
            cal.per_layer_overhead_s,
            src,
            f"(3-layer {probe3 * 1e3:.3f} ms - 1-layer {probe1 * 1e3:.3f} ms) / 2, eager PyTorch",
        ),
        "",
    ]
    lines += gemm_curve_lines(cal, src)
    return "\n".join(lines)


def gemm_tokens_efficiency(cal: Calibration) -> dict[int, float]:
    """The ``gemm_tokens_efficiency`` curve: for each measured token count M, the weight bandwidth of the
    decode-shaped GEMM x·Wᵀ at M over its bandwidth at M = 1, capped at 1 (the schema's range).

    The M = 1 GEMM is the weight-streaming access that ``memory_bw_fraction`` describes, so the engine's rate
    at M is ``memory_bandwidth × memory_bw_fraction × g(M)``; g(1) = 1 leaves batch-1 decode as it was. Empty
    when the table lacks M = 1 (nothing to be relative to)."""
    one = cal.skinny_gemm.get("1")
    if one is None or not one.value > 0:
        return {}
    return {
        int(m): min(meas.value / one.value, 1.0)
        for m, meas in sorted(cal.skinny_gemm.items(), key=lambda kv: int(kv[0]))
        if meas.value > 0
    }


def gemm_curve_lines(cal: Calibration, src: str) -> list[str]:
    """``[efficiency.gemm_tokens_efficiency]`` lines of the entry (none without a decode-shaped GEMM table)."""
    curve = gemm_tokens_efficiency(cal)
    if not curve:
        return []
    one = cal.skinny_gemm["1"].value
    out = ["[efficiency.gemm_tokens_efficiency]"]
    for tokens, fraction in curve.items():
        gb_s = cal.skinny_gemm[str(tokens)].value
        note = f"x·Wᵀ weight bandwidth {gb_s:.2f} GB/s at M={tokens} / {one:.2f} GB/s at M=1"
        out.append(f"{tokens} = " + _sourced(fraction, src, note))
    return out + [""]


def entry_path(out: Path, cal: Calibration, entry_id: str | None = None) -> tuple[Path, str]:
    """(file, id) for ``--out``: a ``.toml`` path fixes the id to its stem (the database requires
    id == file name); a directory gets ``<id>.toml`` with ``entry_id`` or the default id."""
    if out.suffix == ".toml":
        if entry_id is not None and entry_id != out.stem:
            raise ScenarioError(
                f"--id {entry_id!r} differs from the file name {out.name!r}; the hardware database needs "
                f"id == file name: drop --id or write to {entry_id}.toml"
            )
        return out, out.stem
    chosen = entry_id or default_entry_id(cal)
    return out / f"{chosen}.toml", chosen


def write_entry(cal: Calibration, out: Path, entry_id: str | None = None) -> Path:
    """Write the entry to ``out`` (a ``.toml`` file or a directory) atomically, after checking that the
    hardware database accepts it: a rejected entry never replaces a good one. Returns the file written."""
    from capsim.hardware.db import load_hardware_db

    path, chosen = entry_path(out, cal, entry_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".capsim-calibrate-", dir=path.parent))
    try:
        staged = staging / path.name
        staged.write_text(entry_toml(cal, chosen), encoding="utf-8")
        load_hardware_db([staged], on_redefinition="replace")
        os.replace(staged, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def write_report(cal: Calibration, path: Path) -> Path:
    """The full measurements as JSON (every sample), next to the entry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(cal.to_dict(), indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
