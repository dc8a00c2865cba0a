"""capsim: analytical simulator and cost model for sparse Mixture-of-Experts LLM inference.

Data flow: hardware_db (:func:`load_hardware_db`) + model_db (:func:`resolve_model`) + routing
(:func:`make_router`) + :class:`Scenario` -> per-layer FLOPs and bytes (capsim.engine.formulas, capsim.engine.roofline)
-> :func:`predict` -> :class:`Prediction` (metrics defined in docs/metrics.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING as _TYPE_CHECKING

# Public names are imported on first use (PEP 562): `capsim --help` and the CLI's start-up then load only
# what they touch; sympy, networkx and the engine stay unloaded until a prediction needs them.
_EXPORTS: dict[str, str] = {
    "Accelerator": "hardware.entries",
    "AttentionSpec": "models.parts",
    "CPU": "hardware.entries",
    "CapsimError": "errors",
    "ConfigFieldError": "errors",
    "DRAM": "hardware.entries",
    "DataFileError": "errors",
    "DoesNotFitError": "errors",
    "Efficiency": "hardware.entries",
    "FFNKind": "models.parts",
    "HardwareDB": "hardware.db",
    "Link": "hardware.entries",
    "MemoryPlan": "engine.memory",
    "MissingValueError": "errors",
    "MoESpec": "models.parts",
    "ModelDB": "models.db",
    "ModelSpec": "models.spec",
    "PhaseMetrics": "engine.metrics",
    "Prediction": "engine.metrics",
    "PublishedCounts": "models.db",
    "Router": "routing",
    "SSD": "hardware.entries",
    "SUPPORTED_FAMILIES": "models.ingest_hf",
    "Scenario": "engine.scenario",
    "ScenarioError": "errors",
    "Sourced": "hardware.entries",
    "System": "hardware.entries",
    "Trace": "routing.traces",
    "TraceError": "errors",
    "UnknownHardwareError": "errors",
    "UnknownIdError": "errors",
    "UnknownModelError": "errors",
    "UnknownRouterError": "errors",
    "UnsupportedModelError": "errors",
    "decode_step_time": "engine.predict",
    "load_config_file": "models.ingest_hf",
    "load_hardware_db": "hardware.db",
    "load_model_db": "models.db",
    "load_trace": "routing.traces",
    "make_router": "routing",
    "predict": "engine.predict",
    "resolve_model": "models.db",
    "spec_from_config": "models.ingest_hf",
    "uniform_expected_activated": "routing",
    "write_trace": "routing.traces",
}


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'capsim' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if _TYPE_CHECKING:  # static type checkers see the eager imports
    from capsim.engine.memory import MemoryPlan
    from capsim.engine.metrics import PhaseMetrics, Prediction
    from capsim.engine.predict import decode_step_time, predict
    from capsim.engine.scenario import Scenario
    from capsim.errors import (
        CapsimError,
        ConfigFieldError,
        DataFileError,
        DoesNotFitError,
        MissingValueError,
        ScenarioError,
        TraceError,
        UnknownHardwareError,
        UnknownIdError,
        UnknownModelError,
        UnknownRouterError,
        UnsupportedModelError,
    )
    from capsim.hardware.db import HardwareDB, load_hardware_db
    from capsim.hardware.entries import CPU, DRAM, SSD, Accelerator, Efficiency, Link, Sourced, System
    from capsim.models.db import ModelDB, PublishedCounts, load_model_db, resolve_model
    from capsim.models.ingest_hf import SUPPORTED_FAMILIES, load_config_file, spec_from_config
    from capsim.models.parts import AttentionSpec, FFNKind, MoESpec
    from capsim.models.spec import ModelSpec
    from capsim.routing import Router, make_router, uniform_expected_activated
    from capsim.routing.traces import Trace, load_trace, write_trace

__version__ = "0.1.0"

__all__ = [
    "Accelerator",
    "AttentionSpec",
    "CPU",
    "CapsimError",
    "ConfigFieldError",
    "DRAM",
    "DataFileError",
    "DoesNotFitError",
    "Efficiency",
    "FFNKind",
    "HardwareDB",
    "Link",
    "MemoryPlan",
    "MissingValueError",
    "MoESpec",
    "ModelDB",
    "ModelSpec",
    "PhaseMetrics",
    "Prediction",
    "PublishedCounts",
    "Router",
    "SSD",
    "SUPPORTED_FAMILIES",
    "Scenario",
    "ScenarioError",
    "Sourced",
    "System",
    "Trace",
    "TraceError",
    "UnknownHardwareError",
    "UnknownIdError",
    "UnknownModelError",
    "UnknownRouterError",
    "UnsupportedModelError",
    "__version__",
    "decode_step_time",
    "load_config_file",
    "load_hardware_db",
    "load_model_db",
    "load_trace",
    "make_router",
    "predict",
    "resolve_model",
    "spec_from_config",
    "uniform_expected_activated",
    "write_trace",
]
