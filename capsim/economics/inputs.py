"""The cost model's inputs that are not in the hardware database (electricity, PUE, lifetime, utilisation,
price overrides), each default with its provenance."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any

from capsim.errors import ScenarioError


def _input(
    default: float, help: str, source: str, *, date: str = "", assumption: bool = False, unit: str = ""
) -> Any:
    return field(
        default=default,
        metadata={"help": help, "source": source, "date": date, "assumption": assumption, "unit": unit},
    )


_PRICE_HELP = (
    "purchase price overrides: accelerator, CPU or system id -> USD each; DRAM id -> USD per GB; "
    "SSD id -> USD per TB"
)


_CLOUD_HELP = "cloud price overrides: accelerator id -> USD per device-hour; system id -> USD per system-hour"


@dataclass(frozen=True)
class CostInputs:
    """Every input of the cost model that is not in the hardware database, with its default's provenance.

    Each scalar field's metadata holds ``source``, ``date`` and whether it is an ``assumption`` (a modelling
    or user choice, not a fact); :meth:`basis` reports them, marking the ones the user overrode. Price
    overrides replace database prices for the ids they name.
    """

    electricity_usd_per_kwh: float = _input(
        0.08,
        "electricity price in USD per kWh",
        "hardware.md §8 suggested simulator default (industrial); US industrial average 8.04 c/kWh in 2023, "
        "EIA Electric Power Monthly Table 5.3 https://www.eia.gov/electricity/monthly/epm_table_grapher.php?t=epmt_5_03",
        date="2023",
        assumption=True,
        unit="USD/kWh",
    )
    pue: float = _input(
        1.2,
        "power usage effectiveness: facility power / IT power",
        "hardware.md §8 suggested simulator default for a modern colocation site; the Uptime Institute "
        "survey average was 1.58 in 2023, hyperscale ~1.1",
        date="2023",
        assumption=True,
    )
    lifetime_years: float = _input(
        3.0,
        "years the hardware serves; the purchase is amortised over them",
        "user assumption (no published figure applies to every buyer)",
        assumption=True,
        unit="years",
    )
    utilization: float = _input(
        1.0,
        "fraction of the time the deployment serves at the modelled load (duty cycle)",
        "user assumption: busy all the time, as MoE-CAP's C_token assumes continuous serving over R",
        assumption=True,
    )
    idle_power_fraction: float = _input(
        0.15,
        "power drawn while idle, as a fraction of TDP",
        "modelling assumption; not in the hardware reference. Order-of-magnitude cross-checks: a blog table "
        "lists idle at ~15% of TDP (https://nemulai.com/blog/gpu-electricity-cost-per-training-run) and a "
        "measured H200 idles at 80 W of its 700 W TDP (http://api.serialalice.pt/alice-benchmark)",
        assumption=True,
    )
    grid_gco2_per_kwh: float | None = field(
        default=None,
        metadata={"help": "grid carbon intensity in gCO2 per kWh (optional; enables gCO2/token)"},
    )
    purchase_usd: Mapping[str, float] = field(default_factory=dict, metadata={"help": _PRICE_HELP})
    cloud_usd_per_hour: Mapping[str, float] = field(default_factory=dict, metadata={"help": _CLOUD_HELP})
    overridden: frozenset[str] = frozenset()
    """Names of the scalar fields the user set (reported as overrides in :meth:`basis`)."""

    def __post_init__(self) -> None:
        _check_inputs(self)

    def override(self, **changes: Any) -> CostInputs:
        """A copy with ``changes`` applied; scalar changes are recorded as user overrides, price maps are
        merged into the existing ones (later wins)."""
        scalars = {k: v for k, v in changes.items() if k in SCALAR_INPUTS}
        if "grid_gco2_per_kwh" in changes:
            scalars["grid_gco2_per_kwh"] = changes["grid_gco2_per_kwh"]
        unknown = (
            set(changes) - set(SCALAR_INPUTS) - {"purchase_usd", "cloud_usd_per_hour", "grid_gco2_per_kwh"}
        )
        if unknown:
            raise ScenarioError(
                f"unknown cost input(s) {', '.join(sorted(unknown))}; "
                f"choose from {', '.join(SCALAR_INPUTS)}, "
                "purchase_usd, cloud_usd_per_hour"
            )
        purchase = {**self.purchase_usd, **changes.get("purchase_usd", {})}
        cloud = {**self.cloud_usd_per_hour, **changes.get("cloud_usd_per_hour", {})}
        return replace(
            self,
            **scalars,
            purchase_usd=MappingProxyType(purchase),
            cloud_usd_per_hour=MappingProxyType(cloud),
            overridden=self.overridden | frozenset(scalars),
        )

    def basis(self) -> list[dict[str, Any]]:
        """One entry per scalar input: value, unit, source, date, and whether it is an assumption/override."""
        out = []
        for f in fields(self):
            if f.name not in SCALAR_INPUTS:
                continue
            user = f.name in self.overridden
            out.append(
                {
                    "name": f.name,
                    "value": getattr(self, f.name),
                    "unit": f.metadata["unit"],
                    "source": "user override" if user else f.metadata["source"],
                    "date": "" if user else f.metadata["date"],
                    "assumption": bool(f.metadata["assumption"]) and not user,
                    "overridden": user,
                }
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": self.basis(),
            "grid_gco2_per_kwh": self.grid_gco2_per_kwh,
            "purchase_usd_overrides": dict(self.purchase_usd),
            "cloud_usd_per_hour_overrides": dict(self.cloud_usd_per_hour),
        }


SCALAR_INPUTS: tuple[str, ...] = (
    "electricity_usd_per_kwh",
    "pue",
    "lifetime_years",
    "utilization",
    "idle_power_fraction",
)
"""The scalar fields of :class:`CostInputs`, in display order."""


def _check_inputs(inputs: CostInputs) -> None:
    def bad(name: str, rule: str) -> ScenarioError:
        return ScenarioError(f"{name} must be {rule}, got {getattr(inputs, name)!r}; fix the value")

    for name in SCALAR_INPUTS:
        value = getattr(inputs, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad(name, "a finite number")
    if inputs.electricity_usd_per_kwh < 0:
        raise bad("electricity_usd_per_kwh", ">= 0")
    if inputs.pue < 1:
        raise bad("pue", ">= 1 (facility power includes the IT power)")
    if inputs.lifetime_years <= 0:
        raise bad("lifetime_years", "> 0")
    if not 0 < inputs.utilization <= 1:
        raise bad("utilization", "in (0, 1]")
    if not 0 <= inputs.idle_power_fraction <= 1:
        raise bad("idle_power_fraction", "in [0, 1]")
    grid = inputs.grid_gco2_per_kwh
    if grid is not None and (
        isinstance(grid, bool) or not isinstance(grid, (int, float)) or not math.isfinite(grid) or grid < 0
    ):
        raise ScenarioError(f"grid_gco2_per_kwh must be a finite number >= 0, got {grid!r}; fix the value")
    for label, prices in (("price", inputs.purchase_usd), ("cloud price", inputs.cloud_usd_per_hour)):
        for key, value in prices.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ScenarioError(f"{label} for {key!r} must be a positive number, got {value!r}")
