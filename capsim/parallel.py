"""Parallel layouts: tensor (TP), expert (EP), pipeline (PP) and data (DP) parallelism, over one or more nodes.

Layout: ``tp x pp x dp`` devices = ``nodes x`` devices per node, TP innermost (a TP group lies inside one
node), then pipeline stages, then replicas; ``--ep`` is 1 or the TP degree (experts split over a TP group).

Pipeline (PP, inference): stage s holds ceil(L/pp) decoder layers (the first the embeddings, the last the
lm_head). A replica's batch B is split into m = min(B, pp) micro-batches that circulate through the stages, so
every stage works on one micro-batch while the others work on the rest. A sequence's next token needs its
micro-batch to pass all pp stages: TPOT = pp x t_stage(B/m) + hops, with t_stage = t_model(B/m) x ceil(L/pp)/L
(the slowest stage), hops = (pp−1) activation transfers of (B/m)·d·2/tp bytes per rank (NVLink inside a node,
the scale-out network across nodes, plus NCCL's base latency each). PP does not cut latency; it holds bigger
models and keeps pp micro-batches in flight. Prefill: the chunks stream through the stages, TTFT =
(chunks + pp − 1) x the slowest stage's chunk time + hops.

Data parallel (DP): dp independent replicas, each serving ceil(B/dp) of the batch; throughput x dp, latency
that of one replica, memory per device that of one replica. Inference replicas do not communicate.

Expert parallelism (EP) inside a TP group: experts split over the ranks, tokens dispatched to them.
With ``--ep N`` (N = the TP degree) attention stays tensor-parallel over the N ranks, and each rank holds
E/N whole routed experts. Per MoE layer, instead of the FFN's tensor-parallel all-reduce, every rank sends each
of its T/N tokens to the ranks holding that token's k experts and gets the results back: two all-to-alls
(dispatch, combine) of (T/N)·k·d·2 bytes per rank, of which (N−1)/N leave the rank, each costing NCCL's base
latency plus (N−1) hop latencies plus bytes / per-direction link bandwidth.

The ranks wait for the busiest: routed-expert time is multiplied by the straggler factor
I(T) = E[max_rank tokens / mean_rank tokens] per step, measured by sampling the scenario's router (uniform
routing still gives I > 1 at small T: the multinomial spread).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import MissingValueError, ScenarioError
from .formulas_eval import ring_allreduce_time
from .roofline import ACTIVATION_BYTES, PassCost

if TYPE_CHECKING:
    from .engine import ResolvedScenario
    from .routing import Router

_SAMPLED_STEPS = 16


def check_layout(num_experts: int, ep: int, tp: int) -> None:
    """EP spans a tensor-parallel group; experts must split evenly over its ranks."""
    if ep == 1:
        return
    if ep != tp:
        raise ScenarioError(
            f"--ep {ep} must equal the tensor-parallel degree ({tp}): experts are split over the ranks of a TP "
            "group (EP across replicas is not modelled)"
        )
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


# ---- layouts: TP x PP x DP over nodes ------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Devices of a deployment: ``tp x pp x dp = nodes x devices_per_node``; EP is 1 or ``tp``."""

    tp: int = 1
    pp: int = 1
    dp: int = 1
    nodes: int = 1
    devices_per_node: int = 1
    ep: int = 1

    @property
    def devices_per_replica(self) -> int:
        return self.tp * self.pp

    @property
    def devices(self) -> int:
        return self.tp * self.pp * self.dp

    def stage_layers(self, num_layers: int) -> int:
        """Decoder layers of the largest pipeline stage."""
        return math.ceil(num_layers / self.pp)

    def inter_node_hops(self) -> int:
        """Stage boundaries of one replica that cross nodes (TP innermost, then stages, then replicas; the
        replica whose stages straddle the most nodes)."""
        worst = 0
        for r in range(self.dp):
            node_of = [((r * self.pp + s) * self.tp) // self.devices_per_node for s in range(self.pp)]
            worst = max(worst, sum(a != b for a, b in itertools.pairwise(node_of)))
        return worst

    def to_dict(self) -> dict[str, int]:
        return {"tp": self.tp, "pp": self.pp, "dp": self.dp, "ep": self.ep, "nodes": self.nodes,
                "devices_per_node": self.devices_per_node, "devices": self.devices}


def layout_for(tp: int | None, pp: int, dp: int, ep: int, nodes: int, devices_per_node: int,
               num_layers: int) -> Layout:
    """Validate a layout (ScenarioError naming the fix); ``tp`` None = what the other degrees leave."""
    total = nodes * devices_per_node
    if tp is None:
        if total % (pp * dp):
            raise ScenarioError(
                f"--pp {pp} x --dp {dp} does not divide the {total} devices ({nodes} node(s) x {devices_per_node}); "
                "choose degrees whose product divides them, or give --tp"
            )
        tp = total // (pp * dp)
        if tp > devices_per_node:
            rest = tp // devices_per_node
            raise ScenarioError(
                f"{nodes} nodes x {devices_per_node} devices: tensor parallelism stays inside a node, so say how the "
                f"nodes share the work, e.g. --pp {pp * rest} (stages across nodes) or --dp {dp * rest} (replicas)"
            )
    if tp * pp * dp != total:
        want = tp * pp * dp
        fix = f"--gpus {want // nodes} per node" if want % nodes == 0 else "a product that --nodes divides"
        raise ScenarioError(
            f"--tp {tp} x --pp {pp} x --dp {dp} = {want} devices, but {nodes} node(s) x {devices_per_node} "
            f"devices = {total}; use {fix}, or change the degrees"
        )
    if tp > devices_per_node:
        raise ScenarioError(
            f"--tp {tp} spans nodes of {devices_per_node} devices: tensor parallelism across nodes is not "
            "modelled; put --pp or --dp across nodes"
        )
    if devices_per_node % tp:
        raise ScenarioError(f"--tp {tp} does not divide the {devices_per_node} devices of a node; choose a divisor")
    if pp > num_layers:
        raise ScenarioError(f"--pp {pp} exceeds the model's {num_layers} layers; use at most {num_layers} stages")
    return Layout(tp=tp, pp=pp, dp=dp, nodes=nodes, devices_per_node=devices_per_node, ep=ep)


def scale_out_bandwidth(node: Any, db: Any, network: str | None) -> tuple[float, str]:
    """Bytes/s per direction one device gets on the network joining nodes: the link's per-port rate x ports /
    devices per node (the system's ports; one port per device when the system does not say or --network
    names the link). MissingValueError when neither the system nor --network names a network."""
    link = db.link(network) if network is not None else node.scale_out
    if link is None:
        raise MissingValueError(node.id, "scale_out", "multi-node layouts; pass --network LINK (e.g. ib-ndr)")
    devices = max(node.accelerator_count, 1)
    ports = node.scale_out_ports if network is None and node.scale_out_ports else devices
    per_device = link.bandwidth_bytes_s * ports / devices
    return per_device, f"{link.id}: {link.gb_s_per_dir:g} GB/s per port x {ports} ports / {devices} devices"


def pipeline_hop_time(rs: ResolvedScenario, tokens: np.ndarray) -> np.ndarray:
    """Activation transfers between the stages of one replica for a pass of ``tokens`` tokens: each TP rank
    sends its 1/tp share of T·d·2 bytes over its link (NVLink inside a node, the network across nodes), each
    hop paying NCCL's base latency."""
    layout = rs.layout
    hops = layout.pp - 1
    if hops == 0:
        return np.zeros_like(tokens)
    message = np.asarray(tokens, dtype=np.float64) * rs.model.hidden_size * ACTIVATION_BYTES / layout.tp
    cross = layout.inter_node_hops()
    inside = hops - cross
    t = np.full_like(message, hops * rs.rates.allreduce_base_latency_s)
    if inside:
        t = t + inside * message / _intra_node_bandwidth(rs)
    if cross:
        t = t + cross * message / rs.scale_out_bytes_s
    return t


def _intra_node_bandwidth(rs: ResolvedScenario) -> float:
    node = rs.node
    return node.gpu_to_gpu_bandwidth() if node.accelerator_count >= 2 else node.host_to_gpu_bandwidth()  # type: ignore[attr-defined]


def _scale(cost: PassCost, factor: np.ndarray) -> None:
    """Multiply every time component of ``cost`` by ``factor`` (per pass)."""
    cost.time = cost.time * factor
    cost.time_by_op = {k: v * factor for k, v in cost.time_by_op.items()}
    cost.time_by_resource = {k: v * factor for k, v in cost.time_by_resource.items()}


def _add_hops(cost: PassCost, hops: np.ndarray) -> None:
    cost.time = cost.time + hops
    cost.time_by_op["pipeline_p2p"] = cost.time_by_op.get("pipeline_p2p", np.zeros_like(cost.time)) + hops
    cost.time_by_resource["interconnect"] = cost.time_by_resource["interconnect"] + hops


def apply_pipeline_decode(rs: ResolvedScenario, cost: PassCost, micro_batches: int) -> None:
    """Decode passes computed for one micro-batch -> one token of every sequence of the replica:
    time = pp x slowest stage + hops; bytes, FLOPs and tokens x m (each stage runs every micro-batch)."""
    layout = rs.layout
    if layout.pp == 1 or cost.time.size == 0:
        return
    stage = layout.stage_layers(rs.model.num_layers) / rs.model.num_layers
    hops = pipeline_hop_time(rs, cost.tokens)
    _scale(cost, np.full_like(cost.time, layout.pp * stage))
    _add_hops(cost, hops)
    m = float(micro_batches)
    for name in ("weight_bytes_sparse", "weight_bytes_dense", "kv_read_bytes", "flops_sparse", "flops_dense",
                 "tokens"):
        setattr(cost, name, getattr(cost, name) * m)


def apply_pipeline_prefill(rs: ResolvedScenario, cost: PassCost) -> None:
    """Prefill chunks stream through the stages: each chunk costs the slowest stage; the last one also fills
    and drains the pipeline ((pp − 1) more stage times) and pays the hops."""
    layout = rs.layout
    if layout.pp == 1 or cost.time.size == 0:
        return
    stage = layout.stage_layers(rs.model.num_layers) / rs.model.num_layers
    factor = np.full_like(cost.time, stage)
    factor[-1] = stage * layout.pp
    _scale(cost, factor)
    hops = np.zeros_like(cost.time)
    hops[-1] = pipeline_hop_time(rs, cost.tokens[-1:])[0]
    _add_hops(cost, hops)
