"""KTransformers' CPU-side profile (capsim/engine/engines.toml [ktransformers], docs/validation.md §5.11): its own
CPU kernel bandwidth fraction and the share a second socket adds under --numa replicate, by hand, and that the
shipped values are the fit they cite (benchmarks/fit_ktransformers_cpu.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capsim.engine.deployment import Deployment, cpu_rates
from capsim.engine.engines import load_engines
from capsim.engine.predict import predict
from capsim.hardware.db import load_hardware_db
from capsim.validation.published import load_published, scenario_for

ROOT = Path(__file__).resolve().parent.parent


def _case(case_id: str):  # type: ignore[no-untyped-def]
    case = {c.id: c for c in load_published()}[case_id]
    return scenario_for(case, load_hardware_db())


def test_two_sockets_by_hand() -> None:
    """KTransformers V0.2 on 2 x Xeon 6454S, 8 DDR5-4800 channels per socket (8 x 38.4 = 307.2 GB/s), 32 cores
    of 4.5056 FP32 TFLOP/s per socket (GGUF: the FP32 vector rate). With --numa replicate and a second socket
    adding 0.48 of one: 307.2 x (1 + 0.48) = 454.656 GB/s and 4.5056 x 1.48 = 6.6683 TFLOP/s (perfect scaling
    would be 614.4 and 9.0112). The experts then stream at 454.656 x 0.775 (cpu class) x 0.55 (KTransformers'
    kernel fraction) = 193.80 GB/s."""
    scenario, db = _case("ktransformers-v02-dsv3-q4km-2x6454s-4090d-decode")
    assert scenario.engine == "ktransformers" and scenario.numa == "replicate"
    p = predict(scenario, hardware_db=db)
    dep = p.deployment
    assert dep["cpu_bandwidth_gb_s"] == pytest.approx(454.656, rel=1e-9)
    assert dep["cpu_peak_tflops"] == pytest.approx(4.5056 * 1.48, rel=1e-9)
    assert dep["cpu_efficiency"]["kernel_bw_fraction"] == 0.55
    assert dep["cpu_efficiency"]["replicate_socket_share"] == 0.48
    assert pytest.approx(193.80, abs=0.01) == 454.656 * 0.775 * 0.55


def test_one_socket_is_unchanged_by_the_share() -> None:
    """One socket (numactl -N 1): 307.2 GB/s and 4.5056 TFLOP/s whatever the share."""
    scenario, db = _case("ktransformers-v02-dsv3-q4km-1x6454s-4090d-decode")
    dep = predict(scenario, hardware_db=db).deployment
    assert dep["cpu_bandwidth_gb_s"] == pytest.approx(307.2, rel=1e-9)
    assert dep["cpu_peak_tflops"] == pytest.approx(4.5056, rel=1e-9)


@settings(max_examples=40, deadline=None)
@given(share=st.floats(0.0, 1.0), sockets=st.integers(1, 4))
def test_socket_share_scales_between_one_socket_and_all(share: float, sockets: int) -> None:
    """S sockets give 1 + (S − 1)·share sockets' rate: one socket's at share 0, all S at share 1, monotone."""
    db = load_hardware_db()
    node = db.get("epyc-9654-2s")
    dep = Deployment(mode="cpu", numa="replicate")
    bw1, peaks1, used, _ = cpu_rates(node, dep, ggml=True, socket_share=1.0)
    bw, peaks, _, _ = cpu_rates(node, dep, ggml=True, socket_share=share)
    expected = (1 + (used - 1) * share) / used
    assert bw == pytest.approx(bw1 * expected, rel=1e-12)
    assert peaks["fp32"] == pytest.approx(peaks1["fp32"] * expected, rel=1e-12)
    assert bw <= bw1 * (1 + 1e-12)


def _fit_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "fit_ktransformers_cpu", ROOT / "benchmarks/fit_ktransformers_cpu.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_shipped_values_are_a_minimum_of_the_fit() -> None:
    """The shipped (kernel fraction, socket share) beats its grid neighbours (±0.01, ±0.02) on Σ ln(predicted /
    measured)² over the 6 KTransformers cases (the full grid: benchmarks/fit_ktransformers_cpu.py)."""
    fit = _fit_module()
    shipped = load_engines()["ktransformers"]
    assert shipped.cpu_kernel_bw_fraction is not None and shipped.replicate_socket_share is not None
    fit.KERNEL_GRID = shipped.cpu_kernel_bw_fraction + np.array([-0.01, 0.0, 0.01])
    fit.SHARE_GRID = shipped.replicate_socket_share + np.array([-0.02, 0.0, 0.02])
    cases = fit.fit_cases()
    assert len(cases) == 6
    assert fit.best(fit.log_ratios(cases)) == (1, 1)
