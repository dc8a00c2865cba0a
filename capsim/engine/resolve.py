"""The resolve stage: a Scenario's ids -> database objects, the automatic device count, the layout, the mode
and the expert placement (tiers), checked against the one memory authority (capsim.engine.memory)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from capsim.engine.deployment import (
    Deployment,
    cpu_device,
    host_memory_bytes,
    parse_layer_range,
    runs_in_ggml_cpu_kernels,
)
from capsim.engine.engines import engine_profile
from capsim.engine.layout import Layout, layout_for
from capsim.engine.memory import MemoryPlan, plan_memory
from capsim.engine.placement import (
    DEVICE,
    auto_tier_map,
    expert_tier_map,
    legacy_spec,
    parse_placement,
)
from capsim.engine.resolved import ResolvedScenario
from capsim.engine.roofline import (
    DeviceRates,
    Sharding,
)
from capsim.engine.scenario import Scenario
from capsim.engine.speculative import parse_spec
from capsim.errors import DoesNotFitError, MissingValueError, ScenarioError
from capsim.hardware.db import HardwareDB, load_hardware_db
from capsim.hardware.entries import System
from capsim.models.precision import Precision, kv_precision
from capsim.models.spec import ModelSpec
from capsim.routing import make_router
from capsim.units import GB_PER_S, TFLOPS


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


def engine_precisions(precisions: dict[str, Precision], compute: str) -> dict[str, Precision]:
    """``precisions`` with every block-quantized group (GGUF types, MXFP4) computing at the peak ``compute``: an
    engine whose kernels for those formats use one set of units whatever the format (llama.cpp's CUDA MMQ: 8-bit
    activations on the int8 units). Storage bits are unchanged."""
    return {
        g: replace(p, native_compute=compute) if runs_in_ggml_cpu_kernels(p.name) else p
        for g, p in precisions.items()
    }


AUTO_DEVICE_COUNTS = (1, 2, 4, 8)
"""Tensor-parallel degrees tried when --gpus is not given for an accelerator id (common TP sizes)."""


def _mode_for(scenario: Scenario, node: System, deployment: Deployment) -> Deployment:
    """The execution mode the node allows: CPU-only nodes run ``cpu``; unified memory has no host tier."""
    accelerator = node.accelerator
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
        device = cpu_device(node, deployment, ggml=runs_in_ggml_cpu_kernels(scenario.weight_dtype))
        eff = db.efficiency_for(
            node.cpus[0][0]
        )  # the CPU entry's own [efficiency] (sustained bandwidth) merged
        layout = Layout()
    else:
        accelerator = node.accelerator
        assert accelerator is not None  # _mode_for runs a node without accelerators in cpu mode
        device = accelerator
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
        from capsim.engine.layout import check_expert_layout

        what = "--ep" if scenario.ep > 1 or scenario.redundant_experts else "--attention-dp"
        if what == "--ep" and not model.is_moe:
            raise ScenarioError(f"--ep {scenario.ep} splits routed experts; {model.id!r} has none")
        if deployment.mode != "gpu" or scenario.placement not in (None, "gpu"):
            raise ScenarioError(
                f"{what} with experts off the GPU is not modelled; use one TP group with offload modes"
            )
        if model.is_moe and model.moe is not None:
            check_expert_layout(
                model.moe.num_experts,
                scenario.ep,
                layout.expert_ranks,
                scenario.redundant_experts,
            )
    if scenario.two_batch_overlap and layout.ep == 1 and layout.attention_dp == 1:
        raise ScenarioError(
            "--two-batch-overlap hides dispatch/combine behind compute; give --ep > 1 or "
            "--attention-dp > 1 (a TP group has no all-to-all to hide)"
        )
    # the engine's execution costs; a CPU running the whole model keeps the cpu class's, and a profile fitted on
    # other device classes (llama.cpp's CUDA kernels on an Apple GPU) leaves the class's values in place
    profile = engine_profile(scenario.engine) if deployment.mode != "cpu" else None
    if profile is not None and not profile.applies_to(device.device_class):
        profile = None
    precisions = weight_precisions(model, scenario.weight_dtype, scenario.expert_dtype)
    if profile is not None and profile.quantized_compute is not None:
        precisions = engine_precisions(precisions, profile.quantized_compute)
    sharding = Sharding(
        tp=tp,
        weight_precision=precisions,
        kv_precision=kv_precision(scenario.kv_dtype),
        attention_dp=layout.attention_dp,
        redundant_experts=scenario.redundant_experts,
    )
    rates = DeviceRates(
        peak_flops={key: v * TFLOPS for key, v in device.peak_tflops_dense.items()},
        memory_bandwidth=device.memory_bandwidth_gb_s * GB_PER_S,
        # a named engine's compute-bound kernels may sustain less of the peak than the class's GEMM tables say
        compute_fraction=eff.compute_fraction
        if profile is None or profile.compute_fraction is None
        else profile.compute_fraction,
        # CPU execution: sustained streaming (memory_bw_fraction) x what CPU MoE engines' kernels reach of it
        # (fitted); an accelerator entry (a calibrated machine included) carries its own measured fractions
        memory_fraction=eff.memory_bw_fraction
        * (eff.kernel_bw_fraction if deployment.mode == "cpu" else 1.0),
        step_overhead_s=eff.step_overhead_s,
        per_layer_overhead_s=eff.per_layer_overhead_s,
        kernel_latency_s=eff.kernel_latency_s
        if profile is None or profile.kernel_latency_s is None
        else profile.kernel_latency_s,
        eager_moe_host_s=profile.moe_host_s if profile is not None and profile.eager else None,
        eager_expert_host_s=(profile.expert_host_s or 0.0) if profile is not None else 0.0,
        per_sequence_s=(profile.per_sequence_s or 0.0) if profile is not None else 0.0,
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
        from capsim.engine.layout import scale_out_bandwidth

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
        sharding,
        rates,
        router,
        deployment,
        layout=layout,
        scale_out_bytes_s=scale_out,
        cpu_efficiency=cpu_eff,
        engine=profile,
    )
    if scenario.spec is not None:
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
            note = f"{rs.device.id} has unified memory: experts placed in dram are in device memory"
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
    return rs.model.expert_params * rs.sharding.weight_precision["routed_experts"].bytes_per_element


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
    per_device_expert = expert_bytes(rs) / rs.sharding.tp
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
            dram_slots = int(host_memory_bytes(rs.node, rs.deployment) // expert_bytes(rs))
        except MissingValueError:
            pass  # every off-GPU expert goes to DRAM; the offload report notes the unknown capacity
    has_ssd = any(str(n).startswith("ssd") for n in rs.node.topology)
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


def resolve_speculation(rs: ResolvedScenario, db: HardwareDB, count: int | None) -> ResolvedScenario:
    """``rs`` with its :class:`Speculation` (and, for a draft model, the draft resolved on the same devices)."""

    sc = rs.scenario
    if sc.spec is None:
        return rs
    spec = parse_spec(sc.spec, sc.acceptance)
    if rs.layout.pp > 1:
        raise ScenarioError(
            "--spec with --pp is not modelled; use speculative decoding with TP/attention-DP/EP layouts"
        )
    if rs.deployment.mode != "gpu" or sc.placement not in (None, "gpu"):
        raise ScenarioError("--spec with experts off the GPU is not modelled; use --mode gpu")
    if spec.kind == "mtp":
        if not rs.model.mtp_modules:
            raise ScenarioError(
                f"{rs.model.id!r} has no multi-token-prediction module (num_nextn_predict_layers = 0), so --spec "
                "mtp:K cannot draft; use --spec draft:MODEL:K with a draft model"
            )
        return replace(rs, speculation=spec)
    assert spec.draft_model is not None  # parse_spec names the model of every draft-model speculation
    draft_model = resolve_model(spec.draft_model)
    if draft_model.vocab_size != rs.model.vocab_size:
        raise ScenarioError(
            f"draft model {draft_model.id!r} has a vocabulary of {draft_model.vocab_size:,} tokens, "
            f"{rs.model.id!r} {rs.model.vocab_size:,}: speculative decoding needs the target's tokenizer; "
            "choose a draft model of the same family"
        )
    draft_sc = replace(
        sc,
        model=draft_model,
        spec=None,
        acceptance=None,
        ep=1,
        redundant_experts=0,
        placement=None,
        expert_dtype=None,
    )
    draft = resolve_on(draft_sc, db, draft_model, count)
    return replace(rs, speculation=spec, draft=draft)
