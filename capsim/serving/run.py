"""``serve``: scenario + scheduler + workload -> simulated replicas -> vLLM-named serving metrics.

The replica is resolved exactly as ``predict`` resolves it (:func:`capsim.engine.resolve.resolve`); its KV pool comes
from the same memory plan (usable memory − weights − buffers of the largest step); step times come from
:class:`capsim.serving.stepcost.StepCost` (the engine's ``mixed_passes``). A fleet of ``replicas`` copies gets
the requests round-robin in send order. Disaggregated serving runs ``prefill_replicas`` prefill-only
replicas and ``decode_replicas`` decode replicas; each request's KV cache crosses the link between them after
its first token (bytes / link bandwidth), and the decode side admits it when it lands (no backpressure from the
decode side to the prefill side is modelled).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from capsim.engine.memory import kv_bytes_per_sequence_at
from capsim.engine.resolve import resolve
from capsim.engine.resolved import ResolvedScenario
from capsim.engine.scenario import Scenario
from capsim.errors import ScenarioError
from capsim.hardware.db import HardwareDB
from capsim.serving.metrics import ServeResult, summarize
from capsim.serving.replica import Disaggregation, ReplicaModel
from capsim.serving.scheduler import ReplicaRun, SchedulerConfig
from capsim.serving.simulate import kv_block_count, simulate_replica
from capsim.serving.stepcost import StepCost
from capsim.serving.workload import Workload


def _unsupported(rs: ResolvedScenario) -> None:
    sc = rs.scenario
    if rs.deployment.mode != "gpu":
        raise ScenarioError(
            f"capsim serve models GPU-resident serving; --mode {rs.deployment.mode} is not supported "
            "(use capsim predict for offload and CPU modes)"
        )
    if sc.pp > 1 or sc.ep > 1 or sc.nodes > 1:
        raise ScenarioError(
            "capsim serve models one tensor-parallel replica per server; drop --pp/--ep/--nodes "
            "(use --replicas for data parallelism)"
        )


def build_replica(
    scenario: Scenario, sched: SchedulerConfig, hardware_db: HardwareDB | None = None
) -> ReplicaModel:
    """Resolve one replica and size its KV cache from the memory plan of its largest step."""
    sched.validate()
    # The memory plan of a step of max_batched_tokens prompt tokens with max_num_seqs resident sequences: its
    # buffers are the largest step's activations and the logits of every resident sequence.
    # (the probe's sequence stays inside the model's context window, which the engine checks)
    from capsim.engine.resolve import resolve_model

    window = resolve_model(scenario.model).max_context or sched.max_batched_tokens + 1
    probe = replace(
        scenario,
        batch=sched.max_num_seqs,
        prompt_len=min(sched.max_batched_tokens, window - 1),
        gen_len=1,
        prefill_chunk_tokens=sched.max_batched_tokens,
    )
    rs, memory = resolve(probe, hardware_db)
    _unsupported(rs)
    pool = memory.usable_bytes - memory.weights_bytes - memory.buffers_bytes
    length = sched.max_batched_tokens + 1
    per_token = float(kv_bytes_per_sequence_at(rs, length)) / length
    blocks = kv_block_count(pool, per_token, sched.block_size)
    if blocks < 1:
        raise ScenarioError(
            f"no room for a KV block on {rs.device.id}: weights and buffers leave {pool / 1e9:.2f} GB; "
            "use more GPUs, a lower --weight-dtype or smaller --max-batched-tokens/--max-num-seqs"
        )
    cost = StepCost(
        rs, sched.max_batched_tokens + sched.max_num_seqs, sched.max_num_seqs + sched.max_batched_tokens
    )
    return ReplicaModel(rs, memory, cost, blocks, per_token, pool)


def check_workload(work: Workload, replica: ReplicaModel, sched: SchedulerConfig) -> None:
    """One clear error for requests no replica could ever serve."""
    model = replica.rs.model
    longest = int((work.prompt_tokens + work.output_tokens).max())
    if model.max_context is not None and longest > model.max_context:
        i = int(np.argmax(work.prompt_tokens + work.output_tokens))
        raise ScenarioError(
            f"request {i} has {int(work.prompt_tokens[i])} prompt + {int(work.output_tokens[i])} output tokens = "
            f"{longest}, beyond {model.id}'s context window of {model.max_context}; shorten the lengths"
        )
    capacity = replica.kv_blocks * sched.block_size
    if longest > capacity:
        raise ScenarioError(
            f"a request of {longest} tokens needs more KV cache than the replica holds ({capacity} tokens); "
            "use more GPUs per replica or shorter requests"
        )
    if not sched.chunked_prefill:
        top = int(work.prompt_tokens.max())
        if top > sched.max_batched_tokens:
            raise ScenarioError(
                f"--max-batched-tokens {sched.max_batched_tokens} is smaller than one prompt of {top} tokens, "
                "which without chunked prefill must run in one step; raise it or use --chunked-prefill"
            )


def _dispatch(work: Workload, replicas: int) -> list[np.ndarray]:
    """Round-robin in send order: the requests of each replica that gets any (replicas beyond the number of
    requests stay idle, and are not listed: `--replicas 2147483648` listed 2^31 of them and ran out of memory).
    """
    idx = np.arange(work.size)
    return [idx[r::replicas] for r in range(min(replicas, max(work.size, 1)))]


def _check_concurrency(concurrency: int | None, replicas: int, flag: str) -> None:
    """Closed-loop clients are split over the replicas; a replica left with none would wait forever."""
    if concurrency is not None and concurrency < replicas:
        raise ScenarioError(
            f"--concurrency {concurrency} is below {flag} {replicas}: each replica needs at least one client "
            f"in flight; use --concurrency >= {replicas} or fewer replicas"
        )


def _split_concurrency(concurrency: int | None, replicas: int, r: int) -> int | None:
    if concurrency is None:
        return None
    return concurrency // replicas + (1 if r < concurrency % replicas else 0)


def _merge(runs: list[tuple[np.ndarray, ReplicaRun]], n: int) -> ReplicaRun:
    arrival, first, finish = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    pre = np.zeros(n, dtype=np.int64)
    out = ReplicaRun(arrival, first, finish, pre)
    for idx, run in runs:
        arrival[idx], first[idx], finish[idx], pre[idx] = (
            run.arrival_s,
            run.first_token_s,
            run.finish_s,
            run.preemptions,
        )
        out.itl_values += run.itl_values
        out.itl_weights += run.itl_weights
        out.steps += run.steps
        out.busy_s += run.busy_s
        for name in (
            "weight_bytes_sparse",
            "weight_bytes_dense",
            "kv_read_bytes",
            "flops_sparse",
            "flops_dense",
        ):
            setattr(out, name, getattr(out, name) + getattr(run, name))
        out.max_kv_blocks_used = max(out.max_kv_blocks_used, run.max_kv_blocks_used)
        out.kv_blocks = run.kv_blocks
    out.timeline = runs[0][1].timeline if runs else {}
    return out


def serve(
    scenario: Scenario,
    sched: SchedulerConfig,
    work: Workload,
    *,
    replicas: int = 1,
    disaggregation: Disaggregation | None = None,
    slo: dict[str, float] | None = None,
    hardware_db: HardwareDB | None = None,
    replica: ReplicaModel | None = None,
    timeline: bool = True,
) -> ServeResult:
    """Simulate serving ``work`` and summarise it (see :class:`capsim.serving.metrics.ServeResult`)."""
    if replicas < 1:
        raise ScenarioError(f"--replicas must be >= 1, got {replicas}")
    if disaggregation is None:
        _check_concurrency(work.concurrency, replicas, "--replicas")
    rep = replica if replica is not None else build_replica(scenario, sched, hardware_db)
    check_workload(work, rep, sched)
    n = work.size
    notes: list[str] = []
    if disaggregation is None:
        runs = []
        for r, idx in enumerate(_dispatch(work, replicas)):
            sub = work.subset(idx, _split_concurrency(work.concurrency, replicas, r))
            runs.append(
                (idx, simulate_replica(rep.cost, rep.kv_blocks, sched, sub, timeline=timeline and r == 0))
            )
        merged = _merge(runs, n)
        devices = replicas * rep.rs.layout.devices_per_replica
    else:
        merged, transfer = _serve_disaggregated(rep, sched, work, disaggregation, timeline, hardware_db)
        devices = (
            disaggregation.prefill_replicas + disaggregation.decode_replicas
        ) * rep.rs.layout.devices_per_replica
        notes.append(f"KV transfer per request: mean {transfer * 1e3:.2f} ms over the prefill→decode link")
    return summarize(
        rep,
        sched,
        work,
        merged,
        devices=devices,
        replicas=replicas,
        slo=slo or {},
        disaggregation=disaggregation,
        notes=notes,
    )


def _link_bandwidth(rep: ReplicaModel, link: str | None, hardware_db: HardwareDB | None) -> tuple[float, str]:
    """Bytes/s per device on the prefill→decode link and its name."""
    if link is None:
        bw = rep.rs.node.gpu_to_gpu_bandwidth()
        return bw, f"{rep.rs.node.id} GPU-to-GPU link"
    from capsim.hardware.db import load_hardware_db

    db = hardware_db if hardware_db is not None else load_hardware_db()
    entry = db.link(link)  # UnknownHardwareError / kind error with close matches
    return entry.bandwidth_bytes_s, f"link {link}"


def _serve_disaggregated(
    rep: ReplicaModel,
    sched: SchedulerConfig,
    work: Workload,
    dis: Disaggregation,
    timeline: bool,
    hardware_db: HardwareDB | None,
) -> tuple[ReplicaRun, float]:
    if dis.prefill_replicas < 1 or dis.decode_replicas < 1:
        raise ScenarioError("--prefill-replicas and --decode-replicas must both be >= 1")
    _check_concurrency(work.concurrency, dis.prefill_replicas, "--prefill-replicas")
    n = work.size
    # prefill side: every request needs one output token (its first), made by the prefill replica
    pre_work = Workload(
        work.send_s, work.prompt_tokens, np.ones(n, dtype=np.int64), work.concurrency, work.description
    )
    pre_runs = []
    for r, idx in enumerate(_dispatch(pre_work, dis.prefill_replicas)):
        sub = pre_work.subset(idx, _split_concurrency(work.concurrency, dis.prefill_replicas, r))
        pre_runs.append((idx, simulate_replica(rep.cost, rep.kv_blocks, sched, sub, timeline=False)))
    pre = _merge(pre_runs, n)
    bw, _ = _link_bandwidth(rep, dis.link, hardware_db)
    # each device sends its shard of the prompt's KV over its own link, in parallel
    transfer = work.prompt_tokens * rep.kv_bytes_per_token / bw
    landed = pre.first_token_s + transfer
    multi = np.nonzero(work.output_tokens > 1)[0]
    order = multi[np.argsort(landed[multi], kind="stable")]
    dec_runs = []
    for r in range(min(dis.decode_replicas, max(order.size, 1))):  # idle decode replicas are not run
        idx = order[r :: dis.decode_replicas]
        sub = Workload(landed[idx], work.prompt_tokens[idx], work.output_tokens[idx], None, work.description)
        dec_runs.append(
            (
                idx,
                simulate_replica(
                    rep.cost,
                    rep.kv_blocks,
                    sched,
                    sub,
                    prefilled_first_token_s=pre.first_token_s[idx],
                    timeline=timeline and r == 0,
                ),
            )
        )
    dec = _merge(dec_runs, n)
    # requests with one output token finish on the prefill side
    one = work.output_tokens <= 1
    dec.finish_s[one] = pre.finish_s[one]
    dec.arrival_s = pre.arrival_s
    dec.first_token_s = pre.first_token_s
    dec.preemptions = dec.preemptions + pre.preemptions
    dec.itl_values += pre.itl_values
    dec.itl_weights += pre.itl_weights
    for name in (
        "busy_s",
        "weight_bytes_sparse",
        "weight_bytes_dense",
        "kv_read_bytes",
        "flops_sparse",
        "flops_dense",
        "steps",
    ):
        setattr(dec, name, getattr(dec, name) + getattr(pre, name))
    return dec, float(transfer.mean())
