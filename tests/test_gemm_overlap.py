"""The weight GEMMs' soft roofline t = (t_c^p + t_m^p)^(1/p) (``gemm_overlap_exponent``): hand-computed points,
its invariants, where the roofline applies it, loading, and that the shipped values are the fit of the
published and measured kernel data they cite (benchmarks/fit_gemm_overlap.py)."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from capsim import DataFileError, Scenario, load_hardware_db
from capsim.engine.passes import decode_times
from capsim.engine.resolve import resolve
from capsim.engine.roofline import DeviceRates

ROOT = Path(__file__).resolve().parent.parent
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


def test_hand_computed_points() -> None:
    tc, tm = np.array([3.0]), np.array([4.0])
    assert BASE.gemm_time(tc, tm)[0] == 4.0  # no exponent: the plain roofline max
    assert replace(BASE, gemm_overlap=2.0).gemm_time(tc, tm)[0] == pytest.approx(5.0)  # sqrt(9 + 16)
    assert replace(BASE, gemm_overlap=1.0).gemm_time(tc, tm)[0] == pytest.approx(7.0)  # the sum
    # p = 1.51 at the ridge (t_c = t_m = 1): 2^(1/1.51) = 1.5825
    assert replace(BASE, gemm_overlap=1.51).gemm_time(np.ones(1), np.ones(1))[0] == pytest.approx(
        2 ** (1 / 1.51)
    )
    # zero work costs nothing (no 0/0)
    assert replace(BASE, gemm_overlap=1.51).gemm_time(np.zeros(1), np.zeros(1))[0] == 0.0


times = st.floats(0.0, 1e3, allow_nan=False, allow_infinity=False)


@given(tc=times, tm=times, p=st.floats(1.0, 64.0), dp=st.floats(0.0, 10.0), bump=st.floats(0.0, 10.0))
@example(tc=0.0, tm=1.0, p=1.0, dp=0.0, bump=0.0)
@example(tc=1e3, tm=1e-300, p=64.0, dp=10.0, bump=1.0)
def test_between_max_and_sum_and_monotone(tc: float, tm: float, p: float, dp: float, bump: float) -> None:
    """max(t_c, t_m) <= t <= t_c + t_m; t never grows with p (more overlap) and never falls as either time grows."""
    rates = replace(BASE, gemm_overlap=p)
    t = rates.gemm_time(np.array([tc]), np.array([tm]))[0]
    assert max(tc, tm) * (1 - 1e-12) <= t <= (tc + tm) * (1 + 1e-12)
    more_overlap = replace(BASE, gemm_overlap=p + dp).gemm_time(np.array([tc]), np.array([tm]))[0]
    assert more_overlap <= t * (1 + 1e-12)
    assert rates.gemm_time(np.array([tc + bump]), np.array([tm]))[0] >= t * (1 - 1e-12)
    assert rates.gemm_time(np.array([tc]), np.array([tm + bump]))[0] >= t * (1 - 1e-12)


def test_attention_core_keeps_the_plain_max(default_hardware_db) -> None:
    """Only weight GEMMs take the soft roofline; the attention core stays max(t_c, t_m)."""
    sc = Scenario(
        model="mixtral-8x7b",
        hardware="h100-sxm",
        gpus=1,
        batch=64,
        prompt_len=2000,
        gen_len=3,
        weight_dtype="fp8",
    )
    rs, _ = resolve(sc, default_hardware_db)
    assert rs.rates.gemm_overlap == pytest.approx(1.51)
    # without the kernel-latency floor, which binds on these small-batch weight GEMMs (tests/test_kernel_latency.py)
    rs = replace(rs, rates=replace(rs.rates, kernel_latency_s=0.0))
    soft = decode_times(rs, 64)
    hard = decode_times(replace(rs, rates=replace(rs.rates, gemm_overlap=None)), 64)
    assert np.array_equal(soft.time_by_op["attn_core"], hard.time_by_op["attn_core"])
    for op in ("attn_proj", "routed_experts", "lm_head"):
        assert np.all(soft.time_by_op[op] > hard.time_by_op[op])


def test_exponent_below_one_is_refused(tmp_path: Path) -> None:
    eff = tmp_path / "efficiency.toml"
    eff.write_text(
        'schema = 1\nkind = "efficiency"\nsource = "test fixture"\n[cpu]\nmemory_bw_fraction = 1.0\n'
        "compute_fraction = 1.0\nstep_overhead_s = 1e-6\nper_layer_overhead_s = 1e-6\nallreduce_latency_s = 1e-6\n"
        "allreduce_base_latency_s = 1e-6\ngpu_memory_utilization = 0.9\ngemm_overlap_exponent = 0.5\n"
    )
    with pytest.raises(DataFileError, match="'gemm_overlap_exponent' must be >= 1, got 0.5"):
        load_hardware_db([eff], on_redefinition="replace")


def test_shipped_values_are_the_fit_of_the_cited_data() -> None:
    """The datacenter-gpu values reproduce from validation/kernels/gemm_shapes.toml (DeepGEMM's H800 tables and
    the H200 calibration, 40 shapes) and beat the plain roofline there."""
    spec = importlib.util.spec_from_file_location(
        "fit_gemm_overlap", ROOT / "benchmarks" / "fit_gemm_overlap.py"
    )
    assert spec is not None and spec.loader is not None
    fit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fit)
    tc, tm, t, src = fit.load()
    assert len(t) == 40 and set(src) == {0, 1, 2}
    eta_m, p = fit.fit(tc, tm, t)
    eff = load_hardware_db().efficiency("datacenter-gpu")
    assert eff.gemm_overlap_exponent == pytest.approx(p, abs=0.01)
    assert eff.gemm_m_curve == ((1.0,), (pytest.approx(eta_m / eff.memory_bw_fraction, abs=0.001),))
    assert "DeepGEMM" in eff.provenance["gemm_overlap_exponent"].source
    soft = np.median(np.abs(fit.soft_roofline(tc, tm, eta_m, p) / t - 1))
    plain = np.median(np.abs(np.maximum(tc / 0.70, tm / 0.85) / t - 1))
    assert soft < 0.08 < plain
