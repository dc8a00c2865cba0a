"""capsim serve: consistency with predict, conservation of requests, KV capacity, Little's law."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from capsim.engine.predict import predict
from capsim.engine.scenario import Scenario
from capsim.serving import SchedulerConfig, Workload, build_replica, build_workload, parse_length, serve
from capsim.serving.simulate import simulate_replica

MIXTRAL = Scenario(model="mixtral-8x7b", hardware="h100-sxm", gpus=8)


@functools.cache
def _replica():
    return build_replica(MIXTRAL, SchedulerConfig(max_num_seqs=1024, max_batched_tokens=8192))


@pytest.fixture(scope="module")
def replica():
    """Mixtral-8x7B on 8x H100 with vLLM's limits (1024 sequences, 8192 tokens, 16-token blocks). Read-only."""
    return _replica()


def _fixed(n, prompt, output, rate=None, concurrency=None, seed=0):
    return build_workload(
        num_prompts=n,
        prompt=parse_length(str(prompt), "p"),
        output=parse_length(str(output), "o"),
        rate=rate,
        concurrency=concurrency,
        seed=seed,
    )


@pytest.mark.parametrize("prompt,output", [(512, 128), (1, 2), (3000, 40), (8192, 16)])
def test_one_request_alone_is_predict(replica, prompt, output):
    """A lone request's TTFT is predict's prefill of batch 1 and its TPOT predict's mean decode step (its
    prompt fits one step's budget, so the prefill is one pass in both)."""
    sched = SchedulerConfig(max_num_seqs=1024, max_batched_tokens=8192)
    res = serve(MIXTRAL, sched, _fixed(1, prompt, output, rate=None), replica=replica)
    ref = predict(
        Scenario(model="mixtral-8x7b", hardware="h100-sxm", gpus=8, prompt_len=prompt, gen_len=output)
    )
    assert res.latency["ttft"]["mean"] == pytest.approx(ref.ttft_s, rel=1e-9)
    assert res.latency["tpot"]["mean"] == pytest.approx(ref.tpot_s, rel=1e-9)
    assert res.latency["e2el"]["mean"] == pytest.approx(ref.e2e_latency_s, rel=1e-9)


@pytest.mark.parametrize("batch,prompt,output", [(8, 512, 64), (32, 1024, 33), (100, 200, 10)])
def test_equal_requests_at_once_without_chunking_are_predicts_lock_step_batch(batch, prompt, output):
    """N equal requests sent together, whole prompts in one step (no chunking, budget ≥ N·P): every TTFT is
    predict's whole-batch prefill and every TPOT its mean decode step at batch N."""
    budget = batch * prompt
    sched = SchedulerConfig(max_num_seqs=1024, max_batched_tokens=budget, chunked_prefill=False)
    res = serve(MIXTRAL, sched, _fixed(batch, prompt, output))
    ref = predict(
        Scenario(
            model="mixtral-8x7b",
            hardware="h100-sxm",
            gpus=8,
            batch=batch,
            prompt_len=prompt,
            gen_len=output,
            prefill_chunk_tokens=budget,
        )
    )
    ttft = res.per_request["ttft_s"]
    assert np.allclose(ttft, ref.ttft_s, rtol=1e-9)
    assert res.latency["tpot"]["mean"] == pytest.approx(ref.tpot_s, rel=1e-9)
    assert res.latency["tpot"]["p99"] == pytest.approx(ref.tpot_s, rel=1e-9)  # all equal
    # throughput: N·G tokens over the batch's E2E
    assert res.output_throughput == pytest.approx(batch * output / ref.e2e_latency_s, rel=1e-9)


def test_chunked_prefill_interleaves_with_decodes(replica):
    """With a small budget a long prompt is split: its TTFT grows over the unchunked one, while requests
    already decoding keep getting one token per step (their ITL stays a step, no multi-step stall)."""
    work = Workload(np.array([0.0, 0.05]), np.array([64, 6000]), np.array([400, 4]))
    small = SchedulerConfig(max_num_seqs=256, max_batched_tokens=512)
    big = SchedulerConfig(max_num_seqs=1024, max_batched_tokens=8192)
    r_small = simulate_replica(replica.cost, replica.kv_blocks, small, work)
    r_big = simulate_replica(replica.cost, replica.kv_blocks, big, work)
    ttft_small = r_small.first_token_s[1] - r_small.arrival_s[1]
    ttft_big = r_big.first_token_s[1] - r_big.arrival_s[1]
    assert ttft_small > ttft_big
    # the decoding request's longest gap: one 6000-token step unchunked, a 512-token step chunked
    assert r_small.itl_samples().max() < r_big.itl_samples().max() / 3


def _run(replica, sched, work):
    cost = replica.cost
    return simulate_replica(cost, replica.kv_blocks, sched, work)


def test_preemption_when_kv_runs_out(replica):
    """A cache of 64 blocks of 16 tokens (1024 tokens) and 8 requests of 100 + 200 tokens: they cannot all
    stay resident (8 × 300 = 2400 > 1024), so some are preempted and recomputed; all still finish, and KV use
    never exceeds the 64 blocks."""
    sched = SchedulerConfig(max_num_seqs=64, max_batched_tokens=2048, block_size=16)
    work = _fixed(8, 100, 200)
    run = simulate_replica(replica.cost, 64, sched, work)
    assert run.preemptions.sum() > 0
    assert np.all(np.isfinite(run.finish_s))
    assert run.max_kv_blocks_used <= 64


@st.composite
def workloads(draw):
    """Random small workloads: Poisson or all-at-once arrivals, optional concurrency cap, lengths from 1
    token (the smallest request) to a few thousand, and scheduler limits small enough to force chunking,
    queueing and preemption."""
    n = draw(st.integers(1, 40))
    prompts = np.array(draw(st.lists(st.integers(1, 3000), min_size=n, max_size=n)))
    outputs = np.array(draw(st.lists(st.integers(1, 300), min_size=n, max_size=n)))
    kind = draw(st.sampled_from(["offline", "poisson", "closed"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    send = (
        np.zeros(n) if kind != "poisson" else np.cumsum(rng.exponential(1 / draw(st.floats(0.5, 200.0)), n))
    )
    conc = draw(st.integers(1, 8)) if kind == "closed" else None
    seqs = draw(st.integers(1, 64))
    sched = SchedulerConfig(
        max_num_seqs=seqs,
        max_batched_tokens=draw(st.integers(max(16, seqs), 4096)),
        chunked_prefill=draw(st.booleans()),
        block_size=draw(st.sampled_from([1, 16, 32])),
    )
    blocks = draw(st.integers(1, 2000))
    return Workload(send, prompts, outputs, conc), sched, blocks


@settings(max_examples=40, deadline=None)
@given(case=workloads())
def test_invariants_over_random_workloads(case):
    """No request lost or finished twice, causality (arrival ≤ first token ≤ finish), KV use within the cache,
    and tokens conserved (every ITL sample is one output token after the first)."""
    replica = _replica()
    work, sched, blocks = case
    longest = int((work.prompt_tokens + work.output_tokens).max())
    assume(longest <= blocks * sched.block_size)
    if not sched.chunked_prefill:
        assume(int((work.prompt_tokens + work.output_tokens).max()) <= sched.max_batched_tokens)
    run = simulate_replica(replica.cost, blocks, sched, work)
    assert np.all(np.isfinite(run.finish_s))  # every request finished (a NaN would be a lost one)
    assert np.all(run.arrival_s >= work.send_s - 1e-12)
    assert np.all(run.first_token_s >= run.arrival_s)
    assert np.all(run.finish_s >= run.first_token_s)
    assert run.max_kv_blocks_used <= blocks
    assert run.itl_samples().size == int((work.output_tokens - 1).sum())
    assert np.all(run.itl_samples() > 0)
    if work.concurrency is not None:
        # never more than the cap in flight: at each arrival, requests arrived and not finished < cap + 1
        for t in run.arrival_s:
            in_flight = np.sum((run.arrival_s <= t) & (run.finish_s > t))
            assert in_flight <= work.concurrency


def test_littles_law_on_a_long_run(replica):
    """Mean requests in the server (integrated from the scheduler's own queue and batch over time) equals
    arrival rate × mean E2E latency within a few per cent on 3000 Poisson requests."""
    rate = 20.0
    work = build_workload(
        num_prompts=3000,
        prompt=parse_length("lognormal:400:300", "p"),
        output=parse_length("lognormal:150:100", "o"),
        rate=rate,
        seed=7,
    )
    sched = SchedulerConfig(max_num_seqs=1024, max_batched_tokens=8192)
    res = serve(MIXTRAL, sched, work, replica=replica)
    tl = res.timeline
    t = np.append(tl["t"], res.per_request["finish_s"].max())
    in_system = tl["running"] + tl["waiting"]
    mean_n = float(np.sum(in_system * np.diff(t))) / (t[-1] - t[0])
    assert mean_n == pytest.approx(rate * res.latency["e2el"]["mean"], rel=0.05)


def test_fleet_of_replicas_splits_the_load(replica):
    """Two replicas at twice the rate serve each request as one replica at the rate does (round-robin of
    the same send times halves each replica's load only approximately, so compare the TPOT loosely)."""
    sched = SchedulerConfig(max_num_seqs=1024, max_batched_tokens=8192)
    one = serve(MIXTRAL, sched, _fixed(400, 512, 128, rate=5.0, seed=1), replica=replica)
    two = serve(MIXTRAL, sched, _fixed(800, 512, 128, rate=10.0, seed=1), replica=replica, replicas=2)
    assert two.completed == 800
    assert two.latency["tpot"]["mean"] == pytest.approx(one.latency["tpot"]["mean"], rel=0.1)
    assert two.request_throughput == pytest.approx(2 * one.request_throughput, rel=0.15)


# Reported by two helpers: before fa3f158 the step-wise simulator left request 9's first token NaN here (its
# 841-token prompt is chunked 423 + 418 under the 423-token budget beside 3 other sequences, capped at 4 in
# flight; the step that scheduled its last prompt chunk was taken for a decode). The event simulator was right.
@example(
    case=(
        Workload(
            np.zeros(16),
            np.array([1] * 9 + [841] + [1] * 6),
            np.array([1, 1, 1, 1, 1, 1, 5, 5, 4, 2, 1, 1, 1, 1, 1, 1]),
            4,
        ),
        SchedulerConfig(max_num_seqs=4, max_batched_tokens=423, chunked_prefill=True, block_size=16),
        56,
    ),
    prefilled=False,
)
@settings(max_examples=40, deadline=None)
@given(case=workloads(), prefilled=st.booleans())
def test_event_driven_equals_stepwise(case, prefilled):
    """The fast event-driven simulator and the step-wise one give the same times for every request, the
    same ITL samples, steps, preemptions and utilisation totals (two independent bookkeepings of one
    scheduler)."""
    from capsim.serving.events import simulate_events
    from capsim.serving.simulate import simulate_stepwise

    replica = _replica()
    work, sched, blocks = case
    assume(int((work.prompt_tokens + work.output_tokens).max()) + 1 <= blocks * sched.block_size)
    if not sched.chunked_prefill:
        assume(int((work.prompt_tokens + work.output_tokens).max()) <= sched.max_batched_tokens)
    assume(sched.max_batched_tokens >= sched.max_num_seqs)
    first = work.send_s + 0.01 if prefilled else None
    a = simulate_stepwise(replica.cost, blocks, sched, work, prefilled_first_token_s=first)
    b = simulate_events(replica.cost, blocks, sched, work, prefilled_first_token_s=first)
    assert not np.isnan(a.first_token_s).any() and not np.isnan(b.first_token_s).any()  # no lost first token
    for name in ("arrival_s", "first_token_s", "finish_s"):
        assert np.allclose(getattr(a, name), getattr(b, name), rtol=1e-9, atol=1e-12, equal_nan=True), name
    assert np.array_equal(a.preemptions, b.preemptions)
    assert a.steps == b.steps
    assert np.allclose(np.sort(a.itl_samples()), np.sort(b.itl_samples()), rtol=1e-9)
    assert a.max_kv_blocks_used == b.max_kv_blocks_used
    for name in ("busy_s", "weight_bytes_sparse", "flops_sparse", "kv_read_bytes"):
        assert getattr(a, name) == pytest.approx(getattr(b, name), rel=1e-9), name


def test_issue_11_last_prompt_token_is_not_a_decode():
    """Regression (found by the property test): a 17-token prompt under a 16-token budget leaves one prompt
    token for the next step; the step-wise simulator took that step for a decode and never set the first
    token. Both simulators must emit the first token after the 1-token chunk, then decode the second."""
    from capsim.serving.events import simulate_events
    from capsim.serving.simulate import simulate_stepwise

    replica = _replica()
    sched = SchedulerConfig(max_num_seqs=1, max_batched_tokens=16, block_size=16)
    work = Workload(np.zeros(1), np.array([17]), np.array([2]))
    for sim in (simulate_stepwise, simulate_events):
        run = sim(replica.cost, 100, sched, work)
        assert run.steps == 3  # chunk of 16, chunk of 1 (first token), one decode (second token)
        assert np.isfinite(run.first_token_s[0]) and run.finish_s[0] > run.first_token_s[0]


def test_replicas_beyond_the_requests_stay_idle_and_cost_nothing(replica):
    """Regression (the long fuzz run's process killed for memory, rc 137): `--replicas 2147483648` listed 2^31
    request shards (3.8 GB before the MemoryError). Replicas that get no request are idle: 4 requests on
    2^31 replicas are served as on 4 (one request each), only the device count differs."""
    from capsim.serving.replica import Disaggregation

    sched = SchedulerConfig(max_num_seqs=1024, max_batched_tokens=8192)
    work = _fixed(4, 512, 16)
    four = serve(MIXTRAL, sched, work, replicas=4, replica=replica)
    huge = serve(MIXTRAL, sched, work, replicas=2**31, replica=replica)
    assert huge.latency == four.latency
    assert huge.completed == four.completed == 4
    dis = Disaggregation(prefill_replicas=1, decode_replicas=2**31, link=None)
    assert serve(MIXTRAL, sched, work, disaggregation=dis, replica=replica).completed == 4


def test_fewer_clients_than_replicas_is_refused(replica):
    """Regression (found with the fuzz run's inputs): `--concurrency 1 --replicas 2` gave the second replica
    no client, and its closed loop waited forever (a hang). Now one clear error."""
    from capsim.errors import ScenarioError

    sched = SchedulerConfig(max_num_seqs=1024, max_batched_tokens=8192)
    with pytest.raises(ScenarioError, match="--concurrency 1 is below --replicas 2"):
        serve(MIXTRAL, sched, _fixed(4, 512, 16, concurrency=1), replicas=2, replica=replica)
