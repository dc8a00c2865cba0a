"""Engine execution costs (issue 13 item 3): the kernel-latency floor of CUDA-graph engines and the host dispatch
of eager ones (capsim/engine/engines.toml, capsim.engine.roofline.BLOCK_KERNELS): hand-computed points,
monotonicity, the profile loader's errors, and that the shipped values are the fits they cite
(benchmarks/fit_kernel_latency.py, the H200 transformers blocks)."""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from capsim import Scenario
from capsim.engine.engines import engine_profile, load_engines
from capsim.engine.passes import decode_passes
from capsim.engine.resolve import resolve
from capsim.engine.roofline import BLOCK_KERNELS, kernels_per_pass
from capsim.errors import DataFileError, ScenarioError
from capsim.models.db import resolve_model
from capsim.validation.published import load_published, scenario_for

ROOT = Path(__file__).resolve().parent.parent


def test_kernel_counts_by_hand() -> None:
    """K = L·attn + L_moe·(router + routed + shared) + L_dense·FFN + lm_head (BLOCK_KERNELS)."""
    # DeepSeek-V3: 61 MLA layers x 10, 58 MoE layers x (2 + 5 + 3 shared), 3 dense x 3, lm_head 1
    assert kernels_per_pass(resolve_model("deepseek-v3")) == 61 * 10 + 58 * 10 + 3 * 3 + 1 == 1200
    # Mixtral-8x7B: 32 GQA layers x 6, 32 MoE layers x (2 + 5), no shared expert, no dense layer
    assert kernels_per_pass(resolve_model("mixtral-8x7b")) == 32 * 6 + 32 * 7 + 1 == 417
    assert BLOCK_KERNELS["attn_proj"] == {"gqa": 6, "mla": 10}


def _rs(engine: str | None = None, **kw: object):  # type: ignore[no-untyped-def]
    settings = {"model": "mixtral-8x7b", "hardware": "h200-sxm", "gpus": 1, "batch": 1, "engine": engine}
    settings.update(kw)
    rs, _ = resolve(Scenario(**settings))  # type: ignore[arg-type]
    return rs


def test_floor_binds_at_batch_1_by_hand() -> None:
    """Batch 1 on one H200 with TensorRT-LLM's 5.25 us: the attention block (32 layers x 6 kernels) takes at
    least 32·6·5.25 us = 1.008 ms, more than streaming its weights: 32 x 41.9 M bf16 params (4096 x 6144 qkv +
    4096 x 4096 o) = 2.68 GB at 4.8 TB/s x 0.85 x 0.858 = 3.50 TB/s, 0.77 ms."""
    rs = _rs("tensorrt-llm")
    assert rs.rates.kernel_latency_s == 5.25e-6
    cost = decode_passes(rs, np.array([1.0]), np.array([512.0]))
    plain = decode_passes(
        replace(rs, rates=replace(rs.rates, kernel_latency_s=0.0)), np.array([1.0]), np.array([512.0])
    )
    assert plain.time_by_op["attn_proj"][0] == pytest.approx(
        32 * 41.9e6 * 2 / (4.8e12 * 0.85 * 0.858), rel=0.01
    )
    assert cost.time_by_op["attn_proj"][0] == pytest.approx(32 * 6 * 5.25e-6)
    # router: 32 layers x (router GEMM + top-k) = 64 kernels; its 32 x 4096 x 8 bf16 weights are tiny
    assert cost.time_by_op["router"][0] == pytest.approx(32 * 2 * 5.25e-6)
    # the routed experts (2 of 8 per layer, 352 MB each) stream far longer than 32 x 5 kernels
    assert cost.time_by_op["routed_experts"][0] == plain.time_by_op["routed_experts"][0]
    assert cost.time_by_op["routed_experts"][0] > 32 * 5 * 5.25e-6


def test_floor_leaves_large_kernels_alone() -> None:
    """An 8,192-token prefill chunk: the attention projections and experts are far above their floors and do
    not change; only the router (a 4096 x 8 GEMM and top-k per layer) sits at its floor of 32 x 2 kernels
    (vLLM 0.7's 26.25 us per kernel)."""
    rs = _rs("vllm-0.7")
    zero = replace(rs, rates=replace(rs.rates, kernel_latency_s=0.0))
    from capsim.engine.passes import prefill_passes

    args = (np.array([16.0]), np.array([512.0]), np.array([8192.0]), np.array([16.0]))
    floored, plain = prefill_passes(rs, *args), prefill_passes(zero, *args)
    for op in ("attn_proj", "attn_core", "routed_experts"):
        assert floored.time_by_op[op][0] == plain.time_by_op[op][0]
    assert floored.time_by_op["router"][0] == pytest.approx(32 * 2 * rs.rates.kernel_latency_s)
    assert floored.time[0] < plain.time[0] * 1.01


@settings(max_examples=40, deadline=None)
@given(
    t_k=st.floats(0.0, 1e-4),
    dt=st.floats(0.0, 1e-4),
    batch=st.sampled_from([1.0, 4.0, 64.0, 512.0]),
    context=st.floats(1.0, 32768.0),
)
@example(t_k=0.0, dt=1e-5, batch=1.0, context=1.0)
def test_step_time_monotone_in_kernel_latency(t_k: float, dt: float, batch: float, context: float) -> None:
    """A longer kernel latency never makes a decode step faster, and a zero one is the plain roofline."""
    rs = _RS
    a = decode_passes(
        replace(rs, rates=replace(rs.rates, kernel_latency_s=t_k)), np.array([batch]), np.array([context])
    )
    b = decode_passes(
        replace(rs, rates=replace(rs.rates, kernel_latency_s=t_k + dt)),
        np.array([batch]),
        np.array([context]),
    )
    assert b.time[0] >= a.time[0]
    # the floor of n kernels adds at most n x latency over the plain roofline
    plain = decode_passes(
        replace(rs, rates=replace(rs.rates, kernel_latency_s=0.0)), np.array([batch]), np.array([context])
    )
    assert a.time[0] <= plain.time[0] + kernels_per_pass(rs.model) * t_k * (1 + 1e-9) + 1e-15


_RS = _rs(None, model="deepseek-v3", hardware="h200-sxm", gpus=8, weight_dtype="fp8")


def test_eager_pass_is_max_of_host_and_device_by_hand() -> None:
    """transformers on one H200, Mixtral batch 1: 2 experts in each of 32 MoE layers, so the host dispatches
    32 x 0.78 ms + 0.275 ms x 64 = 42.56 ms, far longer than the device's ~8 ms: the step is the step overhead
    plus the host time."""
    rs = _rs("transformers")
    assert rs.rates.eager_moe_host_s == 7.8e-4 and rs.rates.eager_expert_host_s == 2.75e-4
    cost = decode_passes(rs, np.array([1.0]), np.array([512.0]))
    active = cost.activated_by_layer()[:, 0].sum()
    assert active == pytest.approx(64.0)  # uniform top-2 of 8 at one token: exactly 2 per layer
    host = 32 * 7.8e-4 + 2.75e-4 * 64
    assert cost.time[0] == pytest.approx(rs.rates.step_overhead_s + host)
    graphs = decode_passes(
        replace(rs, rates=replace(rs.rates, eager_moe_host_s=None)), np.array([1.0]), np.array([512.0])
    )
    device = graphs.time[0] - rs.rates.step_overhead_s
    assert device < host
    assert cost.time_by_op["host_dispatch"][0] == pytest.approx(host - device)


@settings(max_examples=30, deadline=None)
@given(batch=st.sampled_from([1.0, 8.0, 256.0, 4096.0]), context=st.floats(1.0, 8192.0))
def test_eager_never_faster_than_graphs(batch: float, context: float) -> None:
    """max(host, device) >= device: an eager pass is never faster than the same pass from graphs."""
    rs = _EAGER
    eager = decode_passes(rs, np.array([batch]), np.array([context]))
    graphs = decode_passes(
        replace(rs, rates=replace(rs.rates, eager_moe_host_s=None)), np.array([batch]), np.array([context])
    )
    assert eager.time[0] >= graphs.time[0] * (1 - 1e-12)


_EAGER = _rs("transformers", model="qwen3-30b-a3b")


def test_eager_host_fit_matches_the_h200_blocks() -> None:
    """The shipped transformers values are the fit they cite: 0.78 ms + 0.275 ms per activated expert over the
    18 eager blocks of ≤ 1,024 tokens measured on the H200, median |error| 5.4 %."""
    data = json.loads((ROOT / "validation/cuda-nvidia-h200-2026-12-04/transformers_moe.json").read_text())
    runs = [r for model in data.values() for r in model["runs"]["eager"] if r["tokens"] <= 1024]
    a = np.array([r["activated_experts"] for r in runs])
    t = np.array([r["median_s"] for r in runs])
    x = np.c_[np.ones_like(a), a] / t[:, None]  # least squares in relative error
    (moe, expert), *_ = np.linalg.lstsq(x, np.ones_like(t), rcond=None)
    profile = load_engines()["transformers"]
    assert profile.moe_host_s == pytest.approx(moe, rel=0.01)
    assert profile.expert_host_s == pytest.approx(expert, rel=0.01)
    assert np.median(np.abs((moe + expert * a) / t - 1)) == pytest.approx(0.054, abs=0.002)


def test_shipped_profiles_are_sourced() -> None:
    engines = load_engines()
    assert {"tensorrt-llm", "vllm", "vllm-0.7", "sglang", "transformers", "moe-infinity"} <= set(engines)
    for profile in engines.values():
        named = {
            k
            for k in (
                "kernel_latency_s",
                "moe_host_s",
                "expert_host_s",
                "compute_fraction",
                "quantized_compute",
                "per_sequence_s",
                "kv_cache_free_fraction",
                "cpu_kernel_bw_fraction",
                "replicate_socket_share",
            )
            if getattr(profile, k) is not None
        }
        assert named == {k for k, _ in profile.sources}
        assert all(source for _, source in profile.sources)


def test_unknown_engine_is_one_line_with_suggestion() -> None:
    with pytest.raises(ScenarioError, match=r"unknown engine 'vlm'; did you mean vllm"):
        engine_profile("vlm")
    with pytest.raises(ScenarioError, match="unknown engine"):
        resolve(Scenario(model="mixtral-8x7b", hardware="h200-sxm", engine="nonsense-engine"))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[x]\nname = "X"\nexecution = "jit"\n', "execution must be one of graphs, eager"),
        ('[x]\nname = "X"\nexecution = "graphs"\nkernel_latency_s = 5e-6\n', "with a non-empty source"),
        ('[x]\nname = "X"\nexecution = "eager"\n', "eager execution needs moe_host_s and expert_host_s"),
        ('[x]\nname = "X"\nexecution = "graphs"\nspeed = 1\n', "unknown field(s) speed"),
        (
            '[x]\nname = "X"\nexecution = "graphs"\nkernel_latency_s = { value = -1.0, source = "s" }\n',
            "must be a number >= 0",
        ),
    ],
)
def test_bad_profile_files(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "engines.toml"
    path.write_text(text)
    with pytest.raises(DataFileError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        load_engines(str(path))


def test_published_cases_run_with_their_engine() -> None:
    """Each case's engine profile (when capsim has one) is the scenario's engine."""
    from capsim.hardware.db import load_hardware_db

    db = load_hardware_db()
    for case in load_published():
        if case.id == "trtllm-blog-dsr1-h200x8-fp8-minlatency-bs1":
            scenario, _ = scenario_for(case, db)
            assert scenario.engine == "tensorrt-llm"
        if case.engine == "llama.cpp":
            scenario, _ = scenario_for(case, db)
            # its CUDA profile; resolve leaves it out on CPUs and Apple GPUs (tests/test_llamacpp_profile.py)
            assert scenario.engine == "llama.cpp"
        if case.engine == "ktransformers":
            scenario, _ = scenario_for(case, db)
            assert (
                scenario.engine == "ktransformers"
            )  # its CPU-side values (tests/test_ktransformers_profile.py)


def test_presets_name_their_engine() -> None:
    from capsim.engine.presets import PRESETS

    assert PRESETS["vllm-like"].settings["engine"] == "vllm"
    assert PRESETS["hf-transformers-like"].settings["engine"] == "transformers"
    assert PRESETS["moe-infinity-like"].settings["engine"] == "moe-infinity"


def _fit_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "fit_kernel_latency", ROOT / "benchmarks/fit_kernel_latency.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


def test_shipped_kernel_latencies_are_the_fit() -> None:
    """engines.toml's TensorRT-LLM and vLLM/SGLang values and efficiency.toml's class default are what
    benchmarks/fit_kernel_latency.py finds on its points (grid step 0.25 us)."""
    fit = _fit_module()
    points = fit.points()
    grid = np.arange(0.0, 40.01, 0.25) * 1e-6
    trt, _ = fit.fit([p for p in points if p.engine == "tensorrt-llm"], grid)
    py, _ = fit.fit([p for p in points if p.engine in ("vllm", "sglang")], grid)
    every, _ = fit.fit(points, grid)
    engines = load_engines()
    assert engines["tensorrt-llm"].kernel_latency_s == pytest.approx(trt)
    assert engines["vllm-0.7"].kernel_latency_s == pytest.approx(py) == engines["sglang"].kernel_latency_s
    from capsim.hardware.db import load_hardware_db

    assert load_hardware_db().efficiency("datacenter-gpu").kernel_latency_s == pytest.approx(every)
