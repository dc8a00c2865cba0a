"""Evaluate rows of a sweep grid with the engine's own pass builders, vectorised over configurations.

Each group (model, hardware, gpus, dtypes) is resolved once; its numeric points (batch, prompt, generated
length) are evaluated together in a handful of numpy calls through :func:`capsim.engine.prefill_passes` and
:func:`capsim.engine.decode_passes`, i.e. the same formulas and the same roofline assembly as ``predict``:

- memory: :func:`capsim.memory.max_batch_that_fits`; a batch larger than the KV cache holds runs in waves;
- TTFT: the (n−1) identical full prefill chunks are costed once and multiplied, plus the last chunk (which
  carries the lm_head) — predict's sum; configurations sharing (batch per wave, prompt) are costed once;
- TPOT and the decode metrics: the *exact* sums over all G−1 decode steps (:func:`decode_totals`), from a few
  evaluated steps per configuration. A decode step's cost is piecewise affine in its context c: only the
  attention core depends on c, through min(c, window) per layer, and each roofline op charges
  max(t_compute, t_memory) of two affine functions. Between the windows' kinks and the (at most one per op)
  points where an op's binding resource flips, every summed quantity is affine in c, so its sum over the
  integer steps of such a range is count·(f(first)+f(last))/2. The kinks are found from the evaluated
  per-op compute and memory times themselves (:attr:`capsim.roofline.PassCost.op_times`), not re-derived.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..engine import decode_passes, prefill_passes, resolve_model, resolve_on
from ..errors import CapsimError
from ..hardware import HardwareDB
from ..memory import max_batch_that_fits, usable_bytes, weight_bytes_per_device
from ..metrics import RESOURCES
from ..roofline import PassCost
from ..scenario import Scenario
from ..units import GB
from .grid import Grid

COLUMNS: tuple[str, ...] = (
    "model", "hardware", "gpus", "weight_dtype", "kv_dtype", "batch", "prompt_len", "gen_len",
    "feasible", "max_batch", "waves", "batch_per_wave", "ttft_s", "tpot_s", "e2e_latency_s",
    "decode_tokens_per_s", "prefill_tokens_per_s", "s_mbu", "mbu", "s_mfu", "mfu", "bottleneck",
    "weights_gb", "memory_needed_gb", "usable_gb",
)

QUANTITIES: tuple[str, ...] = (
    "time", *(f"time_{r}" for r in RESOURCES), "weight_bytes_sparse", "weight_bytes_dense", "kv_read_bytes",
    "flops_sparse", "flops_dense",
)
"""Per-step quantities :func:`decode_totals` sums over the decode steps (seconds, bytes, FLOPs)."""


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
    cols["gpus"][:] = rs.placement.tp
    cols["weights_gb"][:] = sum(weight_bytes_per_device(rs).values()) / GB
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

    ttft = ttft_of(rs, wave_b, p, grid.prefill_chunk_tokens)
    tpot, decode_metrics = _decode_columns(rs, wave_b, p, g)
    steps = g - 1
    cols["ttft_s"][idx] = ttft
    cols["tpot_s"][idx] = tpot
    cols["e2e_latency_s"][idx] = ttft + np.where(steps > 0, steps * np.nan_to_num(tpot), 0.0)
    cols["decode_tokens_per_s"][idx] = wave_b / tpot
    cols["prefill_tokens_per_s"][idx] = wave_b * p / ttft
    for name, values in decode_metrics.items():
        cols[name][idx] = values
    return cols


def ttft_of(rs: Any, batch: np.ndarray, prompt_len: np.ndarray, chunk_tokens: int) -> np.ndarray:
    """Seconds to prefill ``batch`` prompts of ``prompt_len`` tokens in chunks of ``chunk_tokens`` (arrays of
    configurations): (n_chunks − 1)·t(full chunk) + t(last chunk, with the lm_head), as predict sums them.
    Each distinct (batch, prompt_len) is costed once."""
    key = batch.astype(np.int64) * (int(prompt_len.max()) + 1) + prompt_len.astype(np.int64)
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
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
    ttft = costs.time[:n].copy()
    ttft[multi] += (n_chunks[multi] - 1) * costs.time[n:]
    return ttft[inverse.reshape(-1)]


class _StepTable:
    """Decode-step costs at (batch, context) points, each distinct point evaluated once by
    :func:`capsim.engine.decode_passes`: the summed quantities (rows of ``values``) and, per roofline op,
    t_compute − t_memory (rows of ``margin``; ≥ 0 means the op is compute-bound, as the roofline decides)."""

    def __init__(self, rs: Any, max_context: int) -> None:
        self.rs = rs
        self.scale = np.int64(max_context + 2)
        self.keys = np.zeros(0, dtype=np.int64)
        self.values = np.zeros((len(QUANTITIES), 0))
        self.margin = np.zeros((0, 0))
        self.metric_peak_flops = 0.0

    def ensure(self, batch: np.ndarray, context: np.ndarray) -> None:
        keys = np.unique(batch * self.scale + context)
        new = keys[~np.isin(keys, self.keys, assume_unique=True)] if self.keys.size else keys
        if new.size == 0:
            return
        cost = decode_passes(self.rs, (new // self.scale).astype(np.float64), (new % self.scale).astype(np.float64))
        self.metric_peak_flops = cost.metric_peak_flops
        values = _step_quantities(cost, new.shape[0])
        margin = np.stack([tc - tm for _, tc, tm in cost.op_times]) if cost.op_times else np.zeros((0, new.size))
        keys = np.concatenate([self.keys, new])
        order = np.argsort(keys, kind="stable")
        self.keys = keys[order]
        self.values = np.concatenate([self.values, values], axis=1)[:, order]
        self.margin = (np.concatenate([self.margin, margin], axis=1) if self.margin.size else margin)[:, order]

    def index(self, batch: np.ndarray, context: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.keys, batch * self.scale + context)


def _step_quantities(cost: PassCost, n: int) -> np.ndarray:
    rows = [cost.time, *(cost.time_by_resource[r] for r in RESOURCES), cost.weight_bytes_sparse,
            cost.weight_bytes_dense, cost.kv_read_bytes, cost.flops_sparse, cost.flops_dense]
    return np.stack([np.broadcast_to(np.asarray(r, dtype=np.float64), (n,)) for r in rows])


def _finite_windows(rs: Any) -> np.ndarray:
    model = rs.model
    windows = {model.window(i) for i in range(model.num_layers)} - {None}
    return np.array(sorted(windows), dtype=np.int64)


def decode_totals(
    rs: Any, batch: np.ndarray, prompt_len: np.ndarray, gen_len: np.ndarray
) -> tuple[dict[str, np.ndarray], float]:
    """Exact sums over the gen_len − 1 decode steps of each configuration (step j attends to prompt_len + j
    tokens, as :func:`capsim.engine.decode_cost`): ``({quantity: (n,) sums}, metric peak FLOP/s)`` with the
    quantities of :data:`QUANTITIES`. Configurations with gen_len < 2 have no steps and sum to 0.

    The steps are cut into integer context ranges on which every op keeps its binding resource and every
    window min(c, w) one branch, so each quantity is affine there and its sum is count·(f(a)+f(b))/2; cuts
    come from the windows and from linear interpolation of each op's t_compute − t_memory between a range's
    ends, refined until no op flips inside any range (ranges only shrink, so this ends).
    """
    batch = np.asarray(batch, dtype=np.int64)
    lo = np.asarray(prompt_len, dtype=np.int64) + 1
    hi = np.asarray(prompt_len, dtype=np.int64) + np.asarray(gen_len, dtype=np.int64) - 1
    n = batch.shape[0]
    windows = _finite_windows(rs)
    # ranges (config, first context, last context): the window kinks cut [lo, hi] first
    bounds_lo = [lo, *(np.maximum(lo, w + 1) for w in windows)]
    bounds_hi = [*(np.minimum(hi, w) for w in windows), hi]
    cfg_parts, a_parts, b_parts = [], [], []
    for s_lo, s_hi in zip(bounds_lo, bounds_hi):
        ok = np.nonzero(s_lo <= s_hi)[0]
        cfg_parts.append(ok)
        a_parts.append(s_lo[ok])
        b_parts.append(s_hi[ok])
    cfg, a, b = (np.concatenate(x) for x in (cfg_parts, a_parts, b_parts))
    table = _StepTable(rs, int(hi.max(initial=1)))
    while True:
        bb = batch[cfg]
        table.ensure(np.concatenate([bb, bb]), np.concatenate([a, b]))
        ia, ib = table.index(bb, a), table.index(bb, b)
        da, db = table.margin[:, ia], table.margin[:, ib]
        flips = (da >= 0) != (db >= 0)
        split = np.nonzero(flips.any(axis=0))[0]
        if split.size == 0:
            break
        op = np.argmax(flips[:, split], axis=0)
        d_a, d_b = da[op, split], db[op, split]
        a_s, b_s = a[split], b[split]
        # the op's margin is affine in c on the range: it crosses 0 at a + d_a/(d_a − d_b)·(b − a)
        cut = np.clip(np.floor(a_s + d_a / (d_a - d_b) * (b_s - a_s)), a_s, b_s - 1).astype(np.int64)
        keep = np.ones(cfg.shape[0], dtype=bool)
        keep[split] = False
        cfg = np.concatenate([cfg[keep], cfg[split], cfg[split]])
        a = np.concatenate([a[keep], a_s, cut + 1])
        b = np.concatenate([b[keep], cut, b_s])
    count = (b - a + 1).astype(np.float64)
    ranged = count * (table.values[:, ia] + table.values[:, ib]) / 2.0
    sums = {q: np.bincount(cfg, weights=ranged[i], minlength=n) for i, q in enumerate(QUANTITIES)}
    return sums, table.metric_peak_flops


def _decode_columns(
    rs: Any, wave_b: np.ndarray, prompt: np.ndarray, gen: np.ndarray
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """TPOT and the decode metrics as :func:`capsim.metrics.phase_metrics` defines them, from the exact sums."""
    sums, metric_peak = decode_totals(rs, wave_b, prompt, gen)
    steps = (gen - 1).astype(np.float64)
    time = sums["time"]
    has = steps > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(has, time / np.where(has, steps, 1.0), np.nan)
        devices = rs.placement.tp
        bw = devices * rs.rates.memory_bandwidth * time
        fl = devices * metric_peak * time
        metrics = {
            "s_mbu": (sums["weight_bytes_sparse"] + sums["kv_read_bytes"]) / bw,
            "mbu": (sums["weight_bytes_dense"] + sums["kv_read_bytes"]) / bw,
            "s_mfu": sums["flops_sparse"] / fl,
            "mfu": sums["flops_dense"] / fl,
        }
    by_resource = np.stack([sums[f"time_{r}"] for r in RESOURCES])
    names = np.array(RESOURCES, dtype=object)
    metrics["bottleneck"] = np.where(has, names[np.argmax(by_resource, axis=0)], "none")
    return tpot, metrics
