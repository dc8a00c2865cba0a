"""Engine profiles by release and an engine's compute fraction (capsim/engine/engines.toml, docs/validation.md
§5.7): which profile a release picks, the compute-bound time by hand, monotonicity, the loader's errors, and that
the shipped late-2025 vLLM and TensorRT-LLM 0.17 values are the fits they cite (benchmarks/fit_vllm_release.py,
benchmarks/fit_trtllm_release.py)."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capsim import Scenario
from capsim.engine.engines import engine_profile, load_engines, parse_release
from capsim.engine.memory import largest_batch, usable_bytes
from capsim.engine.passes import decode_passes, prefill_passes
from capsim.engine.resolve import resolve
from capsim.errors import DataFileError, ScenarioError
from capsim.hardware.db import load_hardware_db
from capsim.validation.published import load_published, scenario_for

ROOT = Path(__file__).resolve().parent.parent


def test_release_picks_the_profile() -> None:
    engines = load_engines()
    assert parse_release("v0.10.2") == (0, 10) and parse_release("0.7.3.dev138") == (0, 7)
    assert engine_profile("vllm@0.10.2") is engines["vllm"]
    assert engine_profile("vllm@0.11.0") is engines["vllm"]
    assert engine_profile("vllm@0.7.4") is engines["vllm-0.7"]
    assert engine_profile("VLLM@v0.7") is engines["vllm-0.7"]
    assert engine_profile("vllm") is engines["vllm"]  # bare id: the newest release with data
    assert engine_profile("tensorrt-llm@1.0") is engines["tensorrt-llm"]  # no releases named: any release
    # a profile fitted on the release wins over the family's catch-all, whatever their order in the file
    assert engine_profile("tensorrt-llm@0.17.0") is engines["tensorrt-llm-0.17"]
    assert engine_profile("tensorrt-llm") is engines["tensorrt-llm"]
    assert engine_profile("sglang@0.4.3") is engines["sglang"]


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        (
            "vllm@0.8.5",
            r"no vllm profile for release 0.8.5; profiles fitted on: vllm \(0.10-0.11\), vllm-0.7 \(0.7\)",
        ),
        ("vllm@latest", r"engine 'vllm@latest': release 'latest' is not MAJOR.MINOR"),
        ("vlm@0.10", r"unknown engine 'vlm' in 'vlm@0.10'"),
    ],
)
def test_release_errors_are_one_line(name: str, problem: str) -> None:
    with pytest.raises(ScenarioError, match=problem):
        engine_profile(name)


def test_published_cases_pick_their_release() -> None:
    db = load_hardware_db()
    by_id = {c.id: c for c in load_published()}
    early, _ = scenario_for(by_id["dstack-dsr1-h200x8-vllm-online-c4"], db)
    late, _ = scenario_for(by_id["gpustack-gptoss120b-h100x1-vllm-sharegpt-c4"], db)
    assert early.engine == "vllm@0.7.4" and engine_profile(early.engine) is load_engines()["vllm-0.7"]
    assert late.engine == "vllm@0.10.2" and engine_profile(late.engine) is load_engines()["vllm"]
    # every vLLM/SGLang case on a GPU names the release it ran, and a profile covers it
    for case in by_id.values():
        if case.engine in ("vllm", "sglang") and case.placement == "gpu" and case.engine_version:
            scenario, _ = scenario_for(case, db)
            assert engine_profile(scenario.engine) is not None


def _prefill(engine: str | None):  # type: ignore[no-untyped-def]
    rs, _ = resolve(Scenario(model="mixtral-8x7b", hardware="h200-sxm", gpus=1, batch=1, engine=engine))
    one = np.array([1.0])
    return rs, prefill_passes(rs, one, np.array([8192.0]), np.array([8192.0]), one)


def test_compute_fraction_by_hand() -> None:
    """One 8,192-token Mixtral prompt on one H200: the attention core does 2·H·pairs·(d_qk + d_v) per layer =
    2 x 32 x (8192 x 8193 / 2 = 33,558,528) x 256 = 5.498e11 FLOPs, x 32 layers = 1.7595e13, compute-bound (its
    KV bytes are ~1 GB). At vLLM 0.10-0.11's 0.26 of the bf16 peak 989.4 TFLOP/s: 1.7595e13 / 2.5724e14 =
    68.4 ms; at the datacenter-gpu class's 0.70 (no engine, or vLLM 0.7 which names none): 25.4 ms."""
    flops = 32 * 2 * 32 * (8192 * 8193 / 2) * 256
    rs, late = _prefill("vllm")
    assert rs.rates.compute_fraction == 0.26
    assert late.time_by_op["attn_core"][0] == pytest.approx(flops / (989.4e12 * 0.26), rel=1e-6)
    rs0, early = _prefill("vllm-0.7")
    assert rs0.rates.compute_fraction == 0.70
    assert early.time_by_op["attn_core"][0] == pytest.approx(flops / (989.4e12 * 0.70), rel=1e-6)
    _, none = _prefill(None)
    assert none.time_by_op["attn_core"][0] == early.time_by_op["attn_core"][0]
    # TensorRT-LLM 0.17 (docs/validation.md §5.9): 1.7595e13 / (989.4e12 x 0.61 = 6.0353e14) = 29.15 ms
    rs17, trt17 = _prefill("tensorrt-llm@0.17")
    assert rs17.rates.compute_fraction == 0.61
    assert trt17.time_by_op["attn_core"][0] == pytest.approx(flops / (989.4e12 * 0.61), rel=1e-6)
    assert trt17.time_by_op["attn_core"][0] == pytest.approx(0.029153, rel=1e-3)


def test_per_sequence_time_by_hand() -> None:
    """TensorRT-LLM 0.17's per_sequence_s (7.5 us, docs/validation.md §5.9) adds 7.5 us per sequence that emits a
    token to a step's overhead: a decode step of Mixtral-8x7B on one H200 at 1, 100 and 3,000 sequences carries
    step_overhead_s 2 ms + 32 layers x per_layer_overhead_s 8.7 us = 2.2784 ms, plus 0.0075, 0.75 and 22.5 ms. The
    bare [tensorrt-llm] profile (no per_sequence_s) charges the 2.2784 ms alone; nothing else in the step moves."""
    batch = np.array([1.0, 100.0, 3000.0])
    context = np.full(3, 2000.0)
    plain, _ = resolve(Scenario(model="mixtral-8x7b", hardware="h200-sxm", gpus=1, engine="tensorrt-llm"))
    rel17, _ = resolve(
        Scenario(model="mixtral-8x7b", hardware="h200-sxm", gpus=1, engine="tensorrt-llm@0.17")
    )
    assert rel17.rates.per_sequence_s == 7.5e-6 and plain.rates.per_sequence_s == 0.0
    base = 2.0e-3 + 32 * 8.7e-6
    # the same device rates but for the per-sequence time, so only the overhead can differ
    same_rates = replace(rel17, rates=replace(rel17.rates, per_sequence_s=0.0))
    without = decode_passes(same_rates, batch, context)
    with_seq = decode_passes(rel17, batch, context)
    assert without.time_by_op["overhead"] == pytest.approx(np.full(3, base), rel=1e-12)
    assert with_seq.time_by_op["overhead"] == pytest.approx(base + batch * 7.5e-6, rel=1e-12)
    assert with_seq.time - without.time == pytest.approx([7.5e-6, 7.5e-4, 0.0225], rel=1e-9)
    assert decode_passes(plain, batch, context).time_by_op["overhead"] == pytest.approx(np.full(3, base))


@settings(max_examples=30, deadline=None)
@given(lo=st.floats(0.05, 1.0), hi=st.floats(0.05, 1.0))
def test_prefill_time_falls_as_compute_fraction_rises(lo: float, hi: float) -> None:
    lo, hi = min(lo, hi), max(lo, hi)
    rs, _ = _prefill("vllm")
    args = (np.array([4.0]), np.array([4096.0]), np.array([8192.0, 16384.0]), np.array([4.0, 4.0]))
    slow = prefill_passes(replace(rs, rates=replace(rs.rates, compute_fraction=lo)), *args)
    fast = prefill_passes(replace(rs, rates=replace(rs.rates, compute_fraction=hi)), *args)
    assert np.all(fast.time <= slow.time * (1 + 1e-12))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            '[x]\nname = "X"\nexecution = "graphs"\ncompute_fraction = { value = 1.5, source = "s" }\n',
            r"compute_fraction must be a fraction in \(0, 1\]",
        ),
        ('[x]\nname = "X"\nexecution = "graphs"\nreleases = "0.x"\n', "releases must be 'A.B' or 'A.B-C.D'"),
        ('[x]\nname = "X"\nexecution = "graphs"\nreleases = "0.11-0.10"\n', "run backwards"),
    ],
)
def test_bad_release_fields(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "engines.toml"
    path.write_text(text)
    with pytest.raises(DataFileError, match=problem):
        load_engines(str(path))


def _fit_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("fit_vllm_release", ROOT / "benchmarks/fit_vllm_release.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_shipped_vllm_values_are_a_minimum_of_the_fit() -> None:
    """The shipped (kernel latency, compute fraction) of [vllm] beats its grid neighbours (0.25 us, 0.01) on the
    fit's loss, Σ ln(predicted/measured)² over the 9 vLLM 0.10-0.11 cases (the full grid:
    python benchmarks/fit_vllm_release.py)."""
    fit = _fit_module()
    shipped = load_engines()["vllm"]
    assert shipped.kernel_latency_s is not None and shipped.compute_fraction is not None
    fit.KERNEL_LATENCY_GRID = shipped.kernel_latency_s + np.array([-0.25, 0.0, 0.25]) * 1e-6
    fit.COMPUTE_FRACTION_GRID = shipped.compute_fraction + np.array([-0.01, 0.0, 0.01])
    cases = fit.fit_cases()
    assert len(cases) == 9
    assert fit.best(fit.predictions(cases)) == (1, 1)


def _trtllm_fit_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "fit_trtllm_release", ROOT / "benchmarks/fit_trtllm_release.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_shipped_trtllm_017_values_are_a_minimum_of_the_fit() -> None:
    """The shipped (compute fraction, per-sequence time) of [tensorrt-llm-0.17] beats its grid neighbours (0.01,
    0.5 us) on the fit's loss, sum of ln(predicted/measured)^2 over the 18 published TensorRT-LLM 0.17 rows (the
    full grid, leave-one-out and split: python benchmarks/fit_trtllm_release.py)."""
    fit = _trtllm_fit_module()
    shipped = load_engines()["tensorrt-llm-0.17"]
    assert shipped.compute_fraction is not None and shipped.per_sequence_s is not None
    fit.COMPUTE_FRACTION_GRID = shipped.compute_fraction + np.array([-0.01, 0.0, 0.01])
    fit.PER_SEQUENCE_GRID = shipped.per_sequence_s + np.array([-0.5, 0.0, 0.5]) * 1e-6
    cases = fit.fit_cases()
    assert len(cases) == 18 and all(c.engine_version == "0.17" for c in cases)
    assert fit.best(fit.predictions(cases)) == (1, 1)


def test_kv_cache_free_fraction_by_hand() -> None:
    """TensorRT-LLM 0.17 gives its KV cache 0.9 of the memory left once weights and buffers are in place
    (kv_cache_free_fraction, TensorRT-LLM's documented default), where capsim's default is 0.9 of the whole device
    (vLLM's rule). Mixtral-8x7B, FP8 weights, one H100 (80 GB): weights per device = attention 32 x 4096 x (4096 +
    2 x 1024 + 4096) = 1,342,177,280 B + routed experts 32 x 8 x 3 x 4096 x 14336 = 45,097,156,608 B + router
    32 x 4096 x 8 x 2 = 2,097,152 B + norms 65 x 4096 x 2 = 532,480 B + embeddings and lm_head 2 x 32000 x 4096 x 2
    = 524,288,000 B = 46,966,251,520 B; the workspace of an 8,192-token chunk = 8192 x (2 x 4096 + 2 x 2 x 14336)
    x 2 B = 1,073,741,824 B. Usable = 48,039,993,344 + 0.9 x (80e9 - 48,039,993,344) = 76,803,999,334.4 B, against
    0.9 x 80e9 = 72e9 B for the bare profile (no fraction)."""
    kw = dict(model="mixtral-8x7b", hardware="h100-sxm", gpus=1, weight_dtype="fp8", kv_dtype="fp8")
    rel17, _ = resolve(Scenario(**kw, engine="tensorrt-llm@0.17"))  # type: ignore[arg-type]
    plain, _ = resolve(Scenario(**kw, engine="tensorrt-llm"))  # type: ignore[arg-type]
    assert rel17.kv_cache_free_fraction == 0.9 and plain.kv_cache_free_fraction is None
    assert usable_bytes(rel17) == pytest.approx(76_803_999_334.4, rel=1e-12)
    assert usable_bytes(plain) == pytest.approx(72e9, rel=1e-12)
    # more room for KV: more sequences of 1,000 + 1,000 tokens resident
    p, g = np.array([1000]), np.array([1000])
    assert largest_batch(rel17, p, g)[0] > largest_batch(plain, p, g)[0]
