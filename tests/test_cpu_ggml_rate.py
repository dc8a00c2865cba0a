"""GGUF weights on CPUs compute at the FP32 vector rate (issue 13 item 4): ggml's CPU kernels (llama.cpp,
KTransformers v0.2) use AVX-512/AVX2, not AMX tiles. Source and fit: capsim.engine.deployment.GGML_CPU_COMPUTE,
docs/deployment.md (CPU prefill)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capsim.engine.deployment import Deployment, cpu_rates, runs_in_ggml_cpu_kernels
from capsim.validation.published import load_published, predict_case, scenario_for


def test_which_dtypes_run_in_ggml_kernels() -> None:
    for name in ("q4_k_m", "Q8_0", "q4_0", "q6_k", "iq4_xs", "mxfp4"):
        assert runs_in_ggml_cpu_kernels(name), name
    for name in ("bf16", "int8", "int4", "fp8", None):
        assert not runs_in_ggml_cpu_kernels(name), name


def test_ggml_cpu_peak_is_the_fp32_vector_rate(default_hardware_db) -> None:
    """Xeon Gold 6454S: 32 cores x 2.2 GHz x 64 FP32 FLOP/cycle (AVX-512) = 4.5056 TFLOPS per socket; its
    AMX peaks (bf16 72.09, int8 144.18 TOPS) are not offered to GGUF weights."""
    case = next(c for c in load_published() if c.id == "ktransformers-v02-dsv3-q4km-1x6454s-4090d-prefill")
    scenario, db = scenario_for(case, default_hardware_db)
    system = db.node(scenario.hardware, scenario.gpus)
    _, peaks, used, how = cpu_rates(system, Deployment(mode="cpu-experts", numa="single"), ggml=True)
    assert used == 1 and set(peaks) == {"fp32"}
    assert peaks["fp32"] == pytest.approx(32 * 2.2e9 * 64)
    assert "FP32 vector rate" in how
    _, amx, _, _ = cpu_rates(system, Deployment(mode="cpu-experts", numa="single"))
    assert amx["int8"] == pytest.approx(144.1792e12) and amx["bf16"] == pytest.approx(72.0896e12)


@pytest.mark.parametrize(
    ("case_id", "ratio"),
    [
        # predicted / measured prefill tok/s at compute_fraction 0.5 of the FP32 peak (docs/deployment.md)
        ("ktransformers-v02-dsv3-q4km-1x6454s-4090d-prefill", 1.01),
        # two sockets at KTransformers' socket share 0.48 (engines.toml): 1.48 sockets' peak, not 2
        ("ktransformers-v02-dsv3-q4km-2x6454s-4090d-prefill", 0.97),
        ("reddit-llamacpp-gptoss120b-mxfp4-epyc9b14-cpu-pp512", 0.89),
    ],
)
def test_cpu_prefill_cases_at_the_fitted_rate(case_id: str, ratio: float) -> None:
    """The three CPU prefill measurements the rate was fitted on: measured shares of the FP32 peak 0.49, 0.38
    (of two sockets' peak; 0.51 of the 1.48 sockets KTransformers' socket share gives), 0.62, so at 0.5 each
    predicts about 0.5 / share of the measured speed (the two-socket row also has the GPU's fixed part)."""
    case = next(c for c in load_published() if c.id == case_id)
    result = predict_case(case)
    assert result.status == "ok"
    assert result.speed_ratio == pytest.approx(ratio, abs=0.01)


def test_sglang_int8_keeps_amx() -> None:
    """W8A8 int8 (not a GGUF type) on a Xeon 6980P stays on the AMX-INT8 rate: SGLang's CPU kernels use AMX."""
    case = next(c for c in load_published() if c.id == "sglang-cpu-dsr1-int8-2x6980p-1024-1024")
    result = predict_case(case)
    assert result.status == "ok" and abs(result.error or 0.0) < 0.05


@given(threads=st.integers(1, 32))
def test_ggml_rate_scales_with_threads(default_hardware_db, threads: int) -> None:  # type: ignore[no-untyped-def]
    case = next(c for c in load_published() if c.id == "ktransformers-v02-dsv3-q4km-1x6454s-4090d-prefill")
    scenario, db = scenario_for(case, default_hardware_db)
    system = db.node(scenario.hardware, scenario.gpus)
    _, peaks, _, _ = cpu_rates(system, Deployment(mode="cpu-experts", threads=threads), ggml=True)
    assert peaks["fp32"] == pytest.approx(threads * 2.2e9 * 64)
