"""Fleet sizing with the serving simulation: for each candidate replica (hardware, devices per replica), the
fewest replicas that meet every SLO at the 99th percentile under the offered load, and what that fleet costs
per hour at the database's cloud prices (capsim.economics.cost.cloud_rate). The cheapest fleet answers "what should I
buy to serve 20 req/s with p99 TPOT ≤ 50 ms".

The search doubles the replica count until the SLOs hold, then bisects; it assumes more replicas never make
a percentile worse (round-robin dispatch of the same requests over more replicas lowers every replica's load).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from capsim.economics.cost import cloud_rate
from capsim.economics.inputs import CostInputs
from capsim.engine.scenario import Scenario
from capsim.errors import DoesNotFitError, ScenarioError
from capsim.hardware.db import HardwareDB
from capsim.serving.metrics import ServeResult
from capsim.serving.run import build_replica, serve
from capsim.serving.scheduler import SchedulerConfig
from capsim.serving.workload import Workload

MAX_REPLICAS = 512


@dataclass
class FleetOption:
    hardware: str
    gpus_per_replica: int
    replicas: int | None
    usd_per_hour: float | None
    price_source: str
    result: ServeResult | None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        r = self.result
        return {
            "hardware": self.hardware,
            "gpus_per_replica": self.gpus_per_replica,
            "replicas": self.replicas,
            "devices": None if self.replicas is None else self.replicas * self.gpus_per_replica,
            "usd_per_hour": self.usd_per_hour,
            "price_source": self.price_source,
            "note": self.note,
            "p99_ttft_ms": None
            if r is None or r.latency["ttft"]["p99"] is None
            else 1e3 * r.latency["ttft"]["p99"],
            "p99_tpot_ms": None
            if r is None or r.latency["tpot"]["p99"] is None
            else 1e3 * r.latency["tpot"]["p99"],
            "p99_e2el_ms": None
            if r is None or r.latency["e2el"]["p99"] is None
            else 1e3 * r.latency["e2el"]["p99"],
        }


def parse_candidates(text: str) -> list[tuple[str, int]]:
    """``"h100-sxm:1,8;mi300x:8"`` → [("h100-sxm", 1), ("h100-sxm", 8), ("mi300x", 8)]."""
    out: list[tuple[str, int]] = []
    for part in text.split(";"):
        hw, sep, counts = part.strip().partition(":")
        if not hw or not sep:
            raise ScenarioError(
                f"bad --fleet-candidates entry {part.strip()!r}; write HARDWARE:GPUS[,GPUS] "
                "entries separated by ';', e.g. h100-sxm:1,8;mi300x:8"
            )
        for c in counts.split(","):
            try:
                n = int(c)
            except ValueError:
                n = 0
            if n < 1:
                raise ScenarioError(f"bad device count {c!r} in --fleet-candidates entry {part.strip()!r}")
            out.append((hw.strip(), n))
    if not out:
        raise ScenarioError("--fleet-candidates is empty; e.g. h100-sxm:1,8;mi300x:8")
    return out


def _meets(res: ServeResult, slo: dict[str, float]) -> bool:
    return all((p99 := res.latency[k]["p99"]) is not None and p99 <= v for k, v in slo.items())


def size_fleet(
    base: Scenario,
    candidates: list[tuple[str, int]],
    sched_for: Any,
    work: Workload,
    slo: dict[str, float],
    hardware_db: HardwareDB | None = None,
    cost_inputs: CostInputs | None = None,
) -> list[FleetOption]:
    """Fewest replicas per candidate meeting ``slo`` (p99 of each bound) on ``work``; options sorted by USD per
    hour (unpriced ones last, by device count). ``sched_for(scenario) -> SchedulerConfig`` gives each
    candidate's scheduler limits (the preset on that device)."""
    if not slo:
        raise ScenarioError("fleet sizing needs --slo (e.g. --slo tpot=50ms): the bound a fleet must meet")
    from capsim.hardware.db import load_hardware_db

    db = hardware_db if hardware_db is not None else load_hardware_db()
    inputs = cost_inputs or CostInputs()
    options: list[FleetOption] = []
    for hw, gpus in candidates:
        scenario = replace(base, hardware=hw, gpus=gpus)
        sched: SchedulerConfig = sched_for(scenario)
        try:
            rep = build_replica(scenario, sched, db)
        except DoesNotFitError as exc:
            options.append(FleetOption(hw, gpus, None, None, "", None, str(exc)))
            continue

        def run(
            n: int, scenario: Scenario = scenario, sched: SchedulerConfig = sched, rep: Any = rep
        ) -> ServeResult:
            return serve(
                scenario, sched, work, replicas=n, slo=slo, replica=rep, hardware_db=db, timeline=False
            )

        lo, hi, best = 0, 1, None
        while hi <= MAX_REPLICAS:
            res = run(hi)
            if _meets(res, slo):
                best = (hi, res)
                break
            lo, hi = hi, hi * 2
        if best is None:
            options.append(
                FleetOption(
                    hw,
                    gpus,
                    None,
                    None,
                    "",
                    None,
                    f"no fleet of up to {MAX_REPLICAS} replicas meets the SLOs",
                )
            )
            continue
        while best[0] - lo > 1:  # the SLOs fail at lo replicas and hold at best[0]
            mid = (lo + best[0]) // 2
            res = run(mid)
            if _meets(res, slo):
                best = (mid, res)
            else:
                lo = mid
        n, res = best
        price, source = cloud_rate(hw, gpus, db, inputs)
        options.append(FleetOption(hw, gpus, n, None if price is None else price * n, source, res))
    options.sort(
        key=lambda o: (
            o.replicas is None,
            o.usd_per_hour is None,
            o.usd_per_hour or 0.0,
            (o.replicas or 0) * o.gpus_per_replica,
        )
    )
    return options
