"""Iteration-level serving simulation (``capsim serve``): workloads, the continuous-batching scheduler,
step costs from the engine, and vLLM-named serving metrics. See docs/serving.md."""

from .api import Curve, ServeRequest, parse_rates, run
from .metrics import ServeResult, parse_slo
from .run import Disaggregation, ReplicaModel, build_replica, serve
from .simulate import SchedulerConfig, simulate_replica
from .stepcost import StepCost
from .workload import LengthSpec, Workload, build_workload, load_request_file, parse_length

__all__ = [
    "Curve",
    "Disaggregation",
    "LengthSpec",
    "ReplicaModel",
    "SchedulerConfig",
    "ServeRequest",
    "ServeResult",
    "StepCost",
    "Workload",
    "build_replica",
    "build_workload",
    "load_request_file",
    "parse_length",
    "parse_rates",
    "parse_slo",
    "run",
    "serve",
    "simulate_replica",
]
