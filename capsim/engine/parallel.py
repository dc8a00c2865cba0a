"""Parallel layouts: tensor (TP), attention data (attention-DP), expert (EP), pipeline (PP) and data (DP)
parallelism, over one or more nodes.

Layout: ``tp x attention_dp x pp x dp`` devices = ``nodes x`` devices per node, TP innermost (a TP group lies
inside one node), then attention-DP ranks, then pipeline stages, then replicas.

Attention data parallelism (``--attention-dp N``, SGLang ``--enable-dp-attention``, TensorRT-LLM attention DP,
vLLM ``--data-parallel-size`` with ``--enable-expert-parallel``): N attention ranks of ``tp`` devices each hold
a copy of the attention (and dense-FFN, shared-expert, embedding, lm_head) weights and ceil(B/N) of the batch's
sequences with their KV cache; the busiest rank sets the step (the DP-rank imbalance of a batch that does not
split evenly). The MoE layers run over all ``M = tp x N`` devices of the stage: with ``--ep E`` (E divides M and
the expert slots) E expert-parallel groups each hold (experts + redundant)/E experts, every expert split
tensor-parallel over the M/E devices of its group; with ``--ep 1`` every expert is split over all M devices and
the tokens of the N ranks are gathered before and scattered after the MoE layer (an all-reduce's volume).

Dispatch and combine (EP > 1), per MoE layer and rank: each of the rank's T/M tokens goes to its k experts'
M/E slices; (E−1)/E of those copies leave the rank, each way: bytes = (T/M)·k·(M/E)·d·b·(E−1)/E (per token and
layer, with M = E: d·k·b·(E−1)/E). Backends (``--all-to-all``):
- nccl: NCCL's base latency + (M−1) hop latencies + bytes over the per-direction link (NVLink inside a node,
  the scale-out network for the share that leaves the node), activations bf16 both ways;
- deepep: DeepEP's kernels at the bandwidths its README publishes (deepseek-ai/DeepEP docs/legacy.md, commit
  0297fc80, H800 + CX7 400 Gb/s InfiniBand, DeepSeek-V3 setting: hidden 7168, top-8, FP8 dispatch, BF16
  combine): normal kernels for prefill (intranode 153/158 GB/s of ~160 GB/s NVLink; internode per EP size),
  low-latency kernels for decode (per EP size, 128 tokens per rank); bytes are the logical bytes the table
  counts (every top-k copy), scaled by this system's link over the one measured (a documented extrapolation).

Expert load balance: the slowest EP group sets the MoE layer's time. Its load comes from the router's inclusion
probabilities π (capsim.routing): an expert slot s on group r receives a token with probability q_s = π_e/c_e
(c_e replicas of expert e share its tokens), so group r's token-expert pairs in a step of T tokens are ≈
Normal(T·Σq_s, T·Σq_s(1−q_s)·(E−m)/(E−1)) (m slots per group; the finite-population factor makes the uniform
case exact), and its activated slots ≈ Normal(Σa_s, Σa_s(1−a_s)) with a_s = 1 − (1 − q_s)^T. The straggler
factors are E[max over groups]/mean, of the pairs (applied to the experts' compute time) and of the activated
slots (applied to their weight reads), E[max] integrated numerically over the groups' normal CDFs (analytic:
no sampling; :func:`expected_max_normal`), at T = 2^(j/8) and interpolated in log T between those nodes. ``--redundant-experts R`` places E + R slots EPLB-style (DeepSeek's EPLB: replicate the heaviest
experts, then pack slots onto groups heaviest-first); R = 0 keeps the contiguous placement of vLLM/SGLang
without EPLB.

Pipeline (PP, inference): stage s holds ceil(L/pp) decoder layers (the first the embeddings, the last the
lm_head). A replica's batch B is split into m = min(B, pp) micro-batches that circulate through the stages, so
every stage works on one micro-batch while the others work on the rest. A sequence's next token needs its
micro-batch to pass all pp stages: TPOT = pp x t_stage(B/m) + hops, with t_stage = t_model(B/m) x ceil(L/pp)/L
(the slowest stage), hops = (pp−1) activation transfers of (B/m)·d·2/tp bytes per rank (NVLink inside a node,
the scale-out network across nodes, plus NCCL's base latency each). PP does not cut latency; it holds bigger
models and keeps pp micro-batches in flight. Prefill: the chunks stream through the stages, TTFT =
(chunks + pp − 1) x the slowest stage's chunk time + hops.

Data parallel (DP): dp independent replicas, each serving ceil(B/dp) of the batch; throughput x dp, latency
that of one replica, memory per device that of one replica. Inference replicas do not communicate.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from capsim.engine.formulas_eval import ring_allreduce_time
from capsim.engine.reports import ExpertParallelReport
from capsim.engine.roofline import ACTIVATION_BYTES, PassTimes

if TYPE_CHECKING:
    from capsim.engine.resolved import ResolvedScenario
    from capsim.routing import Router


# DeepEP V1 published performance (deepseek-ai/DeepEP docs/legacy.md, commit 0297fc801788b14b338a46554faca28d419e518a,
# "Performance"): H800 GPUs, one CX7 400 Gb/s InfiniBand NIC each (~50 GB/s), DeepSeek-V3 setting (hidden 7168,
# top-8, FP8 dispatch, BF16 combine). Bandwidths are the table's logical GB/s.
DEEPEP_NVLINK_REF_GB_S = 160.0  # "H800 (~160 GB/s NVLink maximum bandwidth)"
DEEPEP_RDMA_REF_GB_S = 50.0  # "CX7 InfiniBand 400 Gb/s RDMA network card (~50 GB/s maximum bandwidth)"
DEEPEP_NORMAL_INTRANODE_GB_S = (153.0, 158.0)  # (dispatch, combine), EP 8, NVLink
DEEPEP_NORMAL_INTERNODE = {
    16: (43.0, 43.0),
    32: (58.0, 57.0),
    64: (51.0, 50.0),
}  # EP: (dispatch, combine), RDMA
DEEPEP_LOW_LATENCY = {  # EP: (dispatch GB/s, combine GB/s), 128 tokens per rank, pure RDMA
    8: (98.0, 127.0),
    16: (63.0, 74.0),
    32: (48.0, 53.0),
    64: (43.0, 46.0),
    128: (39.0, 39.0),
    256: (39.0, 40.0),
}
DEEPEP_FP8_DISPATCH_BYTES = 1.0 + 4.0 / 128.0
"""FP8 dispatch: one byte per element plus one fp32 scale per 128 elements (DeepEP's per-token-group FP8)."""


def _erf_in_place(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): numpy has no erf, and importing scipy.special costs
    ~0.3 s, more than a whole EP predict. Overwrites ``x`` (temporaries cost more than the arithmetic): the
    polynomial is evaluated in place, with the same operations in the
    same order as t·(a1 + t·(a2 + t·(a3 + t·(a4 + t·a5)))), t = 1/(1 + p·|x|): the same bits."""
    sign = np.sign(x)
    a = np.abs(x, out=x)
    t = np.multiply(a, 0.3275911)
    t += 1.0
    np.divide(1.0, t, out=t)
    poly = np.multiply(t, 1.061405429)
    poly += -1.453152027
    poly *= t
    poly += 1.421413741
    poly *= t
    poly += -0.284496736
    poly *= t
    poly += 0.254829592
    poly *= t
    gauss = np.multiply(a, a, out=t)  # t is spent: exp(-a²) in its place
    np.negative(gauss, out=gauss)
    np.exp(gauss, out=gauss)
    poly *= gauss
    np.subtract(1.0, poly, out=poly)
    poly *= sign
    return poly


MAX_NORMAL_SIGMAS = 6.0
"""Half-width, in standard deviations, of the range a group's load is taken to lie in (outside: Φ(−6) ≈ 1e-9)."""
MAX_NORMAL_SPACING = 1.0
"""Trapezoid spacing of the E[max] integral, in standard deviations of the narrowest group that can be the max."""
MAX_NORMAL_POINTS = (25, 49, 97, 193, 385)
"""Point counts of that rule: the smallest whose spacing is at most :data:`MAX_NORMAL_SPACING` σ, and at least 25
(a spacing of σ/2 over the ±6σ of a lone group; with 13 points the factors moved by up to 1e-5); past 193,
the narrowest group is resolved more coarsely."""
_BLOCK_ELEMENTS = 1 << 15
"""Elements (entries x groups x points) evaluated at a time: the erf's temporaries stay in the CPU's cache."""


def expected_max_normal(mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """E[max_r X_r] of independent X_r ~ Normal(mean_r, var_r) over the last axis (other axes: batch).

    The max lies between L = max_r(μ_r − 6σ_r) and U = max_r(μ_r + 6σ_r) but for a tail of Φ(−6) ≈ 1e-9, so
    E[max] = L + ∫_L^U (1 − Π_r Φ_r(x)) dx. Only the groups whose own range reaches above L can move the
    product there (the others' Φ ≥ Φ(6)), so the product runs over them; with none (every σ = 0, or point
    masses below one at L) E[max] = L. The integrand is flat at both ends, where the trapezoid rule converges
    as fast as on a periodic function, so a spacing of the narrowest such group's σ, and 25 points at least,
    suffices (:data:`MAX_NORMAL_POINTS`). Against Φ to double precision on a 4,001-point grid, the straggler factors
    of the shipped routers are within 1e-6 (the A&S erf's 1.5e-7 dominates); the previous rule (129 points
    over min μ − 6σ_max … max μ + 6σ_max, whatever the spread of the means) was off by up to 1.6e-3 at large T,
    where the groups' ranges are narrow next to the spread. Each entry's value depends on that entry alone
    (its groups, in their order), whatever else is in the call."""
    mean = np.asarray(mean, dtype=np.float64)
    sd = np.sqrt(np.maximum(np.asarray(var, dtype=np.float64), 0.0))
    shape, groups = mean.shape[:-1], mean.shape[-1]
    mu, sd = mean.reshape(-1, groups), sd.reshape(-1, groups)
    # a group too narrow for the finest rule to resolve next to the widest counts as a point mass at its mean
    # (E[max] moves by about σ²·p(μ)/2, p the density of the other groups' max there)
    span = (mu + MAX_NORMAL_SIGMAS * sd).max(axis=1) - (mu - MAX_NORMAL_SIGMAS * sd).max(axis=1)
    finest = span / (3.0 * MAX_NORMAL_SPACING * (MAX_NORMAL_POINTS[-1] - 1))
    sd = np.where(sd < finest[:, None], 0.0, sd)
    top = mu + MAX_NORMAL_SIGMAS * sd
    point = sd == 0
    normal_lo = np.where(point, -np.inf, mu - MAX_NORMAL_SIGMAS * sd).max(axis=1)
    point_lo = np.where(point, mu, -np.inf).max(axis=1)
    lo = np.maximum(normal_lo, point_lo)
    width = top.max(axis=1) - lo
    contender = top > lo[:, None]  # σ > 0 there: a point mass's μ is at most L
    count = contender.sum(axis=1)
    # a point mass above every normal's range sets L: the integrand starts at 1 − Π Φ(L), not flat
    pinned = point_lo > normal_lo
    out = lo.copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        narrowest = np.where(contender, sd, np.inf).min(axis=1)
        need = width / (MAX_NORMAL_SPACING * narrowest) * np.where(pinned, 3.0, 1.0) + 1.0
    rule = np.searchsorted(np.asarray(MAX_NORMAL_POINTS), np.where(count > 0, need, 0.0))
    rule = np.minimum(rule, len(MAX_NORMAL_POINTS) - 1)
    # contenders first, in their group order: an entry's product runs over the same groups in the same order
    order = np.argsort(~contender, axis=1, kind="stable")
    mu = np.take_along_axis(mu, order, axis=1)
    sd = np.take_along_axis(sd, order, axis=1)
    # entries sharing (contenders, points, pinned) are integrated together, in blocks
    kind = (count * len(MAX_NORMAL_POINTS) + rule) * 2 + pinned
    todo = np.nonzero(count > 0)[0]
    todo = todo[np.argsort(kind[todo], kind="stable")]
    starts = np.concatenate([[0], np.nonzero(np.diff(kind[todo]))[0] + 1, [todo.size]]).tolist()
    for s0, s1 in itertools.pairwise(starts):
        if s0 == s1:  # nothing to integrate
            continue
        first = todo[s0]
        c, points, at_point = int(count[first]), MAX_NORMAL_POINTS[int(rule[first])], bool(pinned[first])
        step = max(1, _BLOCK_ELEMENTS // (c * points))
        for b in range(s0, s1, step):
            i = todo[b : min(b + step, s1)]
            out[i] += _integral_above(mu[i, :c], sd[i, :c], lo[i], width[i], points, at_point)
    return np.asarray(out.reshape(shape), dtype=np.float64)


def _integral_above(
    mu: np.ndarray, sd: np.ndarray, lo: np.ndarray, width: np.ndarray, points: int, pinned: bool
) -> np.ndarray:
    """∫_lo^{lo+width} (1 − Π_r Φ((x − μ_r)/σ_r)) dx by trapezoids on ``points`` points, per entry (σ > 0).
    ``pinned``: the integrand is not flat at ``lo`` (a point mass sits there), so the points are placed at
    x = lo + width·u³ (u uniform): the integrand in u, 3u²·width·f(x), has vanishing first and third
    derivatives at u = 0, so the rule stays O(h⁶) there instead of O(h²)."""
    u = np.linspace(0.0, 1.0, points)
    x = lo[:, None, None] + width[:, None, None] * (u**3 if pinned else u)  # (entries, 1, points)
    z = x - mu[:, :, None]
    z /= sd[:, :, None]
    z /= math.sqrt(2.0)
    cdf = _erf_in_place(z)  # Φ = (1 + erf(z/√2)) / 2, in place
    cdf += 1.0
    cdf *= 0.5
    tail = cdf[:, 0].copy()  # Π_r Φ_r, multiplied in group order (what np.prod over the axis does, faster)
    for r in range(1, cdf.shape[1]):
        tail *= cdf[:, r]
    np.subtract(1.0, tail, out=tail)  # (entries, points)
    if pinned:
        tail *= 3.0 * u**2
    return np.asarray(np.trapezoid(tail, dx=1.0, axis=-1) * width / (points - 1), dtype=np.float64)


def eplb_slots(pi: np.ndarray, ep: int, redundant: int) -> tuple[np.ndarray, np.ndarray]:
    """Slot loads per EP group for one layer's inclusion π (E,): returns (q (ep, m), expert of each slot
    (ep, m)). R = 0: contiguous blocks of E/ep experts (no rebalancing). R > 0, EPLB-style (deepseek-ai/EPLB
    ``balanced_packing`` after ``replicate_experts``): each extra replica goes to the expert with the largest
    load per replica, then slots are packed heaviest-first onto the least loaded group with a free slot."""
    num_experts = pi.shape[0]
    slots = num_experts + redundant
    m = slots // ep
    if redundant == 0:
        experts = np.arange(num_experts).reshape(ep, m)
        return pi[experts], experts
    replicas = np.ones(num_experts, dtype=np.int64)
    for _ in range(redundant):
        replicas[int(np.argmax(pi / replicas))] += 1
    expert_of = np.repeat(np.arange(num_experts), replicas)
    load = (pi / replicas)[expert_of]
    order = np.argsort(-load, kind="stable")
    group_load = np.zeros(ep)
    filled = np.zeros(ep, dtype=np.int64)
    q = np.zeros((ep, m))
    experts = np.zeros((ep, m), dtype=np.int64)
    for s in order:
        open_groups = np.nonzero(filled < m)[0]
        g = open_groups[np.argmin(group_load[open_groups])]
        q[g, filled[g]] = load[s]
        experts[g, filled[g]] = expert_of[s]
        filled[g] += 1
        group_load[g] += load[s]
    return q, experts


def _layer_slot_loads(pi: np.ndarray, ep: int, redundant: int) -> tuple[np.ndarray, np.ndarray]:
    """(slot loads q (distinct placement problems, ep, m), the share of the layers each stands for). A layer's
    straggler factors depend only on the multiset of its groups, each the multiset of its slot loads, so each
    layer's q is put in a canonical order (slots ascending within a group, groups in lexicographic order) and
    layers with the same canonical q are evaluated once (R = 0: contiguous blocks; R > 0: EPLB sees only the
    multiset of loads, so layers with the same sorted π share one placement). The routers that shuffle the
    experts per layer then give one problem per model where every group holds one expert. Memoised per
    (π, EP, R): every call for missing straggler nodes asks again."""
    key = (pi.tobytes(), pi.shape, ep, redundant)
    if key not in _SLOT_LOADS:
        if len(_SLOT_LOADS) > 64:
            _SLOT_LOADS.clear()
        _SLOT_LOADS[key] = _canonical_slot_loads(pi, ep, redundant)
    return _SLOT_LOADS[key]


_SLOT_LOADS: dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray]] = {}


def _canonical_slot_loads(pi: np.ndarray, ep: int, redundant: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_layer_slot_loads`, evaluated."""
    if redundant == 0:
        q = pi.reshape(pi.shape[0], ep, -1)
    else:
        sorted_rows, inverse = np.unique(np.sort(pi, axis=1), axis=0, return_inverse=True)
        q = np.stack([eplb_slots(row, ep, redundant)[0] for row in sorted_rows])[inverse.reshape(-1)]
    q = np.sort(q, axis=2)
    q = np.stack([layer[np.lexsort(layer.T[::-1])] for layer in q])
    rows, counts = np.unique(q.reshape(q.shape[0], -1), axis=0, return_counts=True)
    return rows.reshape(rows.shape[0], ep, -1), np.asarray(counts / counts.sum(), dtype=np.float64)


def imbalance(
    pi: np.ndarray, ep: int, tokens: np.ndarray, redundant: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(token-pair straggler factor, activated-slot straggler factor) per entry of ``tokens`` for routing
    inclusion ``pi`` (layers, E), averaged over layers: E[max over EP groups] / mean (module docstring)."""
    pi = np.atleast_2d(np.asarray(pi, dtype=np.float64))
    tokens = np.asarray(tokens, dtype=np.float64)
    if ep == 1:
        ones = np.ones_like(tokens)
        return ones, ones
    # the mean over layers of the factor; identical placement problems share one evaluation
    q, weights = _layer_slot_loads(pi, ep, redundant)  # (rows, ep, m), (rows,)
    num_experts = pi.shape[1]
    k = float(pi[0].sum())
    m = q.shape[2]
    fpc = (num_experts - min(m, num_experts)) / (num_experts - 1) if num_experts > 1 else 0.0
    t = tokens[None, :, None]  # (1, n, 1)
    mean = t * q.sum(axis=2)[:, None, :]  # (rows, n, ep)
    var = t * (q * (1.0 - q)).sum(axis=2)[:, None, :] * fpc
    cap = tokens[None, :] * min(k, m)  # a group receives at most min(k, m) pairs per token
    emax = np.minimum(expected_max_normal(mean, var), cap)
    tok_f = np.maximum(emax / (tokens[None, :] * k / ep), 1.0)
    # a_s = 1 − (1 − q_s)^T as 1 − exp(T·log1p(−q_s)), and a_s(1 − a_s), once per distinct load and T (the
    # layers of a router that shuffles experts per layer hold the same E loads), then gathered per slot
    loads, slot = np.unique(np.clip(q, 0.0, 1.0), return_inverse=True)
    with np.errstate(divide="ignore", over="ignore"):
        # q_s = 1 (an expert every token picks): log1p(−1) = −inf, held finite so that T = 0 still gives a_s = 0
        log_miss = np.maximum(np.log1p(-loads), np.finfo(np.float64).min)
        a_load = -np.expm1(tokens[:, None] * log_miss[None, :])  # (n, distinct loads)
    slot = slot.reshape(q.shape)
    amean = np.ascontiguousarray(
        np.take(a_load, slot, axis=1).sum(axis=3).transpose(1, 0, 2)
    )  # (rows, n, ep)
    avar = np.ascontiguousarray(np.take(a_load * (1.0 - a_load), slot, axis=1).sum(axis=3).transpose(1, 0, 2))
    amax = np.minimum(expected_max_normal(amean, avar), float(m))
    act_f = np.maximum(amax / np.maximum(amean.mean(axis=2), 1e-300), 1.0)
    # the layer average as a sum in row order, one row at a time: numpy sums a one-column array pairwise and a
    # wider one row by row, and a node's value must not depend on how many nodes its call evaluates
    tok, act = weights[0] * tok_f[0], weights[0] * act_f[0]
    for row in range(1, weights.shape[0]):
        tok += weights[row] * tok_f[row]
        act += weights[row] * act_f[row]
    return tok, act


_NODE_CACHE: dict[tuple[Any, ...], dict[int, tuple[float, float]]] = {}
STRAGGLER_NODES_PER_OCTAVE = 8
"""The straggler factors are evaluated at T = 2^(j/8) tokens and interpolated linearly in log2 T between the
two nodes around each step: they vary smoothly with T, and fixed nodes make predict and sweeps (which ask for
thousands of step sizes) agree exactly while evaluating each node once."""


def straggler_factors(rs: ResolvedScenario, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(token factor, activated-expert factor) for steps of ``tokens`` replica tokens: :func:`imbalance` at the
    nodes of :data:`STRAGGLER_NODES_PER_OCTAVE` around them, memoised per (inclusion, EP, redundant) on the
    inclusion's bytes (every decode step of a scenario, every scenario of a sweep group, asks again)."""
    pi = rs.inclusion()
    ep, redundant = rs.layout.ep, rs.sharding.redundant_experts
    key = (hash(pi.tobytes()), pi.shape, ep, redundant)
    table = _NODE_CACHE.setdefault(key, {})
    if len(_NODE_CACHE) > 256:
        _NODE_CACHE.clear()
        table = _NODE_CACHE.setdefault(key, {})
    pos = np.log2(np.maximum(np.asarray(tokens, dtype=np.float64), 1.0)) * STRAGGLER_NODES_PER_OCTAVE
    lo = np.floor(pos).astype(np.int64)
    needed = np.unique(np.concatenate([lo, lo + 1]))
    missing = [int(j) for j in needed if int(j) not in table]
    if missing:
        tok, act = imbalance(
            pi, ep, 2.0 ** (np.asarray(missing, dtype=np.float64) / STRAGGLER_NODES_PER_OCTAVE), redundant
        )
        table.update(zip(missing, zip(tok.tolist(), act.tolist())))
    values = np.array([table[int(j)] for j in needed])  # (nodes, 2)
    i_lo = np.searchsorted(needed, lo)
    w = pos - lo
    f_lo, f_hi = values[i_lo], values[i_lo + 1]
    out = f_lo + w[:, None] * (f_hi - f_lo)
    return out[:, 0], out[:, 1]


def straggler_factor(router: Router, num_experts: int, ep: int, tokens: int, redundant: int = 0) -> float:
    """Token-pair straggler factor E[max group load]/mean for one step of ``tokens`` tokens."""
    pi = getattr(router, "inclusion", None)
    top_k = int(getattr(router, "top_k", 0) or 0)
    if pi is None:
        pi = np.full((1, num_experts), top_k / num_experts)
    t, _ = imbalance(np.asarray(pi), ep, np.array([float(tokens)]), redundant)
    return float(t[0])


def all_to_all_bytes(
    tokens: np.ndarray, ranks: int, ep: int, top_k: int, hidden: int, element_bytes: float = ACTIVATION_BYTES
) -> np.ndarray:
    """Bytes one rank sends in one dispatch (or receives in one combine): its T/M tokens x k experts x the
    M/E slices of each x d x bytes, of which (E−1)/E go to other groups."""
    per_rank = np.asarray(tokens, dtype=np.float64) / ranks
    return per_rank * top_k * (ranks // ep) * hidden * element_bytes * (ep - 1) / ep


def all_to_all_time(
    tokens: np.ndarray,
    ranks: int,
    top_k: int,
    hidden: int,
    link_bytes_s: float,
    hop_latency_s: float,
    base_latency_s: float,
) -> np.ndarray:
    """One NCCL all-to-all of the step's token activations over ``ranks`` = EP ranks inside one node:
    per rank (T/N)·k·d·2 bytes, (N−1)/N of them remote, + base latency + (N−1) hop latencies."""
    return (
        base_latency_s
        + (ranks - 1) * hop_latency_s
        + all_to_all_bytes(tokens, ranks, ranks, top_k, hidden) / link_bytes_s
    )


def _interp_ep(table: dict[int, tuple[float, float]], ep: int) -> tuple[float, float]:
    """A DeepEP table's (dispatch, combine) GB/s at EP size ``ep``: linear in log2(EP), clamped at the ends."""
    keys = sorted(table)
    x = np.log2(np.asarray(keys, dtype=np.float64))
    d = float(np.interp(math.log2(ep), x, [table[k][0] for k in keys]))
    c = float(np.interp(math.log2(ep), x, [table[k][1] for k in keys]))
    return d, c


def dispatch_combine_time(
    rs: ResolvedScenario, expert_tokens: np.ndarray, phase: str
) -> tuple[np.ndarray, ExpertParallelReport]:
    """Seconds of one MoE layer's dispatch + combine for steps of ``expert_tokens`` replica tokens."""
    layout, model, rates = rs.layout, rs.model, rs.rates
    moe = model.moe
    assert moe is not None
    ranks, ep = layout.expert_ranks, layout.ep
    per_node = layout.devices_per_node
    nvlink = _intra_node_bandwidth(rs) if per_node > 1 else 0.0
    spans_nodes = ranks > per_node
    backend = rs.scenario.all_to_all
    if backend == "nccl":
        one_way = all_to_all_bytes(expert_tokens, ranks, ep, moe.top_k, model.hidden_size)
        if spans_nodes:
            inter_share = (ranks - per_node) / (ranks - 1)
            t_bytes = np.maximum(
                one_way * (1 - inter_share) / nvlink, one_way * inter_share / rs.scale_out_bytes_s
            )
        else:
            t_bytes = one_way / nvlink
        t = 2 * (rates.allreduce_base_latency_s + (ranks - 1) * rates.allreduce_hop_latency_s + t_bytes)
        return t, {"all_to_all": "nccl", "all_to_all_bytes_per_rank": float(np.mean(one_way))}
    # DeepEP: logical bytes (every top-k copy, DeepEP's own count) at the table's bandwidth x link ratio
    copies = (
        np.asarray(expert_tokens, dtype=np.float64) / ranks * moe.top_k * (ranks // ep) * model.hidden_size
    )
    if phase == "decode":
        bw_d, bw_c = _interp_ep(DEEPEP_LOW_LATENCY, ep)
        link = rs.scale_out_bytes_s if spans_nodes else nvlink
        ratio = link / (DEEPEP_RDMA_REF_GB_S * 1e9)
        kernel = "deepep low-latency"
    elif spans_nodes:
        bw_d, bw_c = _interp_ep(DEEPEP_NORMAL_INTERNODE, ep)
        ratio = rs.scale_out_bytes_s / (DEEPEP_RDMA_REF_GB_S * 1e9)
        kernel = "deepep normal (internode)"
    else:
        bw_d, bw_c = DEEPEP_NORMAL_INTRANODE_GB_S
        ratio = nvlink / (DEEPEP_NVLINK_REF_GB_S * 1e9)
        kernel = "deepep normal (intranode)"
    t = copies * DEEPEP_FP8_DISPATCH_BYTES / (bw_d * 1e9 * ratio) + copies * ACTIVATION_BYTES / (
        bw_c * 1e9 * ratio
    )
    return t, {"all_to_all": kernel, "all_to_all_gb_s": (bw_d * ratio, bw_c * ratio)}


def apply_expert_parallel(
    rs: ResolvedScenario, cost: PassTimes, phase: str = "decode"
) -> ExpertParallelReport:
    """MoE-layer communication and load balance of attention-DP / EP layouts (module docstring): the MoE layers'
    TP all-reduce is replaced by dispatch + combine (EP) or a gather/scatter over all expert ranks (attention DP
    with --ep 1), and the routed experts wait for the slowest EP group."""
    model, rates, layout = rs.model, rs.rates, rs.layout
    moe = model.moe
    if moe is None or cost.time.size == 0 or (layout.ep == 1 and layout.attention_dp == 1):
        return {}
    n_moe = model.num_moe_layers
    expert_tokens = cost.tokens
    rank_tokens = expert_tokens / layout.attention_dp  # the attention TP group's share (ceil ignored here)
    info: ExpertParallelReport = {
        "ep": layout.ep,
        "attention_dp": layout.attention_dp,
        "expert_ranks": layout.expert_ranks,
    }
    saved = np.zeros_like(cost.time)
    if layout.tp > 1:
        saved = n_moe * ring_allreduce_time(
            rank_tokens * model.hidden_size * ACTIVATION_BYTES,
            layout.tp,
            rates.link_bandwidth,
            rates.allreduce_hop_latency_s,
            rates.allreduce_base_latency_s,
        )
    if layout.ep > 1:
        one, a2a_info = dispatch_combine_time(rs, expert_tokens, phase)
        comm = n_moe * one
        info.update(a2a_info)
        tok_f, act_f = straggler_factors(rs, expert_tokens)
        for i, (name, t_c, t_m) in enumerate(cost.op_times):
            if name != "routed_experts":
                continue
            old = np.maximum(t_c, t_m)
            new = np.maximum(t_c * tok_f, t_m * act_f)
            cost.op_times[i] = (name, t_c * tok_f, t_m * act_f)
            wait = new - old
            cost.time = cost.time + wait
            cost.time_by_op["routed_experts"] = cost.time_by_op["routed_experts"] + wait
            bound = t_c * tok_f >= t_m * act_f
            cost.time_by_resource["compute"] = (
                cost.time_by_resource["compute"] + np.where(bound, new, 0.0) - np.where(t_c >= t_m, old, 0.0)
            )
            cost.time_by_resource["memory"] = (
                cost.time_by_resource["memory"] + np.where(bound, 0.0, new) - np.where(t_c >= t_m, 0.0, old)
            )
        info["straggler_factor_mean"] = float(tok_f.mean())
        info["straggler_activated_factor_mean"] = float(act_f.mean())
        if rs.sharding.redundant_experts:
            info["redundant_experts"] = rs.sharding.redundant_experts
    else:
        # every expert split over all M devices: gather the N ranks' tokens before, scatter after (one
        # all-reduce's volume over M ranks)
        bw = (
            rs.scale_out_bytes_s
            if layout.expert_ranks > layout.devices_per_node
            else rates.link_bandwidth or _intra_node_bandwidth(rs)
        )
        comm = n_moe * ring_allreduce_time(
            expert_tokens * model.hidden_size * ACTIVATION_BYTES,
            layout.expert_ranks,
            bw,
            rates.allreduce_hop_latency_s,
            rates.allreduce_base_latency_s,
        )
        info["moe_gather_scatter_s_per_pass"] = float(comm.mean())
    cost.time = cost.time + comm - saved
    if layout.tp > 1:
        cost.time_by_op["allreduce"] = cost.time_by_op.get("allreduce", np.zeros_like(cost.time)) - saved
    cost.time_by_op["all_to_all"] = comm
    cost.time_by_resource["interconnect"] = cost.time_by_resource["interconnect"] + comm - saved
    info["all_to_all_s_per_pass"] = float(comm.mean())
    info["allreduce_saved_s_per_pass"] = float(saved.mean())
    return info


def two_batch_overlap(rs: ResolvedScenario, half: PassTimes) -> PassTimes:
    """Two-batch overlap (SGLang ``--enable-two-batch-overlap``, DeepSeek's dual micro-batch decode): the batch
    runs as two micro-batches whose dispatch/combine overlaps the other's compute. From the cost of one
    micro-batch (``half``, with its communication ``c`` and the rest ``r`` of which ``o`` is the per-step
    overhead, paid once per step):

        t = 2 · max(r − o, c) + o

    Bytes, FLOPs and tokens are the two micro-batches' (each reads the weights again); the communication left
    exposed, 2 · max(0, c − (r − o)), stays in ``all_to_all`` and on the interconnect."""
    comm = half.time_by_op.get("all_to_all", np.zeros_like(half.time))
    overhead = half.time_by_op.get("overhead", np.zeros_like(half.time))
    work = half.time - comm - overhead
    time = 2.0 * np.maximum(work, comm) + overhead
    exposed = 2.0 * np.maximum(comm - work, 0.0)
    _scale(half, np.full_like(half.time, 2.0))
    half.time_by_op["overhead"] = overhead
    half.time_by_resource["overhead"] = half.time_by_resource["overhead"] - overhead
    half.time_by_op["all_to_all"] = exposed
    half.time_by_resource["interconnect"] = half.time_by_resource["interconnect"] - 2.0 * comm + exposed
    half.time = time
    for name in (
        "weight_bytes_sparse",
        "weight_bytes_dense",
        "kv_read_bytes",
        "flops_sparse",
        "flops_dense",
        "tokens",
    ):
        setattr(half, name, getattr(half, name) * 2.0)
    return half


# ---- layouts: TP x PP x DP over nodes ------------------------------------------------------------------------


def pipeline_hop_time(rs: ResolvedScenario, tokens: np.ndarray) -> np.ndarray:
    """Activation transfers between the stages of one replica for a pass of ``tokens`` tokens: each TP rank
    sends its 1/tp share of T·d·2 bytes over its link (NVLink inside a node, the network across nodes), each
    hop paying NCCL's base latency."""
    layout = rs.layout
    hops = layout.pp - 1
    if hops == 0:
        return np.zeros_like(tokens)
    message = (
        np.asarray(tokens, dtype=np.float64) * rs.model.hidden_size * ACTIVATION_BYTES / layout.expert_ranks
    )
    cross = layout.inter_node_hops()
    inside = hops - cross
    t = np.full_like(message, hops * rs.rates.allreduce_base_latency_s)
    if inside:
        t = t + inside * message / _intra_node_bandwidth(rs)
    if cross:
        t = t + cross * message / rs.scale_out_bytes_s
    return t


def _intra_node_bandwidth(rs: ResolvedScenario) -> float:
    node = rs.node
    return node.gpu_to_gpu_bandwidth() if node.accelerator_count >= 2 else node.host_to_gpu_bandwidth()


def _scale(cost: PassTimes, factor: np.ndarray) -> None:
    """Multiply every time component of ``cost`` by ``factor`` (per pass)."""
    cost.time = cost.time * factor
    cost.time_by_op = {k: v * factor for k, v in cost.time_by_op.items()}
    cost.time_by_resource = {k: v * factor for k, v in cost.time_by_resource.items()}


def _add_hops(cost: PassTimes, hops: np.ndarray) -> None:
    cost.time = cost.time + hops
    cost.time_by_op["pipeline_p2p"] = cost.time_by_op.get("pipeline_p2p", np.zeros_like(cost.time)) + hops
    cost.time_by_resource["interconnect"] = cost.time_by_resource["interconnect"] + hops


def apply_pipeline_decode(rs: ResolvedScenario, cost: PassTimes, micro_batches: int) -> None:
    """Decode passes computed for one micro-batch -> one token of every sequence of the replica:
    time = pp x slowest stage + hops; bytes, FLOPs and tokens x m (each stage runs every micro-batch)."""
    layout = rs.layout
    if layout.pp == 1 or cost.time.size == 0:
        return
    stage = layout.stage_layers(rs.model.num_layers) / rs.model.num_layers
    hops = pipeline_hop_time(rs, cost.tokens)
    _scale(cost, np.full_like(cost.time, layout.pp * stage))
    _add_hops(cost, hops)
    m = float(micro_batches)
    for name in (
        "weight_bytes_sparse",
        "weight_bytes_dense",
        "kv_read_bytes",
        "flops_sparse",
        "flops_dense",
        "tokens",
    ):
        setattr(cost, name, getattr(cost, name) * m)


def apply_pipeline_prefill(rs: ResolvedScenario, cost: PassTimes) -> None:
    """Prefill chunks stream through the stages: each chunk costs the slowest stage; the last one also fills
    and drains the pipeline ((pp − 1) more stage times) and pays the hops."""
    layout = rs.layout
    if layout.pp == 1 or cost.time.size == 0:
        return
    stage = layout.stage_layers(rs.model.num_layers) / rs.model.num_layers
    factor = np.full_like(cost.time, stage)
    factor[-1] = stage * layout.pp
    _scale(cost, factor)
    hops = np.zeros_like(cost.time)
    hops[-1] = pipeline_hop_time(rs, cost.tokens[-1:])[0]
    _add_hops(cost, hops)
