"""Evaluate rows of a sweep grid with the engine's own pass builders, vectorised over configurations.

Each group (model, hardware, gpus, dtypes) is resolved once; its numeric points (batch, prompt, generated
length) are evaluated together in a handful of numpy calls through :func:`capsim.engine.passes.prefill_passes` and
:func:`capsim.engine.passes.decode_passes`, i.e. the same formulas and the same roofline assembly as ``predict``:

- memory: :func:`capsim.engine.memory.max_batch_that_fits`; a batch larger than the KV cache holds runs in waves;
- TTFT: the (n−1) identical full prefill chunks are costed once and multiplied, plus the last chunk (which
  carries the lm_head) — predict's sum; configurations sharing (batch per wave, prompt) are costed once;
- TPOT and the decode metrics: the *exact* sums over all G−1 decode steps, from a few steps evaluated per
  batch size (:func:`capsim.sweep.decode.decode_totals`: a step's cost is piecewise affine in its context).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from capsim.engine.checks import context_window_exceeded
from capsim.engine.memory import (
    activation_bytes,
    kv_bytes_per_sequence_at,
    logit_bytes_per_sequence,
    max_batch_that_fits,
    usable_bytes,
    weight_bytes_per_device,
)
from capsim.engine.metrics import utilisation
from capsim.engine.passes import prefill_passes
from capsim.engine.resolve import resolve_model, resolve_on
from capsim.engine.scenario import Scenario
from capsim.errors import CapsimError
from capsim.hardware.db import HardwareDB
from capsim.sweep.decode import QUANTITIES, SWEEP_RESOURCES, ModeAdjust, decode_totals, step_quantities
from capsim.sweep.grid import Grid, parse_layout
from capsim.units import GB

COLUMNS: tuple[str, ...] = (
    "model",
    "hardware",
    "gpus",
    "weight_dtype",
    "kv_dtype",
    "layout",
    "batch",
    "prompt_len",
    "gen_len",
    "feasible",
    "max_batch",
    "waves",
    "batch_per_wave",
    "ttft_s",
    "tpot_s",
    "e2e_latency_s",
    "decode_tokens_per_s",
    "prefill_tokens_per_s",
    "s_mbu",
    "mbu",
    "s_mfu",
    "mfu",
    "bottleneck",
    "weights_gb",
    "memory_needed_gb",
    "usable_gb",
)


@dataclass
class Group:
    """A resolved group, or the reason it cannot run at all."""

    key: tuple[str, str, int, str, str, str]
    resolved: Any | None
    error: str | None
    adjust: ModeAdjust | None = None
    """What the group's mode changes on its passes (built once: offload's cache outcomes are memoised)."""


def resolve_group(grid: Grid, key: tuple[str, str, int, str, str, str], db: HardwareDB) -> Group:
    """Resolve one group. Unknown ids propagate (the whole sweep is wrong); a layout that is impossible for
    this hardware (e.g. more GPUs than the node has, an EP degree that does not divide the experts) marks the
    group's rows infeasible with the reason."""
    model_id, hardware, gpus, wdt, kvdt, layout = key
    scenario = Scenario(
        model=model_id,
        hardware=hardware,
        gpus=gpus or None,
        weight_dtype=None if wdt == "native" else wdt,
        kv_dtype=kvdt,
        routing=grid.routing,
        prefill_chunk_tokens=grid.prefill_chunk_tokens,
        host_memory_gb=getattr(grid, "host_memory_gb", None),
        **parse_layout(layout),
    )
    try:
        scenario.validate()
    except CapsimError as exc:
        return Group(key, None, str(exc))
    model = resolve_model(model_id)
    if gpus == 0 and hardware in db.ids("accelerator"):
        return Group(
            key,
            None,
            f"--gpus 0 means all devices of a system; {hardware} is one accelerator, so give a count",
        )
    try:
        rs = resolve_on(scenario, db, model, gpus or None)
    except CapsimError as exc:
        if exc.__class__.__name__.startswith("Unknown"):
            raise
        return Group(key, None, str(exc))
    reason = _outside_sweep_model(rs)
    if reason:
        return Group(key, None, reason)
    try:
        adjust = ModeAdjust(rs)
    except CapsimError as exc:  # e.g. host DRAM cannot hold the offloaded experts: no row runs
        return Group(key, None, str(exc))
    return Group(key, rs, None, adjust)


def _outside_sweep_model(rs: Any) -> str | None:
    """Why predict would add costs the vectorised path does not (None when it adds none): sweeps model one
    replica with every weight in device memory, with the off-GPU experts computed by the CPU
    (``mode=cpu-experts``, experts in DRAM), or fetched into an LRU expert cache (``mode=offload``, or experts
    placed off a CPU-only system's memory) whose hit rate the analytic model gives."""
    from capsim.engine.placement import DEVICE, SSD

    if rs.layout.pp > 1:
        return "pipeline parallelism is not swept; use capsim predict"
    if rs.deployment.numa == "tp":
        return "--numa tp is not swept; use capsim predict"
    if rs.scenario.placement is not None and "auto" in rs.scenario.placement:
        return "placement=auto places experts per batch and length; not swept, use capsim predict"
    mode = rs.deployment.mode
    if mode == "cpu-experts":
        if (rs.expert_tiers == SSD).any():
            return "cpu-experts with SSD-placed experts (paged per batch) is not swept; use capsim predict"
        return None
    if mode not in ("gpu", "cpu", "offload"):
        return f"--mode {mode} is not swept; use capsim predict"
    off_device = rs.expert_tiers.size and (rs.expert_tiers != DEVICE).any()
    if mode == "offload" or off_device:
        dep, tiers = rs.deployment, rs.expert_tiers
        if dep.cache_policy != "lru" or not hasattr(rs.router, "new_origin"):
            return (
                f"offload with the {dep.cache_policy} policy"
                + ("" if hasattr(rs.router, "new_origin") else " on a routing trace")
                + " is simulated per configuration; not swept (the LRU model on a synthetic router is), "
                "use capsim predict"
            )
        from capsim.engine.offload import host_tiers

        n_ssd = int(((tiers != DEVICE) & (tiers == SSD)).sum())
        try:
            page_slots = host_tiers(rs).page_cache_experts
        except CapsimError as exc:
            return str(exc)
        if not rs.device_is_dram and 0 < page_slots < n_ssd:
            return (
                "offload with a host page cache holding some but not all SSD experts is simulated; not swept, "
                "use capsim predict"
            )
    return None


STRING_COLUMNS = ("model", "hardware", "weight_dtype", "kv_dtype", "layout", "bottleneck")
INT_COLUMNS = ("gpus", "batch", "prompt_len", "gen_len", "max_batch", "waves", "batch_per_wave")
_BOTTLENECK_WIDTH = max(len(v) for v in (*SWEEP_RESOURCES, "none", "does not fit"))


def empty_columns(n: int, strings: dict[str, str]) -> dict[str, np.ndarray]:
    """Columns of ``n`` rows: ``strings`` filled in (fixed-width unicode: far cheaper than object arrays),
    integers 0, flags False, floats NaN (what a row that does not run reports)."""
    cols: dict[str, np.ndarray] = {}
    for name in COLUMNS:
        if name in STRING_COLUMNS:
            value = strings.get(name, "")  # a column nobody filled in (e.g. the default layout) is empty
            width = max(len(value), _BOTTLENECK_WIDTH) if name == "bottleneck" else len(value)
            cols[name] = np.full(n, value, dtype=f"<U{max(width, 1)}")
        elif name == "feasible":
            cols[name] = np.zeros(n, dtype=bool)
        elif name in INT_COLUMNS:
            cols[name] = np.zeros(n, dtype=np.int64)
        else:
            cols[name] = np.full(n, np.nan)
    return cols


def evaluate_segment(grid: Grid, group: Group, start: int, stop: int) -> dict[str, np.ndarray]:
    """Columns for numeric points ``start:stop`` of ``group``."""
    total_batch, prompt, gen = grid.numeric_points(start, stop)
    n = total_batch.shape[0]
    model_id, hardware, _, wdt, kvdt, layout = group.key
    rs = group.resolved
    cols = empty_columns(
        n,
        {
            "model": model_id,
            "hardware": hardware,
            "weight_dtype": wdt,
            "kv_dtype": kvdt,
            "layout": layout,
            "bottleneck": "does not fit" if rs is not None else "does not run: " + (group.error or ""),
        },
    )
    cols["batch"][:] = total_batch
    cols["prompt_len"][:] = prompt
    cols["gen_len"][:] = gen
    # the device count asked for, also on rows that do not run (0 = all of a system, resolved below)
    cols["gpus"][:] = group.key[2]
    rs = group.resolved
    if rs is None:
        return cols
    # data-parallel replicas split the batch; the rest describes one replica (predict's convention)
    replicas = rs.layout.dp
    batch = -(-total_batch // replicas) if replicas > 1 else total_batch
    adp = rs.sharding.attention_dp
    cols["gpus"][:] = rs.layout.devices
    cols["weights_gb"][:] = sum(weight_bytes_per_device(rs).values()) / GB
    cols["usable_gb"][:] = usable_bytes(rs) / GB
    max_b, _ = max_batch_that_fits(rs, batch, prompt, gen)
    # rows beyond the model's context window do not run (the check predict applies, vectorised)
    too_long = context_window_exceeded(rs.model, prompt, gen)
    if too_long.any():
        cols["bottleneck"] = cols["bottleneck"].astype(f"<U{max(cols['bottleneck'].dtype.itemsize // 4, 64)}")
        cols["bottleneck"][too_long] = (
            f"does not run: exceeds the {rs.model.max_context}-token context window"
        )
        max_b = np.where(too_long, 0, max_b)
    feasible = max_b >= 1
    cols["feasible"][:] = feasible
    cols["max_batch"][:] = max_b
    # weights + buffers + the KV cache of one wave (of one sequence where not even that fits) on the busiest
    # device: its attention rank's share of the wave, as predict's memory plan counts it
    per_seq = kv_bytes_per_sequence_at(rs, prompt + gen) + logit_bytes_per_sequence(rs)
    resident = -(-np.clip(np.minimum(batch, max_b), 1, None) // adp)
    cols["memory_needed_gb"][:] = (
        sum(weight_bytes_per_device(rs).values())
        + activation_bytes(rs, resident, prompt)
        + per_seq * resident
    ) / GB
    idx = np.nonzero(feasible)[0]
    if idx.size == 0:
        return cols
    b, p, g, mb = batch[idx], prompt[idx], gen[idx], max_b[idx]
    wave_b = np.minimum(b, mb)
    adjust = group.adjust if group.adjust is not None else ModeAdjust(rs)
    capacity = None
    if adjust.offload:
        capacity = _expert_cache(rs, wave_b, p, g)
        # predict refuses a configuration whose cache cannot hold even top-k experts (DoesNotFitError)
        runs = capacity >= rs.model.moe.top_k
        if not runs.all():
            cols["feasible"][idx[~runs]] = False
            idx, b, p, g, mb, wave_b, capacity = (a[runs] for a in (idx, b, p, g, mb, wave_b, capacity))
            if idx.size == 0:
                return cols
    cols["waves"][idx] = -(-b // mb)
    cols["batch_per_wave"][idx] = wave_b

    prefill, prefill_peak = prefill_totals(rs, wave_b, p, grid.prefill_chunk_tokens, capacity, adjust)
    ttft = prefill[0]
    tpot, decode_time, decode_metrics = _decode_columns(
        rs, wave_b, p, g, grid.decode_context_span, prefill, prefill_peak, capacity, adjust
    )
    cols["ttft_s"][idx] = ttft
    cols["tpot_s"][idx] = tpot
    cols["e2e_latency_s"][idx] = ttft + decode_time
    cols["decode_tokens_per_s"][idx] = replicas * wave_b / tpot
    cols["prefill_tokens_per_s"][idx] = replicas * wave_b * p / ttft
    for name, values in decode_metrics.items():
        cols[name][idx] = values
    return cols


def _expert_cache(rs: Any, wave_b: np.ndarray, prompt: np.ndarray, gen: np.ndarray) -> np.ndarray:
    """Experts the offload cache holds per configuration: usable memory less the weights, one wave's buffers
    and its KV cache at full length, in the order predict's memory plan subtracts them
    (:func:`capsim.engine.offload.expert_cache_capacity`). Offload runs one TP group (no attention DP)."""
    from capsim.engine.offload import expert_cache_capacity

    weights = sum(weight_bytes_per_device(rs).values())
    buffers = activation_bytes(rs, wave_b, prompt) + logit_bytes_per_sequence(rs) * wave_b
    kv_per_seq = kv_bytes_per_sequence_at(rs, prompt + gen)
    return expert_cache_capacity(rs, usable_bytes(rs) - weights - buffers - kv_per_seq * wave_b)


def ttft_of(rs: Any, batch: np.ndarray, prompt_len: np.ndarray, chunk_tokens: int) -> np.ndarray:
    """Seconds to prefill ``batch`` prompts of ``prompt_len`` tokens in chunks of ``chunk_tokens`` (arrays of
    configurations): (n_chunks − 1)·t(full chunk) + t(last chunk, with the lm_head), as predict sums them."""
    totals, _ = prefill_totals(rs, batch, prompt_len, chunk_tokens)
    return np.asarray(totals[0])


def prefill_totals(
    rs: Any,
    batch: np.ndarray,
    prompt_len: np.ndarray,
    chunk_tokens: int,
    capacity: np.ndarray | None = None,
    adjust: ModeAdjust | None = None,
) -> tuple[np.ndarray, float]:
    """The :data:`QUANTITIES` summed over each configuration's prefill chunks, a (len(QUANTITIES), n) matrix
    (row 0: TTFT), and the metric peak FLOP/s: (n_chunks − 1) × the full chunk + the last chunk (which
    carries the lm_head), as predict sums them. Runs of equal consecutive (batch, prompt_len) are costed once.
    Under attention data parallelism the busiest rank prefills ceil(batch / N) prompts, and EP/attention-DP
    layouts add the MoE layers' communication and load balance (capsim.engine.parallel), as predict does.
    ``capacity``: each configuration's expert cache under offload."""
    adjust = adjust if adjust is not None else ModeAdjust(rs)
    adp = rs.sharding.attention_dp
    if adp > 1:
        batch = -(-batch // adp)
    if capacity is None:
        first, run = _first_of_runs(batch, prompt_len)
    else:
        first, run = _first_of_runs(batch, prompt_len, capacity)
    wave_b, prompt = batch[first], prompt_len[first]
    total = wave_b * prompt
    n_chunks = -(-total // chunk_tokens)
    last = total - chunk_tokens * (n_chunks - 1)
    multi = np.nonzero(n_chunks > 1)[0]
    n, m = wave_b.shape[0], multi.shape[0]
    # Entries 0..n-1: each configuration's last chunk, which emits the first tokens; entries n..n+m-1: one full
    # chunk (no lm_head) for the configurations whose prompts need more than one chunk.
    costs = prefill_passes(
        rs,
        np.concatenate([wave_b, wave_b[multi]]).astype(np.float64),
        np.concatenate([prompt, prompt[multi]]).astype(np.float64),
        np.concatenate([last.astype(np.float64), np.full(m, float(chunk_tokens))]),
        np.concatenate([wave_b.astype(np.float64), np.zeros(m)]),
    )
    if rs.layout.ep > 1 or adp > 1:
        from capsim.engine.parallel import apply_expert_parallel

        apply_expert_parallel(rs, costs, "prefill")
    if capacity is not None:
        cap = capacity[first]
        adjust.prefill(costs, np.concatenate([cap, cap[multi]]).astype(np.float64))
    else:
        adjust.prefill(costs, None)
    per_pass = step_quantities(costs, n + m)  # (passes, quantities)
    sums = per_pass[:n].copy()
    sums[multi] += (n_chunks[multi] - 1)[:, None] * per_pass[n:]
    return np.ascontiguousarray(sums[run].T), costs.metric_peak_flops


def _first_of_runs(*keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions where a run of equal consecutive key tuples starts, run number of every position).

    Grid rows vary the generated length fastest, so equal step shapes sit next to each other: collapsing runs
    removes most repeats in O(n), without the sort a full ``np.unique`` costs."""
    n = keys[0].shape[0]
    starts = np.ones(n, dtype=bool)
    for k in keys:
        starts[1:] &= k[1:] == k[:-1]
    starts[1:] = ~starts[1:]
    return np.nonzero(starts)[0], np.cumsum(starts) - 1


def _decode_columns(
    rs: Any,
    wave_b: np.ndarray,
    prompt: np.ndarray,
    gen: np.ndarray,
    context_span: tuple[int, int],
    prefill: np.ndarray,
    prefill_peak: float,
    capacity: np.ndarray | None = None,
    adjust: ModeAdjust | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """TPOT, the whole decode time and the metrics predict reports (:func:`capsim.engine.metrics.utilisation` over
    the decode steps' exact sums; over the prefill's where a configuration generates one token and so has no
    decode step). Speculative decoding: ceil((G − 1)/E) verify steps, TPOT = step / E."""
    spec = rs.speculation
    per_step = spec.tokens_per_step if spec is not None else 1.0
    if spec is not None:
        # verify steps reach up to E − 1 < K + 1 tokens past the last plain context
        context_span = (context_span[0], context_span[1] + spec.draft_tokens + 1)
    totals, metric_peak = decode_totals(rs, wave_b, prompt, gen, context_span, per_step, capacity, adjust)
    steps = (
        np.ceil((gen - 1) / per_step).astype(np.float64) if spec is not None else (gen - 1).astype(np.float64)
    )
    time = totals[0]
    has = steps > 0
    # rows without a decode step report the prefill's metrics, as predict does (its "head" phase)
    sums = dict(zip(QUANTITIES, np.where(has[None, :], totals, prefill)))
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(has, time / np.where(has, steps, 1.0) / per_step, np.nan)
    metrics = utilisation(
        sums["time"],
        sums["weight_bytes_dense"],
        sums["weight_bytes_sparse"],
        sums["kv_read_bytes"],
        sums["flops_dense"],
        sums["flops_sparse"],
        rs.layout.devices_per_replica,
        rs.rates.memory_bandwidth,
        np.where(has, metric_peak, prefill_peak),
    )
    by_resource = np.stack([sums[f"time_{r}"] for r in SWEEP_RESOURCES])
    metrics["bottleneck"] = np.array(SWEEP_RESOURCES)[np.argmax(by_resource, axis=0)]
    return tpot, time, metrics


def cell(value: Any) -> Any:
    """A numpy scalar as the JSON value it stands for (non-finite floats: None)."""
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if np.isfinite(v) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    return value
