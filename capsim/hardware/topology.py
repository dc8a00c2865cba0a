"""The topology graphs of systems (:class:`capsim.hardware.paths.Topology`): nodes are devices, edges carry
``bandwidth_bytes_s`` per direction and the ``link`` id they use.

A system file's graph (:func:`system_graph`), a synthetic node of one accelerator kind joined by its scale-up
link (:func:`synthetic_graph`), and the first ``count`` accelerators of a system (:func:`subset_graph`).
The widest-path queries on these graphs are in :mod:`capsim.hardware.paths`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from capsim import units
from capsim.errors import DataFileError, MissingValueError, ScenarioError
from capsim.hardware.entries import CPU, SSD, Accelerator, DramConfig, Link
from capsim.hardware.paths import Topology, TopologyBuilder


def connect(
    g: TopologyBuilder, a: str, b: str, bandwidth_bytes_s: float, link: str, back: float | None = None
) -> None:
    """Two directed edges a->b and b->a (``back`` bytes/s for b->a when the directions differ)."""
    g.add_edge(a, b, bandwidth_bytes_s=bandwidth_bytes_s, link=link)
    g.add_edge(b, a, bandwidth_bytes_s=bandwidth_bytes_s if back is None else back, link=link)


def torus_pairs(count: int, dims: int) -> dict[tuple[int, int], int]:
    """Neighbour pairs of ``count`` chips in a ``dims``-D torus, with the number of ports joining each pair.

    The shape is the most nearly cubic factorisation of ``count``; a dimension of size 2 joins the same two
    chips through both its ports, a dimension of size 1 adds nothing.
    """
    shape = _most_square_shape(count, dims)
    pairs: dict[tuple[int, int], int] = {}
    for index in range(count):
        coords = list(_unravel(index, shape))
        for d, size in enumerate(shape):
            if size == 1:
                continue
            for step in (1, -1):
                other = coords.copy()
                other[d] = (coords[d] + step) % size
                j = _ravel(other, shape)
                key = (min(index, j), max(index, j))
                pairs[key] = pairs.get(key, 0) + 1
    # each pair was counted once from each end
    return {k: v // 2 for k, v in pairs.items()}


def _factorisations(count: int, dims: int) -> Iterator[tuple[int, ...]]:
    """Every ordered way of writing ``count`` as a product of ``dims`` positive factors."""
    if dims == 1:
        yield (count,)
        return
    for f in range(1, count + 1):
        if count % f == 0:
            for rest in _factorisations(count // f, dims - 1):
                yield (f, *rest)


def _most_square_shape(count: int, dims: int) -> tuple[int, ...]:
    return min(_factorisations(count, dims), key=lambda shape: (max(shape), shape))


def _unravel(index: int, shape: Sequence[int]) -> Iterator[int]:
    for size in shape:
        yield index % size
        index //= size


def _ravel(coords: Sequence[int], shape: Sequence[int]) -> int:
    index, stride = 0, 1
    for c, size in zip(coords, shape):
        index += c * stride
        stride *= size
    return index


def _scale_up_rate(acc: Accelerator, link: Link) -> float:
    """Bytes/s per direction the device puts on its scale-up link (device figure, else the link's)."""
    gb_s = acc.scale_up_gb_s_per_dir if acc.scale_up_gb_s_per_dir is not None else link.gb_s_per_dir
    return gb_s * units.GB_PER_S


def _add_scale_up(g: TopologyBuilder, acc: Accelerator, link: Link, count: int) -> str:
    domain = acc.scale_up_domain_max
    if link.topology != "pair":
        if domain is None:
            raise MissingValueError(acc.id, "links.scale_up_domain_max", f"a node of {count} devices")
        if count > domain:
            raise ScenarioError(
                f"{acc.id} joins at most {domain} devices in one {link.id} domain; asked for {count}; "
                f"use a count of at most {domain}"
            )
    rate = _scale_up_rate(acc, link)
    if link.topology == "switch":
        g.add_node("nvswitch", kind="switch")
        for i in range(count):
            connect(g, f"gpu{i}", "nvswitch", rate, link.id)
        return "nvswitch"
    peers = acc.scale_up_peers
    if peers is None:
        raise MissingValueError(acc.id, "links.scale_up_peers", f"a {link.topology} node of {count} devices")
    per_peer = rate / peers
    if link.topology == "mesh":
        for i in range(count):
            for j in range(i + 1, count):
                connect(g, f"gpu{i}", f"gpu{j}", per_peer, link.id)
        return "full-mesh"
    if link.topology == "pair":
        group = domain or 2
        for start in range(0, count - count % group, group):
            for i in range(start, start + group):
                for j in range(i + 1, start + group):
                    connect(g, f"gpu{i}", f"gpu{j}", per_peer, link.id)
        return "pair-bridge"
    if link.topology == "torus":
        dims = max(1, peers // 2)
        for (i, j), ports in torus_pairs(count, dims).items():
            connect(g, f"gpu{i}", f"gpu{j}", per_peer * ports, link.id)
        return "torus"
    raise ScenarioError(f"{link.id} has topology {link.topology!r}, which cannot be a scale-up fabric")


def system_graph(
    path: str,
    acc: Accelerator | None,
    acc_count: int,
    cpus: tuple[tuple[CPU, int], ...],
    dram: DramConfig | None,
    ssds: tuple[tuple[SSD, int], ...],
    fabric: str,
    link: Callable[[str], Link],
) -> Topology:
    """The frozen graph of a system file: sockets (``cpu0..`` or ``host0``), accelerators, the scale-up fabric,
    DRAM per socket and drives; ``link`` looks up a link id (DataFileError naming ``path`` on a bad fabric)."""
    g = TopologyBuilder()
    sockets = sum(n for _, n in cpus)
    cpu = cpus[0][0] if cpus else None
    host_nodes = [f"cpu{j}" for j in range(sockets)] or ["host0"]
    for name in host_nodes:
        g.add_node(name, kind="cpu" if cpu else "host")
    for i in range(acc_count):
        g.add_node(f"gpu{i}", kind="accelerator")
    if acc is not None and acc.host_link is not None and not acc.unified_memory:
        host = link(acc.host_link)
        for i in range(acc_count):
            # accelerators spread evenly across sockets, as on dual-socket HGX boards
            connect(
                g, f"gpu{i}", host_nodes[i * len(host_nodes) // acc_count], host.bandwidth_bytes_s, host.id
            )
    _add_system_fabric(g, path, acc, acc_count, fabric, link)
    if dram is not None:
        _add_dram(g, path, cpu, sockets, dram, host_nodes)
    drives = [ssd for ssd, n in ssds for _ in range(n)]
    for k, ssd in enumerate(drives):
        g.add_node(f"ssd{k}", kind="ssd")
        # reads flow drive -> host, writes host -> drive
        connect(g, f"ssd{k}", host_nodes[0], ssd.read_bytes_s, "nvme", back=ssd.write_bytes_s)
    if "host0" in g and g.degree("host0") == 0:
        g.remove_node("host0")
    return g.freeze()


def _add_system_fabric(
    g: TopologyBuilder,
    path: str,
    acc: Accelerator | None,
    count: int,
    fabric: str,
    link: Callable[[str], Link],
) -> None:
    if fabric in ("pcie", "none") or acc is None or count < 2:
        if fabric in ("nvswitch", "full-mesh") and (acc is None or count < 2):
            raise DataFileError(
                path, f"field 'fabric' is {fabric!r} but the system has fewer than 2 accelerators"
            )
        return
    if acc.scale_up_link is None:
        raise DataFileError(path, f"field 'fabric' is {fabric!r} but {acc.id} lists no scale-up link")
    scale_up = link(acc.scale_up_link)
    rate = _scale_up_rate(acc, scale_up)
    if fabric == "nvswitch":
        g.add_node("nvswitch", kind="switch")
        for i in range(count):
            connect(g, f"gpu{i}", "nvswitch", rate, scale_up.id)
        return
    peers = acc.scale_up_peers or count - 1
    for i in range(count):
        for j in range(i + 1, count):
            connect(g, f"gpu{i}", f"gpu{j}", rate / peers, scale_up.id)


def _add_dram(
    g: TopologyBuilder, path: str, cpu: CPU | None, sockets: int, dram: DramConfig, host_nodes: list[str]
) -> None:
    if cpu is None:
        raise DataFileError(path, "field 'dram' needs 'cpus' (DRAM hangs off a CPU socket)")
    if dram.channels % sockets:
        raise DataFileError(
            path, f"field 'dram.channels' ({dram.channels}) must split evenly over {sockets} sockets"
        )
    per_socket = dram.channels // sockets
    if per_socket > cpu.memory_channels:
        raise DataFileError(
            path,
            f"field 'dram.channels' puts {per_socket} channels on each {cpu.id}, which has {cpu.memory_channels}",
        )
    # populated channels can be fewer than the socket supports; the CPU's own peak caps the result
    rate = min(per_socket * dram.dram.channel_bandwidth_bytes_s, cpu.memory_bandwidth_bytes_s)
    for j, host in enumerate(host_nodes):
        g.add_node(f"dram{j}", kind="dram")
        connect(g, f"dram{j}", host, rate, dram.dram.id)


def synthetic_graph(acc: Accelerator, count: int, link: Callable[[str], Link]) -> tuple[Topology, str]:
    """The frozen graph of ``count`` ``acc`` devices and its fabric name: joined by the device's scale-up link
    (through a switch, a full mesh, bridged pairs or a torus), else through the host's PCIe."""
    g = TopologyBuilder()
    for i in range(count):
        g.add_node(f"gpu{i}", kind="accelerator")
    fabric = "none"
    if acc.host_link is not None:
        host = link(acc.host_link)
        g.add_node("host0", kind="host")
        for i in range(count):
            connect(g, f"gpu{i}", "host0", host.bandwidth_bytes_s, host.id)
        fabric = "pcie" if count > 1 else "none"
    if count > 1 and acc.scale_up_link is not None:
        fabric = _add_scale_up(g, acc, link(acc.scale_up_link), count)
    elif count > 1 and acc.host_link is None:
        raise ScenarioError(
            f"{acc.id} has neither a scale-up nor a host link in the database, so {count} of them cannot be "
            "joined; use count 1 or add links with --hardware-db"
        )
    return g.freeze(), fabric


def subset_graph(graph: Topology, accelerator_count: int, count: int) -> Topology:
    """``graph`` without accelerators ``gpu{count}..gpu{accelerator_count - 1}``."""
    return graph.without([f"gpu{i}" for i in range(count, accelerator_count)])
