"""Routing: closed forms checked by hand, spec strings, errors, and the invariants of expected activation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from strategies import moe_shapes, router_specs, step_tokens, tiny_moe_model

from capsim import ScenarioError, TraceError
from capsim.routing import (
    ROUTER_KINDS,
    Router,
    SyntheticRouter,
    TraceRouter,
    UniformRouter,
    UnknownRouterError,
    make_router,
    parse_router_spec,
    uniform_expected_activated,
    water_fill,
)
from capsim.routing.traces import Trace

# ---- closed forms, computed by hand ------------------------------------------------------------------------


def test_uniform_closed_form_by_hand():
    # E = 8, k = 2 (Mixtral): 8·(1 − (6/8)^T). T = 2: 8·(1 − 9/16) = 3.5; T = 1: 8·(1 − 3/4) = 2
    got = uniform_expected_activated(8, 2, [0, 1, 2])
    assert got == pytest.approx([0.0, 2.0, 3.5], abs=1e-12)
    # moecap.md §4.2 iid column: Mixtral B=32 -> 8.00, DBRX (16, 4) B=8 -> 14.40, Qwen1.5-MoE (60, 4) B=16 -> 40.1
    assert uniform_expected_activated(8, 2, 32) == pytest.approx(8.00, abs=0.005)
    assert uniform_expected_activated(16, 4, 8) == pytest.approx(14.40, abs=0.005)
    assert uniform_expected_activated(60, 4, 16) == pytest.approx(40.1, abs=0.05)


def test_uniform_router_matches_closed_form_on_every_layer():
    router = make_router("uniform", tiny_moe_model(3, 8, 2))
    assert isinstance(router, UniformRouter)
    t = np.array([0.0, 1.0, 2.0, 5.5, 100.0])
    got = router.activated_per_layer(t)
    assert got.shape == (3, 5)
    np.testing.assert_allclose(
        got, np.broadcast_to(uniform_expected_activated(8, 2, t), (3, 5)), rtol=1e-12, atol=1e-12
    )


def test_water_fill_by_hand():
    # weights ∝ r^-2 for r = 1..4: 1, 1/4, 1/9, 1/16; k = 2. 2·w_1 = 2/(1.4236) > 1, so expert 1 is capped at 1
    # and the remaining mass 1 is shared by 1/4 : 1/9 : 1/16 = 36 : 16 : 9 (sum 61).
    got = water_fill(np.array([1.0, 1 / 4, 1 / 9, 1 / 16]), 2)
    np.testing.assert_allclose(got, [1.0, 36 / 61, 16 / 61, 9 / 61], rtol=1e-12)
    # no capping needed: proportional
    np.testing.assert_allclose(water_fill(np.array([3.0, 1.0]), 1), [0.75, 0.25])


def test_zipf_closed_form_by_hand():
    # E = 4, k = 1, s = 1: π ∝ 1, 1/2, 1/3, 1/4 (sum 25/12) -> 12/25, 6/25, 4/25, 3/25.
    # A(2) = Σ 1 − (1 − π)^2 = Σ (2π − π²) = 2 − (144 + 36 + 16 + 9)/625 = 2 − 0.328 = 1.672
    router = make_router("zipf:1", tiny_moe_model(2, 4, 1), seed=5)
    assert sorted(router.inclusion[0]) == pytest.approx(sorted([12 / 25, 6 / 25, 4 / 25, 3 / 25]))
    assert router.activated_per_layer(2) == pytest.approx([1.672, 1.672])


def test_temporal_closed_form_by_hand():
    # E = 2, k = 1, reuse ρ = 0.5, one sequence of m = 3 tokens. Each next token equals the previous one with
    # probability ρ + (1 − ρ)/2 = 0.75, so P(all three equal) = 0.75² = 0.5625 and
    # A = 1·0.5625 + 2·0.4375 = 1.4375. The formula: 2·(1 − ½·(1 − ½·½)²) = 2·(1 − 0.28125) = 1.4375.
    router = make_router("temporal:0.5", tiny_moe_model(1, 2, 1))
    assert router.activated_per_layer(3, sequences=1)[0] == pytest.approx(1.4375)
    # independent tokens (decode) ignore reuse: 2·(1 − ½³) = 1.75
    assert router.activated_per_layer(3)[0] == pytest.approx(1.75)
    # three sequences of one token each are independent too
    assert router.activated_per_layer(3, sequences=3)[0] == pytest.approx(1.75)


def test_group_limited_marginals_and_group_count():
    # DeepSeek-V3 shape scaled down: E = 16 in 4 groups of 4, topk_group = 2, k = 2. Groups uniform:
    # ρ_g = 2/4 = 0.5, π_i = 0.5 · 2/(2·4) = 0.125 = k/E, so the expert count equals the uniform closed form,
    # and the group count is 4·(1 − 0.5^T): T = 1 -> 2 groups, T = 2 -> 3 groups.
    model = tiny_moe_model(2, 16, 2, n_group=4, topk_group=2)
    router = make_router("group", model)
    assert isinstance(router, SyntheticRouter)
    np.testing.assert_allclose(router.inclusion, 0.125)
    assert router.activated_per_layer(5) == pytest.approx([float(uniform_expected_activated(16, 2, 5))] * 2)
    assert router.activated_groups_per_layer([1, 2])[0] == pytest.approx([2.0, 3.0])
    ids = router.sample(500, seed=1)
    groups = ids // 4
    # every token's experts lie in at most topk_group = 2 groups
    assert max(len(set(row)) for row in groups.reshape(-1, 2)) <= 2


def test_trace_router_exact_by_hand():
    # one layer, E = 3, k = 1, tokens use experts 0, 0, 1, 2 (N = 4): n = (2, 1, 1).
    trace = Trace.from_arrays(np.array([[[0], [0], [1], [2]]]), model_id="tiny", num_experts=3, top_k=1)
    router = TraceRouter(trace)
    # independent tokens = a random subset of T distinct trace tokens. T = 2: the 6 pairs of positions see
    # 1 ({0,1}: both expert 0) or 2 experts (the other 5) -> 11/6. Formula: 3 − [C(2,2) + 2·C(3,2)]/C(4,2)
    # = 3 − 7/6 = 11/6. T = 3: 3 − [C(2,3) + 2·C(3,3)]/C(4,3) = 3 − 2/4 = 2.5; T >= 4: the whole trace, 3.
    assert router.activated_per_layer([2, 3, 4, 50])[0] == pytest.approx([11 / 6, 2.5, 3.0, 3.0])
    # all windows of 2 consecutive tokens: {0}, {0,1}, {1,2} -> (1 + 2 + 2)/3 = 5/3
    assert router.activated_per_layer(2, sequences=1)[0] == pytest.approx(5 / 3)
    # windows of 3: {0,1}, {0,1,2} -> 2.5; a window cannot exceed the trace: T = 10 gives all 3 seen
    assert router.activated_per_layer([3, 10], sequences=1)[0] == pytest.approx([2.5, 3.0])
    # two independent windows of 2: expert 0 missed by 1/3 of windows, expert 1 by 1/3, expert 2 by 2/3:
    # A = 3 − (1/9 + 1/9 + 4/9) = 7/3
    assert router.activated_per_layer(4, sequences=2)[0] == pytest.approx(7 / 3)
    # m = 2.5 interpolates linearly between windows of 2 and 3: (5/3 + 2.5)/2
    assert router.activated_per_layer(2.5, sequences=1)[0] == pytest.approx((5 / 3 + 2.5) / 2)


def test_uniform_bound_needs_independence():
    """The uniform bound holds for independent tokens only: a round-robin trace beats it.

    Tokens cycle through experts {0,1}, {2,3}, {4,5}, {6,7} (N = 40): any 4 consecutive tokens see all 8
    experts, while uniform gives 8·(1 − (3/4)^4) = 5.46875. A random subset of 4 of its tokens also beats it:
    each expert is used by 10 tokens, so A = 8·(1 − C(30,4)/C(40,4)) = 8·(1 − 27405/91390) = 5.60105 —
    drawing without replacement from a perfectly balanced finite trace spreads more than independent draws.
    """
    ids = np.array([[[0, 1], [2, 3], [4, 5], [6, 7]] * 10])
    router = TraceRouter(Trace.from_arrays(ids, model_id="tiny", num_experts=8, top_k=2))
    assert router.activated_per_layer(4, sequences=1)[0] == pytest.approx(8.0)
    assert uniform_expected_activated(8, 2, 4) == pytest.approx(5.46875, abs=1e-12)
    assert router.activated_per_layer(4)[0] == pytest.approx(8 * (1 - 27405 / 91390))


# ---- spec strings -----------------------------------------------------------------------------------------


def test_parse_router_spec_forms():
    assert parse_router_spec("zipf:1.2").arg == "1.2"
    p = parse_router_spec(" Zipf:1.2,reuse=0.3 , seed=7")
    assert (p.kind, p.arg, p.options) == ("zipf", "1.2", {"reuse": "0.3", "seed": "7"})
    p = parse_router_spec("uniform,reuse=0.2")
    assert (p.kind, p.arg, p.options) == ("uniform", None, {"reuse": "0.2"})
    assert parse_router_spec("group-limited").kind == "group"
    # a trace path may contain commas
    assert parse_router_spec("trace:/tmp/a,b.npz").arg == "/tmp/a,b.npz"


def test_seed_option_and_argument_give_reproducible_profiles():
    model = tiny_moe_model(3, 16, 2)
    a = make_router("zipf:1.2", model, seed=3)
    b = make_router("zipf:1.2,seed=3", model, seed=99)
    c = make_router("zipf:1.2", model, seed=4)
    np.testing.assert_array_equal(a.inclusion, b.inclusion)
    assert not np.array_equal(a.inclusion, c.inclusion)
    np.testing.assert_array_equal(a.sample(50), b.sample(50))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("zipf", "router 'zipf' needs an exponent; e.g. zipf:1.2"),
        ("zipf:abc", "router spec 'zipf:abc': the exponent S must be a number, got 'abc'"),
        ("zipf:-1", "zipf exponent must be >= 0, got -1.0; e.g. zipf:1.2"),
        (
            "zipf:1.2,foo=1",
            "router spec 'zipf:1.2,foo=1': unknown option 'foo'; options for zipf: affinity, reuse, seed",
        ),
        (
            "zipf:1.2,reuse",
            "router spec 'zipf:1.2,reuse': 'reuse' is not key=value; write e.g. zipf:1.2,reuse=0.3",
        ),
        ("zipf:1,reuse=1.5", "reuse must be a probability in [0, 1], got 1.5; e.g. reuse=0.3"),
        ("dirichlet:0", "dirichlet concentration must be > 0, got 0.0; e.g. dirichlet:0.5"),
        ("hot:2", "router spec 'hot:2' needs a value for share; e.g. hot:2,share=0.5"),
        (
            "hot:1,share=0.9",
            "hot:1,share=0.9 asks a hot expert to serve 1.8 of the tokens (max 1); use share <= 0.5 or more hot experts",
        ),
        ("uniform:3", "router 'uniform' takes no positional parameter, got '3'; write uniform"),
        ("", "empty router spec; use e.g. uniform, zipf:1.2 or trace:PATH"),
        (
            "group",
            "group-limited routing needs n_group >= 2 dividing E=8, got n_group=1; pass group:n_group=8,topk_group=4 or use a model with n_group in its config",
        ),
    ],
)
def test_bad_specs_give_one_clear_line(spec, message):
    with pytest.raises(ScenarioError) as info:
        make_router(spec, tiny_moe_model(2, 8, 2))
    assert str(info.value) == message


def test_unknown_router_suggests_close_matches():
    with pytest.raises(UnknownRouterError) as info:
        make_router("zipff:1.2", tiny_moe_model())
    assert str(info.value) == "unknown router 'zipff'; did you mean 'zipf'?"
    assert isinstance(info.value, KeyError)
    with pytest.raises(UnknownRouterError) as info:
        make_router("qqq", tiny_moe_model())
    assert str(info.value) == f"unknown router 'qqq'; valid ids: {', '.join(sorted(ROUTER_KINDS))}"


def test_missing_trace_suggests_shipped_names(tmp_path):
    with pytest.raises(TraceError) as info:
        make_router(f"trace:{tmp_path / 'nope.npz'}", tiny_moe_model())
    assert str(info.value).startswith(
        f"{tmp_path / 'nope.npz'}: no such trace file; give a path or a shipped trace name"
    )


def test_dense_model_has_no_routing():
    dense = tiny_moe_model()
    dense = type(dense)(**{**dense.__dict__, "moe": None, "ffn_kinds": ()})
    with pytest.raises(ScenarioError, match="has no MoE layers; routing does not apply"):
        make_router("uniform", dense)


def test_negative_tokens_and_sequences_are_rejected():
    router = make_router("uniform", tiny_moe_model())
    with pytest.raises(ScenarioError, match=r"tokens per step must be finite and >= 0, got -1.0"):
        router.activated_per_layer([-1.0, 2.0])
    with pytest.raises(ScenarioError, match=r"sequences per step must be >= 1, got 0.0"):
        router.activated_per_layer(4, sequences=0)


def test_routers_satisfy_the_engine_protocol():
    model = tiny_moe_model(2, 8, 2)
    for spec in ("uniform", "zipf:1.2", "dirichlet:0.5", "hot:2,share=0.5", "temporal:0.3", "affinity:0.4"):
        router = make_router(spec, model)
        assert isinstance(router, Router)
        assert router.describe()
        assert router.to_dict()["spec" if spec != "uniform" else "name"]
        assert router.activated_per_layer(np.array([1.0, 4.0])).shape == (2, 2)


# ---- invariants (property-based) --------------------------------------------------------------------------

_SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def _router_and_model(draw):
    layers, num_experts, top_k = draw(moe_shapes(max_experts=48))
    spec = draw(router_specs(num_experts, top_k))
    seed = draw(st.integers(0, 1000))
    return make_router(spec, tiny_moe_model(layers, num_experts, top_k), seed=seed), spec


@_SETTINGS
@given(_router_and_model(), st.lists(step_tokens(), min_size=1, max_size=6), st.sampled_from([None, 1, 3]))
@example((make_router("uniform", tiny_moe_model(1, 1, 1)), "uniform"), [1.0, 0.0], None)
def test_activation_bounds_and_monotonicity(router_spec, tokens, sequences):
    """For T >= 1: min(k, E) <= A(T) <= E; A(0) = 0; A(1) = k; A non-decreasing in T (fixed sequences)."""
    router, _ = router_spec
    e, k = router.num_experts, router.top_k
    t = np.sort(np.asarray(tokens))
    a = router.activated_per_layer(t, sequences=sequences)
    assert a.shape == (router.num_moe_layers, t.size)
    tol = 1e-9 * e
    big = t >= 1
    assert np.all(a[:, big] >= min(k, e) - tol)
    assert np.all(a <= e + tol)
    assert np.all(a[:, t == 0] == 0)
    assert np.all(np.diff(a, axis=1) >= -tol)
    np.testing.assert_allclose(router.activated_per_layer(1.0, sequences=sequences), k, rtol=1e-9)


@_SETTINGS
@given(_router_and_model(), st.lists(step_tokens(), min_size=1, max_size=6), st.sampled_from([None, 1, 4]))
def test_uniform_is_the_upper_bound(router_spec, tokens, sequences):
    """A_router(T) <= E·(1 − (1 − k/E)^T) for every synthetic router here.

    Theorem relied on: for independent tokens A = Σ_i f(π_i) with f(x) = 1 − (1 − x)^T concave on [0, 1]
    for T >= 1, so A is Schur-concave in π; π_uniform = (k/E, …) is majorised by every π with Σπ = k,
    hence A(π) <= A(π_uniform) (Karamata). Runs with reuse only replace (1 − π)^m by the larger
    (1 − π)(1 − νπ)^(m−1) (ν <= 1), which lowers A further. Not claimed for arbitrary traces in window mode
    (see test_uniform_bound_needs_independence). For 0 < T < 1, f is convex, so only T >= 1 is tested.
    """
    router, _ = router_spec
    t = np.asarray(tokens)
    assume(np.all((t == 0) | (t >= 1)))
    a = router.activated_per_layer(t, sequences=sequences)
    bound = uniform_expected_activated(router.num_experts, router.top_k, t)
    assert np.all(a <= bound[None, :] + 1e-9 * router.num_experts)


@settings(deadline=None)
@given(moe_shapes(max_experts=32), st.integers(0, 10_000))
def test_sampled_traces_are_valid(shape, seed):
    """Every synthetic sample has k distinct in-range ids per token, so it passes the trace validator."""
    layers, num_experts, top_k = shape
    model = tiny_moe_model(layers, num_experts, top_k)
    for spec in ("zipf:1.5,reuse=0.5,affinity=0.5", "dirichlet:0.2,affinity=0.7"):
        ids = make_router(spec, model, seed=seed).sample(64)
        trace = Trace.from_arrays(ids, model_id=model.id, num_experts=num_experts, top_k=top_k)
        trace.validate_against(model)
