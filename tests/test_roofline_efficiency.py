"""The calibrated ``gemm_tokens_efficiency`` curve: interpolation, where the roofline applies it, loading and
validation of the table, and that devices without a curve are untouched."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from capsim import DataFileError, DoesNotFitError, predict
from capsim.engine.passes import decode_times, prefill_times
from capsim.engine.resolve import resolve
from capsim.engine.roofline import DeviceRates
from capsim.engine.scenario import Scenario
from capsim.hardware.db import load_hardware_db

BASE = DeviceRates(
    peak_flops={"bf16": 1e12},
    memory_bandwidth=1e9,
    compute_fraction=1.0,
    memory_fraction=1.0,
    step_overhead_s=0.0,
    per_layer_overhead_s=0.0,
    link_bandwidth=0.0,
    allreduce_hop_latency_s=0.0,
)
GPU_MODELS = ["mixtral-8x7b", "qwen3-30b-a3b", "deepseek-v2-lite", "olmoe-1b-7b", "gpt-oss-20b"]
GPUS = ["h100-sxm", "a100-sxm-80gb", "mi300x", "l40s"]
WEIGHT_OPS = ("attn_proj", "router", "routed_experts", "shared_experts", "dense_ffn", "lm_head")


def test_interpolation_is_linear_in_log_tokens_and_clamped() -> None:
    rates = replace(BASE, gemm_m_curve=((1.0, 4.0, 64.0), (1.0, 0.5, 0.2)))
    # M = 2 is halfway from 1 to 4 in log: 1 + (0.5 - 1) x 1/2 = 0.75
    assert rates.gemm_factor(np.array([2.0]))[0] == pytest.approx(0.75)
    # M = 16 is halfway from 4 to 64 in log (ln 4 / ln 16 = 1/2): 0.5 + (0.2 - 0.5) x 1/2 = 0.35
    assert rates.gemm_factor(np.array([16.0]))[0] == pytest.approx(0.35)
    # M = 8: ln(8/4) / ln(64/4) = 1/4 of the way: 0.5 - 0.3 / 4 = 0.425
    assert rates.gemm_factor(8.0) == pytest.approx(0.425)
    assert rates.gemm_factor(np.array([0.25, 1.0, 64.0, 1000.0])).tolist() == [1.0, 1.0, 0.2, 0.2]  # clamped
    assert BASE.gemm_factor(np.array([3.0])) == 1.0


def _resolved(db, sc: Scenario, curve):  # type: ignore[no-untyped-def]
    """``sc`` resolved with the curve ``curve`` under the plain roofline max(t_c, t_m) (the fitted soft
    roofline of datacenter GPUs and its kernel-latency floor are switched off so the curve's effect is exact and
    alone)."""
    rs, _ = resolve(sc, db)
    return replace(rs, rates=replace(rs.rates, gemm_m_curve=curve, gemm_overlap=None, kernel_latency_s=0.0))


def test_bandwidth_of_weight_gemms_is_scaled_by_g_of_m(default_hardware_db) -> None:
    """H100, batch 4 decode: every weight GEMM is memory-bound, so each op's time is its plain time / g(M)."""
    sc = Scenario(
        model="mixtral-8x7b",
        hardware="h100-sxm",
        gpus=1,
        batch=4,
        prompt_len=100,
        gen_len=3,
        weight_dtype="fp8",
    )
    curve = ((1.0, 4.0), (1.0, 0.5))
    plain = decode_times(_resolved(default_hardware_db, sc, None), 4)
    curved = decode_times(_resolved(default_hardware_db, sc, curve), 4)
    assert np.all(plain.time_by_resource["compute"] == 0.0)  # memory-bound everywhere: the ratios are exact
    # attention projections and lm_head: M = 4 tokens -> g = 0.5 -> twice the time
    for op in ("attn_proj", "lm_head"):
        assert curved.time_by_op[op] == pytest.approx(2.0 * plain.time_by_op[op], rel=1e-12)
    # router: M = 4 as well
    assert curved.time_by_op["router"] == pytest.approx(2.0 * plain.time_by_op["router"], rel=1e-12)
    # routed experts: each layer at M = T·k/A = 4·2/A with its own A, g = 1 - 0.5·ln(M)/ln 4; all 32 layers of
    # Mixtral have the same expected A under the default router, so the op's ratio is 1/g of that one M
    a = plain.activated_by_layer()[:, 0]
    assert np.allclose(a, a[0])
    g = 1.0 - 0.5 * math.log(8.0 / a[0]) / math.log(4.0)
    assert curved.time_by_op["routed_experts"] == pytest.approx(
        plain.time_by_op["routed_experts"] / g, rel=1e-9
    )
    # attention core (KV reads) and overheads are not weight GEMMs: untouched
    for op in ("attn_core", "overhead"):
        assert np.array_equal(curved.time_by_op[op], plain.time_by_op[op])


def test_compute_bound_prefill_keeps_its_compute_time(default_hardware_db) -> None:
    """A 4096-token prefill chunk on an H100 is compute-bound: slowing bandwidth by 2x (g = 0.5 at every M)
    leaves the attention projections at their compute time (2·4096·N / F ≫ 2 x N·b / B)."""
    sc = Scenario(model="mixtral-8x7b", hardware="h100-sxm", gpus=2, batch=1, prompt_len=4096, gen_len=2)
    plain = prefill_times(_resolved(default_hardware_db, sc, None), 1)
    curved = prefill_times(_resolved(default_hardware_db, sc, ((1.0,), (0.5,))), 1)
    assert np.array_equal(curved.time_by_op["attn_proj"], plain.time_by_op["attn_proj"])


def _entry(tmp_path: Path, curve: str) -> Path:
    text = f"""schema = 1
id = "test-cpu"
kind = "accelerator"
name = "test CPU (labelled test entry)"
vendor = "test"
device_class = "cpu"
source = "test fixture, not a real device"
memory_capacity_gb = 64
memory_bandwidth_gb_s = 20
unified_memory = true
[peak_tflops_dense]
fp32 = 0.1
bf16 = 0.1
[efficiency]
memory_bw_fraction = 1.0
compute_fraction = 1.0
step_overhead_s = 1e-6
per_layer_overhead_s = 1e-6
{curve}
"""
    path = tmp_path / "test-cpu.toml"
    path.write_text(text)
    return path


def test_curve_loads_and_slows_multi_token_gemms_only(tmp_path) -> None:
    plain = load_hardware_db([_entry(tmp_path, "")])
    table = '[efficiency.gemm_tokens_efficiency]\n1 = 1.0\n2 = { value = 0.45, source = "test fixture" }\n64 = 0.1\n'
    curved = load_hardware_db([_entry(tmp_path, table)])
    eff = curved.efficiency_for(curved.accelerator("test-cpu"))
    assert eff.gemm_m_curve == ((1.0, 2.0, 64.0), (1.0, 0.45, 0.1))
    assert eff.provenance["gemm_tokens_efficiency.2"].source == "test fixture"
    assert eff.to_dict()["gemm_tokens_efficiency"] == {"1": 1.0, "2": 0.45, "64": 0.1}
    assert plain.efficiency_for(plain.accelerator("test-cpu")).gemm_m_curve is None
    sc = Scenario(model="olmoe-1b-7b", hardware="test-cpu", gpus=1, batch=8, prompt_len=64, gen_len=4)
    assert predict(sc, hardware_db=curved).tpot_s > predict(sc, hardware_db=plain).tpot_s
    # batch 1: g(1) = 1 for every GEMM (an expert gets at most one token) -> the same step time
    one = replace(sc, batch=1)
    assert predict(one, hardware_db=curved).tpot_s == pytest.approx(
        predict(one, hardware_db=plain).tpot_s, rel=1e-12
    )


def test_a_device_curve_replaces_the_class_curve(tmp_path) -> None:
    eff_file = tmp_path / "efficiency.toml"
    eff_file.write_text(
        'schema = 1\nkind = "efficiency"\nsource = "test fixture"\n[cpu]\nmemory_bw_fraction = 1.0\n'
        "compute_fraction = 1.0\nstep_overhead_s = 1e-6\nper_layer_overhead_s = 1e-6\nallreduce_latency_s = 1e-6\n"
        "allreduce_base_latency_s = 1e-6\ngpu_memory_utilization = 0.9\n"
        "[cpu.gemm_tokens_efficiency]\n1 = 1.0\n8 = 0.5\n16 = 0.3\n"
    )
    db = load_hardware_db(
        [eff_file, _entry(tmp_path, "[efficiency.gemm_tokens_efficiency]\n1 = 0.9\n4 = 0.6\n")],
        on_redefinition="replace",
    )
    assert db.efficiency("cpu").gemm_m_curve == ((1.0, 8.0, 16.0), (1.0, 0.5, 0.3))
    assert db.efficiency_for(db.accelerator("test-cpu")).gemm_m_curve == ((1.0, 4.0), (0.9, 0.6))


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("4 = 0", "'efficiency.gemm_tokens_efficiency.4' must be > 0"),
        ("4 = 1.5", "'efficiency.gemm_tokens_efficiency.4' is a fraction and must be <= 1"),
        ('4 = "x"', "'efficiency.gemm_tokens_efficiency.4' must be a number"),
        ("0 = 0.5", "'efficiency.gemm_tokens_efficiency.0': token counts start at 1"),
        ("4 = 0.5\n2 = 0.6", "'efficiency.gemm_tokens_efficiency.2': token counts must be ascending"),
        ("x = 0.5", "unknown field 'efficiency.gemm_tokens_efficiency.x'"),
    ],
)
def test_bad_curve_values_name_the_field(tmp_path, table: str, message: str) -> None:
    with pytest.raises(DataFileError, match=message.replace(".", r"\.").replace("(", r"\(")) as err:
        load_hardware_db([_entry(tmp_path, f"[efficiency.gemm_tokens_efficiency]\n{table}\n")])
    assert "\n" not in str(err.value)


@st.composite
def gpu_scenarios(draw: st.DrawFn) -> Scenario:
    return Scenario(
        model=draw(st.sampled_from(GPU_MODELS)),
        hardware=draw(st.sampled_from(GPUS)),
        gpus=draw(st.sampled_from([1, 2, 8])),
        batch=draw(st.one_of(st.just(1), st.integers(1, 256))),
        prompt_len=draw(st.integers(1, 2048)),
        gen_len=draw(st.integers(2, 8)),
        weight_dtype=draw(st.sampled_from([None, "fp8", "int4"])),
    )


def _resolve_or_skip(db, sc: Scenario):  # type: ignore[no-untyped-def]
    try:
        return resolve(sc, db)[0]
    except DoesNotFitError:
        assume(False)
        raise AssertionError("unreachable")


_settings = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_settings
@given(sc=gpu_scenarios())
def test_no_curve_on_gpus_and_a_flat_one_changes_nothing(default_hardware_db, sc: Scenario) -> None:
    """Datacenter GPUs carry the fitted flat curve (0.858 at every M, docs/validation.md §5.2), other shipped
    classes none; g = 1 (a one-point table at 1.0) gives bit-identical times to no curve."""
    rs = _resolve_or_skip(default_hardware_db, sc)
    fitted = ((1.0,), (0.858,))
    assert rs.rates.gemm_m_curve == (fitted if rs.efficiency.device_class == "datacenter-gpu" else None)
    rs = replace(rs, rates=replace(rs.rates, gemm_m_curve=None))
    flat = replace(rs, rates=replace(rs.rates, gemm_m_curve=((1.0,), (1.0,))))
    for cost in (decode_times, prefill_times):
        a, b = cost(rs, sc.batch), cost(flat, sc.batch)
        assert np.array_equal(a.time, b.time)
        assert all(np.array_equal(a.time_by_op[op], b.time_by_op[op]) for op in a.time_by_op)


@_settings
@given(
    sc=gpu_scenarios(),
    fractions=st.lists(st.floats(0.01, 1.0), min_size=1, max_size=5),
)
def test_a_curve_never_speeds_anything_up(default_hardware_db, sc: Scenario, fractions: list[float]) -> None:
    """g <= 1 only lowers bandwidth: every op's time is >= its plain time, and ops that are no weight GEMM
    (attention core, all-reduces, overheads) are unchanged."""
    rs = _resolve_or_skip(default_hardware_db, sc)
    rs = replace(
        rs, rates=replace(rs.rates, gemm_m_curve=None)
    )  # the plain rate (no class curve) as baseline
    curve = (tuple(float(4**i) for i in range(len(fractions))), tuple(fractions))
    curved = replace(rs, rates=replace(rs.rates, gemm_m_curve=curve))
    for cost in (decode_times, prefill_times):
        a, b = cost(rs, sc.batch), cost(curved, sc.batch)
        for op, t in a.time_by_op.items():
            if op in WEIGHT_OPS:
                assert np.all(b.time_by_op[op] >= t * (1 - 1e-12))
            else:
                assert np.array_equal(b.time_by_op[op], t)
