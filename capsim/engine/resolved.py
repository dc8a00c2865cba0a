"""``ResolvedScenario``: a scenario with every id resolved to database objects (the resolve stage's output,
which every later stage reads)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from capsim.engine.deployment import Deployment
from capsim.engine.engines import EngineProfile, engine_profile
from capsim.engine.layout import Layout
from capsim.engine.placement import (
    DEVICE,
    TierMap,
)
from capsim.engine.roofline import (
    DeviceRates,
    Sharding,
)
from capsim.engine.scenario import Scenario
from capsim.engine.speculative import Speculation
from capsim.hardware.entries import Accelerator, Efficiency, System
from capsim.models.spec import ModelSpec
from capsim.routing import Router


@dataclass(frozen=True)
class ResolvedScenario:
    """A scenario with every id resolved to database objects."""

    scenario: Scenario
    model: ModelSpec
    node: System
    device: Accelerator
    efficiency: Efficiency
    sharding: Sharding
    rates: DeviceRates
    router: Router | None
    deployment: Deployment = Deployment()
    expert_tiers: TierMap = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int8))
    """Tier of every routed expert, (MoE layers x experts): capsim.engine.placement.DEVICE, DRAM or SSD."""
    notes: tuple[str, ...] = ()
    """What the resolution assumed or changed (implied mode, unknown capacities), shown with the output."""
    layout: Layout = Layout()
    """TP x PP x DP over nodes (capsim.engine.parallel)."""
    scale_out_bytes_s: float = 0.0
    """Per-device bytes/s on the network joining nodes (0 for one node)."""
    cpu_efficiency: Efficiency | None = None
    """Efficiency of the ``cpu`` class from the same database (for CPU-computed experts); None if absent."""
    speculation: Speculation | None = None
    """capsim.engine.speculative.Speculation of ``--spec`` (None: plain decoding)."""
    draft: ResolvedScenario | None = None
    """The draft model resolved on the same devices (``--spec draft:MODEL:K``), else None."""
    engine: EngineProfile | None = None
    """The engine profile whose values this resolution applied (capsim.engine.engines); None: the device class's
    values, also where a profile was named but does not apply (a CPU-only run, a device class it was not
    fitted on: capsim.engine.resolve)."""

    def engine_not_applied(self) -> str | None:
        """Why the named engine profile's values were not applied, or None (applied, or no engine named)."""
        named = engine_profile(self.scenario.engine) if self.scenario.engine else None
        if named is None or self.engine is not None:
            return None
        if self.deployment.mode == "cpu":
            return "CPU-only execution: the cpu class's values apply"
        return f"profile fitted on {', '.join(named.device_classes)}; {self.device.device_class} class values used"

    @property
    def kv_cache_free_fraction(self) -> float | None:
        """The engine's KV-cache share of the memory left after weights and buffers; None: usable memory is
        capacity x efficiency.gpu_memory_utilization (capsim.engine.memory.usable_bytes)."""
        return None if self.engine is None else self.engine.kv_cache_free_fraction

    @property
    def offloaded(self) -> np.ndarray:
        """Mask over MoE layers holding any routed expert off the device."""
        return (
            (self.expert_tiers != DEVICE).any(axis=1) if self.expert_tiers.size else np.zeros(0, dtype=bool)
        )

    @property
    def device_is_dram(self) -> bool:
        """The computing device's memory is host DRAM: CPU-only execution or unified memory."""
        return self.deployment.mode == "cpu" or bool(getattr(self.device, "unified_memory", False))

    def inclusion(self) -> np.ndarray:
        """π (MoE layers x experts): the router's per-token inclusion probabilities (uniform k/E if it has none)."""
        moe = self.model.moe
        assert moe is not None  # callers check is_moe: internal invariant
        pi = getattr(self.router, "inclusion", None)
        if pi is None:
            return np.full((self.model.num_moe_layers, moe.num_experts), moe.top_k / moe.num_experts)
        return np.asarray(pi, dtype=np.float64)
