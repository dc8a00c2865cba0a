"""Step-time adjustments of the offload and cpu-experts modes (see :mod:`capsim.deployment`).

Both start from the GPU-resident pass costs of :mod:`capsim.roofline` and change only what moves:
- offload: the GPU still reads the activated experts from HBM (they are in the cache when used); misses add
  bytes over the host link per step, serialised or overlapped with the GPU time;
- cpu-experts: the GPU's routed-expert time of the offloaded layers is replaced by the CPU's time for them
  (from DRAM) plus two PCIe hand-offs of the layer's activations.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from . import formulas
from .deployment import OffloadPlan, cpu_rates, expert_link_bandwidth, host_memory_bytes, simulate_cache, step_accesses
from .errors import DoesNotFitError, MissingValueError
from .memory import MemoryPlan
from .precision import compute_key
from .roofline import ACTIVATION_BYTES, PassCost

if TYPE_CHECKING:
    from .engine import ResolvedScenario


def _add_resource(cost: PassCost, resource: str, seconds: np.ndarray, op: str) -> None:
    cost.time = cost.time + seconds
    cost.time_by_op[op] = cost.time_by_op.get(op, np.zeros_like(cost.time)) + seconds
    cost.time_by_resource[resource] = cost.time_by_resource.get(resource, np.zeros_like(cost.time)) + seconds


def expert_bytes_on_gpu(rs: ResolvedScenario) -> float:
    """Bytes of one routed expert per device (split over TP ranks)."""
    return rs.model.expert_params * rs.placement.weight_precision["routed_experts"].bytes_per_element / rs.placement.tp


def _check_host_fits(rs: ResolvedScenario) -> str:
    """Host DRAM must hold the offloaded experts; returns a note when the capacity is unknown."""
    model = rs.model
    off_bytes = (
        rs.offloaded.sum() * model.moe.num_experts * model.expert_params  # type: ignore[union-attr]
        * rs.placement.weight_precision["routed_experts"].bytes_per_element
    )
    if rs.deployment.expert_tier == "ssd":
        return ""
    try:
        host = host_memory_bytes(rs.node, rs.deployment)  # type: ignore[arg-type]
    except MissingValueError:
        return f"host DRAM capacity unknown: {off_bytes / 1e9:,.1f} GB of experts assumed to fit (--host-memory-gb)"
    if off_bytes > host:
        raise DoesNotFitError(off_bytes, host, f"host DRAM of {rs.node.id}", "use --expert-tier ssd or more DRAM")  # type: ignore[attr-defined]
    return ""


def apply_offload(
    rs: ResolvedScenario, memory: MemoryPlan, batch: int, prefill: PassCost, decode: PassCost
) -> dict[str, Any]:
    """Size the GPU expert cache, simulate it on the router, and add the link time to every pass."""
    model, dep = rs.model, rs.deployment
    note = _check_host_fits(rs)
    expert_bytes = expert_bytes_on_gpu(rs)
    free = memory.usable_bytes - memory.weights_bytes - memory.buffers_bytes - memory.kv_bytes_per_sequence * batch
    n_off = int(rs.offloaded.sum())
    capacity = int(min(max(free, 0.0) // expert_bytes, n_off * model.moe.num_experts))  # type: ignore[union-attr]
    if capacity < model.moe.top_k:  # type: ignore[union-attr]
        raise DoesNotFitError(
            memory.weights_bytes + memory.buffers_bytes + memory.kv_bytes_per_sequence * batch
            + model.moe.top_k * expert_bytes,  # type: ignore[union-attr]
            memory.usable_bytes, f"the GPU of {rs.node.id}",  # type: ignore[attr-defined]
            "no room for even top-k experts in the expert cache; lower --batch, offload more layers or quantise",
        )
    steps = max(1, min(dep.cache_sample_steps, max(rs.scenario.gen_len - 1, 1)))
    accesses = step_accesses(rs.router, batch, steps, rs.scenario.seed)  # type: ignore[arg-type]
    total, misses, first = simulate_cache(accesses, rs.offloaded, capacity, dep.cache_policy)
    # Steady state: a serving engine runs far longer than the sample, so first-ever (compulsory) misses are
    # excluded; the miss rate is taken over accesses to experts already seen, and applied to every access.
    repeat = float((total - first).sum())
    miss_rate = float((misses - first).sum()) / repeat if repeat > 0 else 0.0
    miss_per_step = miss_rate * float(total.mean())
    hit_rate = 1.0 - miss_rate
    link_bw, path = expert_link_bandwidth(rs.node, dep)  # type: ignore[arg-type]
    link_bytes = miss_per_step * expert_bytes * rs.placement.tp
    # every TP rank fetches its shard of each missing expert over its own link: per-device bytes / link
    link_time_step = miss_per_step * expert_bytes / link_bw
    _charge_link(decode, link_time_step, dep.prefetch)
    # prefill touches (almost) every expert of every offloaded layer once per chunk: all misses beyond the cache
    prefill_misses = np.maximum(rs.offloaded.sum() * model.moe.num_experts - capacity, 0)  # type: ignore[union-attr]
    _charge_link(prefill, np.full(prefill.time.shape, prefill_misses * expert_bytes / link_bw), dep.prefetch)
    plan = OffloadPlan(
        cache_experts=capacity, hit_rate=hit_rate, misses_per_step=miss_per_step, link_bytes_per_step=link_bytes,
        link_bytes_s=link_bw, link_path=path, expert_bytes=expert_bytes * rs.placement.tp,
        offloaded_moe_layers=n_off, policy=dep.cache_policy, prefetch=dep.prefetch,
    )
    out = {"mode": "offload", **plan.to_dict()}
    if note:
        out["note"] = note
    return out


def _charge_link(cost: PassCost, link_time: np.ndarray | float, prefetch: bool) -> None:
    link = np.broadcast_to(np.asarray(link_time, dtype=np.float64), cost.time.shape).copy()
    if prefetch:
        # perfect overlap: the pass takes max(GPU, link); only the excess is charged to the link
        exposed = np.maximum(link - cost.time, 0.0)
    else:
        exposed = link
    _add_resource(cost, "link", exposed, "expert_fetch")


def apply_cpu_experts(rs: ResolvedScenario, batch: int, prefill: PassCost, decode: PassCost) -> dict[str, Any]:
    """Move the offloaded layers' routed-expert work from the GPU to the CPU (plus PCIe hand-offs)."""
    model, dep = rs.model, rs.deployment
    note = _check_host_fits(rs)
    bandwidth, peaks, sockets, how = cpu_rates(rs.node, dep)  # type: ignore[arg-type]
    cpu, _ = rs.node.cpus[0]  # type: ignore[attr-defined]
    eff = rs.efficiency  # efficiency of the GPU; the CPU's comes from the cpu class
    from .hardware import load_hardware_db

    cpu_eff = load_hardware_db().efficiency("cpu")
    key = compute_key(rs.placement.weight_precision["routed_experts"], frozenset(peaks))
    flops_rate = peaks[key] * cpu_eff.compute_fraction
    bytes_rate = bandwidth * cpu_eff.memory_bw_fraction
    frac = float(rs.offloaded.mean())
    link_bw = rs.node.host_to_gpu_bandwidth()  # type: ignore[attr-defined]
    n_off = int(rs.offloaded.sum())
    for cost in (prefill, decode):
        if cost.time.size == 0:
            continue
        off_act = cost.activated_by_layer()[rs.offloaded] if cost.activated_experts.size else np.zeros((0, cost.time.size))
        f, wb, ob = formulas.evaluate(
            "routed_experts",
            {"T": cost.tokens, "k": float(model.moe.top_k), "N_exp": float(model.expert_params),  # type: ignore[union-attr]
             "A": off_act, "b_w": rs.placement.weight_precision["routed_experts"].bytes_per_element,
             "d": float(model.hidden_size), "b_a": ACTIVATION_BYTES},
        )
        cpu_time = np.maximum(n_off * f / flops_rate, (wb.sum(axis=0) + n_off * ob) / bytes_rate)
        gpu_expert = cost.time_by_op.get("routed_experts", np.zeros_like(cost.time)) * frac
        handoff = n_off * 2 * cost.tokens * model.hidden_size * ACTIVATION_BYTES / link_bw
        cost.time = cost.time - gpu_expert
        cost.time_by_op["routed_experts"] = cost.time_by_op["routed_experts"] - gpu_expert
        # the GPU part was memory- or compute-bound; remove it from whichever bucket held it, proportionally
        for r in ("memory", "compute"):
            share = np.divide(cost.time_by_resource[r], cost.time_by_resource["memory"] + cost.time_by_resource["compute"],
                              out=np.zeros_like(cost.time), where=(cost.time_by_resource["memory"] + cost.time_by_resource["compute"]) > 0)
            cost.time_by_resource[r] = cost.time_by_resource[r] - gpu_expert * share
        _add_resource(cost, "cpu", cpu_time, "cpu_experts")
        _add_resource(cost, "link", handoff, "cpu_gpu_handoff")
    out: dict[str, Any] = {
        "mode": "cpu-experts", "cpu": cpu.id, "sockets_streaming": sockets, "cpu_bandwidth_gb_s": bandwidth / 1e9,
        "cpu_peak_tflops": peaks[key] / 1e12, "cpu_precision": key, "derivation": how,
        "offloaded_moe_layers": n_off, "handoff_link_gb_s": link_bw / 1e9,
        "cpu_efficiency": {"memory_bw_fraction": cpu_eff.memory_bw_fraction, "compute_fraction": cpu_eff.compute_fraction},
    }
    del eff
    if note:
        out["note"] = note
    return out
