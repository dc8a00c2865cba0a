"""A resolved serving replica (step-cost model and KV cache) and the prefill/decode disaggregation option."""

from __future__ import annotations

from dataclasses import dataclass

from capsim.engine.memory import MemoryPlan
from capsim.engine.resolved import ResolvedScenario
from capsim.serving.stepcost import StepCost


@dataclass(frozen=True)
class Disaggregation:
    """Prefill and decode on separate replicas, KV cache sent over ``link`` (a hardware-DB link id; None =
    the node's GPU-to-GPU link)."""

    prefill_replicas: int
    decode_replicas: int
    link: str | None = None


@dataclass
class ReplicaModel:
    """A resolved replica: its step-cost model and KV cache."""

    rs: ResolvedScenario
    memory: MemoryPlan
    cost: StepCost
    kv_blocks: int
    kv_bytes_per_token: float
    kv_pool_bytes: float
