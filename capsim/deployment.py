"""Where the weights live and which device computes what: execution modes beyond GPU-resident serving.

Modes (``--mode``):

- ``gpu``: every weight in GPU memory (vLLM/SGLang-like). The default.
- ``offload``: the routed experts of the chosen MoE layers live in host DRAM (or on an NVMe SSD,
  ``--expert-tier ssd``); the GPU keeps everything else plus an *expert cache* in the memory left after the KV
  cache. Each step, the activated experts that miss the cache are copied over the host link (PCIe, or the
  SSD->GPU path of the node graph). Hits/misses come from simulating the cache policy (LRU, LFU, or Belady's
  oracle) on a routing sample of the scenario's router, in layer order. With ``prefetch`` the copies overlap
  GPU compute perfectly (MoE-Infinity style; an optimistic bound), without it they serialise
  (Mixtral-offloading style): step = GPU time + link time, or max(GPU time, link time).
- ``cpu-experts``: the routed experts of the chosen layers are *computed on the CPU* from DRAM (KTransformers,
  Fiddler, llama.cpp ``--n-cpu-moe``); attention, router and shared experts stay on the GPU. Per MoE layer the
  activations cross PCIe twice (T·d·2 bytes each way). CPU time per layer = max(FLOPs / (CPU peak·η_c),
  A·N_exp·b_w / (DRAM bandwidth·η_m)).
- ``cpu``: everything on the CPU sockets (CPU-only serving).

NUMA: a model copy in one socket's DRAM streams at one socket's bandwidth; ``--numa replicate`` keeps one copy
per socket (memory x sockets) and streams at the sum. The inter-socket link is not in the database, so
interleaving across sockets is not modelled.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import MissingValueError, ScenarioError
from .hardware import Accelerator, Sourced, System
from .units import GB_PER_S

if TYPE_CHECKING:
    from .routing import Router

MODES = ("gpu", "offload", "cpu-experts", "cpu")
CACHE_POLICIES = ("lru", "lfu", "oracle")
EXPERT_TIERS = ("dram", "ssd")
NUMA_POLICIES = ("single", "replicate")


@dataclass(frozen=True)
class Deployment:
    """Execution mode and placement of the routed experts."""

    mode: str = "gpu"
    expert_layers: tuple[int, int] | None = None
    """MoE-layer index range [first, last) whose routed experts leave the GPU; None = every MoE layer."""
    expert_tier: str = "dram"
    cache_policy: str = "lru"
    prefetch: bool = True
    numa: str = "single"
    host_memory_gb: float | None = None
    cache_sample_steps: int = 64

    def validate(self) -> None:
        checks = ((self.mode, MODES, "mode"), (self.cache_policy, CACHE_POLICIES, "cache policy"),
                  (self.expert_tier, EXPERT_TIERS, "expert tier"), (self.numa, NUMA_POLICIES, "numa policy"))
        for value, valid, label in checks:
            if value not in valid:
                raise ScenarioError(f"unknown {label} {value!r}; choose one of {', '.join(valid)}")
        if self.mode == "cpu-experts" and self.expert_tier != "dram":
            raise ScenarioError("cpu-experts computes experts from DRAM; --expert-tier ssd applies to --mode offload")
        if self.host_memory_gb is not None and self.host_memory_gb <= 0:
            raise ScenarioError(f"host memory must be > 0 GB, got {self.host_memory_gb}")


def parse_layer_range(text: str | None, num_moe_layers: int) -> tuple[int, int] | None:
    """``"10:60"`` -> (10, 60) (MoE-layer indices, end exclusive, clipped); ``"all"``/None -> None."""
    if text is None or text.strip() in ("", "all"):
        return None
    try:
        first_s, last_s = text.split(":")
        first = int(first_s) if first_s.strip() else 0
        last = int(last_s) if last_s.strip() else num_moe_layers
    except ValueError:
        raise ScenarioError(f"cannot read --expert-layers {text!r}; write FIRST:LAST, e.g. 10:60 (MoE layers)") from None
    if not 0 <= first < last:
        raise ScenarioError(f"--expert-layers {text!r} is empty; need 0 <= FIRST < LAST")
    if first >= num_moe_layers:
        raise ScenarioError(f"--expert-layers {text!r} starts past the model's {num_moe_layers} MoE layers")
    return first, min(last, num_moe_layers)


def offloaded_layers(deployment: Deployment, num_moe_layers: int) -> np.ndarray:
    """Boolean mask over MoE layers whose routed experts are off the GPU (all False in gpu mode)."""
    mask = np.zeros(num_moe_layers, dtype=bool)
    if deployment.mode in ("offload", "cpu-experts"):
        first, last = deployment.expert_layers or (0, num_moe_layers)
        mask[first:last] = True
    return mask


def host_memory_bytes(node: System, deployment: Deployment) -> float:
    """Host DRAM capacity: --host-memory-gb, else the system's dram.capacity_gb (MissingValueError if neither)."""
    if deployment.host_memory_gb is not None:
        return deployment.host_memory_gb * 1e9
    if node.dram is None:
        raise MissingValueError(node.id, "dram", "host-memory fit; pass --host-memory-gb")
    if node.dram.capacity_gb is None:
        raise MissingValueError(node.id, "dram.capacity_gb", "host-memory fit; pass --host-memory-gb")
    return node.dram.capacity_gb * 1e9


def cpu_rates(node: System, deployment: Deployment) -> tuple[float, dict[str, float], int, str]:
    """(streaming bandwidth bytes/s, peak FLOP/s by precision, sockets used, derivation) of the node's CPUs.

    Bandwidth = min(socket DDR peak, populated channels' peak) of one socket, times the sockets a weight copy
    is replicated on (``numa``)."""
    if not node.cpus:
        raise MissingValueError(node.id, "cpus", "CPU execution (the node lists no CPU entry)")
    cpu, sockets = node.cpus[0]
    per_socket = cpu.memory_bandwidth_bytes_s
    how = f"{cpu.id}: {cpu.memory_bandwidth_gb_s:g} GB/s per socket"
    if node.dram is not None:
        populated = node.dram.bandwidth_bytes_s / max(sockets, 1)
        if populated < per_socket:
            per_socket = populated
            how += f", limited by {node.dram.channels} populated channels of {node.dram.dram.id}"
    used = sockets if deployment.numa == "replicate" else 1
    peaks = {key: v * 1e12 * used for key, v in cpu.peak_tflops_dense.items()}
    return per_socket * used, peaks, used, how + f"; {used} socket(s) streaming ({deployment.numa})"


def cpu_device(node: System, deployment: Deployment) -> Accelerator:
    """The node's CPU sockets as a compute device (for ``--mode cpu``), with its derivation as provenance."""
    bandwidth, peaks, used, how = cpu_rates(node, deployment)
    cpu, sockets = node.cpus[0]
    capacity = host_memory_bytes(node, deployment) / (sockets if deployment.numa == "replicate" else 1)
    source = f"derived from {node.id}: {how}"
    prov = {"memory_bandwidth_gb_s": Sourced(bandwidth / GB_PER_S, source),
            "memory_capacity_gb": Sourced(capacity / 1e9, source)}
    return Accelerator(
        id=f"{node.id}-cpu", name=f"{cpu.name} x{used}", vendor=cpu.vendor, device_class="cpu",
        memory_capacity_gb=capacity / 1e9, memory_bandwidth_gb_s=bandwidth / GB_PER_S,
        peak_tflops_dense=MappingProxyType({k: v / 1e12 for k, v in peaks.items()}),
        peak_tflops_sparse=MappingProxyType({}), tdp_w=None, unified_memory=True, scale_up_link=None,
        scale_up_gb_s_per_dir=None, host_link=None, purchase_usd=None, cloud_usd_per_hour=None, source=source,
        provenance=MappingProxyType(prov),
    )


def expert_link_bandwidth(node: System, deployment: Deployment) -> tuple[float, str]:
    """Bytes/s per direction from the experts' tier to GPU 0, on the node's topology graph."""
    nodes = set(node.graph.nodes)
    if deployment.expert_tier == "ssd":
        if "ssd0" not in nodes:
            raise MissingValueError(node.id, "ssds", "SSD-backed experts (the node lists no SSD)")
        return node.bandwidth_between("ssd0", "gpu0"), "ssd0 -> gpu0"
    for source in ("dram0", "cpu0", "host0"):
        if source in nodes:
            return node.bandwidth_between(source, "gpu0"), f"{source} -> gpu0"
    return node.host_to_gpu_bandwidth(), "host -> gpu0"


# ---- expert cache simulation -------------------------------------------------------------------------------


def step_accesses(router: Router, batch: int, steps: int, seed: int) -> list[list[np.ndarray]]:
    """Per decode step, per MoE layer, the distinct experts the batch activates, sampled from ``router``
    (``batch`` independent sequences; each sequence's tokens are consecutive samples of the router)."""
    sample = getattr(router, "sample", None)
    if sample is None:
        raise ScenarioError(f"router {router.name!r} cannot be sampled for a cache simulation; use a synthetic router")
    per_seq = [sample(steps, seed=seed + s) for s in range(batch)]  # each (L, steps, k)
    ids = np.stack(per_seq, axis=2)  # (L, steps, batch, k)
    return [[np.unique(ids[layer, t]) for layer in range(ids.shape[0])] for t in range(steps)]


def simulate_cache(
    accesses: list[list[np.ndarray]], layers: np.ndarray, capacity: int, policy: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Simulate one GPU expert cache of ``capacity`` experts over the access stream, in step then layer order,
    for the offloaded ``layers`` (bool mask). Returns (accesses, misses, first-ever accesses) per step; the
    first-ever (compulsory) misses happen once in a long-running server and are reported apart.

    LRU evicts the least recently used expert, LFU the least frequently used (ties: least recent), oracle is
    Belady's MIN (evict the expert used furthest in the future): the best any policy can do.
    """
    stream: list[tuple[int, int, int]] = [
        (t, layer, int(e)) for t, per_layer in enumerate(accesses) for layer in np.nonzero(layers)[0]
        for e in per_layer[layer]
    ]
    n_steps = len(accesses)
    hits = np.zeros(n_steps)
    total = np.zeros(n_steps)
    first = np.zeros(n_steps)
    seen: set[tuple[int, int]] = set()
    for t, layer, e in stream:
        if (layer, e) not in seen:
            seen.add((layer, e))
            first[t] += 1
    if capacity <= 0:
        for t, _, _ in stream:
            total[t] += 1
        return total, total.copy(), first
    next_use: list[float] = [math.inf] * len(stream)
    if policy == "oracle":
        last_seen: dict[tuple[int, int], int] = {}
        for i in range(len(stream) - 1, -1, -1):
            key = stream[i][1:]
            next_use[i] = last_seen.get(key, math.inf)
            last_seen[key] = i
    cache: OrderedDict[tuple[int, int], float] = OrderedDict()
    freq: dict[tuple[int, int], int] = {}
    for i, (t, layer, e) in enumerate(stream):
        key = (layer, e)
        total[t] += 1
        freq[key] = freq.get(key, 0) + 1
        if key in cache:
            hits[t] += 1
            cache.move_to_end(key)
            cache[key] = next_use[i]
            continue
        if len(cache) >= capacity:
            if policy == "lru":
                cache.popitem(last=False)
            elif policy == "lfu":
                victim = min(cache, key=lambda k: freq[k])  # first in recency order among the least frequent
                del cache[victim]
            else:
                victim = max(cache, key=lambda k: cache[k])
                del cache[victim]
        cache[key] = next_use[i]
    return total, total - hits, first


@dataclass(frozen=True)
class OffloadPlan:
    """What the offload simulation decided: cache size, hit rate, bytes over the link per decode step."""

    cache_experts: int
    hit_rate: float
    misses_per_step: float
    link_bytes_per_step: float
    link_bytes_s: float
    link_path: str
    expert_bytes: float
    offloaded_moe_layers: int
    policy: str
    prefetch: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "cache_experts": self.cache_experts, "hit_rate": self.hit_rate, "misses_per_step": self.misses_per_step,
            "link_gb_per_step": self.link_bytes_per_step / 1e9, "link_gb_s": self.link_bytes_s / 1e9,
            "link_path": self.link_path, "expert_gb": self.expert_bytes / 1e9,
            "offloaded_moe_layers": self.offloaded_moe_layers, "policy": self.policy, "prefetch": self.prefetch,
        }
