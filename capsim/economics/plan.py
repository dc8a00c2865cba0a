"""Procurement: ``compare`` options side by side; ``plan`` the cheapest deployments that meet latency SLOs.

- :func:`compare` predicts one model on several hardware options (one scenario each) and attaches cost
  (:mod:`capsim.economics.cost`) and published accuracy (:mod:`capsim.models.accuracy`); options that do not fit are kept, with
  what they need and have. Rows are ranked by an objective.
- :func:`plan` searches hardware × device count (1, 2, 4, 8 for an accelerator id; systems as they are) ×
  weight precision × batch (powers of two up to what the KV cache holds) for configurations whose TPOT and
  TTFT meet the SLOs, with enough replicas to serve a daily token volume, and ranks them by cost per million
  output tokens; it also returns the Pareto front of cost vs TPOT.

Cost per output token in ``plan`` is *all-in*: the busy time of prefill and decode together, charged to the
generated tokens (sustained rate = batch × gen_len / end-to-end latency), because a served request needs both.
With ``tokens_per_day`` the replicas are ``ceil(volume / (sustained × 86400 s))`` and the utilisation of the
fleet is derived from the volume (not the ``utilization`` input):
u = volume / (replicas × sustained × 86400 s).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from capsim import units
from capsim.economics.cost import (
    TOKENS_PER_MTOK,
    CostReport,
    DeploymentRates,
    check_price_ids,
    deployment_rates,
    finite_cost,
    price_predictions,
)
from capsim.economics.inputs import CostInputs
from capsim.engine.scenario import Scenario
from capsim.errors import DoesNotFitError, MissingValueError, ScenarioError
from capsim.models.accuracy import AccuracyValue, check_benchmark, load_accuracy_db
from capsim.pareto import pareto_mask
from capsim.units import GB

if TYPE_CHECKING:
    from capsim.economics.options import DeploymentOption
    from capsim.engine.metrics import Prediction
    from capsim.hardware.db import HardwareDB
    from capsim.models.spec import ModelSpec

Objective = Literal["cost_per_mtok", "tpot", "throughput", "purchase"]
Basis = Literal["owned", "rented"]
OBJECTIVES: tuple[str, ...] = ("cost_per_mtok", "tpot", "throughput", "purchase")
BASES: tuple[str, ...] = ("owned", "rented")
DEVICE_COUNTS: tuple[int, ...] = (1, 2, 4, 8)
"""Device counts ``plan`` tries for an accelerator id (tensor parallel within one node)."""
PLAN_WEIGHT_DTYPES: tuple[str, ...] = ("native", "fp8", "int4")
"""Weight precisions ``plan`` tries by default (``native`` = the model's published checkpoint)."""
SECONDS_PER_DAY = units.HOURS_PER_DAY * units.HOURS

_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|us|µs|s|min)?\s*$")
_DURATION_UNITS = {None: 1.0, "s": 1.0, "ms": units.MS, "us": units.US, "µs": units.US, "min": 60.0}


def parse_duration(text: str | float, option: str = "duration") -> float:
    """Seconds from ``"50ms"``, ``"1s"``, ``"200us"`` or ``"2min"``; a Python number is seconds.

    Text needs its unit: a bare ``50`` could mean 50 ms or 50 s (``--slo-tpot 50`` once silently meant 50 s),
    so it is refused with the two readings named. Raises ScenarioError for anything else, or for a duration
    that is not > 0.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = _DURATION.match(str(text))
        if match is None:
            raise ScenarioError(f"bad {option} {text!r}; write a number with a unit: 50ms, 0.2s, 200us, 2min")
        if match.group(2) is None:
            raise ScenarioError(
                f"{option} {text!r} has no unit; write {match.group(1)}ms or {match.group(1)}s"
            )
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if not math.isfinite(seconds) or seconds <= 0:
        raise ScenarioError(f"{option} {text!r} must be a positive time, e.g. 50ms")
    return seconds


def parse_gpus(text: str | int | None) -> int | None:
    """``"auto"``/None -> None (the engine picks the fewest of 1, 2, 4, 8 that fit); ``"4"`` -> 4."""
    if text is None or (isinstance(text, str) and text.strip().lower() == "auto"):
        return None
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise ScenarioError(
            f"--gpus {text!r} is not a device count; write a positive integer or 'auto'"
        ) from None
    if value < 1:
        raise ScenarioError(f"--gpus must be >= 1 or 'auto', got {value}")
    return value


def split_ids(
    text: str | Sequence[str], option: str = "--hardware", example: str = "h100-sxm,mi300x"
) -> list[str]:
    """``"a,b, c"`` (or a list of such strings) -> ``["a", "b", "c"]``; ScenarioError naming ``option`` and
    showing ``example`` when empty."""
    items = [text] if isinstance(text, str) else list(text)
    ids = [part.strip() for item in items for part in item.split(",") if part.strip()]
    if not ids:
        raise ScenarioError(f"no ids given; write a comma-separated list, e.g. {option} {example}")
    return list(dict.fromkeys(ids))


NODE_KINDS: tuple[str, ...] = ("accelerator", "system")
"""Database kinds a deployment is built from (the others are parts: CPUs, DRAM, SSDs, links)."""


def check_node_ids(hardware: Sequence[str], db: HardwareDB) -> None:
    """Every id exists (UnknownHardwareError with close matches) and names an accelerator or a system
    (ScenarioError otherwise), before any prediction runs."""
    from capsim.hardware.entries import entry_kind

    for hw in hardware:
        kind = entry_kind(db.get(hw))
        if kind not in NODE_KINDS:
            raise ScenarioError(
                f"{hw!r} is a {kind} entry, not a deployment; give accelerator or system ids "
                "(capsim hardware list --kind accelerator / --kind system)"
            )


def _check_choice(value: str, choices: Sequence[str], option: str) -> None:
    if value not in choices:
        raise ScenarioError(f"{option} {value!r} is not one of {', '.join(choices)}")


def native_weight_dtype(model: ModelSpec) -> str:
    """The published precision of the model's expert (or dense FFN) weights (``bf16``, ``fp8``, ...)."""
    return model.weight_dtype("routed_experts" if model.is_moe else "dense_ffn")


def accuracy_for(
    model_id: str,
    benchmark: str,
    weight_dtype: str | None,
    *,
    method: str | None = None,
    variant: str | None = None,
) -> AccuracyValue:
    """Published accuracy of a model served at ``weight_dtype`` (None = native) quantised with ``method``;
    ``unknown`` (no value) for a quantised precision nothing was published for."""
    from capsim.engine.resolve import resolve_model

    model = resolve_model(model_id)
    dtype = None if weight_dtype in (None, "native") else weight_dtype
    return load_accuracy_db().lookup(
        model.id,
        benchmark,
        weight_dtype=dtype,
        native_dtype=native_weight_dtype(model),
        variant=variant,
        method=method,
    )


# --------------------------------------------------------------------------------------------- compare


@dataclass(frozen=True)
class Option:
    """One evaluated deployment option. ``prediction``/``cost`` are None when it does not fit (``problem``
    holds the needs-vs-has line) or cannot be evaluated (``problem`` says why)."""

    model: str
    hardware: str
    devices: int | None
    weight_dtype: str
    batch: int
    prediction: Prediction | None
    cost: CostReport | None
    accuracy: AccuracyValue
    fits: bool
    problem: str = ""
    basis: Basis = "owned"
    name: str = ""
    """The deployment option's name (``--option name=...``); the hardware id for a bare ``--hardware``."""
    system: str | None = None
    """Serving-system preset of the option (``vllm-like``, ``ktransformers-like`` ...), if any."""
    cap_class: str = ""
    """MoE-CAP's PA / PC / CA class of the deployment (capsim.economics.options.cap_class)."""
    settings: dict[str, Any] = field(default_factory=dict)
    """The option's predict settings that differ from the defaults."""

    @property
    def label(self) -> str:
        return self.name or self.hardware

    @property
    def ok(self) -> bool:
        return self.prediction is not None

    @property
    def tpot_s(self) -> float | None:
        return None if self.prediction is None else self.prediction.tpot_s

    @property
    def ttft_s(self) -> float | None:
        return None if self.prediction is None else self.prediction.ttft_s

    @property
    def throughput(self) -> float | None:
        """Aggregate decode tokens/s at the option's batch."""
        return None if self.prediction is None else self.prediction.decode_tokens_per_s

    @property
    def purchase_usd(self) -> float | None:
        if self.cost is None or not self.cost.rates.purchase.accelerators_priced:
            return None
        return self.cost.rates.purchase.total_usd

    @property
    def usd_per_mtok_output(self) -> float | None:
        """Full-load cost per million output tokens on the option's basis (owned or rented)."""
        if self.cost is None:
            return None
        usd: float | None = getattr(self.cost.full_load, self.basis).usd_per_mtok_output
        return usd

    @property
    def headroom_gb(self) -> float | None:
        """Usable memory left per device at the option's batch (or its largest wave), in GB."""
        if self.prediction is None:
            return None
        m = self.prediction.memory
        return (m.usable_bytes - m.total_bytes) / GB

    def to_dict(self) -> dict[str, Any]:
        p = self.prediction
        return {
            "name": self.label,
            "system": self.system,
            "cap_class": self.cap_class,
            "settings": self.settings,
            "model": self.model,
            "hardware": self.hardware,
            "devices": self.devices,
            "weight_dtype": self.weight_dtype,
            "batch": self.batch,
            "fits": self.fits,
            "problem": self.problem,
            "ttft_s": self.ttft_s,
            "tpot_s": self.tpot_s,
            "decode_tokens_per_s": self.throughput,
            "prefill_tokens_per_s": None if p is None else p.prefill_tokens_per_s,
            "memory_headroom_gb_per_device": self.headroom_gb,
            "max_batch": None if p is None else p.memory.max_batch,
            "waves": None if p is None else p.memory.waves,
            "cost": None if self.cost is None else self.cost.to_dict(),
            "accuracy": self.accuracy.to_dict(),
        }

    def to_row(self) -> dict[str, Any]:
        """A flat record for CSV (one line per option)."""
        c = self.cost
        full = c.full_load if c else None
        user = c.per_user if c else None
        purchase = c.rates.purchase if c else None
        energy = None if full is None else full.energy
        return {
            "name": self.label,
            "system": self.system,
            "cap_class": self.cap_class,
            "model": self.model,
            "hardware": self.hardware,
            "devices": self.devices,
            "weight_dtype": self.weight_dtype,
            "batch": self.batch,
            "fits": self.fits,
            "problem": self.problem,
            "purchase_usd": self.purchase_usd,
            "j_per_output_token": None if energy is None else energy.decode.j_per_token,
            "decode_watts": None if energy is None else energy.decode.watts,
            "purchase_is_lower_bound": None if purchase is None else purchase.is_lower_bound,
            "owned_usd_per_mtok_input": None if full is None else full.owned.usd_per_mtok_input,
            "owned_usd_per_mtok_output": None if full is None else full.owned.usd_per_mtok_output,
            "owned_usd_per_mtok_output_per_user": None if user is None else user.owned.usd_per_mtok_output,
            "rented_usd_per_mtok_input": None if full is None else full.rented.usd_per_mtok_input,
            "rented_usd_per_mtok_output": None if full is None else full.rented.usd_per_mtok_output,
            "rented_usd_per_mtok_output_per_user": None if user is None else user.rented.usd_per_mtok_output,
            "ttft_s": self.ttft_s,
            "tpot_s": self.tpot_s,
            "decode_tokens_per_s": self.throughput,
            "memory_headroom_gb_per_device": self.headroom_gb,
            "accuracy_benchmark": self.accuracy.benchmark,
            "accuracy": self.accuracy.value,
            "accuracy_status": self.accuracy.status,
            "accuracy_soft": self.accuracy.soft,
            "accuracy_source": self.accuracy.source,
        }


def _objective_key(objective: Objective) -> Callable[[Option], tuple[int, float]]:
    """Sort key: evaluable options first by the objective, then the rest (not fitting, unpriced)."""

    def value(o: Option) -> float | None:
        if objective == "cost_per_mtok":
            return o.usd_per_mtok_output
        if objective == "tpot":
            return o.tpot_s
        if objective == "throughput":
            return None if o.throughput is None else -o.throughput
        return o.purchase_usd

    def key(o: Option) -> tuple[int, float]:
        v = value(o)
        return (0, v) if v is not None else (1, 0.0)

    return key


@dataclass(frozen=True)
class Comparison:
    """Options ranked by ``objective``; ``inputs`` are the cost inputs used."""

    model: str
    objective: Objective
    basis: Basis
    benchmark: str
    options: tuple[Option, ...]
    inputs: CostInputs

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "objective": self.objective,
            "basis": self.basis,
            "benchmark": self.benchmark,
            "options": [o.to_dict() for o in self.options],
            "cost_inputs": self.inputs.to_dict(),
        }


def evaluate_option(
    scenario: Scenario,
    db: HardwareDB,
    inputs: CostInputs,
    benchmark: str,
    basis: Basis = "owned",
    deployment: DeploymentOption | None = None,
    variant: str | None = None,
) -> Option:
    """Predict, cost and look up accuracy for one scenario. A scenario that does not fit, or whose node cannot
    be built from the database, becomes an Option with ``problem`` set rather than an error, so one bad option
    does not hide the others."""
    from capsim.economics.options import cap_class
    from capsim.engine.predict import predict
    from capsim.engine.resolve import resolve_model

    model_id = scenario.model if isinstance(scenario.model, str) else scenario.model.id
    method = deployment.quant_method if deployment else None
    accuracy = accuracy_for(model_id, benchmark, scenario.weight_dtype, method=method, variant=variant)
    dtype = scenario.weight_dtype or "native"
    native = native_weight_dtype(resolve_model(scenario.model))
    named = {
        "name": deployment.name if deployment else "",
        "system": deployment.system if deployment else None,
        "settings": deployment.to_dict()["settings"] if deployment else {},
    }
    try:
        prediction = predict(scenario, hardware_db=db)
    except DoesNotFitError as exc:
        return Option(
            model_id,
            scenario.hardware,
            scenario.gpus,
            dtype,
            scenario.batch,
            None,
            None,
            accuracy,
            fits=False,
            problem=str(exc),
            basis=basis,
            cap_class=cap_class(scenario, native),
            **named,
        )
    except (MissingValueError, ScenarioError) as exc:
        # e.g. more devices than the scale-up domain joins: this option cannot be built, the others can
        return Option(
            model_id,
            scenario.hardware,
            scenario.gpus,
            dtype,
            scenario.batch,
            None,
            None,
            accuracy,
            fits=False,
            problem=str(exc),
            basis=basis,
            cap_class=cap_class(scenario, native),
            **named,
        )
    # orchestration here, pricing in capsim.economics.cost: the per-user (batch 1) prediction, then both priced
    devices = int(prediction.scenario["gpus"])
    single = (
        prediction
        if scenario.batch == 1
        else predict(replace(scenario, batch=1, gpus=devices), hardware_db=db)
    )
    report = price_predictions(
        scenario.hardware, db, inputs, prediction, single, host_memory_gb=scenario.host_memory_gb
    )
    return Option(
        model_id,
        scenario.hardware,
        int(prediction.scenario["gpus"]),
        dtype,
        scenario.batch,
        prediction,
        report,
        accuracy,
        fits=True,
        basis=basis,
        cap_class=cap_class(scenario, native, str(prediction.scenario.get("mode", scenario.mode))),
        **named,
    )


def compare(
    model: str,
    hardware: Sequence[str],
    *,
    hardware_db: HardwareDB,
    gpus: int | None = None,
    batch: int = 1,
    prompt_len: int = 512,
    gen_len: int = 128,
    weight_dtype: str | None = None,
    kv_dtype: str = "bf16",
    objective: Objective = "cost_per_mtok",
    basis: Basis = "owned",
    benchmark: str = "mmlu",
    inputs: CostInputs | None = None,
    deployments: Sequence[DeploymentOption] = (),
    host_memory_gb: float | None = None,
) -> Comparison:
    """Evaluate ``model`` on each hardware id and on each deployment option (:mod:`capsim.economics.options`, which
    carry their own predict settings) and rank the options by ``objective`` (cost per million output tokens
    at full load, TPOT, decode throughput, or purchase cost). Unknown ids and bad values raise before any
    prediction runs. Accuracy of all options comes from one published evaluation where one covers every
    quantised option (:func:`capsim.models.accuracy.comparable_variant`)."""
    from capsim.engine.resolve import resolve_model
    from capsim.models.accuracy import comparable_variant

    _check_choice(objective, OBJECTIVES, "--objective")
    _check_choice(basis, BASES, "--basis")
    key = check_benchmark(benchmark)
    inputs = inputs or CostInputs()
    check_price_ids(inputs, hardware_db)
    check_node_ids(list(hardware) + [d.scenario.hardware for d in deployments], hardware_db)
    if not hardware and not deployments:
        raise ScenarioError("nothing to compare; give --hardware ids or --option deployments")
    plain = [
        (
            Scenario(
                model=model,
                hardware=hw,
                gpus=gpus,
                batch=batch,
                prompt_len=prompt_len,
                gen_len=gen_len,
                weight_dtype=weight_dtype,
                kv_dtype=kv_dtype,
                host_memory_gb=host_memory_gb,
            ),
            None,
        )
        for hw in hardware
    ]
    runs: list[tuple[Scenario, DeploymentOption | None]] = [
        *plain,
        *((replace(d.scenario, model=model), d) for d in deployments),
    ]
    for sc, _ in runs:
        sc.validate()
    spec = resolve_model(model)
    native = native_weight_dtype(spec)
    from capsim.economics.options import is_quantised

    quantised = sorted(
        {
            (str(sc.weight_dtype), d.quant_method if d else None)
            for sc, d in runs
            if is_quantised(sc, native) and sc.weight_dtype
        },
        key=str,
    )
    variant = comparable_variant(load_accuracy_db(), spec.id, key, quantised)
    options = [evaluate_option(sc, hardware_db, inputs, key, basis, d, variant) for sc, d in runs]
    ranked = sorted(options, key=_objective_key(objective))
    from capsim.engine.resolve import resolve_model

    return Comparison(resolve_model(model).id, objective, basis, key, tuple(ranked), inputs)


# --------------------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class SLO:
    """Latency targets in seconds: TPOT per decode step, and optionally TTFT (the whole batch's prefill)."""

    tpot_s: float
    ttft_s: float | None = None

    def met_by(self, tpot_s: float | None, ttft_s: float) -> bool:
        if tpot_s is None or tpot_s > self.tpot_s:
            return False
        return self.ttft_s is None or ttft_s <= self.ttft_s


@dataclass(frozen=True)
class PlanPoint:
    """One evaluated point of the search: a configuration at one batch, its latencies, throughput and cost."""

    hardware: str
    devices: int
    weight_dtype: str
    batch: int
    tpot_s: float
    ttft_s: float
    sustained_tokens_per_s: float
    """Generated tokens per second of one replica, prefill included: batch × gen_len / e2e latency."""
    replicas: int
    purchase_usd: float | None
    purchase_is_lower_bound: bool
    usd_per_mtok: float | None
    """All-in cost per million generated tokens on the plan's basis (None when unpriced)."""
    usd_per_day: float | None
    utilization: float
    feasible: bool
    max_batch: int
    option: str = ""
    """The deployment option's name (``--option``), empty for a searched hardware id."""

    @property
    def config(self) -> tuple[str, int, str, str]:
        return (self.hardware, self.devices, self.weight_dtype, self.option)

    def to_dict(self) -> dict[str, Any]:
        return {
            "option": self.option,
            "hardware": self.hardware,
            "devices": self.devices,
            "weight_dtype": self.weight_dtype,
            "batch": self.batch,
            "tpot_s": self.tpot_s,
            "ttft_s": self.ttft_s,
            "sustained_tokens_per_s": self.sustained_tokens_per_s,
            "replicas": self.replicas,
            "purchase_usd": self.purchase_usd,
            "purchase_is_lower_bound": self.purchase_is_lower_bound,
            "usd_per_mtok": self.usd_per_mtok,
            "usd_per_day": self.usd_per_day,
            "utilization": self.utilization,
            "feasible": self.feasible,
            "max_batch": self.max_batch,
        }


@dataclass(frozen=True)
class PlanResult:
    """The search's answer: the cheapest configurations (one point each, its cheapest batch), the Pareto
    front of cost vs TPOT over every feasible point, and what was skipped and why."""

    model: str
    slo: SLO
    basis: Basis
    best: tuple[PlanPoint, ...]
    pareto: tuple[PlanPoint, ...]
    points: tuple[PlanPoint, ...]
    skipped: tuple[tuple[str, str], ...]
    """(configuration, reason) for configurations that could not run (do not fit, cannot be built)."""
    unpriced: tuple[str, ...]
    """Configurations meeting the SLOs whose cost is unknown on this basis (not ranked)."""
    tokens_per_day: float | None
    budget_usd: float | None
    inputs: CostInputs
    accuracy: dict[str, AccuracyValue] = field(default_factory=dict)
    """Published accuracy per weight precision tried and per deployment option (by name); ``unknown`` for a
    quantised precision nothing was published for."""

    @property
    def feasible(self) -> tuple[PlanPoint, ...]:
        return tuple(p for p in self.points if p.feasible)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "slo": {"tpot_s": self.slo.tpot_s, "ttft_s": self.slo.ttft_s},
            "basis": self.basis,
            "tokens_per_day": self.tokens_per_day,
            "budget_usd": self.budget_usd,
            "best": [p.to_dict() for p in self.best],
            "pareto": [p.to_dict() for p in self.pareto],
            "accuracy": {dtype: a.to_dict() for dtype, a in self.accuracy.items()},
            "evaluated_points": len(self.points),
            "feasible_points": len(self.feasible),
            "skipped": [{"configuration": c, "reason": r} for c, r in self.skipped],
            "unpriced": list(self.unpriced),
            "cost_inputs": self.inputs.to_dict(),
            "cost_basis": (
                "all-in: prefill and decode busy time charged to generated tokens; "
                + (
                    "utilisation derived from tokens_per_day"
                    if self.tokens_per_day
                    else "utilisation from the cost inputs"
                )
            ),
        }


@dataclass(frozen=True)
class _Config:
    hardware: str
    devices: int | None
    weight_dtype: str
    max_batch: int
    devices_used: int
    option: str = ""
    """The deployment option's name when the configuration comes from ``--option``."""
    scenario: Scenario | None = None
    """The option's scenario (every predict setting) the batch search starts from."""

    @property
    def label(self) -> str:
        head = f"{self.option}: " if self.option else ""
        return f"{head}{self.hardware} x{self.devices_used} {self.weight_dtype}"


def candidate_hardware(db: HardwareDB) -> list[str]:
    """Every accelerator id and every system with accelerators: what ``plan`` searches by default."""
    systems = [s for s in db.ids("system") if db.system(s).accelerator is not None]
    return db.ids("accelerator") + systems


def _configs(
    hardware: Sequence[str],
    dtypes: Sequence[str],
    base: Scenario,
    db: HardwareDB,
    counts: Sequence[int],
) -> tuple[list[_Config], list[tuple[str, str]]]:
    """Resolve every (hardware, devices, dtype) once: keep those that fit one sequence, with its KV limit."""
    from capsim.engine.resolve import resolve

    configs: list[_Config] = []
    skipped: list[tuple[str, str]] = []
    for hw in hardware:
        is_system = hw in db.ids("system")
        for devices in [None] if is_system else list(counts):
            for dtype in dtypes:
                sc = replace(
                    base,
                    hardware=hw,
                    gpus=devices,
                    weight_dtype=None if dtype == "native" else dtype,
                    batch=1,
                )
                label = f"{hw} x{devices or 'all'} {dtype}"
                try:
                    rs, memory = resolve(sc, db)
                except (DoesNotFitError, MissingValueError, ScenarioError) as exc:
                    skipped.append((label, str(exc)))
                    continue
                configs.append(_Config(hw, devices, dtype, memory.max_batch, rs.sharding.tp))
    return configs, skipped


def _option_configs(
    deployments: Sequence[DeploymentOption], spec: Any, db: HardwareDB
) -> tuple[list[_Config], list[tuple[str, str]]]:
    """One configuration per deployment option (its devices and settings fixed; the batch is searched)."""
    from capsim.engine.resolve import resolve

    configs: list[_Config] = []
    skipped: list[tuple[str, str]] = []
    for d in deployments:
        sc = replace(d.scenario, model=spec, batch=1)
        try:
            rs, memory = resolve(sc, db)
        except (DoesNotFitError, MissingValueError, ScenarioError) as exc:
            skipped.append((d.name, str(exc)))
            continue
        configs.append(
            _Config(
                sc.hardware,
                sc.gpus,
                sc.weight_dtype or "native",
                memory.max_batch,
                rs.layout.devices_per_replica,
                option=d.name,
                scenario=sc,
            )
        )
    return configs, skipped


def _batches(max_batch: int, cap: int | None) -> list[int]:
    limit = max_batch if cap is None else min(max_batch, cap)
    return [2**i for i in range(int(math.log2(limit)) + 1)] if limit >= 1 else []


def plan(
    model: str,
    slo: SLO,
    *,
    hardware_db: HardwareDB,
    hardware: Sequence[str] | None = None,
    weight_dtypes: Sequence[str] = PLAN_WEIGHT_DTYPES,
    device_counts: Sequence[int] = DEVICE_COUNTS,
    prompt_len: int = 512,
    gen_len: int = 128,
    kv_dtype: str = "bf16",
    max_batch: int | None = None,
    budget_usd: float | None = None,
    tokens_per_day: float | None = None,
    basis: Basis = "owned",
    inputs: CostInputs | None = None,
    benchmark: str = "mmlu",
    top: int = 5,
    prune: bool = True,
    progress: Callable[[int, int], None] | None = None,
    deployments: Sequence[DeploymentOption] = (),
    host_memory_gb: float | None = None,
) -> PlanResult:
    """Search deployments of ``model`` for the cheapest that meet ``slo`` (see the module docstring).

    ``prune``: stop raising a configuration's batch once it misses an SLO (TPOT and TTFT grow with the batch
    in the roofline model); ``progress(done, total)`` is called after every predicted point.
    """
    from capsim.engine.predict import predict
    from capsim.engine.resolve import resolve_model

    _check_choice(basis, BASES, "--basis")
    bench = check_benchmark(benchmark)
    if budget_usd is not None and basis == "rented":
        raise ScenarioError("--budget caps the purchase cost; it does not apply with --basis rented")
    for label, value in (
        ("--budget", budget_usd),
        ("--tokens-per-day", tokens_per_day),
        ("--max-batch", max_batch),
    ):
        # inf would reach int(replicas) and JSON (which has no Infinity); nan compares false
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise ScenarioError(f"{label} must be positive and finite, got {value}")
    inputs = inputs or CostInputs()
    check_price_ids(inputs, hardware_db)
    # with deployment options and no --hardware, only the options are searched (over the batch)
    hw_ids = list(hardware) if hardware else ([] if deployments else candidate_hardware(hardware_db))
    check_node_ids(hw_ids + [d.scenario.hardware for d in deployments], hardware_db)
    base = Scenario(
        model=model, prompt_len=prompt_len, gen_len=gen_len, kv_dtype=kv_dtype, host_memory_gb=host_memory_gb
    )
    for dtype in weight_dtypes:
        if dtype != "native":
            replace(base, weight_dtype=dtype).validate()
    base.validate()
    spec = resolve_model(model)
    configs, skipped = _configs(hw_ids, weight_dtypes, replace(base, model=spec), hardware_db, device_counts)
    option_configs, option_skipped = _option_configs(deployments, spec, hardware_db)
    configs += option_configs
    skipped += option_skipped

    total = sum(len(_batches(c.max_batch, max_batch)) for c in configs)
    done = 0
    rates: dict[tuple[str, int, str], DeploymentRates] = {}
    raw: list[tuple[_Config, int, Prediction, bool]] = []
    for cfg in configs:
        batches = _batches(cfg.max_batch, max_batch)
        for i, batch in enumerate(batches):
            sc = (
                replace(cfg.scenario, batch=batch)
                if cfg.scenario is not None
                else replace(
                    base,
                    model=spec,
                    hardware=cfg.hardware,
                    gpus=cfg.devices,
                    batch=batch,
                    weight_dtype=None if cfg.weight_dtype == "native" else cfg.weight_dtype,
                )
            )
            try:
                pred = predict(sc, hardware_db=hardware_db)
            except (DoesNotFitError, MissingValueError, ScenarioError) as exc:
                # the database lacks something this device needs (e.g. no bf16 peak): skip the configuration
                skipped.append((cfg.label, str(exc)))
                done += len(batches) - i
                if progress:
                    progress(done, total)
                break
            done += 1
            if progress:
                progress(done, total)
            ok = slo.met_by(pred.tpot_s, pred.ttft_s)
            raw.append((cfg, batch, pred, ok))
            if not ok and prune:
                done += len(batches) - i - 1
                if progress:
                    progress(done, total)
                break
        key = (cfg.hardware, cfg.devices_used, cfg.option)
        if key not in rates:
            memory_gb = cfg.scenario.host_memory_gb if cfg.scenario is not None else host_memory_gb
            rates[key] = deployment_rates(
                cfg.hardware, cfg.devices_used, hardware_db, inputs, host_memory_gb=memory_gb
            )

    points = _price_points(raw, rates, gen_len, inputs, basis, tokens_per_day, budget_usd)
    feasible = [p for p in points if p.feasible]
    priced = [p for p in feasible if p.usd_per_mtok is not None]
    unpriced = sorted(
        {
            f"{p.option + ': ' if p.option else ''}{p.hardware} x{p.devices} {p.weight_dtype}"
            for p in feasible
            if p.usd_per_mtok is None
        }
    )
    return PlanResult(
        model=spec.id,
        slo=slo,
        basis=basis,
        best=tuple(cheapest_per_config(priced)[:top]),
        pareto=tuple(pareto_front(priced)),
        points=tuple(points),
        skipped=tuple(skipped),
        unpriced=tuple(unpriced),
        tokens_per_day=tokens_per_day,
        budget_usd=budget_usd,
        inputs=inputs,
        accuracy=_plan_accuracy(spec, bench, weight_dtypes if hw_ids else (), deployments),
    )


def _plan_accuracy(
    spec: Any, bench: str, weight_dtypes: Sequence[str], deployments: Sequence[DeploymentOption]
) -> dict[str, AccuracyValue]:
    """Accuracy per searched precision and per option, all read from one published evaluation where one
    covers every quantised choice (so the scores are comparable)."""
    from capsim.economics.options import is_quantised
    from capsim.models.accuracy import comparable_variant

    native = native_weight_dtype(spec)
    wanted: list[tuple[str, str | None]] = [
        (d, None) for d in weight_dtypes if d != "native" and is_quantised(Scenario(weight_dtype=d), native)
    ]
    wanted += [
        (str(d.scenario.weight_dtype), d.quant_method)
        for d in deployments
        if d.scenario.weight_dtype and is_quantised(d.scenario, native)
    ]
    variant = comparable_variant(load_accuracy_db(), spec.id, bench, sorted(set(wanted), key=str))
    out = {d: accuracy_for(spec.id, bench, d, variant=variant) for d in weight_dtypes}
    for d in deployments:
        out[d.name] = accuracy_for(
            spec.id, bench, d.scenario.weight_dtype, method=d.quant_method, variant=variant
        )
    return out


def _price_points(
    raw: Sequence[tuple[_Config, int, Prediction, bool]],
    rates: dict[tuple[str, int, str], DeploymentRates],
    gen_len: int,
    inputs: CostInputs,
    basis: Basis,
    tokens_per_day: float | None,
    budget_usd: float | None,
) -> list[PlanPoint]:
    """Replicas, utilisation and all-in cost of every point, vectorised over the points."""
    if not raw:
        return []
    from capsim.economics.cost import owned_usd_per_hour
    from capsim.economics.energy import energy_report

    n = len(raw)
    # the batch actually resident may be capped by the KV cache (waves): use the wave batch
    sustained = np.array([p.batch_per_wave * gen_len / p.e2e_latency_s for _, _, p, _ in raw])
    deployment = [rates[(c.hardware, c.devices_used, c.option)] for c, _, _, _ in raw]
    purchase = np.array(
        [d.purchase.total_usd if d.purchase.accelerators_priced else np.nan for d in deployment]
    )
    # energy at each point's modelled draw (capsim.economics.energy), time-weighted over its prefill and decode
    busy_w = np.full(n, np.nan)
    idle_w = np.full(n, np.nan)
    for i, (d, (_, _, pred, _)) in enumerate(zip(deployment, raw)):
        if not d.power.accelerators_known:
            continue
        e = energy_report(
            d.power.parts,
            pred,
            idle_fraction=inputs.idle_power_fraction,
            pue=inputs.pue,
            electricity_usd_per_kwh=inputs.electricity_usd_per_kwh,
        )
        t_pre, t_dec = pred.prefill.time_s, pred.decode.time_s
        busy_w[i] = (e.prefill.watts * t_pre + e.decode.watts * t_dec) / max(t_pre + t_dec, 1e-30)
        idle_w[i] = e.idle_w
    cloud = np.array([np.nan if d.cloud_usd_per_hour is None else d.cloud_usd_per_hour for d in deployment])
    if tokens_per_day:
        capacity = sustained * SECONDS_PER_DAY
        replicas = np.ceil(tokens_per_day / capacity)
        util = tokens_per_day / (replicas * capacity)
        volume = np.full(n, float(tokens_per_day))
    else:
        replicas = np.ones(n)
        util = np.full(n, inputs.utilization)
        volume = sustained * SECONDS_PER_DAY * util
    if basis == "owned":
        # owned rate at each point's own utilisation: amortisation + energy at P(u)
        per_hour = owned_usd_per_hour(purchase, busy_w, inputs, utilization=util, idle_w=idle_w)
    else:
        per_hour = cloud
    with np.errstate(over="ignore"):
        usd_per_day = replicas * per_hour * units.HOURS_PER_DAY
        usd_per_mtok = usd_per_day / volume * TOKENS_PER_MTOK
    overflowed = usd_per_mtok[np.isinf(usd_per_mtok)]
    if overflowed.size:  # absurd cost inputs: one clear error rather than inf in the results
        finite_cost(float(overflowed[0]))
    points = []
    for i, (cfg, batch, pred, ok) in enumerate(raw):
        fleet_purchase = None if np.isnan(purchase[i]) else float(purchase[i] * replicas[i])
        lower = deployment[i].purchase.is_lower_bound
        within_budget = budget_usd is None or (fleet_purchase is not None and fleet_purchase <= budget_usd)
        cost = None if np.isnan(usd_per_mtok[i]) else float(usd_per_mtok[i])
        points.append(
            PlanPoint(
                hardware=cfg.hardware,
                devices=cfg.devices_used,
                weight_dtype=cfg.weight_dtype,
                batch=batch,
                tpot_s=float(pred.tpot_s or 0.0),
                ttft_s=pred.ttft_s,
                sustained_tokens_per_s=float(sustained[i]),
                replicas=int(replicas[i]),
                purchase_usd=fleet_purchase,
                purchase_is_lower_bound=lower,
                usd_per_mtok=cost,
                usd_per_day=None if cost is None else float(usd_per_day[i]),
                utilization=float(util[i]),
                feasible=ok and within_budget,
                max_batch=cfg.max_batch,
                option=cfg.option,
            )
        )
    return points


def cheapest_per_config(points: Iterable[PlanPoint]) -> list[PlanPoint]:
    """The cheapest point of each (hardware, devices, dtype), ranked by cost then TPOT."""
    best: dict[tuple[str, int, str, str], PlanPoint] = {}
    for p in points:
        if p.usd_per_mtok is None:
            continue
        cur = best.get(p.config)
        if cur is None or (p.usd_per_mtok, p.tpot_s) < (cur.usd_per_mtok or math.inf, cur.tpot_s):
            best[p.config] = p
    return sorted(best.values(), key=lambda p: (p.usd_per_mtok, p.tpot_s))


def pareto_front(points: Iterable[PlanPoint]) -> list[PlanPoint]:
    """Points not dominated in (cost per Mtok, TPOT), both lower-is-better, sorted by cost."""
    priced = sorted(
        ((p.usd_per_mtok, p) for p in points if p.usd_per_mtok is not None),
        key=lambda cp: (cp[0], cp[1].tpot_s),
    )
    mask = pareto_mask([cost for cost, _ in priced], [p.tpot_s for _, p in priced])
    return [p for (_, p), keep in zip(priced, mask) if keep]
