"""capsim: analytical simulator and cost model for sparse Mixture-of-Experts LLM inference.

Data flow: hardware_db (:func:`load_hardware_db`) + model_db (:func:`resolve_model`) + routing
(:func:`make_router`) + :class:`Scenario` -> per-layer FLOPs and bytes (capsim.formulas, capsim.roofline)
-> :func:`predict` -> :class:`Prediction` (metrics defined in docs/metrics.md).
"""

from __future__ import annotations

from .engine import decode_step_time, predict
from .errors import (
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
from .hardware import (
    CPU,
    DRAM,
    SSD,
    Accelerator,
    Efficiency,
    HardwareDB,
    Link,
    Sourced,
    System,
    load_hardware_db,
)
from .ingest_hf import SUPPORTED_FAMILIES, load_config_file, spec_from_config
from .memory import MemoryPlan
from .metrics import PhaseMetrics, Prediction
from .model import AttentionSpec, FFNKind, ModelSpec, MoESpec
from .model_db import ModelDB, PublishedCounts, load_model_db, resolve_model
from .routing import Router, make_router, uniform_expected_activated
from .scenario import Scenario
from .traces import Trace, load_trace, write_trace

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
