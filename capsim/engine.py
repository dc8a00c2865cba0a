"""``predict``: scenario -> memory plan, prefill and decode costs -> metrics.

This module wires the stages together (hardware + model + routing + scenario -> roofline -> metrics); the
arithmetic lives in :mod:`capsim.roofline`, :mod:`capsim.memory` and :mod:`capsim.metrics`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from .hardware import HardwareDB, load_hardware_db
from .deployment import Deployment, cpu_device, offloaded_layers, parse_layer_range
from .errors import DoesNotFitError, MissingValueError, ScenarioError
from .memory import MemoryPlan, plan_memory
from .metrics import Prediction, build_prediction
from .model import ModelSpec
from .precision import Precision, kv_precision, weight_precision
from .roofline import DeviceRates, PassCost, Placement, _layer_tables, causal_pairs, pass_cost
from .routing import Router, make_router
from .scenario import Scenario
from .units import GB_PER_S, TFLOPS

@dataclass(frozen=True)
class ResolvedScenario:
    """A scenario with every id resolved to database objects."""

    scenario: Scenario
    model: ModelSpec
    node: object  # capsim.hardware.System
    device: object  # capsim.hardware.Accelerator
    efficiency: object  # capsim.hardware.Efficiency
    placement: Placement
    rates: DeviceRates
    router: Router | None
    deployment: Deployment = Deployment()
    offloaded: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    """Mask over MoE layers whose routed experts are off the GPU (offload / cpu-experts modes)."""


def resolve_model(model: str | ModelSpec) -> ModelSpec:
    if isinstance(model, ModelSpec):
        return model
    from .model_db import resolve_model as _resolve

    return _resolve(model)


def weight_precisions(model: ModelSpec, weight_dtype: str | None) -> dict[str, Precision]:
    """Precision per weight group (the rule lives in :meth:`ModelSpec.weight_dtypes`)."""
    return {group: weight_precision(name) for group, name in model.weight_dtypes(weight_dtype).items()}


AUTO_DEVICE_COUNTS = (1, 2, 4, 8)
"""Tensor-parallel degrees tried when --gpus is not given for an accelerator id (common TP sizes)."""


def resolve_on(scenario: Scenario, db: HardwareDB, model: ModelSpec, count: int | None) -> ResolvedScenario:
    node = db.node(scenario.hardware, count)
    deployment = scenario.deployment()
    if node.accelerator is None and deployment.mode != "cpu":
        if deployment.mode != "gpu":
            raise ScenarioError(f"{scenario.hardware!r} has no GPU, so --mode {deployment.mode} cannot apply; use --mode cpu")
        deployment = replace(deployment, mode="cpu")
    if deployment.mode == "cpu":
        device = cpu_device(node, deployment)
        eff = db.efficiency("cpu")
        tp = 1
    else:
        device = node.accelerator
        eff = db.efficiency_for(device)
        tp = node.accelerator_count
    if not {"bf16", "fp16", "fp32"} & set(device.peak_tflops_dense):
        raise MissingValueError(
            device.id, "peak_tflops_dense.bf16", "the compute time of every GEMM; the vendor publishes no GPU FLOPS"
        )
    if deployment.mode in ("offload", "cpu-experts") and not model.is_moe:
        raise ScenarioError(f"--mode {deployment.mode} moves routed experts; {model.id!r} has none")
    deployment = replace(deployment, expert_layers=parse_layer_range(scenario.expert_layers, model.num_moe_layers))
    if scenario.ep > 1:
        from .parallel import check_layout

        if not model.is_moe:
            raise ScenarioError(f"--ep {scenario.ep} splits routed experts; {model.id!r} has none")
        check_layout(model.moe.num_experts, scenario.ep, tp)  # type: ignore[union-attr]
    placement = Placement(
        tp=tp,
        weight_precision=weight_precisions(model, scenario.weight_dtype),
        kv_precision=kv_precision(scenario.kv_dtype),
    )
    rates = DeviceRates(
        peak_flops={key: v * TFLOPS for key, v in device.peak_tflops_dense.items()},
        memory_bandwidth=device.memory_bandwidth_gb_s * GB_PER_S,
        compute_fraction=eff.compute_fraction,
        memory_fraction=eff.memory_bw_fraction,
        step_overhead_s=eff.step_overhead_s,
        per_layer_overhead_s=eff.per_layer_overhead_s,
        link_bandwidth=node.gpu_to_gpu_bandwidth() if tp > 1 else 0.0,
        allreduce_hop_latency_s=eff.allreduce_latency_s,
        allreduce_base_latency_s=eff.allreduce_base_latency_s,
        gemm_m_curve=eff.gemm_m_curve,
    )
    router = make_router(scenario.routing, model, seed=scenario.seed) if model.is_moe else None
    offloaded = offloaded_layers(deployment, model.num_moe_layers)
    return ResolvedScenario(scenario, model, node, device, eff, placement, rates, router, deployment, offloaded)


def resolve(scenario: Scenario, hardware_db: HardwareDB | None = None) -> tuple[ResolvedScenario, MemoryPlan]:
    """Validate ``scenario``, look up its model, hardware, efficiency factors and router, and plan memory.

    With ``gpus`` unset on an accelerator id, the fewest of :data:`AUTO_DEVICE_COUNTS` devices that hold the
    model is chosen (the last count's DoesNotFitError is raised if none does).
    """
    scenario.validate()
    db = hardware_db if hardware_db is not None else load_hardware_db()
    model = resolve_model(scenario.model)
    is_accelerator = scenario.hardware in db.ids("accelerator")
    if scenario.gpus is not None or not is_accelerator:
        rs = resolve_on(scenario, db, model, scenario.gpus)
        return rs, plan_memory(rs)
    last_error: DoesNotFitError | None = None
    for count in AUTO_DEVICE_COUNTS:
        rs = resolve_on(scenario, db, model, count)
        try:
            return rs, plan_memory(rs)
        except DoesNotFitError as exc:
            last_error = exc
    assert last_error is not None  # loop ran at least once: internal invariant, not user input
    raise last_error


def _activated(
    rs: ResolvedScenario, tokens: np.ndarray, sequences: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Expected distinct experts per MoE layer; ``sequences`` = runs of consecutive tokens (prefill chunks),
    None = every token from its own sequence (decode). Returns (rows, weights): MoE layers whose activation
    is identical (every layer of a homogeneous router) fold into one row with weight = their count, so grids
    evaluate one row instead of all MoE layers."""
    if rs.router is None:
        return np.zeros((0, tokens.shape[0])), None
    # grids repeat the same step shape many times: ask the router once per distinct (tokens, sequences)
    if sequences is None:
        unique, inverse = np.unique(tokens, return_inverse=True)
        act = rs.router.activated_per_layer(unique)
    else:
        seqs = np.broadcast_to(np.asarray(sequences, dtype=np.float64), tokens.shape)
        key = tokens * (float(seqs.max()) + 1.0) + seqs  # one sortable key per (T, s) pair, exact in float64
        _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        act = rs.router.activated_per_layer(tokens[first], sequences=seqs[first])
    inverse = inverse.reshape(-1)
    if act.shape[0] > 1 and np.all(act == act[:1]):
        return act[:1, inverse], np.array([act.shape[0]], dtype=np.float64)
    return act[:, inverse], None


def _window_rows(model: ModelSpec) -> tuple[np.ndarray, np.ndarray]:
    """Distinct attention windows (inf = full) and how many layers have each: per-layer arrays fold to these."""
    _, windows = _layer_tables(model)
    unique, counts = np.unique(windows, return_counts=True)
    return unique, counts.astype(np.float64)


def prefill_passes(
    rs: ResolvedScenario, batch: np.ndarray, prompt_len: np.ndarray, chunk_tokens: np.ndarray,
    lm_sequences: np.ndarray,
) -> PassCost:
    """Cost of prefill chunks, one entry per chunk; each chunk belongs to a prefill of ``batch`` prompts of
    ``prompt_len`` tokens and carries ``chunk_tokens`` of its B·P tokens (arrays broadcast together).

    Weights (and, for MoE, the experts the chunk activates) are read once per chunk; attention FLOPs are the
    exact causal total, shared across chunks in proportion to their tokens; each chunk reads its own KV once.
    ``lm_sequences`` sequences emit their first token in the chunk (the last chunk: all B).
    """
    model = rs.model
    batch, prompt_len, tokens, lm = (np.asarray(a, dtype=np.float64) for a in
                                     np.broadcast_arrays(batch, prompt_len, chunk_tokens, lm_sequences))
    share = tokens / (batch * prompt_len)
    windows, counts = _window_rows(model)
    pairs = batch[None, :] * causal_pairs(prompt_len[None, :], windows[:, None]) * share[None, :]
    kv_read = np.broadcast_to(tokens, (windows.shape[0], tokens.shape[0]))
    sequences = np.maximum(1.0, share * batch)
    activated, moe_weights = _activated(rs, tokens, sequences)
    return pass_cost(
        model, rs.placement, rs.rates, phase="prefill", tokens=tokens, sequences=sequences,
        context=prompt_len, pairs_per_layer=pairs, kv_read_tokens_per_layer=kv_read,
        activated=activated, lm_head_sequences=lm, layer_weights=counts, moe_layer_weights=moe_weights,
    )


def decode_passes(rs: ResolvedScenario, batch: np.ndarray, context: np.ndarray) -> PassCost:
    """Cost of decode steps, one entry per step: ``batch`` sequences each adding one token that attends to
    ``context`` tokens (window-capped per layer); arrays broadcast together."""
    model = rs.model
    tokens, context = (np.asarray(a, dtype=np.float64) for a in np.broadcast_arrays(batch, context))
    windows, counts = _window_rows(model)
    c_eff = np.minimum(context[None, :], windows[:, None])  # (distinct windows, steps)
    activated, moe_weights = _activated(rs, tokens)
    reads = tokens[None, :] * c_eff
    return pass_cost(
        model, rs.placement, rs.rates, phase="decode", tokens=tokens, sequences=tokens,
        context=context, pairs_per_layer=reads, kv_read_tokens_per_layer=reads,
        activated=activated, lm_head_sequences=tokens, layer_weights=counts, moe_layer_weights=moe_weights,
    )


def prefill_chunks(total_tokens: int, chunk: int) -> np.ndarray:
    """Tokens of each prefill chunk: full chunks of ``chunk`` then the remainder."""
    n_chunks = math.ceil(total_tokens / chunk)
    tokens = np.full(n_chunks, float(chunk))
    tokens[-1] = total_tokens - chunk * (n_chunks - 1)
    return tokens


def prefill_cost(rs: ResolvedScenario, batch: int) -> PassCost:
    """Prefill of ``batch`` prompts in chunks of ``prefill_chunk_tokens`` tokens (see :func:`prefill_passes`);
    the lm_head runs once per sequence, in the last chunk."""
    sc = rs.scenario
    tokens = prefill_chunks(batch * sc.prompt_len, sc.prefill_chunk_tokens)
    lm = np.zeros(tokens.shape[0])
    lm[-1] = batch
    return prefill_passes(rs, np.float64(batch), np.float64(sc.prompt_len), tokens, lm)


def decode_cost(rs: ResolvedScenario, batch: int) -> PassCost:
    """The gen_len − 1 decode steps after prefill; step j's new token attends to prompt_len + j tokens."""
    sc = rs.scenario
    steps = max(sc.gen_len - 1, 0)
    context = sc.prompt_len + np.arange(1, steps + 1, dtype=np.float64)
    return decode_passes(rs, np.float64(batch), context)


def predict(scenario: Scenario, *, hardware_db: HardwareDB | None = None) -> Prediction:
    """Predict TTFT, TPOT, throughput, MBU/MFU, S-MBU/S-MFU and memory for ``scenario``."""
    rs, memory = resolve(scenario, hardware_db)
    wave_batch = min(scenario.batch, memory.max_batch)
    prefill = prefill_cost(rs, wave_batch)
    decode = decode_cost(rs, wave_batch)
    offload = None
    if scenario.ep > 1:
        from .parallel import apply_expert_parallel

        ep_info = apply_expert_parallel(rs, decode)
        apply_expert_parallel(rs, prefill)
    else:
        ep_info = {}
    if rs.deployment.mode == "offload":
        from .offload import apply_offload

        offload = apply_offload(rs, memory, wave_batch, prefill, decode)
    elif rs.deployment.mode == "cpu-experts":
        from .offload import apply_cpu_experts

        offload = apply_cpu_experts(rs, wave_batch, prefill, decode)
    deployment = {**(offload or {"mode": rs.deployment.mode}), **ep_info}
    return build_prediction(rs, memory, wave_batch, prefill, decode, deployment)


def decode_step_time(scenario: Scenario, context: int, *, hardware_db: HardwareDB | None = None) -> float:
    """Seconds for one decode step of the scenario's batch at ``context`` tokens (all layers, lm_head,
    all-reduces and overheads). Used by validation against measured steps."""
    from dataclasses import replace

    if context < 2:
        raise ScenarioError(f"context must be >= 2 tokens for a decode step, got {context}")
    rs, _ = resolve(replace(scenario, prompt_len=context - 1, gen_len=2), hardware_db)
    return float(decode_cost(rs, scenario.batch).time[0])
