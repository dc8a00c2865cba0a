"""The hardware database: one loader that parses, validates and builds frozen dataclasses.

Users add or override entries with their own files or folders (``--hardware-db PATH``), which go through the
same validator (:mod:`capsim.hardware.parse`). Layers (pint's parser / registry split): entries
(:mod:`capsim.hardware.entries`), TOML parsing and validation (:mod:`capsim.hardware.parse`), topology graphs
(:mod:`capsim.hardware.topology`), and this module, which assembles them into a :class:`HardwareDB`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TypeVar

from capsim._paths import data_dir
from capsim.errors import DataFileError, ScenarioError, UnknownHardwareError
from capsim.hardware.entries import (
    CPU,
    DRAM,
    GEMM_CURVE_FIELD,
    KINDS,
    SSD,
    Accelerator,
    DramConfig,
    Efficiency,
    Entry,
    Link,
    System,
    entry_kind,
    with_article,
)
from capsim.hardware.parse import (
    BUILDERS,
    EfficiencyRecord,
    Record,
    build_efficiency,
    check_references,
    field_value,
    parse_entry,
    parse_tree,
)
from capsim.hardware.topology import subset_graph, synthetic_graph, system_graph

_E = TypeVar("_E", Accelerator, CPU, DRAM, SSD, Link, System)


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

    def _typed(self, entry_id: str, cls: type[_E], kind: str) -> _E:
        entry = self._entries.get(entry_id)
        if entry is None:
            raise _unknown(entry_id, self.ids(kind))
        if not isinstance(entry, cls):
            raise ScenarioError(
                f"{entry_id!r} is {with_article(entry_kind(entry))} entry, not {with_article(kind)}; "
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
        return build_efficiency(device.device_class, MappingProxyType(prov))

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
            f"{entry_id!r} is {with_article(entry_kind(entry))} entry; a node is built from an accelerator or a system id"
        )


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
    return replace(
        system,
        accelerator_count=count,
        topology=subset_graph(system.topology, system.accelerator_count, count),
        name=f"{system.name} ({count} used)",
    )


def _synthetic_node(acc: Accelerator, count: int, db: HardwareDB) -> System:
    topology, fabric = synthetic_graph(acc, count, db.link)
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
        topology=topology,
        source=f"synthetic node built by capsim from {acc.id} ({acc.file})",
        provenance=acc.provenance,
        file=acc.file,
    )


def _build_system(r: Record, db: HardwareDB) -> System:
    f = r.fields
    path = r.path
    acc = db.accelerator(field_value(f, "accelerators.id")) if "accelerators.id" in f else None
    acc_count = field_value(f, "accelerators.count") or (1 if acc else 0)
    for table in ("accelerators", "cpus"):
        if f"{table}.count" in f and f"{table}.id" not in f:
            raise DataFileError(path, f"field '{table}.count' given without '{table}.id'")
    cpus: tuple[tuple[CPU, int], ...] = ()
    if "cpus.id" in f:
        cpus = ((db.cpu(field_value(f, "cpus.id")), field_value(f, "cpus.count") or 1),)
    dram = None
    if "dram.kind" in f:
        if "dram.channels" not in f:
            raise DataFileError(path, "field 'dram.channels' is required with 'dram.kind'")
        dram = DramConfig(
            db.dram(field_value(f, "dram.kind")),
            field_value(f, "dram.channels"),
            field_value(f, "dram.capacity_gb"),
        )
    ssd_indices = sorted({int(name.split(".")[1]) for name in f if name.startswith("ssds.")})
    for i in ssd_indices:
        if f"ssds.{i}.id" not in f:
            raise DataFileError(path, f"field 'ssds.{i}.id' is required in each ssds entry")
    ssds = tuple(
        (db.ssd(field_value(f, f"ssds.{i}.id")), field_value(f, f"ssds.{i}.count") or 1) for i in ssd_indices
    )
    fabric = field_value(f, "fabric")
    scale_out = db.link(field_value(f, "scale_out")) if "scale_out" in f else None
    topology = system_graph(path, acc, acc_count, cpus, dram, ssds, fabric, db.link)
    return System(
        id=r.id,
        name=field_value(f, "name"),
        accelerator=acc,
        accelerator_count=acc_count,
        cpus=cpus,
        dram=dram,
        ssds=ssds,
        fabric=fabric,
        scale_out=scale_out,
        scale_out_ports=field_value(f, "scale_out_ports"),
        purchase_usd=field_value(f, "price.purchase_usd"),
        cloud_usd_per_hour=field_value(f, "price.cloud_usd_per_hour"),
        topology=topology,
        source=r.source,
        provenance=f,
        file=path,
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


def _assemble(records: Sequence[Record], efficiency_records: Sequence[EfficiencyRecord]) -> HardwareDB:
    by_id = {r.id: r for r in records}
    efficiency = {e.device_class: build_efficiency(e.device_class, e.fields) for e in efficiency_records}
    entries: dict[str, Entry] = {r.id: BUILDERS[r.kind](r) for r in records if r.kind != "system"}
    # systems are resolved against the other entries, so they enter the reference checks by kind before they exist
    kinds = {i: entry_kind(e) for i, e in entries.items()} | {
        r.id: r.kind for r in records if r.kind == "system"
    }
    check_references(kinds, by_id, efficiency)
    db = HardwareDB(entries, efficiency)
    for r in records:
        if r.kind == "system":
            entries[r.id] = _build_system(r, db)
    return HardwareDB(entries, efficiency)


@lru_cache(maxsize=1)
def _builtin_records() -> tuple[tuple[Record, ...], tuple[EfficiencyRecord, ...]]:
    records, efficiency = parse_tree(data_dir("hardware_db"))
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
    records: dict[str, tuple[Record, str]] = {}
    classes: dict[str, tuple[EfficiencyRecord, str]] = {}
    if builtin:
        base_records, base_eff = _builtin_records()
        _merge(records, ((r.id, r, r.path) for r in base_records), "raise", "id")
        _merge(classes, ((e.device_class, e, e.path) for e in base_eff), "raise", "efficiency class")
    for root in extra:
        new_records, new_eff = parse_tree(Path(root))
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
        )  # parse_entry checks id == file stem: an in-memory entry has no file
        record = parse_entry(path, raw)
        if record.id in added:
            raise DataFileError(str(path), f"id {record.id!r} is already in the database")
        current = HardwareDB(added, db._efficiency)
        added[record.id] = (
            _build_system(record, current) if record.kind == "system" else BUILDERS[record.kind](record)
        )
    return HardwareDB(added, db._efficiency)
