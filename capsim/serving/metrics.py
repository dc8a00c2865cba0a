"""Serving metrics with ``vllm bench serve``'s names and definitions (vllm/benchmarks/serve.py,
``calculate_metrics``):

- TTFT = first token time − arrival; E2EL = completion − arrival (per request);
- TPOT = (E2EL − TTFT) / (output tokens − 1), over requests with more than one output token;
- ITL = every gap between consecutive tokens of a request, pooled over all requests;
- request / output / total token throughput = completed requests, output tokens, prompt + output tokens over
  the benchmark duration (first send to last completion);
- goodput = requests meeting every SLO (TTFT, TPOT, E2EL bounds) per second of that duration.
Percentiles are numpy's linear interpolation (as vLLM's ``np.percentile``). S-MBU and S-MFU are
time-weighted over the steps the replicas ran (busy time; MoE-CAP, docs/metrics.md): Σ bytes / (Σ t · N ·
BW_peak) and Σ FLOPs / (Σ t · N · F_peak), with only the activated experts counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from capsim.errors import ScenarioError

if TYPE_CHECKING:
    from capsim.engine.resolved import ResolvedScenario
    from capsim.serving.replica import Disaggregation, ReplicaModel
    from capsim.serving.scheduler import ReplicaRun, SchedulerConfig
    from capsim.serving.workload import Workload

PERCENTILES = (50.0, 90.0, 99.0)
LATENCIES = ("ttft", "tpot", "itl", "e2el")
SLO_KEYS = ("ttft", "tpot", "e2el")


def parse_slo(text: str | None) -> dict[str, float]:
    """``"ttft=200ms,tpot=50ms"`` → {"ttft": 0.2, "tpot": 0.05} (seconds; keys ttft, tpot, e2el)."""
    from capsim.economics.plan import parse_duration

    if text is None or not text.strip():
        return {}
    out: dict[str, float] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in SLO_KEYS:
            raise ScenarioError(
                f"bad --slo clause {part.strip()!r}; write e.g. --slo ttft=200ms,tpot=50ms "
                f"(keys: {', '.join(SLO_KEYS)})"
            )
        out[key] = parse_duration(value.strip())
    return out


def _stats(values: np.ndarray) -> dict[str, float | None]:
    if values.size == 0:
        return {"mean": None, "median": None, "std": None, **{f"p{p:g}": None for p in PERCENTILES}}
    pct = np.percentile(values, PERCENTILES)
    return {
        "mean": float(values.mean()),
        "median": float(np.median(values)),
        "std": float(values.std()),
        **{f"p{p:g}": float(v) for p, v in zip(PERCENTILES, pct)},
    }


@dataclass
class ServeResult:
    """Everything ``capsim serve`` reports; latencies in seconds, throughputs per second."""

    completed: int
    duration_s: float
    request_throughput: float
    output_throughput: float
    total_token_throughput: float
    latency: dict[str, dict[str, float | None]]
    goodput: float | None
    slo: dict[str, float]
    s_mbu: float
    s_mfu: float
    mbu: float
    mfu: float
    busy_fraction: float
    mean_in_system: float
    steps: int
    preemptions: int
    kv_blocks: int
    block_size: int
    max_kv_use: float
    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    per_request: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    timeline: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def metric(self, name: str) -> float | None:
        """``"mean_tpot"``, ``"p99_ttft"``, ``"median_e2el"``… in seconds."""
        stat, _, lat = name.partition("_")
        return self.latency[lat][stat]

    def to_dict(self) -> dict[str, Any]:
        """vllm bench serve's result keys (latencies in ms), plus capsim's utilisation and scheduler state."""
        out: dict[str, Any] = {
            "completed": self.completed,
            "duration": self.duration_s,
            "request_throughput": self.request_throughput,
            "output_throughput": self.output_throughput,
            "total_token_throughput": self.total_token_throughput,
            "request_goodput": self.goodput,
        }
        for lat in LATENCIES:
            for stat, v in self.latency[lat].items():
                out[f"{stat}_{lat}_ms"] = None if v is None else v * 1e3
        out.update(
            {
                "slo_ms": {k: v * 1e3 for k, v in self.slo.items()},
                "s_mbu": self.s_mbu,
                "s_mfu": self.s_mfu,
                "mbu": self.mbu,
                "mfu": self.mfu,
                "busy_fraction": self.busy_fraction,
                "mean_requests_in_system": self.mean_in_system,
                "steps": self.steps,
                "preemptions": self.preemptions,
                "kv_cache": {
                    "blocks": self.kv_blocks,
                    "block_size": self.block_size,
                    "max_use": self.max_kv_use,
                },
                "config": self.config,
                "notes": self.notes,
            }
        )
        return out


def engine_summary(rs: ResolvedScenario) -> dict[str, Any]:
    """The engine profile (capsim/engine/engines.toml) a replica's step costs used and the values it applied
    there: ``id`` None = no profile, the device class's values (hardware_db/efficiency.toml)."""
    from capsim.engine.engines import engine_profile

    profile = engine_profile(rs.scenario.engine)
    rates = rs.rates
    out: dict[str, Any] = {
        "id": None if profile is None else profile.id,
        "name": "device class defaults" if profile is None else profile.name,
        "execution": "graphs" if profile is None else profile.execution,
    }
    if profile is not None and profile.releases is not None:
        out["releases"] = profile.releases_text
    reason = rs.engine_not_applied()
    if reason is not None:
        out["not_applied"] = reason
    out["kernel_latency_s"] = rates.kernel_latency_s
    out["compute_fraction"] = rates.compute_fraction
    if rates.eager_moe_host_s is not None:
        out["moe_host_s"] = rates.eager_moe_host_s
        out["expert_host_s"] = rates.eager_expert_host_s
    return out


def summarize(
    rep: ReplicaModel,
    sched: SchedulerConfig,
    work: Workload,
    run: ReplicaRun,
    *,
    devices: int,
    replicas: int,
    slo: dict[str, float],
    disaggregation: Disaggregation | None,
    notes: list[str],
) -> ServeResult:
    """Per-request latencies, percentiles, throughputs, goodput and utilisation of a simulated run."""
    arrival, first, finish = run.arrival_s, run.first_token_s, run.finish_s
    n = work.size
    done = np.isfinite(finish)
    completed = int(done.sum())
    if completed != n:
        raise ScenarioError(
            f"{n - completed} of {n} requests did not complete; this is a capsim bug, please report it"
        )
    ttft = first - arrival
    e2el = finish - arrival
    out_tok = work.output_tokens.astype(np.float64)
    multi = out_tok > 1
    tpot = (e2el[multi] - ttft[multi]) / (out_tok[multi] - 1.0)
    itl = run.itl_samples()
    start = float(work.send_s.min()) if n else 0.0
    duration = float(finish.max()) - start
    latency = {"ttft": _stats(ttft), "tpot": _stats(tpot), "itl": _stats(itl), "e2el": _stats(e2el)}
    good: float | None = None
    if slo:
        ok = np.ones(n, dtype=bool)
        if "ttft" in slo:
            ok &= ttft <= slo["ttft"]
        if "tpot" in slo:
            tp = np.zeros(n)
            tp[multi] = tpot
            ok &= tp <= slo["tpot"]
        if "e2el" in slo:
            ok &= e2el <= slo["e2el"]
        good = float(ok.sum()) / duration
    rs = rep.rs
    bw_peak = rs.rates.memory_bandwidth
    per_replica_devices = rs.layout.devices_per_replica
    busy = run.busy_s
    bw = per_replica_devices * bw_peak * busy
    fl = per_replica_devices * rep.cost.metric_peak_flops * busy
    config = {
        "model": rs.model.id,
        "hardware": rs.scenario.hardware,
        "gpus_per_replica": per_replica_devices,
        "replicas": replicas if disaggregation is None else None,
        "disaggregation": None
        if disaggregation is None
        else {
            "prefill_replicas": disaggregation.prefill_replicas,
            "decode_replicas": disaggregation.decode_replicas,
            "link": disaggregation.link,
        },
        "devices": devices,
        "weight_dtype": rs.scenario.weight_dtype or "native",
        "kv_dtype": rs.scenario.kv_dtype,
        "routing": rs.scenario.routing,
        "scheduler": {
            "max_num_seqs": sched.max_num_seqs,
            "max_batched_tokens": sched.max_batched_tokens,
            "chunked_prefill": sched.chunked_prefill,
            "block_size": sched.block_size,
        },
        "workload": work.description,
        "kv_pool_gb_per_device": rep.kv_pool_bytes / 1e9,
        "engine": engine_summary(rs),
    }
    tl = {k: np.asarray(v) for k, v in run.timeline.items()}
    return ServeResult(
        completed=completed,
        duration_s=duration,
        request_throughput=completed / duration,
        output_throughput=float(out_tok.sum()) / duration,
        total_token_throughput=float(out_tok.sum() + work.prompt_tokens.sum()) / duration,
        latency=latency,
        goodput=good,
        slo=dict(slo),
        s_mbu=(run.weight_bytes_sparse + run.kv_read_bytes) / bw if busy > 0 else 0.0,
        s_mfu=run.flops_sparse / fl if busy > 0 else 0.0,
        mbu=(run.weight_bytes_dense + run.kv_read_bytes) / bw if busy > 0 else 0.0,
        mfu=run.flops_dense / fl if busy > 0 else 0.0,
        busy_fraction=busy / (duration * max(1, devices // per_replica_devices)),
        mean_in_system=float(e2el.sum()) / duration,
        steps=run.steps,
        preemptions=int(run.preemptions.sum()),
        kv_blocks=rep.kv_blocks,
        block_size=sched.block_size,
        max_kv_use=run.max_kv_blocks_used / rep.kv_blocks,
        config=config,
        notes=notes,
        per_request={
            "arrival_s": arrival,
            "first_token_s": first,
            "finish_s": finish,
            "ttft_s": ttft,
            "e2el_s": e2el,
            "prompt_tokens": work.prompt_tokens,
            "output_tokens": work.output_tokens,
            "preemptions": run.preemptions,
        },
        timeline=tl,
    )
