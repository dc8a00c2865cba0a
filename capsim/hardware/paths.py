"""A system's topology (:class:`Topology`: devices and directed links, read-only) and the widest
(maximum-bottleneck) paths through it.

:class:`Topology` is plain dicts rather than a ``networkx.DiGraph`` because every prediction reads one and
importing networkx costs about 0.12 s of start-up (issue 15); :meth:`Topology.to_networkx` gives the graph
(:attr:`capsim.hardware.entries.System.graph`). It offers the read-only part of ``DiGraph``'s interface that
the path queries use, so they run on either. No entry types here, so entries -> paths has no cycle.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

EdgeAttrs = Mapping[str, Any]
"""An edge's attributes: ``bandwidth_bytes_s`` (that direction) and ``link`` (the link id)."""


class Graph(Protocol):
    """What the path queries read: a :class:`Topology` or a ``networkx.DiGraph``."""

    def __iter__(self) -> Iterator[str]: ...
    def __getitem__(self, node: str) -> Mapping[str, EdgeAttrs]: ...
    def out_degree(self, node: str) -> int: ...
    def edges(self, data: bool = True) -> Iterator[tuple[str, str, EdgeAttrs]]: ...
    def get_edge_data(self, u: str, v: str) -> EdgeAttrs | None: ...


class Topology:
    """Nodes with their ``kind`` (``accelerator``, ``cpu``, ``host``, ``dram``, ``ssd``, ``switch``) and directed
    edges, in insertion order; read-only once built (:class:`TopologyBuilder` builds one)."""

    def __init__(self, kinds: Mapping[str, str], succ: Mapping[str, Mapping[str, EdgeAttrs]]) -> None:
        # plain dicts, not MappingProxyType: systems are pickled to sweep workers
        self._kinds = dict(kinds)
        self._succ = {n: {v: dict(a) for v, a in succ.get(n, {}).items()} for n in self._kinds}

    def __iter__(self) -> Iterator[str]:
        return iter(self._kinds)

    def __contains__(self, node: object) -> bool:
        return node in self._kinds

    def __len__(self) -> int:
        return len(self._kinds)

    def __getitem__(self, node: str) -> Mapping[str, EdgeAttrs]:
        """The edges out of ``node``: ``{neighbour: attrs}`` (as ``DiGraph[node]``; do not modify)."""
        return self._succ[node]

    def kind(self, node: str) -> str:
        return self._kinds[node]

    def nodes_of_kind(self, *kinds: str) -> list[str]:
        return [n for n, k in self._kinds.items() if k in kinds]

    def out_degree(self, node: str) -> int:
        return len(self._succ[node])

    def get_edge_data(self, u: str, v: str) -> EdgeAttrs | None:
        return self._succ.get(u, {}).get(v)

    def edges(self, data: bool = True) -> Iterator[tuple[str, str, EdgeAttrs]]:
        """Every directed edge ``(u, v, attrs)`` (``data`` is accepted for ``DiGraph.edges``' signature)."""
        for u, out in self._succ.items():
            for v, attrs in out.items():
                yield u, v, attrs

    def number_of_edges(self) -> int:
        return sum(len(out) for out in self._succ.values())

    def without(self, nodes: Sequence[str]) -> Topology:
        """A copy without ``nodes`` and their edges."""
        gone = set(nodes)
        return Topology(
            {n: k for n, k in self._kinds.items() if n not in gone},
            {
                u: {v: a for v, a in out.items() if v not in gone}
                for u, out in self._succ.items()
                if u not in gone
            },
        )

    def to_networkx(self) -> Any:
        """The same graph as a frozen ``networkx.DiGraph`` (node attribute ``kind``; edge attributes as here)."""
        import networkx as nx  # type: ignore[import-untyped, unused-ignore]

        g = nx.DiGraph()
        for node, kind in self._kinds.items():
            g.add_node(node, kind=kind)
        for u, v, attrs in self.edges():
            g.add_edge(u, v, **attrs)
        return nx.freeze(g)


class TopologyBuilder:
    """A mutable topology: nodes, then edges between them, then :meth:`freeze`."""

    def __init__(self) -> None:
        self._kinds: dict[str, str] = {}
        self._succ: dict[str, dict[str, dict[str, Any]]] = {}
        self._pred: dict[str, set[str]] = {}

    def __contains__(self, node: object) -> bool:
        return node in self._kinds

    def add_node(self, node: str, kind: str) -> None:
        self._kinds[node] = kind
        self._succ.setdefault(node, {})
        self._pred.setdefault(node, set())

    def add_edge(self, u: str, v: str, bandwidth_bytes_s: float, link: str) -> None:
        if u not in self._kinds or v not in self._kinds:
            raise KeyError(f"edge {u} -> {v}: add both nodes first")  # a bug in a builder, not a user error
        self._succ[u][v] = {"bandwidth_bytes_s": bandwidth_bytes_s, "link": link}
        self._pred[v].add(u)

    def degree(self, node: str) -> int:
        """Edges out of and into ``node`` (as ``DiGraph.degree``)."""
        return len(self._succ[node]) + len(self._pred[node])

    def remove_node(self, node: str) -> None:
        for v in self._succ.pop(node):
            self._pred[v].discard(node)
        for u in self._pred.pop(node):
            del self._succ[u][node]
        del self._kinds[node]

    def freeze(self) -> Topology:
        return Topology(self._kinds, self._succ)


def widest_from(graph: Graph, source: str) -> dict[str, float]:
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


def min_pair_bottleneck(graph: Graph, terminals: Sequence[str]) -> float | None:
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
