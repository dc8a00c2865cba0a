"""Analytic steady-state LRU hit rate of the offload expert cache (instead of simulating a sampled stream).

The cache sees, each decode step, the distinct experts the batch activates, layer by layer (the order
:func:`capsim.engine.deployment.access_stream` builds). An access to expert i hits under LRU iff fewer than C other
experts were used since i's previous use. Two facts make that computable:

- *Gap distribution.* Each of the B sequences routes through a per-layer chain: with probability 1 − ν the
  token reuses its predecessor's set, else it draws afresh (inclusion π_i); ν is the router's
  ``new_origin`` (1 − reuse without affinity; the renewal estimate with affinity, see
  :mod:`capsim.routing.synthetic`). So the probability that i is unused for d consecutive steps is
  N_i(d) = [(1 − π_i)·(1 − ν·π_i)^(d−1)]^B, i is used in a step with a_i = 1 − (1 − π_i)^B, and the previous
  use of an accessed i lies more than d steps back with probability (N_i(d) − N_i(d+1)) / a_i.
- *Window content.* Layers are visited in the same order every step, so a reuse after d steps spans d steps'
  worth of every layer: the experts used in it number about D(d) = Σ_j (1 − N_j(d)) (less i itself), a sum of
  indicators whose variance is Σ N(1 − N) plus the negative covariance of experts of one layer (a token's
  top-k set has exactly k: per pair (c^T − 1)·N_i·N_j, c the uniform top-k pair factor, T the fresh draws in
  the window), plus a Bernoulli(½) for each of the reused expert's layer-mates at the window's two ends.
  P(hit | gap d) = Φ((C − ½ − D(d)) / σ(d)).

Unlike Che's approximation (independent references, one characteristic time), this keeps LRU's cliff: once a
step's working set exceeds C the layer-ordered scan evicts every expert before its reuse and the hit rate
falls to ~0, as the simulation shows. tests/test_cache_model.py compares it with the simulation
(:func:`capsim.engine.offload.simulate_tiers`) over routers, batches and capacities: within 0.05 of the simulated hit
rate away from the cliff (capacity outside ±15 % of a step's working set), both ~0 below it.

Not modelled (simulated instead, :func:`capsim.engine.offload.cache_outcome`): LFU and Belady's oracle, trace
replay, and a host page cache that holds some but not all SSD experts (it sees the device cache's misses,
which are correlated with its own content).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.special import ndtr

MAX_GAP_POINTS = 192
"""Gaps evaluated in the band where P(hit | gap) falls from 1 to 0 (binned beyond that many steps)."""


def lru_misses_per_step(
    log_absent: Callable[[np.ndarray], np.ndarray],
    used: np.ndarray,
    capacity: int,
    layer: np.ndarray,
    draws: Callable[[np.ndarray], np.ndarray],
    pair_factor: float,
    mates_per_step: float,
) -> np.ndarray:
    """Expected LRU misses per step (steady state) of each item, used with probability ``used`` per step.

    ``log_absent(d)``: (items, len(d)) log-probability that each item is unused for d consecutive steps
    (0 for d = 0); ``layer``: the layer of each item (pairs within a layer are negatively correlated by
    ``pair_factor`` per draw, ``draws(d)`` independent draws in d steps); ``mates_per_step``: layer-mates of a
    reused item at each end of its window."""
    n = used.size
    if capacity >= n or n == 0:
        return np.zeros(n)
    order = np.argsort(layer, kind="stable")
    if not np.array_equal(order, np.arange(n)):
        raise ValueError("items must be grouped by layer")  # internal: callers pass np.nonzero order
    starts = np.nonzero(np.r_[True, layer[1:] != layer[:-1]])[0]

    def stats(d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        absent = np.exp(log_absent(d))
        distinct = (1.0 - absent).sum(axis=0)
        var_ind = np.add.reduceat(absent * (1.0 - absent), starts, axis=0)
        tot = np.add.reduceat(absent, starts, axis=0)
        sq = np.add.reduceat(absent * absent, starts, axis=0)
        cov = (pair_factor ** draws(d) - 1.0)[None, :] * (tot * tot - sq)
        var = np.maximum((var_ind + cov).sum(axis=0), 0.0) + 0.25 * mates_per_step
        return absent, distinct, var

    def margin(d: int, sign: float) -> float:
        _, distinct, var = stats(np.array([float(d)]))
        return float(distinct[0] - (capacity - 0.5) + sign * 6.0 * np.sqrt(var[0] + 1e-12))

    # the band of gaps where P(hit | gap) goes from ~1 to ~0: D(d) ± 6σ crosses C
    def first_gap(sign: float) -> int:
        if margin(1, sign) >= 0:
            return 1
        hi = 2
        while margin(hi, sign) < 0:
            if hi > 1 << 40:
                return hi  # the window never fills the cache (only ever-unused items left)
            hi *= 2
        lo = hi // 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if margin(mid, sign) < 0 else (lo, mid)
        return hi

    d_lo, d_hi = first_gap(+1.0), first_gap(-1.0)
    edges = np.unique(np.round(np.linspace(d_lo - 1, d_hi, min(MAX_GAP_POINTS, d_hi - d_lo + 2))))
    absent, distinct, var = stats(edges)
    safe = np.where(used > 0, used, 1.0)
    nxt = np.exp(log_absent(edges + 1.0))
    beyond = (absent - nxt) / safe[:, None]  # P(previous use more than d steps back | used now), per edge
    # gaps up to edges[0] are sure hits; gaps in (edges[j], edges[j+1]] hit with P(hit | gap = edges[j+1])
    p_bin = beyond[:, :-1] - beyond[:, 1:]
    others = distinct[None, 1:] - (1.0 - absent[:, 1:])
    hit_given = ndtr((capacity - 0.5 - others) / np.sqrt(var[None, 1:] + 1e-12))
    hit = (1.0 - beyond[:, 0]) + (p_bin * hit_given).sum(axis=1)
    return np.asarray(used * (1.0 - np.clip(hit, 0.0, 1.0)), dtype=np.float64)


def device_cache_misses(
    inclusion: np.ndarray,
    new_origin: np.ndarray,
    mask: np.ndarray,
    batch: int,
    capacity: int,
    top_k: int,
) -> tuple[float, float, np.ndarray]:
    """(accesses per step, misses per step, each expert's misses per step, in ``np.nonzero(mask)`` order) of
    an LRU cache of ``capacity`` experts
    over the experts in ``mask`` (MoE layers x experts), for a decode batch of ``batch`` sequences."""
    _num_layers, num_experts = inclusion.shape
    pi = np.clip(inclusion, 0.0, 1.0 - 1e-12)
    layer_of, expert_of = np.nonzero(mask)
    p = pi[layer_of, expert_of]
    nu = np.asarray(new_origin, dtype=np.float64)[layer_of]
    log_first, log_next = np.log1p(-p), np.log1p(-nu * p)
    used = -np.expm1(batch * log_first)
    if used.size == 0:
        return 0.0, 0.0, used

    def log_absent(d: np.ndarray) -> np.ndarray:
        d = np.asarray(d, dtype=np.float64)[None, :]
        return np.where(d > 0, batch * (log_first[:, None] + (d - 1.0) * log_next[:, None]), 0.0)

    mean_nu = float(np.mean(nu))

    def draws(d: np.ndarray) -> np.ndarray:
        return np.where(d > 0, batch * (1.0 + (d - 1.0) * mean_nu), 0.0)

    e, k = float(num_experts), float(top_k)
    pair = ((e - k) * (e - k - 1.0) / (e * (e - 1.0))) / (1.0 - k / e) ** 2 if e > k + 1 else 1.0
    mates = float(used.sum()) / max(int(mask.any(axis=1).sum()), 1)
    misses = lru_misses_per_step(log_absent, used, capacity, layer_of, draws, pair, mates)
    return float(used.sum()), float(misses.sum()), misses
