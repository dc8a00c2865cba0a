"""Parallel layouts: how a replica is laid out over devices and nodes (TP x PP x DP x EP x attention-DP), the
layout chosen for a scenario, and the checks that a layout is valid. What a layout costs at run time (all-reduces,
all-to-all, stragglers, pipeline hops) is capsim.engine.parallel."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

from capsim.errors import MissingValueError, ScenarioError

ALL_TO_ALL_BACKENDS = ("nccl", "deepep")


def divisors(n: int) -> list[int]:
    """Positive divisors of ``n``, ascending."""
    return [d for d in range(1, n + 1) if n % d == 0]


def check_expert_layout(num_experts: int, ep: int, expert_ranks: int, redundant: int = 0) -> None:
    """EP must divide the devices the experts are spread over and the expert slots (experts + redundant)."""
    slots = num_experts + redundant
    if ep == 1 and redundant == 0:
        return
    valid = [d for d in divisors(expert_ranks) if slots % d == 0]
    if expert_ranks % ep or slots % ep:
        what = (
            f"{slots} expert slots ({num_experts} experts + {redundant} redundant)"
            if redundant
            else f"{num_experts} experts"
        )
        raise ScenarioError(
            f"--ep {ep} must divide both the {expert_ranks} devices the MoE layers run on (tp x attention-dp) and "
            f"the {what}; valid --ep: {', '.join(map(str, valid))}"
        )
    if redundant and ep == 1:
        raise ScenarioError("--redundant-experts places extra expert replicas over EP groups; give --ep > 1")


@dataclass(frozen=True)
class Layout:
    """Devices of a deployment: ``tp x attention_dp x pp x dp = nodes x devices_per_node``; EP divides
    ``tp x attention_dp`` (the devices the MoE layers of a stage run on)."""

    tp: int = 1
    pp: int = 1
    dp: int = 1
    nodes: int = 1
    devices_per_node: int = 1
    ep: int = 1
    attention_dp: int = 1

    @property
    def expert_ranks(self) -> int:
        """Devices of one pipeline stage of a replica, over which the routed experts are split."""
        return self.tp * self.attention_dp

    @property
    def devices_per_replica(self) -> int:
        return self.tp * self.attention_dp * self.pp

    @property
    def devices(self) -> int:
        return self.devices_per_replica * self.dp

    def stage_layers(self, num_layers: int) -> int:
        """Decoder layers of the largest pipeline stage."""
        return math.ceil(num_layers / self.pp)

    def inter_node_hops(self) -> int:
        """Stage boundaries of one replica that cross nodes (TP innermost, then attention DP, then stages,
        then replicas; the replica whose stages straddle the most nodes)."""
        worst = 0
        group = self.expert_ranks
        for r in range(self.dp):
            node_of = [((r * self.pp + s) * group) // self.devices_per_node for s in range(self.pp)]
            worst = max(worst, sum(a != b for a, b in itertools.pairwise(node_of)))
        return worst

    def to_dict(self) -> dict[str, int]:
        return {
            "tp": self.tp,
            "attention_dp": self.attention_dp,
            "pp": self.pp,
            "dp": self.dp,
            "ep": self.ep,
            "nodes": self.nodes,
            "devices_per_node": self.devices_per_node,
            "devices": self.devices,
        }


def layout_for(
    tp: int | None,
    pp: int,
    dp: int,
    ep: int,
    nodes: int,
    devices_per_node: int,
    num_layers: int,
    attention_dp: int = 1,
) -> Layout:
    """Validate a layout (ScenarioError naming the fix); ``tp`` None = what the other degrees leave."""
    total = nodes * devices_per_node
    adp = attention_dp
    adp_text = f" x --attention-dp {adp}" if adp > 1 else ""
    if tp is None:
        if total % (pp * dp * adp):
            raise ScenarioError(
                f"--pp {pp} x --dp {dp}{adp_text} does not divide the {total} devices ({nodes} node(s) x "
                f"{devices_per_node}); choose degrees whose product divides them, or give --tp"
            )
        tp = total // (pp * dp * adp)
        if tp > devices_per_node:
            rest = tp // devices_per_node
            raise ScenarioError(
                f"{nodes} nodes x {devices_per_node} devices: tensor parallelism stays inside a node, so say how the "
                f"nodes share the work, e.g. --pp {pp * rest} (stages across nodes), --dp {dp * rest} (replicas) "
                f"or --attention-dp {adp * rest} (attention ranks, experts across nodes)"
            )
    if tp * adp * pp * dp != total:
        want = tp * adp * pp * dp
        fix = f"--gpus {want // nodes} per node" if want % nodes == 0 else "a product that --nodes divides"
        # the degrees that would fill the devices with the others kept
        fills = [
            f"--{flag} {total // rest}"
            for flag, rest in (("dp", tp * adp * pp), ("attention-dp", tp * pp * dp))
            if total % rest == 0 and total // rest >= 1
        ]
        options = f" ({' or '.join(fills)} fills them)" if fills else ""
        raise ScenarioError(
            f"--tp {tp}{adp_text} x --pp {pp} x --dp {dp} = {want} devices, but {nodes} node(s) x {devices_per_node} "
            f"devices = {total}; use {fix}, or change the degrees{options}"
        )
    if tp > devices_per_node:
        raise ScenarioError(
            f"--tp {tp} spans nodes of {devices_per_node} devices: tensor parallelism across nodes is not "
            "modelled; put --pp, --dp or --attention-dp across nodes"
        )
    if devices_per_node % tp:
        raise ScenarioError(
            f"--tp {tp} does not divide the {devices_per_node} devices of a node; choose a divisor"
        )
    if pp > num_layers:
        raise ScenarioError(
            f"--pp {pp} exceeds the model's {num_layers} layers; use at most {num_layers} stages"
        )
    return Layout(
        tp=tp, pp=pp, dp=dp, nodes=nodes, devices_per_node=devices_per_node, ep=ep, attention_dp=adp
    )


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
