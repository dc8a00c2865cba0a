"""The llama.cpp CUDA profile (capsim/engine/engines.toml ["llama.cpp"], docs/validation.md §5.8): block-quantized
weights at the int8 rate (MMQ), the fitted compute fraction, the device classes it applies to, the loader's
errors, and that the shipped value is the fit it cites (benchmarks/fit_llamacpp_prefill.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from capsim import Scenario
from capsim.engine.engines import load_engines
from capsim.engine.passes import prefill_passes
from capsim.engine.resolve import resolve
from capsim.errors import DataFileError
from capsim.hardware.db import load_hardware_db
from capsim.validation.published import load_published, scenario_for

ROOT = Path(__file__).resolve().parent.parent


def _prefill_2048(hardware: str, engine: str | None):  # type: ignore[no-untyped-def]
    rs, _ = resolve(
        Scenario(model="gpt-oss-20b", hardware=hardware, gpus=1, batch=1, weight_dtype="mxfp4", engine=engine)
    )
    one = np.array([1.0])
    return rs, prefill_passes(rs, one, np.array([2048.0]), np.array([2048.0]), one)


def test_mxfp4_experts_run_at_the_int8_rate_by_hand() -> None:
    """gpt-oss-20b, one 2,048-token prompt on a GB10 (DGX Spark), every one of the 32 experts activated. Routed
    expert FLOPs = 2 x T x k x N_exp x L = 2 x 2048 x 4 x 24,891,840 x 24 = 9.7883e12. Their bytes are the
    weights, 24 x 32 x 24,891,840 x 4.25/8 = 10.164 GB, plus the activations in and out, 24 x 2 x 2048 x 4 x
    2880 x 2 = 2.265 GB: 12.429 GB, 53.5 ms at 273 GB/s x 0.85.
    llama.cpp: int8 peak 250 TFLOP/s (gb10 entry, derived) x 0.105 = 26.25 TFLOP/s -> 372.9 ms.
    No engine: MXFP4 at the FP4 peak 500 x the consumer-gpu class's 0.70 = 350 TFLOP/s -> 28.0 ms, so the
    memory time (53.5 ms) binds."""
    flops = 2 * 2048 * 4 * 24_891_840 * 24
    rs, llama = _prefill_2048("gb10", "llama.cpp")
    assert rs.rates.compute_fraction == 0.105
    assert rs.sharding.weight_precision["routed_experts"].native_compute == "int8"
    assert rs.sharding.weight_precision["routed_experts"].bits_per_element == 4.25  # storage unchanged
    assert llama.time_by_op["routed_experts"][0] == pytest.approx(flops / (250e12 * 0.105), rel=1e-6)
    rs0, plain = _prefill_2048("gb10", None)
    assert rs0.sharding.weight_precision["routed_experts"].native_compute == "fp4"
    expert_bytes = 24 * 32 * 24_891_840 * 4.25 / 8 + 24 * 2 * 2048 * 4 * 2880 * 2
    assert plain.time_by_op["routed_experts"][0] == pytest.approx(expert_bytes / (273e9 * 0.85), rel=1e-6)


def test_profile_is_left_out_where_it_was_not_fitted() -> None:
    """Fitted on CUDA GPUs only: an Apple GPU (Metal kernels) and a CPU-only run keep their class's values."""
    rs, _ = _prefill_2048("m2-max", "llama.cpp")
    assert rs.rates.compute_fraction == 0.70  # apple-unified class
    assert rs.sharding.weight_precision["routed_experts"].native_compute == "fp4"
    profile = load_engines()["llama.cpp"]
    assert profile.applies_to("consumer-gpu") and not profile.applies_to("apple-unified")
    cpu, _ = resolve(
        Scenario(
            model="qwen3-30b-a3b", hardware="epyc-9654-2s", batch=1, weight_dtype="q4_k_m", engine="llama.cpp"
        )
    )
    assert cpu.deployment.mode == "cpu" and cpu.rates.compute_fraction == 0.5


def test_gguf_types_keep_int8_and_prefill_chunk_reaches_the_scenario() -> None:
    db = load_hardware_db()
    case = {c.id: c for c in load_published()}["llamacpp-pr15525-rtx3090-dsv2lite-q4_0-pp512"]
    scenario, case_db = scenario_for(case, db)
    assert scenario.engine == "llama.cpp" and scenario.prefill_chunk_tokens == 512
    rs, _ = resolve(scenario, case_db)
    assert {p.native_compute for p in rs.sharding.weight_precision.values() if p.name.startswith("q")} == {
        "int8"
    }


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            '[x]\nname = "X"\nexecution = "graphs"\nquantized_compute = { value = "int4", source = "s" }\n',
            "quantized_compute must be one of int8, fp8, fp4, bf16, fp16, fp32, got 'int4'",
        ),
        (
            '[x]\nname = "X"\nexecution = "graphs"\nquantized_compute = "int8"\n',
            r"quantized_compute must be \{ value = '...', source = '...' \} with a source",
        ),
        ('[x]\nname = "X"\nexecution = "graphs"\ndevice_classes = "cpu"\n', "device_classes must be a list"),
    ],
)
def test_bad_profile_fields(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "engines.toml"
    path.write_text(text)
    with pytest.raises(DataFileError, match=problem):
        load_engines(str(path))


def _fit_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "fit_llamacpp_prefill", ROOT / "benchmarks/fit_llamacpp_prefill.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_shipped_compute_fraction_is_a_minimum_of_the_fit() -> None:
    """The shipped compute fraction beats its grid neighbours (±0.005) on Σ ln(predicted/measured)² over the 4
    published llama.cpp prefill runs on NVIDIA GPUs (the full grid: benchmarks/fit_llamacpp_prefill.py)."""
    fit = _fit_module()
    shipped = load_engines()["llama.cpp"].compute_fraction
    assert shipped is not None
    fit.COMPUTE_FRACTION_GRID = shipped + np.array([-0.005, 0.0, 0.005])
    cases = [c for c in fit.gpu_cases() if c.metric == "prefill_tokens_per_s"]
    assert len(cases) == 4
    assert fit.best(fit.log_ratios(cases)) == 1
