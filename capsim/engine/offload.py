"""Step-time adjustments of the offload and cpu-experts modes (models in :mod:`capsim.engine.deployment`).

Both start from the device-resident pass costs of :mod:`capsim.engine.roofline` and change only what moves:
- offload (and CPU-only / unified memory with SSD-placed experts): the device still reads the activated
  experts from its memory (they are in the cache when used); cache misses add bytes over each link on their
  way (SSD -> host DRAM, host DRAM -> GPU), overlapped with the device time (prefetch) or serialised;
- cpu-experts: the routed-expert work of the experts placed in DRAM/SSD leaves the GPU and runs on the CPU
  (from DRAM), plus two PCIe hand-offs of every MoE layer's activations; SSD-placed experts are paged into DRAM.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from capsim.engine import formulas_eval as formulas
from capsim.engine.deployment import (
    AccessStream,
    access_stream_of_ids,
    cache_hits,
    cpu_rates,
    expert_link_bandwidth,
    host_memory_bytes,
    runs_in_ggml_cpu_kernels,
    socket_allreduce_time,
    ssd_read_bandwidth,
    step_expert_ids,
    weight_copies,
)
from capsim.engine.memory import MemoryPlan
from capsim.engine.placement import DEVICE, DRAM, SSD, tier_counts
from capsim.engine.reports import DeploymentReport, LinkLoad, TierLoad
from capsim.engine.roofline import ACTIVATION_BYTES, PassTimes
from capsim.errors import DoesNotFitError, MissingValueError
from capsim.models.precision import compute_key
from capsim.routing.synthetic import SyntheticRouter
from capsim.units import GB

if TYPE_CHECKING:
    from capsim.engine.resolved import ResolvedScenario

FloatArray = np.ndarray

MAX_SAMPLED_ACCESSES = 200_000
"""Cap on the cache-simulation stream (accesses over all sampled steps): keeps one predict under a few seconds
for the largest MoEs at large batches; at least :data:`MIN_SAMPLED_STEPS` steps are always sampled."""
MIN_SAMPLED_STEPS = 8

PCIE_COPY_EFFICIENCY = 0.78
"""Share of a PCIe link's nominal per-direction rate that large pinned host-to-device copies reach, measured:
PCIe 3.0 x16, 12.15 of 15.75 GB/s = 0.77 (CUDA bandwidthTest, pinned, 32 MB, Tesla P100;
mpicbg-scicomp/gearshifft PR #82); PCIe 4.0 x16, 25 of 32 GB/s = 0.78 ("measured peak", A100, BaM authors,
ZaidQureshi/bam issue #54). Offloading engines copy experts from pinned host buffers (MoE-Infinity,
Mixtral-offloading, llama.cpp); pageable ones: :data:`PAGEABLE_COPY_SHARE`."""

PAGEABLE_COPY_SHARE = 0.54
"""Pageable host-to-device copies reach this share of pinned ones for expert-sized (>= 64 MiB) transfers: the
driver stages them through a pinned bounce buffer. Measured: RTX 4090, PCIe 4.0 x16, 64 MiB, pageable 12.88 vs
pinned 23.9 GB/s = 0.54 (NVlabs/cuda-oxide PR #976, pinned_overlap example output); PCIe 3.0, "without pinned
memory 5-6 GB/s, and 11-12 GB/s with" = 0.5 (rapidsai/dask-cuda PR #98). Smaller copies lose less (0.77 at
16 MiB on the same RTX 4090): the 64 MiB figure is the bound for the large experts offloading moves."""

COPY_LATENCY_S = 6e-6
"""Fixed cost of one host-to-device copy call (DMA set-up and completion), paid per weight tensor of every
expert fetched: rocm-bandwidth-test reports 6 us for a 4 KiB host-to-device copy on an MI300X
(ROCm/hip issue #3809, which measures 36-40 us through hipMemcpy's software stack: engines that queue
async copies on a stream pay the DMA figure). No CUDA figure for a lone async copy is in the reference."""

NEXT_LAYER_GATE_ACCURACY = 0.86
"""Share of a layer's experts that speculative prefetch names right one layer ahead by applying the next
layer's gate to the current hidden state (the predictor of Mixtral-offloading, Pre-gated MoE, AdapMoE,
HOBBIT, ProMoE): 88.6 % of routed slots on Qwen3-30B-A3B measured on device (Helldez/BigMoeOnEdge
docs/expert-prediction.md, "stale-gate predictor"), 0.826 hit@k one layer ahead for a post-hoc linear
predictor on a 16-expert MoE (splch/predictability-aware-training README, 3 seeds); mean 0.856. The rest are
fetched on demand when the router asks for them."""


def sample_steps(rs: ResolvedScenario, batch: int, cacheable: np.ndarray) -> int:
    """Decode steps to simulate: --cache-sample-steps (64), at most gen_len − 1, and no more than keep the
    stream of accesses to ``cacheable`` experts under :data:`MAX_SAMPLED_ACCESSES`."""
    wanted = max(1, min(rs.deployment.cache_sample_steps, max(rs.scenario.gen_len - 1, 1)))
    router = rs.router
    assert router is not None  # experts are offloaded for MoE models, which always resolve a router
    per_layer = router.activated_per_layer(np.array([float(batch)]))[:, 0]
    per_step = float((per_layer * cacheable.mean(axis=1)).sum())
    affordable = int(MAX_SAMPLED_ACCESSES // per_step) if per_step > 0 else wanted
    return max(min(wanted, affordable), min(wanted, MIN_SAMPLED_STEPS))


def _add_resource(cost: PassTimes, resource: str, seconds: np.ndarray, op: str) -> None:
    cost.time = cost.time + seconds
    cost.time_by_op[op] = cost.time_by_op.get(op, np.zeros_like(cost.time)) + seconds
    cost.time_by_resource[resource] = cost.time_by_resource.get(resource, np.zeros_like(cost.time)) + seconds


def expert_bytes_on_gpu(rs: ResolvedScenario) -> float:
    """Bytes of one routed expert per device (split over TP ranks)."""
    return (
        rs.model.expert_params
        * rs.sharding.weight_precision["routed_experts"].bytes_per_element
        / rs.sharding.tp
    )


def _expert_bytes(rs: ResolvedScenario) -> float:
    return expert_bytes_on_gpu(rs) * rs.sharding.tp


# ---- host tiers: what DRAM and the SSD hold ------------------------------------------------------------------


@dataclass
class HostTiers:
    """Bytes placed in host DRAM and on the SSD, the DRAM left as a page cache for SSD experts, and notes."""

    dram_bytes: float
    ssd_bytes: float
    dram_capacity: float | None
    page_cache_experts: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self, rs: ResolvedScenario) -> dict[str, TierLoad]:
        counts = tier_counts(rs.expert_tiers)
        device = "dram (device)" if rs.device_is_dram else "gpu"
        per = _expert_bytes(rs)
        out: dict[str, TierLoad] = {device: {"experts": counts["gpu"], "gb": counts["gpu"] * per / GB}}
        if not rs.device_is_dram:
            out["dram"] = {
                "experts": counts["dram"],
                "gb": self.dram_bytes / GB,
                "capacity_gb": None if self.dram_capacity is None else self.dram_capacity / GB,
            }
        out["ssd"] = {"experts": counts["ssd"], "gb": self.ssd_bytes / GB, "capacity_gb": None}
        return out


def host_tiers(rs: ResolvedScenario, dram_copies: int = 1) -> HostTiers:
    """Check host DRAM holds the DRAM-placed experts (``dram_copies`` NUMA copies); size the SSD page cache.

    SSD capacity is not in the hardware database, so SSD-placed experts are assumed to fit (said in a note).
    A host whose DRAM capacity is unknown gets the DRAM experts assumed to fit and no page cache."""
    tiers = rs.expert_tiers
    per = _expert_bytes(rs)
    dram_bytes = float((tiers == DRAM).sum()) * per * dram_copies
    ssd_bytes = float((tiers == SSD).sum()) * per
    notes: list[str] = []
    if ssd_bytes:
        notes.append(
            f"SSD capacity is not in the database: {ssd_bytes / GB:,.1f} GB of experts assumed to fit"
        )
    if rs.device_is_dram:
        return HostTiers(dram_bytes, ssd_bytes, None, 0, notes)  # DRAM is the device: plan_memory checked it
    try:
        capacity = host_memory_bytes(rs.node, rs.deployment)
    except MissingValueError:
        if dram_bytes:
            notes.append(
                f"host DRAM capacity unknown: {dram_bytes / GB:,.1f} GB of experts assumed to fit "
                "(--host-memory-gb)"
            )
        if ssd_bytes:
            notes.append(
                "host DRAM capacity unknown: no page cache assumed for SSD experts (--host-memory-gb)"
            )
        return HostTiers(dram_bytes, ssd_bytes, None, 0, notes)
    if dram_bytes > capacity:
        raise DoesNotFitError(
            dram_bytes,
            capacity,
            f"host DRAM of {rs.node.id}",
            "place some experts on the SSD (e.g. --placement cold-experts:N:ssd) or add DRAM",
        )
    return HostTiers(dram_bytes, ssd_bytes, capacity, int((capacity - dram_bytes) // per), notes)


# ---- offload: a device expert cache fed over the node's links ------------------------------------------------


@dataclass(frozen=True)
class CacheOutcome:
    """Steady-state result of the cache simulation: per decode step, accesses, device-cache misses and
    reads from the SSD (after the host page cache), plus the hit rate."""

    accesses_per_step: float
    misses_per_step: float
    ssd_reads_per_step: float
    hit_rate: float
    model: str = "simulated"
    """"analytic" (capsim.engine.cache_model) or "simulated" (a routing sample through the policy)."""
    sampled_steps: int = 0


def simulate_tiers(
    stream: AccessStream, tiers: np.ndarray, capacity: int, page_slots: int, policy: str, two_level: bool
) -> CacheOutcome:
    """Device cache (``policy``) over ``stream``; with ``two_level`` the SSD experts it misses go through an
    LRU host page cache of ``page_slots`` experts. Compulsory (first-ever) accesses are left out of the rates,
    which are then applied to every access (a server runs far longer than the sample)."""
    hits = cache_hits(stream, capacity, policy)
    miss = ~hits
    ssd_miss = miss & (tiers[stream.layer, stream.expert] == SSD)
    from_disk = ssd_miss.copy()
    if two_level and ssd_miss.any():
        from_disk[ssd_miss] = ~cache_hits(stream.subset(ssd_miss), page_slots, "lru")
    steady = ~stream.first_ever()
    n_steady = float(steady.sum())
    per_step = len(stream) / max(stream.steps, 1)
    miss_rate = float((miss & steady).sum()) / n_steady if n_steady else 0.0
    disk_rate = float((from_disk & steady).sum()) / n_steady if n_steady else 0.0
    return CacheOutcome(per_step, miss_rate * per_step, disk_rate * per_step, 1.0 - miss_rate)


class DecodeCache:
    """Steady-state outcomes of one scenario's expert cache under decode batches, per (batch, capacity).

    Analytic for LRU on a synthetic router (:mod:`capsim.engine.cache_model`: the experts' classes are built
    once here, then any number of (batch, capacity) pairs are evaluated together); otherwise simulated on a
    routing sample, pair by pair (LFU, Belady's oracle, trace replay, a partial host page cache)."""

    def __init__(
        self,
        rs: ResolvedScenario,
        cacheable: np.ndarray,
        page_slots: int,
        policy: str,
        two_level: bool,
    ) -> None:
        self.rs, self.cacheable, self.page_slots = rs, cacheable, page_slots
        self.policy, self.two_level = policy, two_level
        router, tiers = rs.router, rs.expert_tiers
        n_ssd = int((cacheable & (tiers == SSD)).sum())
        # a host page cache holding some but not all SSD experts sees the device cache's misses, which are
        # correlated with its own content (an expert missed is one unused for long): simulated, not modelled
        partial_page_cache = two_level and 0 < page_slots < n_ssd
        self.classes = None
        if policy == "lru" and isinstance(router, SyntheticRouter) and not partial_page_cache:
            from capsim.engine.cache_model import ExpertClasses

            moe = rs.model.moe
            assert moe is not None
            self.classes = ExpertClasses.of(router.inclusion, router.new_origin, cacheable, moe.top_k)
            on_ssd = (tiers[np.nonzero(cacheable)] == SSD).astype(np.float64)
            # SSD experts' misses are disk reads unless a page cache holds every SSD expert (then none, steadily)
            self.ssd_per_class = (
                np.zeros(self.classes.log_first.size)
                if (two_level and page_slots >= n_ssd)
                else np.bincount(self.classes.of_item, weights=on_ssd, minlength=self.classes.log_first.size)
            )

    def outcomes(self, batch: ArrayLike, capacity: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(accesses, misses, SSD reads) per decode step, elementwise over (batch, capacity) pairs."""
        if self.classes is not None:
            from capsim.engine.cache_model import lru_outcomes

            accesses, misses, per_expert = lru_outcomes(self.classes, batch, capacity)
            reads = np.add.accumulate(self.ssd_per_class[:, None] * per_expert, axis=0)[-1]
            return accesses, misses, np.asarray(reads, dtype=np.float64)
        b, c = np.broadcast_arrays(np.atleast_1d(batch), np.atleast_1d(capacity))
        out = np.array(
            [
                [o.accesses_per_step, o.misses_per_step, o.ssd_reads_per_step]
                for o in (self.outcome(int(x), int(y)) for x, y in zip(b.tolist(), c.tolist()))
            ],
            dtype=np.float64,
        ).reshape(b.size, 3)
        return out[:, 0], out[:, 1], out[:, 2]

    def outcome(self, batch: int, capacity: int) -> CacheOutcome:
        """The outcome of one decode batch (predict's call)."""
        if self.classes is not None:
            accesses, misses, reads = (float(x[0]) for x in self.outcomes(batch, capacity))
            if accesses <= 0:
                return CacheOutcome(0.0, 0.0, 0.0, 1.0, "analytic")
            return CacheOutcome(accesses, misses, reads, 1.0 - misses / accesses, "analytic")
        rs = self.rs
        steps = sample_steps(rs, batch, self.cacheable)
        assert rs.router is not None  # experts are offloaded for MoE models, which always resolve a router
        ids = step_expert_ids(rs.router, batch, steps, rs.scenario.seed)
        stream = access_stream_of_ids(ids, rs.expert_tiers.shape[1], self.cacheable)
        outcome = simulate_tiers(
            stream, rs.expert_tiers, capacity, self.page_slots, self.policy, self.two_level
        )
        return replace(outcome, sampled_steps=stream.steps)


def cache_outcome(
    rs: ResolvedScenario,
    batch: int,
    cacheable: np.ndarray,
    capacity: int,
    page_slots: int,
    policy: str,
    two_level: bool,
) -> CacheOutcome:
    """Steady-state cache outcome of a decode batch (:class:`DecodeCache` for one pair)."""
    return DecodeCache(rs, cacheable, page_slots, policy, two_level).outcome(batch, capacity)


def expert_links(rs: ResolvedScenario) -> tuple[tuple[float, str] | None, tuple[float, str] | None]:
    """(host DRAM -> device link, SSD -> host memory link) as (bytes/s, path); None where not used."""
    tiers = rs.expert_tiers
    host = None
    if not rs.device_is_dram and (tiers != DEVICE).any():
        width, path = expert_link_bandwidth(rs.node, replace(rs.deployment, expert_tier="dram"))
        # copies reach the measured pinned-copy share of the link's nominal rate (less for pageable buffers)
        share = PCIE_COPY_EFFICIENCY
        label = f"x{PCIE_COPY_EFFICIENCY} pinned-copy efficiency"
        if rs.deployment.host_copy == "pageable":
            share *= PAGEABLE_COPY_SHARE
            label += f", x{PAGEABLE_COPY_SHARE} pageable"
        host = (width * share, f"{path} ({label})")
    ssd = ssd_read_bandwidth(rs.node) if (tiers == SSD).any() else None
    return host, ssd


def exposed_link_time(
    device: ArrayLike, link_times: list[np.ndarray], prefetch: bool, accuracy: ArrayLike = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """(link seconds a pass adds to its ``device`` seconds, margin), elementwise over configurations.

    With prefetch, the share ``accuracy`` (p) of the fetched experts was named ahead of use and copies while
    the device computes, every link alongside the others; the rest are fetched when the router asks for them,
    each through its links in turn, while the device waits:
    added = max(p * max_links - device, 0) + (1 - p) * sum_links. Without prefetch every copy waits:
    added = sum_links. p = 1 is perfect overlap (max(device, slowest link)). margin = p * max_links - device
    (max_links - device without prefetch): its sign says whether the prefetched copies or the device bind."""
    dev = np.asarray(device, dtype=np.float64)
    times = [np.broadcast_to(np.asarray(t, dtype=np.float64), dev.shape) for t in link_times]
    slowest, total = np.max(times, axis=0), np.sum(times, axis=0)
    if not prefetch:
        return total, slowest - dev
    p = np.asarray(accuracy, dtype=np.float64)
    margin: np.ndarray = p * slowest - dev
    return np.maximum(margin, 0.0) + (1.0 - p) * total, margin


def charge_links(
    cost: PassTimes, link_times: list[np.ndarray], prefetch: bool, accuracy: ArrayLike = 1.0
) -> np.ndarray:
    """Add the exposed link time (:func:`exposed_link_time`) to ``cost``. Returns the margin before the
    charge (the sign says which side a prefetching pass waits on: a sweep tracks where it flips,
    :mod:`capsim.sweep.decode`); -inf without links."""
    if not link_times:
        return np.full(cost.time.shape, -np.inf)
    exposed, margin = exposed_link_time(cost.time, link_times, prefetch, accuracy)
    _add_resource(cost, "link", exposed, "expert_fetch")
    return margin


def copies_per_expert(rs: ResolvedScenario) -> int:
    """Weight tensors of one routed expert, each a copy call: 3 for gated FFN experts (gate, up, down), 2
    otherwise."""
    return 3 if rs.model.gated_ffn else 2


def expert_fetch_seconds(rs: ResolvedScenario, bandwidth: float, nbytes: float) -> float:
    """Seconds one expert's copy of ``nbytes`` occupies a host link of ``bandwidth``: its bytes plus the fixed
    cost of each copy call (:data:`COPY_LATENCY_S`)."""
    return nbytes / bandwidth + copies_per_expert(rs) * COPY_LATENCY_S


def _link_report(path: str, bandwidth: float, bytes_per_step: float, seconds: float) -> LinkLoad:
    """One link's load per decode step: bytes over all its instances (one per TP rank for host links), and
    the seconds one instance is busy (before any overlap with compute)."""
    return {"path": path, "gb_s": bandwidth / GB, "gb_per_step": bytes_per_step / GB, "s_per_step": seconds}


def expert_cache_capacity(rs: ResolvedScenario, free_bytes: ArrayLike) -> NDArray[np.int64]:
    """Experts the device's expert cache holds in ``free_bytes`` per device (what weights, buffers and the
    KV cache leave), at most every off-device expert; vectorised over configurations."""
    n_cacheable = int((rs.expert_tiers != DEVICE).sum())
    slots = np.floor_divide(
        np.maximum(np.asarray(free_bytes, dtype=np.float64), 0.0), expert_bytes_on_gpu(rs)
    )
    return np.minimum(slots, n_cacheable).astype(np.int64)


def decode_link_times(
    rs: ResolvedScenario, misses_per_step: ArrayLike, ssd_reads_per_step: ArrayLike
) -> list[np.ndarray]:
    """Seconds each link is busy per decode step (host link, then SSD), from the cache's misses and SSD reads
    per step (arrays of configurations, or scalars)."""
    host_link, ssd_link = expert_links(rs)
    misses = np.asarray(misses_per_step, dtype=np.float64)
    times: list[np.ndarray] = []
    if host_link is not None:
        # every TP rank fetches its shard of each missing expert over its own link: per-device bytes / link
        times.append(misses * expert_fetch_seconds(rs, host_link[0], expert_bytes_on_gpu(rs)))
    if ssd_link is not None:
        # SSD reads: all ranks' shards come from the (shared) drives; on a DRAM device every miss is a read
        reads = misses if rs.device_is_dram else np.asarray(ssd_reads_per_step, dtype=np.float64)
        times.append(reads * _expert_bytes(rs) / ssd_link[0])
    return times


def apply_offload(
    rs: ResolvedScenario, memory: MemoryPlan, batch: int, prefill: PassTimes, decode: PassTimes
) -> DeploymentReport:
    """Size the device expert cache, simulate it (and the host page cache) on the router, and add the link
    time of the misses to every pass."""
    model, dep, tiers = rs.model, rs.deployment, rs.expert_tiers
    moe = model.moe
    assert moe is not None  # resolve checked: internal invariant
    host = host_tiers(rs)
    per_dev = expert_bytes_on_gpu(rs)
    cacheable = tiers != DEVICE
    free = (
        memory.usable_bytes
        - memory.weights_bytes
        - memory.buffers_bytes
        - memory.kv_bytes_per_sequence * batch
    )
    capacity = int(expert_cache_capacity(rs, free))
    if capacity < moe.top_k:
        raise DoesNotFitError(
            memory.weights_bytes
            + memory.buffers_bytes
            + memory.kv_bytes_per_sequence * batch
            + moe.top_k * per_dev,
            memory.usable_bytes,
            f"the {'memory' if rs.device_is_dram else 'GPU'} of {rs.node.id}",
            "no room for even top-k experts in the expert cache; lower --batch, offload more experts or quantise",
        )
    two_level = not rs.device_is_dram
    outcome = cache_outcome(
        rs, batch, cacheable, capacity, host.page_cache_experts, dep.cache_policy, two_level
    )
    host_link, ssd_link = expert_links(rs)
    full = _expert_bytes(rs)
    fetch_times = decode_link_times(rs, outcome.misses_per_step, outcome.ssd_reads_per_step)
    links: dict[str, LinkLoad] = {}
    if host_link is not None:
        links["host_to_device"] = _link_report(
            host_link[1], host_link[0], outcome.misses_per_step * full, float(fetch_times[0])
        )
    if ssd_link is not None:
        reads = outcome.ssd_reads_per_step if two_level else outcome.misses_per_step
        links["ssd_to_host"] = _link_report(ssd_link[1], ssd_link[0], reads * full, float(fetch_times[-1]))
    charge_links(decode, fetch_times, dep.prefetch, dep.prefetch_accuracy)
    charge_links(
        prefill, prefill_link_times(rs, prefill, capacity, host), dep.prefetch, dep.prefetch_accuracy
    )
    primary = host_link or ssd_link
    assert primary is not None  # some expert is off the device in offload mode: internal invariant
    out: DeploymentReport = {
        "mode": dep.mode if dep.mode == "cpu" else "offload",
        "cache_experts": capacity,
        "hit_rate": outcome.hit_rate,
        "misses_per_step": outcome.misses_per_step,
        "link_gb_per_step": outcome.misses_per_step * full / GB,
        "link_gb_s": primary[0] / GB,
        "link_path": primary[1],
        "expert_gb": full / GB,
        "offloaded_moe_layers": int(rs.offloaded.sum()),
        "policy": dep.cache_policy,
        "prefetch": dep.prefetch,
        "prefetch_accuracy": dep.prefetch_accuracy,
        "host_copy": dep.host_copy,
        "cache_model": outcome.model,
        "sampled_steps": outcome.sampled_steps,
        "ssd_reads_per_step": outcome.ssd_reads_per_step if ssd_link is not None else 0.0,
        "page_cache_experts": host.page_cache_experts,
        "links": links,
        "tiers": host.to_dict(rs),
    }
    return _with_notes(out, host.notes)


def prefill_link_times(
    rs: ResolvedScenario, cost: PassTimes, capacity: ArrayLike, host: HostTiers
) -> list[np.ndarray]:
    """A prefill chunk activates A_l experts per layer; those off the device (their share of the layer's
    experts) are fetched unless cached: misses = accesses x (1 - cache / off-device experts), the steady
    state of a chunk that scans more experts than the cache holds. SSD misses beyond the page cache are reads.
    ``capacity``: the cache's experts, per pass (or one for all)."""
    if cost.time.size == 0:
        return []
    host_link, ssd_link = expert_links(rs)
    tiers = rs.expert_tiers
    off_share = (tiers != DEVICE).mean(axis=1)  # per MoE layer
    accesses = (cost.activated_by_layer() * off_share[:, None]).sum(axis=0)
    n_off = float((tiers != DEVICE).sum())
    misses = accesses * np.maximum(0.0, 1.0 - np.asarray(capacity, dtype=np.float64) / n_off)
    n_ssd = float((tiers == SSD).sum())
    uncached_ssd = max(n_ssd - host.page_cache_experts, 0.0) if not rs.device_is_dram else n_ssd
    reads = misses * (uncached_ssd / n_off)
    times = []
    if host_link is not None:
        times.append(misses * expert_fetch_seconds(rs, host_link[0], expert_bytes_on_gpu(rs)))
    if ssd_link is not None:
        times.append((reads if not rs.device_is_dram else misses) * _expert_bytes(rs) / ssd_link[0])
    return times


def _with_notes(out: DeploymentReport, notes: list[str]) -> DeploymentReport:
    if notes:
        out["note"] = "; ".join(notes)
    return out


# ---- cpu-experts: the CPU computes the experts placed in host memory ------------------------------------------


def off_device_activation(
    rs: ResolvedScenario, cost: PassTimes, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(A_S, k_S): expected distinct experts of the set ``mask`` (MoE layers x experts) activated per layer and
    pass, and expected experts of the set per token, per layer.

    k_S,l = Σ_{i∈S_l} π_l,i exactly. A_S,l = A_l · Σ_{i∈S} a_i / Σ_i a_i with a_i = 1 − (1 − π_i)^T: the
    router's count split in proportion to each expert's chance of being hit by T independent tokens (exact for
    independent tokens, proportional otherwise)."""
    rows, layer_row, k_set = _off_device_rows(rs, cost, mask)
    return rows[layer_row], k_set


def _off_device_rows(
    rs: ResolvedScenario, cost: PassTimes, mask: np.ndarray
) -> tuple[np.ndarray, NDArray[np.intp], np.ndarray]:
    """:func:`off_device_activation` with the layers that share every input computed once: (distinct rows of
    A_S, the row of each layer, k_S per layer). Layers share a row when they share the router's activation row
    and their set is all or none of their experts (the common case: every layer's experts in DRAM), so the
    per-layer arrays cost (distinct rows x passes), not (layers x passes); each value is the same product."""
    pi = rs.inclusion()
    k_set = (pi * mask).sum(axis=1)
    layers = mask.shape[0]
    act_row = (
        np.arange(layers) if cost.activated_rows is None else np.asarray(cost.activated_rows, dtype=np.intp)
    )
    full, some = np.asarray(mask.all(axis=1)), np.asarray(mask.any(axis=1))
    split = np.nonzero(some & ~full)[0]
    # a layer whose experts are all in the set has share 1 wherever a token arrives (Σ_S a_i / Σ_i a_i = 1: the
    # same sum over and under the bar), one with none of them share 0; only a layer split between the GPU and
    # the CPU needs each expert's hit chance, an (E x distinct T) power per such layer
    kind = np.where(full, -1, -2)
    kind[split] = split
    _, first, layer_row = np.unique(
        np.column_stack([act_row, kind]), axis=0, return_index=True, return_inverse=True
    )
    layer_row = layer_row.reshape(-1)
    share = np.zeros((first.size, cost.tokens.shape[0]))
    share[full[first]] = cost.tokens > 0
    split_rows = np.nonzero(kind[first] >= 0)[0]
    if split_rows.size:
        which = first[split_rows]
        unique, inverse = np.unique(cost.tokens, return_inverse=True)
        hit = 1.0 - (1.0 - pi[which, :, None]) ** unique[None, None, :]  # (split layers, E, distinct T)
        total = hit.sum(axis=1)
        part = (hit * mask[which, :, None]).sum(axis=1)
        share[split_rows] = np.divide(part, total, out=np.zeros_like(total), where=total > 0)[
            :, inverse.reshape(-1)
        ]
    return cost.activated_experts[act_row[first]] * share, layer_row, k_set


def _gpu_expert_fraction_left(
    rs: ResolvedScenario, cost: PassTimes, a_cpu_sum: np.ndarray, k_cpu: np.ndarray
) -> np.ndarray:
    """Fraction of the GPU's routed-expert time that stays on the GPU: max(F_left/R, B_left/W) / max(F/R, B/W)
    with F ∝ Σ_l k_l (token-expert pairs), B ∝ Σ_l A_l (weights read); ``a_cpu_sum``: Σ_l A_S,l per pass."""
    moe = rs.model.moe
    assert moe is not None
    prec = rs.sharding.weight_precision["routed_experts"]
    rate = rs.rates.flops_rate(compute_key(prec, frozenset(rs.rates.peak_flops)))
    n_moe = rs.model.num_moe_layers
    flops = 2 * cost.tokens * moe.top_k * rs.model.expert_params * n_moe
    flops_left = 2 * cost.tokens * (moe.top_k * n_moe - k_cpu.sum()) * rs.model.expert_params
    a_all = cost.activated_by_layer().sum(axis=0)
    weights = a_all * rs.model.expert_params * prec.bytes_per_element
    weights_left = (a_all - a_cpu_sum) * rs.model.expert_params * prec.bytes_per_element
    before = rs.rates.gemm_time(flops / rate, weights / rs.rates.bytes_rate)
    after = rs.rates.gemm_time(flops_left / rate, weights_left / rs.rates.bytes_rate)
    return np.divide(after, before, out=np.zeros_like(before), where=before > 0)


def _remove_gpu_expert_time(cost: PassTimes, removed: np.ndarray) -> None:
    """Take ``removed`` seconds of routed-expert time off the GPU, from the memory and compute buckets in
    proportion to their share (the op's own split is not kept)."""
    cost.time = cost.time - removed
    cost.time_by_op["routed_experts"] = cost.time_by_op["routed_experts"] - removed
    mem, comp = cost.time_by_resource["memory"], cost.time_by_resource["compute"]
    both = mem + comp
    share_mem = np.divide(mem, both, out=np.zeros_like(both), where=both > 0)
    cost.time_by_resource["memory"] = mem - removed * share_mem
    cost.time_by_resource["compute"] = comp - removed * (1.0 - share_mem)


def apply_cpu_experts(
    rs: ResolvedScenario, batch: int, prefill: PassTimes, decode: PassTimes
) -> DeploymentReport:
    """Move the off-GPU experts' work from the GPU to the CPU (plus PCIe hand-offs and SSD paging)."""
    model, dep = rs.model, rs.deployment
    moe = model.moe
    assert moe is not None
    host = host_tiers(rs, dram_copies=weight_copies(rs.node, dep))
    prec = rs.sharding.weight_precision["routed_experts"]
    # GGUF experts run in ggml's CPU kernels: the FP32 vector rate (deployment.GGML_CPU_COMPUTE)
    profile = rs.engine
    share = profile.replicate_socket_share if profile and profile.replicate_socket_share is not None else 1.0
    bandwidth, peaks, sockets, how = cpu_rates(
        rs.node, dep, ggml=runs_in_ggml_cpu_kernels(prec.name), socket_share=share
    )
    cpu, _ = rs.node.cpus[0]
    cpu_eff = (
        rs.cpu_efficiency
    )  # from the database the scenario was resolved against (--hardware-db included)
    if cpu_eff is None:
        raise MissingValueError(rs.node.id, "efficiency class 'cpu'", "CPU-computed experts")
    key = compute_key(prec, frozenset(peaks))
    flops_rate = peaks[key] * cpu_eff.compute_fraction
    # sustained streaming (per CPU entry) x the fraction CPU MoE kernels reach of it (fitted, efficiency.toml)
    kernel_bw = (
        profile.cpu_kernel_bw_fraction
        if profile is not None and profile.cpu_kernel_bw_fraction is not None
        else cpu_eff.kernel_bw_fraction
    )
    bytes_rate = bandwidth * cpu_eff.memory_bw_fraction * kernel_bw
    link_bw = rs.node.host_to_gpu_bandwidth() * PCIE_COPY_EFFICIENCY
    # one small host<->device copy: NCCL's base latency plus one PCI hop (the GPU's efficiency entry), standing
    # in for a DMA launch; no measured figure for KTransformers-style hand-offs is in the reference
    handoff_latency = rs.rates.allreduce_base_latency_s + rs.rates.allreduce_hop_latency_s
    on_cpu = rs.expert_tiers != DEVICE
    cpu_layers = on_cpu.any(axis=1)
    n_layers_cpu = int(cpu_layers.sum())
    paging = _ssd_paging(rs, batch, host)
    for cost, page_time in ((prefill, paging["prefill_s"]), (decode, paging["decode_s"])):
        if cost.time.size == 0:
            continue
        a_rows, layer_row, k_cpu = _off_device_rows(rs, cost, on_cpu)
        # layers with the same activation row and the same k_S cost the same: each such class is evaluated
        # once, then expanded to its layers and summed over them in layer order (the per-layer sum's bits)
        _, first, cls = np.unique(
            np.column_stack([layer_row, k_cpu]), axis=0, return_index=True, return_inverse=True
        )
        f, wb, ob = formulas.evaluate(
            "routed_experts",
            {
                "T": cost.tokens[None, :],
                "k": k_cpu[first][:, None],
                "N_exp": float(model.expert_params),
                "A": a_rows[layer_row[first]],
                "b_w": prec.bytes_per_element,
                "d": float(model.hidden_size),
                "b_a": ACTIVATION_BYTES,
            },
        )
        per_class = np.maximum(
            f / flops_rate, (wb + ob) / bytes_rate
        )  # (classes, passes), 0: GPU-only layers
        cpu_time = per_class[cls.reshape(-1)].sum(axis=0)
        kept = _gpu_expert_fraction_left(rs, cost, a_rows[layer_row].sum(axis=0), k_cpu)
        _remove_gpu_expert_time(
            cost, cost.time_by_op.get("routed_experts", np.zeros_like(cost.time)) * (1 - kept)
        )
        handoff = (
            n_layers_cpu
            * 2
            * (handoff_latency + cost.tokens * model.hidden_size * ACTIVATION_BYTES / link_bw)
        )
        # --numa tp: the CPU experts' partial sums are all-reduced between the sockets in every CPU layer
        cpu_time = cpu_time + n_layers_cpu * socket_allreduce_time(
            rs.node, dep, cost.tokens, model.hidden_size, cpu_eff.allreduce_base_latency_s
        )
        _add_resource(cost, "cpu", cpu_time, "cpu_experts")
        _add_resource(cost, "link", handoff, "cpu_gpu_handoff")
        if paging["reads_per_step"]:
            # page faults block the CPU thread that touches the expert: serial with the compute
            _add_resource(cost, "link", np.broadcast_to(page_time, cost.time.shape).copy(), "ssd_paging")
    out: DeploymentReport = {
        "mode": "cpu-experts",
        "cpu": cpu.id,
        "sockets_streaming": sockets,
        "cpu_bandwidth_gb_s": bandwidth / GB,
        "cpu_peak_tflops": peaks[key] / 1e12,
        "cpu_precision": key,
        "derivation": how,
        "offloaded_moe_layers": n_layers_cpu,
        "handoff_link_gb_s": link_bw / GB,
        "handoff_latency_s": handoff_latency,
        "cpu_efficiency": {
            "memory_bw_fraction": cpu_eff.memory_bw_fraction,
            "kernel_bw_fraction": kernel_bw,
            "compute_fraction": cpu_eff.compute_fraction,
            "replicate_socket_share": share,
        },
        "tiers": host.to_dict(rs),
        "links": paging["links"],
        "ssd_reads_per_step": paging["reads_per_step"],
        "page_cache_experts": host.page_cache_experts,
    }
    return _with_notes(out, host.notes)


def _ssd_paging(rs: ResolvedScenario, batch: int, host: HostTiers) -> dict[str, Any]:
    """SSD-placed experts computed by the CPU are paged into DRAM on use: an LRU page cache of the DRAM left
    after the DRAM-placed experts; misses per decode step x expert bytes / SSD read bandwidth. Prefill reads
    the SSD experts beyond the page cache once per chunk."""
    tiers = rs.expert_tiers
    n_ssd = int((tiers == SSD).sum())
    if n_ssd == 0:
        return {"decode_s": 0.0, "prefill_s": 0.0, "reads_per_step": 0.0, "links": {}}
    bw, path = ssd_read_bandwidth(rs.node)
    outcome = cache_outcome(rs, batch, tiers == SSD, host.page_cache_experts, 0, "lru", two_level=False)
    full = _expert_bytes(rs)
    reads = outcome.misses_per_step
    prefill_reads = max(n_ssd - host.page_cache_experts, 0)
    return {
        "decode_s": reads * full / bw,
        "prefill_s": prefill_reads * full / bw,
        "reads_per_step": reads,
        "links": {"ssd_to_host": _link_report(path, bw, reads * full, reads * full / bw)},
    }


def apply_socket_tp(rs: ResolvedScenario, prefill: PassTimes, decode: PassTimes) -> DeploymentReport:
    """``--mode cpu --numa tp``: every decoder layer all-reduces its activations between the sockets twice
    (after attention and after the FFN), over the socket link (:func:`capsim.engine.deployment.socket_allreduce_time`);
    the latency is the cpu class's all-reduce base latency."""
    eff = rs.efficiency
    per_layer = {}
    for cost in (prefill, decode):
        if cost.time.size == 0:
            continue
        seconds = (
            2
            * rs.model.num_layers
            * socket_allreduce_time(
                rs.node, rs.deployment, cost.tokens, rs.model.hidden_size, eff.allreduce_base_latency_s
            )
        )
        _add_resource(cost, "interconnect", seconds, "socket_allreduce")
        per_layer["decode" if cost is decode else "prefill"] = float(seconds.mean()) / rs.model.num_layers
    return {"mode": "cpu", "numa": "tp", "socket_allreduce_s_per_layer": per_layer}
