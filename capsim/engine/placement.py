"""Where each routed expert lives: device memory, host DRAM or an NVMe SSD, from a spec written the way users
think about it (``--placement``).

Grammar: comma-separated clauses, applied left to right (a later clause overrides an earlier one); expert
layers are MoE-layer indices, ``[FIRST:LAST]`` end-exclusive, either end optional::

    auto                          as many experts on the GPU as fit (hottest first), the rest in DRAM, and on
                                  the SSD what DRAM cannot hold; alone
    gpu                           every expert on the device (same as experts:gpu)
    experts:TIER                  every routed expert on TIER (gpu, dram, ssd)
    experts[10:60]:dram           the routed experts of MoE layers 10..59
    cold-experts:N:ssd            the N least-used experts of every MoE layer (by the router's inclusion
                                  probability π; ties: lower expert id counts as colder)
    hot-experts[0:4]:N:gpu        the N most-used experts of MoE layers 0..3

Example: ``experts:dram,hot-experts:2:gpu,cold-experts:32:ssd``. Attention, shared experts, embeddings and
the KV cache stay on the device.

Tiers are stored as small integers in an (MoE layers x experts) map: :data:`DEVICE` is the memory of the
device that computes (GPU memory; DRAM itself for CPU-only execution; unified memory on Apple silicon),
:data:`DRAM` is host DRAM behind a link, :data:`SSD` an NVMe drive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from capsim.errors import ScenarioError

DEVICE, DRAM, SSD = 0, 1, 2
TIER_NAMES = ("gpu", "dram", "ssd")
TierMap = NDArray[np.int8]

_CLAUSE = re.compile(
    r"^(?P<what>experts|cold-experts|hot-experts)(?:\[(?P<first>\d*):(?P<last>\d*)\])?"
    r"(?::(?P<count>\d+))?:(?P<tier>[a-z]+)$"
)
_EXAMPLES = "auto, gpu, experts:dram, experts[10:60]:dram, cold-experts:32:ssd"


@dataclass(frozen=True)
class PlacementClause:
    """One clause: which experts (``what`` over MoE layers ``layers``, ``count`` per layer) go to ``tier``."""

    what: str
    layers: tuple[int | None, int | None]
    count: int | None
    tier: str


@dataclass(frozen=True)
class PlacementSpec:
    """A parsed ``--placement``: ``auto`` or an ordered list of clauses."""

    text: str
    auto: bool
    clauses: tuple[PlacementClause, ...]


def parse_placement(text: str) -> PlacementSpec:
    """Parse a placement spec (grammar in the module docstring); ScenarioError naming the bad clause."""
    raw = text.strip().lower()
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    if not parts:
        raise ScenarioError(f"empty --placement {text!r}; write e.g. {_EXAMPLES}")
    if "auto" in parts:
        if len(parts) > 1:
            raise ScenarioError(f"--placement auto chooses every tier itself; write it alone, not {text!r}")
        return PlacementSpec(raw, True, ())
    clauses = []
    for part in parts:
        if part == "gpu":
            clauses.append(PlacementClause("experts", (None, None), None, "gpu"))
            continue
        m = _CLAUSE.match(part)
        if m is None:
            raise ScenarioError(f"cannot read --placement clause {part!r}; write e.g. {_EXAMPLES}")
        what, tier = m["what"], m["tier"]
        if tier not in TIER_NAMES:
            raise ScenarioError(
                f"unknown tier {tier!r} in --placement clause {part!r}; choose gpu, dram or ssd"
            )
        count = int(m["count"]) if m["count"] is not None else None
        if what == "experts" and count is not None:
            raise ScenarioError(
                f"--placement clause {part!r}: a count goes with cold-experts/hot-experts only"
            )
        if what != "experts" and count is None:
            raise ScenarioError(f"--placement clause {part!r} needs a count per layer, e.g. {what}:8:{tier}")
        first = int(m["first"]) if m["first"] else None
        last = int(m["last"]) if m["last"] else None
        if first is not None and last is not None and first >= last:
            raise ScenarioError(f"--placement clause {part!r} selects no layers; need FIRST < LAST")
        clauses.append(PlacementClause(what, (first, last), count, tier))
    return PlacementSpec(raw, False, tuple(clauses))


def legacy_spec(expert_layers: tuple[int, int] | None, expert_tier: str) -> PlacementSpec:
    """The placement ``--expert-layers A:B --expert-tier T`` means: experts[A:B]:T."""
    first, last = expert_layers if expert_layers is not None else (None, None)
    text = f"experts[{'' if first is None else first}:{'' if last is None else last}]:{expert_tier}"
    return PlacementSpec(text, False, (PlacementClause("experts", (first, last), None, expert_tier),))


def tier_code(tier: str, device_is_dram: bool) -> int:
    """Tier name -> code. With ``device_is_dram`` (CPU-only or unified memory) DRAM is the device's memory."""
    if tier == "gpu":
        return DEVICE
    if tier == "dram":
        return DEVICE if device_is_dram else DRAM
    return SSD


def expert_tier_map(
    spec: PlacementSpec,
    num_moe_layers: int,
    num_experts: int,
    inclusion: NDArray[np.float64],
    *,
    device_is_dram: bool = False,
) -> TierMap:
    """(MoE layers x experts) tier codes for a non-auto ``spec``; ``inclusion`` = π (L x E) orders cold/hot."""
    tiers = np.full((num_moe_layers, num_experts), DEVICE, dtype=np.int8)
    for c in spec.clauses:
        first = 0 if c.layers[0] is None else c.layers[0]
        last = num_moe_layers if c.layers[1] is None else min(c.layers[1], num_moe_layers)
        if first >= num_moe_layers:
            raise ScenarioError(
                f"--placement selects MoE layers from {first}, but the model has {num_moe_layers} MoE layers "
                f"(indices 0..{num_moe_layers - 1})"
            )
        code = tier_code(c.tier, device_is_dram)
        if c.what == "experts":
            tiers[first:last] = code
            continue
        if c.count is not None and c.count > num_experts:
            raise ScenarioError(
                f"--placement asks for {c.count} {c.what} per layer; the model has {num_experts}"
            )
        # stable sort: among equal π the lower id is colder (ascending order), hence hotter last
        order = np.argsort(inclusion[first:last], axis=1, kind="stable")
        chosen = (
            order[:, : c.count] if c.what == "cold-experts" else order[:, num_experts - int(c.count or 0) :]
        )
        rows = np.arange(first, last)[:, None]
        tiers[rows, chosen] = code
    return tiers


def auto_tier_map(
    inclusion: NDArray[np.float64],
    device_slots: int,
    dram_slots: int | None,
    *,
    has_ssd: bool,
    device_is_dram: bool = False,
) -> TierMap:
    """``--placement auto``: the ``device_slots`` hottest experts (by π, over all layers) on the device, the
    next ``dram_slots`` (None = unlimited) in DRAM, the rest on the SSD. With ``device_is_dram`` (CPU-only,
    unified memory) DRAM is the device, so the rest goes straight to the SSD.

    Raises ScenarioError when experts are left over and the node has no SSD (the caller names the fix)."""
    num_layers, num_experts = inclusion.shape
    n = num_layers * num_experts
    tiers = np.full(n, SSD, dtype=np.int8)
    # hottest first; stable on the negated π keeps lower (layer, expert) first among ties
    order = np.argsort(-inclusion.ravel(), kind="stable")
    on_device = max(0, min(device_slots, n))
    tiers[order[:on_device]] = DEVICE
    if device_is_dram:
        in_dram = 0  # DRAM is the device: what did not fit there goes to the SSD
    else:
        in_dram = n - on_device if dram_slots is None else max(0, min(dram_slots, n - on_device))
    tiers[order[on_device : on_device + in_dram]] = DRAM
    if on_device + in_dram < n and not has_ssd:
        raise ScenarioError(
            f"--placement auto: {n - on_device - in_dram} experts fit neither on the device nor in host DRAM and "
            "the node has no SSD; add --host-memory-gb, a lower --weight-dtype or more devices"
        )
    return tiers.reshape(num_layers, num_experts)


def tier_counts(tiers: TierMap) -> dict[str, int]:
    """Experts per tier name (device first)."""
    return {name: int((tiers == code).sum()) for code, name in enumerate(TIER_NAMES)}


def describe(tiers: TierMap, device_name: str = "gpu") -> str:
    """One line: experts per tier and the MoE layers that hold any off-device expert."""
    counts = tier_counts(tiers)
    names = {"gpu": device_name, "dram": "dram", "ssd": "ssd"}
    parts = [f"{n} on {names[t]}" for t, n in counts.items() if n]
    layers = np.nonzero((tiers != DEVICE).any(axis=1))[0]
    where = f"; off-device experts in {layers.size} of {tiers.shape[0]} MoE layers" if layers.size else ""
    return f"experts: {', '.join(parts)}{where}"
