"""Where the weights live and which device computes what: execution modes beyond GPU-resident serving.

Modes (``--mode``):

- ``gpu``: every weight in GPU memory (vLLM/SGLang-like). The default; a ``--placement`` that moves experts
  off the GPU implies ``offload``.
- ``offload``: the routed experts chosen by ``--placement`` (or ``--expert-layers``/``--expert-tier``) live in
  host DRAM or on an NVMe SSD; the GPU keeps everything else plus an *expert cache* in the memory left after the
  KV cache. Each step, the activated experts that miss the cache are copied to the GPU; an SSD expert that is
  also missing from the host's page cache (the DRAM not holding DRAM-tier experts, LRU like the OS page cache)
  is first read from the SSD. Hits/misses come from simulating the cache policy (LRU, LFU, Belady's oracle) on
  a routing sample of the scenario's router, in layer order. With ``prefetch`` the copies overlap GPU compute
  perfectly (MoE-Infinity style; an optimistic bound), without it they serialise (Mixtral-offloading style):
  step = max(GPU time, each link's time) or GPU time + the links' times.
- ``cpu-experts``: the off-GPU routed experts are *computed on the CPU* from DRAM (KTransformers, Fiddler,
  llama.cpp ``--n-cpu-moe``); attention, router, shared and GPU-placed experts stay on the GPU. Per MoE layer
  the activations cross PCIe twice (T·d·2 bytes each way). CPU time per layer = max(FLOPs / (CPU peak·η_c),
  A_cpu·N_exp·b_w / (DRAM bandwidth·η_m)). SSD-placed experts are paged into DRAM on demand (mmap-style,
  synchronous page faults).
- ``cpu``: everything on the CPU sockets (CPU-only serving); SSD-placed experts are paged into DRAM.

NUMA (``--numa``), for S sockets of per-socket bandwidth B joined by a link of L per direction:

- ``single``: the weights and the threads on one socket: bandwidth B, one socket's FLOPS;
- ``replicate``: one copy of the weights per socket (memory x S), each socket's threads read their local copy
  (KTransformers USE_NUMA, llama.cpp ``--numa distribute`` with a copy per node): S·B, S sockets' FLOPS;
- ``interleave``: one copy with pages spread over the sockets (``numactl --interleave``): a share (S−1)/S of
  every socket's reads crosses the link, so each socket streams at min(B, L·S/(S−1)) and the node at S times that;
- ``tp``: tensor parallel across sockets (SGLang's multi-NUMA TP): each socket holds and reads its 1/S shard
  of every matrix (S·B, one copy in memory) and every decoder layer all-reduces its activations over the
  link twice (latency + T·d·2 bytes / L each).

``--threads N`` (CPU execution) uses N of the sockets' physical cores: FLOPS scale by N / cores (SMT threads
share a core's vector units); bandwidth is not capped by the thread count (no per-core bandwidth figure is in
the database).
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from capsim.errors import MissingValueError, ScenarioError
from capsim.hardware.entries import Accelerator, Sourced, System
from capsim.units import GB, GB_PER_S, TFLOPS

if TYPE_CHECKING:
    from capsim.routing import Router

MODES = ("gpu", "offload", "cpu-experts", "cpu")
CACHE_POLICIES = ("lru", "lfu", "oracle")
HOST_COPIES = ("pinned", "pageable")
EXPERT_TIERS = ("dram", "ssd")
NUMA_POLICIES = ("single", "replicate", "interleave", "tp")


@dataclass(frozen=True)
class Deployment:
    """Execution mode and placement of the routed experts."""

    mode: str = "gpu"
    expert_layers: tuple[int, int] | None = None
    """MoE-layer index range [first, last) whose routed experts leave the GPU; None = every MoE layer."""
    expert_tier: str = "dram"
    cache_policy: str = "lru"
    prefetch: bool = True
    prefetch_accuracy: float = 1.0
    """With prefetch: share of the fetched experts named ahead of use (copied while the device computes);
    the rest are fetched on demand (capsim.engine.offload.exposed_link_time). 1 = perfect overlap."""
    host_copy: str = "pinned"
    """Host buffers the experts are copied from: pinned (page-locked) or pageable (staged by the driver)."""
    numa: str = "single"
    host_memory_gb: float | None = None
    cache_sample_steps: int = 64
    threads: int | None = None
    """CPU threads (physical cores) used; None = every core of the sockets used."""
    placement: str | None = None
    """A ``--placement`` spec (:mod:`capsim.engine.placement`); None = derived from mode, expert_layers, expert_tier."""

    def validate(self) -> None:
        checks = (
            (self.mode, MODES, "mode"),
            (self.cache_policy, CACHE_POLICIES, "cache policy"),
            (self.expert_tier, EXPERT_TIERS, "expert tier"),
            (self.numa, NUMA_POLICIES, "numa policy"),
            (self.host_copy, HOST_COPIES, "host copy buffer"),
        )
        for value, valid, label in checks:
            if value not in valid:
                raise ScenarioError(f"unknown {label} {value!r}; choose one of {', '.join(valid)}")
        if self.threads is not None and (
            isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1
        ):
            raise ScenarioError(f"--threads must be an integer >= 1, got {self.threads!r}")
        if not 0.0 <= self.prefetch_accuracy <= 1.0:
            raise ScenarioError(
                f"--prefetch-accuracy must be between 0 and 1 (a share of the fetched experts), "
                f"got {self.prefetch_accuracy!r}"
            )
        if self.host_memory_gb is not None and self.host_memory_gb <= 0:
            raise ScenarioError(f"host memory must be > 0 GB, got {self.host_memory_gb}")
        if self.placement is not None:
            from capsim.engine.placement import parse_placement

            parse_placement(self.placement)


def parse_layer_range(text: str | None, num_moe_layers: int) -> tuple[int, int] | None:
    """``"10:60"`` -> (10, 60) (MoE-layer indices, end exclusive, clipped); ``"all"``/None -> None."""
    if text is None or text.strip() in ("", "all"):
        return None
    try:
        first_s, last_s = text.split(":")
        first = int(first_s) if first_s.strip() else 0
        last = int(last_s) if last_s.strip() else num_moe_layers
    except ValueError:
        raise ScenarioError(
            f"cannot read --expert-layers {text!r}; write FIRST:LAST, e.g. 10:60 (MoE layers)"
        ) from None
    if not 0 <= first < last:
        raise ScenarioError(f"--expert-layers {text!r} is empty; need 0 <= FIRST < LAST")
    if first >= num_moe_layers:
        raise ScenarioError(f"--expert-layers {text!r} starts past the model's {num_moe_layers} MoE layers")
    return first, min(last, num_moe_layers)


def host_memory_bytes(node: System, deployment: Deployment) -> float:
    """Host DRAM capacity: --host-memory-gb, else the system's dram.capacity_gb (MissingValueError if neither)."""
    if deployment.host_memory_gb is not None:
        return deployment.host_memory_gb * GB
    if node.dram is None:
        raise MissingValueError(node.id, "dram", "host-memory fit; pass --host-memory-gb")
    if node.dram.capacity_gb is None:
        raise MissingValueError(node.id, "dram.capacity_gb", "host-memory fit; pass --host-memory-gb")
    return node.dram.capacity_gb * GB


def sockets_used(node: System, deployment: Deployment) -> int:
    """Sockets whose threads and memory the CPU execution uses: 1 for ``single``, all for the other modes."""
    if not node.cpus:
        raise MissingValueError(node.id, "cpus", "CPU execution (the node lists no CPU entry)")
    return 1 if deployment.numa == "single" else node.cpus[0][1]


def weight_copies(node: System, deployment: Deployment) -> int:
    """Copies of the CPU-held weights in host memory: one per socket with ``replicate``, else one."""
    return node.cpus[0][1] if deployment.numa == "replicate" and node.cpus else 1


def socket_link_bandwidth(node: System, what: str) -> float:
    """Bytes/s per direction between two sockets of the node's CPU (MissingValueError when not listed)."""
    cpu, _ = node.cpus[0]
    if cpu.socket_link_gb_s_per_dir is None:
        raise MissingValueError(cpu.id, "socket_link_gb_s_per_dir", what)
    return cpu.socket_link_gb_s_per_dir * GB_PER_S


GGML_CPU_COMPUTE = "fp32"
"""The peak GGUF weights compute at on a CPU: llama.cpp's ggml CPU kernels (and KTransformers v0.2's
llamafile/ggml ones) unpack k-quant and MXFP4 blocks and multiply with AVX-512/AVX2 integer or FMA
instructions, not AMX tiles (KTransformers' tutorial: its AMX kernel is v0.3 only). Measured prefill rates of
GGUF models on CPUs, as a share of the FP32 vector peak of the cores used (FLOPs of the routed experts or of
the whole model per second): KTransformers v0.2 DeepSeek-V3 Q4_K_M, 500-token prompt, one Xeon 6454S socket
54.21 tok/s -> 0.49, two sockets 82.94 tok/s -> 0.38 (kvcache-ai/ktransformers
doc/en/DeepseekR1_V3_tutorial.md @ 034a116); llama.cpp gpt-oss-120b MXFP4 pp512 on 44 EPYC 9B14 cores
205.86 tok/s -> 0.62 (validation/published/measurements.toml). Geometric mean 0.49: the cpu class's
compute_fraction (0.5) applied to this peak (docs/deployment.md, CPU prefill)."""


def runs_in_ggml_cpu_kernels(weight_dtype: str | None) -> bool:
    """Whether weights of this dtype compute in ggml-style CPU vector kernels on a CPU: GGUF file and block
    types, and MXFP4 (ggml's GGML_TYPE_MXFP4 blocks, gpt-oss's GGUF; no CPU has FP4 hardware)."""
    from capsim.models.ggml_types import is_gguf

    name = (weight_dtype or "").lower()
    return is_gguf(name) or name == "mxfp4"


def cpu_rates(
    node: System, deployment: Deployment, ggml: bool = False, socket_share: float = 1.0
) -> tuple[float, dict[str, float], int, str]:
    """(streaming bandwidth bytes/s, peak FLOP/s by precision, sockets used, derivation) of the node's CPUs.

    Per socket: the populated channels' peak (the CPU entry's own figure when the node lists no DRAM); over the
    sockets used as the NUMA mode says
    (module docstring); FLOPS x threads / cores with ``--threads``. ``ggml``: the weights are GGUF and run in
    ggml's CPU kernels, which reach the FP32 vector rate only (:data:`GGML_CPU_COMPUTE`).

    ``socket_share`` (``--numa replicate`` over S > 1 sockets): the share of one socket's rate each further
    socket adds, so S sockets give 1 + (S − 1)·share sockets' bandwidth and FLOP/s; 1 = perfect scaling. An
    engine whose threads on every socket work on each expert from their local copy and synchronise per op
    (KTransformers' USE_NUMA build) measures less than 1 (capsim/engine/engines.toml)."""
    if not node.cpus:
        raise MissingValueError(node.id, "cpus", "CPU execution (the node lists no CPU entry)")
    cpu, sockets = node.cpus[0]
    per_socket = cpu.memory_bandwidth_bytes_s
    how = f"{cpu.id}: {cpu.memory_bandwidth_gb_s:g} GB/s per socket"
    if node.dram is not None:
        # the system entry says which DIMMs are installed (e.g. MRDIMM-8800 on a Xeon 6980P rated with DDR5-6400
        # in its own entry): their channels set the bandwidth (the loader checks the channel count fits)
        populated = node.dram.bandwidth_bytes_s / max(sockets, 1)
        if populated != per_socket:
            per_socket = populated
            how = (
                f"{cpu.id}: {populated / GB_PER_S:g} GB/s per socket from {node.dram.channels // max(sockets, 1)} "
                f"populated channels of {node.dram.dram.id}"
            )
    used = sockets_used(node, deployment)
    if deployment.numa == "interleave" and used > 1:
        link = socket_link_bandwidth(node, "--numa interleave (reads crossing the socket link)")
        crossing = link * used / (used - 1)
        if crossing < per_socket:
            per_socket = crossing
            how += f", limited by the socket link ({link / GB_PER_S:g} GB/s per direction)"
    cores = cpu.cores * used
    threads = min(deployment.threads, cores) if deployment.threads is not None else cores
    peaks = {key: v * TFLOPS * used * threads / cores for key, v in cpu.peak_tflops_dense.items()}
    if ggml and GGML_CPU_COMPUTE in peaks:
        peaks = {GGML_CPU_COMPUTE: peaks[GGML_CPU_COMPUTE]}
        how += "; GGUF weights in ggml CPU kernels: FP32 vector rate"
    how += f"; {used} socket(s) streaming ({deployment.numa})"
    if deployment.threads is not None:
        how += f"; {threads} of {cores} cores computing"
    if deployment.numa == "replicate" and used > 1 and socket_share != 1.0:
        scale = (1.0 + (used - 1) * socket_share) / used
        peaks = {key: v * scale for key, v in peaks.items()}
        how += f"; the engine's further sockets add {socket_share:g} of a socket each"
        return per_socket * used * scale, peaks, used, how
    return per_socket * used, peaks, used, how


def socket_allreduce_time(
    node: System, deployment: Deployment, tokens: np.ndarray, hidden: int, latency_s: float
) -> np.ndarray:
    """``--numa tp``: seconds of one all-reduce of the pass's activations between the sockets: latency +
    T·d·2 bytes x (S−1)/S over the socket link (each socket sends the others its partial sums once)."""
    used = sockets_used(node, deployment)
    if deployment.numa != "tp" or used < 2:
        return np.zeros_like(np.asarray(tokens, dtype=np.float64))
    link = socket_link_bandwidth(node, "--numa tp (the per-layer all-reduce between sockets)")
    data = np.asarray(tokens, dtype=np.float64) * hidden * 2.0 * (used - 1) / used
    return latency_s + data / link


def cpu_device(node: System, deployment: Deployment, ggml: bool = False) -> Accelerator:
    """The node's CPU sockets as a compute device (for ``--mode cpu``), with its derivation as provenance;
    ``ggml``: GGUF weights (:func:`cpu_rates`)."""
    bandwidth, peaks, used, how = cpu_rates(node, deployment, ggml)
    cpu, _sockets = node.cpus[0]
    capacity = host_memory_bytes(node, deployment) / weight_copies(node, deployment)
    source = f"derived from {node.id}: {how}"
    prov = {
        "memory_bandwidth_gb_s": Sourced(bandwidth / GB_PER_S, source),
        "memory_capacity_gb": Sourced(capacity / GB, source),
    }
    return Accelerator(
        id=f"{node.id}-cpu",
        name=f"{cpu.name} x{used}",
        vendor=cpu.vendor,
        device_class="cpu",
        memory_capacity_gb=capacity / GB,
        memory_bandwidth_gb_s=bandwidth / GB_PER_S,
        peak_tflops_dense=MappingProxyType({k: v / TFLOPS for k, v in peaks.items()}),
        peak_tflops_sparse=MappingProxyType({}),
        tdp_w=None,
        unified_memory=True,
        scale_up_link=None,
        scale_up_gb_s_per_dir=None,
        host_link=None,
        purchase_usd=None,
        cloud_usd_per_hour=None,
        source=source,
        provenance=MappingProxyType(prov),
    )


def _host_source(node: System) -> str | None:
    nodes = set(node.topology)
    return next((n for n in ("dram0", "cpu0", "host0") if n in nodes), None)


def expert_link_bandwidth(node: System, deployment: Deployment) -> tuple[float, str]:
    """Bytes/s per direction from the experts' tier (``deployment.expert_tier``) to GPU 0, on the node's
    topology graph (the widest path's narrowest edge)."""
    nodes = set(node.topology)
    if deployment.expert_tier == "ssd":
        if "ssd0" not in nodes:
            raise MissingValueError(node.id, "ssds", "SSD-backed experts (the node lists no SSD)")
        return node.bandwidth_between("ssd0", "gpu0"), "ssd0 -> gpu0"
    source = _host_source(node)
    if source is not None and "gpu0" in nodes:
        return node.bandwidth_between(source, "gpu0"), f"{source} -> gpu0"
    return node.host_to_gpu_bandwidth(), "host -> gpu0"


def ssd_read_bandwidth(node: System) -> tuple[float, str]:
    """Bytes/s from the node's SSDs into host memory: the widest path from ssd0 to DRAM (or the CPU), times
    the number of SSDs (assumed striped, RAID-0 style). MissingValueError when the node lists no SSD."""
    ssds = sorted(n for n in node.topology if str(n).startswith("ssd"))
    if not ssds:
        raise MissingValueError(node.id, "ssds", "SSD-backed experts (the node lists no SSD)")
    target = _host_source(node)
    if target is None:
        raise MissingValueError(node.id, "a path from ssd0 to host memory", "SSD-backed experts")
    width = node.bandwidth_between(ssds[0], target)
    striped = f" x {len(ssds)} SSDs striped" if len(ssds) > 1 else ""
    return width * len(ssds), f"{ssds[0]} -> {target}{striped}"


# ---- expert cache simulation -------------------------------------------------------------------------------


def step_expert_ids(router: Router, batch: int, steps: int, seed: int) -> NDArray[np.int64]:
    """(MoE layers, steps, batch, k) expert ids the batch's sequences route to in each decode step.

    Synthetic routers are sampled once for ``batch`` x ``steps`` consecutive tokens, cut into ``batch`` runs
    of ``steps`` tokens, one per sequence (one draw costs about as much as a short one; runs of a stationary
    router are independent sequences but for the state carried across a run boundary). A trace router replays
    its trace the same way (fewer steps when the trace is short)."""
    from capsim.routing.synthetic import SyntheticRouter
    from capsim.routing.trace_router import TraceRouter

    if isinstance(router, SyntheticRouter | TraceRouter):
        # (L, N, k) token-expert ids in token order
        if isinstance(router, SyntheticRouter):
            topk = np.asarray(router.sample(batch * steps, seed=seed))
        else:
            topk = np.asarray(router.trace.topk_ids)
        steps = min(steps, topk.shape[1] // batch)
        if steps < 1:  # a trace shorter than one token per sequence (a sample has batch x steps tokens)
            name = router.trace.name if isinstance(router, TraceRouter) else router.name
            raise ScenarioError(
                f"trace {name!r} has {topk.shape[1]} tokens, fewer than the batch of {batch}; "
                "use a longer trace or a smaller --batch for the cache simulation"
            )
        runs = topk[:, : batch * steps].reshape(topk.shape[0], batch, steps, topk.shape[2])
        return np.asarray(runs.transpose(0, 2, 1, 3), dtype=np.int64)
    raise ScenarioError(
        f"router {router.name!r} cannot be sampled for a cache simulation; use a synthetic router"
    )


def step_accesses(router: Router, batch: int, steps: int, seed: int) -> list[list[np.ndarray]]:
    """Per decode step, per MoE layer, the distinct experts the batch activates (sorted)."""
    ids = step_expert_ids(router, batch, steps, seed)
    return [[np.unique(ids[layer, t]) for layer in range(ids.shape[0])] for t in range(ids.shape[1])]


def access_stream_of_ids(ids: NDArray[np.int64], num_experts: int, cacheable: np.ndarray) -> AccessStream:
    """:func:`access_stream` of :func:`step_accesses` without the per-(step, layer) loop: the distinct
    experts of each (step, layer), in step, layer, expert order, kept where ``cacheable`` (a bool mask over
    MoE layers or over (layer, expert)). Same stream, element for element."""
    layers, steps = ids.shape[0], ids.shape[1]
    present = np.zeros((steps, layers, num_experts), dtype=bool)
    t_idx = np.arange(steps)[None, :, None, None]
    l_idx = np.arange(layers)[:, None, None, None]
    present[np.broadcast_to(t_idx, ids.shape), np.broadcast_to(l_idx, ids.shape), ids] = True
    mask = np.asarray(cacheable, dtype=bool)
    present &= (mask[:, :num_experts] if mask.ndim == 2 else mask[:, None])[None, :, :]
    step, layer, expert = np.nonzero(present)  # C order: step, then layer, then expert id
    return AccessStream(step.astype(np.int64), layer.astype(np.int64), expert.astype(np.int64), steps)


@dataclass(frozen=True)
class AccessStream:
    """The accesses a cache sees, in order: decode step, MoE layer and expert id of each."""

    step: NDArray[np.int64]
    layer: NDArray[np.int64]
    expert: NDArray[np.int64]
    steps: int

    def __len__(self) -> int:
        return int(self.step.size)

    def subset(self, keep: NDArray[np.bool_]) -> AccessStream:
        return AccessStream(self.step[keep], self.layer[keep], self.expert[keep], self.steps)

    def first_ever(self) -> NDArray[np.bool_]:
        """True where the (layer, expert) is accessed for the first time (a compulsory miss)."""
        keys = self.layer * (int(self.expert.max(initial=0)) + 1) + self.expert
        _, first_index = np.unique(keys, return_index=True)
        first = np.zeros(len(self), dtype=bool)
        first[first_index] = True
        return first

    def per_step(self, mask: NDArray[np.bool_]) -> NDArray[np.float64]:
        """How many of the masked accesses fall in each step."""
        return np.bincount(self.step[mask], minlength=self.steps).astype(np.float64)


def access_stream(accesses: list[list[np.ndarray]], cacheable: np.ndarray) -> AccessStream:
    """Flatten per-step, per-layer expert sets into the order a cache sees them, keeping only the experts
    that go through the cache: ``cacheable`` is a bool mask over MoE layers or over (layer, expert)."""
    step, layer, expert = [], [], []
    mask = np.asarray(cacheable, dtype=bool)
    for t, per_layer in enumerate(accesses):
        for ell, experts in enumerate(per_layer):
            e = np.asarray(experts, dtype=np.int64)
            keep = e[mask[ell, e]] if mask.ndim == 2 else (e if mask[ell] else e[:0])
            step.append(np.full(keep.size, t, dtype=np.int64))
            layer.append(np.full(keep.size, ell, dtype=np.int64))
            expert.append(keep)

    def cat(parts: list[NDArray[np.int64]]) -> NDArray[np.int64]:
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    return AccessStream(cat(step), cat(layer), cat(expert), len(accesses))


def cache_hits(stream: AccessStream, capacity: int, policy: str) -> NDArray[np.bool_]:
    """Simulate a cache of ``capacity`` entries over ``stream``; True where an access hits.

    LRU evicts the least recently used entry; LFU the least frequently used (frequency counts every access
    so far, cached or not; ties: least recently used); oracle is Belady's MIN (evict the entry used furthest
    in the future; ties: least recently used), the best any policy can do. Heaps with lazy deletion keep LFU
    and oracle at O(log capacity) per access."""
    n = len(stream)
    hits = np.zeros(n, dtype=bool)
    if capacity <= 0 or n == 0:
        return hits
    # one int per (layer, expert): dict and heap operations on ints are cheaper than on tuples
    width = int(stream.expert.max(initial=0)) + 1
    keys: list[int] = (stream.layer * width + stream.expert).tolist()
    if policy == "lru":
        lru: OrderedDict[int, None] = OrderedDict()
        for i, key in enumerate(keys):
            if key in lru:
                hits[i] = True
                lru.move_to_end(key)
                continue
            if len(lru) >= capacity:
                lru.popitem(last=False)
            lru[key] = None
        return hits
    next_use = [math.inf] * n
    if policy == "oracle":
        seen_at: dict[int, int] = {}
        for i in range(n - 1, -1, -1):
            next_use[i] = seen_at.get(keys[i], math.inf)
            seen_at[keys[i]] = i
    freq: dict[int, int] = {}
    current: dict[int, tuple[float, int]] = {}  # cached key -> its live heap priority
    heap: list[tuple[float, int, int]] = []
    for i, key in enumerate(keys):
        freq[key] = freq.get(key, 0) + 1
        # heap minimum = victim: LFU (fewest uses, least recent), oracle (furthest next use, least recent)
        prio = (float(freq[key]), i) if policy == "lfu" else (-next_use[i], i)
        if key in current:
            hits[i] = True
        elif len(current) >= capacity:
            while True:
                p0, p1, victim = heapq.heappop(heap)
                if current.get(victim) == (p0, p1):
                    del current[victim]
                    break
        current[key] = prio
        heapq.heappush(heap, (prio[0], prio[1], key))
    return hits


def simulate_cache(
    accesses: list[list[np.ndarray]], layers: np.ndarray, capacity: int, policy: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Simulate one expert cache of ``capacity`` experts over the access stream, in step then layer order,
    for the experts that go through it (``layers``: bool mask over MoE layers or over (layer, expert)).
    Returns (accesses, misses, first-ever accesses) per step; the first-ever (compulsory) misses happen once
    in a long-running server and are reported apart. Policies: :func:`cache_hits`."""
    stream = access_stream(accesses, layers)
    hits = cache_hits(stream, capacity, policy)
    every = np.ones(len(stream), dtype=bool)
    return stream.per_step(every), stream.per_step(~hits), stream.per_step(stream.first_ever())
