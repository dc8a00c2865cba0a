"""Expert parallelism (EP) inside a node: experts split over the ranks, tokens dispatched to them.

With ``--ep N`` (N = the node's devices) attention stays tensor-parallel over the N ranks, and each rank holds
E/N whole routed experts. Per MoE layer, instead of the FFN's tensor-parallel all-reduce, every rank sends each
of its T/N tokens to the ranks holding that token's k experts and gets the results back: two all-to-alls
(dispatch, combine) of (T/N)·k·d·2 bytes per rank, of which (N−1)/N leave the rank, each costing NCCL's base
latency plus (N−1) hop latencies plus bytes / per-direction link bandwidth.

The ranks wait for the busiest: routed-expert time is multiplied by the straggler factor
I(T) = E[max_rank tokens / mean_rank tokens] per step, measured by sampling the scenario's router (uniform
routing still gives I > 1 at small T: the multinomial spread).
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ScenarioError
from .formulas import ring_allreduce_time
from .roofline import ACTIVATION_BYTES, PassCost

if TYPE_CHECKING:
    from .engine import ResolvedScenario
    from .routing import Router

_SAMPLED_STEPS = 16


def check_layout(num_experts: int, ep: int, tp: int) -> None:
    """EP spans the node's tensor-parallel ranks; experts must split evenly over them."""
    if ep == 1:
        return
    if ep != tp:
        raise ScenarioError(f"--ep {ep} must equal the devices used ({tp}): experts are split over every rank")
    if num_experts % ep:
        raise ScenarioError(
            f"{num_experts} experts do not split evenly over {ep} EP ranks; choose --ep dividing {num_experts}"
        )


def straggler_factor(router: Router, num_experts: int, ep: int, tokens: int, seed: int = 0) -> float:
    """Mean over sampled steps and layers of max/mean tokens per EP rank for a step of ``tokens`` tokens."""
    return _straggler(router, num_experts, ep, int(tokens), seed)


@lru_cache(maxsize=256)
def _straggler(router: Router, num_experts: int, ep: int, tokens: int, seed: int) -> float:
    sample = getattr(router, "sample", None)
    if sample is None:
        raise ScenarioError(f"router {router.name!r} cannot be sampled for EP load; use a synthetic router")
    ids = sample(tokens * _SAMPLED_STEPS, seed=seed)  # (L, steps·T, k)
    layers = ids.shape[0]
    rank_of = (ids.astype(np.int64) * ep) // num_experts  # contiguous blocks of E/ep experts per rank
    per_step = rank_of.reshape(layers, _SAMPLED_STEPS, tokens * ids.shape[2])
    counts = np.stack([(per_step == r).sum(axis=2) for r in range(ep)], axis=-1)  # (L, steps, ep)
    mean = counts.mean(axis=-1)
    return float((counts.max(axis=-1) / np.where(mean > 0, mean, 1.0)).mean())


def all_to_all_time(tokens: np.ndarray, ranks: int, top_k: int, hidden: int, link_bytes_s: float,
                    hop_latency_s: float, base_latency_s: float) -> np.ndarray:
    """One all-to-all of the step's token activations: per rank (T/N)·k·d·2 bytes, (N−1)/N of them remote."""
    per_rank = np.asarray(tokens, dtype=np.float64) / ranks * top_k * hidden * ACTIVATION_BYTES * (ranks - 1) / ranks
    return base_latency_s + (ranks - 1) * hop_latency_s + per_rank / link_bytes_s


def apply_expert_parallel(rs: ResolvedScenario, cost: PassCost) -> dict[str, Any]:
    """Replace the MoE layers' FFN all-reduce by dispatch + combine all-to-alls and add the straggler wait."""
    model, rates, tp = rs.model, rs.rates, rs.placement.tp
    moe = model.moe
    assert moe is not None  # check_layout ran in resolve: internal invariant
    if cost.time.size == 0:
        return {}
    n_moe = model.num_moe_layers
    tokens = cost.tokens
    factors = np.array([straggler_factor(rs.router, moe.num_experts, tp, int(t), rs.scenario.seed)  # type: ignore[arg-type]
                        for t in tokens])
    expert_time = cost.time_by_op.get("routed_experts", np.zeros_like(cost.time))
    wait = expert_time * (factors - 1.0)
    ar_one = ring_allreduce_time(tokens * model.hidden_size * ACTIVATION_BYTES, tp, rates.link_bandwidth,
                                 rates.allreduce_hop_latency_s, rates.allreduce_base_latency_s)
    a2a = 2 * n_moe * all_to_all_time(tokens, tp, moe.top_k, model.hidden_size, rates.link_bandwidth,
                                      rates.allreduce_hop_latency_s, rates.allreduce_base_latency_s)
    saved = n_moe * ar_one
    cost.time = cost.time + wait + a2a - saved
    cost.time_by_op["routed_experts"] = expert_time + wait
    cost.time_by_op["allreduce"] = cost.time_by_op.get("allreduce", np.zeros_like(cost.time)) - saved
    cost.time_by_op["all_to_all"] = a2a
    share_mem = np.divide(cost.time_by_resource["memory"], cost.time_by_resource["memory"] + cost.time_by_resource["compute"],
                          out=np.ones_like(cost.time), where=(cost.time_by_resource["memory"] + cost.time_by_resource["compute"]) > 0)
    cost.time_by_resource["memory"] = cost.time_by_resource["memory"] + wait * share_mem
    cost.time_by_resource["compute"] = cost.time_by_resource["compute"] + wait * (1 - share_mem)
    cost.time_by_resource["interconnect"] = cost.time_by_resource["interconnect"] + a2a - saved
    return {"ep": tp, "straggler_factor_mean": float(factors.mean()),
            "all_to_all_s_per_pass": float(a2a.mean()), "allreduce_saved_s_per_pass": float(saved.mean())}
