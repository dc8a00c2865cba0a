"""Pass builders: the cost of prefill chunks, decode steps and continuous-batching (mixed) steps, as arrays
over steps, from the formula table through the roofline (capsim.engine.roofline); the layout and speculation
adjustments of decode steps (capsim.engine.parallel, capsim.engine.speculative)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from capsim.engine.resolved import ResolvedScenario
from capsim.engine.roofline import (
    PassTimes,
    attention_dims,
    causal_pairs,
    layer_tables,
    pass_times,
)
from capsim.models.spec import ModelSpec


def _activated(
    rs: ResolvedScenario, tokens: np.ndarray, sequences: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Expected distinct experts per MoE layer; ``sequences`` = runs of consecutive tokens (prefill chunks),
    None = every token from its own sequence (decode). Returns (rows, weights): MoE layers whose activation
    is identical (every layer of a homogeneous router) fold into one row with weight = their count, so grids
    evaluate one row instead of all MoE layers."""
    if rs.router is None:
        return np.zeros((0, tokens.shape[0])), None
    # grids repeat the same step shape many times: ask the router once per distinct (tokens, sequences)
    if sequences is None:
        unique, inverse = np.unique(tokens, return_inverse=True)
        act = _activated_cached(rs, unique, None)
    else:
        seqs = np.broadcast_to(np.asarray(sequences, dtype=np.float64), tokens.shape)
        key = tokens * (float(seqs.max()) + 1.0) + seqs  # one sortable key per (T, s) pair, exact in float64
        _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        act = _activated_cached(rs, tokens[first], seqs[first])
    inverse = inverse.reshape(-1)
    if act.shape[0] > 1 and np.all(act == act[:1]):
        return act[:1, inverse], np.array([act.shape[0]], dtype=np.float64)
    return act[:, inverse], None


_ACTIVATED_CACHE: dict[tuple[object, ...], dict[tuple[float, float | None], np.ndarray]] = {}
"""Expected distinct experts per layer, per router (model, routing, seed) and step shape (tokens, sequences;
sequences None for decode): sweeps ask the same shapes for every group of a model, and small groups would
otherwise pay the router's fixed cost on each call."""


_ACTIVATED_CACHE_LIMIT = 200_000


def _activated_cached(rs: ResolvedScenario, tokens: np.ndarray, sequences: np.ndarray | None) -> np.ndarray:
    """``rs.router.activated_per_layer`` for distinct step shapes, from the cache where present. Only for
    synthetic routers, whose columns do not depend on what else is in the call (a sequential sum, see
    capsim.routing._base), so cached and fresh values are the same bits."""
    from capsim.routing.synthetic import SyntheticRouter

    router = rs.router
    assert router is not None  # callers check: internal invariant
    if not isinstance(router, SyntheticRouter) or tokens.shape[0] == 0:
        return (
            router.activated_per_layer(tokens)
            if sequences is None
            else router.activated_per_layer(tokens, sequences=sequences)
        )
    key = (rs.model.id, rs.model.num_moe_layers, rs.scenario.routing, rs.scenario.seed)
    cache = _ACTIVATED_CACHE.setdefault(key, {})
    seqs = None if sequences is None else np.asarray(sequences, dtype=np.float64)
    shapes: list[tuple[float, float | None]] = list(
        zip(tokens.tolist(), [None] * tokens.shape[0] if seqs is None else seqs.tolist())
    )
    missing = [i for i, shape in enumerate(shapes) if shape not in cache]
    if missing:
        if len(cache) + len(missing) > _ACTIVATED_CACHE_LIMIT:
            cache.clear()
        idx = np.array(missing)
        fresh = (
            router.activated_per_layer(tokens[idx])
            if seqs is None
            else router.activated_per_layer(tokens[idx], sequences=seqs[idx])
        )
        for j, i in enumerate(missing):
            cache[shapes[i]] = fresh[:, j].copy()
    return np.stack([cache[shape] for shape in shapes], axis=1)


def _window_rows(model: ModelSpec) -> tuple[np.ndarray, np.ndarray]:
    """Distinct attention windows (inf = full) and how many layers have each: per-layer arrays fold to these."""
    _, windows = layer_tables(model)
    unique, counts = np.unique(windows, return_counts=True)
    return unique, counts.astype(np.float64)


def prefill_passes(
    rs: ResolvedScenario,
    batch: np.ndarray | np.float64,
    prompt_len: np.ndarray | np.float64,
    chunk_tokens: np.ndarray,
    lm_sequences: np.ndarray,
) -> PassTimes:
    """Cost of prefill chunks, one entry per chunk; each chunk belongs to a prefill of ``batch`` prompts of
    ``prompt_len`` tokens and carries ``chunk_tokens`` of its B·P tokens (arrays broadcast together).

    Weights (and, for MoE, the experts the chunk activates) are read once per chunk; attention FLOPs are the
    exact causal total, shared across chunks in proportion to their tokens; each chunk reads its own KV once.
    ``lm_sequences`` sequences emit their first token in the chunk (the last chunk: all B).
    Under attention data parallelism (N ranks) the arguments are one attention rank's: the N ranks prefill
    their own chunks in lock-step, so the MoE layers see N x the chunk's tokens.
    """
    model = rs.model
    batch, prompt_len, tokens, lm = (
        np.asarray(a, dtype=np.float64)
        for a in np.broadcast_arrays(batch, prompt_len, chunk_tokens, lm_sequences)
    )
    share = tokens / (batch * prompt_len)
    windows, counts = _window_rows(model)
    pairs = batch[None, :] * causal_pairs(prompt_len[None, :], windows[:, None]) * share[None, :]
    kv_read = np.broadcast_to(tokens, (windows.shape[0], tokens.shape[0]))
    sequences = np.maximum(1.0, share * batch)
    adp = rs.sharding.attention_dp
    expert_tokens = tokens * adp if adp > 1 else None
    activated, moe_weights = _activated(rs, tokens * adp, sequences * adp)
    return pass_times(
        model,
        rs.sharding,
        rs.rates,
        phase="prefill",
        tokens=tokens,
        sequences=sequences,
        context=prompt_len,
        pairs_per_layer=pairs,
        kv_read_tokens_per_layer=kv_read,
        activated=activated,
        lm_head_sequences=lm,
        layer_weights=counts,
        moe_layer_weights=moe_weights,
        expert_tokens=expert_tokens,
    )


def decode_passes(
    rs: ResolvedScenario,
    batch: np.ndarray | np.float64,
    context: np.ndarray,
    tokens_per_sequence: int = 1,
) -> PassTimes:
    """Cost of decode steps, one entry per step: ``batch`` sequences each adding one token that attends to
    ``context`` tokens (window-capped per layer); arrays broadcast together. Under attention data parallelism
    (N ranks) the busiest rank decodes ceil(batch / N) sequences and the MoE layers see all ``batch`` tokens.
    A speculative verify step has ``tokens_per_sequence`` = K + 1 query tokens per sequence: they attend to the
    same cached context (its KV read once) and all get logits."""
    model = rs.model
    batch_all, context = (np.asarray(a, dtype=np.float64) for a in np.broadcast_arrays(batch, context))
    adp = rs.sharding.attention_dp
    q = float(tokens_per_sequence)
    sequences = np.ceil(batch_all / adp) if adp > 1 else batch_all
    tokens = sequences * q if q != 1.0 else sequences
    windows, counts = _window_rows(model)
    c_eff = np.minimum(context[None, :], windows[:, None])  # (distinct windows, steps)
    activated, moe_weights = _activated(rs, batch_all * q if q != 1.0 else batch_all)
    reads = sequences[None, :] * c_eff
    return pass_times(
        model,
        rs.sharding,
        rs.rates,
        phase="decode",
        tokens=tokens,
        sequences=sequences,
        context=context,
        pairs_per_layer=reads * q if q != 1.0 else reads,
        kv_read_tokens_per_layer=reads,
        activated=activated,
        lm_head_sequences=tokens,
        layer_weights=counts,
        moe_layer_weights=moe_weights,
        expert_tokens=batch_all * q if adp > 1 else None,
    )


def attention_window_rows(model: ModelSpec) -> tuple[np.ndarray, np.ndarray]:
    """(distinct attention windows, inf = full attention; how many layers have each): the rows of the
    per-window arrays :func:`mixed_passes` takes."""
    return _window_rows(model)


def mixed_passes(
    rs: ResolvedScenario,
    tokens: np.ndarray,
    sequences: np.ndarray,
    lm_sequences: np.ndarray,
    decode_pairs: np.ndarray,
    prefill_pairs: np.ndarray,
    kv_read: np.ndarray,
) -> PassTimes:
    """Cost of continuous-batching steps, one entry per step: each step is ONE forward pass over ``tokens``
    tokens (decode tokens plus prefill-chunk tokens) from ``sequences`` sequences, so weights are read once
    and the activated experts are counted over all the step's tokens. ``lm_sequences`` sequences emit a
    token. ``decode_pairs``, ``prefill_pairs`` and ``kv_read`` (shape (distinct windows of
    :func:`attention_window_rows`, steps)) are the query-key pairs scored by decode tokens and by prefill
    chunks and the KV tokens read, per layer of each window: a decode sequence at context c adds min(c, w)
    to its pairs and reads; a prefill chunk covering prompt positions [s, e) adds causal_pairs(e, w) −
    causal_pairs(s, w) pairs and reads (e − s) + min(s, w) tokens. The two kinds of pairs differ only for
    MLA, whose decode scores in the absorbed latent space (roofline.attention_dims): decode pairs are
    converted to prefill-equivalent pairs by the ratio of the FLOPs per pair, exact since FLOPs are linear
    in pairs.

    A step of decode sequences only is exactly :func:`decode_passes`; one chunk holding whole prompts is
    exactly :func:`prefill_passes` (tests/test_serve_engine.py checks both)."""
    tokens, sequences, lm = (
        np.asarray(a, dtype=np.float64) for a in np.broadcast_arrays(tokens, sequences, lm_sequences)
    )
    _, counts = _window_rows(rs.model)
    shape = (counts.shape[0], tokens.shape[0])
    d_qk, d_v = attention_dims(rs.model, "decode")
    p_qk, p_v = attention_dims(rs.model, "prefill")
    pairs = np.broadcast_to(np.asarray(prefill_pairs, dtype=np.float64), shape) + np.broadcast_to(
        np.asarray(decode_pairs, dtype=np.float64), shape
    ) * ((d_qk + d_v) / (p_qk + p_v))
    kv_read = np.broadcast_to(np.asarray(kv_read, dtype=np.float64), shape)
    activated, moe_weights = _activated(rs, tokens, sequences)
    return pass_times(
        rs.model,
        rs.sharding,
        rs.rates,
        phase="prefill",
        tokens=tokens,
        sequences=sequences,
        context=tokens,
        pairs_per_layer=pairs,
        kv_read_tokens_per_layer=kv_read,
        activated=activated,
        lm_head_sequences=lm,
        layer_weights=counts,
        moe_layer_weights=moe_weights,
    )


def prefill_chunks(total_tokens: int, chunk: int) -> np.ndarray:
    """Tokens of each prefill chunk: full chunks of ``chunk`` then the remainder."""
    n_chunks = math.ceil(total_tokens / chunk)
    tokens = np.full(n_chunks, float(chunk))
    tokens[-1] = total_tokens - chunk * (n_chunks - 1)
    return tokens


def prefill_times(rs: ResolvedScenario, batch: int) -> PassTimes:
    """Prefill of ``batch`` prompts in chunks of ``prefill_chunk_tokens`` tokens (see :func:`prefill_passes`);
    the lm_head runs once per sequence, in the last chunk."""
    sc = rs.scenario
    batch = math.ceil(batch / rs.sharding.attention_dp)  # the busiest attention rank's prompts
    tokens = prefill_chunks(batch * sc.prompt_len, sc.prefill_chunk_tokens)
    lm = np.zeros(tokens.shape[0])
    lm[-1] = batch
    return prefill_passes(rs, np.float64(batch), np.float64(sc.prompt_len), tokens, lm)


def decode_steps(rs: ResolvedScenario, batch: np.ndarray | np.float64, context: np.ndarray) -> PassTimes:
    """Decode steps as predict charges them, one entry per step: the target's pass (a verify pass of K + 1
    tokens per sequence under ``--spec``), the MoE layers' communication and load balance of EP/attention-DP
    layouts (capsim.engine.parallel), and the draft passes (capsim.engine.speculative). What the layout and the drafts
    decided is left in ``cost.extra`` ("ep", "speculative")."""
    spec = rs.speculation
    per_sequence = spec.draft_tokens + 1 if spec is not None else 1
    tbo = rs.scenario.two_batch_overlap
    micro = np.ceil(np.asarray(batch, dtype=np.float64) / 2.0) if tbo else batch
    cost = decode_passes(rs, micro, context, per_sequence)
    if rs.layout.ep > 1 or rs.layout.attention_dp > 1:
        from capsim.engine.parallel import apply_expert_parallel

        cost.extra["ep"] = apply_expert_parallel(rs, cost, "decode")
    if tbo and cost.time.size:
        from capsim.engine.parallel import two_batch_overlap

        info = cost.extra.get("ep", {})
        cost = two_batch_overlap(rs, cost)
        cost.extra["ep"] = {
            **info,
            "two_batch_overlap": True,
            "all_to_all_exposed_s_per_pass": float(cost.time_by_op["all_to_all"].mean()),
        }
    if spec is not None:
        cost.extra["speculative"] = add_draft_passes(rs, cost, batch, context)
    return cost


def decode_times(rs: ResolvedScenario, batch: int) -> PassTimes:
    """The gen_len − 1 decode steps after prefill; step j's new token attends to prompt_len + j tokens."""
    sc = rs.scenario
    spec = rs.speculation
    if spec is not None:
        # verify steps: each yields E tokens per sequence on average (capsim.engine.speculative)
        per_step = spec.tokens_per_step
        steps = math.ceil(max(sc.gen_len - 1, 0) / per_step)
        context = sc.prompt_len + per_step * np.arange(1, steps + 1, dtype=np.float64)
    else:
        steps = max(sc.gen_len - 1, 0)
        context = sc.prompt_len + np.arange(1, steps + 1, dtype=np.float64)
    return decode_steps(rs, np.float64(batch), context)


def add_draft_passes(
    rs: ResolvedScenario, decode: PassTimes, batch: np.ndarray | np.float64, context: np.ndarray
) -> dict[str, Any]:
    """Add the K draft passes of every verify step (steps of ``batch`` sequences at ``context``, arrays) to
    ``decode`` in place; returns what they cost. The draft pass's roofline charges join ``decode.op_times``
    so that sweeps see where its ops change binding resource along the context."""

    spec = rs.speculation
    assert spec is not None  # draft passes are added under --spec only
    if decode.time.size == 0:
        return spec.to_dict()
    batch, context = (np.asarray(a, dtype=np.float64) for a in np.broadcast_arrays(batch, context))
    if spec.kind == "draft":
        assert rs.draft is not None  # resolve sets the draft model for every draft-model speculation
        plain = decode_passes(rs.draft, batch, context)
        one = plain.time
    else:
        plain = decode_passes(rs, batch, context)
        if rs.layout.ep > 1 or rs.layout.attention_dp > 1:
            from capsim.engine.parallel import apply_expert_parallel

            apply_expert_parallel(rs, plain, "decode")
        one = _mtp_pass_time(rs, plain, batch)
    decode.op_times.extend((f"draft:{name}", tc, tm) for name, tc, tm in plain.op_times)
    draft = spec.draft_tokens * one
    decode.time = decode.time + draft
    decode.time_by_op["spec_draft"] = draft
    share = {
        r: np.divide(v, plain.time, out=np.zeros_like(v), where=plain.time > 0)
        for r, v in plain.time_by_resource.items()
    }
    for r in decode.time_by_resource:
        decode.time_by_resource[r] = decode.time_by_resource[r] + draft * share.get(r, 0.0)
    return {**spec.to_dict(), "draft_s_per_step": float(draft.mean()), "draft_pass_s": float(one.mean())}


def _mtp_pass_time(rs: ResolvedScenario, plain: PassTimes, batch: np.ndarray) -> np.ndarray:
    """One MTP draft pass over ``batch`` sequences: one MoE layer's share of a plain decode step (attention per
    layer, MoE ops and their communication per MoE layer, the per-layer overhead), the lm_head, and the 2d x d
    projection (weight read or GEMM, whichever is longer, split over the TP ranks)."""
    model, rates = rs.model, rs.rates
    ops = plain.time_by_op
    zero = np.zeros_like(plain.time)
    layers, moe_layers = float(model.num_layers), float(max(model.num_moe_layers, 1))
    attention = (
        ops.get("attn_proj", zero) + ops.get("attn_core", zero) + ops.get("allreduce", zero)
    ) / layers
    moe = (
        sum((ops.get(op, zero) for op in ("router", "routed_experts", "shared_experts", "all_to_all")), zero)
        / moe_layers
    )
    d = float(model.hidden_size)
    prec = rs.sharding.weight_precision["attention"]
    tp = rs.sharding.tp
    rows = np.ceil(np.asarray(batch, dtype=np.float64) / rs.sharding.attention_dp)
    from capsim.models.precision import compute_key

    flops_rate = rates.flops_rate(compute_key(prec, frozenset(rates.peak_flops)))
    projection = np.maximum(
        2.0 * d * d * prec.bytes_per_element / tp / rates.bytes_rate,
        2.0 * rows * 2.0 * d * d / tp / flops_rate,
    )
    # the layer's kernel-latency floors are in the per-layer shares of the plain step's ops above; the
    # projection GEMM is one more kernel
    projection = np.maximum(projection, rates.kernel_latency_s)
    return attention + moe + ops.get("lm_head", zero) + rates.per_layer_overhead_s + projection
