"""The library entry point behind ``capsim serve``: options -> scheduler, workload, replicas -> a result or a
latency-throughput curve; and the figures."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from capsim.engine.engines import engine_profile
from capsim.engine.scenario import Scenario
from capsim.errors import ScenarioError
from capsim.hardware.db import HardwareDB
from capsim.serving.metrics import ServeResult, engine_summary, parse_slo
from capsim.serving.presets import get_preset
from capsim.serving.replica import Disaggregation, ReplicaModel
from capsim.serving.run import build_replica, serve
from capsim.serving.scheduler import SchedulerConfig
from capsim.serving.workload import Workload, build_workload, load_request_file, parse_length

ENGINE_NONE = "none"
"""``--engine none``: no engine profile, the device class's values (hardware_db/efficiency.toml). ``capsim serve``
only: without ``--engine`` the ``--system`` preset's engine applies, so this is how to ask for none."""


@dataclass(frozen=True)
class ServeRequest:
    """Every ``capsim serve`` option (None = the preset's or the default). ``scenario.engine`` None means the
    ``system`` preset's engine (:func:`engine_for`)."""

    scenario: Scenario = field(default_factory=Scenario)
    system: str = "vllm-like"
    max_num_seqs: int | None = None
    max_batched_tokens: int | None = None
    chunked_prefill: bool | None = None
    block_size: int | None = None
    rate: str | float | None = None
    burstiness: float = 1.0
    concurrency: int | None = None
    offline: bool = False
    num_prompts: int = 1000
    duration: str | None = None
    prompt_len: str = "512"
    output_len: str = "128"
    dataset: str | None = None
    requests: Path | None = None
    replicas: int = 1
    prefill_replicas: int | None = None
    decode_replicas: int | None = None
    kv_link: str | None = None
    slo: str | None = None
    seed: int = 0
    fleet_candidates: str | None = None


_RANGE = re.compile(r"^\s*([0-9.eE+]+)\s*:\s*([0-9.eE+]+)\s*:\s*([x+*])\s*([0-9.eE+]+)\s*$")


def parse_rates(text: str | float | None) -> list[float] | None:
    """``"4"`` → [4.0]; ``"1,2,8"``; ``"1:32:x2"`` → [1, 2, 4, 8, 16, 32]; ``"2:10:+2"``. None → None."""
    if text is None:
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        values = [float(text)]
    else:
        s = str(text).strip()
        m = _RANGE.match(s)
        try:
            if m:
                lo, hi, op, step = float(m.group(1)), float(m.group(2)), m.group(3), float(m.group(4))
                if (op in "x*" and step <= 1) or (op == "+" and step <= 0) or hi < lo:
                    raise ValueError
                values, v = [], lo
                while v <= hi * (1 + 1e-12) and len(values) < 1000:
                    values.append(v)
                    v = v * step if op in "x*" else v + step
            else:
                values = [float(p) for p in s.split(",") if p.strip()]
        except ValueError:
            raise ScenarioError(
                f"cannot read --rate {text!r}; write 4, 1,2,8 or a range 1:32:x2 (or 2:20:+2)"
            ) from None
    if not values or any(not (v > 0 and math.isfinite(v)) for v in values):
        raise ScenarioError(f"--rate must be a positive number of requests/s, got {text!r}")
    return values


def engine_for(req: ServeRequest) -> tuple[Scenario, str]:
    """The scenario every step is costed on, and what chose its engine profile.

    An engine the scenario names wins (``none``: no profile, the device class's values); otherwise the ``system``
    preset's engine applies (vllm-like: ``vllm``, the newest vLLM release with data; sglang-like: ``sglang``;
    trtllm-like: ``tensorrt-llm``), so the scheduler and the kernel costs are the same engine's. Unknown names
    raise :class:`ScenarioError` with the closest profile ids (capsim.engine.engines.engine_profile, as
    ``capsim predict --engine``)."""
    scenario = req.scenario
    named = scenario.engine
    if named is not None and named.strip().lower() == ENGINE_NONE:
        return replace(scenario, engine=None), "--engine none"
    if named is not None:
        engine_profile(named)  # fails early, with predict's message
        return scenario, f"--engine {named}"
    preset = get_preset(req.system)
    return replace(scenario, engine=preset.engine), f"--system {preset.name}"


def scheduler_for(req: ServeRequest, scenario: Scenario, hardware_db: HardwareDB | None) -> SchedulerConfig:
    """The preset's limits on the scenario's device, with the options the user gave on top."""
    from capsim.hardware.db import load_hardware_db
    from capsim.units import GB

    preset = get_preset(req.system)
    db = hardware_db if hardware_db is not None else load_hardware_db()
    scenario.validate()  # bounds first: --gpus 2147483648 would otherwise build a node of that many devices
    node = db.node(scenario.hardware, scenario.gpus)
    device = getattr(node, "accelerator", None)
    memory = float(device.memory_capacity_gb) * GB if device is not None else 0.0
    base = preset.config(memory, device_id=getattr(device, "id", ""))
    return SchedulerConfig(
        max_num_seqs=req.max_num_seqs if req.max_num_seqs is not None else base.max_num_seqs,
        max_batched_tokens=req.max_batched_tokens
        if req.max_batched_tokens is not None
        else base.max_batched_tokens,
        chunked_prefill=req.chunked_prefill if req.chunked_prefill is not None else base.chunked_prefill,
        block_size=req.block_size if req.block_size is not None else base.block_size,
    )


def workload_for(req: ServeRequest, rate: float | None) -> Workload:
    from capsim.economics.plan import parse_duration

    if req.offline and rate is not None:
        raise ScenarioError("--offline sends every request at t = 0; drop --rate")
    if req.requests is not None:
        work = load_request_file(req.requests, rate_given=rate is not None or req.offline)
        if rate is not None or req.offline:
            from capsim.serving.workload import send_times

            send = send_times(work.size, rate, req.burstiness, np.random.default_rng(req.seed))
            work = replace(work, send_s=send)
        return replace(work, concurrency=req.concurrency)
    if req.dataset is not None:
        from capsim.serving.datasets import get_dataset

        profile = get_dataset(req.dataset)
        prompt, output = profile.prompt, profile.output
    else:
        prompt, output = (
            parse_length(req.prompt_len, "--prompt-len"),
            parse_length(req.output_len, "--output-len"),
        )
    if rate is None and not req.offline and req.concurrency is None:
        raise ScenarioError(
            "say how requests arrive: --rate R (req/s), --concurrency N (closed loop) or --offline"
        )
    duration = parse_duration(req.duration) if req.duration is not None else None
    work = build_workload(
        num_prompts=req.num_prompts,
        prompt=prompt,
        output=output,
        rate=rate,
        burstiness=req.burstiness,
        concurrency=req.concurrency,
        seed=req.seed,
        duration_s=duration,
    )
    if req.dataset is not None:
        work = replace(work, description=f"{work.description} (dataset profile {req.dataset})")
    return work


@dataclass
class Curve:
    """A latency-throughput curve: one row per rate."""

    rows: list[dict[str, Any]]
    slo: dict[str, float]
    best_rate: float | None
    engine: dict[str, Any] = field(default_factory=dict)
    """The engine profile the steps used (capsim.serving.metrics.engine_summary, with ``selected_by``)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "rates": self.rows,
            "slo_ms": {k: v * 1e3 for k, v in self.slo.items()},
            "highest_rate_meeting_slo": self.best_rate,
            "engine": self.engine,
        }


def meets_slo(result: ServeResult, slo: dict[str, float]) -> bool:
    """Every SLO bound holds at the 99th percentile of its latency."""
    for key, bound in slo.items():
        p99 = result.latency[key]["p99"]
        if p99 is not None and p99 > bound:
            return False
    return True


def run(req: ServeRequest, *, hardware_db: HardwareDB | None = None) -> ServeResult | Curve | FleetPlan:
    """Simulate ``req``: one result for a single rate (or none), a :class:`Curve` for several rates."""
    slo = parse_slo(req.slo)
    rates = parse_rates(req.rate)
    scenario, engine_by = engine_for(req)
    if req.fleet_candidates is not None:
        return _fleet(req, scenario, engine_by, slo, rates, hardware_db)
    sched = scheduler_for(req, scenario, hardware_db)
    replica = build_replica(scenario, sched, hardware_db)
    engine = {**engine_summary(replica.rs), "selected_by": engine_by}
    if req.system.strip().lower() == "sglang-like" and req.max_num_seqs is None:
        # SGLang caps running requests at half the KV pool's tokens (presets.py): known only after the plan
        kv_tokens = replica.kv_blocks * sched.block_size
        sched = replace(sched, max_num_seqs=max(1, min(kv_tokens // 2, sched.max_num_seqs)))
    dis = None
    if req.prefill_replicas is not None or req.decode_replicas is not None:
        if req.prefill_replicas is None or req.decode_replicas is None:
            raise ScenarioError("disaggregated serving needs both --prefill-replicas and --decode-replicas")
        if req.replicas != 1:
            raise ScenarioError("give either --replicas or --prefill-replicas/--decode-replicas, not both")
        dis = Disaggregation(req.prefill_replicas, req.decode_replicas, req.kv_link)
    elif req.kv_link is not None:
        raise ScenarioError(
            "--kv-link applies to disaggregated serving; add --prefill-replicas and --decode-replicas"
        )
    if rates is None or len(rates) == 1:
        work = workload_for(req, None if rates is None else rates[0])
        result = serve(
            scenario,
            sched,
            work,
            replicas=req.replicas,
            disaggregation=dis,
            slo=slo,
            replica=replica,
            hardware_db=hardware_db,
        )
        result.config["engine"] = engine
        return result
    return _curve(req, scenario, sched, replica, rates, dis, slo, hardware_db, engine)


@dataclass
class FleetPlan:
    """Fleet sizing: the candidates, cheapest first (capsim.serving.fleet)."""

    options: list[Any]
    slo: dict[str, float]
    rate: float | None
    workload: str
    engine: str | None = None
    """Engine profile id every candidate's steps used (None: the device class's values)."""
    engine_selected_by: str = ""

    @property
    def best(self) -> Any:
        return self.options[0] if self.options and self.options[0].replicas is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "slo_ms": {k: v * 1e3 for k, v in self.slo.items()},
            "workload": self.workload,
            "engine": {"id": self.engine, "selected_by": self.engine_selected_by},
            "options": [o.to_dict() for o in self.options],
            "cheapest": None if self.best is None else self.best.to_dict(),
        }


def _fleet(
    req: ServeRequest,
    scenario: Scenario,
    engine_by: str,
    slo: dict[str, float],
    rates: list[float] | None,
    hardware_db: HardwareDB | None,
) -> FleetPlan:
    from capsim.serving.fleet import parse_candidates, size_fleet

    if rates is not None and len(rates) > 1:
        raise ScenarioError("fleet sizing takes one --rate (the load the fleet must serve)")
    if req.replicas != 1 or req.prefill_replicas is not None or req.decode_replicas is not None:
        raise ScenarioError(
            "fleet sizing chooses the replica count; drop --replicas/--prefill-replicas/--decode-replicas"
        )
    candidates = parse_candidates(req.fleet_candidates or "")
    work = workload_for(req, None if rates is None else rates[0])

    def sched_for(scenario: Scenario) -> SchedulerConfig:
        return scheduler_for(req, scenario, hardware_db)

    options = size_fleet(scenario, candidates, sched_for, work, slo, hardware_db)
    profile = engine_profile(scenario.engine)
    return FleetPlan(
        options,
        slo,
        None if rates is None else rates[0],
        work.description,
        None if profile is None else profile.id,
        engine_by,
    )


def _curve(
    req: ServeRequest,
    scenario: Scenario,
    sched: SchedulerConfig,
    replica: ReplicaModel,
    rates: list[float],
    dis: Disaggregation | None,
    slo: dict[str, float],
    hardware_db: HardwareDB | None,
    engine: dict[str, Any],
) -> Curve:
    rows = []
    best = None
    for rate in rates:
        res = serve(
            scenario,
            sched,
            workload_for(req, rate),
            replicas=req.replicas,
            disaggregation=dis,
            slo=slo,
            replica=replica,
            hardware_db=hardware_db,
            timeline=False,
        )
        ok = meets_slo(res, slo) if slo else None
        if ok:
            best = rate if best is None else max(best, rate)
        lat = res.latency
        rows.append(
            {
                "rate": rate,
                "request_throughput": res.request_throughput,
                "output_throughput": res.output_throughput,
                "mean_ttft_s": lat["ttft"]["mean"],
                "p99_ttft_s": lat["ttft"]["p99"],
                "mean_tpot_s": lat["tpot"]["mean"],
                "p99_tpot_s": lat["tpot"]["p99"],
                "mean_itl_s": lat["itl"]["mean"],
                "p99_itl_s": lat["itl"]["p99"],
                "mean_e2el_s": lat["e2el"]["mean"],
                "p99_e2el_s": lat["e2el"]["p99"],
                "goodput": res.goodput,
                "meets_slo": ok,
                "preemptions": res.preemptions,
            }
        )
    return Curve(rows, slo, best, engine)


def _save(fig: Any, path: Path) -> list[Path]:
    base = path.with_suffix("") if path.suffix.lower() in (".png", ".svg") else path
    base.parent.mkdir(parents=True, exist_ok=True)
    out = [base.with_suffix(".png"), base.with_suffix(".svg")]
    for p in out:
        fig.savefig(p, dpi=120, bbox_inches="tight")
    return out


def timeline_figure(result: ServeResult, path: Path) -> list[Path]:
    """Running batch, queue, KV use and per-request TTFT/TPOT over time (first replica), as PNG and SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tl = result.timeline
    fig, axes = plt.subplots(4, 1, figsize=(9, 9), sharex=True)
    t = tl.get("t", np.zeros(0))
    axes[0].step(t, tl.get("running", np.zeros(0)), where="post", label="running")
    axes[0].step(t, tl.get("waiting", np.zeros(0)), where="post", label="waiting")
    axes[0].set_ylabel("requests")
    axes[0].legend(loc="upper right")
    axes[1].step(t, 100 * tl.get("kv_used", np.zeros(0)), where="post", color="tab:purple")
    axes[1].set_ylabel("KV cache used %")
    axes[1].set_ylim(0, 105)
    pr = result.per_request
    axes[2].scatter(pr["arrival_s"], 1e3 * pr["ttft_s"], s=3)
    axes[2].set_ylabel("TTFT ms")
    out = pr["output_tokens"] > 1
    tpot = (pr["e2el_s"][out] - pr["ttft_s"][out]) / (pr["output_tokens"][out] - 1)
    axes[3].scatter(pr["first_token_s"][out], 1e3 * tpot, s=3, color="tab:green")
    axes[3].set_ylabel("TPOT ms")
    axes[3].set_xlabel("time (s)")
    cfg = result.config
    fig.suptitle(
        f"capsim serve: {cfg['model']} on {cfg['gpus_per_replica']}x {cfg['hardware']} — {cfg['workload']}",
        fontsize=9,
    )
    paths = _save(fig, path)
    plt.close(fig)
    return paths


def curve_figure(curve: Curve, path: Path) -> list[Path]:
    """Latency against achieved throughput, one point per rate, as PNG and SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["request_throughput"] for r in curve.rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("mean_ttft_s", "mean TTFT"), ("p99_ttft_s", "p99 TTFT")):
        axes[0].plot(x, [1e3 * (r[key] or 0) for r in curve.rows], marker="o", label=label)
    for key, label in (("mean_tpot_s", "mean TPOT"), ("p99_tpot_s", "p99 TPOT"), ("p99_itl_s", "p99 ITL")):
        axes[1].plot(x, [1e3 * (r[key] or 0) for r in curve.rows], marker="o", label=label)
    for ax, what in zip(axes, ("TTFT", "TPOT / ITL")):
        ax.set_xlabel("achieved request throughput (req/s)")
        ax.set_ylabel(f"{what} (ms)")
        ax.legend()
    for key, ax in (("ttft", axes[0]), ("tpot", axes[1])):
        if key in curve.slo:
            ax.axhline(1e3 * curve.slo[key], color="red", linestyle="--", linewidth=1)
    paths = _save(fig, path)
    plt.close(fig)
    return paths
