"""CLI commands: ``capsim hardware list`` and ``capsim hardware show`` (formatting only).

Other command modules reuse :data:`HardwareDbOption`, :data:`OverrideOption` and :func:`load_db` so that every
command reads ``--hardware-db`` the same way, and may add commands to :data:`hardware_app`
(``capsim hardware calibrate`` lives elsewhere).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from capsim import units
from capsim.cli._console import out_console, print_json

if TYPE_CHECKING:  # capsim.hardware (and networkx) load when a command runs, not at start-up
    from rich.console import JustifyMethod

    from capsim.hardware.db import HardwareDB
    from capsim.hardware.entries import Accelerator, Entry, System

hardware_app = typer.Typer(
    help="Browse the hardware database (accelerators, CPUs, DRAM, SSDs, links, systems) and its sources.",
    no_args_is_help=True,
)

HardwareDbOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--hardware-db",
        help="Extra hardware file or folder (TOML, same schema as hardware_db/); repeatable.",
        show_default=False,
    ),
]
OverrideOption = Annotated[
    bool,
    typer.Option("--override", help="Let --hardware-db entries replace built-in entries with the same id."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def load_db(paths: list[Path] | None, override: bool = False) -> HardwareDB:
    """The database the CLI works on: built-in entries plus ``--hardware-db`` paths."""
    from capsim.hardware.db import load_hardware_db

    return load_hardware_db(paths or (), on_redefinition="replace" if override else "raise")


def register(app: typer.Typer) -> None:
    """Add the ``hardware`` command group to the top-level app."""
    app.add_typer(hardware_app, name="hardware")


# --------------------------------------------------------------------------------------------- list


@hardware_app.command("list")
def list_command(
    kind: Annotated[
        str | None,
        typer.Option("--kind", help="Only this kind: accelerator, cpu, dram, ssd, link or system."),
    ] = None,
    as_json: JsonOption = False,
    hardware_db: HardwareDbOption = None,
    override: OverrideOption = False,
) -> None:
    """List database entries. A trailing '?' marks a soft value (not confirmed from a primary source)."""
    db = load_db(hardware_db, override)
    entries = [db.get(i) for i in db.ids(kind)]
    if as_json:
        print_json([e.to_dict() for e in entries])
        return
    table = Table(title="capsim hardware database", title_justify="left")
    for column, justify in _LIST_COLUMNS:
        # ids are what people copy into --hardware: never wrapped or cut (the name column wraps instead)
        table.add_column(
            column,
            justify=justify,
            no_wrap=column == "id",
            min_width=max((len(e.id) for e in entries), default=2) if column == "id" else None,
        )
    for entry in entries:
        table.add_row(*(Text(cell) for cell in _list_row(entry)))
    console = out_console()
    console.print(table)
    console.print(f"{len(entries)} entries; '?' = soft value. Sources: capsim hardware show ID")


_LIST_COLUMNS: tuple[tuple[str, JustifyMethod], ...] = (
    ("id", "left"),
    ("kind", "left"),
    ("name", "left"),
    ("memory", "right"),
    ("bandwidth", "right"),
    ("bf16 dense TFLOPS", "right"),
    ("TDP", "right"),
    ("price", "right"),
)


def _list_row(e: Entry) -> list[str]:
    from capsim.hardware.entries import CPU, DRAM, SSD, Accelerator, Link, System, entry_kind

    memory = bandwidth = bf16 = tdp = price = ""
    if isinstance(e, Accelerator):
        memory = _num(e, "memory_capacity_gb", e.memory_capacity_gb, "{:,.0f} GB")
        bandwidth = _num(e, "memory_bandwidth_gb_s", e.memory_bandwidth_gb_s, "{:,.0f} GB/s")
        bf16 = _num(e, "peak_tflops_dense.bf16", e.peak_tflops_dense.get("bf16"), "{:,.1f}")
        tdp = _num(e, "tdp_w", e.tdp_w, "{:,.0f} W")
        price = _price(e)
    elif isinstance(e, CPU):
        memory = _num(e, "memory_channels", e.memory_channels, "{} ch ") + _text(e, "dram_kind", e.dram_kind)
        bandwidth = _num(e, "memory_bandwidth_gb_s", e.memory_bandwidth_gb_s, "{:,.1f} GB/s")
        bf16 = _num(e, "peak_tflops_dense.bf16", e.peak_tflops_dense.get("bf16"), "{:,.1f}")
        tdp = _num(e, "tdp_w", e.tdp_w, "{:,.0f} W")
        price = _num(e, "price.purchase_usd", e.purchase_usd, "${:,.0f}")
    elif isinstance(e, DRAM):
        memory = e.memory_type
        bandwidth = _num(e, "channel_bandwidth_gb_s", e.channel_bandwidth_gb_s, "{:,.1f} GB/s/ch")
        price = _num(e, "price.usd_per_gb", e.usd_per_gb, "${:,.2f}/GB")
    elif isinstance(e, SSD):
        memory = e.interface
        bandwidth = _num(e, "seq_read_gb_s", e.seq_read_gb_s, "{:,.2f} GB/s rd")
        tdp = _num(e, "power_active_w", e.power_active_w, "{:,.1f} W")
        price = _num(e, "price.usd_per_tb", e.usd_per_tb, "${:,.0f}/TB")
    elif isinstance(e, Link):
        bandwidth = _num(e, "gb_s_per_dir", e.gb_s_per_dir, "{:,.2f} GB/s/dir")
    elif isinstance(e, System):
        memory, bandwidth, bf16 = _system_cells(e)
        price = _num(e, "price.purchase_usd", e.purchase_usd, "${:,.0f}")
    return [e.id, entry_kind(e), e.name, memory, bandwidth, bf16, tdp, price]


def _system_cells(s: System) -> tuple[str, str, str]:
    if s.accelerator is None:
        cpus = ", ".join(f"{n}x {c.id}" for c, n in s.cpus)
        return cpus, "", ""
    acc = s.accelerator
    memory = f"{s.accelerator_count}x {acc.memory_capacity_gb:,.0f} GB"
    gpu_gpu = s.bandwidth_summary()["gpu_to_gpu_bytes_s"]
    bandwidth = "" if gpu_gpu is None else f"{gpu_gpu / units.GB_PER_S:,.0f} GB/s gpu-gpu"
    bf16 = acc.peak_tflops_dense.get("bf16")
    return memory, bandwidth, "" if bf16 is None else f"{s.accelerator_count}x {bf16:,.1f}"


def _num(entry: Any, field_name: str, value: float | None, fmt: str) -> str:
    if value is None:
        return ""
    return fmt.format(value) + ("?" if entry.is_soft(field_name) else "")


def _text(entry: Any, field_name: str, value: str | None) -> str:
    if value is None:
        return ""
    return value + ("?" if entry.is_soft(field_name) else "")


def _price(a: Accelerator) -> str:
    if a.purchase_usd is not None:
        return _num(a, "price.purchase_usd", a.purchase_usd, "${:,.0f}")
    return _num(a, "price.cloud_usd_per_hour", a.cloud_usd_per_hour, "${:,.2f}/h")


# --------------------------------------------------------------------------------------------- show


@hardware_app.command("show")
def show_command(
    entry_id: Annotated[str, typer.Argument(metavar="ID", help="Entry id (see capsim hardware list).")],
    as_json: JsonOption = False,
    hardware_db: HardwareDbOption = None,
    override: OverrideOption = False,
) -> None:
    """Show every field of an entry with its source; for systems also the topology and its bandwidths."""
    from capsim.hardware.entries import CPU, Accelerator, System, entry_kind

    db = load_db(hardware_db, override)
    entry = db.get(entry_id)
    payload = entry.to_dict()
    if isinstance(entry, (Accelerator, CPU)):
        payload["efficiency"] = db.efficiency_for(entry).to_dict()
    if as_json:
        print_json(payload)
        return
    console = out_console()
    console.print(Text(f"{entry.id} ({entry_kind(entry)}): {entry.name}", style="bold"))
    console.print(Text(f"source: {entry.source}"))
    console.print(Text(f"file: {entry.file}"))
    console.print(_provenance_table(entry.provenance.items(), "fields", entry.source))
    if isinstance(entry, (Accelerator, CPU)):
        efficiency = db.efficiency_for(entry)
        title = f"efficiency (device class {efficiency.device_class})"
        console.print(_provenance_table(efficiency.provenance.items(), title, entry_source=None))
    if isinstance(entry, System):
        _print_topology(entry, payload)


def _provenance_table(items: Any, title: str, entry_source: str | None) -> Table:
    """One row per value: the value ('?' when soft) and its source, or "entry source" when it is the entry's."""
    table = Table(title=title, title_justify="left")
    for column in ("field", "value", "source / note"):
        table.add_column(column)
    for name, s in items:
        value = f"{s.value}" + ("?" if s.soft else "")
        source = "entry source" if s.source == entry_source else s.source
        detail = source + (f"; {s.note}" if s.note else "") + (f" [{s.date}]" if s.date else "")
        table.add_row(Text(name), Text(value), Text(detail))
    return table


_MAX_TOPOLOGY_ROWS = 1024
"""Edges shown in the topology table (the 72-GPU NVL72 has 288); a table of 10^5 rows takes rich minutes."""


def _print_topology(s: System, payload: dict[str, Any]) -> None:
    console = out_console()
    table = Table(title=f"topology ({s.fabric})", title_justify="left")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("from", "left"),
        ("to", "left"),
        ("GB/s per dir", "right"),
        ("link", "left"),
    )
    for column, justify in columns:
        table.add_column(column, justify=justify)
    edges = payload["topology"]["edges"]
    for edge in edges[:_MAX_TOPOLOGY_ROWS]:
        table.add_row(
            Text(edge["from"]), Text(edge["to"]), Text(f"{edge['bandwidth_gb_s']:,.2f}"), Text(edge["link"])
        )
    console.print(table)
    if len(edges) > _MAX_TOPOLOGY_ROWS:
        console.print(
            Text(f"… {len(edges) - _MAX_TOPOLOGY_ROWS:,} more edges; --json lists all {len(edges):,}")
        )
    computed = payload["computed"]
    for label, key in (("GPU-GPU", "gpu_to_gpu_gb_s"), ("host-GPU", "host_to_gpu_gb_s")):
        value = computed[key]
        shown = "n/a" if value is None else f"{value:,.2f} GB/s per direction (widest path)"
        console.print(Text(f"{label} bandwidth: {shown}"))
