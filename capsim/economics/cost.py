"""Cost model: purchase (sum of parts), energy, cloud rental, and cost per million tokens.

Formulas (docs/cost.md has the derivation and every default's source):

- Purchase  C_buy = Σ_parts price × quantity. An accelerator id with N devices is N accelerators. A system is
  its whole-system price where the database has one, else the sum of its parts: accelerators, CPUs, DRAM at
  $/GB × capacity, SSDs at $/TB × capacity. A part without a price is listed as *missing*, never as zero, and
  the total is then a **lower bound** (shown as "≥ $X"). Without a price for the accelerators themselves there
  is no meaningful total and owned costs raise :class:`~capsim.errors.MissingValueError`.
- Power     P_busy = Σ_parts TDP × count (accelerators, CPUs, SSDs; an upper bound while serving, as MoE-CAP's
  cost code assumes); P_idle = f_idle × P_busy; averaged over the duty cycle u (``utilization``):
  P(u) = P_idle + (P_busy − P_idle) · u.
- Owned $/h of wall-clock time  = C_buy / (lifetime_years × 8760 h) + P(u) × PUE × $/kWh.
  Owned $/h of *busy* time       = that / u   (idle hours are paid for by the tokens of the busy ones).
- Rented $/h of busy time        = cloud $/h / u (an instance is paid for whether busy or not).
- Cost per million tokens: the busy rate is charged to tokens by the phase that uses the time, prefill time
  to input tokens, decode time to output tokens:
  $/Mtok_in = rate_busy / 3600 / prefill_tokens_per_s × 1e6,
  $/Mtok_out = rate_busy / 3600 / decode_tokens_per_s × 1e6.
  This is MoE-CAP's C_token = (C_hardware + C_energy·$/kWh) / (T_token·R) (paper §2.1) with the hardware
  amortised over its lifetime (the paper's form), not charged in full to every run (its code's form).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from capsim import units
from capsim.economics.energy import EnergyReport, PartPower, energy_report, idle_draw_w
from capsim.economics.inputs import SCALAR_INPUTS, CostInputs
from capsim.economics.pricing import NO_HOST_PRICE, PurchaseCost, purchase_cost
from capsim.errors import DataFileError, ScenarioError, UnknownHardwareError, read_user_toml
from capsim.units import HOURS_PER_YEAR

if TYPE_CHECKING:
    from capsim.engine.metrics import Prediction
    from capsim.engine.scenario import Scenario
    from capsim.hardware.db import HardwareDB

TOKENS_PER_MTOK = 1e6


def parse_price_assignments(items: list[str] | None, option: str) -> dict[str, float]:
    """``["h100-sxm=25000", ...]`` -> ``{"h100-sxm": 25000.0}``; ScenarioError naming the bad item."""
    out: dict[str, float] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ScenarioError(f"{option} {item!r} is not ID=PRICE; write e.g. {option} h100-sxm=25000")
        try:
            number = float(value)
        except ValueError:
            raise ScenarioError(
                f"{option} {item!r}: {value!r} is not a number; write e.g. {option} h100-sxm=25000"
            ) from None
        if not math.isfinite(number) or number <= 0:
            raise ScenarioError(f"{option} {item!r}: the price must be a positive number")
        out[key.strip()] = number
    return out


def load_cost_file(path: Path | str) -> dict[str, Any]:
    """Read a prices/cost-inputs TOML file into :meth:`CostInputs.override` keyword arguments.

    Format: top-level scalars named like the :class:`CostInputs` fields, plus optional tables
    ``[purchase_usd]`` and ``[cloud_usd_per_hour]`` mapping hardware ids to prices. Unknown keys and
    non-numbers raise DataFileError naming the field.
    """
    p = Path(path)
    raw = read_user_toml(p, "--prices")
    allowed = (*SCALAR_INPUTS, "purchase_usd", "cloud_usd_per_hour")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=2, cutoff=0.6)
            hint = f"did you mean {' or '.join(close)}?" if close else f"allowed: {', '.join(allowed)}"
            raise DataFileError(str(p), f"unknown field {key!r}; {hint}")
        if key in SCALAR_INPUTS:
            out[key] = _file_number(value, key, p)
            continue
        if not isinstance(value, dict):
            raise DataFileError(str(p), f"field {key!r} must be a table [{key}] of id = price")
        out[key] = {str(k): _file_number(v, f"{key}.{k}", p) for k, v in value.items()}
    return out


def _file_number(value: Any, name: str, path: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataFileError(str(path), f"field {name!r} must be a number, got {value!r}")
    return float(value)


def check_price_ids(inputs: CostInputs, db: HardwareDB) -> None:
    """Every id in the price overrides names a priceable database entry (UnknownHardwareError otherwise)."""
    from capsim.hardware.entries import entry_kind

    priceable = {"accelerator", "cpu", "dram", "ssd", "system"}
    for option, prices, kinds in (
        ("--price", inputs.purchase_usd, priceable),
        ("--cloud", inputs.cloud_usd_per_hour, {"accelerator", "system"}),
    ):
        for key in prices:
            if key not in db:
                valid = [i for i in db.ids() if entry_kind(db.get(i)) in kinds]
                raise UnknownHardwareError(key, valid, difflib.get_close_matches(key, valid, n=3, cutoff=0.6))
            kind = entry_kind(db.get(key))
            if kind not in kinds:
                raise ScenarioError(
                    f"{option} {key}: a {kind} entry has no price; price an {' or '.join(sorted(kinds))} id"
                )


# --------------------------------------------------------------------------------------------- purchase

# Pricing of what is bought lives in capsim.economics.pricing (imported above; PartCost, PurchaseCost and purchase_cost are
# re-exported here as the cost model's public names).

# --------------------------------------------------------------------------------------------- power


@dataclass(frozen=True)
class PowerDraw:
    """Power of the deployment's parts (:class:`capsim.economics.energy.PartPower`). ``busy_w`` sums the known TDPs (the
    upper bound MoE-CAP's cost code uses); missing parts make every sum a lower bound. ``accelerators_known``
    is False when the accelerators' TDP itself is unknown."""

    parts: tuple[PartPower, ...]

    @property
    def busy_w(self) -> float:
        return float(sum(p.watts_each * p.count for p in self.parts if p.watts_each is not None))

    @property
    def missing(self) -> tuple[PartPower, ...]:
        return tuple(p for p in self.parts if p.watts_each is None)

    @property
    def accelerators_known(self) -> bool:
        return not any(p.kind == "accelerator" and p.watts_each is None for p in self.parts)

    def idle_w(self, idle_fraction: float) -> float:
        """Σ count × P_idle (sourced idle watts, else idle_fraction × TDP) over the known parts."""
        return idle_draw_w(self.parts, idle_fraction)

    def average_w(self, utilization: float, idle_fraction: float) -> float:
        """P(u) = P_idle + (P_busy − P_idle)·u with P_busy = Σ TDP (every part flat out while busy)."""
        idle = self.idle_w(idle_fraction)
        return idle + (self.busy_w - idle) * utilization

    def to_dict(self) -> dict[str, Any]:
        return {
            "busy_w": self.busy_w,
            "is_lower_bound": bool(self.missing),
            "parts": [p.to_dict() for p in self.parts],
            "missing": [f"{p.part}: {p.missing}" for p in self.missing],
        }


def _tdp(entry: Any, kind: str, count: int, field_name: str = "tdp_w", role: str = "") -> PartPower:
    value = getattr(entry, field_name, None)
    if value is None:
        prov_value = entry.provenance.get(field_name)
        value = None if prov_value is None else prov_value.value
    prov = entry.provenance.get(field_name)
    idle = entry.provenance.get("idle_w")
    idle_w = None if idle is None else float(idle.value)
    idle_source = "" if idle is None else getattr(idle, "source", "") or entry.source
    if value is None:
        return PartPower(entry.id, kind, count, None, missing=f"no {field_name!r} in the database", role=role)
    return PartPower(
        entry.id,
        kind,
        count,
        float(value),
        getattr(prov, "source", entry.source),
        bool(getattr(prov, "soft", False)),
        idle_w=idle_w,
        idle_source=idle_source,
        role=role,
    )


def power_draw(
    hardware_id: str, devices: int, db: HardwareDB, *, used_devices: int | None = None
) -> PowerDraw:
    """Power of what is bought (see :func:`purchase_cost`): the accelerators (those beyond ``used_devices``
    idle), and for a system its CPUs, SSDs, DRAM (no power figure: missing) and platform (``platform.power_w``
    where given, else missing); an accelerator id has no host, which is listed as missing."""
    from capsim.hardware.entries import Accelerator

    entry = db.get(hardware_id)
    if isinstance(entry, Accelerator):
        return PowerDraw(
            (
                _tdp(entry, "accelerator", devices, role="accelerator"),
                PartPower("host", "platform", 1, None, missing=NO_HOST_PRICE, role="platform"),
            )
        )
    system = db.system(hardware_id)
    parts: list[PartPower] = []
    if system.accelerator is not None:
        n = system.accelerator_count
        used = n if used_devices is None else min(max(used_devices, 0), n)
        parts.append(_tdp(system.accelerator, "accelerator", used, role="accelerator"))
        if n - used:
            parts.append(_tdp(system.accelerator, "accelerator", n - used, role="accelerator-unused"))
    parts.extend(_tdp(cpu, "cpu", count, role="cpu") for cpu, count in system.cpus)
    if system.dram is not None:
        parts.append(
            PartPower(
                system.dram.dram.id,
                "dram",
                system.dram.channels,
                None,
                missing="no DRAM power figure in the database",
                role="dram",
            )
        )
    parts.extend(_tdp(ssd, "ssd", count, "power_active_w", role="ssd") for ssd, count in system.ssds)
    platform = system.provenance.get("platform.power_w")
    if platform is not None:
        parts.append(
            PartPower(
                "platform",
                "platform",
                1,
                float(platform.value),
                getattr(platform, "source", system.source),
                bool(getattr(platform, "soft", False)),
                role="platform",
            )
        )
    elif system.accelerator is not None:
        parts.append(
            PartPower(
                "platform",
                "platform",
                1,
                None,
                missing="no platform.power_w (fans, NICs, board) in the database",
                role="platform",
            )
        )
    return PowerDraw(tuple(parts))


# --------------------------------------------------------------------------------------------- rates


def cloud_rate(
    hardware_id: str, devices: int, db: HardwareDB, inputs: CostInputs
) -> tuple[float | None, str]:
    """Cloud USD per hour of the deployment and its source; (None, reason) where no price is known.

    Accelerator ids: the per-device price × devices. Systems: the system's own price where listed, else its
    accelerator's per-device price × its accelerator count (a cloud GPU instance includes its host).
    """
    from capsim.hardware.entries import Accelerator

    entry = db.get(hardware_id)
    if hardware_id in inputs.cloud_usd_per_hour:
        per = float(inputs.cloud_usd_per_hour[hardware_id])
        n = devices if isinstance(entry, Accelerator) else 1
        return per * n, "user override (--cloud)"
    if isinstance(entry, Accelerator):
        return _per_device_cloud(entry, devices, inputs)
    system = db.system(hardware_id)
    if system.cloud_usd_per_hour is not None:
        prov = system.provenance.get("price.cloud_usd_per_hour")
        return float(system.cloud_usd_per_hour), getattr(prov, "source", system.source)
    if system.accelerator is None:
        return None, f"{system.id} has no cloud price in the database"
    return _per_device_cloud(system.accelerator, system.accelerator_count, inputs)


def _per_device_cloud(acc: Any, devices: int, inputs: CostInputs) -> tuple[float | None, str]:
    if acc.id in inputs.cloud_usd_per_hour:
        return float(inputs.cloud_usd_per_hour[acc.id]) * devices, "user override (--cloud)"
    if acc.cloud_usd_per_hour is None:
        return (
            None,
            f"{acc.id} has no cloud price in the database; set one with --cloud {acc.id}=USD_PER_HOUR",
        )
    prov = acc.provenance.get("price.cloud_usd_per_hour")
    return float(acc.cloud_usd_per_hour) * devices, getattr(prov, "source", acc.source)


def owned_usd_per_hour(
    purchase_usd: ArrayLike,
    busy_w: ArrayLike,
    inputs: CostInputs,
    utilization: ArrayLike | None = None,
    idle_w: ArrayLike | None = None,
) -> NDArray[np.float64]:
    """Owned cost per hour of wall-clock time: C_buy / (lifetime × 8760 h) + P(u) × PUE × $/kWh, with
    P(u) = P_idle + (P_busy − P_idle)·u.

    Vectorised over ``purchase_usd`` (USD), ``busy_w`` (W drawn while serving: the TDP sum, or the
    activity-scaled draw of :mod:`capsim.economics.energy`), ``utilization`` (default: ``inputs.utilization``) and
    ``idle_w`` (W; default ``inputs.idle_power_fraction × busy_w``).
    """
    purchase = np.asarray(purchase_usd, dtype=np.float64)
    watts = np.asarray(busy_w, dtype=np.float64)
    u = np.asarray(inputs.utilization if utilization is None else utilization, dtype=np.float64)
    idle = inputs.idle_power_fraction * watts if idle_w is None else np.asarray(idle_w, dtype=np.float64)
    # absurd inputs may overflow to inf: finite_cost reports that as one error, without numpy's warning
    with np.errstate(over="ignore"):
        amortised = purchase / (inputs.lifetime_years * HOURS_PER_YEAR)
        average_w = idle + (watts - idle) * u
        # W x 1 h = W·h; / 1000 -> kWh (units.KWH is in joules: 1 kWh = 1000 W x 3600 s)
        energy = average_w * units.HOURS / units.KWH * inputs.pue * inputs.electricity_usd_per_kwh
        return np.asarray(amortised + energy, dtype=np.float64)


def finite_cost(usd: float, what: str = "USD per million tokens") -> float:
    """``usd`` unchanged when finite; ScenarioError when the cost inputs made it overflow (JSON has no inf)."""
    if not math.isfinite(usd):
        raise ScenarioError(
            f"{what} is not finite ({usd}); the cost inputs are out of range: check --electricity-usd-kwh, "
            "--lifetime-years, --utilization and the prices"
        )
    return usd


def busy_rate(usd_per_wall_hour: ArrayLike, inputs: CostInputs) -> NDArray[np.float64]:
    """USD per hour of busy time: the wall-clock rate / utilisation (idle hours are paid by busy ones)."""
    with np.errstate(over="ignore"):
        return np.asarray(usd_per_wall_hour, dtype=np.float64) / inputs.utilization


def usd_per_mtok(usd_per_busy_hour: ArrayLike, tokens_per_s: ArrayLike) -> NDArray[np.float64]:
    """USD per million tokens = rate / 3600 s / (tokens/s) × 1e6 (vectorised; inf where tokens/s is 0)."""
    rate = np.asarray(usd_per_busy_hour, dtype=np.float64)
    tps = np.asarray(tokens_per_s, dtype=np.float64)
    with np.errstate(divide="ignore", over="ignore"):
        return rate / units.HOURS / tps * TOKENS_PER_MTOK


# --------------------------------------------------------------------------------------------- reports


@dataclass(frozen=True)
class TokenCost:
    """USD per million input and output tokens at one load (None where the rate is unknown)."""

    usd_per_mtok_input: float | None
    usd_per_mtok_output: float | None

    def to_dict(self) -> dict[str, float | None]:
        return {
            "usd_per_mtok_input": self.usd_per_mtok_input,
            "usd_per_mtok_output": self.usd_per_mtok_output,
        }


@dataclass(frozen=True)
class LoadCost:
    """Throughputs at one batch and what a million tokens cost there, owned and rented, with the energy
    behind the owned figure (None when the accelerators' TDP is unknown)."""

    batch: int
    prefill_tokens_per_s: float
    decode_tokens_per_s: float | None
    owned: TokenCost
    rented: TokenCost
    energy: EnergyReport | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "prefill_tokens_per_s": self.prefill_tokens_per_s,
            "decode_tokens_per_s": self.decode_tokens_per_s,
            "owned": self.owned.to_dict(),
            "rented": self.rented.to_dict(),
            "energy": None if self.energy is None else self.energy.to_dict(),
        }


@dataclass(frozen=True)
class DeploymentRates:
    """What a deployment costs per hour, owned and rented, with the parts and reasons behind each."""

    hardware: str
    devices: int
    purchase: PurchaseCost
    power: PowerDraw
    owned_usd_per_busy_hour: float | None
    owned_missing: str
    cloud_usd_per_hour: float | None
    rented_usd_per_busy_hour: float | None
    rented_source: str
    inputs: CostInputs

    def token_cost(
        self, prefill_tokens_per_s: float, decode_tokens_per_s: float | None
    ) -> tuple[TokenCost, TokenCost]:
        """(owned, rented) cost per million input and output tokens at these throughputs."""

        def per(rate: float | None, tps: float | None) -> float | None:
            return None if rate is None or not tps else finite_cost(float(usd_per_mtok(rate, tps)))

        owned = TokenCost(
            per(self.owned_usd_per_busy_hour, prefill_tokens_per_s),
            per(self.owned_usd_per_busy_hour, decode_tokens_per_s),
        )
        rented = TokenCost(
            per(self.rented_usd_per_busy_hour, prefill_tokens_per_s),
            per(self.rented_usd_per_busy_hour, decode_tokens_per_s),
        )
        return owned, rented

    def to_dict(self) -> dict[str, Any]:
        return {
            "hardware": self.hardware,
            "devices": self.devices,
            "purchase": self.purchase.to_dict(),
            "power": self.power.to_dict(),
            "owned_usd_per_busy_hour": self.owned_usd_per_busy_hour,
            "owned_missing": self.owned_missing,
            "cloud_usd_per_hour": self.cloud_usd_per_hour,
            "rented_usd_per_busy_hour": self.rented_usd_per_busy_hour,
            "rented_source": self.rented_source,
        }


def deployment_rates(
    hardware_id: str,
    devices: int,
    db: HardwareDB,
    inputs: CostInputs,
    *,
    host_memory_gb: float | None = None,
) -> DeploymentRates:
    """Purchase, power and the owned and rented USD per busy hour of ``devices`` of ``hardware_id``.

    The owned rate here charges energy at TDP (every part flat out: an upper bound when no prediction is at
    hand); :func:`load_cost` charges the modelled draw. It is None (with the reason in ``owned_missing``)
    when the accelerators have no price or no TDP; missing host parts only make it a lower bound.
    """
    purchase = purchase_cost(hardware_id, devices, db, inputs, host_memory_gb=host_memory_gb)
    power = power_draw(hardware_id, devices, db, used_devices=devices)
    owned: float | None = None
    reason = ""
    if not purchase.accelerators_priced:
        reason = next(
            f"{p.part}: {p.missing}" for p in purchase.missing if p.kind in ("accelerator", "system")
        )
    elif not power.accelerators_known:
        reason = next(
            f"{p.part}: {p.missing} (needed for energy)" for p in power.missing if p.kind == "accelerator"
        )
    else:
        owned = float(busy_rate(owned_usd_per_hour(purchase.total_usd, power.busy_w, inputs), inputs))
    cloud, source = cloud_rate(hardware_id, devices, db, inputs)
    rented = None if cloud is None else float(busy_rate(cloud, inputs))
    return DeploymentRates(
        hardware_id, devices, purchase, power, owned, reason, cloud, rented, source, inputs
    )


@dataclass(frozen=True)
class CostReport:
    """A scenario's cost: the deployment's rates, and $/Mtok at full load (the scenario's batch) and per user
    (batch 1)."""

    rates: DeploymentRates
    full_load: LoadCost
    per_user: LoadCost

    def to_dict(self) -> dict[str, Any]:
        return {
            "rates": self.rates.to_dict(),
            "full_load": self.full_load.to_dict(),
            "per_user": self.per_user.to_dict(),
            "cost_inputs": self.rates.inputs.to_dict(),
        }


def load_cost(rates: DeploymentRates, prediction: Prediction) -> LoadCost:
    """$/Mtok of a prediction's throughputs under ``rates``.

    The owned figure charges energy at each phase's modelled draw (:mod:`capsim.economics.energy`: idle plus the
    activity-scaled dynamic power of every part) rather than at TDP: busy rate of a phase =
    [C_buy / (lifetime × 8760 h) + (P_idle + (P_phase − P_idle)·u) × PUE × $/kWh] / u."""
    inputs = rates.inputs
    _, rented = rates.token_cost(prediction.prefill_tokens_per_s, prediction.decode_tokens_per_s)
    energy = None
    owned = TokenCost(None, None)
    if rates.power.accelerators_known:
        energy = energy_report(
            rates.power.parts,
            prediction,
            idle_fraction=inputs.idle_power_fraction,
            pue=inputs.pue,
            electricity_usd_per_kwh=inputs.electricity_usd_per_kwh,
            grid_gco2_per_kwh=inputs.grid_gco2_per_kwh,
            lower_bound=bool(rates.power.missing),
        )
    if energy is not None and rates.owned_usd_per_busy_hour is not None:
        purchase = rates.purchase.total_usd

        def per(watts: float, tps: float | None) -> float | None:
            if not tps:
                return None
            rate = busy_rate(owned_usd_per_hour(purchase, watts, inputs, idle_w=energy.idle_w), inputs)
            return finite_cost(float(usd_per_mtok(rate, tps)))

        owned = TokenCost(
            per(energy.prefill.watts, prediction.prefill_tokens_per_s),
            per(energy.decode.watts, prediction.decode_tokens_per_s),
        )
    return LoadCost(
        prediction.batch_per_wave,
        prediction.prefill_tokens_per_s,
        prediction.decode_tokens_per_s,
        owned,
        rented,
        energy,
    )


def cost_report(
    scenario: Scenario,
    hardware_db: HardwareDB,
    inputs: CostInputs | None = None,
    *,
    full: Prediction | None = None,
    single: Prediction | None = None,
) -> CostReport:
    """Cost of ``scenario``: predicts it at its batch (full load) and at batch 1 (per user) unless the
    predictions are given, then prices them with :func:`price_predictions` (a convenience over the two)."""
    from capsim.engine.predict import predict

    inputs = inputs or CostInputs()
    check_price_ids(inputs, hardware_db)
    full = full or predict(scenario, hardware_db=hardware_db)
    devices = int(full.scenario["gpus"])
    if single is None:
        single = (
            full
            if scenario.batch == 1
            else predict(replace(scenario, batch=1, gpus=devices), hardware_db=hardware_db)
        )
    return price_predictions(
        scenario.hardware, hardware_db, inputs, full, single, host_memory_gb=scenario.host_memory_gb
    )


def price_predictions(
    hardware_id: str,
    hardware_db: HardwareDB,
    inputs: CostInputs,
    full: Prediction,
    single: Prediction,
    *,
    host_memory_gb: float | None = None,
) -> CostReport:
    """The cost of predictions already made (no prediction runs here): the deployment's rates for the
    devices ``full`` used, charged to its throughputs at full load and to ``single``'s (batch 1)."""
    devices = int(full.scenario["gpus"])
    rates = deployment_rates(hardware_id, devices, hardware_db, inputs, host_memory_gb=host_memory_gb)
    return CostReport(rates, load_cost(rates, full), load_cost(rates, single))
