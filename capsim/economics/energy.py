"""Power and energy of a deployment while it serves: watts per part, joules per token, energy cost, CO2.

Power model (docs/cost.md §2). Every part draws its idle power plus a dynamic share that grows linearly with
how busy the part is, up to its TDP:

    P_part(a) = count × (P_idle + (P_TDP − P_idle) · a),      a ∈ [0, 1]

- ``P_TDP`` is the database's ``tdp_w`` (SSD: ``power_active_w``), sourced per entry.
- ``P_idle`` is the entry's sourced ``idle_w`` where the database has one, else ``idle_power_fraction × P_TDP``
  (a modelling assumption, marked as such in the output).
- The activity ``a`` of each part comes from the prediction's time split of the phase (prefill or decode):
  an accelerator's is the share of the phase time in which a kernel runs (compute, memory or interconnect
  bound; nvidia-smi's ``utilization.gpu`` has the same definition), a CPU's is the share in which it
  computes experts (cpu-experts and cpu modes; 0 when it only hosts a GPU), an SSD's the share spent
  fetching experts from it. Accelerators a system holds but the scenario does not use idle.
- DRAM has no power figure in the database and is listed as missing (the draw is then a lower bound); a
  system's ``platform.power_w`` (fans, NICs, board) is counted at constant power where it is given.

Energy per token of a phase = P_phase / tokens per second of that phase (J/token); energy cost per million
tokens = J/token × 1e6 / 3.6e6 J/kWh × PUE × $/kWh; CO2 per token = J/token / 3.6e6 × PUE × g/kWh.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from capsim import units

if TYPE_CHECKING:
    from capsim.engine.metrics import PhaseMetrics, Prediction

ROLES: tuple[str, ...] = ("accelerator", "accelerator-unused", "cpu", "ssd", "dram", "platform")
"""What a part does in the deployment; each role takes one activity per phase."""

KERNEL_RESOURCES: tuple[str, ...] = ("compute", "memory", "interconnect")
"""Time-split resources during which an accelerator runs kernels (the rest: overheads, CPU, host link)."""


@dataclass(frozen=True)
class PartPower:
    """Power of ``count`` identical parts: TDP and idle watts each, with provenance.

    ``watts_each`` is the TDP (None when unknown, ``missing`` says why); ``idle_w`` is the sourced idle
    draw, or None when the idle draw is taken as ``idle_power_fraction × TDP`` (an assumption)."""

    part: str
    kind: str
    count: int
    watts_each: float | None
    source: str = ""
    soft: bool = False
    missing: str = ""
    idle_w: float | None = None
    idle_source: str = ""
    role: str = ""

    def idle_each(self, idle_fraction: float) -> float | None:
        """Idle watts of one part: the sourced ``idle_w``, else ``idle_fraction × TDP``."""
        if self.watts_each is None:
            return None
        return self.idle_w if self.idle_w is not None else idle_fraction * self.watts_each

    def draw_w(self, activity: float, idle_fraction: float) -> float | None:
        """count × (P_idle + (P_TDP − P_idle)·a) with ``a`` clipped to [0, 1]; None when the TDP is unknown."""
        idle = self.idle_each(idle_fraction)
        if idle is None or self.watts_each is None:
            return None
        a = min(max(activity, 0.0), 1.0)
        return self.count * (idle + (self.watts_each - idle) * a)

    def to_dict(self) -> dict[str, Any]:
        return {
            "part": self.part,
            "kind": self.kind,
            "role": self.role or self.kind,
            "count": self.count,
            "watts_each": self.watts_each,
            "idle_w_each": self.idle_w,
            "idle_basis": self.idle_source
            or ("idle_power_fraction x TDP (assumption)" if self.watts_each else ""),
            "source": self.source,
            "soft": self.soft,
            "missing": self.missing,
        }


def activities(phase: PhaseMetrics, mode: str, expert_tier: str = "dram") -> dict[str, float]:
    """Activity of each role during ``phase``, from its time split (see the module docstring)."""
    total = phase.time_s
    if total <= 0.0:
        return dict.fromkeys(ROLES, 0.0)
    by = phase.time_by_resource_s
    kernels = sum(by.get(r, 0.0) for r in KERNEL_RESOURCES) / total
    cpu = by.get("cpu", 0.0) / total
    if mode == "cpu":  # CPU-only: the CPU is the device, every kernel runs on it
        cpu = max(cpu, kernels)
    ssd = by.get("link", 0.0) / total if expert_tier == "ssd" else 0.0
    return {
        "accelerator": kernels,
        "accelerator-unused": 0.0,
        "cpu": cpu,
        "ssd": ssd,
        "dram": 0.0,
        "platform": 1.0,
    }


@dataclass(frozen=True)
class PhaseEnergy:
    """Draw and energy per token of one phase at its modelled activity."""

    phase: str
    watts: float
    tokens_per_s: float | None
    activity: Mapping[str, float]
    is_lower_bound: bool

    @property
    def j_per_token(self) -> float | None:
        return None if not self.tokens_per_s else self.watts / self.tokens_per_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "watts": self.watts,
            "tokens_per_s": self.tokens_per_s,
            "j_per_token": self.j_per_token,
            "activity": dict(self.activity),
            "is_lower_bound": self.is_lower_bound,
        }


def phase_draw_w(parts: tuple[PartPower, ...], activity: Mapping[str, float], idle_fraction: float) -> float:
    """Σ over the parts with a known TDP of count × (P_idle + (P_TDP − P_idle)·a_role)."""
    total = 0.0
    for p in parts:
        w = p.draw_w(activity.get(p.role or p.kind, 0.0), idle_fraction)
        if w is not None:
            total += w
    return total


def idle_draw_w(parts: tuple[PartPower, ...], idle_fraction: float) -> float:
    """Σ over the parts with a known TDP of count × P_idle (platform power counts in full: it is always on)."""
    total = 0.0
    for p in parts:
        if (p.role or p.kind) == "platform" and p.watts_each is not None:
            total += p.count * p.watts_each
            continue
        idle = p.idle_each(idle_fraction)
        if idle is not None:
            total += p.count * idle
    return total


@dataclass(frozen=True)
class EnergyReport:
    """Energy of a prediction: each phase's draw and J/token, energy $ per Mtok and optional gCO2/token."""

    prefill: PhaseEnergy
    decode: PhaseEnergy
    idle_w: float
    pue: float
    electricity_usd_per_kwh: float
    grid_gco2_per_kwh: float | None = None

    def usd_per_mtok(self, phase: PhaseEnergy) -> float | None:
        """Energy cost per million tokens of ``phase``: J/token × 1e6 / 3.6e6 × PUE × $/kWh."""
        j = phase.j_per_token
        return None if j is None else j * 1e6 / units.KWH * self.pue * self.electricity_usd_per_kwh

    def gco2_per_token(self, phase: PhaseEnergy) -> float | None:
        """Grams of CO2 per token of ``phase`` at the grid intensity: J/token / 3.6e6 × PUE × g/kWh."""
        j = phase.j_per_token
        if j is None or self.grid_gco2_per_kwh is None:
            return None
        return j / units.KWH * self.pue * self.grid_gco2_per_kwh

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "idle_w": self.idle_w,
            "pue": self.pue,
            "electricity_usd_per_kwh": self.electricity_usd_per_kwh,
            "grid_gco2_per_kwh": self.grid_gco2_per_kwh,
        }
        for ph in (self.prefill, self.decode):
            d = ph.to_dict()
            d["energy_usd_per_mtok"] = self.usd_per_mtok(ph)
            d["gco2_per_token"] = self.gco2_per_token(ph)
            out[ph.phase] = d
        out["j_per_output_token"] = self.decode.j_per_token
        out["j_per_input_token"] = self.prefill.j_per_token
        return out


def energy_report(
    parts: tuple[PartPower, ...],
    prediction: Prediction,
    *,
    idle_fraction: float,
    pue: float,
    electricity_usd_per_kwh: float,
    grid_gco2_per_kwh: float | None = None,
    lower_bound: bool = False,
) -> EnergyReport:
    """The energy of ``prediction`` on ``parts``: each phase's draw at its activities and its J/token."""
    mode = str(prediction.scenario.get("mode", "gpu"))
    tier = str(prediction.deployment.get("expert_tier", "dram")) if prediction.deployment else "dram"

    def phase(name: str, metrics: PhaseMetrics, tps: float | None) -> PhaseEnergy:
        act = activities(metrics, mode, tier)
        return PhaseEnergy(name, phase_draw_w(parts, act, idle_fraction), tps, act, lower_bound)

    return EnergyReport(
        prefill=phase("prefill", prediction.prefill, prediction.prefill_tokens_per_s),
        decode=phase("decode", prediction.decode, prediction.decode_tokens_per_s),
        idle_w=idle_draw_w(parts, idle_fraction),
        pue=pue,
        electricity_usd_per_kwh=electricity_usd_per_kwh,
        grid_gco2_per_kwh=grid_gco2_per_kwh,
    )
