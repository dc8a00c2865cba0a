"""Per-layer expert popularity: the probability π_i that a token's top-k set contains expert i.

Every synthetic router is specified by its *inclusion probabilities* π (one row per MoE layer, Σ_i π_i = k,
0 ≤ π_i ≤ 1) and draws each token's k distinct experts with a fixed-size design that has exactly those
inclusion probabilities (Madow's systematic sampling over a randomly ordered list of experts). Because the
marginals are exact, the expected number of distinct experts a step of T independent tokens activates is
exactly Σ_i 1 − (1 − π_i)^T (the probability that at least one of T tokens picks expert i, summed).

Profiles (each a function of its documented parameters and a seed):
- uniform: π_i = k/E.
- zipf(s): π ∝ rank^(−s) (ranks 1..E), capped at 1 by water-filling, ranks shuffled per layer so the hot
  experts differ across layers (as in MoE-CAP's stored Qwen3-235B heatmap, moecap.md §4.4).
- dirichlet(α): a popularity vector w ~ Dirichlet(α·1_E) drawn per layer, π = water-fill(k·w).
- hot(H, share): H hot experts per layer share ``share`` of the routing mass; the rest share 1 − share.
- group(n_group, topk_group[, s]): DeepSeek-V3 group-limited routing: a token first picks ``topk_group``
  of ``n_group`` contiguous expert groups (uniformly, or Zipf(s)-skewed over groups), then k distinct experts
  uniformly among the experts of the chosen groups.
- empirical(π): per-layer frequencies measured on a trace (see :mod:`capsim.routing.fit`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from capsim.errors import ScenarioError
from capsim.routing._base import FloatArray, IntArray

_PERMUTATION_POOL = 128
"""Random expert orders per layer used by the systematic sampler. Marginals are exact for any order; the
pool only decorrelates which experts co-occur in a token, at O(E) cost per order instead of per token."""


def water_fill(weights: FloatArray, total: float) -> FloatArray:
    """π_i = min(1, c·w_i) with c chosen so that Σ_i π_i = ``total`` (needs ``total`` ≤ #{w_i > 0}).

    The capped experts are those with the largest weights; the rest stay proportional to their weights.
    """
    w = np.asarray(weights, dtype=np.float64)
    if np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ScenarioError("expert popularity weights must be finite and >= 0")
    positive = int(np.count_nonzero(w))
    if positive < total - 1e-9:
        raise ScenarioError(
            f"only {positive} experts have non-zero popularity but each token needs {total:g}; "
            "use a flatter profile"
        )
    order = np.argsort(-w, kind="stable")
    ws = w[order]
    tail = np.cumsum(ws[::-1])[::-1]  # tail[j] = Σ_{r ≥ j} ws[r]
    pi_sorted = np.ones_like(ws)
    for capped in range(int(np.ceil(total)) + 1):
        if capped >= ws.size or tail[capped] <= 0:
            break
        c = (total - capped) / tail[capped]
        if c * ws[capped] <= 1.0 + 1e-12:
            pi_sorted[capped:] = np.minimum(1.0, c * ws[capped:])
            break
    pi = np.empty_like(pi_sorted)
    pi[order] = pi_sorted
    return pi


def systematic_sample(inclusion: FloatArray, num_tokens: int, rng: np.random.Generator) -> IntArray:
    """Draw ``num_tokens`` sets of k = Σπ distinct experts with P(i in set) = π_i exactly.

    Madow's systematic sampling: lay the experts end to end in a random order, expert i taking an interval
    of length π_i of [0, k]; one uniform u in (0, 1] selects the experts whose intervals hold u, u+1, …,
    u+k−1. Since π_i ≤ 1 no interval holds two points, so the k experts are distinct.
    """
    pi = np.asarray(inclusion, dtype=np.float64)
    k = round(float(pi.sum()))
    num_experts = pi.size
    pool = _PERMUTATION_POOL
    perms = np.argsort(rng.random((pool, num_experts)), axis=1)
    cum = np.cumsum(pi[perms], axis=1)
    cum[:, -1] = float(k)  # the last boundary is exactly k, so the last point u + k − 1 ≤ k always lands
    flat = (cum + (np.arange(pool)[:, None] * (k + 1))).ravel()
    which = rng.integers(pool, size=num_tokens)
    u = 1.0 - rng.random(num_tokens)  # (0, 1]: a point at 0 could land on a zero-probability expert
    points = u[:, None] + np.arange(k)[None, :] + (which * (k + 1))[:, None]
    pos = np.searchsorted(flat, points, side="left")
    col = np.minimum(pos - (which * num_experts)[:, None], num_experts - 1)
    ids = perms[which[:, None], col]
    # Float rounding at an interval boundary could in principle repeat an expert; redraw those tokens.
    bad = _rows_with_repeats(ids)
    if bad.any():
        ids[bad] = systematic_sample(pi, int(bad.sum()), rng)
    return np.asarray(ids, dtype=np.int64)


def _rows_with_repeats(ids: IntArray) -> np.ndarray:
    if ids.shape[1] < 2:
        return np.zeros(ids.shape[0], dtype=bool)
    s = np.sort(ids, axis=1)
    return np.asarray((np.diff(s, axis=1) == 0).any(axis=1))


def rank_maps(inclusion: FloatArray) -> IntArray:
    """For each layer l < L−1 a permutation f_l mapping the r-th most popular expert of layer l to the
    r-th most popular of layer l+1. f_l preserves π exactly when the layers' sorted profiles are equal."""
    order = np.argsort(-inclusion, axis=1, kind="stable")
    maps = np.empty((max(inclusion.shape[0] - 1, 0), inclusion.shape[1]), dtype=np.int64)
    for layer in range(inclusion.shape[0] - 1):
        maps[layer, order[layer]] = order[layer + 1]
    return maps


class Popularity:
    """Inclusion probabilities per layer (L, E), with a sampler and layer-to-layer maps for affinity."""

    kind = "independent"

    def __init__(self, inclusion: FloatArray, params: dict[str, Any], maps: IntArray | None = None) -> None:
        self.inclusion = np.asarray(inclusion, dtype=np.float64)
        self.params = params
        self.layer_maps = rank_maps(self.inclusion) if maps is None else np.asarray(maps, dtype=np.int64)

    @property
    def num_layers(self) -> int:
        return int(self.inclusion.shape[0])

    @property
    def num_experts(self) -> int:
        return int(self.inclusion.shape[1])

    @property
    def top_k(self) -> int:
        return round(float(self.inclusion[0].sum()))

    def draw(
        self, layer: int, num_tokens: int, rng: np.random.Generator, inclusion: FloatArray | None = None
    ) -> IntArray:
        """Fresh, independent expert sets for ``num_tokens`` tokens of ``layer`` (shape (n, k))."""
        pi = self.inclusion[layer] if inclusion is None else inclusion
        return systematic_sample(pi, num_tokens, rng)

    @property
    def supports_custom_inclusion(self) -> bool:
        """Whether :meth:`draw` can sample from an arbitrary inclusion vector (affinity adjustments)."""
        return True


def _check_k(num_experts: int, top_k: int) -> None:
    if not 1 <= top_k <= num_experts:
        raise ScenarioError(f"top-k must be in [1, E={num_experts}], got {top_k}")


def _shuffled_rows(
    base: FloatArray, num_layers: int, rng: np.random.Generator
) -> tuple[FloatArray, IntArray]:
    """Place the profile ``base`` (by rank) on a random permutation of experts in every layer."""
    perms = np.stack([rng.permutation(base.size) for _ in range(num_layers)])
    out = np.empty((num_layers, base.size))
    out[np.arange(num_layers)[:, None], perms] = base[None, :]
    return out, perms


def _maps_from_perms(perms: IntArray) -> IntArray:
    """f_l(σ_l[r]) = σ_{l+1}[r]: the rank-r expert of layer l maps to the rank-r expert of layer l+1."""
    maps = np.empty((max(perms.shape[0] - 1, 0), perms.shape[1]), dtype=np.int64)
    for layer in range(perms.shape[0] - 1):
        maps[layer, perms[layer]] = perms[layer + 1]
    return maps


def uniform_popularity(num_layers: int, num_experts: int, top_k: int) -> Popularity:
    """π_i = k/E on every layer: the bound (Schur-concavity: it maximises Σ_i 1 − (1 − π_i)^T)."""
    _check_k(num_experts, top_k)
    pi = np.full((num_layers, num_experts), top_k / num_experts)
    identity = np.tile(np.arange(num_experts), (max(num_layers - 1, 0), 1))
    return Popularity(pi, {}, identity)


def zipf_popularity(
    num_layers: int, num_experts: int, top_k: int, s: float, rng: np.random.Generator
) -> Popularity:
    """π = water-fill(k·r^(−s) / Σ r^(−s)) over ranks r = 1..E, ranks shuffled per layer."""
    _check_k(num_experts, top_k)
    if not (np.isfinite(s) and s >= 0):
        raise ScenarioError(f"zipf exponent must be >= 0, got {s}; e.g. zipf:1.2")
    base = water_fill(np.arange(1, num_experts + 1, dtype=np.float64) ** (-s), top_k)
    pi, perms = _shuffled_rows(base, num_layers, rng)
    return Popularity(pi, {"s": s}, _maps_from_perms(perms))


def hot_popularity(
    num_layers: int, num_experts: int, top_k: int, hot: int, share: float, rng: np.random.Generator
) -> Popularity:
    """H hot experts take ``share`` of the routing mass: π_hot = share·k/H, π_cold = (1−share)·k/(E−H)."""
    _check_k(num_experts, top_k)
    if not 1 <= hot < num_experts:
        raise ScenarioError(
            f"hot expert count must be in [1, E-1={num_experts - 1}], got {hot}; e.g. hot:2,share=0.5"
        )
    if not 0.0 < share < 1.0:
        raise ScenarioError(f"hot share must be in (0, 1), got {share}; e.g. hot:{hot},share=0.5")
    p_hot = share * top_k / hot
    p_cold = (1.0 - share) * top_k / (num_experts - hot)
    if p_hot > 1.0 or p_cold > 1.0:
        limit = hot / top_k
        raise ScenarioError(
            f"hot:{hot},share={share} asks a hot expert to serve {p_hot:.3g} of the tokens (max 1); "
            f"use share <= {limit:.3g} or more hot experts"
            if p_hot > 1.0
            else f"hot:{hot},share={share} leaves too few cold experts for top-{top_k}; raise share"
        )
    base = np.concatenate([np.full(hot, p_hot), np.full(num_experts - hot, p_cold)])
    pi, perms = _shuffled_rows(base, num_layers, rng)
    return Popularity(pi, {"hot": hot, "share": share}, _maps_from_perms(perms))


def dirichlet_popularity(
    num_layers: int, num_experts: int, top_k: int, alpha: float, rng: np.random.Generator
) -> Popularity:
    """Per layer w ~ Dirichlet(α·1_E), π = water-fill(k·w). Small α = strong skew; α → ∞ = uniform."""
    _check_k(num_experts, top_k)
    if not (np.isfinite(alpha) and alpha > 0):
        raise ScenarioError(f"dirichlet concentration must be > 0, got {alpha}; e.g. dirichlet:0.5")
    rows = []
    for _ in range(num_layers):
        w = rng.dirichlet(np.full(num_experts, alpha))
        # very small α can underflow weights to 0; a 1e-12 relative floor keeps every expert reachable
        w = np.maximum(w, w.max() * 1e-12)
        rows.append(water_fill(w, top_k))
    return Popularity(np.stack(rows), {"alpha": alpha})


def empirical_popularity(inclusion: FloatArray, maps: IntArray | None = None) -> Popularity:
    """Measured per-layer inclusion frequencies (rows must sum to k, entries in [0, 1])."""
    return Popularity(inclusion, {"empirical": True}, maps)


class GroupPopularity(Popularity):
    """DeepSeek-V3 group-limited routing (arXiv:2412.19437 §2.1.2; n_group / topk_group in config.json).

    Experts are split into ``n_group`` contiguous groups of g = E/n_group. Each token selects
    ``topk_group`` = M groups with inclusion probabilities ρ_g (uniform M/n_group, or Zipf(s) over groups,
    water-filled), then k distinct experts uniformly among the M·g experts of its groups. Hence
    π_i = ρ_{group(i)}·k/(M·g), and a token touches at most M groups (the point of the scheme: bounded
    expert-parallel fan-out). Experts inside a group are equally popular in this model.
    """

    kind = "group"

    def __init__(
        self,
        num_layers: int,
        num_experts: int,
        top_k: int,
        n_group: int,
        topk_group: int,
        s: float,
        rng: np.random.Generator,
    ) -> None:
        _check_k(num_experts, top_k)
        if n_group < 2 or num_experts % n_group:
            raise ScenarioError(
                f"group-limited routing needs n_group >= 2 dividing E={num_experts}, got n_group={n_group}; "
                "pass group:n_group=8,topk_group=4 or use a model with n_group in its config"
            )
        if not 1 <= topk_group <= n_group:
            raise ScenarioError(f"topk_group must be in [1, n_group={n_group}], got {topk_group}")
        size = num_experts // n_group
        if top_k > topk_group * size:
            raise ScenarioError(
                f"top-{top_k} does not fit in {topk_group} groups of {size} experts; raise topk_group"
            )
        if not (np.isfinite(s) and s >= 0):
            raise ScenarioError(f"group zipf exponent must be >= 0, got {s}")
        base = water_fill(np.arange(1, n_group + 1, dtype=np.float64) ** (-s), topk_group)
        self.group_inclusion, gperms = _shuffled_rows(base, num_layers, rng)  # (L, G)
        self.n_group, self.topk_group, self.group_size = n_group, topk_group, size
        per_expert = np.repeat(self.group_inclusion, size, axis=1) * (top_k / (topk_group * size))
        maps = np.empty((max(num_layers - 1, 0), num_experts), dtype=np.int64)
        offset = np.arange(num_experts) % size
        for layer in range(num_layers - 1):
            gmap = np.empty(n_group, dtype=np.int64)
            gmap[gperms[layer]] = gperms[layer + 1]  # rank-r group of layer l -> rank-r group of layer l+1
            maps[layer] = gmap[np.arange(num_experts) // size] * size + offset
        super().__init__(per_expert, {"n_group": n_group, "topk_group": topk_group, "group_s": s}, maps)

    @property
    def supports_custom_inclusion(self) -> bool:
        return False

    def draw(
        self, layer: int, num_tokens: int, rng: np.random.Generator, inclusion: FloatArray | None = None
    ) -> IntArray:
        groups = systematic_sample(self.group_inclusion[layer], num_tokens, rng)  # (n, M)
        size, k = self.group_size, self.top_k
        candidates = (groups[:, :, None] * size + np.arange(size)[None, None, :]).reshape(num_tokens, -1)
        width = candidates.shape[1]
        # uniform systematic choice of k of the M·g candidates, in a random order: positions
        # floor((u + j)·width/k), j = 0..k−1, are distinct because width/k >= 1
        order = np.argsort(rng.random((min(_PERMUTATION_POOL, max(num_tokens, 1)), width)), axis=1)
        which = rng.integers(order.shape[0], size=num_tokens)
        u = rng.random(num_tokens)
        pos = np.floor((u[:, None] + np.arange(k)[None, :]) * (width / k)).astype(np.int64)
        pos = np.minimum(pos, width - 1)
        cols = order[which[:, None], pos]
        return np.take_along_axis(candidates, cols, axis=1).astype(np.int64)
