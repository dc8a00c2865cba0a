"""Serving-engine profiles (capsim/engine/engines.toml), loaded and validated here.

An engine adds to the device's roofline what its execution costs: with CUDA/HIP graphs, a fixed device time per
kernel (``kernel_latency_s``, a floor under every block of kernels: capsim.engine.roofline.BLOCK_KERNELS); run
eagerly (PyTorch eager, as Hugging Face transformers and MoE-Infinity run MoE blocks), host dispatch per MoE
layer and per activated expert, which overlaps the device's work: a pass takes max(host, device). Values absent
from a profile fall back to the device class's (hardware_db/efficiency.toml). Every value names its source.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from capsim.errors import DataFileError, ScenarioError

_FILE = Path(__file__).with_name("engines.toml")
EXECUTIONS = ("graphs", "eager")
_VALUES = ("kernel_latency_s", "moe_host_s", "expert_host_s")


@dataclass(frozen=True)
class EngineProfile:
    """What one serving engine adds to a forward pass; None = the device class's value (or nothing)."""

    id: str
    name: str
    execution: str
    kernel_latency_s: float | None = None
    moe_host_s: float | None = None
    """Eager execution: host dispatch per MoE layer besides its experts (seconds)."""
    expert_host_s: float | None = None
    """Eager execution: host dispatch per activated expert per MoE layer (seconds)."""
    sources: tuple[tuple[str, str], ...] = ()

    @property
    def eager(self) -> bool:
        return self.execution == "eager"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "name": self.name, "execution": self.execution}
        out.update({k: getattr(self, k) for k in _VALUES if getattr(self, k) is not None})
        out["sources"] = dict(self.sources)
        return out


def _value(entry: dict[str, Any], key: str, where: str) -> tuple[float | None, str]:
    raw = entry.get(key)
    if raw is None:
        return None, ""
    if not isinstance(raw, dict) or not isinstance(raw.get("source"), str) or not raw["source"]:
        raise DataFileError(where, f"{key} must be {{ value = ..., source = '...' }} with a non-empty source")
    value = raw.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise DataFileError(where, f"{key} must be a number >= 0 (seconds), got {value!r}")
    return float(value), str(raw["source"])


@cache
def load_engines(path: str | None = None) -> dict[str, EngineProfile]:
    """Every profile of ``path`` (default: the shipped engines.toml), keyed by id. Raises DataFileError."""
    p = Path(path) if path else _FILE
    try:
        data = tomllib.loads(p.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise DataFileError(str(p), f"cannot read engine profiles ({exc})") from None
    out = {}
    for eid, entry in data.items():
        where = f"{p} [{eid}]"
        if not isinstance(entry, dict):
            raise DataFileError(where, "every top-level key is an engine table")
        unknown = sorted(set(entry) - {"name", "execution", *_VALUES})
        if unknown:
            raise DataFileError(where, f"unknown field(s) {', '.join(unknown)}")
        if not isinstance(entry.get("name"), str) or not entry["name"]:
            raise DataFileError(where, "needs a non-empty name")
        execution = entry.get("execution")
        if execution not in EXECUTIONS:
            raise DataFileError(where, f"execution must be one of {', '.join(EXECUTIONS)}, got {execution!r}")
        values = {k: _value(entry, k, where) for k in _VALUES}
        if execution == "eager" and (values["moe_host_s"][0] is None or values["expert_host_s"][0] is None):
            raise DataFileError(where, "eager execution needs moe_host_s and expert_host_s")
        out[eid] = EngineProfile(
            eid,
            entry["name"],
            execution,
            **{k: v for k, (v, _) in values.items()},
            sources=tuple((k, s) for k, (v, s) in values.items() if v is not None),
        )
    return out


def engine_profile(name: str | None) -> EngineProfile | None:
    """The profile of engine ``name`` (None: no engine named, the device class's defaults apply).

    Raises ScenarioError for an unknown name, with the closest ids."""
    if name is None:
        return None
    engines = load_engines()
    key = name.strip().lower()
    if key not in engines:
        close = difflib.get_close_matches(key, list(engines), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"choose one of {', '.join(engines)}"
        raise ScenarioError(f"unknown engine {name!r}; {hint}")
    return engines[key]
