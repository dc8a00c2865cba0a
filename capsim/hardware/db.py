"""The hardware database: one loader that parses, validates and builds frozen dataclasses.

Data lives in ``hardware_db/<kind>s/<id>.toml`` (one file per entry, kinds: accelerator, cpu, dram, ssd, link,
system) plus ``hardware_db/efficiency.toml``; ``hardware_db/README.md`` documents the schema. Users add or
override entries with their own files or folders (``--hardware-db PATH``), which go through the same validator.

Layers (pint's parser / registry split):

1. *parse*: TOML -> a flat ``{"dotted.field": Sourced}`` map per file. A value is written bare (its source is
   the file's top-level ``source``) or as ``{ value = ..., source = ..., soft = true, note = ..., date = ... }``.
2. *validate*: every field checked against the kind's schema (unknown field, wrong type, zero or negative
   number, dangling reference -> :class:`DataFileError` naming the file and the field).
3. *build*: frozen dataclasses; systems and synthetic nodes get a ``networkx`` topology graph whose edges carry
   ``bandwidth_bytes_s`` per direction.

Units: fields keep the vendor's decimal units in their names (``memory_bandwidth_gb_s``); properties and methods
that the engine calls return SI (bytes, bytes/s, FLOP/s) through :mod:`capsim.units`.
"""

from __future__ import annotations

import difflib
import heapq
import math
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Literal

import networkx as nx

from capsim import units
from capsim._paths import data_dir
from capsim.errors import DataFileError, MissingValueError, ScenarioError, UnknownHardwareError

SCHEMA_VERSION = 1
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
_SOURCED_KEYS = frozenset({"value", "source", "soft", "note", "date"})
_HEADER_KEYS = frozenset({"schema", "id", "kind", "source"})

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


def _provenance_dict(prov: Provenance) -> dict[str, Any]:
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
        out["provenance"] = _provenance_dict(self.provenance)
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
        return _entry_dict(self)


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
        return _entry_dict(self)


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
        return _entry_dict(self)


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
        return _entry_dict(self)


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
    kind: str  # type: ignore[misc]
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
        out = _entry_dict(self)
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

    ``graph`` (frozen ``networkx.DiGraph``) has nodes ``gpu0..``, ``cpu0..`` (or ``host0`` when the CPU is not in
    the database), ``dram0..`` (one per socket), ``ssd0..`` and ``nvswitch`` for switched fabrics; every edge
    carries ``bandwidth_bytes_s`` for that direction and the ``link`` id it uses.
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
    graph: nx.DiGraph
    source: str
    provenance: Provenance
    file: str = ""

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
        width = _widest_from(self.graph, a).get(b)
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
        narrowest = _min_pair_bottleneck(self.graph, gpus)
        if narrowest is None:
            # direction-dependent links: one widest-path search per accelerator (O(n^2) pairs)
            narrowest = math.inf
            for g in gpus:
                reach = _widest_from(self.graph, g)
                narrowest = min(narrowest, min(reach.get(h, 0.0) for h in gpus if h != g))
        return narrowest if narrowest > 0.0 else None

    def _host_to_gpu_or_none(self) -> float | None:
        if self.accelerator is None:
            return None
        if self.accelerator.unified_memory:
            return self.accelerator.memory_bandwidth_bytes_s
        sources = [n for n, d in self.graph.nodes(data=True) if d["kind"] == "dram"] or [
            n for n, d in self.graph.nodes(data=True) if d["kind"] in ("cpu", "host")
        ]
        reach = [_widest_from(self.graph, s) for s in sources]  # one search per source, not per GPU
        widths = [max((r.get(gpu, 0.0) for r in reach), default=0.0) for gpu in self.accelerator_nodes]
        return min(widths) if widths and min(widths) > 0.0 else None

    def _check_node(self, name: str) -> None:
        if name not in self.graph:
            nodes = sorted(self.graph.nodes)
            close = difflib.get_close_matches(name, nodes, n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}?" if close else f"nodes: {', '.join(nodes)}"
            raise ScenarioError(f"{self.id} has no node {name!r}; {hint}")

    def edges(self) -> list[dict[str, Any]]:
        """The topology as a list of directed edges (GB/s per direction, link id)."""
        return [
            {"from": u, "to": v, "bandwidth_gb_s": d["bandwidth_bytes_s"] / units.GB_PER_S, "link": d["link"]}
            for u, v, d in sorted(self.graph.edges(data=True), key=lambda e: (e[0], e[1]))
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
            "topology": {"nodes": sorted(self.graph.nodes), "edges": self.edges()},
            "computed": {
                "gpu_to_gpu_gb_s": None if gpu_gpu is None else gpu_gpu / units.GB_PER_S,
                "host_to_gpu_gb_s": None if host_gpu is None else host_gpu / units.GB_PER_S,
            },
            "provenance": _provenance_dict(self.provenance),
        }


Entry = Accelerator | CPU | DRAM | SSD | Link | System


def entry_kind(entry: Entry) -> str:
    """The database kind of an entry (``accelerator``, ``cpu``, ``dram``, ``ssd``, ``link``, ``system``)."""
    return "link" if isinstance(entry, Link) else entry.kind


def _entry_dict(entry: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"id": entry.id, "kind": entry_kind(entry)}
    for name in entry.__dataclass_fields__:
        if name in ("id", "provenance", "efficiency_overrides"):
            continue
        value = getattr(entry, name)
        out[name] = dict(value) if isinstance(value, Mapping) else value
    if getattr(entry, "efficiency_overrides", None):
        out["efficiency_overrides"] = _provenance_dict(entry.efficiency_overrides)
    out["provenance"] = _provenance_dict(entry.provenance)
    return out


# --------------------------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class _Field:
    """Schema of one field: its type (``float`` > 0, ``fraction`` in (0, 1], ``int`` > 0, ``str``, ``bool``,
    ``ref:<kind>``), whether it is required, and allowed values for enums."""

    type: str
    required: bool = False
    choices: tuple[str, ...] = ()


def _peaks(prefix: str) -> dict[str, _Field]:
    return {f"{prefix}.{key}": _Field("float") for key in PRECISION_KEYS}


def _efficiency_fields(prefix: str, required: bool) -> dict[str, _Field]:
    fraction = {"memory_bw_fraction", "compute_fraction", "gpu_memory_utilization"}
    fields = {
        f"{prefix}{name}": _Field("fraction" if name in fraction else "float", required=required)
        for name in EFFICIENCY_FIELDS
    }
    # optional calibrated curve: tokens M -> fraction of the achievable bandwidth a weight GEMM reaches
    fields[f"{prefix}{GEMM_CURVE_FIELD}.#"] = _Field("fraction")
    # optional soft-roofline exponent of weight GEMMs (>= 1; absent = max(t_compute, t_memory))
    fields[f"{prefix}{GEMM_OVERLAP_FIELD}"] = _Field("float")
    fields[f"{prefix}{KERNEL_BW_FIELD}"] = _Field("fraction")
    fields[f"{prefix}{KERNEL_LATENCY_FIELD}"] = _Field("float")
    return fields


_SCHEMAS: dict[str, dict[str, _Field]] = {
    "accelerator": {
        "name": _Field("str", True),
        "vendor": _Field("str", True),
        "device_class": _Field("str", True),
        "memory_capacity_gb": _Field("float", True),
        "memory_bandwidth_gb_s": _Field("float", True),
        "memory_type": _Field("str"),
        "tdp_w": _Field("float"),
        "idle_w": _Field("float"),
        "unified_memory": _Field("bool"),
        **_peaks("peak_tflops_dense"),
        **_peaks("peak_tflops_sparse"),
        "links.scale_up": _Field("ref:link"),
        "links.scale_up_gb_s_per_dir": _Field("float"),
        "links.scale_up_peers": _Field("int"),
        "links.scale_up_domain_max": _Field("int"),
        "links.host": _Field("ref:link"),
        "price.purchase_usd": _Field("float"),
        "price.cloud_usd_per_hour": _Field("float"),
        **_efficiency_fields("efficiency.", required=False),
    },
    "cpu": {
        "name": _Field("str", True),
        "vendor": _Field("str", True),
        "device_class": _Field("str"),
        "cores": _Field("int", True),
        "threads": _Field("int"),
        "base_clock_ghz": _Field("float"),
        "boost_clock_ghz": _Field("float"),
        "memory_channels": _Field("int", True),
        "dram_kind": _Field("ref:dram"),
        "memory_bandwidth_gb_s": _Field("float", True),
        "socket_link_gb_s_per_dir": _Field("float"),
        **_peaks("peak_tflops_dense"),
        "tdp_w": _Field("float"),
        "idle_w": _Field("float"),
        "price.purchase_usd": _Field("float"),
        **_efficiency_fields("efficiency.", required=False),
    },
    "dram": {
        "name": _Field("str", True),
        "memory_type": _Field("str", True),
        "transfer_rate_mt_s": _Field("float", True),
        "channel_bandwidth_gb_s": _Field("float", True),
        "price.usd_per_gb": _Field("float"),
    },
    "ssd": {
        "name": _Field("str", True),
        "vendor": _Field("str", True),
        "interface": _Field("str", True),
        "seq_read_gb_s": _Field("float", True),
        "seq_write_gb_s": _Field("float", True),
        "random_read_4k_iops": _Field("float"),
        "power_active_w": _Field("float"),
        "price.usd_per_tb": _Field("float"),
    },
    "link": {
        "name": _Field("str", True),
        "technology": _Field("str", True),
        "topology": _Field("str", True, LINK_TOPOLOGIES),
        "scope": _Field("str", True, LINK_SCOPES),
        "gb_s_per_dir": _Field("float", True),
    },
    "system": {
        "name": _Field("str", True),
        "accelerators.id": _Field("ref:accelerator"),
        "accelerators.count": _Field("int"),
        "cpus.id": _Field("ref:cpu"),
        "cpus.count": _Field("int"),
        "dram.kind": _Field("ref:dram"),
        "dram.channels": _Field("int"),
        "dram.capacity_gb": _Field("float"),
        "ssds.#.id": _Field("ref:ssd"),
        "ssds.#.count": _Field("int"),
        "ssds.#.capacity_tb": _Field("float"),
        "fabric": _Field("str", True, FABRICS),
        "scale_out": _Field("ref:link"),
        "scale_out_ports": _Field("int"),
        "price.purchase_usd": _Field("float"),
        "price.cloud_usd_per_hour": _Field("float"),
        # host platform parts around the accelerators, CPUs, DRAM and drives (capsim.economics.cost prices them)
        **{f"platform.{part}_usd": _Field("float") for part in PLATFORM_PARTS},
        "platform.power_w": _Field("float"),
    },
}
_EFFICIENCY_SCHEMA = _efficiency_fields("", required=True)


# --------------------------------------------------------------------------------------------- parse


@dataclass(frozen=True)
class _Record:
    """One parsed and field-validated file: its kind, id, flat provenance map and path."""

    kind: str
    id: str
    fields: Provenance
    source: str
    path: str


@dataclass(frozen=True)
class _EfficiencyRecord:
    device_class: str
    fields: Provenance
    path: str


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise DataFileError(str(path), f"not valid TOML ({exc}); fix the syntax") from None
    except UnicodeDecodeError:
        raise DataFileError(str(path), "not UTF-8 text (TOML must be UTF-8); save it as UTF-8") from None
    except OSError as exc:
        raise DataFileError(str(path), f"cannot be read ({exc.strerror})") from None


def _header_str(raw: Mapping[str, Any], key: str, path: Path) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DataFileError(str(path), f"field {key!r} is missing or empty; every entry needs a {key}")
    return value


def _check_schema_version(raw: Mapping[str, Any], path: Path) -> None:
    if raw.get("schema") != SCHEMA_VERSION:
        raise DataFileError(
            str(path),
            f"field 'schema' must be {SCHEMA_VERSION} (got {raw.get('schema')!r}); add 'schema = 1'",
        )


def _flatten(raw: Mapping[str, Any], default_source: str, path: Path, prefix: str = "") -> dict[str, Sourced]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": Sourced(1, default_source)}``; inline sourced tables become leaves."""
    out: dict[str, Sourced] = {}
    for key, value in raw.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and "value" in value:
            out[name] = _sourced_leaf(value, default_source, name, path)
        elif isinstance(value, dict):
            out.update(_flatten(value, default_source, path, f"{name}."))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if not isinstance(item, dict):
                    raise DataFileError(
                        str(path), f"field {name!r} must be a list of tables, e.g. [{{ id = ... }}]"
                    )
                out.update(_flatten(item, default_source, path, f"{name}.{i}."))
        else:
            out[name] = Sourced(value, default_source)
    return out


def _sourced_leaf(table: Mapping[str, Any], default_source: str, name: str, path: Path) -> Sourced:
    extra = set(table) - _SOURCED_KEYS
    if extra:
        raise DataFileError(
            str(path),
            f"field {name!r} has unknown key(s) {', '.join(sorted(extra))}; "
            "a sourced value allows value, source, soft, note, date",
        )
    source = table.get("source", default_source)
    if not isinstance(source, str) or not source.strip():
        raise DataFileError(str(path), f"field {name!r} has an empty source; name the document it comes from")
    soft = table.get("soft", False)
    if not isinstance(soft, bool):
        raise DataFileError(str(path), f"field {name!r}: 'soft' must be true or false")
    note = table.get("note", "")
    if not isinstance(note, str):
        raise DataFileError(str(path), f"field {name!r}: 'note' must be a string")
    return Sourced(table["value"], source, soft, note, str(table.get("date", "")))


def _pattern_of(name: str) -> str:
    return ".".join("#" if part.isdigit() else part for part in name.split("."))


def _validate_fields(kind: str, fields: dict[str, Sourced], schema: Mapping[str, _Field], path: Path) -> None:
    for name, sourced in fields.items():
        spec = schema.get(_pattern_of(name))
        if spec is None:
            close = difflib.get_close_matches(_pattern_of(name), list(schema), n=2, cutoff=0.6)
            hint = (
                f"did you mean {' or '.join(repr(c) for c in close)}?"
                if close
                else "see hardware_db/README.md"
            )
            raise DataFileError(str(path), f"unknown field {name!r} for {_an(kind)} entry; {hint}")
        fields[name] = replace(sourced, value=_checked_value(spec, sourced.value, name, path))
    present = {_pattern_of(n) for n in fields}
    for name, spec in schema.items():
        if spec.required and name not in present:
            raise DataFileError(str(path), f"missing required field {name!r} for {_an(kind)} entry")


def _checked_value(spec: _Field, value: Any, name: str, path: Path) -> Value:
    t = spec.type
    if t in ("float", "fraction"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise DataFileError(str(path), f"field {name!r} must be a number, got {value!r}")
        if value <= 0:
            raise DataFileError(
                str(path), f"field {name!r} must be > 0, got {value!r}; leave unknown values out instead of 0"
            )
        if t == "fraction" and value > 1:
            raise DataFileError(str(path), f"field {name!r} is a fraction and must be <= 1, got {value!r}")
        return float(value)
    if t == "int":
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise DataFileError(str(path), f"field {name!r} must be a positive integer, got {value!r}")
        return value
    if t == "bool":
        if not isinstance(value, bool):
            raise DataFileError(str(path), f"field {name!r} must be true or false, got {value!r}")
        return value
    # str and ref:<kind>
    if not isinstance(value, str) or not value.strip():
        raise DataFileError(str(path), f"field {name!r} must be a non-empty string, got {value!r}")
    if spec.choices and value not in spec.choices:
        raise DataFileError(
            str(path), f"field {name!r} must be one of {', '.join(spec.choices)}; got {value!r}"
        )
    return value


def _check_gemm_curve(fields: Mapping[str, Sourced], prefix: str, path: Path) -> None:
    """The ``gemm_tokens_efficiency`` keys are token counts: integers >= 1, written in ascending order; a
    ``gemm_overlap_exponent`` is >= 1 (below 1 the soft roofline would exceed the sum of the two times)."""
    overlap = fields.get(f"{prefix}{GEMM_OVERLAP_FIELD}")
    if overlap is not None and float(overlap.value) < 1.0:
        raise DataFileError(
            str(path),
            f"field '{prefix}{GEMM_OVERLAP_FIELD}' must be >= 1, got {overlap.value}; 1 = the sum of "
            "compute and memory time, large = their max",
        )
    table = f"{prefix}{GEMM_CURVE_FIELD}."
    previous = 0
    for name in fields:
        if not name.startswith(table):
            continue
        tokens = int(name[len(table) :])
        if tokens < 1:
            raise DataFileError(
                str(path),
                f"field {name!r}: token counts start at 1, got {tokens}; key the table by tokens >= 1",
            )
        if tokens <= previous:
            raise DataFileError(
                str(path),
                f"field {name!r}: token counts must be ascending ({tokens} after {previous}); sort the table",
            )
        previous = tokens


def _parse_entry(path: Path, raw: Mapping[str, Any]) -> _Record:
    _check_schema_version(raw, path)
    kind = _header_str(raw, "kind", path)
    if kind not in KINDS:
        raise DataFileError(
            str(path), f"field 'kind' must be one of {', '.join(KINDS)} or efficiency; got {kind!r}"
        )
    entry_id = _header_str(raw, "id", path)
    if entry_id != path.stem:
        raise DataFileError(
            str(path), f"id {entry_id!r} must match the file name; rename the file to {entry_id}.toml"
        )
    source = _header_str(raw, "source", path)
    body = {k: v for k, v in raw.items() if k not in _HEADER_KEYS}
    fields = _flatten(body, source, path)
    _validate_fields(kind, fields, _SCHEMAS[kind], path)
    _check_gemm_curve(fields, "efficiency.", path)
    return _Record(kind, entry_id, MappingProxyType(fields), source, str(path))


def _parse_efficiency(path: Path, raw: Mapping[str, Any]) -> list[_EfficiencyRecord]:
    _check_schema_version(raw, path)
    source = _header_str(raw, "source", path)
    records = []
    for device_class, table in raw.items():
        if device_class in _HEADER_KEYS:
            continue
        if not isinstance(table, dict):
            raise DataFileError(
                str(path), f"{device_class!r} must be a table [{device_class}] of efficiency values"
            )
        fields = _flatten(table, source, path)
        _validate_fields(f"efficiency class {device_class!r}", fields, _EFFICIENCY_SCHEMA, path)
        _check_gemm_curve(fields, "", path)
        records.append(_EfficiencyRecord(device_class, MappingProxyType(fields), str(path)))
    return records


def _toml_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise DataFileError(str(root), "no such file or directory; check the --hardware-db path")
    files = sorted(p for p in root.rglob("*.toml") if p.is_file())
    if not files:
        raise DataFileError(str(root), "contains no .toml hardware entries")
    return files


def _parse_tree(root: Path) -> tuple[list[_Record], list[_EfficiencyRecord]]:
    records: list[_Record] = []
    efficiency: list[_EfficiencyRecord] = []
    for path in _toml_files(root):
        raw = _read_toml(path)
        if raw.get("kind") == "efficiency":
            efficiency.extend(_parse_efficiency(path, raw))
        else:
            records.append(_parse_entry(path, raw))
    return records, efficiency


# --------------------------------------------------------------------------------------------- build


def _v(fields: Provenance, name: str) -> Any:
    s = fields.get(name)
    return None if s is None else s.value


def _peak_table(fields: Provenance, prefix: str) -> Mapping[str, float]:
    return MappingProxyType(
        {key: float(fields[f"{prefix}.{key}"].value) for key in PRECISION_KEYS if f"{prefix}.{key}" in fields}
    )


def _overrides(fields: Provenance) -> Provenance:
    return MappingProxyType(
        {name[len("efficiency.") :]: s for name, s in fields.items() if name.startswith("efficiency.")}
    )


def _build_accelerator(r: _Record) -> Accelerator:
    f = r.fields
    return Accelerator(
        id=r.id,
        name=_v(f, "name"),
        vendor=_v(f, "vendor"),
        device_class=_v(f, "device_class"),
        memory_capacity_gb=_v(f, "memory_capacity_gb"),
        memory_bandwidth_gb_s=_v(f, "memory_bandwidth_gb_s"),
        peak_tflops_dense=_peak_table(f, "peak_tflops_dense"),
        peak_tflops_sparse=_peak_table(f, "peak_tflops_sparse"),
        tdp_w=_v(f, "tdp_w"),
        unified_memory=bool(_v(f, "unified_memory")),
        scale_up_link=_v(f, "links.scale_up"),
        scale_up_gb_s_per_dir=_v(f, "links.scale_up_gb_s_per_dir"),
        host_link=_v(f, "links.host"),
        purchase_usd=_v(f, "price.purchase_usd"),
        cloud_usd_per_hour=_v(f, "price.cloud_usd_per_hour"),
        source=r.source,
        provenance=f,
        memory_type=_v(f, "memory_type"),
        scale_up_peers=_v(f, "links.scale_up_peers"),
        scale_up_domain_max=_v(f, "links.scale_up_domain_max"),
        efficiency_overrides=_overrides(f),
        file=r.path,
    )


def _build_cpu(r: _Record) -> CPU:
    f = r.fields
    return CPU(
        id=r.id,
        name=_v(f, "name"),
        vendor=_v(f, "vendor"),
        device_class=_v(f, "device_class") or "cpu",
        cores=_v(f, "cores"),
        threads=_v(f, "threads"),
        base_clock_ghz=_v(f, "base_clock_ghz"),
        boost_clock_ghz=_v(f, "boost_clock_ghz"),
        memory_channels=_v(f, "memory_channels"),
        dram_kind=_v(f, "dram_kind"),
        memory_bandwidth_gb_s=_v(f, "memory_bandwidth_gb_s"),
        peak_tflops_dense=_peak_table(f, "peak_tflops_dense"),
        tdp_w=_v(f, "tdp_w"),
        purchase_usd=_v(f, "price.purchase_usd"),
        source=r.source,
        provenance=f,
        efficiency_overrides=_overrides(f),
        file=r.path,
        socket_link_gb_s_per_dir=_v(f, "socket_link_gb_s_per_dir"),
    )


def _build_dram(r: _Record) -> DRAM:
    f = r.fields
    return DRAM(
        id=r.id,
        name=_v(f, "name"),
        memory_type=_v(f, "memory_type"),
        transfer_rate_mt_s=_v(f, "transfer_rate_mt_s"),
        channel_bandwidth_gb_s=_v(f, "channel_bandwidth_gb_s"),
        usd_per_gb=_v(f, "price.usd_per_gb"),
        source=r.source,
        provenance=f,
        file=r.path,
    )


def _build_ssd(r: _Record) -> SSD:
    f = r.fields
    return SSD(
        id=r.id,
        name=_v(f, "name"),
        vendor=_v(f, "vendor"),
        interface=_v(f, "interface"),
        seq_read_gb_s=_v(f, "seq_read_gb_s"),
        seq_write_gb_s=_v(f, "seq_write_gb_s"),
        random_read_4k_iops=_v(f, "random_read_4k_iops"),
        power_active_w=_v(f, "power_active_w"),
        usd_per_tb=_v(f, "price.usd_per_tb"),
        source=r.source,
        provenance=f,
        file=r.path,
    )


def _build_link(r: _Record) -> Link:
    f = r.fields
    return Link(
        id=r.id,
        name=_v(f, "name"),
        kind=_v(f, "technology"),
        topology=_v(f, "topology"),
        scope=_v(f, "scope"),
        gb_s_per_dir=_v(f, "gb_s_per_dir"),
        source=r.source,
        provenance=f,
        file=r.path,
    )


_BUILDERS = {
    "accelerator": _build_accelerator,
    "cpu": _build_cpu,
    "dram": _build_dram,
    "ssd": _build_ssd,
    "link": _build_link,
}


def _build_efficiency(device_class: str, fields: Provenance) -> Efficiency:
    return Efficiency(
        device_class=device_class, provenance=fields, **{n: fields[n].value for n in EFFICIENCY_FIELDS}
    )


# --------------------------------------------------------------------------------------------- topology


def _widest_from(graph: nx.DiGraph, source: str) -> dict[str, float]:
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


def _min_pair_bottleneck(graph: nx.DiGraph, terminals: Sequence[str]) -> float | None:
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


def _connect(
    g: nx.DiGraph, a: str, b: str, bandwidth_bytes_s: float, link: str, back: float | None = None
) -> None:
    """Two directed edges a->b and b->a (``back`` bytes/s for b->a when the directions differ)."""
    g.add_edge(a, b, bandwidth_bytes_s=bandwidth_bytes_s, link=link)
    g.add_edge(b, a, bandwidth_bytes_s=bandwidth_bytes_s if back is None else back, link=link)


def _torus_pairs(count: int, dims: int) -> dict[tuple[int, int], int]:
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


# --------------------------------------------------------------------------------------------- database


class HardwareDB:
    """The loaded, validated database. Read-only: get one from :func:`load_hardware_db`."""

    def __init__(self, entries: Mapping[str, Entry], efficiency: Mapping[str, Efficiency]) -> None:
        self._entries = MappingProxyType(dict(entries))
        self._efficiency = MappingProxyType(dict(efficiency))

    # ----- lookups

    def ids(self, kind: str | None = None) -> list[str]:
        """Sorted ids of every entry, or of one kind."""
        if kind is not None and kind not in KINDS:
            raise ScenarioError(f"unknown hardware kind {kind!r}; choose one of {', '.join(KINDS)}")
        return sorted(i for i, e in self._entries.items() if kind is None or entry_kind(e) == kind)

    def get(self, entry_id: str) -> Entry:
        """Any entry by id; UnknownHardwareError (with close matches) when absent."""
        try:
            return self._entries[entry_id]
        except KeyError:
            raise _unknown(entry_id, self.ids()) from None

    def accelerator(self, entry_id: str) -> Accelerator:
        return self._typed(entry_id, Accelerator, "accelerator")

    def cpu(self, entry_id: str) -> CPU:
        return self._typed(entry_id, CPU, "cpu")

    def dram(self, entry_id: str) -> DRAM:
        return self._typed(entry_id, DRAM, "dram")

    def ssd(self, entry_id: str) -> SSD:
        return self._typed(entry_id, SSD, "ssd")

    def link(self, entry_id: str) -> Link:
        return self._typed(entry_id, Link, "link")

    def system(self, entry_id: str) -> System:
        return self._typed(entry_id, System, "system")

    def _typed(self, entry_id: str, cls: type, kind: str) -> Any:
        entry = self._entries.get(entry_id)
        if entry is None:
            raise _unknown(entry_id, self.ids(kind))
        if not isinstance(entry, cls):
            raise ScenarioError(
                f"{entry_id!r} is {_an(entry_kind(entry))} entry, not {_an(kind)}; "
                f"{kind} ids: {', '.join(self.ids(kind))}"
            )
        return entry

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries[i] for i in self.ids())

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._entries

    # ----- efficiency

    def efficiency_classes(self) -> list[str]:
        return sorted(self._efficiency)

    def efficiency(self, device_class: str) -> Efficiency:
        """The defaults of one device class (``datacenter-gpu``, ``consumer-gpu``, ``cpu``, ...)."""
        try:
            return self._efficiency[device_class]
        except KeyError:
            raise _unknown(device_class, self.efficiency_classes()) from None

    def efficiency_for(self, device: Accelerator | CPU) -> Efficiency:
        """The device's class defaults with its own ``[efficiency]`` overrides merged on top; the provenance
        of each field shows which applied."""
        base = self.efficiency(device.device_class)
        if not device.efficiency_overrides:
            return base
        prov = dict(base.provenance)
        if any(name.startswith(f"{GEMM_CURVE_FIELD}.") for name in device.efficiency_overrides):
            # a device's curve replaces its class's whole curve: mixing points of two curves means nothing
            prov = {name: v for name, v in prov.items() if not name.startswith(f"{GEMM_CURVE_FIELD}.")}
        prov.update(device.efficiency_overrides)
        return _build_efficiency(device.device_class, MappingProxyType(prov))

    # ----- nodes

    def node(self, entry_id: str, count: int | None = None) -> System:
        """A node to run on.

        ``entry_id`` an accelerator: a synthetic node of ``count`` (default 1) devices joined by its scale-up
        link (through a switch for switched links, a full mesh, bridged pairs or a torus), or through the host's
        PCIe when it has none. ``entry_id`` a system: the system, or its first ``count`` accelerators.
        """
        entry = self.get(entry_id)
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise ScenarioError(f"device count must be a positive integer, got {count!r}")
        if isinstance(entry, System):
            return _subset(entry, count)
        if isinstance(entry, Accelerator):
            return _synthetic_node(entry, count or 1, self)
        raise ScenarioError(
            f"{entry_id!r} is {_an(entry_kind(entry))} entry; a node is built from an accelerator or a system id"
        )


def _an(noun: str) -> str:
    return f"an {noun}" if noun[:1] in "aeiou" else f"a {noun}"


def _unknown(name: str, valid: Sequence[str]) -> UnknownHardwareError:
    return UnknownHardwareError(name, valid, difflib.get_close_matches(name, valid, n=3, cutoff=0.6))


def _subset(system: System, count: int | None) -> System:
    if count is None or count == system.accelerator_count:
        return system
    if count > system.accelerator_count:
        raise ScenarioError(
            f"{system.id} has {system.accelerator_count} accelerators; asked for {count}; "
            f"use a count of at most {system.accelerator_count}"
        )
    dropped = [f"gpu{i}" for i in range(count, system.accelerator_count)]
    graph = system.graph.copy()
    graph.remove_nodes_from(dropped)
    return replace(
        system, accelerator_count=count, graph=nx.freeze(graph), name=f"{system.name} ({count} used)"
    )


def _synthetic_node(acc: Accelerator, count: int, db: HardwareDB) -> System:
    g = nx.DiGraph()
    for i in range(count):
        g.add_node(f"gpu{i}", kind="accelerator")
    fabric = "none"
    if acc.host_link is not None:
        host = db.link(acc.host_link)
        g.add_node("host0", kind="host")
        for i in range(count):
            _connect(g, f"gpu{i}", "host0", host.bandwidth_bytes_s, host.id)
        fabric = "pcie" if count > 1 else "none"
    if count > 1 and acc.scale_up_link is not None:
        fabric = _add_scale_up(g, acc, db.link(acc.scale_up_link), count)
    elif count > 1 and acc.host_link is None:
        raise ScenarioError(
            f"{acc.id} has neither a scale-up nor a host link in the database, so {count} of them cannot be "
            "joined; use count 1 or add links with --hardware-db"
        )
    return System(
        id=acc.id if count == 1 else f"{acc.id}x{count}",
        name=acc.name if count == 1 else f"{count}x {acc.name}",
        accelerator=acc,
        accelerator_count=count,
        cpus=(),
        dram=None,
        ssds=(),
        fabric=fabric,
        scale_out=None,
        scale_out_ports=None,
        purchase_usd=None if acc.purchase_usd is None else acc.purchase_usd * count,
        cloud_usd_per_hour=None if acc.cloud_usd_per_hour is None else acc.cloud_usd_per_hour * count,
        graph=nx.freeze(g),
        source=f"synthetic node built by capsim from {acc.id} ({acc.file})",
        provenance=acc.provenance,
        file=acc.file,
    )


def _scale_up_rate(acc: Accelerator, link: Link) -> float:
    """Bytes/s per direction the device puts on its scale-up link (device figure, else the link's)."""
    gb_s = acc.scale_up_gb_s_per_dir if acc.scale_up_gb_s_per_dir is not None else link.gb_s_per_dir
    return gb_s * units.GB_PER_S


def _add_scale_up(g: nx.DiGraph, acc: Accelerator, link: Link, count: int) -> str:
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
            _connect(g, f"gpu{i}", "nvswitch", rate, link.id)
        return "nvswitch"
    peers = acc.scale_up_peers
    if peers is None:
        raise MissingValueError(acc.id, "links.scale_up_peers", f"a {link.topology} node of {count} devices")
    per_peer = rate / peers
    if link.topology == "mesh":
        for i in range(count):
            for j in range(i + 1, count):
                _connect(g, f"gpu{i}", f"gpu{j}", per_peer, link.id)
        return "full-mesh"
    if link.topology == "pair":
        group = domain or 2
        for start in range(0, count - count % group, group):
            for i in range(start, start + group):
                for j in range(i + 1, start + group):
                    _connect(g, f"gpu{i}", f"gpu{j}", per_peer, link.id)
        return "pair-bridge"
    if link.topology == "torus":
        dims = max(1, peers // 2)
        for (i, j), ports in _torus_pairs(count, dims).items():
            _connect(g, f"gpu{i}", f"gpu{j}", per_peer * ports, link.id)
        return "torus"
    raise ScenarioError(f"{link.id} has topology {link.topology!r}, which cannot be a scale-up fabric")


def _build_system(r: _Record, db: HardwareDB) -> System:
    f = r.fields
    path = r.path
    acc = db.accelerator(_v(f, "accelerators.id")) if "accelerators.id" in f else None
    acc_count = _v(f, "accelerators.count") or (1 if acc else 0)
    for table in ("accelerators", "cpus"):
        if f"{table}.count" in f and f"{table}.id" not in f:
            raise DataFileError(path, f"field '{table}.count' given without '{table}.id'")
    cpus: tuple[tuple[CPU, int], ...] = ()
    if "cpus.id" in f:
        cpus = ((db.cpu(_v(f, "cpus.id")), _v(f, "cpus.count") or 1),)
    dram = None
    if "dram.kind" in f:
        if "dram.channels" not in f:
            raise DataFileError(path, "field 'dram.channels' is required with 'dram.kind'")
        dram = DramConfig(db.dram(_v(f, "dram.kind")), _v(f, "dram.channels"), _v(f, "dram.capacity_gb"))
    ssd_indices = sorted({int(name.split(".")[1]) for name in f if name.startswith("ssds.")})
    for i in ssd_indices:
        if f"ssds.{i}.id" not in f:
            raise DataFileError(path, f"field 'ssds.{i}.id' is required in each ssds entry")
    ssds = tuple((db.ssd(_v(f, f"ssds.{i}.id")), _v(f, f"ssds.{i}.count") or 1) for i in ssd_indices)
    fabric = _v(f, "fabric")
    scale_out = db.link(_v(f, "scale_out")) if "scale_out" in f else None
    graph = _system_graph(path, acc, acc_count, cpus, dram, ssds, fabric, db)
    return System(
        id=r.id,
        name=_v(f, "name"),
        accelerator=acc,
        accelerator_count=acc_count,
        cpus=cpus,
        dram=dram,
        ssds=ssds,
        fabric=fabric,
        scale_out=scale_out,
        scale_out_ports=_v(f, "scale_out_ports"),
        purchase_usd=_v(f, "price.purchase_usd"),
        cloud_usd_per_hour=_v(f, "price.cloud_usd_per_hour"),
        graph=nx.freeze(graph),
        source=r.source,
        provenance=f,
        file=path,
    )


def _system_graph(
    path: str,
    acc: Accelerator | None,
    acc_count: int,
    cpus: tuple[tuple[CPU, int], ...],
    dram: DramConfig | None,
    ssds: tuple[tuple[SSD, int], ...],
    fabric: str,
    db: HardwareDB,
) -> nx.DiGraph:
    g = nx.DiGraph()
    sockets = sum(n for _, n in cpus)
    cpu = cpus[0][0] if cpus else None
    host_nodes = [f"cpu{j}" for j in range(sockets)] or ["host0"]
    for name in host_nodes:
        g.add_node(name, kind="cpu" if cpu else "host")
    for i in range(acc_count):
        g.add_node(f"gpu{i}", kind="accelerator")
    if acc is not None and acc.host_link is not None and not acc.unified_memory:
        host = db.link(acc.host_link)
        for i in range(acc_count):
            # accelerators spread evenly across sockets, as on dual-socket HGX boards
            _connect(
                g, f"gpu{i}", host_nodes[i * len(host_nodes) // acc_count], host.bandwidth_bytes_s, host.id
            )
    _add_system_fabric(g, path, acc, acc_count, fabric, db)
    if dram is not None:
        _add_dram(g, path, cpu, sockets, dram, host_nodes)
    drives = [ssd for ssd, n in ssds for _ in range(n)]
    for k, ssd in enumerate(drives):
        g.add_node(f"ssd{k}", kind="ssd")
        # reads flow drive -> host, writes host -> drive
        _connect(g, f"ssd{k}", host_nodes[0], ssd.read_bytes_s, "nvme", back=ssd.write_bytes_s)
    if "host0" in g and g.degree("host0") == 0:
        g.remove_node("host0")
    return g


def _add_system_fabric(
    g: nx.DiGraph, path: str, acc: Accelerator | None, count: int, fabric: str, db: HardwareDB
) -> None:
    if fabric in ("pcie", "none") or acc is None or count < 2:
        if fabric in ("nvswitch", "full-mesh") and (acc is None or count < 2):
            raise DataFileError(
                path, f"field 'fabric' is {fabric!r} but the system has fewer than 2 accelerators"
            )
        return
    if acc.scale_up_link is None:
        raise DataFileError(path, f"field 'fabric' is {fabric!r} but {acc.id} lists no scale-up link")
    link = db.link(acc.scale_up_link)
    rate = _scale_up_rate(acc, link)
    if fabric == "nvswitch":
        g.add_node("nvswitch", kind="switch")
        for i in range(count):
            _connect(g, f"gpu{i}", "nvswitch", rate, link.id)
        return
    peers = acc.scale_up_peers or count - 1
    for i in range(count):
        for j in range(i + 1, count):
            _connect(g, f"gpu{i}", f"gpu{j}", rate / peers, link.id)


def _add_dram(
    g: nx.DiGraph, path: str, cpu: CPU | None, sockets: int, dram: DramConfig, host_nodes: list[str]
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
        _connect(g, f"dram{j}", host, rate, dram.dram.id)


def _check_references(
    entries: Mapping[str, Entry], records: Mapping[str, _Record], classes: Iterable[str]
) -> None:
    """Every ``ref:<kind>`` field names an entry of that kind; every device class has efficiency defaults."""
    classes = set(classes)
    for r in records.values():
        schema = _SCHEMAS[r.kind]
        for name, sourced in r.fields.items():
            spec = schema[_pattern_of(name)]
            if spec.type.startswith("ref:"):
                want = spec.type[4:]
                target = entries.get(str(sourced.value))
                if target is None or entry_kind(target) != want:
                    valid = sorted(i for i, e in entries.items() if entry_kind(e) == want)
                    close = difflib.get_close_matches(str(sourced.value), valid, n=3, cutoff=0.6)
                    hint = f"did you mean {', '.join(close)}?" if close else f"{want} ids: {', '.join(valid)}"
                    raise DataFileError(
                        r.path, f"field {name!r} names unknown {want} {sourced.value!r}; {hint}"
                    )
        if r.kind in ("accelerator", "cpu"):
            device_class = r.fields["device_class"].value if "device_class" in r.fields else "cpu"
            if device_class not in classes:
                close = difflib.get_close_matches(str(device_class), sorted(classes), n=3, cutoff=0.6)
                hint = (
                    f"did you mean {', '.join(close)}?" if close else f"classes: {', '.join(sorted(classes))}"
                )
                raise DataFileError(
                    r.path, f"field 'device_class' {device_class!r} has no entry in efficiency.toml; {hint}"
                )


def _merge(base: dict[str, Any], extra: Iterable[tuple[str, Any, str]], policy: str, what: str) -> None:
    """Add ``(key, item, path)`` to ``base`` under the redefinition policy."""
    for key, item, path in extra:
        if key in base and policy == "raise":
            raise DataFileError(
                path,
                f"{what} {key!r} is already defined in {base[key][1]}; give it a new id, or pass --override to "
                "replace it (Python: on_redefinition='replace')",
            )
        base[key] = (item, path)


def _assemble(records: Sequence[_Record], efficiency_records: Sequence[_EfficiencyRecord]) -> HardwareDB:
    by_id = {r.id: r for r in records}
    efficiency = {e.device_class: _build_efficiency(e.device_class, e.fields) for e in efficiency_records}
    entries: dict[str, Entry] = {r.id: _BUILDERS[r.kind](r) for r in records if r.kind != "system"}
    # systems are resolved against the other entries, so add placeholders for reference checks first
    placeholders = {r.id: _SystemStub(r.id) for r in records if r.kind == "system"}
    _check_references({**entries, **placeholders}, by_id, efficiency)
    db = HardwareDB(entries, efficiency)
    for r in records:
        if r.kind == "system":
            entries[r.id] = _build_system(r, db)
    return HardwareDB(entries, efficiency)


@dataclass(frozen=True)
class _SystemStub:
    """Stands in for a system during reference checks (only ``kind`` is consulted)."""

    id: str
    kind: ClassVar[str] = "system"


@lru_cache(maxsize=1)
def _builtin_records() -> tuple[tuple[_Record, ...], tuple[_EfficiencyRecord, ...]]:
    records, efficiency = _parse_tree(data_dir("hardware_db"))
    return tuple(records), tuple(efficiency)


@lru_cache(maxsize=1)
def _builtin_db() -> HardwareDB:
    records, efficiency = _builtin_records()
    return _assemble(records, efficiency)


def load_hardware_db(
    extra: Sequence[Path | str] = (),
    on_redefinition: Literal["raise", "replace"] = "raise",
    *,
    builtin: bool = True,
) -> HardwareDB:
    """Load the shipped database plus user files or folders ``extra`` (each validated the same way).

    ``on_redefinition``: what a user entry with the id of an existing one does, ``raise`` (DataFileError)
    or ``replace``. ``builtin=False`` loads only ``extra`` (tests, fully custom databases). The shipped database
    is parsed once per process and cached; extras never modify the cached copy.
    """
    if on_redefinition not in ("raise", "replace"):
        raise ScenarioError(f"on_redefinition must be 'raise' or 'replace', got {on_redefinition!r}")
    if builtin and not extra:
        return _builtin_db()
    records: dict[str, tuple[_Record, str]] = {}
    classes: dict[str, tuple[_EfficiencyRecord, str]] = {}
    if builtin:
        base_records, base_eff = _builtin_records()
        _merge(records, ((r.id, r, r.path) for r in base_records), "raise", "id")
        _merge(classes, ((e.device_class, e, e.path) for e in base_eff), "raise", "efficiency class")
    for root in extra:
        new_records, new_eff = _parse_tree(Path(root))
        _merge(records, ((r.id, r, r.path) for r in new_records), on_redefinition, "id")
        _merge(classes, ((e.device_class, e, e.path) for e in new_eff), on_redefinition, "efficiency class")
    return _assemble([r for r, _ in records.values()], [e for e, _ in classes.values()])


def load_hardware_db_with(db: HardwareDB, entries: Sequence[Mapping[str, Any]]) -> HardwareDB:
    """``db`` plus in-memory ``entries`` (dicts in the TOML files' schema), validated like files.

    For entries built by code from sourced parts (e.g. the CPU system of a published measurement); an id
    already in ``db`` raises DataFileError. Accelerators and CPUs first, then systems (which refer to them)."""
    added = dict(db._entries)
    order = sorted(entries, key=lambda raw: raw.get("kind") == "system")
    for raw in order:
        path = Path(
            f"{raw.get('id', '?')}"
        )  # _parse_entry checks id == file stem: an in-memory entry has no file
        record = _parse_entry(path, raw)
        if record.id in added:
            raise DataFileError(str(path), f"id {record.id!r} is already in the database")
        current = HardwareDB(added, db._efficiency)
        added[record.id] = (
            _build_system(record, current) if record.kind == "system" else _BUILDERS[record.kind](record)
        )
    return HardwareDB(added, db._efficiency)
