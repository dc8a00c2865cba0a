"""Metrics from pass costs (definitions with symbols in docs/metrics.md).

Decode (over the gen_len − 1 steps after prefill, time-weighted as MoE-CAP's paper defines it):
    TPOT  = Σ t_step / n_steps                       decode tokens/s = B / TPOT (aggregate over the batch)
    MBU   = Σ (W_dense + KV_read) / Σ t / (N · BW_peak)     every expert's weights read each step
    S-MBU = Σ (W_act + KV_read) / Σ t / (N · BW_peak)       only the A distinct activated experts
    MFU   = Σ F_dense / Σ t / (N · F_peak)                  every token computes all E experts
    S-MFU = Σ F_sparse / Σ t / (N · F_peak)                 top-k experts per token (+ shared)
Prefill: the same over the prefill chunks; TTFT = Σ t_chunk; prefill tokens/s = B·P / TTFT.
BW_peak and F_peak are vendor peaks (not the achievable fractions the engine runs at), so S-MBU, S-MFU ≤ 1
while the dense MBU of a MoE may exceed 1: the overstatement MoE-CAP exposes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from capsim.engine.memory import MemoryPlan
from capsim.engine.reports import DeploymentReport
from capsim.engine.roofline import RESOURCES, PassTimes
from capsim.models.precision import compute_key

if TYPE_CHECKING:
    from capsim.engine.resolved import ResolvedScenario


@dataclass(frozen=True)
class PhaseMetrics:
    """Utilisation metrics and the time split of one phase (prefill or decode)."""

    time_s: float
    tokens: float
    mbu: float
    s_mbu: float
    mfu: float
    s_mfu: float
    bottleneck: str
    time_by_resource_s: dict[str, float]
    time_by_op_s: dict[str, float]
    passes: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "time_s": self.time_s,
            "tokens": self.tokens,
            "passes": self.passes,
            "mbu": self.mbu,
            "s_mbu": self.s_mbu,
            "mfu": self.mfu,
            "s_mfu": self.s_mfu,
            "bottleneck": self.bottleneck,
            "time_by_resource_s": self.time_by_resource_s,
            "time_by_op_s": self.time_by_op_s,
        }


def utilisation(
    time: Any,
    weight_bytes_dense: Any,
    weight_bytes_sparse: Any,
    kv_read_bytes: Any,
    flops_dense: Any,
    flops_sparse: Any,
    devices: int,
    bandwidth_peak: float,
    flops_peak: float | np.ndarray,
) -> dict[str, Any]:
    """MBU, S-MBU, MFU and S-MFU of passes summing to ``time`` seconds, bytes and FLOPs (floats, or arrays of
    such sums: sweeps call this on whole columns), on ``devices`` devices with vendor peaks:
    MBU = (W_dense + KV) / (t·N·BW), S-MBU = (W_act + KV) / (t·N·BW), MFU = F_dense / (t·N·F), S-MFU = F_sparse
    / (t·N·F). The one place these ratios are formed (predict and sweep both call it)."""
    bw = devices * bandwidth_peak * time
    fl = devices * flops_peak * time
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "mbu": (weight_bytes_dense + kv_read_bytes) / bw,
            "s_mbu": (weight_bytes_sparse + kv_read_bytes) / bw,
            "mfu": flops_dense / fl,
            "s_mfu": flops_sparse / fl,
        }


def phase_metrics(cost: PassTimes, devices: int, bandwidth_peak: float) -> PhaseMetrics:
    """Time-weighted utilisation over all passes of ``cost`` on ``devices`` devices."""
    total_time = float(cost.time.sum())
    if total_time <= 0.0 or cost.time.size == 0:
        zero = dict.fromkeys(RESOURCES, 0.0)
        return PhaseMetrics(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, "none", zero, {}, 0)
    by_resource = {r: float(v.sum()) for r, v in cost.time_by_resource.items()}
    ratios = utilisation(
        total_time,
        float(cost.weight_bytes_dense.sum()),
        float(cost.weight_bytes_sparse.sum()),
        float(cost.kv_read_bytes.sum()),
        float(cost.flops_dense.sum()),
        float(cost.flops_sparse.sum()),
        devices,
        bandwidth_peak,
        cost.metric_peak_flops,
    )
    return PhaseMetrics(
        time_s=total_time,
        tokens=float(cost.tokens.sum()),
        mbu=ratios["mbu"],
        s_mbu=ratios["s_mbu"],
        mfu=ratios["mfu"],
        s_mfu=ratios["s_mfu"],
        bottleneck=max(by_resource, key=lambda r: by_resource[r]),
        time_by_resource_s=by_resource,
        time_by_op_s={op: float(v.sum()) for op, v in cost.time_by_op.items()},
        passes=int(cost.time.size),
    )


@dataclass(frozen=True)
class Prediction:
    """Everything ``capsim predict`` reports. Times in seconds, throughputs in tokens/s, memory per device."""

    scenario: dict[str, Any]
    ttft_s: float
    tpot_s: float | None
    e2e_latency_s: float
    job_time_s: float
    decode_tokens_per_s: float | None
    prefill_tokens_per_s: float
    prefill: PhaseMetrics
    decode: PhaseMetrics
    activated_experts_per_layer: list[float]
    experts_per_layer: int
    memory: MemoryPlan
    batch_per_wave: int
    decode_step_times_s: np.ndarray = field(repr=False)
    assumptions: dict[str, Any] = field(default_factory=dict)
    deployment: DeploymentReport = field(default_factory=lambda: DeploymentReport())

    @property
    def prefill_time_s(self) -> float:
        return self.prefill.time_s

    @property
    def bottleneck(self) -> str:
        return self.decode.bottleneck if self.decode.passes else self.prefill.bottleneck

    def to_dict(self) -> dict[str, Any]:
        head = self.decode if self.decode.passes else self.prefill
        return {
            "scenario": self.scenario,
            "ttft_s": self.ttft_s,
            "tpot_s": self.tpot_s,
            "e2e_latency_s": self.e2e_latency_s,
            "job_time_s": self.job_time_s,
            "decode_tokens_per_s": self.decode_tokens_per_s,
            "prefill_tokens_per_s": self.prefill_tokens_per_s,
            "mbu": head.mbu,
            "mfu": head.mfu,
            "s_mbu": head.s_mbu,
            "s_mfu": head.s_mfu,
            "bottleneck": self.bottleneck,
            "activated_experts_per_layer": self.activated_experts_per_layer,
            "experts_per_layer": self.experts_per_layer,
            "batch_per_wave": self.batch_per_wave,
            "waves": self.memory.waves,
            "memory": self.memory.to_dict(),
            "prefill": self.prefill.to_dict(),
            "decode": self.decode.to_dict(),
            "deployment": self.deployment,
            "assumptions": self.assumptions,
        }


def _engine_basis(rs: ResolvedScenario, class_latency: dict[str, Any] | None) -> dict[str, Any]:
    """The execution costs the scenario's engine (or the device class) adds, with their sources."""
    from capsim.engine.engines import engine_profile

    named = engine_profile(rs.scenario.engine) if rs.scenario.engine else None
    out: dict[str, Any] = {"id": rs.scenario.engine, "execution": named.execution if named else "graphs"}
    profile = rs.engine  # what the resolution applied (capsim.engine.resolve decides)
    reason = rs.engine_not_applied()
    if reason is not None:
        out["not_applied"] = reason
    sources = dict(profile.sources) if profile else {}
    if "kernel_latency_s" in sources:
        out["kernel_latency_s"] = {"value": rs.rates.kernel_latency_s, "source": sources["kernel_latency_s"]}
    elif class_latency is not None:
        out["kernel_latency_s"] = class_latency
    if profile is not None and profile.releases is not None:
        out["releases"] = profile.to_dict()["releases"]
    for name in (
        "moe_host_s",
        "expert_host_s",
        "compute_fraction",
        "quantized_compute",
        "per_sequence_s",
        "kv_cache_free_fraction",
        "cpu_kernel_bw_fraction",
        "replicate_socket_share",
    ):
        if name in sources:
            out[name] = {"value": getattr(profile, name), "source": sources[name]}
    return out


def _assumptions(rs: ResolvedScenario) -> dict[str, Any]:
    eff, device, node = rs.efficiency, rs.device, rs.node
    prov = getattr(eff, "provenance", {})

    def sourced(name: str) -> dict[str, Any]:
        src = prov.get(name)
        return {
            "value": getattr(eff, name),
            "source": getattr(src, "source", ""),
            "soft": bool(getattr(src, "soft", False)),
        }

    model = rs.model
    return {
        "model": {"id": model.id, "source": model.source},
        "hardware": {"id": device.id, "node": node.id, "source": device.source},
        "tensor_parallel": rs.sharding.tp,
        "layout": rs.layout.to_dict(),
        "weight_precision": {g: p.name for g, p in rs.sharding.weight_precision.items()},
        # the GEMM rate each group runs at: its own format where the device has one, else dequantised to bf16
        "compute_precision": {
            g: compute_key(p, frozenset(rs.rates.peak_flops)) for g, p in rs.sharding.weight_precision.items()
        },
        "kv_precision": rs.sharding.kv_precision.name,
        "routing": rs.router.describe() if rs.router else "dense model: no routing",
        "efficiency": {
            name: sourced(name)
            for name in (
                "memory_bw_fraction",
                "compute_fraction",
                "step_overhead_s",
                "per_layer_overhead_s",
                "allreduce_latency_s",
                "allreduce_base_latency_s",
                "gpu_memory_utilization",
            )
        },
        "engine": _engine_basis(rs, sourced("kernel_latency_s") if "kernel_latency_s" in prov else None),
        "peaks": {
            "memory_bandwidth_gb_s": device.memory_bandwidth_gb_s,
            "peak_tflops_dense": dict(device.peak_tflops_dense),
            "link_gb_s_per_dir": rs.rates.link_bandwidth / 1e9,
        },
        "scope": (
            "batch-synchronous: all sequences prefill together (chunked), then decode in lock-step; "
            "TTFT is the whole batch's prefill; activations bf16; MBU/MFU use vendor peaks"
        ),
    }


def build_prediction(
    rs: ResolvedScenario,
    memory: MemoryPlan,
    wave_batch: int,
    prefill: PassTimes,
    decode: PassTimes,
    deployment: DeploymentReport | None = None,
    *,
    replicas: int = 1,
    total_batch: int | None = None,
) -> Prediction:
    """Assemble the :class:`Prediction` of one wave of one replica and scale job time by the number of waves.

    Utilisation is per replica (its tp x pp devices); throughputs count all ``replicas`` data-parallel copies."""
    devices = rs.layout.devices_per_replica
    bw_peak = rs.rates.memory_bandwidth
    pre = phase_metrics(prefill, devices, bw_peak)
    dec = phase_metrics(decode, devices, bw_peak)
    sc = rs.scenario
    ttft = pre.time_s
    tpot = dec.time_s / dec.passes if dec.passes else None
    e2e = ttft + dec.time_s
    activated = (
        decode.activated_by_layer().mean(axis=1)
        if decode.activated_experts.size
        else prefill.activated_by_layer().mean(axis=1)
        if prefill.activated_experts.size
        else np.zeros(0)
    )
    scenario = {
        "model": rs.model.id,
        "hardware": sc.hardware,
        "gpus": devices * replicas,
        "batch": sc.batch if total_batch is None else total_batch,
        "prompt_len": sc.prompt_len,
        "gen_len": sc.gen_len,
        "weight_dtype": sc.weight_dtype or "native",
        "kv_dtype": sc.kv_dtype,
        "routing": sc.routing,
        "prefill_chunk_tokens": sc.prefill_chunk_tokens,
        "mode": rs.deployment.mode,
    }
    return Prediction(
        scenario=scenario,
        ttft_s=ttft,
        tpot_s=tpot,
        e2e_latency_s=e2e,
        job_time_s=e2e * memory.waves,
        decode_tokens_per_s=replicas * wave_batch / tpot if tpot else None,
        prefill_tokens_per_s=replicas * wave_batch * sc.prompt_len / ttft,
        prefill=pre,
        decode=dec,
        activated_experts_per_layer=[float(a) for a in activated],
        experts_per_layer=rs.model.moe.num_experts if rs.model.moe else 0,
        memory=memory,
        batch_per_wave=wave_batch,
        decode_step_times_s=decode.time,
        assumptions=_assumptions(rs),
        deployment=deployment or {"mode": rs.deployment.mode},
    )
