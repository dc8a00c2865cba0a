"""What a deployment decided, as typed reports: the offload cache and links, CPU-computed experts, socket tensor
parallelism, expert parallelism and attention DP, pipeline micro-batches and speculation. ``Prediction.deployment``
is a :class:`DeploymentReport`; the CLI, fit, energy and the published-set scoring read its keys, which mypy checks
against this one declaration (the JSON output is the same dict)."""

from __future__ import annotations

from typing import Any, TypedDict


class LinkLoad(TypedDict):
    """One link's load per decode step (capsim.engine.offload)."""

    path: str
    gb_s: float
    gb_per_step: float
    s_per_step: float


class TierLoad(TypedDict, total=False):
    """Routed experts held in one memory tier and their size."""

    experts: int
    gb: float
    capacity_gb: float | None


class CpuEfficiencyReport(TypedDict):
    """The ``cpu`` efficiency class used for CPU-computed experts (kernel_bw_fraction: the engine's own where its
    profile names one)."""

    memory_bw_fraction: float
    kernel_bw_fraction: float
    compute_fraction: float
    replicate_socket_share: float


class ExpertParallelReport(TypedDict, total=False):
    """EP / attention-DP communication and load balance (capsim.engine.parallel.apply_expert_parallel)."""

    ep: int
    attention_dp: int
    expert_ranks: int
    all_to_all: str
    all_to_all_bytes_per_rank: float
    all_to_all_gb_s: tuple[float, float]
    all_to_all_s_per_pass: float
    all_to_all_exposed_s_per_pass: float
    allreduce_saved_s_per_pass: float
    moe_gather_scatter_s_per_pass: float
    straggler_factor_mean: float
    straggler_activated_factor_mean: float
    redundant_experts: int
    two_batch_overlap: bool


class DeploymentReport(ExpertParallelReport, total=False):
    """Every key a mode or layout may report; which are present depends on the mode and layout."""

    mode: str
    note: str
    # offload and SSD paging (capsim.engine.offload.apply_offload)
    cache_experts: int
    hit_rate: float
    misses_per_step: float
    link_gb_per_step: float
    link_gb_s: float
    link_path: str
    expert_gb: float
    offloaded_moe_layers: int
    policy: str
    prefetch: bool
    prefetch_accuracy: float
    host_copy: str
    cache_model: str
    sampled_steps: int
    ssd_reads_per_step: float
    page_cache_experts: int
    links: dict[str, LinkLoad]
    tiers: dict[str, TierLoad]
    # experts computed on the CPU (capsim.engine.offload.apply_cpu_experts)
    cpu: str
    sockets_streaming: int
    cpu_bandwidth_gb_s: float
    cpu_peak_tflops: float
    cpu_precision: str
    derivation: str
    handoff_link_gb_s: float
    handoff_latency_s: float
    cpu_efficiency: CpuEfficiencyReport
    # CPU-only over sockets (capsim.engine.offload.apply_socket_tp)
    numa: str
    socket_allreduce_s_per_layer: dict[str, float]
    # pipeline parallelism, the layout, speculation (capsim.engine.predict)
    micro_batches: int
    layout: dict[str, Any]
    speculative: dict[str, Any]


class PassExtras(TypedDict, total=False):
    """What the decode-step builders decided besides times (``PassTimes.extra``)."""

    ep: ExpertParallelReport
    speculative: dict[str, Any]
