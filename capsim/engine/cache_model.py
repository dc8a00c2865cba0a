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

*The sum over gaps.* P(hit | gap) goes from ~1 to ~0 in the band of gaps where D(d) ± 6σ(d) crosses C: gaps
before it are sure hits, after it sure misses. The band is bracketed by doubling and narrowed by bisection to
1/8 of its ends (widened, never cut), ends where every expert's earlier-use tail is below 1e-12 (so a cache
that a window never fills does not spread the band over 2^41 steps: the model without that end put a
Zipf-routed Mixtral cache of 250 of 256 experts at 0 % hits at batch 16, where the simulation has 93 %), and is
summed over 64 gap points. P(hit | gap) = Φ((C − ½ − D + δ_i)/σ) with δ_i = 1 − N_i(d) in [0, 1] (the reused
expert is not among the others) is, past 16 expert classes (many experts, so σ is large), interpolated in δ
through 0, ½ and 1 (error <= 0.0032/σ³): three normal CDFs per gap, not one per class and gap. Against 192
points, integer band ends and a CDF per class, the hit rate moved by at most 1.5e-3 over 675 (model, router,
batch, capacity) cases.

*Vectorised over (batch, capacity).* A sweep asks this for thousands of (batch, capacity) pairs of one model, so
:func:`lru_outcomes` evaluates them together: every quantity above is a function of an expert's π, its layer's
ν and the batch, so experts the model cannot tell apart are evaluated once (:class:`ExpertClasses`: layers whose
profiles are the same multiset of π with the same ν form one layer class, and equal π within it one class;
uniform routers collapse to one class, the default shuffled Zipf profiles to one layer class), and the bands
of all pairs are found together. Each pair's numbers do not depend on which other pairs share the call (sums
over classes run in order along the class axis, np.add.accumulate / reduceat: np.sum's grouping depends on the
array's shape, tests/test_cache_model.py), so a sweep's rows are the same whatever its chunking, and predict's
call (one pair, through :class:`capsim.engine.offload.DecodeCache`) gives the sweep's bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import ndtr

FloatArray = NDArray[np.float64]

MAX_GAP_POINTS = 64
"""Gaps evaluated in the band where P(hit | gap) falls from 1 to 0 (binned beyond that many steps): 192 points
and integer band ends moved no hit rate by more than 2e-3 (tests/test_cache_model.py); 32 points did, by 0.026
(Mixtral, a cache of 253 of 256 experts)."""

TAIL = 1e-12
"""Probability below which the earlier-use tail of a class's gaps is left out of the band."""

BAND_EDGE_TOLERANCE = 1.0 / 8.0
"""The band's ends are located to this share of their gap (or to one step): the band is widened by at most that."""

LONGEST_GAP = 1 << 40
"""Past this many steps a window is taken never to fill the cache (only ever-unused experts are left)."""

EXACT_CDF_CLASSES = 16
"""Up to this many expert classes P(hit | gap) takes one normal CDF per class (few experts: σ can be ~1, where
the interpolation in δ is off by up to ~0.03); beyond, it is interpolated."""

DOUBLINGS_PER_CALL = 4
"""Gaps 1, 2, 4, ... evaluated per call while bracketing the band (once per batch; most bands start within the
first few)."""

BLOCK_ELEMENTS = 1 << 15
"""Classes x pairs x gaps evaluated per block: cache-sized blocks (256 KiB arrays) ran the mixed benchmark grid's
offload group ~3x faster than 16 MiB ones; a pair's numbers do not depend on its block."""


def _sum0(x: FloatArray) -> FloatArray:
    """Sum over axis 0 in order (np.add.accumulate is sequential), so each pair's bits are its own."""
    return np.asarray(np.add.accumulate(x, axis=0)[-1], dtype=np.float64)


@dataclass(frozen=True)
class ExpertClasses:
    """The cacheable experts grouped into the classes the LRU model cannot tell apart.

    Class ``u`` holds experts of equal inclusion π_u in layers of one *layer class* (layers whose cacheable
    experts carry the same multiset of π and the same ν): ``per_layer[u]`` of them in each of that layer class's
    ``layer_count`` layers, so ``weight[u]`` = per_layer · layer_count experts in all. Classes are ordered by
    layer class (``layer_start`` slices them)."""

    log_first: FloatArray
    """log(1 − π_u): the expert is unused by one fresh draw."""
    log_next: FloatArray
    """log(1 − ν·π_u): unused by the next token of a run (ν: the layer's new-origin probability)."""
    weight: FloatArray
    per_layer: FloatArray
    layer_start: tuple[int, ...]
    """Index of each layer class's first class, plus the number of classes."""
    layer_count: FloatArray
    of_item: NDArray[np.int64]
    """Class of each cacheable expert, in ``np.nonzero(mask)`` order."""
    mean_nu: float
    """ν averaged over the cacheable experts (the draws in a window)."""
    pair_factor: float
    """E[pair both unused] / (E[unused])² per fresh draw of a uniform top-k set: (E−k)(E−k−1)/(E(E−1)) / (1−k/E)²."""
    moe_layers: int
    """Layers with a cacheable expert (a reused expert's layer-mates are counted per layer)."""

    @classmethod
    def of(
        cls,
        inclusion: FloatArray,
        new_origin: FloatArray,
        mask: NDArray[np.bool_],
        top_k: int,
    ) -> ExpertClasses:
        _layers, num_experts = inclusion.shape
        pi = np.clip(inclusion, 0.0, 1.0 - 1e-12)
        nu = np.asarray(new_origin, dtype=np.float64)
        layer_of, expert_of = np.nonzero(mask)
        # layer classes: same ν and the same sorted profile of cacheable π
        keys: dict[bytes, int] = {}
        profiles: list[tuple[float, FloatArray, NDArray[np.int64]]] = []
        counts: list[int] = []
        class_of_layer: dict[int, int] = {}
        for layer in np.unique(layer_of).tolist():
            values = np.sort(pi[layer, mask[layer]])
            key = np.float64(nu[layer]).tobytes() + values.tobytes()
            if key not in keys:
                keys[key] = len(profiles)
                unique, per = np.unique(values, return_counts=True)
                profiles.append((float(nu[layer]), unique, per))
                counts.append(0)
            index = keys[key]
            counts[index] += 1
            class_of_layer[layer] = index
        starts = np.cumsum([0] + [p[1].size for p in profiles])
        of_item = np.empty(layer_of.size, dtype=np.int64)
        for layer, index in class_of_layer.items():
            rows = layer_of == layer
            unique = profiles[index][1]
            of_item[rows] = starts[index] + np.searchsorted(unique, pi[layer, expert_of[rows]])
        p = np.concatenate([prof[1] for prof in profiles]) if profiles else np.zeros(0)
        per_layer = (
            np.concatenate([prof[2] for prof in profiles]).astype(np.float64) if profiles else np.zeros(0)
        )
        nus = (
            np.concatenate([np.full(prof[1].size, prof[0]) for prof in profiles]) if profiles else np.zeros(0)
        )
        layer_count = np.asarray(counts, dtype=np.float64)
        class_layers = np.repeat(layer_count, np.diff(starts)) if profiles else np.zeros(0)
        weight = per_layer * class_layers
        e, k = float(num_experts), float(top_k)
        pair = ((e - k) * (e - k - 1.0) / (e * (e - 1.0))) / (1.0 - k / e) ** 2 if e > k + 1 else 1.0
        total = float(weight.sum())
        return cls(
            log_first=np.log1p(-p),
            log_next=np.log1p(-nus * p),
            weight=weight,
            per_layer=per_layer,
            layer_start=tuple(int(s) for s in starts),
            layer_count=layer_count,
            of_item=of_item,
            mean_nu=float((weight * nus).sum() / total) if total else 0.0,
            pair_factor=pair,
            moe_layers=len(class_of_layer),
        )

    @property
    def size(self) -> int:
        """Cacheable experts."""
        return int(self.of_item.size)


def lru_outcomes(
    classes: ExpertClasses, batch: ArrayLike, capacity: ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(accesses per step (P,), misses per step (P,), misses per step of one expert of each class (U, P)) of an
    LRU cache of ``capacity[p]`` experts under a decode batch of ``batch[p]`` sequences, for P pairs."""
    b = np.atleast_1d(np.asarray(batch, dtype=np.float64))
    c = np.atleast_1d(np.asarray(capacity, dtype=np.float64))
    b, c = np.broadcast_arrays(b, c)
    n_pairs, n_classes = b.size, classes.log_first.size
    per_expert = np.zeros((n_classes, n_pairs))
    lf = classes.log_first[:, None]
    used = -np.expm1(b[None, :] * lf)  # (U, P): an expert of the class is used in a step
    accesses = _sum0(classes.weight[:, None] * used) if n_classes else np.zeros(n_pairs)
    todo = np.nonzero((c < classes.size) & (accesses > 0))[0]
    # blocks of pairs sized for the bracketing's arrays (a few gaps per pair); the band's are split again
    step = max(1, BLOCK_ELEMENTS // max(n_classes * 8, 1))
    for begin in range(0, todo.size, step):
        pairs = todo[begin : begin + step]
        per_expert[:, pairs] = _misses_per_expert(classes, b[pairs], c[pairs], used[:, pairs])
    misses = _sum0(classes.weight[:, None] * per_expert) if n_classes else np.zeros(n_pairs)
    return accesses, misses, per_expert


def _misses_per_expert(
    classes: ExpertClasses, batch: FloatArray, capacity: FloatArray, used: FloatArray
) -> FloatArray:
    """Steady-state misses per step of one expert of each class (U, P), for pairs the cache cannot hold whole."""
    lf, ln = classes.log_first[:, None, None], classes.log_next[:, None, None]
    mates = _sum0(classes.weight[:, None] * used) / max(classes.moe_layers, 1)
    starts = list(classes.layer_start[:-1])
    layers = classes.layer_count[:, None, None]
    experts = np.add.reduceat(classes.per_layer, starts)[:, None, None]

    def log_absent(d: FloatArray, rows: slice | NDArray[np.int64]) -> FloatArray:
        """(U, p, G) log-probability that an expert is unused for d[p, g] consecutive steps (0 for d = 0)."""
        b = batch[rows]
        # B·log(1 − π) + B·(d − 1)·log(1 − νπ): the per-pair factors formed on the small arrays first
        out = (b[None, :] * classes.log_first[:, None])[:, :, None] + (b[:, None] * (d - 1.0))[None] * ln
        out[:, d <= 0] = 0.0  # N(0) = 1 (a band may start at gap 0, in its first points)
        return out

    def stats(d: FloatArray, rows: slice | NDArray[np.int64]) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(absent (U, p, G), distinct experts used in d steps (p, G), its variance (p, G)) for pairs ``rows``."""
        absent = np.exp(log_absent(d, rows))
        # per layer of each layer class c: T_c = Σ_i N_i and S_c = Σ_i N_i² over its experts; then, over the
        # L_c layers of each, D = Σ_c L_c·(E_c − T_c) (E_c: its cacheable experts per layer), the indicators'
        # variance Σ_c L_c·(T_c − S_c), and the pairs of one layer's experts Σ_c L_c·(T_c² − S_c)
        per = classes.per_layer[:, None, None] * absent
        tot = np.add.reduceat(per, starts, axis=0)
        sq = np.add.reduceat(per * absent, starts, axis=0)
        distinct = _sum0(layers * (experts - tot))
        var_ind = _sum0(layers * (tot - sq))
        spread = _sum0(layers * (tot * tot - sq))
        draws = np.where(d > 0, batch[rows][:, None] * (1.0 + (d - 1.0) * classes.mean_nu), 0.0)
        # pair_factor^T − 1, as expm1(T · log pair_factor): libm's pow takes ~60 ns at the huge T of long gaps
        cov = np.expm1(draws * np.log(classes.pair_factor)) * spread
        var = np.maximum(var_ind + cov, 0.0) + 0.25 * mates[rows][:, None]
        return absent, distinct, var

    def margins(
        d: FloatArray, rows: NDArray[np.int64], shared: bool = False
    ) -> tuple[FloatArray, FloatArray]:
        """D(d) − (C − ½) ± 6σ(d) for pairs ``rows`` at gaps d (rows x gaps): the + one is < 0 while a window
        of d steps surely fits the cache, the − one >= 0 once it surely does not. ``shared``: every row asks
        the same gaps, so D and σ (which depend on the batch, not the capacity) are evaluated once per batch."""
        if shared:
            _, first_of, inverse = np.unique(batch[rows], return_index=True, return_inverse=True)
            _, distinct, var = stats(d[first_of], rows[first_of])
            distinct, var = distinct[inverse.ravel()], var[inverse.ravel()]
        else:
            _, distinct, var = stats(d, rows)
        excess = distinct - (capacity[rows] - 0.5)[:, None]
        spread = 6.0 * np.sqrt(var + 1e-12)
        return excess + spread, excess - spread

    # gaps past every class's tail (P(previous use further back) < TAIL for each) add nothing, so the band
    # ends there and the search stops there: a window that never fills the cache does not spread the band's
    # points over 2^41 steps, and a cache that holds every window up to the tail is all hits
    with np.errstate(divide="ignore", invalid="ignore"):
        tails = (
            1.0
            + (np.log(TAIL * used) / batch[None, :] - classes.log_first[:, None]) / classes.log_next[:, None]
        )
    tail = np.ceil(np.where((used > 0) & (classes.log_next[:, None] < 0), tails, np.inf).max(axis=0))
    # the band of gaps where P(hit | gap) goes from ~1 to ~0: D(d) ± 6σ crosses C. Bracketed by doubling
    # (1, 2, 4, ..., DOUBLINGS_PER_CALL at a time, on the pairs not yet past it or their tail), then narrowed
    # by bisection to 1/8 of the gap (the band's points are spread over it anyway): widened, never cut
    doublings = 2.0 ** np.arange(int(np.log2(LONGEST_GAP)) + 2)
    n_pairs = capacity.size
    first = np.full((2, n_pairs), -1)  # first doubling with margin >= 0 (+, then −); -1: none up to the tail
    pending = np.arange(n_pairs)
    for begin in range(0, doublings.size, DOUBLINGS_PER_CALL):
        gaps = doublings[begin : begin + DOUBLINGS_PER_CALL]
        plus, minus = margins(np.broadcast_to(gaps, (pending.size, gaps.size)), pending, shared=True)
        for side, margin in enumerate((plus, minus)):
            reached = margin >= 0
            now = reached.any(axis=1) & (first[side, pending] < 0)
            first[side, pending[now]] = begin + reached[now].argmax(axis=1)
        pending = pending[~(minus >= 0).any(axis=1) & (gaps[-1] < tail[pending])]
        if pending.size == 0:
            break
    ends = []
    for side in (0, 1):
        # not reached: the window never fills the cache, up to the tail or 2^41 steps
        hi = np.where(first[side] >= 0, doublings[first[side]], doublings[-1])
        lo = np.where(first[side] != 0, hi / 2.0, 0.0)
        search = (first[side] > 0) & (lo < tail)
        while True:
            rows = np.nonzero(search & (hi - lo > np.maximum(1.0, hi * BAND_EDGE_TOLERANCE)))[0]
            if rows.size == 0:
                break
            mid = np.floor((lo[rows] + hi[rows]) / 2.0)
            fits = margins(mid[:, None], rows)[side][:, 0] < 0
            lo[rows[fits]] = mid[fits]
            hi[rows[~fits]] = mid[~fits]
        # the band starts where a window surely fits (lo) and ends where it surely does not (hi)
        ends.append(np.maximum(lo, 1.0) if side == 0 else hi)
    d_lo = np.minimum(ends[0], np.maximum(tail, 1.0))
    d_hi = np.maximum(np.minimum(ends[1], tail), d_lo)
    points = np.minimum(MAX_GAP_POINTS, d_hi - d_lo + 2).astype(np.int64)
    per_expert = np.empty_like(used)
    # pairs with as many gap points together; a block takes its widest pair's count, and a narrower pair's
    # rounded points then repeat integers, which adds empty bins (exact zeros): its sum is the same
    order = np.argsort(points, kind="stable")
    begin = 0
    while begin < order.size:
        # the longest run of (ascending) widths whose block, count x its last width x classes, fits
        cost = (np.arange(order.size - begin) + 1) * points[order[begin:]] * used.shape[0]
        stop = begin + max(1, int(np.searchsorted(cost, BLOCK_ELEMENTS, side="right")))
        rows = order[begin:stop]
        width = int(points[rows[-1]])
        edges = np.round(np.linspace(d_lo[rows] - 1.0, d_hi[rows], width, axis=1)).astype(np.float64)
        absent, distinct, var = stats(edges, rows)
        safe = np.where(used[:, rows] > 0, used[:, rows], 1.0)[:, :, None]
        # N(d + 1) = N(d)·(1 − νπ)^B for d >= 1, and N(1) = (1 − π)^B
        nxt = np.where(
            edges[None, :, :] > 0,
            absent * np.exp(batch[rows][None, :, None] * ln),
            np.exp(batch[rows][None, :, None] * lf),
        )
        beyond = (absent - nxt) / safe  # P(previous use more than d steps back | used now), per edge
        # gaps up to edges[0] are sure hits; gaps in (edges[j], edges[j+1]] hit with P(hit | gap = edges[j+1])
        p_bin = beyond[:, :, :-1] - beyond[:, :, 1:]
        # P(hit | gap) = Φ((C − ½ − D + δ)/σ), δ = 1 − N_i: the reused expert is not among the others. With
        # many classes δ in [0, 1] is interpolated through 0, ½, 1 (error <= max|Φ‴|/6 · 0.048 = 0.0032/σ³,
        # and many experts make σ large): three normal CDFs per gap instead of one per class and gap
        inv_sigma = 1.0 / np.sqrt(var[:, 1:] + 1e-12)
        z = (capacity[rows][:, None] - 0.5 - distinct[:, 1:]) * inv_sigma
        delta = 1.0 - absent[:, :, 1:]
        if used.shape[0] <= EXACT_CDF_CLASSES:
            hit_given = ndtr(z[None] + delta * inv_sigma[None])
        else:
            f0, fh, f1 = ndtr(z), ndtr(z + 0.5 * inv_sigma), ndtr(z + inv_sigma)
            c1, c2 = 4.0 * fh - 3.0 * f0 - f1, 2.0 * (f0 + f1) - 4.0 * fh
            hit_given = f0[None] + delta * (c1[None] + delta * c2[None])
        in_band = np.add.accumulate(p_bin * hit_given, axis=2)[:, :, -1] if width > 1 else 0.0
        hit = (1.0 - beyond[:, :, 0]) + in_band
        per_expert[:, rows] = used[:, rows] * (1.0 - np.clip(hit, 0.0, 1.0))
        begin = stop
    return per_expert


def device_cache_misses(
    inclusion: FloatArray,
    new_origin: FloatArray,
    mask: NDArray[np.bool_],
    batch: int,
    capacity: int,
    top_k: int,
) -> tuple[float, float, FloatArray]:
    """(accesses per step, misses per step, each expert's misses per step, in ``np.nonzero(mask)`` order) of
    an LRU cache of ``capacity`` experts over the experts in ``mask`` (MoE layers x experts), for a decode batch
    of ``batch`` sequences: :func:`lru_outcomes` for one pair."""
    classes = ExpertClasses.of(inclusion, new_origin, mask, top_k)
    accesses, misses, per_expert = lru_outcomes(classes, batch, capacity)
    return float(accesses[0]), float(misses[0]), per_expert[classes.of_item, 0]
