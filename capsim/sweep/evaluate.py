"""Evaluate rows of a sweep grid with the engine's own pass builders, vectorised over configurations.

Each group (model, hardware, gpus, dtypes) is resolved once; its numeric points (batch, prompt, generated
length) are evaluated together in a handful of numpy calls through :func:`capsim.engine.prefill_passes` and
:func:`capsim.engine.decode_passes`, i.e. the same formulas and the same roofline assembly as ``predict``:

- memory: :func:`capsim.memory.max_batch_that_fits`; a batch larger than the KV cache holds runs in waves;
- TTFT: the (n−1) identical full prefill chunks are costed once and multiplied, plus the last chunk (which
  carries the lm_head) — exactly predict's sum;
- TPOT: the mean over the G−1 decode steps; every step is evaluated when G−1 ≤ ``decode_samples`` (then it
  equals predict's TPOT), otherwise ``decode_samples`` evenly spaced steps (step time is piecewise linear
  in the context, so the sample mean differs from the full mean by far less than the model's own error).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..engine import decode_passes, prefill_passes, resolve_model, resolve_on
from ..errors import CapsimError
from ..hardware import HardwareDB
from ..memory import max_batch_that_fits, weight_bytes_per_device
from ..metrics import RESOURCES
from ..scenario import Scenario
from ..units import GB
from .grid import Grid

COLUMNS: tuple[str, ...] = (
    "model", "hardware", "gpus", "weight_dtype", "kv_dtype", "batch", "prompt_len", "gen_len",
    "feasible", "max_batch", "waves", "batch_per_wave", "ttft_s", "tpot_s", "e2e_latency_s",
    "decode_tokens_per_s", "prefill_tokens_per_s", "s_mbu", "mbu", "s_mfu", "mfu", "bottleneck",
    "weights_gb", "memory_needed_gb", "usable_gb",
)


@dataclass
class Group:
    """A resolved group, or the reason it cannot run at all."""

    key: tuple[str, str, int, str, str]
    resolved: Any | None
    error: str | None


def resolve_group(grid: Grid, key: tuple[str, str, int, str, str], db: HardwareDB) -> Group:
    """Resolve one group. Unknown ids propagate (the whole sweep is wrong); a layout that is impossible for
    this hardware (e.g. more GPUs than the node has) marks the group's rows infeasible with the reason."""
    model_id, hardware, gpus, wdt, kvdt = key
    scenario = Scenario(
        model=model_id, hardware=hardware, gpus=gpus or None, weight_dtype=None if wdt == "native" else wdt,
        kv_dtype=kvdt, routing=grid.routing, prefill_chunk_tokens=grid.prefill_chunk_tokens,
    )
    scenario.validate()
    model = resolve_model(model_id)
    try:
        return Group(key, resolve_on(scenario, db, model, gpus or None), None)
    except (CapsimError,) as exc:
        if exc.__class__.__name__.startswith("Unknown"):
            raise
        return Group(key, None, str(exc))


def _empty(n: int) -> dict[str, np.ndarray]:
    cols: dict[str, np.ndarray] = {}
    for name in COLUMNS:
        if name in ("model", "hardware", "weight_dtype", "kv_dtype", "bottleneck"):
            cols[name] = np.full(n, "", dtype=object)
        elif name == "feasible":
            cols[name] = np.zeros(n, dtype=bool)
        elif name in ("gpus", "batch", "prompt_len", "gen_len", "max_batch", "waves", "batch_per_wave"):
            cols[name] = np.zeros(n, dtype=np.int64)
        else:
            cols[name] = np.full(n, np.nan)
    return cols


def evaluate_segment(grid: Grid, group: Group, start: int, stop: int) -> dict[str, np.ndarray]:
    """Columns for numeric points ``start:stop`` of ``group``."""
    batch, prompt, gen = grid.numeric_points(start, stop)
    n = batch.shape[0]
    cols = _empty(n)
    model_id, hardware, gpus, wdt, kvdt = group.key
    cols["model"][:] = model_id
    cols["hardware"][:] = hardware
    cols["weight_dtype"][:] = wdt
    cols["kv_dtype"][:] = kvdt
    cols["batch"][:] = batch
    cols["prompt_len"][:] = prompt
    cols["gen_len"][:] = gen
    rs = group.resolved
    if rs is None:
        cols["bottleneck"][:] = "does not run: " + (group.error or "")
        return cols
    tp = rs.placement.tp
    cols["gpus"][:] = tp
    cols["weights_gb"][:] = sum(weight_bytes_per_device(rs).values()) / GB
    from ..memory import usable_bytes

    cols["usable_gb"][:] = usable_bytes(rs) / GB
    max_b, needed = max_batch_that_fits(rs, batch, prompt, gen)
    feasible = max_b >= 1
    cols["feasible"][:] = feasible
    cols["max_batch"][:] = max_b
    cols["memory_needed_gb"][:] = needed / GB
    idx = np.nonzero(feasible)[0]
    if idx.size == 0:
        cols["bottleneck"][:] = "does not fit"
        return cols
    cols["bottleneck"][~feasible] = "does not fit"
    b, p, g, mb = batch[idx], prompt[idx], gen[idx], max_b[idx]
    wave_b = np.minimum(b, mb)
    cols["waves"][idx] = -(-b // mb)
    cols["batch_per_wave"][idx] = wave_b

    ttft = _ttft(grid, rs, wave_b, p)
    tpot, decode_metrics = _decode(grid, rs, wave_b, p, g)
    steps = g - 1
    cols["ttft_s"][idx] = ttft
    cols["tpot_s"][idx] = tpot
    cols["e2e_latency_s"][idx] = ttft + np.where(steps > 0, steps * np.nan_to_num(tpot), 0.0)
    cols["decode_tokens_per_s"][idx] = wave_b / tpot
    cols["prefill_tokens_per_s"][idx] = wave_b * p / ttft
    for name, values in decode_metrics.items():
        cols[name][idx] = values
    return cols


def _ttft(grid: Grid, rs: Any, wave_b: np.ndarray, prompt: np.ndarray) -> np.ndarray:
    chunk = grid.prefill_chunk_tokens
    total = wave_b * prompt
    n_chunks = -(-total // chunk)
    last = total - chunk * (n_chunks - 1)
    n = wave_b.shape[0]
    # Entry i: a full chunk without lm_head; entry n + i: the last chunk, which emits the first tokens.
    costs = prefill_passes(
        rs,
        np.concatenate([wave_b, wave_b]).astype(np.float64),
        np.concatenate([prompt, prompt]).astype(np.float64),
        np.concatenate([np.full(n, float(chunk)), last.astype(np.float64)]),
        np.concatenate([np.zeros(n), wave_b.astype(np.float64)]),
    )
    return (n_chunks - 1) * costs.time[:n] + costs.time[n:]


def decode_sample_steps(gen_len: np.ndarray, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """(step indices (n, samples), weights (n, samples)): every step 1..G−1 when G−1 ≤ samples (padding
    carries weight 0), else ``samples`` evenly spaced steps of equal weight."""
    steps = (gen_len - 1).astype(np.float64)
    k = np.arange(samples, dtype=np.float64)
    exact = steps[:, None] <= samples
    every = np.minimum(k[None, :] + 1.0, np.maximum(steps[:, None], 1.0))
    spaced = np.rint(1.0 + (steps[:, None] - 1.0) * k[None, :] / (samples - 1))
    positions = np.where(exact, every, spaced)
    weights = np.where(exact, (k[None, :] < steps[:, None]).astype(np.float64), 1.0)
    return positions, weights


def _decode(
    grid: Grid, rs: Any, wave_b: np.ndarray, prompt: np.ndarray, gen: np.ndarray
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    n, s = wave_b.shape[0], grid.decode_samples
    positions, weights = decode_sample_steps(gen, s)
    context = prompt[:, None] + positions
    cost = decode_passes(rs, np.repeat(wave_b.astype(np.float64), s), context.reshape(-1))
    shape = (n, s)
    w = weights
    wsum = w.sum(axis=1)
    time = (cost.time.reshape(shape) * w).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(wsum > 0, time / np.where(wsum > 0, wsum, 1.0), np.nan)
        devices = rs.placement.tp
        bw = devices * rs.rates.memory_bandwidth * time
        fl = devices * cost.metric_peak_flops * time
        kv = (cost.kv_read_bytes.reshape(shape) * w).sum(axis=1)

        def wsum_of(a: np.ndarray) -> np.ndarray:
            return (np.broadcast_to(a, (n * s,)).reshape(shape) * w).sum(axis=1)

        metrics = {
            "s_mbu": (wsum_of(cost.weight_bytes_sparse) + kv) / bw,
            "mbu": (wsum_of(cost.weight_bytes_dense) + kv) / bw,
            "s_mfu": wsum_of(cost.flops_sparse) / fl,
            "mfu": wsum_of(cost.flops_dense) / fl,
        }
    by_resource = np.stack([wsum_of(cost.time_by_resource[r]) for r in RESOURCES])
    names = np.array(RESOURCES, dtype=object)
    metrics["bottleneck"] = np.where(wsum > 0, names[np.argmax(by_resource, axis=0)], "none")
    return tpot, metrics
