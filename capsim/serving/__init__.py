"""Iteration-level serving simulation (``capsim serve``): workloads, the continuous-batching scheduler,
step costs from the engine, and vLLM-named serving metrics. See docs/serving.md."""

from capsim.serving.api import Curve, ServeRequest, parse_rates, run
from capsim.serving.metrics import ServeResult, parse_slo
from capsim.serving.replica import Disaggregation, ReplicaModel
from capsim.serving.run import build_replica, serve
from capsim.serving.scheduler import SchedulerConfig
from capsim.serving.simulate import simulate_replica
from capsim.serving.stepcost import StepCost
from capsim.serving.workload import LengthSpec, Workload, build_workload, load_request_file, parse_length

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
