"""Loading the hardware database's TOML files: parse, validate, build entries.

Data lives in ``hardware_db/<kind>s/<id>.toml`` (one file per entry, kinds: accelerator, cpu, dram, ssd, link,
system) plus ``hardware_db/efficiency.toml``; ``hardware_db/README.md`` documents the schema.

1. *parse*: TOML -> a flat ``{"dotted.field": Sourced}`` map per file. A value is written bare (its source is
   the file's top-level ``source``) or as ``{ value = ..., source = ..., soft = true, note = ..., date = ... }``.
2. *validate*: every field checked against the kind's schema (unknown field, wrong type, zero or negative
   number, dangling reference -> :class:`DataFileError` naming the file and the field).
3. *build*: the frozen dataclasses of :mod:`capsim.hardware.entries` (systems are built in
   :mod:`capsim.hardware.db`, against the other entries).
"""

from __future__ import annotations

import difflib
import math
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from capsim.errors import DataFileError
from capsim.hardware.entries import (
    CPU,
    DRAM,
    EFFICIENCY_FIELDS,
    FABRICS,
    GEMM_CURVE_FIELD,
    GEMM_OVERLAP_FIELD,
    KERNEL_BW_FIELD,
    KERNEL_LATENCY_FIELD,
    KINDS,
    LINK_SCOPES,
    LINK_TOPOLOGIES,
    PLATFORM_PARTS,
    PRECISION_KEYS,
    SSD,
    Accelerator,
    Efficiency,
    Entry,
    Link,
    Provenance,
    Sourced,
    Value,
    with_article,
)

SCHEMA_VERSION = 1
_SOURCED_KEYS = frozenset({"value", "source", "soft", "note", "date"})
_HEADER_KEYS = frozenset({"schema", "id", "kind", "source"})


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
class Record:
    """One parsed and field-validated file: its kind, id, flat provenance map and path."""

    kind: str
    id: str
    fields: Provenance
    source: str
    path: str


@dataclass(frozen=True)
class EfficiencyRecord:
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
            raise DataFileError(str(path), f"unknown field {name!r} for {with_article(kind)} entry; {hint}")
        fields[name] = replace(sourced, value=_checked_value(spec, sourced.value, name, path))
    present = {_pattern_of(n) for n in fields}
    for name, spec in schema.items():
        if spec.required and name not in present:
            raise DataFileError(str(path), f"missing required field {name!r} for {with_article(kind)} entry")


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


def parse_entry(path: Path, raw: Mapping[str, Any]) -> Record:
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
    return Record(kind, entry_id, MappingProxyType(fields), source, str(path))


def _parse_efficiency(path: Path, raw: Mapping[str, Any]) -> list[EfficiencyRecord]:
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
        records.append(EfficiencyRecord(device_class, MappingProxyType(fields), str(path)))
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


def parse_tree(root: Path) -> tuple[list[Record], list[EfficiencyRecord]]:
    records: list[Record] = []
    efficiency: list[EfficiencyRecord] = []
    for path in _toml_files(root):
        raw = _read_toml(path)
        if raw.get("kind") == "efficiency":
            efficiency.extend(_parse_efficiency(path, raw))
        else:
            records.append(parse_entry(path, raw))
    return records, efficiency


# --------------------------------------------------------------------------------------------- build


def field_value(fields: Provenance, name: str) -> Any:
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


def _build_accelerator(r: Record) -> Accelerator:
    f = r.fields
    return Accelerator(
        id=r.id,
        name=field_value(f, "name"),
        vendor=field_value(f, "vendor"),
        device_class=field_value(f, "device_class"),
        memory_capacity_gb=field_value(f, "memory_capacity_gb"),
        memory_bandwidth_gb_s=field_value(f, "memory_bandwidth_gb_s"),
        peak_tflops_dense=_peak_table(f, "peak_tflops_dense"),
        peak_tflops_sparse=_peak_table(f, "peak_tflops_sparse"),
        tdp_w=field_value(f, "tdp_w"),
        unified_memory=bool(field_value(f, "unified_memory")),
        scale_up_link=field_value(f, "links.scale_up"),
        scale_up_gb_s_per_dir=field_value(f, "links.scale_up_gb_s_per_dir"),
        host_link=field_value(f, "links.host"),
        purchase_usd=field_value(f, "price.purchase_usd"),
        cloud_usd_per_hour=field_value(f, "price.cloud_usd_per_hour"),
        source=r.source,
        provenance=f,
        memory_type=field_value(f, "memory_type"),
        scale_up_peers=field_value(f, "links.scale_up_peers"),
        scale_up_domain_max=field_value(f, "links.scale_up_domain_max"),
        efficiency_overrides=_overrides(f),
        file=r.path,
    )


def _build_cpu(r: Record) -> CPU:
    f = r.fields
    return CPU(
        id=r.id,
        name=field_value(f, "name"),
        vendor=field_value(f, "vendor"),
        device_class=field_value(f, "device_class") or "cpu",
        cores=field_value(f, "cores"),
        threads=field_value(f, "threads"),
        base_clock_ghz=field_value(f, "base_clock_ghz"),
        boost_clock_ghz=field_value(f, "boost_clock_ghz"),
        memory_channels=field_value(f, "memory_channels"),
        dram_kind=field_value(f, "dram_kind"),
        memory_bandwidth_gb_s=field_value(f, "memory_bandwidth_gb_s"),
        peak_tflops_dense=_peak_table(f, "peak_tflops_dense"),
        tdp_w=field_value(f, "tdp_w"),
        purchase_usd=field_value(f, "price.purchase_usd"),
        source=r.source,
        provenance=f,
        efficiency_overrides=_overrides(f),
        file=r.path,
        socket_link_gb_s_per_dir=field_value(f, "socket_link_gb_s_per_dir"),
    )


def _build_dram(r: Record) -> DRAM:
    f = r.fields
    return DRAM(
        id=r.id,
        name=field_value(f, "name"),
        memory_type=field_value(f, "memory_type"),
        transfer_rate_mt_s=field_value(f, "transfer_rate_mt_s"),
        channel_bandwidth_gb_s=field_value(f, "channel_bandwidth_gb_s"),
        usd_per_gb=field_value(f, "price.usd_per_gb"),
        source=r.source,
        provenance=f,
        file=r.path,
    )


def _build_ssd(r: Record) -> SSD:
    f = r.fields
    return SSD(
        id=r.id,
        name=field_value(f, "name"),
        vendor=field_value(f, "vendor"),
        interface=field_value(f, "interface"),
        seq_read_gb_s=field_value(f, "seq_read_gb_s"),
        seq_write_gb_s=field_value(f, "seq_write_gb_s"),
        random_read_4k_iops=field_value(f, "random_read_4k_iops"),
        power_active_w=field_value(f, "power_active_w"),
        usd_per_tb=field_value(f, "price.usd_per_tb"),
        source=r.source,
        provenance=f,
        file=r.path,
    )


def _build_link(r: Record) -> Link:
    f = r.fields
    return Link(
        id=r.id,
        name=field_value(f, "name"),
        kind=field_value(f, "technology"),
        topology=field_value(f, "topology"),
        scope=field_value(f, "scope"),
        gb_s_per_dir=field_value(f, "gb_s_per_dir"),
        source=r.source,
        provenance=f,
        file=r.path,
    )


BUILDERS: dict[str, Callable[[Record], Entry]] = {
    "accelerator": _build_accelerator,
    "cpu": _build_cpu,
    "dram": _build_dram,
    "ssd": _build_ssd,
    "link": _build_link,
}


def build_efficiency(device_class: str, fields: Provenance) -> Efficiency:
    # the schema validated every efficiency field as a number
    numbers = {n: v for n in EFFICIENCY_FIELDS if isinstance(v := fields[n].value, int | float)}
    return Efficiency(device_class=device_class, provenance=fields, **numbers)


def check_references(kinds: Mapping[str, str], records: Mapping[str, Record], classes: Iterable[str]) -> None:
    """Every ``ref:<kind>`` field names an entry of that kind (``kinds``: id -> database kind of every entry,
    systems included before they are built); every device class has efficiency defaults."""
    classes = set(classes)
    for r in records.values():
        schema = _SCHEMAS[r.kind]
        for name, sourced in r.fields.items():
            spec = schema[_pattern_of(name)]
            if spec.type.startswith("ref:"):
                want = spec.type[4:]
                if kinds.get(str(sourced.value)) != want:
                    valid = sorted(i for i, kind in kinds.items() if kind == want)
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
