"""Exact sums over every decode step of many configurations, from a few evaluated steps per batch size.

A decode step of ``B`` sequences at context ``c`` (each new token attends to ``c`` tokens) costs what
:func:`capsim.engine.passes.decode_passes` says; predict sums that over the steps c = P+1 … P+G−1. For a fixed B the
step is a *piecewise affine* function of c, because

- only the attention core depends on c, through min(c, w) per layer (FLOPs ∝ B·min(c, w), KV bytes
  ∝ B·(min(c, w) + 1)): affine between the model's finite windows w;
- every roofline op is charged max(t_compute, t_memory) of two such affine functions: affine on each side of
  the point where t_compute − t_memory changes sign (at most one per op between two windows).

So each summed quantity (time, time per resource, bytes, FLOPs) is affine between *knots*: the smallest and
largest context any configuration of that batch needs, the windows, and each op's flip, located by linear
interpolation of its t_compute − t_memory (:attr:`capsim.engine.roofline.PassTimes.op_times`) between two knots and
bracketed by the integers either side. The sum of an affine f over the integers x … y is
(y − x + 1)·(f(x) + f(y))/2, so a configuration's total needs no further evaluation. Nothing here re-derives
a formula: the knots' values come from ``decode_passes`` itself, and the flips from the roofline's own
comparison, refined until no op flips between two adjacent knots.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from capsim.engine.passes import decode_steps
from capsim.engine.roofline import RESOURCES, PassTimes

if TYPE_CHECKING:
    from capsim.engine.offload import DecodeCache

SWEEP_RESOURCES: tuple[str, ...] = (*RESOURCES, "cpu", "link")
"""The roofline's resources plus those the cpu-experts mode charges (CPU compute, PCIe hand-offs), in the
order predict's bottleneck meets them."""

QUANTITIES: tuple[str, ...] = (
    "time",
    *(f"time_{r}" for r in SWEEP_RESOURCES),
    "weight_bytes_sparse",
    "weight_bytes_dense",
    "kv_read_bytes",
    "flops_sparse",
    "flops_dense",
)
"""Per-step quantities :func:`decode_totals` sums over the decode steps (seconds, bytes, FLOPs)."""


OUTCOMES_KEPT = 100_000
"""Cache outcomes an offload group keeps (two floats per (batch, capacity)); past that the memo restarts."""


class ModeAdjust:
    """The mode's change to device-resident passes, as predict applies it (:mod:`capsim.engine.offload`), for
    one resolved group:

    - cpu-experts: the off-GPU experts' work moves to the CPU, plus the PCIe hand-offs. Those depend on a
      pass's tokens, not its context, so decode sums stay piecewise affine between the same knots.
    - offload: the expert cache's misses cross the links (:func:`capsim.engine.offload.decode_link_times`,
      :func:`~capsim.engine.offload.prefill_link_times`). The cache holds what a configuration's memory
      leaves (its ``capacity``), so a pass is keyed by (batch, capacity); the steady-state misses per step
      of each distinct pair come from :class:`capsim.engine.offload.DecodeCache` (predict's model), once,
      the new pairs of a chunk evaluated together.
      A decode step's link time does not depend on its context; with prefetch the step takes
      max(device, link), whose flip :meth:`decode` returns as one more margin for the knots to bracket.
    """

    def __init__(self, rs: Any) -> None:
        from capsim.engine.placement import DEVICE

        self.rs = rs
        mode = rs.deployment.mode
        off_device = bool(rs.expert_tiers.size and (rs.expert_tiers != DEVICE).any())
        self.offload = mode == "offload" or (mode in ("cpu", "gpu") and off_device)
        self.cpu_experts = mode == "cpu-experts"
        self._outcomes: dict[tuple[int, int], tuple[float, float]] = {}
        self._cache: DecodeCache | None = None
        self._no_passes: PassTimes | None = None
        if self.offload:
            from capsim.engine.offload import host_tiers

            self.host = host_tiers(rs)  # raises DoesNotFitError where host DRAM is too small, as predict does
            self.cacheable = rs.expert_tiers != DEVICE

    def _misses(self, batch: np.ndarray, capacity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(misses, SSD reads) per decode step of each (batch, capacity): the pairs not yet seen are evaluated
        together (:class:`capsim.engine.offload.DecodeCache`, predict's model), each once."""
        if self._cache is None:
            from capsim.engine.offload import DecodeCache

            rs = self.rs
            self._cache = DecodeCache(
                rs,
                self.cacheable,
                self.host.page_cache_experts,
                rs.deployment.cache_policy,
                not rs.device_is_dram,
            )
        keys = list(zip(batch.astype(np.int64).tolist(), capacity.astype(np.int64).tolist()))
        if len(self._outcomes) > OUTCOMES_KEPT:  # memory follows the chunk, not the grid
            self._outcomes.clear()
        new = [key for key in dict.fromkeys(keys) if key not in self._outcomes]
        if new:
            pairs = np.array(new, dtype=np.int64).reshape(len(new), 2)
            _, misses, reads = self._cache.outcomes(pairs[:, 0], pairs[:, 1])
            self._outcomes.update(zip(new, zip(misses.tolist(), reads.tolist())))
        values = np.array([self._outcomes[k] for k in keys], dtype=np.float64).reshape(len(keys), 2)
        return values[:, 0], values[:, 1]

    def prefill(self, cost: PassTimes, capacity: np.ndarray | None) -> None:
        """Apply the mode to prefill chunks (``capacity``: each pass's expert cache, offload only)."""
        if not cost.time.size:
            return
        if self.cpu_experts:
            self._cpu_experts(cost)
        elif self.offload:
            from capsim.engine.offload import charge_links, prefill_link_times

            assert capacity is not None  # evaluate_segment sizes the cache of every offload row
            times = prefill_link_times(self.rs, cost, capacity, self.host)
            charge_links(cost, times, self.rs.deployment.prefetch, self.rs.deployment.prefetch_accuracy)

    def decode(self, cost: PassTimes, batch: np.ndarray, capacity: np.ndarray | None) -> np.ndarray:
        """Apply the mode to decode steps of ``batch`` sequences; returns the extra margins (steps x k) whose
        sign changes the step's affine piece (offload with prefetch: slowest link − device time)."""
        none = np.zeros((cost.time.size, 0))
        if not cost.time.size:
            return none
        if self.cpu_experts:
            self._cpu_experts(cost)
        elif self.offload:
            from capsim.engine.offload import charge_links, decode_link_times

            assert capacity is not None
            misses, reads = self._misses(batch, capacity)
            dep = self.rs.deployment
            margin = charge_links(
                cost, decode_link_times(self.rs, misses, reads), dep.prefetch, dep.prefetch_accuracy
            )
            if self.rs.deployment.prefetch:
                return margin[:, None]
        return none

    def _cpu_experts(self, cost: PassTimes) -> None:
        from capsim.engine.offload import apply_cpu_experts
        from capsim.engine.passes import decode_passes

        if self._no_passes is None:  # the other phase's argument: no passes (building it costs ~0.4 ms)
            self._no_passes = decode_passes(self.rs, np.zeros(0), np.zeros(0))
        # SSD paging (the only batch-dependent part, given as ``batch``) is outside the sweep: no SSD tiers
        apply_cpu_experts(self.rs, 1, cost, self._no_passes)


def step_quantities(cost: PassTimes, n: int) -> np.ndarray:
    """The :data:`QUANTITIES` of ``n`` passes as an (n, len(QUANTITIES)) matrix."""
    out = np.empty((n, len(QUANTITIES)))
    zero = np.zeros(n)
    rows = [
        cost.time,
        *(cost.time_by_resource.get(r, zero) for r in SWEEP_RESOURCES),
        cost.weight_bytes_sparse,
        cost.weight_bytes_dense,
        cost.kv_read_bytes,
        cost.flops_sparse,
        cost.flops_dense,
    ]
    for i, row in enumerate(rows):
        out[:, i] = row
    return out


def finite_windows(model: Any) -> np.ndarray:
    """The model's distinct finite attention windows, ascending (empty for full attention everywhere)."""
    windows = {model.window(i) for i in range(model.num_layers)} - {None}
    return np.array(sorted(windows), dtype=np.int64)


class Knots:
    """Decode steps evaluated at knots (batch id, context), kept sorted by (batch id, context). A batch id
    names one step shape: a batch size and, under offload, the expert cache's capacity."""

    def __init__(
        self, rs: Any, batches: np.ndarray, adjust: ModeAdjust, capacities: np.ndarray | None = None
    ) -> None:
        self.rs = rs
        self.batches = batches
        self.capacities = capacities
        self.adjust = adjust
        self.bid = np.zeros(0, dtype=np.int64)
        self.context = np.zeros(0, dtype=np.int64)
        self.values = np.zeros((0, len(QUANTITIES)))
        self.margin = np.zeros((0, 0))
        self.code = np.zeros(0, dtype=np.int64)
        self.metric_peak_flops = 0.0

    def add(self, bid: np.ndarray, context: np.ndarray) -> None:
        """Evaluate the (batch id, context) knots not yet present and merge them in order."""
        scale = np.int64(max(int(context.max(initial=0)), int(self.context.max(initial=0))) + 1)
        new_keys = np.unique(bid * scale + context)
        if self.bid.size:
            new_keys = new_keys[~np.isin(new_keys, self.bid * scale + self.context)]
        if new_keys.size == 0:
            return
        b, c = new_keys // scale, new_keys % scale
        cost = decode_steps(self.rs, self.batches[b].astype(np.float64), c.astype(np.float64))
        extra = self.adjust.decode(
            cost, self.batches[b], None if self.capacities is None else self.capacities[b]
        )
        self.metric_peak_flops = cost.metric_peak_flops
        margin = np.stack([tc - tm for _, tc, tm in cost.op_times], axis=1)  # (knots, ops)
        margin = np.concatenate([margin, extra], axis=1)
        bits = np.left_shift(np.int64(1), np.arange(margin.shape[1], dtype=np.int64))
        code = ((margin >= 0) * bits).sum(axis=1)  # bit k set: op k compute-bound there
        bid_all = np.concatenate([self.bid, b])
        ctx_all = np.concatenate([self.context, c])
        order = np.lexsort((ctx_all, bid_all))
        self.bid, self.context = bid_all[order], ctx_all[order]
        self.values = np.concatenate([self.values, step_quantities(cost, b.size)])[order]
        self.margin = np.concatenate([self.margin, margin])[order] if self.margin.size else margin[order]
        self.code = np.concatenate([self.code, code])[order]

    def flip_cuts(self) -> tuple[np.ndarray, np.ndarray]:
        """Knots to add: for each pair of adjacent knots of one batch more than one step apart where some op's
        binding resource differs, the integers either side of that op's interpolated flip."""
        same = (self.bid[1:] == self.bid[:-1]) & (self.context[1:] > self.context[:-1] + 1)
        j = np.nonzero(same & (self.code[1:] != self.code[:-1]))[0]
        if j.size == 0:
            return j, j
        differs = self.code[j] ^ self.code[j + 1]
        op = np.log2(differs & -differs).astype(np.int64)  # the lowest op that flips
        d0, d1 = self.margin[j, op], self.margin[j + 1, op]
        k0, k1 = self.context[j], self.context[j + 1]
        # the op's margin is affine between the knots: it crosses 0 at k0 + d0/(d0 − d1)·(k1 − k0)
        cut = np.clip(np.floor(k0 + d0 / (d0 - d1) * (k1 - k0)), k0, k1 - 1).astype(np.int64)
        return np.concatenate([self.bid[j], self.bid[j]]), np.concatenate([cut, cut + 1])


def decode_totals(
    rs: Any,
    batch: np.ndarray,
    prompt_len: np.ndarray,
    gen_len: np.ndarray,
    context_span: tuple[int, int] | None = None,
    context_step: float = 1.0,
    capacity: np.ndarray | None = None,
    adjust: ModeAdjust | None = None,
) -> tuple[np.ndarray, float]:
    """Exact sums over the gen_len − 1 decode steps of each configuration (step j attends to prompt_len + j
    tokens, as :func:`capsim.engine.passes.decode_times` evaluates them one by one): a (len(QUANTITIES), n) matrix,
    one row per quantity, and the metric peak FLOP/s of the passes. Configurations with gen_len < 2 have no
    steps and sum to 0.

    ``context_span`` = (first, last) context the knots of every batch span (default: those of this call's
    configurations). A sweep passes its whole grid's, so a row's value does not depend on which other rows
    share its chunk: knots in the same places give the same bits, so any chunking or backend writes the same
    output.

    ``context_step`` E != 1 (speculative decoding: a verify step yields E tokens per sequence) sums instead over
    the ceil((gen_len − 1)/E) steps at contexts prompt_len + E·j, j = 1, 2, …, as
    :func:`capsim.engine.passes.decode_times` places them; each piece then holds the progression's points in
    [k_j, k_{j+1}).

    ``capacity``: each configuration's expert-cache capacity under offload (steps are then keyed by batch and
    capacity); ``adjust``: the group's :class:`ModeAdjust` (made here when not given)."""
    adjust = adjust if adjust is not None else ModeAdjust(rs)
    if context_step != 1.0:
        return _progression_totals(
            rs, batch, prompt_len, gen_len, context_span, float(context_step), capacity, adjust
        )
    batch = np.asarray(batch, dtype=np.int64)
    lo = np.asarray(prompt_len, dtype=np.int64) + 1
    hi = np.asarray(prompt_len, dtype=np.int64) + np.asarray(gen_len, dtype=np.int64) - 1
    n = batch.shape[0]
    totals = np.zeros((len(QUANTITIES), n))
    idx = np.nonzero(lo <= hi)[0]
    if idx.size == 0:
        return totals, 0.0
    lo, hi = lo[idx], hi[idx]
    batches, capacities, bid = _step_shapes(batch[idx], None if capacity is None else capacity[idx])
    first_c, last_c = context_span if context_span is not None else (int(lo.min()), int(hi.max()))
    if first_c > int(lo.min()) or last_c < int(hi.max()):
        raise ValueError(f"context_span {context_span} does not cover the steps' contexts")
    c_min = np.full(batches.size, first_c, dtype=np.int64)
    c_max = np.full(batches.size, last_c, dtype=np.int64)

    knots = Knots(rs, batches, adjust, capacities)
    ids = np.arange(batches.size)
    kb, kc = [ids, ids], [c_min, c_max]
    for w in finite_windows(rs.model):
        inside = np.nonzero((c_min < w) & (w < c_max))[0]
        kb.append(inside)
        kc.append(np.full(inside.size, w))
    knots.add(np.concatenate(kb), np.concatenate(kc))
    while True:  # each round splits every flipping gap; gaps only shrink, so this ends
        cut_bid, cut_ctx = knots.flip_cuts()
        if cut_bid.size == 0:
            break
        knots.add(cut_bid, cut_ctx)

    # pieces: adjacent knots of one batch; piece j covers the integers [k_j, k_{j+1} − 1] (the last of its
    # batch also k_{j+1}); a batch with one knot (one context) gets a one-point piece of slope 0
    first = np.searchsorted(knots.bid, ids)
    last = np.searchsorted(knots.bid, ids, side="right") - 1
    start = knots.context
    nxt = np.minimum(np.arange(knots.bid.size) + 1, knots.bid.size - 1)
    is_last = np.zeros(knots.bid.size, dtype=bool)
    is_last[last] = True
    end_knot = np.where(is_last, np.arange(knots.bid.size), nxt)
    span = (knots.context[end_knot] - start).astype(np.float64)
    slope = np.divide(
        knots.values[end_knot] - knots.values,
        span[:, None],
        out=np.zeros_like(knots.values),
        where=span[:, None] > 0,
    )
    dom_hi = np.where(is_last, start, knots.context[end_knot] - 1)
    pieces_of = np.maximum(last - first, 1)  # a batch's pieces start at its first knot

    values_t, slope_t = np.ascontiguousarray(knots.values.T), np.ascontiguousarray(slope.T)
    sums = np.zeros((len(QUANTITIES), idx.size))
    for m in range(int(pieces_of.max())):
        j = first[bid] + m
        valid = m < pieces_of[bid]
        j = np.where(valid, j, first[bid])
        # the last piece of a batch runs to its last knot inclusive
        top = np.where(j + 1 == last[bid], knots.context[last[bid]], dom_hi[j])
        x = np.maximum(lo, start[j])
        y = np.minimum(hi, top)
        count = np.where(valid, np.maximum(y - x + 1, 0), 0).astype(np.float64)
        # Σ_{c=x..y} (V_j + slope_j·(c − k_j)) = count·(V_j + slope_j·((x + y)/2 − k_j)), in place
        piece = np.take(slope_t, j, axis=1)
        piece *= (x + y) / 2.0 - start[j]
        piece += np.take(values_t, j, axis=1)
        piece *= count
        sums += piece
    totals[:, idx] = sums
    return totals, knots.metric_peak_flops


def _progression_totals(
    rs: Any,
    batch: np.ndarray,
    prompt_len: np.ndarray,
    gen_len: np.ndarray,
    context_span: tuple[int, int] | None,
    step: float,
    capacity: np.ndarray | None,
    adjust: ModeAdjust,
) -> tuple[np.ndarray, float]:
    """:func:`decode_totals` over steps at contexts P + E·j, j = 1 … S, S = ceil((G − 1)/E)."""
    batch = np.asarray(batch, dtype=np.int64)
    prompt = np.asarray(prompt_len, dtype=np.int64)
    steps = np.ceil((np.asarray(gen_len, dtype=np.int64) - 1).clip(0) / step).astype(np.int64)
    n = batch.shape[0]
    totals = np.zeros((len(QUANTITIES), n))
    idx = np.nonzero(steps > 0)[0]
    if idx.size == 0:
        return totals, 0.0
    p, s = prompt[idx].astype(np.float64), steps[idx]
    lo_c, hi_c = p + step, p + step * s
    batches, capacities, bid = _step_shapes(batch[idx], None if capacity is None else capacity[idx])
    first_c = (
        int(np.floor(lo_c.min())) if context_span is None else min(context_span[0], int(np.floor(lo_c.min())))
    )
    last_c = (
        int(np.ceil(hi_c.max())) if context_span is None else max(context_span[1], int(np.ceil(hi_c.max())))
    )
    ids = np.arange(batches.size)
    knots = Knots(rs, batches, adjust, capacities)
    kb, kc = [ids, ids], [np.full(batches.size, first_c), np.full(batches.size, last_c)]
    for w in finite_windows(rs.model):
        if first_c < w < last_c:
            kb.append(ids)
            kc.append(np.full(batches.size, w))
    knots.add(np.concatenate(kb), np.concatenate(kc).astype(np.int64))
    while True:
        cut_bid, cut_ctx = knots.flip_cuts()
        if cut_bid.size == 0:
            break
        knots.add(cut_bid, cut_ctx)
    first = np.searchsorted(knots.bid, ids)
    last = np.searchsorted(knots.bid, ids, side="right") - 1
    sums = np.zeros((len(QUANTITIES), idx.size))
    for m in range(int((last - first).max()) + 1):
        j = first[bid] + m
        valid = j <= last[bid]
        j = np.where(valid, j, first[bid])
        is_last = j == last[bid]
        k0 = knots.context[j].astype(np.float64)
        k1 = knots.context[np.where(is_last, j, j + 1)].astype(np.float64)
        slope = np.where(
            is_last[:, None],
            0.0,
            (knots.values[np.where(is_last, j, j + 1)] - knots.values[j]) / np.maximum(k1 - k0, 1.0)[:, None],
        )
        # progression points P + E·i inside [k0, k1) (the last knot of a batch: the point k0 itself)
        i_lo = np.maximum(np.ceil((k0 - p) / step), 1.0)
        i_hi = np.where(is_last, np.floor((k0 - p) / step), np.ceil((k1 - p) / step) - 1.0)
        i_hi = np.minimum(i_hi, s)
        count = np.where(valid & (i_hi >= i_lo), i_hi - i_lo + 1.0, 0.0)
        mean_c = p + step * (i_lo + i_hi) / 2.0
        piece = knots.values[j].T + slope.T * (mean_c - k0)
        sums += piece * count
    totals[:, idx] = sums
    return totals, knots.metric_peak_flops


def _step_shapes(
    batch: np.ndarray, capacity: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """(distinct batches, their cache capacities or None, step-shape id of each configuration): one shape per
    distinct batch, or per distinct (batch, capacity) under offload."""
    if capacity is None:
        batches, bid = _distinct(batch)
        return batches, None, bid
    cap = np.asarray(capacity, dtype=np.int64)
    scale = np.int64(int(cap.max()) + 1)
    keys, bid = _distinct(batch.astype(np.int64) * scale + cap)
    return keys // scale, keys % scale, bid


def _distinct(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct values, index of each value among them) of non-negative integers; a presence table
    instead of a sort when the values are small (batch sizes are)."""
    top = int(values.max())
    if top > 8 * values.size + 1024:
        distinct, inverse = np.unique(values, return_inverse=True)
        return distinct, inverse.reshape(-1)
    present = np.zeros(top + 1, dtype=bool)
    present[values] = True
    rank = np.cumsum(present) - 1
    return np.nonzero(present)[0], rank[values]
