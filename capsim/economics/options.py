"""Deployment options for ``compare``, ``plan`` and ``radar``: a named scenario, not just a device id.

An option carries every ``capsim predict`` setting (hardware, devices, serving-system preset, precisions,
mode, placement, host memory, parallelism ...) plus its name and, for accuracy, the quantisation method:

    --option "name=kt;hardware=epyc-9654-4090;system=ktransformers-like;weight-dtype=int4;quant-method=Q4_K_M"

Keys are the :class:`capsim.engine.scenario.Scenario` field names (``-`` or ``_``), ``name``, ``system`` (a preset of
:mod:`capsim.engine.presets`) and ``quant-method``. Options given on the command line start from the command's own
flags (``--batch``, ``--prompt-len`` ...), so a key only needs to say what differs. A TOML file holds the same
keys as ``[[option]]`` tables (docs/cap.md).

Each option is also classified as MoE-CAP does (reference/moecap.md §3, paper §1): **PA** (performance and
accuracy, at a high cost: every weight resident on the accelerators at the published precision), **PC**
(performance and cost, giving up accuracy: weights quantised below the published precision, as K-Transformers
and SGLang-FP8/AWQ are) and **CA** (cost and accuracy, giving up latency: published precision with experts
offloaded to host memory or computed on the CPU, as MoE-Infinity and Fiddler are).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

from capsim.engine.scenario import Scenario
from capsim.errors import DataFileError, ScenarioError, read_user_toml

CapClass = Literal["PA", "PC", "CA"]
CAP_CLASSES: dict[str, str] = {
    "PA": "performance + accuracy (high cost): all weights on the accelerators at the published precision",
    "PC": "performance + cost (accuracy given up): weights quantised below the published precision",
    "CA": "cost + accuracy (latency given up): published precision, experts offloaded or on the CPU",
}
OFFLOAD_MODES: frozenset[str] = frozenset({"offload", "cpu-experts", "cpu"})
"""Execution modes in which some weights are not on (or not computed by) the accelerators."""

_FIELD_TYPES: dict[str, type] = {}
for _f in fields(Scenario):
    _t = str(_f.type)
    _FIELD_TYPES[_f.name] = (
        bool if "bool" in _t else int if _t.startswith("int") else float if "float" in _t else str
    )
_EXTRA_KEYS = ("name", "system", "quant_method")
OPTION_KEYS: tuple[str, ...] = (*_EXTRA_KEYS, *(f.name for f in fields(Scenario)))
"""Keys an option may set (underscored; the command line also accepts dashes)."""


@dataclass(frozen=True)
class DeploymentOption:
    """One deployment: its ``name``, the full scenario (preset applied), the preset name and the
    quantisation method used for accuracy look-ups."""

    name: str
    scenario: Scenario
    system: str | None = None
    quant_method: str | None = None
    preset_assumes: str = ""

    def to_dict(self) -> dict[str, Any]:
        sc = self.scenario
        changed = {
            f.name: getattr(sc, f.name)
            for f in fields(Scenario)
            if f.name != "model" and getattr(sc, f.name) != f.default
        }
        return {
            "name": self.name,
            "hardware": sc.hardware,
            "system": self.system,
            "quant_method": self.quant_method,
            "settings": changed,
            "preset_assumes": self.preset_assumes,
        }


def _key(raw: str, where: str) -> str:
    key = raw.strip().lower().replace("-", "_")
    if key not in OPTION_KEYS:
        close = difflib.get_close_matches(key, OPTION_KEYS, n=2, cutoff=0.6)
        hint = (
            f"did you mean {' or '.join(k.replace('_', '-') for k in close)}?"
            if close
            else ("keys: " + ", ".join(k.replace("_", "-") for k in OPTION_KEYS))
        )
        raise ScenarioError(f"{where}: unknown key {raw.strip()!r}; {hint}")
    return key


def _value(key: str, value: Any, where: str) -> Any:
    if key in _EXTRA_KEYS:
        text = str(value).strip()
        if not text:
            raise ScenarioError(f"{where}: {key.replace('_', '-')} is empty")
        return text
    kind = _FIELD_TYPES[key]
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("", "none", "auto") and kind is not bool and key != "placement":
            return None
        try:
            if kind is bool:
                if text.lower() not in ("true", "false", "yes", "no", "1", "0"):
                    raise ValueError(text)
                return text.lower() in ("true", "yes", "1")
            if kind is int:
                return int(text)
            if kind is float:
                number = float(text)
                if not math.isfinite(number):
                    raise ValueError(text)
                return number
        except ValueError:
            raise ScenarioError(
                f"{where}: {key.replace('_', '-')}={text!r} is not a{'n integer' if kind is int else ' number' if kind is float else ' boolean'}"
            ) from None
        return text
    if kind is bool and not isinstance(value, bool):
        raise ScenarioError(f"{where}: {key} must be true or false, got {value!r}")
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ScenarioError(f"{where}: {key} must be an integer, got {value!r}")
    if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ScenarioError(f"{where}: {key} must be a number, got {value!r}")
    return value


def build_option(settings: dict[str, Any], base: Scenario, where: str, index: int) -> DeploymentOption:
    """A :class:`DeploymentOption` from parsed ``settings`` over ``base``; the preset (``system``) fills the
    settings the option leaves at their defaults, as ``capsim predict --system`` does."""
    from capsim.engine.presets import apply_preset

    if "hardware" not in settings:
        raise ScenarioError(f"{where}: give hardware=<accelerator or system id> (capsim hardware list)")
    name = settings.pop("name", None)
    system = settings.pop("system", None)
    method = settings.pop("quant_method", None)
    scenario = replace(base, **settings)
    assumes = ""
    if system is not None:
        scenario, preset = apply_preset(system, scenario)
        assumes = preset.assumes
    scenario.validate()
    if name is None:
        parts = (
            [scenario.hardware]
            + ([system] if system else [])
            + ([scenario.weight_dtype] if scenario.weight_dtype else [])
        )
        name = " ".join(parts) if parts else f"option {index + 1}"
    return DeploymentOption(name, scenario, system, method, assumes)


def parse_option(text: str, base: Scenario, index: int = 0) -> DeploymentOption:
    """``"name=kt;hardware=...;system=...;weight-dtype=int4"`` over ``base`` (the command's flags)."""
    where = f"--option {text!r}"
    settings: dict[str, Any] = {}
    for item in text.split(";"):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise ScenarioError(
                f"{where}: {item.strip()!r} is not KEY=VALUE; write e.g. hardware=h100-sxm;gpus=2"
            )
        k = _key(key, where)
        if k in settings:
            raise ScenarioError(f"{where}: {k.replace('_', '-')} is given twice")
        settings[k] = _value(k, value, where)
    return build_option(settings, base, where, index)


def load_options_file(path: Path | str, base: Scenario) -> list[DeploymentOption]:
    """Options from a TOML file of ``[[option]]`` tables (keys as in :func:`parse_option`)."""
    p = Path(path)
    raw = read_user_toml(p, "--options")
    extra = sorted(set(raw) - {"option"})
    if extra:
        raise DataFileError(str(p), f"unknown top-level key(s) {', '.join(extra)}; write [[option]] tables")
    tables = raw.get("option")
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise DataFileError(str(p), "no [[option]] tables; write one [[option]] table per deployment")
    out = []
    for i, table in enumerate(tables):
        where = f"{p} [[option]] #{i + 1}"
        try:
            settings = {}
            for key, value in table.items():
                k = _key(key, where)
                settings[k] = _value(k, value, where)
            out.append(build_option(settings, base, where, i))
        except ScenarioError as exc:
            raise DataFileError(str(p), str(exc)) from None
    return out


def collect_options(
    option_texts: list[str] | None, options_file: Path | None, base: Scenario
) -> list[DeploymentOption]:
    """The options of ``--option`` (in order) then of ``--options FILE``; names must be unique."""
    out = [parse_option(t, base, i) for i, t in enumerate(option_texts or [])]
    if options_file is not None:
        out.extend(load_options_file(options_file, base))
    seen: set[str] = set()
    for o in out:
        if o.name in seen:
            raise ScenarioError(f"two options are named {o.name!r}; give each a distinct name=")
        seen.add(o.name)
    return out


def is_quantised(scenario: Scenario, native_dtype: str) -> bool:
    """True when the weights (or the routed experts) are stored in fewer bits than the published checkpoint."""
    from capsim.models.precision import WEIGHT_PRECISIONS, is_weight_dtype, weight_precision

    native = WEIGHT_PRECISIONS.get(native_dtype.lower())
    for dtype in (scenario.weight_dtype, scenario.expert_dtype):
        if dtype is None or native is None:
            continue
        # GGUF types (q4_k_m, ...) count by their default tensor type's bits
        chosen = weight_precision(dtype) if is_weight_dtype(dtype) else None
        if chosen is not None and chosen.bits_per_element < native.bits_per_element:
            return True
    return False


def cap_class(scenario: Scenario, native_dtype: str, mode: str | None = None) -> CapClass:
    """MoE-CAP's class of a deployment (module docstring): PC when quantised below the published
    precision, else CA when ``mode`` (the resolved execution mode; default the scenario's) keeps experts off
    the accelerators, else PA."""
    if is_quantised(scenario, native_dtype):
        return "PC"
    resolved = mode or scenario.mode
    if resolved in OFFLOAD_MODES or (scenario.placement not in (None, "", "gpu", "auto")):
        return "CA"
    return "PA"
