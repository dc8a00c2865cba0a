"""Widest (maximum-bottleneck) paths through a system's topology graph.

Pure graph algorithms over the ``networkx.DiGraph`` of :class:`capsim.hardware.entries.System` (edges carry
``bandwidth_bytes_s`` per direction); they read the graph only, so this module needs no entry types.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import networkx as nx


def widest_from(graph: nx.DiGraph, source: str) -> dict[str, float]:
    """Single-source widest (max-bottleneck) paths: ``{node: bytes/s}`` for every node reachable from
    ``source`` (Dijkstra with min() along a path and max() across paths)."""
    best: dict[str, float] = {source: math.inf}
    heap: list[tuple[float, str]] = [(-math.inf, source)]
    while heap:
        neg_width, node = heapq.heappop(heap)
        width = -neg_width
        if width < best.get(node, 0.0):
            continue
        for nxt, attrs in graph[node].items():
            cand = min(width, attrs["bandwidth_bytes_s"])
            if cand > best.get(nxt, 0.0):
                best[nxt] = cand
                heapq.heappush(heap, (-cand, nxt))
    del best[source]
    return best


def min_pair_bottleneck(graph: nx.DiGraph, terminals: Sequence[str]) -> float | None:
    """min over pairs of ``terminals`` of the widest-path bandwidth (bytes/s); None when an edge between
    inner nodes differs by direction (the caller then searches pairwise).

    For an undirected graph the widest path between two nodes runs along a maximum spanning tree, so the
    narrowest pair is joined by the edge at which Kruskal's algorithm (widest edge first) first puts every
    terminal in one component: O(E log E) instead of one search per terminal. Non-terminal leaves (SSDs,
    DRAM) are skipped: a simple path never passes through them, so their asymmetric read/write edges do not
    matter. Returns 0.0 when the terminals are not all connected.
    """
    wanted = set(terminals)
    inner = {n for n in graph if n in wanted or graph.out_degree(n) > 1}
    edges: dict[tuple[str, str], float] = {}
    for u, v, d in graph.edges(data=True):
        if u not in inner or v not in inner:
            continue
        back = graph.get_edge_data(v, u)
        if back is None or back["bandwidth_bytes_s"] != d["bandwidth_bytes_s"]:
            return None
        edges[(min(u, v), max(u, v))] = d["bandwidth_bytes_s"]
    parent = {n: n for n in inner}
    has_terminal = {n: n in wanted for n in inner}
    components = len(wanted)

    def root(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for (u, v), width in sorted(edges.items(), key=lambda e: -e[1]):
        ru, rv = root(u), root(v)
        if ru == rv:
            continue
        if has_terminal[ru] and has_terminal[rv]:
            components -= 1
            if components == 1:
                return width
        parent[ru] = rv
        has_terminal[rv] = has_terminal[rv] or has_terminal[ru]
    return 0.0
