"""Which engine profile a resolution applies is decided once (capsim.engine.resolve) and kept on the resolved
scenario (``ResolvedScenario.engine``); the cpu-experts mode, predict's engine report and serve's summary read it
there instead of looking the name up again."""

from __future__ import annotations

from capsim.engine.resolve import resolve
from capsim.engine.scenario import Scenario


def test_the_applied_profile_and_why_not(default_hardware_db) -> None:  # type: ignore[no-untyped-def]
    """vllm on an H100 applies (its kernel latency, 6.75 us in engines.toml, is the rates'); llama.cpp's CUDA
    profile names consumer and datacenter GPUs, so on an Apple M2 Max the class's values stay; a CPU-only run
    keeps the cpu class's values whatever engine is named."""
    gpu, _ = resolve(
        Scenario(model="mixtral-8x7b", hardware="h100-sxm", gpus=2, engine="vllm"), default_hardware_db
    )
    assert gpu.engine is not None and gpu.engine.id == "vllm"
    assert gpu.rates.kernel_latency_s == gpu.engine.kernel_latency_s == 6.75e-6
    assert gpu.engine_not_applied() is None

    apple, _ = resolve(
        Scenario(model="qwen3-30b-a3b", hardware="m2-max", weight_dtype="int4", engine="llama.cpp"),
        default_hardware_db,
    )
    assert apple.engine is None
    reason = apple.engine_not_applied()
    assert reason is not None and "consumer-gpu, datacenter-gpu" in reason

    cpu, _ = resolve(
        Scenario(
            model="mixtral-8x7b",
            hardware="epyc-9654-2s",
            mode="cpu",
            weight_dtype="int4",
            engine="vllm",
        ),
        default_hardware_db,
    )
    assert cpu.engine is None and cpu.kv_cache_free_fraction is None
    assert cpu.engine_not_applied() == "CPU-only execution: the cpu class's values apply"
    plain, _ = resolve(Scenario(model="mixtral-8x7b", hardware="h100-sxm", gpus=2), default_hardware_db)
    assert plain.engine is None and plain.engine_not_applied() is None
