"""``predict``: scenario -> resolve -> memory plan, prefill and decode costs -> mode adjustments -> metrics.

This module wires the stages together; the arithmetic lives in :mod:`capsim.engine.passes`,
:mod:`capsim.engine.roofline`, :mod:`capsim.engine.memory` and :mod:`capsim.engine.metrics`.
"""

from __future__ import annotations

import math
from dataclasses import replace

from capsim.engine.memory import MemoryPlan
from capsim.engine.metrics import Prediction, build_prediction
from capsim.engine.passes import decode_times, prefill_times
from capsim.engine.placement import (
    DEVICE,
)
from capsim.engine.reports import DeploymentReport
from capsim.engine.resolve import resolve
from capsim.engine.resolved import ResolvedScenario
from capsim.engine.roofline import (
    PassTimes,
)
from capsim.engine.scenario import Scenario
from capsim.errors import ScenarioError
from capsim.hardware.db import HardwareDB


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
    prefill = prefill_times(rs, wave_batch)
    decode = decode_times(rs, math.ceil(wave_batch / micro))
    if rs.layout.ep > 1 or rs.layout.attention_dp > 1:
        from capsim.engine.parallel import apply_expert_parallel

        apply_expert_parallel(rs, prefill, "prefill")
    ep_info = decode.extra.get("ep", {})
    deployment: DeploymentReport = {**_apply_mode(rs, memory, wave_batch, prefill, decode), **ep_info}
    if rs.speculation is not None:
        deployment["speculative"] = decode.extra.get("speculative", rs.speculation.to_dict())
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
        per_step = rs.speculation.tokens_per_step
        prediction = replace(
            prediction,
            tpot_s=prediction.tpot_s / per_step,
            decode_tokens_per_s=(prediction.decode_tokens_per_s or 0.0) * per_step,
        )
    return prediction


def _apply_mode(
    rs: ResolvedScenario, memory: MemoryPlan, batch: int, prefill: PassTimes, decode: PassTimes
) -> DeploymentReport:
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
    return float(decode_times(rs, scenario.batch).time[0])
