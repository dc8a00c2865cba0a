"""Exact decode sums at grid scale (capsim.sweep.decode) against step-by-step evaluation.

The reference is what predict does: :func:`capsim.engine.passes.decode_passes` at every context P+1 … P+G−1,
summed. The sweep path evaluates a few knots per batch size and integrates the piecewise-affine step cost;
the two must agree to 1e-9 relative for every summed quantity, including the split of time between compute
and memory, whose kinks the knots must find.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capsim.engine.passes import decode_passes
from capsim.engine.roofline import BLOCK_KERNELS
from capsim.sweep import Grid, resolve_group
from capsim.sweep.decode import QUANTITIES, _distinct, decode_totals, finite_windows, step_quantities


def _resolved(db, model: str, hw: str, gpus: int, kv: str = "bf16"):  # type: ignore[no-untyped-def]
    grid = Grid(models=(model,), hardware=(hw,), gpus=(gpus,), kv_dtype=(kv,))
    group = resolve_group(grid, grid.group_keys[0], db)
    assert group.resolved is not None, group.error
    return group.resolved


def _stepwise(rs, batch: int, prompt: int, gen: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    steps = np.arange(1, gen, dtype=np.float64)
    cost = decode_passes(rs, float(batch), prompt + steps)
    return step_quantities(cost, steps.size).sum(axis=0)


def _assert_sums_equal(rs, batch, prompt, gen) -> None:  # type: ignore[no-untyped-def]
    totals, _ = decode_totals(rs, np.asarray(batch), np.asarray(prompt), np.asarray(gen))
    assert totals.shape == (len(QUANTITIES), len(batch))
    for i in range(len(batch)):
        if gen[i] < 2:
            assert (totals[:, i] == 0).all()
            continue
        expected = _stepwise(rs, int(batch[i]), int(prompt[i]), int(gen[i]))
        for q, got, want in zip(QUANTITIES, totals[:, i], expected):
            assert got == pytest.approx(want, rel=1e-9, abs=1e-300), (q, batch[i], prompt[i], gen[i])


def _attention_flips(rs, batch: float, lo: float, hi: float) -> bool:  # type: ignore[no-untyped-def]
    cost = decode_passes(rs, np.array([batch, batch]), np.array([lo, hi]))
    ((tc, tm),) = [(tc, tm) for name, tc, tm in cost.op_times if name == "attn_core"]
    return bool((tc[0] >= tm[0]) != (tc[1] >= tm[1]))


def test_sums_across_an_attention_flip(default_hardware_db) -> None:
    """DeepSeek-V3 (MLA, absorbed decode: 2·128·(576+512) = 278,528 FLOPs per scored pair against 576 KV
    elements read) on one B200: the attention core is memory-bound at short contexts and compute-bound at long
    ones, so the step cost has a kink inside these ranges; the knots must find it."""
    rs = _resolved(default_hardware_db, "deepseek-v3", "b200", 1)
    assert _attention_flips(rs, 8.0, 2.0, 200.0)  # the case is what it claims to be
    rng = np.random.default_rng(0)
    batch = rng.integers(1, 300, 60)
    prompt = rng.integers(1, 40, 60)
    gen = rng.integers(1, 200, 60)
    _assert_sums_equal(rs, batch, prompt, gen)


def test_sums_across_sliding_windows(default_hardware_db) -> None:
    """gpt-oss-20b: 12 of its 24 layers attend to at most 128 tokens, so min(c, 128) kinks at c = 128."""
    rs = _resolved(default_hardware_db, "gpt-oss-20b", "h200-sxm", 1)
    assert finite_windows(rs.model).tolist() == [128]
    batch = np.array([1, 1, 3, 3, 3, 64, 64, 5])
    prompt = np.array([1, 127, 126, 128, 129, 50, 200, 1])
    gen = np.array([300, 3, 2, 2, 40, 79, 1, 1])  # ranges ending before, at and after the window; no steps
    _assert_sums_equal(rs, batch, prompt, gen)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    case=st.sampled_from(
        [
            ("deepseek-v3", "gaudi3", 1, "fp8"),
            ("deepseek-v3", "mi300x", 1, "bf16"),
            ("gpt-oss-120b", "b200", 1, "fp8"),
            ("mixtral-8x7b", "h100-sxm", 2, "bf16"),
            ("deepseek-v2-lite", "l40s", 1, "fp8"),
        ]
    ),
    rows=st.lists(
        st.tuples(st.integers(1, 64), st.integers(1, 400), st.integers(1, 400)), min_size=1, max_size=12
    ),
)
def test_sums_equal_stepwise_property(default_hardware_db, case, rows) -> None:  # type: ignore[no-untyped-def]
    rs = _resolved(default_hardware_db, *case)
    batch, prompt, gen = (np.array(col) for col in zip(*rows))
    _assert_sums_equal(rs, batch, prompt, gen)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.integers(1, 256), prompt=st.integers(1, 4000), gen=st.integers(2, 2000))
def test_one_more_step_adds_that_step(default_hardware_db, batch: int, prompt: int, gen: int) -> None:
    """Σ over G+1 generated tokens − Σ over G = the cost of the step at context P+G (each sum exact)."""
    rs = _resolved(default_hardware_db, "qwen3-30b-a3b", "h100-sxm", 1)
    totals, _ = decode_totals(
        rs, np.array([batch, batch]), np.array([prompt, prompt]), np.array([gen, gen + 1])
    )
    step = step_quantities(decode_passes(rs, float(batch), np.array([float(prompt + gen)])), 1)[0]
    assert totals[0, 1] - totals[0, 0] == pytest.approx(step[0], rel=1e-9)


def test_roofline_op_times_are_what_it_charged(default_hardware_db) -> None:
    """Each op's time is max(t_compute, t_memory) of its entry in op_times (weight GEMMs: the device's soft
    roofline of the two, DeviceRates.gemm_time, floored at their kernels' latency), and compute + memory time is the sum over ops of the bound
    side: the data the knots are found from is the roofline's own decision."""
    rs = _resolved(default_hardware_db, "deepseek-v3", "b200", 1)
    cost = decode_passes(rs, np.array([1.0, 8.0, 64.0]), np.array([2.0, 100.0, 5000.0]))
    names = [name for name, _, _ in cost.op_times]
    assert len(names) == len(set(names)) == len(set(cost.time_by_op) - {"allreduce", "overhead"})
    compute = np.zeros(3)
    memory = np.zeros(3)
    model = rs.model
    layers = {
        "attn_proj": model.num_layers,
        "router": model.num_moe_layers,
        "routed_experts": model.num_moe_layers,
        "shared_experts": model.num_moe_layers,
        "dense_ffn": model.num_dense_layers,
        "lm_head": 1,
    }
    for name, tc, tm in cost.op_times:
        # the attention core keeps the plain max, so a step stays piecewise affine in the context; weight GEMM
        # ops take at least their block's kernel latencies (constant in the context)
        if name == "attn_core":
            t = np.maximum(tc, tm)
        else:
            floor = layers[name] * BLOCK_KERNELS[name][model.attention.kind] * rs.rates.kernel_latency_s
            t = np.maximum(rs.rates.gemm_time(tc, tm), floor)
        np.testing.assert_array_equal(cost.time_by_op[name], t)
        compute += np.where(tc >= tm, t, 0.0)
        memory += np.where(tc >= tm, 0.0, t)
    np.testing.assert_allclose(cost.time_by_resource["compute"], compute, rtol=1e-15)
    np.testing.assert_allclose(cost.time_by_resource["memory"], memory, rtol=1e-15)


@pytest.mark.parametrize("values", [[5, 1, 5, 3], [0], [7, 7, 7], [10**9, 3, 10**9]])
def test_distinct_matches_unique(values: list[int]) -> None:
    arr = np.array(values, dtype=np.int64)
    distinct, index = _distinct(arr)
    expected, inverse = np.unique(arr, return_inverse=True)
    assert distinct.tolist() == expected.tolist()
    assert index.tolist() == inverse.reshape(-1).tolist()
