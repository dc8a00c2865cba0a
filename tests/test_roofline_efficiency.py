"""The calibrated GEMM-rows efficiency curve: interpolation, loading, and that it changes only what it should."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from capsim import DataFileError, predict
from capsim.engine import decode_cost, resolve
from capsim.hardware import load_hardware_db
from capsim.roofline import DeviceRates
from capsim.scenario import Scenario

BASE = DeviceRates(peak_flops={"bf16": 1e12}, memory_bandwidth=1e9, compute_fraction=1.0, memory_fraction=1.0,
                   step_overhead_s=0.0, per_layer_overhead_s=0.0, link_bandwidth=0.0, allreduce_hop_latency_s=0.0)


def test_interpolation_is_linear_in_log_rows_and_clamped() -> None:
    rates = replace(BASE, gemm_m_curve=((1.0, 4.0, 64.0), (0.1, 0.3, 0.9)))
    # M = 2 is halfway between 1 and 4 in log2: 0.1 + (0.3 - 0.1) x 1/2 = 0.2
    assert rates.gemm_factor(np.array([2.0]))[0] == pytest.approx(0.2)
    # M = 16 is halfway between 4 and 64 in log: 0.3 + 0.6 x 1/2 = 0.6
    assert rates.gemm_factor(np.array([16.0]))[0] == pytest.approx(0.6)
    assert rates.gemm_factor(np.array([0.5, 1000.0])).tolist() == [0.1, 0.9]  # clamped at both ends
    assert BASE.gemm_factor(np.array([3.0])) == 1.0


def _entry(tmp_path: Path, curve: str) -> Path:
    text = f'''schema = 1
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
'''
    path = tmp_path / "test-cpu.toml"
    path.write_text(text)
    return path


def test_curve_loads_and_slows_small_gemms(tmp_path) -> None:
    plain = load_hardware_db([_entry(tmp_path, "")])
    curved = load_hardware_db([_entry(tmp_path, "[efficiency.gemm_m_efficiency]\n1 = 0.1\n2 = 0.1\n64 = 0.8\n")])
    assert curved.efficiency_for(curved.accelerator("test-cpu")).gemm_m_curve == ((1.0, 2.0, 64.0), (0.1, 0.1, 0.8))
    sc = Scenario(model="olmoe-1b-7b", hardware="test-cpu", gpus=1, batch=8, prompt_len=64, gen_len=4)
    slow = predict(sc, hardware_db=curved)
    fast = predict(sc, hardware_db=plain)
    assert slow.tpot_s > fast.tpot_s
    # batch 1: every GEMM reads its weights once per token and stays memory-bound -> no change
    one = replace(sc, batch=1)
    assert predict(one, hardware_db=curved).tpot_s == pytest.approx(predict(one, hardware_db=plain).tpot_s, rel=1e-12)


@pytest.mark.parametrize("value", ["0", "1.5", '"x"'])
def test_bad_curve_values_name_the_field(tmp_path, value) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DataFileError, match="gemm_m_efficiency"):
        load_hardware_db([_entry(tmp_path, f"[efficiency.gemm_m_efficiency]\n4 = {value}\n")])


def test_gpu_entries_have_no_curve_so_nothing_changes(default_hardware_db) -> None:
    """Shipped device classes carry no curve: the factor is exactly 1 and step times are untouched."""
    sc = Scenario(model="mixtral-8x7b", hardware="h100-sxm", gpus=2, batch=16, prompt_len=100, gen_len=3)
    rs, _ = resolve(sc, default_hardware_db)
    assert rs.rates.gemm_m_curve is None
    with_curve = replace(rs, rates=replace(rs.rates, gemm_m_curve=((1.0,), (1.0,))))
    assert np.allclose(decode_cost(rs, 16).time, decode_cost(with_curve, 16).time, rtol=0, atol=0)
    assert math.isfinite(float(decode_cost(rs, 16).time[0]))
