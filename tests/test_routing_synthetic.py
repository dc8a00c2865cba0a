"""Synthetic routers against Monte Carlo: the analytic activation matches what their own samples activate."""

from __future__ import annotations

import numpy as np
import pytest
from strategies import tiny_moe_model

from capsim.routing import TraceRouter, make_router, uniform_expected_activated, unique_per_step
from capsim.routing.traces import Trace

# 4 MoE layers, E = 32, k = 4; group-limited variant: 8 groups of 4, topk_group = 2
MODEL = tiny_moe_model(4, 32, 4, n_group=8, topk_group=2)
TOKENS = 30_000


def _independent_mc(ids: np.ndarray, num_experts: int, step: int, reps: int, rng: np.random.Generator):
    """Mean and standard error of distinct experts over ``reps`` steps of ``step`` tokens at random positions.

    Positions are drawn independently over a long stream, so for routers with reuse they are (almost
    surely) far apart: tokens of different sequences.
    """
    layers, n, _ = ids.shape
    pos = rng.integers(n, size=(reps, step))
    counts = np.empty((layers, reps))
    for layer in range(layers):
        sets = ids[layer][pos].reshape(reps, -1)
        occ = np.zeros((reps, num_experts), dtype=bool)
        np.put_along_axis(occ, sets, True, axis=1)
        counts[layer] = occ.sum(axis=1)
    return counts.mean(axis=1), counts.std(axis=1) / np.sqrt(reps)


@pytest.fixture(scope="module")
def samples():
    """Long samples of each router, drawn once (read-only: do not modify)."""
    specs = (
        "uniform",
        "zipf:1.2",
        "dirichlet:0.5",
        "hot:4,share=0.6",
        "group:0.7",
        "temporal:0.6,zipf=0.8",
        "zipf:1.0,reuse=0.3,affinity=0.5",
        "dirichlet:1.0,reuse=0.2,affinity=0.8",
        "uniform,reuse=0.6,affinity=0.8",
    )
    out = {}
    for spec in specs:
        router = make_router(spec, MODEL, seed=11)
        out[spec] = (router, router.sample(TOKENS, seed=12))
    return out


@pytest.mark.parametrize("step", [1, 4, 16, 64])
def test_independent_tokens_closed_form_matches_monte_carlo(samples, step):
    """Σ_i 1 − (1 − π_i)^T is exact for independent tokens: the MC mean lies within 5 standard errors.

    Two error sources: the MC steps (their SE) and the finite stream they are drawn from, whose expert
    frequencies q_i deviate from π_i. By the delta method the latter adds
    Var = Σ_i [T(1 − π_i)^(T−1)]² · π_i(1 − π_i)/N · (2 − ν)/ν, where (2 − ν)/ν = (1 + r)/(1 − r) inflates
    the binomial variance for a per-token repeat probability r = 1 − ν (ν: the router's new-set probability).
    """
    rng = np.random.default_rng(step)
    for spec, (router, ids) in samples.items():
        mean, se = _independent_mc(ids, 32, step, 3000, rng)
        analytic = router.activated_per_layer(step)
        pi, nu = router.inclusion, router.new_origin
        grad = step * (1 - pi) ** (step - 1)
        var_stream = (grad**2 * pi * (1 - pi)).sum(axis=1) / TOKENS * (2 - nu) / nu
        total = np.sqrt(se**2 + var_stream)
        # 5 SE, plus a floor for step = 1 where every step activates exactly k (SE = 0)
        assert np.all(np.abs(mean - analytic) <= 5 * total + 1e-9), (spec, mean, analytic, total)


@pytest.mark.parametrize("step", [4, 16, 64])
def test_runs_of_consecutive_tokens_match_monte_carlo(samples, step):
    """sequences=1 (consecutive tokens): exact without affinity (within 5 SE), an estimator with it (≤ 5 %).

    The SE is computed over disjoint blocks of one stream; with reuse, neighbouring blocks are weakly
    correlated, so the 5-SE band is slightly optimistic: the 1 % relative floor absorbs that.
    """
    for spec, (router, ids) in samples.items():
        blocks = unique_per_step(ids, 32, step)
        mean = blocks.mean(axis=1)
        se = blocks.std(axis=1) / np.sqrt(blocks.shape[1])
        analytic = router.activated_per_layer(step, sequences=1)
        if router.affinity == 0:
            assert np.all(np.abs(mean - analytic) <= 5 * se + 0.01 * analytic), (spec, mean, analytic)
        else:
            assert np.all(np.abs(mean - analytic) <= 0.05 * mean), (spec, mean, analytic)


def test_trace_of_uniform_router_reproduces_closed_form(samples):
    """A trace sampled from the uniform router gives E·(1 − (1 − k/E)^T) within sampling error.

    Trace estimate: A = E − Σ_i C(N − n_i, T)/C(N, T), n_i ~ Binomial(N, k/E); its mean over traces is the
    closed form exactly (a random subset of iid tokens is iid). For T << N it is close to E − Σ_i (1 − n_i/N)^T,
    so by the delta method sd(A) <= sqrt(E)·T·(1 − p)^(T−1)·sqrt(p(1 − p)/N), p = k/E = 1/8, N = 30,000;
    we allow 5 sd. At T = 16:
    sqrt(32)·16·(7/8)^15·sqrt(0.109/30000) = 5.657·16·0.1349·0.001907 = 0.0233 -> tolerance 0.116 experts
    out of 32·(1 − (7/8)^16) = 28.22. The S-MBU the engine derives is linear in A (S_activated = Σ_l A_l·S_expert + …), so the
    same relative agreement carries over to S-MBU.
    """
    _, ids = samples["uniform"]
    trace = Trace.from_arrays(ids, model_id=MODEL.id, num_experts=32, top_k=4)
    replay = TraceRouter(trace)
    p, n = 4 / 32, TOKENS
    for t in (1, 2, 8, 16, 64):
        sd = np.sqrt(32) * t * (1 - p) ** (t - 1) * np.sqrt(p * (1 - p) / n)
        closed = uniform_expected_activated(32, 4, t)
        assert np.all(np.abs(replay.activated_per_layer(t) - closed) <= 5 * sd + 1e-9)
    assert uniform_expected_activated(32, 4, 16) == pytest.approx(28.22, abs=0.005)


def test_skewed_routers_activate_fewer_experts_than_uniform(samples):
    """The MoE-CAP observation (0.68–0.99x of uniform, moecap.md §4.2) is reproduced qualitatively."""
    uniform = uniform_expected_activated(32, 4, 8)
    for spec in ("zipf:1.2", "dirichlet:0.5", "hot:4,share=0.6"):
        router, _ = samples[spec]
        assert np.all(router.activated_per_layer(8) < uniform)


def test_reuse_does_not_change_the_load_per_expert(samples):
    """Reuse and affinity keep every token's marginal π exactly: sample frequencies match π (5 SE)."""
    for spec in ("temporal:0.6,zipf=0.8", "dirichlet:1.0,reuse=0.2,affinity=0.8"):
        router, ids = samples[spec]
        freq = np.stack([np.bincount(ids[layer].ravel(), minlength=32) for layer in range(4)]) / TOKENS
        pi = router.inclusion
        # reuse ρ inflates the variance of a frequency by (1 + ρ_eff)/(1 − ρ_eff); allow ρ_eff up to 0.8
        se = np.sqrt(pi * (1 - pi) / TOKENS * (1.8 / 0.2))
        assert np.all(np.abs(freq - pi) <= 5 * se + 1e-12), spec
