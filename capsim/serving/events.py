"""The fast, event-driven form of :func:`capsim.serving.simulate.simulate_replica` for full-attention models.

Same scheduler, same step costs, same results (tests/test_serve.py compares the two on random workloads);
what changes is the bookkeeping, so that a step costs O(1) Python work instead of O(running requests):

- every decoding request gets one token per step (the budget covers max_num_seqs decodes), so its context at
  global step g is ``base + g``: the decodes' summed context is Σ base + n·g, kept as one integer;
- its completion step is known when it starts decoding: a heap of completion steps replaces scanning;
- it needs a new KV block at the steps where ``(base + g) mod block_size = 1``: counts of decodes per residue
  of ``base`` give the blocks a step needs in O(1);
- runs of decode-only steps (no prompt in progress, nobody waiting) up to the next completion, arrival or
  block shortage are evaluated as one vectorised stretch.
Prompt chunks, admissions and preemptions are handled request by request, as in the step-wise form.
"""

from __future__ import annotations

import heapq
import math
from collections import deque

import numpy as np

from capsim.errors import ScenarioError
from capsim.serving.scheduler import STRETCH_CAP, ReplicaRun, SchedulerConfig
from capsim.serving.stepcost import StepCost
from capsim.serving.workload import Workload


def simulate_events(
    cost: StepCost,
    kv_blocks: int,
    sched: SchedulerConfig,
    work: Workload,
    *,
    prefilled_first_token_s: np.ndarray | None = None,
    timeline: bool = True,
) -> ReplicaRun:
    """Event-driven simulation of one replica (full-attention models only; see module docstring)."""
    if not bool(np.all(np.isinf(cost.windows))):
        raise ValueError("simulate_events handles full-attention models only")
    n = work.size
    bs = sched.block_size
    max_seqs, budget_max, chunked = sched.max_num_seqs, sched.max_batched_tokens, sched.chunked_prefill
    prompt = work.prompt_tokens.astype(np.int64).tolist()
    output = work.output_tokens.astype(np.int64).tolist()
    send = work.send_s.astype(np.float64).tolist()
    cap = work.concurrency if work.concurrency is not None else n
    prefilled = prefilled_first_token_s is not None
    arrival = [math.inf] * n
    first = [math.nan] * n
    finish = [math.nan] * n
    last_tok = [math.nan] * n
    preempt = [0] * n
    gen = [0] * n
    if prefilled:
        gen = [1] * n
        assert prefilled_first_token_s is not None  # prefilled says so
        first = [float(x) for x in prefilled_first_token_s]
        last_tok = list(first)

    L = cost.num_layers
    ratio = cost.decode_pair_ratio()
    rp = ratio * L  # prefill-equivalent pairs per decode context token, summed over layers
    step_time = cost.time

    # decoding requests: rid -> (base, epoch); context at step g is base + g
    dec: dict[int, tuple[int, int]] = {}
    sum_base = 0
    resid = [0] * bs  # decodes per base mod bs
    heap: list[tuple[int, int, int]] = []  # (completion step, rid, epoch)
    epoch = [0] * n
    # prompts in progress: rid -> [computed, known, held blocks], in admission order
    pre: dict[int, list[int]] = {}
    order: dict[int, None] = {}  # running requests in admission order (for preemption)
    waiting: deque[int] = deque()
    free = kv_blocks
    max_used = 0
    now = 0.0
    g = 0
    released = 0
    in_system = 0
    slot_free_s = 0.0
    done = 0

    seg_T: list[np.ndarray] = []
    seg_lm: list[np.ndarray] = []
    seg_P: list[np.ndarray] = []
    seg_K: list[np.ndarray] = []
    seg_t: list[np.ndarray] = []
    one_T: list[int] = []
    one_lm: list[int] = []
    one_P: list[float] = []
    one_K: list[float] = []
    one_t: list[float] = []
    itl_v: list[np.ndarray] = []
    itl_w: list[np.ndarray] = []
    itl_one: list[float] = []
    tl_t: list[float] = []
    tl_run: list[int] = []
    tl_wait: list[int] = []
    tl_kv: list[float] = []
    tl_tok: list[int] = []

    def finish_decode(rid: int, step: int, when: float) -> None:
        nonlocal sum_base, free, done, in_system, slot_free_s
        base, _ = dec.pop(rid)
        sum_base -= base
        resid[base % bs] -= 1
        free += -(-(base + step) // bs)
        del order[rid]
        finish[rid] = when
        done += 1
        if in_system >= cap:
            slot_free_s = when
        in_system -= 1

    def start_decode(rid: int, base: int, fin_step: int) -> None:
        nonlocal sum_base
        dec[rid] = (base, epoch[rid])
        sum_base += base
        resid[base % bs] += 1
        heapq.heappush(heap, (fin_step, rid, epoch[rid]))

    def next_completion() -> int | None:
        while heap:
            fin, rid, ep = heap[0]
            entry = dec.get(rid)
            if entry is not None and entry[1] == ep:
                return fin
            heapq.heappop(heap)
        return None

    while done < n:
        while released < n and in_system < cap and send[released] <= now:
            arrival[released] = max(send[released], slot_free_s)
            waiting.append(released)
            released += 1
            in_system += 1
        nd = len(dec)
        if nd == 0 and not pre and not waiting:
            if released >= n:
                break
            now = max(now, send[released])
            continue

        # --- a stretch of decode-only steps --------------------------------------------------------------
        if nd and not pre and not waiting:
            fin = next_completion()
            assert fin is not None  # every decode has a completion entry
            m = min(fin - g + 1, STRETCH_CAP)
            j = np.arange(m, dtype=np.int64)
            if bs == 1:
                need_per_step = np.full(m, nd, dtype=np.int64)
            else:
                need_per_step = np.asarray(resid, dtype=np.int64)[(1 - (g + j)) % bs]
            cum_need = np.cumsum(need_per_step)
            fits = int(np.searchsorted(cum_need, free, side="right"))
            m = min(m, fits)  # stop before the step that would need a block that is not free
            if m >= 1:
                ctx = (sum_base + nd * (g + j[:m])).astype(np.float64)
                T = np.full(m, nd, dtype=np.int64)
                times = cost.times(T, T, rp * ctx, L * ctx)
                cum = np.cumsum(times)
                if released < n and in_system < cap:
                    stop = int(np.searchsorted(cum, send[released] - now, side="left")) + 1
                    if stop < m:
                        m, times, cum, ctx, T = stop, times[:stop], cum[:stop], ctx[:stop], T[:stop]
                t0 = now
                ends = t0 + cum
                free -= int(cum_need[m - 1])
                used = kv_blocks - free
                max_used = max(max_used, used)
                seg_T.append(T)
                seg_lm.append(T)
                seg_P.append(rp * ctx)
                seg_K.append(L * ctx)
                seg_t.append(times)
                itl_v.append(times)
                itl_w.append(np.full(m, float(nd)))
                if timeline:
                    tl_t.append(t0)
                    tl_run.append(nd)
                    tl_wait.append(0)
                    tl_kv.append(used / kv_blocks)
                    tl_tok.append(nd)
                last = g + m - 1
                now = float(ends[-1])
                while True:
                    f = next_completion()
                    if f is None or f > last:
                        break
                    _, rid, _ = heapq.heappop(heap)
                    last_tok[rid] = float(ends[f - g])
                    finish_decode(rid, f, float(ends[f - g]))
                g = last + 1
                # decodes' last tokens: at the stretch's end (only ITL of re-admissions uses last_tok)
                continue

        # --- one general step ------------------------------------------------------------------------------
        budget = budget_max - nd
        need_dec = nd if bs == 1 else (resid[(1 - g) % bs] if nd else 0)
        plan: list[tuple[int, int, int]] = []  # (rid, chunk, new blocks) for prompts in progress
        need = need_dec
        for rid, st in pre.items():
            want = st[1] - st[0]
            chunk = want if want <= budget else (budget if chunked else 0)
            nb = max(-(-(st[0] + chunk) // bs) - st[2], 0)
            plan.append((rid, chunk, nb))
            budget -= chunk
            need += nb
        preempted = False
        while need > free and order:
            victim = next(reversed(order))
            preempted = True
            preempt[victim] += 1
            if victim in dec:
                last_tok[victim] = (
                    now  # it decoded in every step since it started: its last token ended step g-1
                )
                base, _ = dec.pop(victim)
                gen[victim] = base + g - prompt[victim]  # known tokens before this step: base + g
                sum_base -= base
                resid[base % bs] -= 1
                free += -(-(base + g - 1) // bs)
                epoch[victim] += 1
                # its need at this step is no longer counted
                if bs == 1 or (base + g) % bs == 1 % bs:
                    need -= 1
                    need_dec -= 1
            else:
                st = pre.pop(victim)
                free += st[2]
                for i, (rid, chunk, nb) in enumerate(plan):
                    if rid == victim:
                        need -= nb
                        budget += chunk
                        plan.pop(i)
                        break
            del order[victim]
            waiting.appendleft(victim)
        if preempted:
            budget = 0
        nd = len(dec)
        free -= need
        # admissions
        new_dec: list[int] = []
        while waiting and budget > 0 and len(order) < max_seqs:
            rid = waiting[0]
            known = prompt[rid] + gen[rid]
            if prefilled and preempt[rid] == 0:
                nb = -(-known // bs)  # prompt KV arrived with the request; the next token is a decode
                if nb > free or budget < 1:
                    break
                waiting.popleft()
                free -= nb
                budget -= 1
                order[rid] = None
                new_dec.append(rid)
                continue
            chunk = known if known <= budget else (budget if chunked else 0)
            if chunk == 0:
                break
            nb = -(-chunk // bs)
            if nb > free:
                break
            waiting.popleft()
            free -= nb
            budget -= chunk
            order[rid] = None
            pre[rid] = [0, known, nb]
            plan.append((rid, chunk, 0))
        used = kv_blocks - free  # the step's KV use and batch, before anything it completes is freed
        running_now = len(order)
        n_chunks = sum(1 for _, c, _ in plan if c > 0)
        chunk_tokens = sum(c for _, c, _ in plan)
        tokens = nd + len(new_dec) + chunk_tokens
        if tokens == 0:
            if not order and waiting:
                rid = waiting[0]
                raise ScenarioError(
                    f"request {rid} ({prompt[rid]} prompt tokens) can never be scheduled: it needs "
                    f"{-(-(prompt[rid] + gen[rid]) // bs)} KV blocks of {bs} tokens and the budget/cache allow "
                    f"{min(kv_blocks, budget_max // bs)}; raise --max-batched-tokens or enable chunked prefill"
                )
            if released < n:
                now = max(now, send[released])
                continue
            raise ScenarioError(
                "the scheduler stalled with requests waiting; this is a capsim bug, please report it"
            )
        # attention of the step (full attention): decodes at contexts base + g, chunks [s, e)
        ctx = sum_base + nd * g + sum(prompt[r] + 1 for r in new_dec)
        pairs = rp * ctx
        kv = L * ctx
        lm = nd + len(new_dec)
        for rid, chunk, _ in plan:
            if chunk:
                st = pre[rid]
                s, e = st[0], st[0] + chunk
                pairs += L * (e * (e + 1) - s * (s + 1)) / 2.0
                kv += L * e
                if e == st[1]:
                    lm += 1
        dt = step_time(tokens, nd + len(new_dec) + n_chunks, lm, float(pairs), float(kv))
        t0 = now
        now = now + dt
        one_T.append(tokens)
        one_lm.append(lm)
        one_P.append(float(pairs))
        one_K.append(float(kv))
        one_t.append(dt)
        if nd:
            itl_v.append(np.array([dt]))
            itl_w.append(np.array([float(nd)]))
        # prefilled arrivals: their first decode token follows the prefill side's first token
        for rid in new_dec:
            itl_one.append(now - last_tok[rid])
            last_tok[rid] = now
            gen[rid] += 1
            if gen[rid] >= output[rid]:
                free += -(-(prompt[rid] + 1) // bs)
                del order[rid]
                finish[rid] = now
                done += 1
                if in_system >= cap:
                    slot_free_s = now
                in_system -= 1
            else:
                start_decode(rid, prompt[rid] + 1 - g, g + output[rid] - gen[rid])
        # prompts in progress
        for rid, chunk, nb in plan:
            if not chunk:
                continue
            st = pre[rid]
            st[0] += chunk
            st[2] += nb
            if st[0] < st[1]:
                continue
            known = st[1]
            del pre[rid]
            gen[rid] += 1
            if gen[rid] == 1:
                first[rid] = now
            else:
                itl_one.append(now - last_tok[rid])
            last_tok[rid] = now
            if gen[rid] >= output[rid]:
                free += st[2]
                del order[rid]
                finish[rid] = now
                done += 1
                if in_system >= cap:
                    slot_free_s = now
                in_system -= 1
            else:
                # computed = known; the next step g+1 computes position known + 1 = base + g + 1
                start_decode(rid, known - g, g + output[rid] - gen[rid])
        max_used = max(max_used, used)
        if timeline:
            tl_t.append(t0)
            tl_run.append(running_now)
            tl_wait.append(len(waiting))
            tl_kv.append(used / kv_blocks)
            tl_tok.append(tokens)
        while True:
            f = next_completion()
            if f is None or f > g:
                break
            _, rid, _ = heapq.heappop(heap)
            last_tok[rid] = now
            finish_decode(rid, f, now)
        g += 1

    run = ReplicaRun(
        np.array(arrival),
        np.array(first),
        np.array(finish),
        np.array(preempt, dtype=np.int64),
        kv_blocks=kv_blocks,
    )
    if itl_one:
        itl_v.append(np.array(itl_one))
        itl_w.append(np.ones(len(itl_one)))
    run.itl_values, run.itl_weights = itl_v, itl_w
    T_all = np.concatenate([*seg_T, np.array(one_T, dtype=np.int64)])
    lm_all = np.concatenate([*seg_lm, np.array(one_lm, dtype=np.int64)])
    P_all = np.concatenate([*seg_P, np.array(one_P)])
    K_all = np.concatenate([*seg_K, np.array(one_K)])
    t_all = np.concatenate([*seg_t, np.array(one_t)])
    run.steps = int(t_all.size)
    if t_all.size:
        tr = cost.traffic(T_all, lm_all, P_all, K_all)
        run.busy_s = float(t_all.sum())
        run.weight_bytes_sparse = float(tr.weight_sparse.sum())
        run.weight_bytes_dense = float(tr.weight_dense.sum())
        run.flops_sparse = float(tr.flops_sparse.sum())
        run.flops_dense = float(tr.flops_dense.sum())
        run.kv_read_bytes = float(K_all.sum()) * cost.kv_bytes_per_token_read
    run.max_kv_blocks_used = max_used
    run.timeline = {"t": tl_t, "running": tl_run, "waiting": tl_wait, "kv_used": tl_kv, "tokens": tl_tok}
    return run
