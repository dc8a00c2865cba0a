"""``predict``: scenario -> memory plan, prefill and decode costs -> metrics.

This module wires the stages together (hardware + model + routing + scenario -> roofline -> metrics); the
arithmetic lives in :mod:`capsim.engine.roofline`, :mod:`capsim.engine.memory` and :mod:`capsim.engine.metrics`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from capsim.engine.deployment import Deployment, cpu_device, host_memory_bytes, parse_layer_range
from capsim.engine.memory import MemoryPlan, plan_memory
from capsim.engine.metrics import Prediction, build_prediction
from capsim.engine.parallel import Layout, layout_for
from capsim.engine.placement import (
    DEVICE,
    TierMap,
    auto_tier_map,
    expert_tier_map,
    legacy_spec,
    parse_placement,
)
from capsim.engine.roofline import (
    DeviceRates,
    PassCost,
    Placement,
    _layer_tables,
    attention_dims,
    causal_pairs,
    pass_cost,
)
from capsim.engine.scenario import Scenario
from capsim.errors import DoesNotFitError, MissingValueError, ScenarioError
from capsim.hardware.db import HardwareDB, load_hardware_db
from capsim.models.precision import Precision, kv_precision
from capsim.models.spec import ModelSpec
from capsim.routing import Router, make_router
from capsim.units import GB_PER_S, TFLOPS


@dataclass(frozen=True)
class ResolvedScenario:
    """A scenario with every id resolved to database objects."""

    scenario: Scenario
    model: ModelSpec
    node: object  # capsim.hardware.db.System
    device: object  # capsim.hardware.db.Accelerator
    efficiency: object  # capsim.hardware.db.Efficiency
    placement: Placement
    rates: DeviceRates
    router: Router | None
    deployment: Deployment = Deployment()
    expert_tiers: TierMap = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int8))
    """Tier of every routed expert, (MoE layers x experts): capsim.engine.placement.DEVICE, DRAM or SSD."""
    notes: tuple[str, ...] = ()
    """What the resolution assumed or changed (implied mode, unknown capacities), shown with the output."""
    layout: Layout = Layout()
    """TP x PP x DP over nodes (capsim.engine.parallel)."""
    scale_out_bytes_s: float = 0.0
    """Per-device bytes/s on the network joining nodes (0 for one node)."""
    cpu_efficiency: object = None
    """Efficiency of the ``cpu`` class from the same database (for CPU-computed experts); None if absent."""
    speculation: object = None
    """capsim.engine.speculative.Speculation of ``--spec`` (None: plain decoding)."""
    draft: object = None
    """The draft model resolved on the same devices (``--spec draft:MODEL:K``), else None."""

    @property
    def offloaded(self) -> np.ndarray:
        """Mask over MoE layers holding any routed expert off the device."""
        return (
            (self.expert_tiers != DEVICE).any(axis=1) if self.expert_tiers.size else np.zeros(0, dtype=bool)
        )

    @property
    def device_is_dram(self) -> bool:
        """The computing device's memory is host DRAM: CPU-only execution or unified memory."""
        return self.deployment.mode == "cpu" or bool(getattr(self.device, "unified_memory", False))

    def inclusion(self) -> np.ndarray:
        """π (MoE layers x experts): the router's per-token inclusion probabilities (uniform k/E if it has none)."""
        moe = self.model.moe
        assert moe is not None  # callers check is_moe: internal invariant
        pi = getattr(self.router, "inclusion", None)
        if pi is None:
            return np.full((self.model.num_moe_layers, moe.num_experts), moe.top_k / moe.num_experts)
        return np.asarray(pi, dtype=np.float64)


def resolve_model(model: str | ModelSpec) -> ModelSpec:
    if isinstance(model, ModelSpec):
        return model
    from capsim.models.db import resolve_model as _resolve

    return _resolve(model)


def weight_precisions(
    model: ModelSpec, weight_dtype: str | None, expert_dtype: str | None = None
) -> dict[str, Precision]:
    """Precision per weight group (the rule lives in :meth:`ModelSpec.weight_dtypes`); ``expert_dtype``
    overrides the routed experts only (e.g. int4 experts next to bf16 attention, as llama.cpp/KTransformers
    quantise them)."""
    chosen = model.weight_precisions(weight_dtype)
    if expert_dtype is not None:
        chosen["routed_experts"] = model.weight_precisions(expert_dtype)["routed_experts"]
    return chosen


AUTO_DEVICE_COUNTS = (1, 2, 4, 8)
"""Tensor-parallel degrees tried when --gpus is not given for an accelerator id (common TP sizes)."""


def _mode_for(scenario: Scenario, node: object, deployment: Deployment) -> Deployment:
    """The execution mode the node allows: CPU-only nodes run ``cpu``; unified memory has no host tier."""
    accelerator = getattr(node, "accelerator", None)
    if accelerator is None and deployment.mode != "cpu":
        if deployment.mode != "gpu":
            raise ScenarioError(
                f"{scenario.hardware!r} has no GPU, so --mode {deployment.mode} cannot apply; use --mode cpu"
            )
        return replace(deployment, mode="cpu")
    if accelerator is not None and accelerator.unified_memory and deployment.mode == "cpu-experts":
        raise ScenarioError(
            f"{accelerator.id} has unified memory: CPU and GPU read the same DRAM, so --mode cpu-experts moves "
            "nothing; use --mode gpu (or --placement with ssd tiers for SSD paging)"
        )
    return deployment


def resolve_on(scenario: Scenario, db: HardwareDB, model: ModelSpec, count: int | None) -> ResolvedScenario:
    """Resolve ``scenario`` on ``count`` devices per node (None: all of a system, one accelerator)."""
    node = db.node(scenario.hardware, count)
    deployment = _mode_for(scenario, node, scenario.deployment())
    if deployment.mode == "cpu":
        if (scenario.tp or 1) * scenario.pp * scenario.dp * scenario.nodes > 1:
            raise ScenarioError("CPU-only execution runs on one node's sockets; drop --tp/--pp/--dp/--nodes")
        device = cpu_device(node, deployment)
        eff = db.efficiency_for(
            node.cpus[0][0]
        )  # the CPU entry's own [efficiency] (sustained bandwidth) merged
        layout = Layout()
    else:
        device = node.accelerator
        eff = db.efficiency_for(device)
        layout = layout_for(
            scenario.tp,
            scenario.pp,
            scenario.dp,
            scenario.ep,
            scenario.nodes,
            node.accelerator_count,
            model.num_layers,
            scenario.attention_dp,
        )
    from capsim.engine.checks import check_scenario

    check_scenario(scenario, model, layout)  # the one validation layer shared by predict, sweep, fit and plan
    tp = layout.tp
    if not {"bf16", "fp16", "fp32"} & set(device.peak_tflops_dense):
        raise MissingValueError(
            device.id,
            "peak_tflops_dense.bf16",
            "the compute time of every GEMM; the vendor publishes no GPU FLOPS",
        )
    moves_experts = deployment.mode in ("offload", "cpu-experts") or scenario.placement is not None
    if moves_experts and not model.is_moe:
        what = f"--mode {deployment.mode}" if scenario.placement is None else "--placement"
        raise ScenarioError(f"{what} moves routed experts; {model.id!r} has none")
    if scenario.expert_dtype is not None and not model.is_moe:
        raise ScenarioError(f"--expert-dtype sets the routed experts' precision; {model.id!r} has none")
    if moves_experts and layout.devices > layout.tp:
        raise ScenarioError(
            "--pp/--dp with experts off the GPU is not modelled; use one TP group with offload modes"
        )
    deployment = replace(
        deployment, expert_layers=parse_layer_range(scenario.expert_layers, model.num_moe_layers)
    )
    if scenario.ep > 1 or scenario.redundant_experts or layout.attention_dp > 1:
        from capsim.engine.parallel import check_expert_layout

        what = "--ep" if scenario.ep > 1 or scenario.redundant_experts else "--attention-dp"
        if what == "--ep" and not model.is_moe:
            raise ScenarioError(f"--ep {scenario.ep} splits routed experts; {model.id!r} has none")
        if deployment.mode != "gpu" or scenario.placement not in (None, "gpu"):
            raise ScenarioError(
                f"{what} with experts off the GPU is not modelled; use one TP group with offload modes"
            )
        if model.is_moe:
            check_expert_layout(
                model.moe.num_experts,
                scenario.ep,
                layout.expert_ranks,  # type: ignore[union-attr]
                scenario.redundant_experts,
            )
    if scenario.two_batch_overlap and layout.ep == 1 and layout.attention_dp == 1:
        raise ScenarioError(
            "--two-batch-overlap hides dispatch/combine behind compute; give --ep > 1 or "
            "--attention-dp > 1 (a TP group has no all-to-all to hide)"
        )
    placement = Placement(
        tp=tp,
        weight_precision=weight_precisions(model, scenario.weight_dtype, scenario.expert_dtype),
        kv_precision=kv_precision(scenario.kv_dtype),
        attention_dp=layout.attention_dp,
        redundant_experts=scenario.redundant_experts,
    )
    rates = DeviceRates(
        peak_flops={key: v * TFLOPS for key, v in device.peak_tflops_dense.items()},
        memory_bandwidth=device.memory_bandwidth_gb_s * GB_PER_S,
        compute_fraction=eff.compute_fraction,
        # CPU execution: sustained streaming (memory_bw_fraction) x what CPU MoE engines' kernels reach of it
        # (fitted); an accelerator entry (a calibrated machine included) carries its own measured fractions
        memory_fraction=eff.memory_bw_fraction
        * (eff.kernel_bw_fraction if deployment.mode == "cpu" else 1.0),
        step_overhead_s=eff.step_overhead_s,
        per_layer_overhead_s=eff.per_layer_overhead_s,
        link_bandwidth=node.gpu_to_gpu_bandwidth()
        if min(layout.expert_ranks, node.accelerator_count) > 1
        else 0.0,
        allreduce_hop_latency_s=eff.allreduce_latency_s,
        allreduce_base_latency_s=eff.allreduce_base_latency_s,
        gemm_m_curve=eff.gemm_m_curve,
        gemm_overlap=getattr(eff, "gemm_overlap_exponent", None),
    )
    scale_out = 0.0
    if layout.nodes > 1:
        from capsim.engine.parallel import scale_out_bandwidth

        scale_out, _ = scale_out_bandwidth(node, db, scenario.network)
    router = make_router(scenario.routing, model, seed=scenario.seed) if model.is_moe else None
    cpu_eff = None
    if "cpu" in db.efficiency_classes():
        cpus = getattr(node, "cpus", ())
        cpu_eff = db.efficiency_for(cpus[0][0]) if cpus else db.efficiency("cpu")
    rs = ResolvedScenario(
        scenario,
        model,
        node,
        device,
        eff,
        placement,
        rates,
        router,
        deployment,
        layout=layout,
        scale_out_bytes_s=scale_out,
        cpu_efficiency=cpu_eff,
    )
    if scenario.spec is not None:
        from capsim.engine.speculative import resolve_speculation

        rs = resolve_speculation(rs, db, count)
    return _with_expert_tiers(rs) if model.is_moe else rs


def _with_expert_tiers(rs: ResolvedScenario) -> ResolvedScenario:
    """Place every routed expert (``--placement``, or the legacy --expert-layers/--expert-tier of the offload
    modes) and settle the mode the placement implies."""
    sc, dep, model = rs.scenario, rs.deployment, rs.model
    moe = model.moe
    assert moe is not None  # only called for MoE models
    shape = (model.num_moe_layers, moe.num_experts)
    if sc.placement is not None:
        if sc.expert_layers is not None or sc.expert_tier != "dram":
            raise ScenarioError("give either --placement or --expert-layers/--expert-tier, not both")
        spec = parse_placement(sc.placement)
        if dep.mode == "cpu" and any(c.tier == "gpu" for c in spec.clauses):
            raise ScenarioError("--mode cpu runs without a GPU: place experts on dram or ssd, not gpu")
        if spec.auto:
            return _auto_tiers(rs)
        tiers = expert_tier_map(spec, *shape, rs.inclusion(), device_is_dram=rs.device_is_dram)
        if rs.device_is_dram and dep.mode != "cpu" and any(c.tier == "dram" for c in spec.clauses):
            note = f"{rs.device.id} has unified memory: experts placed in dram are in device memory"  # type: ignore[attr-defined]
            rs = replace(rs, notes=rs.notes + (note,))
    elif dep.mode in ("offload", "cpu-experts"):
        tiers = expert_tier_map(
            legacy_spec(dep.expert_layers, dep.expert_tier),
            *shape,
            rs.inclusion(),
            device_is_dram=rs.device_is_dram,
        )
    else:
        tiers = np.full(shape, DEVICE, dtype=np.int8)
    return _settle_mode(replace(rs, expert_tiers=tiers))


def _settle_mode(rs: ResolvedScenario) -> ResolvedScenario:
    """GPU mode with experts off the device becomes offload; offload modes with none off the device, gpu."""
    off = bool((rs.expert_tiers != DEVICE).any())
    mode = rs.deployment.mode
    if off and mode == "gpu":
        note = (
            "experts placed off the GPU: --mode offload assumed (--mode cpu-experts computes them on the CPU)"
        )
        return replace(rs, deployment=replace(rs.deployment, mode="offload"), notes=rs.notes + (note,))
    if not off and mode in ("offload", "cpu-experts"):
        note = f"the placement keeps every expert on the GPU: --mode {mode} has nothing to move (gpu mode)"
        return replace(rs, deployment=replace(rs.deployment, mode="gpu"), notes=rs.notes + (note,))
    return rs


def expert_bytes(rs: ResolvedScenario) -> float:
    """Bytes of one whole routed expert at its weight precision (not split over ranks)."""
    return rs.model.expert_params * rs.placement.weight_precision["routed_experts"].bytes_per_element


def _staging_experts(rs: ResolvedScenario) -> int:
    """Cache slots offload needs beyond pinned experts: one MoE layer's activated experts at the batch."""
    moe = rs.model.moe
    assert moe is not None and rs.router is not None  # MoE only
    active = rs.router.activated_per_layer(np.array([float(rs.scenario.batch)]))
    return max(moe.top_k, math.ceil(float(np.max(active))))


def _auto_tiers(rs: ResolvedScenario) -> ResolvedScenario:
    """``--placement auto``: as many experts on the device as fit next to the rest of the model, the KV cache
    of the batch and the buffers (hottest by π first; offload keeps room for one layer's activated experts),
    then host DRAM, then the SSD."""
    from capsim.engine.memory import (
        buffer_bytes_per_device,
        kv_bytes_per_sequence,
        usable_bytes,
        weight_bytes_per_device,
    )

    model, moe, sc = rs.model, rs.model.moe, rs.scenario
    assert moe is not None
    everything = replace(
        rs, expert_tiers=np.full((model.num_moe_layers, moe.num_experts), DEVICE, dtype=np.int8)
    )
    groups = weight_bytes_per_device(everything)
    rest = sum(v for g, v in groups.items() if g != "routed_experts")
    free = (
        usable_bytes(everything)
        - rest
        - buffer_bytes_per_device(everything)
        - kv_bytes_per_sequence(everything) * sc.batch
    )
    per_device_expert = expert_bytes(rs) / rs.placement.tp
    slots = int(max(free, 0.0) // per_device_expert)
    total = model.num_moe_layers * moe.num_experts
    notes = rs.notes
    if slots >= total:
        return _settle_mode(everything)
    mode = rs.deployment.mode
    if mode == "gpu":
        mode = "offload"
        notes += (
            "--placement auto: the experts do not all fit on the GPU; --mode offload assumed "
            "(--mode cpu-experts computes them on the CPU)",
        )
    if mode in ("offload", "cpu"):
        # experts off the device are fetched into a cache that must hold one layer's activated experts
        slots = max(slots - _staging_experts(rs), 0)
    dram_slots: int | None = None
    if not rs.device_is_dram:
        try:
            dram_slots = int(host_memory_bytes(rs.node, rs.deployment) // expert_bytes(rs))  # type: ignore[arg-type]
        except MissingValueError:
            pass  # every off-GPU expert goes to DRAM; the offload report notes the unknown capacity
    has_ssd = any(str(n).startswith("ssd") for n in rs.node.graph.nodes)  # type: ignore[attr-defined]
    tiers = auto_tier_map(
        rs.inclusion(), slots, dram_slots, has_ssd=has_ssd, device_is_dram=rs.device_is_dram
    )
    dep = replace(rs.deployment, mode=mode)
    return _settle_mode(replace(rs, deployment=dep, expert_tiers=tiers, notes=notes))


def resolve(scenario: Scenario, hardware_db: HardwareDB | None = None) -> tuple[ResolvedScenario, MemoryPlan]:
    """Validate ``scenario``, look up its model, hardware, efficiency factors and router, and plan memory.

    With ``gpus`` unset on an accelerator id, the devices per node are ``tp x pp x dp / nodes`` when ``--tp``
    is given, else the fewest of :data:`AUTO_DEVICE_COUNTS` that hold the model and suit the layout (the last
    count's DoesNotFitError is raised if none does).
    """
    scenario.validate()
    db = hardware_db if hardware_db is not None else load_hardware_db()
    model = resolve_model(scenario.model)
    is_accelerator = scenario.hardware in db.ids("accelerator")
    if scenario.gpus is not None or not is_accelerator:
        rs = resolve_on(scenario, db, model, scenario.gpus)
        return rs, plan_memory(rs)
    if scenario.tp is not None:
        total = scenario.tp * scenario.pp * scenario.dp
        if total % scenario.nodes:
            raise ScenarioError(
                f"--tp {scenario.tp} x --pp {scenario.pp} x --dp {scenario.dp} = {total} devices do not split over "
                f"{scenario.nodes} nodes; give --gpus per node"
            )
        rs = resolve_on(scenario, db, model, total // scenario.nodes)
        return rs, plan_memory(rs)
    last_error: DoesNotFitError | None = None
    for count in AUTO_DEVICE_COUNTS:
        if (count * scenario.nodes) % (scenario.pp * scenario.dp):
            continue
        rs = resolve_on(scenario, db, model, count)
        try:
            return rs, plan_memory(rs)
        except DoesNotFitError as exc:
            last_error = exc
    if last_error is None:
        raise ScenarioError(
            f"no device count of {', '.join(map(str, AUTO_DEVICE_COUNTS))} per node suits --pp {scenario.pp} x "
            f"--dp {scenario.dp} on {scenario.nodes} node(s); give --gpus"
        )
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
        act = _activated_cached(rs, unique, None)
    else:
        seqs = np.broadcast_to(np.asarray(sequences, dtype=np.float64), tokens.shape)
        key = tokens * (float(seqs.max()) + 1.0) + seqs  # one sortable key per (T, s) pair, exact in float64
        _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        act = _activated_cached(rs, tokens[first], seqs[first])
    inverse = inverse.reshape(-1)
    if act.shape[0] > 1 and np.all(act == act[:1]):
        return act[:1, inverse], np.array([act.shape[0]], dtype=np.float64)
    return act[:, inverse], None


_ACTIVATED_CACHE: dict[tuple[object, ...], dict[tuple[float, float | None], np.ndarray]] = {}
"""Expected distinct experts per layer, per router (model, routing, seed) and step shape (tokens, sequences;
sequences None for decode): sweeps ask the same shapes for every group of a model, and small groups would
otherwise pay the router's fixed cost on each call."""
_ACTIVATED_CACHE_LIMIT = 200_000


def _activated_cached(rs: ResolvedScenario, tokens: np.ndarray, sequences: np.ndarray | None) -> np.ndarray:
    """``rs.router.activated_per_layer`` for distinct step shapes, from the cache where present. Only for
    synthetic routers, whose columns do not depend on what else is in the call (a sequential sum, see
    capsim.routing._base), so cached and fresh values are the same bits."""
    from capsim.routing.synthetic import SyntheticRouter

    router = rs.router
    assert router is not None  # callers check: internal invariant
    if not isinstance(router, SyntheticRouter) or tokens.shape[0] == 0:
        return (
            router.activated_per_layer(tokens)
            if sequences is None
            else router.activated_per_layer(tokens, sequences=sequences)
        )
    key = (rs.model.id, rs.model.num_moe_layers, rs.scenario.routing, rs.scenario.seed)
    cache = _ACTIVATED_CACHE.setdefault(key, {})
    seqs = None if sequences is None else np.asarray(sequences, dtype=np.float64)
    shapes: list[tuple[float, float | None]] = list(
        zip(tokens.tolist(), [None] * tokens.shape[0] if seqs is None else seqs.tolist())
    )
    missing = [i for i, shape in enumerate(shapes) if shape not in cache]
    if missing:
        if len(cache) + len(missing) > _ACTIVATED_CACHE_LIMIT:
            cache.clear()
        idx = np.array(missing)
        fresh = (
            router.activated_per_layer(tokens[idx])
            if seqs is None
            else router.activated_per_layer(tokens[idx], sequences=seqs[idx])
        )
        for j, i in enumerate(missing):
            cache[shapes[i]] = fresh[:, j].copy()
    return np.stack([cache[shape] for shape in shapes], axis=1)


def _window_rows(model: ModelSpec) -> tuple[np.ndarray, np.ndarray]:
    """Distinct attention windows (inf = full) and how many layers have each: per-layer arrays fold to these."""
    _, windows = _layer_tables(model)
    unique, counts = np.unique(windows, return_counts=True)
    return unique, counts.astype(np.float64)


def prefill_passes(
    rs: ResolvedScenario,
    batch: np.ndarray,
    prompt_len: np.ndarray,
    chunk_tokens: np.ndarray,
    lm_sequences: np.ndarray,
) -> PassCost:
    """Cost of prefill chunks, one entry per chunk; each chunk belongs to a prefill of ``batch`` prompts of
    ``prompt_len`` tokens and carries ``chunk_tokens`` of its B·P tokens (arrays broadcast together).

    Weights (and, for MoE, the experts the chunk activates) are read once per chunk; attention FLOPs are the
    exact causal total, shared across chunks in proportion to their tokens; each chunk reads its own KV once.
    ``lm_sequences`` sequences emit their first token in the chunk (the last chunk: all B).
    Under attention data parallelism (N ranks) the arguments are one attention rank's: the N ranks prefill
    their own chunks in lock-step, so the MoE layers see N x the chunk's tokens.
    """
    model = rs.model
    batch, prompt_len, tokens, lm = (
        np.asarray(a, dtype=np.float64)
        for a in np.broadcast_arrays(batch, prompt_len, chunk_tokens, lm_sequences)
    )
    share = tokens / (batch * prompt_len)
    windows, counts = _window_rows(model)
    pairs = batch[None, :] * causal_pairs(prompt_len[None, :], windows[:, None]) * share[None, :]
    kv_read = np.broadcast_to(tokens, (windows.shape[0], tokens.shape[0]))
    sequences = np.maximum(1.0, share * batch)
    adp = rs.placement.attention_dp
    expert_tokens = tokens * adp if adp > 1 else None
    activated, moe_weights = _activated(rs, tokens * adp, sequences * adp)
    return pass_cost(
        model,
        rs.placement,
        rs.rates,
        phase="prefill",
        tokens=tokens,
        sequences=sequences,
        context=prompt_len,
        pairs_per_layer=pairs,
        kv_read_tokens_per_layer=kv_read,
        activated=activated,
        lm_head_sequences=lm,
        layer_weights=counts,
        moe_layer_weights=moe_weights,
        expert_tokens=expert_tokens,
    )


def decode_passes(
    rs: ResolvedScenario, batch: np.ndarray, context: np.ndarray, tokens_per_sequence: int = 1
) -> PassCost:
    """Cost of decode steps, one entry per step: ``batch`` sequences each adding one token that attends to
    ``context`` tokens (window-capped per layer); arrays broadcast together. Under attention data parallelism
    (N ranks) the busiest rank decodes ceil(batch / N) sequences and the MoE layers see all ``batch`` tokens.
    A speculative verify step has ``tokens_per_sequence`` = K + 1 query tokens per sequence: they attend to the
    same cached context (its KV read once) and all get logits."""
    model = rs.model
    batch_all, context = (np.asarray(a, dtype=np.float64) for a in np.broadcast_arrays(batch, context))
    adp = rs.placement.attention_dp
    q = float(tokens_per_sequence)
    sequences = np.ceil(batch_all / adp) if adp > 1 else batch_all
    tokens = sequences * q if q != 1.0 else sequences
    windows, counts = _window_rows(model)
    c_eff = np.minimum(context[None, :], windows[:, None])  # (distinct windows, steps)
    activated, moe_weights = _activated(rs, batch_all * q if q != 1.0 else batch_all)
    reads = sequences[None, :] * c_eff
    return pass_cost(
        model,
        rs.placement,
        rs.rates,
        phase="decode",
        tokens=tokens,
        sequences=sequences,
        context=context,
        pairs_per_layer=reads * q if q != 1.0 else reads,
        kv_read_tokens_per_layer=reads,
        activated=activated,
        lm_head_sequences=tokens,
        layer_weights=counts,
        moe_layer_weights=moe_weights,
        expert_tokens=batch_all * q if adp > 1 else None,
    )


def attention_window_rows(model: ModelSpec) -> tuple[np.ndarray, np.ndarray]:
    """(distinct attention windows, inf = full attention; how many layers have each): the rows of the
    per-window arrays :func:`mixed_passes` takes."""
    return _window_rows(model)


def mixed_passes(
    rs: ResolvedScenario,
    tokens: np.ndarray,
    sequences: np.ndarray,
    lm_sequences: np.ndarray,
    decode_pairs: np.ndarray,
    prefill_pairs: np.ndarray,
    kv_read: np.ndarray,
) -> PassCost:
    """Cost of continuous-batching steps, one entry per step: each step is ONE forward pass over ``tokens``
    tokens (decode tokens plus prefill-chunk tokens) from ``sequences`` sequences, so weights are read once
    and the activated experts are counted over all the step's tokens. ``lm_sequences`` sequences emit a
    token. ``decode_pairs``, ``prefill_pairs`` and ``kv_read`` (shape (distinct windows of
    :func:`attention_window_rows`, steps)) are the query-key pairs scored by decode tokens and by prefill
    chunks and the KV tokens read, per layer of each window: a decode sequence at context c adds min(c, w)
    to its pairs and reads; a prefill chunk covering prompt positions [s, e) adds causal_pairs(e, w) −
    causal_pairs(s, w) pairs and reads (e − s) + min(s, w) tokens. The two kinds of pairs differ only for
    MLA, whose decode scores in the absorbed latent space (roofline.attention_dims): decode pairs are
    converted to prefill-equivalent pairs by the ratio of the FLOPs per pair, exact since FLOPs are linear
    in pairs.

    A step of decode sequences only is exactly :func:`decode_passes`; one chunk holding whole prompts is
    exactly :func:`prefill_passes` (tests/test_serve_engine.py checks both)."""
    tokens, sequences, lm = (
        np.asarray(a, dtype=np.float64) for a in np.broadcast_arrays(tokens, sequences, lm_sequences)
    )
    _, counts = _window_rows(rs.model)
    shape = (counts.shape[0], tokens.shape[0])
    d_qk, d_v = attention_dims(rs.model, "decode")
    p_qk, p_v = attention_dims(rs.model, "prefill")
    pairs = np.broadcast_to(np.asarray(prefill_pairs, dtype=np.float64), shape) + np.broadcast_to(
        np.asarray(decode_pairs, dtype=np.float64), shape
    ) * ((d_qk + d_v) / (p_qk + p_v))
    kv_read = np.broadcast_to(np.asarray(kv_read, dtype=np.float64), shape)
    activated, moe_weights = _activated(rs, tokens, sequences)
    return pass_cost(
        rs.model,
        rs.placement,
        rs.rates,
        phase="prefill",
        tokens=tokens,
        sequences=sequences,
        context=tokens,
        pairs_per_layer=pairs,
        kv_read_tokens_per_layer=kv_read,
        activated=activated,
        lm_head_sequences=lm,
        layer_weights=counts,
        moe_layer_weights=moe_weights,
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
    batch = math.ceil(batch / rs.placement.attention_dp)  # the busiest attention rank's prompts
    tokens = prefill_chunks(batch * sc.prompt_len, sc.prefill_chunk_tokens)
    lm = np.zeros(tokens.shape[0])
    lm[-1] = batch
    return prefill_passes(rs, np.float64(batch), np.float64(sc.prompt_len), tokens, lm)


def decode_steps(rs: ResolvedScenario, batch: np.ndarray, context: np.ndarray) -> PassCost:
    """Decode steps as predict charges them, one entry per step: the target's pass (a verify pass of K + 1
    tokens per sequence under ``--spec``), the MoE layers' communication and load balance of EP/attention-DP
    layouts (capsim.engine.parallel), and the draft passes (capsim.engine.speculative). What the layout and the drafts
    decided is left in ``cost.extra`` ("ep", "speculative")."""
    spec = rs.speculation
    per_sequence = spec.draft_tokens + 1 if spec is not None else 1  # type: ignore[attr-defined]
    tbo = rs.scenario.two_batch_overlap
    micro = np.ceil(np.asarray(batch, dtype=np.float64) / 2.0) if tbo else batch
    cost = decode_passes(rs, micro, context, per_sequence)
    if rs.layout.ep > 1 or rs.layout.attention_dp > 1:
        from capsim.engine.parallel import apply_expert_parallel

        cost.extra["ep"] = apply_expert_parallel(rs, cost, "decode")  # type: ignore[assignment]
    if tbo and cost.time.size:
        from capsim.engine.parallel import two_batch_overlap

        info = cost.extra.get("ep", {})
        cost = two_batch_overlap(rs, cost)
        cost.extra["ep"] = {
            **info,
            "two_batch_overlap": True,  # type: ignore[dict-item]
            "all_to_all_exposed_s_per_pass": float(cost.time_by_op["all_to_all"].mean()),
        }
    if spec is not None:
        from capsim.engine.speculative import add_draft_passes

        cost.extra["speculative"] = add_draft_passes(rs, cost, batch, context)  # type: ignore[assignment]
    return cost


def decode_cost(rs: ResolvedScenario, batch: int) -> PassCost:
    """The gen_len − 1 decode steps after prefill; step j's new token attends to prompt_len + j tokens."""
    sc = rs.scenario
    spec = rs.speculation
    if spec is not None:
        # verify steps: each yields E tokens per sequence on average (capsim.engine.speculative)
        per_step = spec.tokens_per_step  # type: ignore[attr-defined]
        steps = math.ceil(max(sc.gen_len - 1, 0) / per_step)
        context = sc.prompt_len + per_step * np.arange(1, steps + 1, dtype=np.float64)
    else:
        steps = max(sc.gen_len - 1, 0)
        context = sc.prompt_len + np.arange(1, steps + 1, dtype=np.float64)
    return decode_steps(rs, np.float64(batch), context)


def predict(scenario: Scenario, *, hardware_db: HardwareDB | None = None) -> Prediction:
    """Predict TTFT, TPOT, throughput, MBU/MFU, S-MBU/S-MFU and memory for ``scenario``.

    With ``dp`` replicas each serves ceil(batch / dp) sequences (the numbers are one replica's; throughput
    counts all). With ``pp`` stages a replica's batch runs as min(batch, pp) micro-batches
    (:mod:`capsim.engine.parallel`)."""
    replicas = scenario.dp
    replica = replace(scenario, batch=math.ceil(scenario.batch / replicas)) if replicas > 1 else scenario
    rs, memory = resolve(replica, hardware_db)
    wave_batch = min(replica.batch, memory.max_batch)
    micro = min(wave_batch, rs.layout.pp)
    prefill = prefill_cost(rs, wave_batch)
    decode = decode_cost(rs, math.ceil(wave_batch / micro))
    if rs.layout.ep > 1 or rs.layout.attention_dp > 1:
        from capsim.engine.parallel import apply_expert_parallel

        apply_expert_parallel(rs, prefill, "prefill")
    ep_info = decode.extra.get("ep", {})
    deployment = {**_apply_mode(rs, memory, wave_batch, prefill, decode), **ep_info}  # type: ignore[dict-item]
    if rs.speculation is not None:
        deployment["speculative"] = decode.extra.get("speculative", rs.speculation.to_dict())  # type: ignore[attr-defined]
    if rs.layout.pp > 1:
        from capsim.engine.parallel import apply_pipeline_decode, apply_pipeline_prefill

        apply_pipeline_decode(rs, decode, micro)
        apply_pipeline_prefill(rs, prefill)
        deployment["micro_batches"] = micro
    if rs.layout.devices > 1:
        deployment["layout"] = rs.layout.to_dict()
    if rs.notes:
        deployment["note"] = "; ".join(rs.notes + ((deployment["note"],) if "note" in deployment else ()))
    prediction = build_prediction(
        rs, memory, wave_batch, prefill, decode, deployment, replicas=replicas, total_batch=scenario.batch
    )
    if rs.speculation is not None and prediction.tpot_s:
        # a verify step yields E tokens per sequence: TPOT = step time / E (capsim.engine.speculative)
        per_step = rs.speculation.tokens_per_step  # type: ignore[attr-defined]
        prediction = replace(
            prediction,
            tpot_s=prediction.tpot_s / per_step,
            decode_tokens_per_s=(prediction.decode_tokens_per_s or 0.0) * per_step,
        )
    return prediction


def _apply_mode(
    rs: ResolvedScenario, memory: MemoryPlan, batch: int, prefill: PassCost, decode: PassCost
) -> dict:
    """Adjust the device-resident pass costs for the mode: expert fetches (offload, or SSD paging of a DRAM
    device) or CPU-computed experts. Returns what the mode decided, for the output."""
    mode = rs.deployment.mode
    off_device = bool(rs.expert_tiers.size and (rs.expert_tiers != DEVICE).any())
    if mode == "offload" or (mode in ("cpu", "gpu") and off_device):
        from capsim.engine.offload import apply_offload

        return apply_offload(rs, memory, batch, prefill, decode)
    if mode == "cpu-experts":
        from capsim.engine.offload import apply_cpu_experts

        return apply_cpu_experts(rs, batch, prefill, decode)
    if mode == "cpu" and rs.deployment.numa == "tp":
        from capsim.engine.offload import apply_socket_tp

        return apply_socket_tp(rs, prefill, decode)
    return {"mode": mode}


def decode_step_time(scenario: Scenario, context: int, *, hardware_db: HardwareDB | None = None) -> float:
    """Seconds for one decode step of the scenario's batch at ``context`` tokens (all layers, lm_head,
    all-reduces and overheads). Used by validation against measured steps."""
    from dataclasses import replace

    if context < 2:
        raise ScenarioError(f"context must be >= 2 tokens for a decode step, got {context}")
    rs, _ = resolve(replace(scenario, prompt_len=context - 1, gen_len=2), hardware_db)
    return float(decode_cost(rs, scenario.batch).time[0])
