"""Iteration-level simulation of one serving replica: continuous batching, chunked prefill, a paged KV cache
with preemption by recompute (docs/serving.md).

Each iteration the scheduler (vLLM v1's, FCFS) first gives every running request its next tokens in admission
order — one decode token, or the next chunk of a prompt being prefilled — within the step's token budget
(``max_batched_tokens``); then, if nothing had to be preempted, it admits waiting requests in arrival order
while the budget, ``max_num_seqs`` and free KV blocks allow, the last one with a partial chunk. Without
chunked prefill a prompt is admitted only whole, in a prefill-only step (vLLM v0's default: waiting prompts
first, decodes pause). A request's KV cache takes ceil(tokens / block_size) blocks; when a running request
needs a block and none is free, the latest-admitted running request is preempted: its blocks are freed and it
goes back to the head of the queue, to recompute prompt + generated tokens when readmitted.

The step is ONE forward pass of all its tokens, timed by :class:`capsim.serving.stepcost.StepCost` (exactly
the engine's ``mixed_passes``). A token is emitted when a request's scheduled tokens reach the end of what it
knows (its prompt, or its last generated token).

Speed: the state of the running requests lives in numpy arrays, and runs of pure-decode steps with nothing to
admit (no arrival the scheduler could take, no completion, no block shortage) are evaluated in one
vectorised stretch: their contexts grow by one per step, so every step's cost is known in advance.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from capsim.errors import ScenarioError
from capsim.serving.scheduler import STRETCH_CAP, ReplicaRun, SchedulerConfig
from capsim.serving.stepcost import StepCost
from capsim.serving.workload import Workload


class _Running:
    """Running requests in admission order, as parallel numpy arrays with ``n`` live entries."""

    def __init__(self, capacity: int) -> None:
        self.n = 0
        self.rid = np.zeros(capacity, dtype=np.int64)
        self.computed = np.zeros(capacity, dtype=np.int64)  # tokens whose KV is in the cache
        self.known = np.zeros(capacity, dtype=np.int64)  # prompt + generated tokens so far
        self.generated = np.zeros(capacity, dtype=np.int64)
        self.output = np.zeros(capacity, dtype=np.int64)
        self.blocks = np.zeros(capacity, dtype=np.int64)

    def append(self, rid: int, computed: int, known: int, generated: int, output: int) -> None:
        i = self.n
        self.rid[i], self.computed[i], self.known[i] = rid, computed, known
        self.generated[i], self.output[i], self.blocks[i] = generated, output, 0
        self.n += 1

    def keep(self, mask: np.ndarray) -> None:
        m = int(mask.sum())
        for arr in (self.rid, self.computed, self.known, self.generated, self.output, self.blocks):
            arr[:m] = arr[: self.n][mask]
        self.n = m


def simulate_replica(
    cost: StepCost,
    kv_blocks: int,
    sched: SchedulerConfig,
    work: Workload,
    *,
    prefilled_first_token_s: np.ndarray | None = None,
    timeline: bool = True,
) -> ReplicaRun:
    """Simulate one replica serving ``work``: the event-driven form (capsim.serving.events) for
    full-attention models, the step-wise form otherwise; both give the same results."""
    sched.validate()
    if bool(np.all(np.isinf(cost.windows))):
        from capsim.serving.events import simulate_events

        return simulate_events(
            cost, kv_blocks, sched, work, prefilled_first_token_s=prefilled_first_token_s, timeline=timeline
        )
    return simulate_stepwise(
        cost, kv_blocks, sched, work, prefilled_first_token_s=prefilled_first_token_s, timeline=timeline
    )


def simulate_stepwise(
    cost: StepCost,
    kv_blocks: int,
    sched: SchedulerConfig,
    work: Workload,
    *,
    prefilled_first_token_s: np.ndarray | None = None,
    timeline: bool = True,
) -> ReplicaRun:
    """Simulate one replica serving ``work``, one scheduler iteration at a time (any attention windows).

    ``prefilled_first_token_s``: requests arrive (at their send times) with their prompt's KV cache and first
    token already made at these times, as on the decode side of a disaggregated deployment."""
    prefilled = prefilled_first_token_s is not None
    n = work.size
    bs = sched.block_size
    max_seqs, budget_max = sched.max_num_seqs, sched.max_batched_tokens
    chunked = sched.chunked_prefill
    prompt = work.prompt_tokens.astype(np.int64)
    output = work.output_tokens.astype(np.int64)
    send = work.send_s.astype(np.float64)
    cap = work.concurrency if work.concurrency is not None else n
    arrival = np.full(n, np.inf)
    first = np.full(n, np.nan)
    finish = np.full(n, np.nan)
    last_tok = np.full(n, np.nan)
    preempt = np.zeros(n, dtype=np.int64)
    gen_of = np.zeros(n, dtype=np.int64)  # generated tokens of requests not running (preempted keep theirs)
    if prefilled_first_token_s is not None:
        gen_of[:] = 1
        first[:] = prefilled_first_token_s
        last_tok[:] = prefilled_first_token_s
    run = ReplicaRun(arrival, first, finish, preempt, kv_blocks=kv_blocks)
    tl: dict[str, list[float]] = {"t": [], "running": [], "waiting": [], "kv_used": [], "tokens": []}
    run.timeline = dict(tl)  # the same lists, appended to below

    windows, counts = cost.windows, cost.layer_counts
    full_only = bool(np.all(np.isinf(windows)))
    finite_w = windows[np.isfinite(windows)]
    finite_c = counts[np.isfinite(windows)]
    L = cost.num_layers
    ratio = cost.decode_pair_ratio()
    kv_per_tok = cost.kv_bytes_per_token_read

    R = _Running(max_seqs)
    waiting: deque[int] = deque()
    free = kv_blocks
    now = 0.0
    released = 0
    in_system = 0
    slot_free_s = 0.0
    done = 0
    itl_v, itl_w = run.itl_values, run.itl_weights

    while done < n:
        # --- release requests whose send time has come (and that the concurrency cap lets in) -------------
        while released < n and in_system < cap and send[released] <= now:
            # a capped request is sent when a slot frees (slot_free_s), never before its own send time
            arrival[released] = max(send[released], slot_free_s)
            waiting.append(released)
            released += 1
            in_system += 1
        if R.n == 0 and not waiting:
            if released >= n:
                break
            now = max(now, send[released])
            continue
        k = R.n
        comp, known = R.computed[:k], R.known[:k]

        # --- fast path: a stretch of pure-decode steps -----------------------------------------------------
        # (a prompt with one token left to prefill also has known − computed = 1, but is not decoding)
        if (
            k
            and not waiting
            and k <= budget_max
            and bool(np.all(known - comp == 1))
            and bool(np.all(R.generated[:k] >= 1))
        ):
            steps = _stretch_length(
                R,
                free,
                bs,
                send,
                released,
                cap,
                in_system,
                now,
                cost,
                full_only,
                finite_w,
                finite_c,
                ratio,
                L,
                max_seqs,
            )
            if steps is not None:
                m, times, stretch_pairs, kvs = steps
                t0 = now
                cum = np.cumsum(times)
                ends = t0 + cum
                ids = R.rid[:k]
                # first step: each request's gap since its last token; later steps: the step time, k tokens each
                itl_v.append(ends[0] - last_tok[ids])
                itl_w.append(np.ones(k))
                if m > 1:
                    itl_v.append(times[1:m])
                    itl_w.append(np.full(m - 1, float(k)))
                R.computed[:k] += m
                R.known[:k] += m
                R.generated[:k] += m
                new_blocks = -(-R.computed[:k] // bs)
                free -= int(new_blocks.sum() - R.blocks[:k].sum())
                R.blocks[:k] = new_blocks
                now = float(ends[m - 1])
                last_tok[ids] = now
                tokens_m = np.full(m, k, dtype=np.int64)
                _account(run, cost, tokens_m, tokens_m, stretch_pairs[:m], kvs[:m], times[:m], kv_per_tok)
                run.steps += m
                run.max_kv_blocks_used = max(run.max_kv_blocks_used, kv_blocks - free)
                if timeline:
                    tl["t"].append(t0)
                    tl["running"].append(k)
                    tl["waiting"].append(0)
                    tl["kv_used"].append((kv_blocks - free) / kv_blocks)
                    tl["tokens"].append(k)
                fin = R.generated[:k] >= R.output[:k]
                if fin.any():
                    fids = ids[fin]
                    finish[fids] = now
                    free += int(R.blocks[:k][fin].sum())
                    R.keep(~fin)
                    done += int(fin.sum())
                    if in_system >= cap:
                        slot_free_s = now
                    in_system -= int(fin.sum())
                continue

        # --- one general step ------------------------------------------------------------------------------
        budget = budget_max
        want = R.known[: R.n] - R.computed[: R.n]
        alloc = np.clip(budget - (np.cumsum(want) - want), 0, want)
        if not chunked:
            # without chunked prefill a prompt runs whole or not at all (a recompute likewise)
            alloc = np.where(alloc < want, 0, alloc)
        need_blocks = np.maximum(-(-(R.computed[: R.n] + alloc) // bs) - R.blocks[: R.n], 0)
        preempted_any = False
        while int(need_blocks.sum()) > free and R.n:
            # preempt the latest-admitted running request (recompute): blocks back, head of the queue
            j = R.n - 1
            rid = int(R.rid[j])
            free += int(R.blocks[j])
            gen_of[rid] = int(R.generated[j])
            preempt[rid] += 1
            waiting.appendleft(rid)
            R.n -= 1
            alloc, need_blocks = alloc[:-1], need_blocks[:-1]
            preempted_any = True
        budget -= int(alloc.sum())
        R.blocks[: R.n] += need_blocks
        free -= int(need_blocks.sum())
        if preempted_any:
            budget = 0  # vLLM v1 admits nothing in a step that had to preempt
        # admit waiting requests (FCFS)
        adm_rid: list[int] = []
        adm_chunk: list[int] = []
        while waiting and budget > 0 and R.n < max_seqs:
            rid = waiting[0]
            gen = int(gen_of[rid])
            known_r = int(prompt[rid]) + gen
            # a prefilled request arrives with its prompt's KV (first admission only): its next token is a decode
            start = int(prompt[rid]) if prefilled and preempt[rid] == 0 else 0
            want_r = known_r - start
            chunk = min(want_r, budget)
            if not chunked and chunk < want_r:
                break
            blocks = -(-(start + chunk) // bs)
            if blocks > free:
                break
            waiting.popleft()
            R.append(rid, start, known_r, gen, int(output[rid]))
            R.blocks[R.n - 1] = blocks
            free -= blocks
            budget -= chunk
            adm_rid.append(rid)
            adm_chunk.append(chunk)
        if adm_chunk:
            alloc = np.concatenate([alloc, np.array(adm_chunk, dtype=np.int64)])
        k = R.n
        if k == 0 or int(alloc.sum()) == 0:
            if R.n == 0 and waiting and not adm_chunk:
                rid = waiting[0]
                raise ScenarioError(
                    f"request {rid} ({int(prompt[rid])} prompt tokens) can never be scheduled: it needs "
                    f"{-(-int(prompt[rid] + gen_of[rid]) // bs)} KV blocks of {bs} tokens and the budget/cache allow "
                    f"{min(kv_blocks, budget_max // bs)}; raise --max-batched-tokens or enable chunked prefill"
                )
            if released < n:
                now = max(now, send[released])
                continue
            raise ScenarioError(
                "the scheduler stalled with requests waiting; this is a capsim bug, please report it"
            )
        comp = R.computed[:k]
        known = R.known[:k]
        s = comp
        e = comp + alloc
        active = alloc > 0
        is_decode = (alloc == 1) & (R.generated[:k] >= 1) & (e == known)
        emits = active & (e == known)
        tokens = int(alloc.sum())
        seqs = int(active.sum())
        lm = int(emits.sum())
        pairs, kv = _attention(s, e, active, is_decode, full_only, finite_w, finite_c, L, ratio)
        dt = cost.time(tokens, seqs, lm, pairs, kv)
        t0 = now
        now = now + dt
        _account(
            run,
            cost,
            np.array([tokens]),
            np.array([lm]),
            np.array([pairs]),
            np.array([kv]),
            np.array([dt]),
            kv_per_tok,
        )
        run.steps += 1
        R.computed[:k] = e
        ids = R.rid[:k]
        if emits.any():
            eid = ids[emits]
            had = R.generated[:k][emits] >= 1
            if had.any():
                itl_v.append(now - last_tok[eid[had]])
                itl_w.append(np.ones(int(had.sum())))
            newly = eid[~had]
            first[newly] = now
            last_tok[eid] = now
            R.generated[:k] += emits
            R.known[:k] += emits
        run.max_kv_blocks_used = max(run.max_kv_blocks_used, kv_blocks - free)
        if timeline:
            tl["t"].append(t0)
            tl["running"].append(k)
            tl["waiting"].append(len(waiting))
            tl["kv_used"].append((kv_blocks - free) / kv_blocks)
            tl["tokens"].append(tokens)
        fin = R.generated[:k] >= R.output[:k]
        if fin.any():
            finish[ids[fin]] = now
            free += int(R.blocks[:k][fin].sum())
            R.keep(~fin)
            done += int(fin.sum())
            if in_system >= cap:
                slot_free_s = now
            in_system -= int(fin.sum())
    return run


def _attention(
    s: np.ndarray,
    e: np.ndarray,
    active: np.ndarray,
    is_decode: np.ndarray,
    full_only: bool,
    finite_w: np.ndarray,
    finite_c: np.ndarray,
    L: float,
    ratio: float,
) -> tuple[float, float]:
    """(prefill-equivalent pairs, KV tokens read), summed over layers, of spans [s, e) (engine.mixed_passes)."""
    sf = s.astype(np.float64)
    ef = e.astype(np.float64)
    full_layers = L - float(finite_c.sum())
    dec = is_decode
    pre = active & ~dec
    pairs = 0.0
    kv = 0.0
    if full_layers:
        dsum = float(ef[dec].sum())
        psum = float(((ef[pre] * (ef[pre] + 1.0) - sf[pre] * (sf[pre] + 1.0)) / 2.0).sum())
        pairs += full_layers * (psum + ratio * dsum)
        kv += full_layers * (dsum + float(ef[pre].sum()))
    for w, c in zip(finite_w, finite_c):
        ed, ep_, sp = ef[dec], ef[pre], sf[pre]
        dsum = float(np.minimum(ed, w).sum())
        psum = float((_causal(ep_, w) - _causal(sp, w)).sum())
        pairs += c * (psum + ratio * dsum)
        kv += c * (dsum + float((ep_ - sp + np.minimum(sp, w)).sum()))
    return pairs, kv


def _causal(p: np.ndarray, w: float) -> np.ndarray:
    """Σ_{i=1..p} min(i, w) (capsim.engine.roofline.causal_pairs)."""
    ww = np.minimum(w, p)
    return np.asarray(ww * (ww + 1.0) / 2.0 + (p - ww) * ww, dtype=np.float64)


def _stretch_length(
    R: _Running,
    free: int,
    bs: int,
    send: np.ndarray,
    released: int,
    cap: int,
    in_system: int,
    now: float,
    cost: StepCost,
    full_only: bool,
    finite_w: np.ndarray,
    finite_c: np.ndarray,
    ratio: float,
    L: float,
    max_seqs: int,
) -> tuple[int, np.ndarray, np.ndarray, np.ndarray] | None:
    """(steps, step times, pairs, kv) of the pure-decode stretch starting now, or None for a single step.

    The stretch ends at the first completion, before any step would need more KV blocks than are free, and
    with the step during which the next request the scheduler could admit arrives."""
    k = R.n
    comp = R.computed[:k]
    m = int((R.output[:k] - R.generated[:k]).min())
    m = min(m, STRETCH_CAP)
    # KV blocks: after j steps request i holds ceil((c_i + j) / bs) blocks
    held = int(R.blocks[:k].sum())

    def need(j: int) -> int:
        return int((-(-(comp + j) // bs)).sum()) - held

    if need(m) > free:
        lo, hi = 0, m  # need(lo) <= free < need(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if need(mid) <= free:
                lo = mid
            else:
                hi = mid
        m = lo
    if m < 2:
        return None
    j = np.arange(m, dtype=np.float64)
    e0 = comp.astype(np.float64) + 1.0  # context of each request's first decode step in the stretch
    full_layers = L - float(finite_c.sum())
    base = float(e0.sum())
    pairs = full_layers * ratio * (base + k * j)
    kv = full_layers * (base + k * j)
    for w, c in zip(finite_w, finite_c):
        s = np.minimum(e0[None, :] + j[:, None], w).sum(axis=1)
        pairs = pairs + c * ratio * s
        kv = kv + c * s
    tokens = np.full(m, k, dtype=np.int64)
    times = cost.times(tokens, tokens, pairs, kv)
    if released < len(send) and in_system < cap:
        # the scheduler takes the next request at the first step starting at or after its send time
        a = send[released] - now
        stop = int(np.searchsorted(np.cumsum(times), a, side="left")) + 1
        m = min(m, stop)
        if m < 1:
            return None
    return m, times[:m], pairs[:m], kv[:m]


def _account(
    run: ReplicaRun,
    cost: StepCost,
    tokens: np.ndarray,
    lm: np.ndarray,
    pairs: np.ndarray,
    kv: np.ndarray,
    times: np.ndarray,
    kv_per_tok: float,
) -> None:
    """Add steps' time, bytes and FLOPs to the run's totals (time-weighted utilisation)."""
    tr = cost.traffic(tokens, lm, pairs, kv)
    run.busy_s += float(times.sum())
    run.weight_bytes_sparse += float(tr.weight_sparse.sum())
    run.weight_bytes_dense += float(tr.weight_dense.sum())
    run.flops_sparse += float(tr.flops_sparse.sum())
    run.flops_dense += float(tr.flops_dense.sum())
    run.kv_read_bytes += float(kv.sum()) * kv_per_tok


def kv_block_count(kv_pool_bytes: float, kv_bytes_per_token: float, block_size: int) -> int:
    """Whole KV blocks of ``block_size`` tokens in a pool of ``kv_pool_bytes``."""
    return math.floor(kv_pool_bytes / (kv_bytes_per_token * block_size))
