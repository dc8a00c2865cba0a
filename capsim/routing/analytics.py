"""Analytics of recorded or sampled routing: activation, load, imbalance and reuse distance.

All functions take expert ids of shape (layers, tokens, k) (``Trace.topk_ids`` or ``SyntheticRouter.sample``)
and the number of experts E, and return one value or array per layer.

Definitions (docs/routing.md):
- load n_{l,i}: tokens routed to expert i of layer l; imbalance = max_i n_{l,i} / mean_i n_{l,i} (the mean is
  over all E experts, so an expert never used still counts). Under expert parallelism the slowest rank sets
  the step time, so max/mean is the straggler factor.
- reuse distance of an access to expert i at token t: the number of *other* distinct experts of that layer
  activated by the tokens strictly between t and the previous token that used i (−1 for a first use). An LRU
  cache of C experts per layer hits the access if distance + k ≤ C (ties of the k experts of one token are
  counted as more recent, so this is the conservative side) and misses if distance ≥ C.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from capsim.errors import ScenarioError
from capsim.routing._base import FloatArray, IntArray

_ACCESS_CHUNK = 1 << 22


def _ids(topk_ids: NDArray[np.integer[Any]]) -> NDArray[np.integer[Any]]:
    arr = np.asarray(topk_ids)
    if arr.ndim != 3:
        raise ScenarioError(f"expert ids must have shape (layers, tokens, k), got {arr.shape}")
    return arr


def occupancy(topk_ids: NDArray[np.integer[Any]], num_experts: int) -> NDArray[np.bool_]:
    """occ[l, t, i] = True if token t activates expert i at layer l; shape (L, N, E)."""
    ids = _ids(topk_ids)
    num_layers, num_tokens, _ = ids.shape
    occ = np.zeros((num_layers, num_tokens, num_experts), dtype=bool)
    np.put_along_axis(occ, ids.astype(np.int64), True, axis=2)
    return occ


def expert_counts(topk_ids: NDArray[np.integer[Any]], num_experts: int) -> IntArray:
    """n[l, i]: tokens routed to expert i at layer l over the whole trace; shape (L, E). Rows sum to N·k."""
    ids = _ids(topk_ids).astype(np.int64)
    num_layers = ids.shape[0]
    flat = ids.reshape(num_layers, -1) + (np.arange(num_layers) * num_experts)[:, None]
    return np.bincount(flat.ravel(), minlength=num_layers * num_experts).reshape(num_layers, num_experts)


def load_imbalance(counts: NDArray[np.integer[Any]] | FloatArray) -> FloatArray:
    """max_i n_{l,i} / mean_i n_{l,i} per layer (1 = perfectly balanced; E/k at worst for one token)."""
    c = np.asarray(counts, dtype=np.float64)
    mean = c.mean(axis=-1)
    return np.asarray(np.where(mean > 0, c.max(axis=-1) / np.where(mean > 0, mean, 1.0), np.nan))


def rank_load_imbalance(counts: NDArray[np.integer[Any]] | FloatArray, ep_size: int) -> FloatArray:
    """Straggler factor under expert parallelism: experts split contiguously over ``ep_size`` ranks
    (E/ep each), max/mean tokens per rank per layer."""
    c = np.asarray(counts, dtype=np.float64)
    num_experts = c.shape[-1]
    if ep_size < 1 or num_experts % ep_size:
        raise ScenarioError(f"expert-parallel size must divide E={num_experts}, got {ep_size}")
    per_rank = c.reshape(*c.shape[:-1], ep_size, num_experts // ep_size).sum(axis=-1)
    return load_imbalance(per_rank)


def step_windows(num_tokens: int, tokens_per_step: int) -> int:
    if tokens_per_step < 1:
        raise ScenarioError(f"tokens per step must be >= 1, got {tokens_per_step}")
    return num_tokens // tokens_per_step


def unique_per_step(topk_ids: NDArray[np.integer[Any]], num_experts: int, tokens_per_step: int) -> IntArray:
    """Distinct experts activated by each disjoint block of ``tokens_per_step`` consecutive tokens.

    Shape (L, N // T); a trailing partial block is dropped. The Monte Carlo counterpart of the routers'
    ``activated_per_layer(T, sequences=1)``.
    """
    ids = _ids(topk_ids)
    n_steps = step_windows(ids.shape[1], tokens_per_step)
    if n_steps == 0:
        return np.zeros((ids.shape[0], 0), dtype=np.int64)
    occ = occupancy(ids[:, : n_steps * tokens_per_step], num_experts)
    blocks = occ.reshape(ids.shape[0], n_steps, tokens_per_step, num_experts).any(axis=2)
    return np.asarray(blocks.sum(axis=2), dtype=np.int64)


def step_load_imbalance(
    topk_ids: NDArray[np.integer[Any]], num_experts: int, tokens_per_step: int
) -> FloatArray:
    """Mean over disjoint steps of ``tokens_per_step`` tokens of max/mean tokens per expert, per layer.

    This is the per-step straggler factor (larger than the whole-trace imbalance for small steps).
    """
    ids = _ids(topk_ids)
    n_steps = step_windows(ids.shape[1], tokens_per_step)
    if n_steps == 0:
        return np.full(ids.shape[0], np.nan)
    occ = occupancy(ids[:, : n_steps * tokens_per_step], num_experts)
    per_step = occ.reshape(ids.shape[0], n_steps, tokens_per_step, num_experts).sum(axis=2)
    return np.asarray(load_imbalance(per_step).mean(axis=1))


def reuse_distances(topk_ids: NDArray[np.integer[Any]], num_experts: int) -> list[IntArray]:
    """Per layer, the reuse distance of every expert access in token order (−1 = first use); see module doc."""
    ids = _ids(topk_ids).astype(np.int64)
    num_layers, num_tokens, k = ids.shape
    out: list[IntArray] = []
    rows = np.arange(num_tokens)
    for layer in range(num_layers):
        occ = np.zeros((num_tokens, num_experts), dtype=bool)
        occ[rows[:, None], ids[layer]] = True
        last_upto = np.maximum.accumulate(np.where(occ, rows[:, None], -1), axis=0)
        last_before = np.vstack([np.full((1, num_experts), -1), last_upto[:-1]])  # last use strictly before t
        t_acc = np.repeat(rows, k)
        e_acc = ids[layer].ravel()
        prev = last_before[t_acc, e_acc]
        dist = np.full(t_acc.size, -1, dtype=np.int64)
        step = max(1, _ACCESS_CHUNK // max(num_experts, 1))
        for start in range(0, t_acc.size, step):
            sl = slice(start, start + step)
            # experts whose last use (before t) is after i's previous use were used in between
            dist[sl] = (last_before[t_acc[sl]] > prev[sl, None]).sum(axis=1)
        dist[prev < 0] = -1
        out.append(dist)
    return out


def reuse_distance_histogram(distances: list[IntArray], num_experts: int) -> IntArray:
    """hist[l, d] = accesses of layer l with reuse distance d (d = 0..E−1); cold (first) uses excluded."""
    hist = np.zeros((len(distances), num_experts), dtype=np.int64)
    for layer, d in enumerate(distances):
        warm = d[d >= 0]
        hist[layer] = np.bincount(warm, minlength=num_experts)[:num_experts]
    return hist


def lru_hit_rate(distances: list[IntArray], capacity: int, top_k: int) -> FloatArray:
    """Fraction of accesses per layer that surely hit an LRU cache of ``capacity`` experts (distance + k ≤ C).

    Cold accesses count as misses, so a short trace understates the steady-state hit rate.
    """
    if capacity < 0:
        raise ScenarioError(f"cache capacity must be >= 0 experts, got {capacity}")
    return np.array(
        [float(np.mean((d >= 0) & (d + top_k <= capacity))) if d.size else np.nan for d in distances]
    )
