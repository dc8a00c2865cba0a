"""Pricing: what buying a deployment costs, part by part, from the database's sourced prices.

Separate from :mod:`capsim.economics.cost` (rates, energy charges, $/Mtok) and from any prediction: a purchase depends
only on the hardware entry, the device count, the buyer's host memory and the price overrides. A part with no
price is listed as *missing* (never zero) and makes the total a lower bound; docs/cost.md §1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from capsim.errors import MissingValueError

if TYPE_CHECKING:
    from capsim.economics.inputs import CostInputs
    from capsim.hardware.db import HardwareDB
    from capsim.hardware.entries import System


@dataclass(frozen=True)
class PartCost:
    """One line of a purchase: ``quantity`` units (devices, GB or TB) at ``unit_usd`` each, with provenance.
    ``unit_usd`` is None when no price is known (``missing`` says why)."""

    part: str
    kind: str
    quantity: float
    unit: str
    unit_usd: float | None
    source: str = ""
    date: str = ""
    soft: bool = False
    overridden: bool = False
    missing: str = ""

    @property
    def total_usd(self) -> float | None:
        return None if self.unit_usd is None else self.unit_usd * self.quantity

    def to_dict(self) -> dict[str, Any]:
        return {
            "part": self.part,
            "kind": self.kind,
            "quantity": self.quantity,
            "unit": self.unit,
            "unit_usd": self.unit_usd,
            "total_usd": self.total_usd,
            "source": self.source,
            "date": self.date,
            "soft": self.soft,
            "overridden": self.overridden,
            "missing": self.missing,
        }


@dataclass(frozen=True)
class PurchaseCost:
    """The purchase of a deployment. ``total_usd`` sums the priced parts; with any part missing it is a lower
    bound (``is_lower_bound``). ``accelerators_priced`` is False when the accelerators themselves lack a
    price."""

    parts: tuple[PartCost, ...]
    scope: str

    @property
    def total_usd(self) -> float:
        return float(sum(p.total_usd for p in self.parts if p.total_usd is not None))

    @property
    def missing(self) -> tuple[PartCost, ...]:
        return tuple(p for p in self.parts if p.unit_usd is None)

    @property
    def is_lower_bound(self) -> bool:
        return bool(self.missing)

    @property
    def accelerators_priced(self) -> bool:
        return not any(p.kind in ("accelerator", "system") and p.unit_usd is None for p in self.parts)

    @property
    def is_soft(self) -> bool:
        return any(p.soft for p in self.parts if p.unit_usd is not None)

    def require_total(self, entry: str) -> float:
        """``total_usd``, or MissingValueError when the accelerators (the dominant part) have no price."""
        if not self.accelerators_priced:
            part = next(p for p in self.parts if p.kind in ("accelerator", "system") and p.unit_usd is None)
            raise MissingValueError(part.part, "price.purchase_usd", f"the purchase cost of {entry}")
        return self.total_usd

    def label(self) -> str:
        """``$30,678`` or ``≥ $30,678`` (lower bound), a trailing ``?`` when a price used is soft (as
        ``capsim hardware list`` marks soft values); ``missing`` when the accelerators have no price."""
        if not self.accelerators_priced:
            return "missing"
        text = ("≥ " if self.is_lower_bound else "") + f"${self.total_usd:,.0f}"
        return text + ("?" if self.is_soft else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "total_usd": self.total_usd if self.accelerators_priced else None,
            "is_lower_bound": self.is_lower_bound,
            "scope": self.scope,
            "parts": [p.to_dict() for p in self.parts],
            "missing": [f"{p.part}: {p.missing}" for p in self.missing],
        }


def _priced(
    entry: Any, field_name: str, inputs: CostInputs, kind: str, quantity: float, unit: str
) -> PartCost:
    """A part priced from the user's override, else the database field ``field_name`` (with provenance)."""
    if entry.id in inputs.purchase_usd:
        return PartCost(
            entry.id,
            kind,
            quantity,
            unit,
            float(inputs.purchase_usd[entry.id]),
            source="user override (--price)",
            overridden=True,
        )
    value = getattr(entry, field_name)
    prov = entry.provenance.get(_PRICE_FIELDS[field_name])
    if value is None:
        return PartCost(
            entry.id,
            kind,
            quantity,
            unit,
            None,
            missing=f"no {_PRICE_FIELDS[field_name]!r} in the database; set one with --price {entry.id}=…",
        )
    return PartCost(
        entry.id,
        kind,
        quantity,
        unit,
        float(value),
        source=getattr(prov, "source", entry.source),
        date=getattr(prov, "date", ""),
        soft=bool(getattr(prov, "soft", False)),
    )


_PRICE_FIELDS = {
    "purchase_usd": "price.purchase_usd",
    "usd_per_gb": "price.usd_per_gb",
    "usd_per_tb": "price.usd_per_tb",
    "cloud_usd_per_hour": "price.cloud_usd_per_hour",
}


def purchase_cost(
    hardware_id: str,
    devices: int,
    db: HardwareDB,
    inputs: CostInputs,
    *,
    host_memory_gb: float | None = None,
) -> PurchaseCost:
    """What buying the deployment costs: ``devices`` accelerators for an accelerator id (plus a host server
    the database cannot price: named as missing, so the total is a lower bound); for a system id the whole
    system (bought whole even when fewer of its accelerators are used), its published price or the sum of
    its parts. ``host_memory_gb`` is the DRAM bought when the system entry leaves the capacity to the buyer."""
    from capsim.hardware.entries import Accelerator

    entry = db.get(hardware_id)
    if isinstance(entry, Accelerator):
        part = _priced(entry, "purchase_usd", inputs, "accelerator", devices, "each")
        host = PartCost("host", "platform", 1, "each", None, missing=NO_HOST_PRICE)
        return PurchaseCost((part, host), scope=f"{devices} accelerator(s); host server not priced")
    system = db.system(hardware_id)
    whole = _priced(system, "purchase_usd", inputs, "system", 1, "each")
    if whole.unit_usd is not None:
        return PurchaseCost((whole,), scope="whole system (its published price)")
    return PurchaseCost(_system_parts(system, inputs, host_memory_gb), scope="sum of the system's parts")


def _platform_parts(system: System) -> list[PartCost]:
    """Chassis, motherboard, PSU, cooling, NICs and assembly from ``platform.<part>_usd``; with none given,
    one missing line names them all (a system with accelerators needs them; a CPU box too)."""
    from capsim.hardware.entries import PLATFORM_PARTS

    given = {part: system.provenance.get(f"platform.{part}_usd") for part in PLATFORM_PARTS}
    if not any(v is not None for v in given.values()):
        return [
            PartCost(
                "platform",
                "platform",
                1,
                "each",
                None,
                missing="no platform prices (chassis, motherboard, PSU, cooling, NICs) in the database; "
                "add platform.<part>_usd to the system entry",
            )
        ]
    out = []
    for part, value in given.items():
        if value is None:
            out.append(
                PartCost(part, "platform", 1, "each", None, missing=f"no platform.{part}_usd in the database")
            )
        else:
            out.append(
                PartCost(
                    part,
                    "platform",
                    1,
                    "each",
                    float(value.value),
                    source=getattr(value, "source", system.source),
                    date=getattr(value, "date", ""),
                    soft=bool(getattr(value, "soft", False)),
                )
            )
    return out


def _system_parts(
    system: System, inputs: CostInputs, host_memory_gb: float | None = None
) -> tuple[PartCost, ...]:
    parts: list[PartCost] = []
    if system.accelerator is not None:
        parts.append(
            _priced(
                system.accelerator, "purchase_usd", inputs, "accelerator", system.accelerator_count, "each"
            )
        )
    if not system.cpus and system.accelerator is not None:
        parts.append(
            PartCost(
                "host", "cpu", 1, "each", None, missing="the system entry lists no host CPUs, DRAM or chassis"
            )
        )
    for cpu, count in system.cpus:
        parts.append(_priced(cpu, "purchase_usd", inputs, "cpu", count, "each"))
    if system.dram is not None:
        dram = system.dram
        if dram.capacity_gb is None and host_memory_gb is not None:
            parts.append(_priced(dram.dram, "usd_per_gb", inputs, "dram", float(host_memory_gb), "GB"))
        elif dram.capacity_gb is None:
            parts.append(
                PartCost(
                    dram.dram.id,
                    "dram",
                    0,
                    "GB",
                    None,
                    missing=f"{system.id} has no dram.capacity_gb, so its DRAM cannot be priced",
                )
            )
        else:
            parts.append(_priced(dram.dram, "usd_per_gb", inputs, "dram", dram.capacity_gb, "GB"))
    for i, (ssd, count) in enumerate(system.ssds):
        capacity = system.provenance.get(f"ssds.{i}.capacity_tb")
        if capacity is None:
            parts.append(
                PartCost(
                    ssd.id,
                    "ssd",
                    count,
                    "TB",
                    None,
                    missing=f"{system.id} gives no drive capacity (ssds.capacity_tb), so "
                    "$/TB cannot be applied",
                )
            )
        else:
            parts.append(_priced(ssd, "usd_per_tb", inputs, "ssd", count * float(capacity.value), "TB"))
    parts.extend(_platform_parts(system))
    return tuple(parts)


NO_HOST_PRICE = (
    "an accelerator id has no host server (CPU, DRAM, chassis, power supply) in the database; "
    "use a system id (capsim hardware list --kind system) for a whole-machine figure"
)
