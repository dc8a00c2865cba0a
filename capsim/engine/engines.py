"""Serving-engine profiles (capsim/engine/engines.toml), loaded and validated here.

An engine adds to the device's roofline what its execution costs: with CUDA/HIP graphs, a fixed device time per
kernel (``kernel_latency_s``, a floor under every block of kernels: capsim.engine.roofline.BLOCK_KERNELS); run
eagerly (PyTorch eager, as Hugging Face transformers and MoE-Infinity run MoE blocks), host dispatch per MoE
layer and per activated expert, which overlaps the device's work: a pass takes max(host, device); and the
fraction of dense peak FLOP/s its compute-bound kernels sustain (``compute_fraction``); and a time per sequence
that emits a token in a step (``per_sequence_s``: sampling and per-request bookkeeping, which grows a step with
the requests in flight). Values absent from a
profile fall back to the device class's (hardware_db/efficiency.toml). Every value names its source.

An engine's costs change between releases, so a profile may name the ``releases`` it was fitted on and the
``family`` it belongs to: ``vllm@0.7.3`` picks the vllm-family profile whose releases hold 0.7; a bare ``vllm``
is the table of that id (the newest release with data).
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
_VALUES = (
    "kernel_latency_s",
    "moe_host_s",
    "expert_host_s",
    "compute_fraction",
    "cpu_kernel_bw_fraction",
    "replicate_socket_share",
    "per_sequence_s",
    "kv_cache_free_fraction",
)
_FRACTIONS = frozenset(
    {"compute_fraction", "cpu_kernel_bw_fraction", "replicate_socket_share", "kv_cache_free_fraction"}
)


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
    compute_fraction: float | None = None
    """Sustained / dense peak FLOP/s of the engine's compute-bound kernels (GEMMs, grouped MoE GEMMs, attention)."""
    per_sequence_s: float | None = None
    """Time a step adds per sequence that emits a token in it (sampling, stop checks, per-request bookkeeping of
    the engine's runtime), on top of the device's roofline; None = none charged."""
    kv_cache_free_fraction: float | None = None
    """Share of the device memory left free after weights and activation buffers that the engine gives its KV
    cache (TensorRT-LLM's free_gpu_memory_fraction); None: weights, buffers and KV together take capacity x the
    device class's gpu_memory_utilization (vLLM's and SGLang's rule)."""
    cpu_kernel_bw_fraction: float | None = None
    """CPU-computed experts: the share of the CPU's sustained bandwidth the engine's expert kernels reach in
    decode, replacing the cpu class's ``kernel_bw_fraction`` (fitted over several engines); None = the class's."""
    replicate_socket_share: float | None = None
    """CPU-computed experts under ``--numa replicate``: the share of one socket's rate each further socket adds
    (capsim.engine.deployment.cpu_rates); None = 1 (perfect scaling)."""
    sources: tuple[tuple[str, str], ...] = ()
    family: str = ""
    """The engine this profile is a release of (its id when the file names none)."""
    releases: tuple[tuple[int, int], tuple[int, int]] | None = None
    """Inclusive (major, minor) range of the releases the values were fitted on; None = any release."""
    device_classes: tuple[str, ...] = ()
    """Device classes (hardware_db/efficiency.toml) the values were fitted on and apply to; on any other class
    the class's own values apply. Empty = every class."""
    quantized_compute: str | None = None
    """Peak-FLOPS key the engine's kernels for block-quantized weights (GGUF types, MXFP4) run at, whatever the
    format's own rate: llama.cpp's CUDA MMQ kernels quantise the activations to 8 bits and multiply on the int8
    units. None = the format's own rate (capsim.models.precision)."""

    def applies_to(self, device_class: str) -> bool:
        """Whether the profile's values hold on a device of ``device_class``."""
        return not self.device_classes or device_class in self.device_classes

    def covers(self, version: tuple[int, int]) -> bool:
        return self.releases is None or self.releases[0] <= version <= self.releases[1]

    @property
    def releases_text(self) -> str:
        """'0.10-0.11', '0.7' (one minor release) or '' (any release)."""
        if self.releases is None:
            return ""
        lo, hi = (f"{a}.{b}" for a, b in self.releases)
        return lo if lo == hi else f"{lo}-{hi}"

    @property
    def eager(self) -> bool:
        return self.execution == "eager"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "name": self.name, "execution": self.execution}
        out.update({k: getattr(self, k) for k in _VALUES if getattr(self, k) is not None})
        if self.releases is not None:
            out["releases"] = self.releases_text
        if self.device_classes:
            out["device_classes"] = list(self.device_classes)
        if self.quantized_compute is not None:
            out["quantized_compute"] = self.quantized_compute
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
    if key in _FRACTIONS and not 0 < value <= 1:
        raise DataFileError(where, f"{key} must be a fraction in (0, 1], got {value!r}")
    return float(value), str(raw["source"])


QUANTIZED_COMPUTE_KEYS = ("int8", "fp8", "fp4", "bf16", "fp16", "fp32")
"""Peak-FLOPS keys an engine's quantized-weight kernels may run at (hardware_db peak_tflops_dense keys)."""


def _quantized_compute(raw: Any, where: str) -> tuple[str | None, str]:
    if raw is None:
        return None, ""
    if not isinstance(raw, dict) or not isinstance(raw.get("source"), str) or not raw["source"]:
        raise DataFileError(
            where, "quantized_compute must be { value = '...', source = '...' } with a source"
        )
    value = raw.get("value")
    if value not in QUANTIZED_COMPUTE_KEYS:
        raise DataFileError(
            where, f"quantized_compute must be one of {', '.join(QUANTIZED_COMPUTE_KEYS)}, got {value!r}"
        )
    return str(value), str(raw["source"])


def parse_release(text: str) -> tuple[int, int]:
    """'0.10.2', 'v0.11', '0.7.3.dev138' -> (major, minor). Raises ValueError when there are not two numbers."""
    parts = text.strip().lstrip("vV").split(".")
    if len(parts) < 2 or not parts[0].isdigit() or not parts[1].isdigit():
        raise ValueError(f"release {text!r} is not MAJOR.MINOR[.PATCH]")
    return int(parts[0]), int(parts[1])


def _releases(raw: Any, where: str) -> tuple[tuple[int, int], tuple[int, int]] | None:
    if raw is None:
        return None
    try:
        lo, _, hi = str(raw).partition("-")
        span = (parse_release(lo), parse_release(hi or lo))
    except ValueError as exc:
        raise DataFileError(where, f"releases must be 'A.B' or 'A.B-C.D' ({exc})") from None
    if span[0] > span[1]:
        raise DataFileError(where, f"releases {raw!r} run backwards")
    return span


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
        unknown = sorted(
            set(entry)
            - {"name", "execution", "family", "releases", "device_classes", "quantized_compute", *_VALUES}
        )
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
        classes = entry.get("device_classes", [])
        if not isinstance(classes, list) or not all(isinstance(c, str) and c for c in classes):
            raise DataFileError(where, "device_classes must be a list of device-class names")
        quantized, quantized_source = _quantized_compute(entry.get("quantized_compute"), where)
        sources = tuple((k, s) for k, (v, s) in values.items() if v is not None)
        out[eid] = EngineProfile(
            eid,
            entry["name"],
            execution,
            **{k: v for k, (v, _) in values.items()},
            sources=sources + ((("quantized_compute", quantized_source),) if quantized else ()),
            family=str(entry.get("family", eid)),
            releases=_releases(entry.get("releases"), where),
            device_classes=tuple(classes),
            quantized_compute=quantized,
        )
    return out


def engine_profile(name: str | None) -> EngineProfile | None:
    """The profile of engine ``name`` (None: no engine named, the device class's defaults apply).

    ``name`` is a profile id (``vllm``, ``vllm-0.7``) or ``FAMILY@RELEASE`` (``vllm@0.10.2``): the profile of that
    family whose ``releases`` hold the release. Raises ScenarioError for an unknown name (with the closest ids)
    or a release no profile of the family was fitted on (with the releases there are)."""
    if name is None:
        return None
    engines = load_engines()
    key, at, release = name.strip().lower().partition("@")
    if at:
        family = [p for p in engines.values() if p.family == key]
        if not family:
            raise ScenarioError(f"unknown engine {key!r} in {name!r}; choose one of {', '.join(engines)}")
        try:
            version = parse_release(release)
        except ValueError as exc:
            raise ScenarioError(f"engine {name!r}: {exc}; write e.g. {key}@0.10.2") from None
        # a profile fitted on the release wins over the family's catch-all (no releases named)
        for profile in sorted(family, key=lambda p: p.releases is None):
            if profile.covers(version):
                return profile
        known = ", ".join(f"{p.id} ({p.releases_text})" for p in family if p.releases)
        raise ScenarioError(
            f"no {key} profile for release {release}; profiles fitted on: {known} (name one of them)"
        )
    if key not in engines:
        close = difflib.get_close_matches(key, list(engines), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"choose one of {', '.join(engines)}"
        raise ScenarioError(f"unknown engine {name!r}; {hint}")
    return engines[key]
