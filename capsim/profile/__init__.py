"""The real profiling harness (issue #6): measure this machine and real MoE layers, and validate capsim's
predictions against the measurements.

Needs PyTorch (``pip install 'capsim[profile]'``), imported only when a measurement runs, so this package
imports without it. Modules:

- :mod:`.microbench`: memory bandwidth (STREAM copy/triad, read, GEMV), matmul FLOPS, dispatch overhead,
  host-device copies;
- :mod:`.calibrate`: those measurements -> a hardware entry (``capsim hardware calibrate``);
- :mod:`.moe_torch`: a PyTorch MoE decoder with a published model's shapes and random weights;
- :mod:`.harness`: timed decode steps and prefills with their routing traces (``capsim profile``);
- :mod:`.validate`: predictions vs measurements (``capsim validate``).
"""

from __future__ import annotations

from capsim.profile._torch import TorchMissingError, require_torch, torch_available
from capsim.profile.harness import (
    CaseResult,
    ProfileCase,
    ProfilePlan,
    ProfileRun,
    full_plan,
    grid,
    load_run,
    quick_plan,
    run_profile,
)
from capsim.profile.scaling import layers_that_fit, truncate_layers
from capsim.profile.timing import Timing, time_op
from capsim.profile.validate import (
    DEFAULT_THRESHOLD,
    CaseComparison,
    Predictor,
    ValidationReport,
    compare,
    engine_predictor,
    write_validation,
)

__all__ = [
    "DEFAULT_THRESHOLD",
    "CaseComparison",
    "CaseResult",
    "Predictor",
    "ProfileCase",
    "ProfilePlan",
    "ProfileRun",
    "Timing",
    "TorchMissingError",
    "ValidationReport",
    "compare",
    "engine_predictor",
    "full_plan",
    "grid",
    "layers_that_fit",
    "load_run",
    "quick_plan",
    "require_torch",
    "run_profile",
    "time_op",
    "torch_available",
    "truncate_layers",
    "write_validation",
]
