"""The hardware database's entries: frozen dataclasses, each value with its source.

Accelerators, CPUs, DRAM, SSDs, links and systems (nodes), and the efficiency class of a device. Fields keep the
vendor's decimal units in their names (``memory_bandwidth_gb_s``); properties and methods that the engine calls
return SI (bytes, bytes/s, FLOP/s) through :mod:`capsim.units`. :mod:`capsim.hardware.parse` builds them from the
TOML files, :mod:`capsim.hardware.topology` builds the systems' graphs, :mod:`capsim.hardware.db` holds them.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

from capsim import units
from capsim.errors import MissingValueError, ScenarioError
from capsim.hardware.paths import Topology, min_pair_bottleneck, widest_from

if TYPE_CHECKING:
    import networkx as nx

KINDS: tuple[str, ...] = ("accelerator", "cpu", "dram", "ssd", "link", "system")
PLATFORM_PARTS: tuple[str, ...] = ("chassis", "motherboard", "psu", "cooling", "nics", "assembly")
"""Host-platform parts a system entry may price (``platform.<part>_usd``): chassis/case, motherboard, power
supplies, cooling, network cards, assembly and test."""
PRECISION_KEYS: tuple[str, ...] = ("fp64", "fp32", "tf32", "bf16", "fp16", "fp8", "int8", "fp4")
"""Keys of the peak-FLOPS tables. ``int8`` is in TOPS (integer ops), the others in TFLOPS."""
EFFICIENCY_FIELDS: tuple[str, ...] = (
    "memory_bw_fraction",
    "compute_fraction",
    "step_overhead_s",
    "per_layer_overhead_s",
    "allreduce_latency_s",
    "allreduce_base_latency_s",
    "gpu_memory_utilization",
)
GEMM_CURVE_FIELD = "gemm_tokens_efficiency"
GEMM_OVERLAP_FIELD = "gemm_overlap_exponent"
"""Optional efficiency table: tokens per weight matrix M (integer keys >= 1, ascending) -> bandwidth fraction."""
KERNEL_BW_FIELD = "kernel_bw_fraction"
"""Optional efficiency field: the fraction of the sustained bandwidth (``memory_bw_fraction`` x peak) that an
engine's inference kernels reach when streaming weights (1 when absent); fitted for the ``cpu`` class."""
KERNEL_LATENCY_FIELD = "kernel_latency_s"
"""Optional efficiency field: the fixed time each kernel of a forward pass adds on the device (launch gap,
ramp-up and tail of a dependent kernel in a CUDA graph), charged per kernel a decoder layer launches
(:func:`capsim.engine.roofline.kernels_per_pass`); 0 when absent."""
FABRICS: tuple[str, ...] = ("nvswitch", "full-mesh", "pcie", "none")
LINK_TOPOLOGIES: tuple[str, ...] = ("switch", "mesh", "pair", "torus", "point-to-point", "network")
LINK_SCOPES: tuple[str, ...] = ("per-device", "per-link", "per-port")

Value = float | int | str | bool


# --------------------------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Sourced:
    """One database value with where it came from. ``soft`` marks values the reference flags ``(?)``."""

    value: Value
    source: str
    soft: bool = False
    note: str = ""
    date: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"value": self.value, "source": self.source, "soft": self.soft}
        if self.note:
            out["note"] = self.note
        if self.date:
            out["date"] = self.date
        return out


Provenance = Mapping[str, Sourced]
_EMPTY: Provenance = MappingProxyType({})


def provenance_dict(prov: Provenance) -> dict[str, Any]:
    return {name: s.to_dict() for name, s in prov.items()}


# --------------------------------------------------------------------------------------------- entries


@dataclass(frozen=True, eq=False)
class Efficiency:
    """Achievable fractions of peak and fixed overheads for one device class (or one device, merged).

    ``memory_bw_fraction`` × peak bandwidth and ``compute_fraction`` × peak FLOP/s are what a well-tuned engine
    sustains; ``step_overhead_s`` is paid once per prefill/decode step (scheduling, sampling, launch);
    ``per_layer_overhead_s`` once per decoder layer per step; a ring all-reduce over ``n`` ranks costs
    ``allreduce_base_latency_s + 2(n-1)·allreduce_latency_s`` plus its bandwidth term (NCCL's latency model,
    ``src/graph/tuning.cc``); ``gpu_memory_utilization`` is the fraction of device memory an engine may use.
    """

    device_class: str
    memory_bw_fraction: float
    compute_fraction: float
    step_overhead_s: float
    per_layer_overhead_s: float
    allreduce_latency_s: float
    allreduce_base_latency_s: float
    gpu_memory_utilization: float
    provenance: Provenance

    @property
    def gemm_m_curve(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """(tokens M, fraction) of the ``[efficiency.gemm_tokens_efficiency]`` table, ascending in M; None when
        absent (a factor of 1 at every M).

        The fraction multiplies the achievable memory bandwidth (``memory_bw_fraction`` × peak) of a weight GEMM
        that multiplies M token rows by one weight matrix; the roofline interpolates it linearly in log M."""
        points = sorted(
            (float(name.rsplit(".", 1)[1]), float(s.value))
            for name, s in self.provenance.items()
            if name.startswith(f"{GEMM_CURVE_FIELD}.")
        )
        if not points:
            return None
        return tuple(m for m, _ in points), tuple(f for _, f in points)

    @property
    def kernel_bw_fraction(self) -> float:
        """Fraction of the sustained bandwidth the engine's kernels reach streaming weights (1 when absent)."""
        entry = self.provenance.get(KERNEL_BW_FIELD)
        return 1.0 if entry is None else float(entry.value)

    @property
    def kernel_latency_s(self) -> float:
        """Seconds each kernel of a forward pass adds on the device (``kernel_latency_s``; 0 when absent)."""
        entry = self.provenance.get(KERNEL_LATENCY_FIELD)
        return 0.0 if entry is None else float(entry.value)

    @property
    def gemm_overlap_exponent(self) -> float | None:
        """p of the weight GEMMs' soft roofline t = (t_c^p + t_m^p)^(1/p) (``gemm_overlap_exponent``); None
        when absent (the plain roofline max(t_c, t_m), the limit p -> infinity)."""
        src = self.provenance.get(GEMM_OVERLAP_FIELD)
        return None if src is None else float(src.value)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"device_class": self.device_class}
        out.update({name: getattr(self, name) for name in EFFICIENCY_FIELDS})
        if KERNEL_BW_FIELD in self.provenance:
            out[KERNEL_BW_FIELD] = self.kernel_bw_fraction
        if KERNEL_LATENCY_FIELD in self.provenance:
            out[KERNEL_LATENCY_FIELD] = self.kernel_latency_s
        if self.gemm_m_curve is not None:
            out[GEMM_CURVE_FIELD] = {str(int(m)): f for m, f in zip(*self.gemm_m_curve)}
        if self.gemm_overlap_exponent is not None:
            out[GEMM_OVERLAP_FIELD] = self.gemm_overlap_exponent
        out["provenance"] = provenance_dict(self.provenance)
        return out


class _EntryMixin:
    """Shared behaviour of database entries: soft-flag lookup and JSON export."""

    kind: ClassVar[str]
    id: str
    provenance: Provenance

    def is_soft(self, field_name: str) -> bool:
        """True when the value of ``field_name`` (dotted, e.g. ``peak_tflops_dense.bf16``) is marked soft."""
        s = self.provenance.get(field_name)
        return bool(s and s.soft)

    def _require(self, value: float | None, field_name: str, why: str = "") -> float:
        if value is None:
            raise MissingValueError(self.id, field_name, why)
        return value


@dataclass(frozen=True, eq=False)
class Accelerator(_EntryMixin):
    """A GPU/accelerator. Capacities and rates in vendor decimal units (GB, GB/s, TFLOPS); SI via properties.

    ``peak_tflops_dense`` and ``peak_tflops_sparse`` (2:4 structured sparsity) are separate tables keyed by
    :data:`PRECISION_KEYS`; only values the vendor publishes are present.
    """

    kind: ClassVar[str] = "accelerator"
    id: str
    name: str
    vendor: str
    device_class: str
    memory_capacity_gb: float
    memory_bandwidth_gb_s: float
    peak_tflops_dense: Mapping[str, float]
    peak_tflops_sparse: Mapping[str, float]
    tdp_w: float | None
    unified_memory: bool
    scale_up_link: str | None
    scale_up_gb_s_per_dir: float | None
    host_link: str | None
    purchase_usd: float | None
    cloud_usd_per_hour: float | None
    source: str
    provenance: Provenance
    memory_type: str | None = None
    scale_up_peers: int | None = None
    """Devices (mesh, pair) or ports (torus) the scale-up bandwidth is split across."""
    scale_up_domain_max: int | None = None
    """Most devices one scale-up domain joins (8 for HGX NVSwitch, 72 for NVL72, 2 for a bridge)."""
    efficiency_overrides: Provenance = field(default_factory=lambda: _EMPTY)
    file: str = ""

    def peak_flops(self, key: str) -> float:
        """Dense peak in FLOP/s (OP/s for ``int8``) = ``peak_tflops_dense[key]`` × 1e12."""
        return self._require(self.peak_tflops_dense.get(key), f"peak_tflops_dense.{key}", "compute time") * (
            units.TFLOPS
        )

    def peak_flops_sparse(self, key: str) -> float:
        """2:4-sparse peak in FLOP/s; MissingValueError where the vendor prints none."""
        value = self.peak_tflops_sparse.get(key)
        return self._require(value, f"peak_tflops_sparse.{key}", "sparse compute time") * units.TFLOPS

    @property
    def memory_bandwidth_bytes_s(self) -> float:
        """Peak device-memory bandwidth in bytes/s."""
        return self.memory_bandwidth_gb_s * units.GB_PER_S

    @property
    def memory_capacity_bytes(self) -> float:
        """Device memory in bytes (decimal GB as marketed; an "80 GB" HBM part exposes ~79.6 GiB)."""
        return self.memory_capacity_gb * units.GB

    @property
    def tdp(self) -> float:
        """Board power in W; MissingValueError when the vendor does not publish it."""
        return self._require(self.tdp_w, "tdp_w", "energy cost")

    def to_dict(self) -> dict[str, Any]:
        return entry_dict(self)


@dataclass(frozen=True, eq=False)
class CPU(_EntryMixin):
    """A CPU socket. ``memory_bandwidth_gb_s`` is the DDR peak *per socket*; FLOPS are derived peaks
    (cores × base clock × FLOP/cycle/core, hardware.md §4) where the reference derives them."""

    kind: ClassVar[str] = "cpu"
    id: str
    name: str
    vendor: str
    device_class: str
    cores: int
    threads: int | None
    base_clock_ghz: float | None
    boost_clock_ghz: float | None
    memory_channels: int
    dram_kind: str | None
    memory_bandwidth_gb_s: float
    peak_tflops_dense: Mapping[str, float]
    tdp_w: float | None
    purchase_usd: float | None
    source: str
    provenance: Provenance
    efficiency_overrides: Provenance = field(default_factory=lambda: _EMPTY)
    file: str = ""
    socket_link_gb_s_per_dir: float | None = None
    """Bandwidth per direction between two sockets of this CPU (all UPI / Infinity Fabric links together)."""

    def peak_flops(self, key: str) -> float:
        """Derived peak FLOP/s per socket for ``key``; MissingValueError where not derivable."""
        return self._require(self.peak_tflops_dense.get(key), f"peak_tflops_dense.{key}", "compute time") * (
            units.TFLOPS
        )

    @property
    def memory_bandwidth_bytes_s(self) -> float:
        """Peak DDR bandwidth of one socket in bytes/s."""
        return self.memory_bandwidth_gb_s * units.GB_PER_S

    def to_dict(self) -> dict[str, Any]:
        return entry_dict(self)


@dataclass(frozen=True, eq=False)
class DRAM(_EntryMixin):
    """A DRAM generation/speed: per-channel peak = transfer rate (MT/s) × 8 bytes (64-bit channel)."""

    kind: ClassVar[str] = "dram"
    id: str
    name: str
    memory_type: str
    transfer_rate_mt_s: float
    channel_bandwidth_gb_s: float
    usd_per_gb: float | None
    source: str
    provenance: Provenance
    file: str = ""

    @property
    def channel_bandwidth_bytes_s(self) -> float:
        return self.channel_bandwidth_gb_s * units.GB_PER_S

    def to_dict(self) -> dict[str, Any]:
        return entry_dict(self)


@dataclass(frozen=True, eq=False)
class SSD(_EntryMixin):
    """An NVMe drive: sequential rates in GB/s, 4K random-read IOPS, active power in W, street $/TB."""

    kind: ClassVar[str] = "ssd"
    id: str
    name: str
    vendor: str
    interface: str
    seq_read_gb_s: float
    seq_write_gb_s: float
    random_read_4k_iops: float | None
    power_active_w: float | None
    usd_per_tb: float | None
    source: str
    provenance: Provenance
    file: str = ""

    @property
    def read_bytes_s(self) -> float:
        return self.seq_read_gb_s * units.GB_PER_S

    @property
    def write_bytes_s(self) -> float:
        return self.seq_write_gb_s * units.GB_PER_S

    def to_dict(self) -> dict[str, Any]:
        return entry_dict(self)


@dataclass(frozen=True, eq=False)
class Link(_EntryMixin):
    """An interconnect. ``gb_s_per_dir`` is one direction (vendors market the sum of both).

    ``kind`` is the technology (pcie, nvlink, infinity-fabric, ...), unlike the ``kind`` of the other entries,
    which is their database kind (always ``link`` here, see :func:`entry_kind`); ``topology`` is how devices are
    joined (switch, mesh, pair, torus, point-to-point, network); ``scope`` whether the rate is per device, per
    link or per port.
    """

    id: str
    name: str
    # the technology, an instance field where other entries have the ClassVar database kind (entry_kind)
    kind: str  # type: ignore[misc]  # mypy: instance field overrides the mixin's ClassVar
    topology: str
    scope: str
    gb_s_per_dir: float
    source: str
    provenance: Provenance
    file: str = ""

    @property
    def bandwidth_bytes_s(self) -> float:
        """Per-direction bandwidth in bytes/s."""
        return self.gb_s_per_dir * units.GB_PER_S

    def to_dict(self) -> dict[str, Any]:
        out = entry_dict(self)
        out["kind"] = "link"
        out["technology"] = self.kind
        return out


@dataclass(frozen=True, eq=False)
class DramConfig:
    """The DRAM populated in a system: ``channels`` in total across sockets, ``capacity_gb`` if known."""

    dram: DRAM
    channels: int
    capacity_gb: float | None

    @property
    def bandwidth_bytes_s(self) -> float:
        """Peak bandwidth of all populated channels in bytes/s."""
        return self.channels * self.dram.channel_bandwidth_bytes_s

    def capacity_bytes(self, system_id: str) -> float:
        if self.capacity_gb is None:
            raise MissingValueError(system_id, "dram.capacity_gb", "host-memory fit")
        return self.capacity_gb * units.GB


@dataclass(frozen=True, eq=False)
class System(_EntryMixin):
    """A node: accelerators, CPUs, DRAM and drives joined by a topology graph.

    ``topology`` has nodes ``gpu0..``, ``cpu0..`` (or ``host0`` when the CPU is not in the database), ``dram0..``
    (one per socket), ``ssd0..`` and ``nvswitch`` for switched fabrics; every edge carries ``bandwidth_bytes_s``
    for that direction and the ``link`` id it uses. ``graph`` is the same as a frozen ``networkx.DiGraph``,
    built on first use (networkx is not imported to predict).
    """

    kind: ClassVar[str] = "system"
    id: str
    name: str
    accelerator: Accelerator | None
    accelerator_count: int
    cpus: tuple[tuple[CPU, int], ...]
    dram: DramConfig | None
    ssds: tuple[tuple[SSD, int], ...]
    fabric: str
    scale_out: Link | None
    scale_out_ports: int | None
    purchase_usd: float | None
    cloud_usd_per_hour: float | None
    topology: Topology
    source: str
    provenance: Provenance
    file: str = ""

    @cached_property
    def graph(self) -> nx.DiGraph:
        """:attr:`topology` as a frozen ``networkx.DiGraph``."""
        return self.topology.to_networkx()

    @property
    def accelerator_nodes(self) -> list[str]:
        return [f"gpu{i}" for i in range(self.accelerator_count)]

    def bandwidth_between(self, a: str, b: str) -> float:
        """Bytes/s from node ``a`` to node ``b``: the widest path, i.e. the path whose narrowest edge is widest
        (one path, not the sum of parallel paths)."""
        self._check_node(a)
        self._check_node(b)
        if a == b:
            raise ScenarioError(f"bandwidth_between needs two different nodes of {self.id}; got {a!r} twice")
        width = widest_from(self.topology, a).get(b)
        if width is None:
            raise MissingValueError(self.id, f"path {a} -> {b}", "bandwidth_between")
        return width

    def gpu_to_gpu_bandwidth(self) -> float:
        """Bytes/s per direction between two accelerators: the narrowest widest-path over all ordered pairs,
        which is what a collective spanning every accelerator of the node is limited by."""
        gpus = self.accelerator_nodes
        if len(gpus) < 2:
            raise ScenarioError(
                f"{self.id} has {len(gpus)} accelerator(s); GPU-to-GPU bandwidth needs at least 2 "
                "(use a system or a count with more devices)"
            )
        width = self._gpu_to_gpu_or_none()
        if width is None:
            raise MissingValueError(self.id, "a path between its accelerators", "gpu_to_gpu_bandwidth")
        return width

    def host_to_gpu_bandwidth(self) -> float:
        """Bytes/s from host memory to each accelerator (the slowest one): from the system's DRAM where it
        lists DRAM, else from the CPU/host root complex. For unified-memory devices host memory *is* device
        memory, so this is the device-memory bandwidth."""
        width = self._host_to_gpu_or_none()
        if width is None:
            raise MissingValueError(self.id, "host link", "host_to_gpu_bandwidth")
        return width

    def _gpu_to_gpu_or_none(self) -> float | None:
        gpus = self.accelerator_nodes
        if len(gpus) < 2:
            return None
        narrowest = min_pair_bottleneck(self.topology, gpus)
        if narrowest is None:
            # direction-dependent links: one widest-path search per accelerator (O(n^2) pairs)
            narrowest = math.inf
            for g in gpus:
                reach = widest_from(self.topology, g)
                narrowest = min(narrowest, min(reach.get(h, 0.0) for h in gpus if h != g))
        return narrowest if narrowest > 0.0 else None

    def _host_to_gpu_or_none(self) -> float | None:
        if self.accelerator is None:
            return None
        if self.accelerator.unified_memory:
            return self.accelerator.memory_bandwidth_bytes_s
        sources = self.topology.nodes_of_kind("dram") or self.topology.nodes_of_kind("cpu", "host")
        reach = [widest_from(self.topology, s) for s in sources]  # one search per source, not per GPU
        widths = [max((r.get(gpu, 0.0) for r in reach), default=0.0) for gpu in self.accelerator_nodes]
        return min(widths) if widths and min(widths) > 0.0 else None

    def _check_node(self, name: str) -> None:
        if name not in self.topology:
            nodes = sorted(self.topology)
            close = difflib.get_close_matches(name, nodes, n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}?" if close else f"nodes: {', '.join(nodes)}"
            raise ScenarioError(f"{self.id} has no node {name!r}; {hint}")

    def edges(self) -> list[dict[str, Any]]:
        """The topology as a list of directed edges (GB/s per direction, link id)."""
        return [
            {"from": u, "to": v, "bandwidth_gb_s": d["bandwidth_bytes_s"] / units.GB_PER_S, "link": d["link"]}
            for u, v, d in sorted(self.topology.edges(), key=lambda e: (e[0], e[1]))
        ]

    def bandwidth_summary(self) -> dict[str, float | None]:
        """GPU-GPU and host-GPU bandwidth in bytes/s, ``None`` where the node has no such path (one device,
        no host link) instead of the errors :meth:`gpu_to_gpu_bandwidth` / :meth:`host_to_gpu_bandwidth` raise."""
        return {
            "gpu_to_gpu_bytes_s": self._gpu_to_gpu_or_none() if self.accelerator_count >= 2 else None,
            "host_to_gpu_bytes_s": self._host_to_gpu_or_none(),
        }

    def to_dict(self) -> dict[str, Any]:
        summary = self.bandwidth_summary()
        gpu_gpu, host_gpu = summary["gpu_to_gpu_bytes_s"], summary["host_to_gpu_bytes_s"]
        return {
            "id": self.id,
            "kind": "system",
            "name": self.name,
            "accelerator": self.accelerator.id if self.accelerator else None,
            "accelerator_count": self.accelerator_count,
            "cpus": [{"id": c.id, "count": n} for c, n in self.cpus],
            "dram": None
            if self.dram is None
            else {
                "kind": self.dram.dram.id,
                "channels": self.dram.channels,
                "capacity_gb": self.dram.capacity_gb,
            },
            "ssds": [{"id": s.id, "count": n} for s, n in self.ssds],
            "fabric": self.fabric,
            "scale_out": self.scale_out.id if self.scale_out else None,
            "scale_out_ports": self.scale_out_ports,
            "purchase_usd": self.purchase_usd,
            "cloud_usd_per_hour": self.cloud_usd_per_hour,
            "source": self.source,
            "file": self.file,
            "topology": {"nodes": sorted(self.topology), "edges": self.edges()},
            "computed": {
                "gpu_to_gpu_gb_s": None if gpu_gpu is None else gpu_gpu / units.GB_PER_S,
                "host_to_gpu_gb_s": None if host_gpu is None else host_gpu / units.GB_PER_S,
            },
            "provenance": provenance_dict(self.provenance),
        }


Entry = Accelerator | CPU | DRAM | SSD | Link | System


def entry_kind(entry: Entry) -> str:
    """The database kind of an entry (``accelerator``, ``cpu``, ``dram``, ``ssd``, ``link``, ``system``)."""
    return "link" if isinstance(entry, Link) else entry.kind


def entry_dict(entry: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"id": entry.id, "kind": entry_kind(entry)}
    for name in entry.__dataclass_fields__:
        if name in ("id", "provenance", "efficiency_overrides"):
            continue
        value = getattr(entry, name)
        out[name] = dict(value) if isinstance(value, Mapping) else value
    if getattr(entry, "efficiency_overrides", None):
        out["efficiency_overrides"] = provenance_dict(entry.efficiency_overrides)
    out["provenance"] = provenance_dict(entry.provenance)
    return out


def with_article(noun: str) -> str:
    """``an accelerator``, ``a cpu``: the noun with its indefinite article (for error messages)."""
    return f"an {noun}" if noun[:1] in "aeiou" else f"a {noun}"
