"""Named presets for common serving systems: each sets the execution mode and cache behaviour the system
documents, and says what it assumes. A preset fills in scenario options the user left at their defaults.

The documented, structural behaviour is reproduced (where weights live, which device computes the experts,
how missing experts are cached), and each preset names its engine (capsim/engine/engines.toml): the engine's
kernel latency under CUDA graphs, or its host dispatch when it runs eagerly.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, fields, replace
from typing import Any

from capsim.engine.scenario import Scenario
from capsim.errors import ScenarioError


@dataclass(frozen=True)
class Preset:
    name: str
    settings: dict[str, Any]
    assumes: str
    source: str


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "vllm-like",
            {"mode": "gpu", "engine": "vllm"},
            "every weight resident in GPU memory, tensor parallel over the devices, 90 % of device memory "
            "usable (gpu_memory_utilization default), continuous batching approximated by a fixed batch",
            "https://docs.vllm.ai/en/latest/models/engine_args.html (--tensor-parallel-size, "
            "--gpu-memory-utilization default 0.9)",
        ),
        Preset(
            "sglang-like",
            {"mode": "gpu", "engine": "sglang"},
            "every weight resident in GPU memory, tensor parallel over the devices (--tp), 90 % of device "
            "memory for weights and KV pool (--mem-fraction-static 0.9), a fixed batch for continuous batching; "
            "data-parallel attention: the sglang-dp-attention preset",
            "https://docs.sglang.io/advanced_features/server_arguments.html (--tp, --dp, --mem-fraction-static "
            "default 0.9)",
        ),
        Preset(
            "vllm-ep-like",
            {"mode": "gpu", "ep": 0, "engine": "vllm"},
            "as vllm-like, with experts split whole over the devices (expert parallel, all-to-all dispatch)",
            "https://docs.vllm.ai/en/latest/models/engine_args.html (--enable-expert-parallel)",
        ),
        Preset(
            "sglang-dp-attention",
            {"mode": "gpu", "attention_dp": 0, "ep": 0, "engine": "sglang"},
            "SGLang --enable-dp-attention --dp N with --ep-size N (DeepSeek recipe): attention data parallel over "
            "every device (each rank its own sequences and KV cache), routed experts expert-parallel over every "
            "device; --all-to-all deepep for --moe-a2a-backend deepep",
            "https://docs.sglang.io/advanced_features/server_arguments.html (--enable-dp-attention, --dp-size, "
            "--ep-size, --moe-a2a-backend, --ep-num-redundant-experts)",
        ),
        Preset(
            "trtllm-dep",
            {"mode": "gpu", "attention_dp": 0, "ep": 0, "engine": "tensorrt-llm"},
            "TensorRT-LLM 'DEP' layout (enable_attention_dp with moe_expert_parallel_size = GPUs, e.g. DEP8): "
            "attention data parallel and experts expert-parallel over every device",
            "NVIDIA/TensorRT-LLM docs/source/developer-guide/perf-overview.md (commit 03e27c7d, 'H200 DEP8 (FP8)' "
            "columns; the page's llm_options enable_attention_dp)",
        ),
        Preset(
            "vllm-dp-ep",
            {"mode": "gpu", "attention_dp": 0, "ep": 0, "engine": "vllm"},
            "vLLM --data-parallel-size N --enable-expert-parallel: attention data parallel over the N ranks, expert "
            "layers expert-parallel over DP x TP devices (without --enable-expert-parallel they form a DP x TP "
            "tensor-parallel group: --ep 1)",
            "https://docs.vllm.ai/en/latest/serving/data_parallel_deployment/ and "
            "https://docs.vllm.ai/en/latest/serving/expert_parallel_deployment/",
        ),
        Preset(
            "hf-transformers-like",
            {"mode": "gpu", "engine": "transformers"},
            "every weight resident in GPU memory, PyTorch eager execution as Hugging Face transformers runs MoE "
            "blocks (a Python loop over the activated experts): each pass takes max(host dispatch, device time)",
            "capsim/engine/engines.toml [transformers] (fitted to transformers 5.17.0 MoE blocks measured on an "
            "H200, validation/cuda-nvidia-h200-2026-12-04/transformers_moe.json)",
        ),
        Preset(
            "moe-infinity-like",
            {
                "mode": "offload",
                "cache_policy": "lfu",
                "prefetch": True,
                "prefetch_accuracy": 0.86,
                "engine": "moe-infinity",
            },
            "experts in pinned host DRAM, a GPU expert cache kept by activation frequency (modelled as LFU), "
            "next experts prefetched while the GPU computes: 86 % of them named ahead of use (the measured "
            "accuracy of next-layer gate prediction, capsim.engine.offload.NEXT_LAYER_GATE_ACCURACY; no figure "
            "for MoE-Infinity's own trace-based predictor is published), the rest fetched on demand",
            "https://github.com/EfficientMoE/MoE-Infinity (activation-aware expert prefetching and caching; "
            "core/memory/pinned_memory_pool.cpp: pinned host buffers)",
        ),
        Preset(
            "mixtral-offloading-like",
            {"mode": "offload", "cache_policy": "lru", "prefetch": False},
            "experts in pinned host DRAM, an LRU expert cache on the GPU, misses copied before use (no "
            "overlap: the repository lists speculative prefetching as work in progress)",
            "https://github.com/dvmazur/mixtral-offloading (LRU expert cache; arXiv:2312.17238; "
            "src/expert_cache.py @ 0d3c605: offloaded experts in pin_memory() storages)",
        ),
        Preset(
            "ktransformers-like",
            {"mode": "cpu-experts", "engine": "ktransformers"},
            "routed experts computed on the CPU from DRAM (AMX/AVX-512 kernels), attention and shared experts "
            "on the GPU, activations handed over PCIe every MoE layer",
            "https://github.com/kvcache-ai/ktransformers (CPU/GPU hybrid MoE inference)",
        ),
        Preset(
            "llamacpp-cpu-moe",
            {"mode": "cpu-experts", "engine": "llama.cpp"},
            "llama.cpp --cpu-moe: every routed expert computed on the CPU, the rest on the GPU; "
            "llamacpp-cpu-moe:N is --n-cpu-moe N, the routed experts of the first N MoE layers on the CPU",
            "ggml-org/llama.cpp PR #14992 (--cpu-moe) and PR #15077 (--n-cpu-moe: first N layers' experts)",
        ),
    )
}


def apply_preset(name: str, scenario: Scenario) -> tuple[Scenario, Preset]:
    """``scenario`` with the preset's settings filled into options still at their defaults.

    ``llamacpp-cpu-moe:N`` takes llama.cpp's --n-cpu-moe N: the routed experts of MoE layers 0..N-1 on the CPU."""
    key, _, arg = name.strip().lower().partition(":")
    if key not in PRESETS:
        close = difflib.get_close_matches(key, list(PRESETS), n=3, cutoff=0.5)
        hint = (
            f"did you mean {', '.join(repr(c) for c in close)}?"
            if close
            else f"choose one of {', '.join(PRESETS)}"
        )
        raise ScenarioError(f"unknown system preset {name!r}; {hint}")
    preset = PRESETS[key]
    settings = dict(preset.settings)
    if arg:
        if key != "llamacpp-cpu-moe" or not arg.isdigit() or int(arg) < 1:
            raise ScenarioError(
                f"preset {name!r}: only llamacpp-cpu-moe takes a count, as llamacpp-cpu-moe:N (N >= 1)"
            )
        settings["placement"] = f"experts[0:{int(arg)}]:dram"
    defaults = {f.name: f.default for f in fields(Scenario)}
    updates: dict[str, Any] = {}
    for option, value in settings.items():
        if getattr(scenario, option) != defaults[option]:
            continue  # the user chose this explicitly
        if option in ("ep", "attention_dp") and value == 0:  # 0 = every device the layer can use
            if scenario.gpus is None and scenario.tp is None:
                raise ScenarioError(f"preset {key!r} splits the model over the devices: give --gpus N")
            if option == "attention_dp":
                devices = (scenario.gpus or scenario.tp or 1) * scenario.nodes // (scenario.pp * scenario.dp)
                value = max(devices // (scenario.tp or 1), 1)
            else:  # EP over the devices the MoE layers run on: tp x attention-dp
                adp = updates.get("attention_dp", scenario.attention_dp)
                value = (scenario.tp or 1) * adp if adp > 1 else scenario.tp or scenario.gpus
        updates[option] = value
    if updates.get("attention_dp", scenario.attention_dp) > 1 and scenario.tp is None:
        updates["tp"] = 1  # attention DP over every device: one device per attention rank
    return replace(scenario, **updates), replace(preset, settings=settings)
