"""capsim: analytical simulator and cost model for sparse Mixture-of-Experts LLM inference.

Data flow: hardware_db + model_db + routing + scenario -> per-layer FLOPs and bytes (capsim.roofline)
-> step times -> metrics (capsim.metrics) -> reports (capsim.cli).
"""

from __future__ import annotations

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
    UnsupportedModelError,
)
from .model import AttentionSpec, FFNKind, ModelSpec, MoESpec

__version__ = "0.1.0"

__all__ = [
    "AttentionSpec",
    "CapsimError",
    "ConfigFieldError",
    "DataFileError",
    "DoesNotFitError",
    "FFNKind",
    "MissingValueError",
    "ModelSpec",
    "MoESpec",
    "ScenarioError",
    "TraceError",
    "UnknownHardwareError",
    "UnknownIdError",
    "UnknownModelError",
    "UnsupportedModelError",
    "__version__",
]
