"""Scheduler presets for ``capsim serve --system``: each engine's documented defaults for the limits the
simulator models (requests running at once, tokens per step, chunked prefill, KV block size), with the source
of every value. Where an engine picks a default from the device's memory, the same rule is applied to the
simulated device.

Each preset also names its engine's execution profile (capsim/engine/engines.toml, the same id the ``capsim
predict --system`` presets set): ``capsim serve --system vllm-like`` costs its steps with the vllm profile (the
newest vLLM release with data) unless ``--engine`` names another (capsim.serving.api.engine_for).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from capsim.errors import ScenarioError
from capsim.serving.scheduler import SchedulerConfig

GIB = 2.0**30


@dataclass(frozen=True)
class SchedulerPreset:
    name: str
    description: str
    source: str
    engine: str
    """Engine profile id (capsim/engine/engines.toml) of the engine whose scheduler this is: its bare id, the
    newest release with data."""

    def config(
        self, device_memory_bytes: float, kv_tokens: int | None = None, device_id: str = ""
    ) -> SchedulerConfig:
        """The preset's limits on a device of ``device_memory_bytes`` (id ``device_id``); ``kv_tokens`` (the KV
        pool in tokens) for engines whose running-request cap follows the pool."""
        if self.name == "vllm-like":
            # vllm/engine/arg_utils.py EngineArgs.get_batch_defaults: devices of >= 70 GiB other than A100 get
            # 8192 tokens / 1024 sequences for the OpenAI server, others 2048 / 256 (A100 excluded: vLLM PR #17885)
            big = device_memory_bytes >= 70 * GIB and "a100" not in device_id.lower()
            return SchedulerConfig(
                max_num_seqs=1024 if big else 256,
                max_batched_tokens=8192 if big else 2048,
                chunked_prefill=True,
                block_size=16,
            )
        if self.name == "sglang-like":
            # sglang/srt/server_args.py: chunked_prefill_size 2048 below 35 GB, 8192 below 160 GB, else 16384;
            # page_size 1; max_running_requests = min(max_total_num_tokens // 2, request pool <= 4096)
            mem_mb = device_memory_bytes / 2.0**20
            chunk = 2048 if mem_mb < 35 * 1024 else 8192 if mem_mb < 160 * 1024 else 16384
            seqs = 4096 if kv_tokens is None else max(1, min(kv_tokens // 2, 4096))
            # a step must hold one decode per running request (capsim's scheduler, as vLLM's, requires it)
            return SchedulerConfig(
                max_num_seqs=min(seqs, chunk), max_batched_tokens=chunk, chunked_prefill=True, block_size=1
            )
        # tensorrt_llm/llmapi/llm_args.py: max_batch_size 2048, max_num_tokens 8192, enable_chunked_prefill False,
        # KvCacheConfig.tokens_per_block 32
        return SchedulerConfig(
            max_num_seqs=2048, max_batched_tokens=8192, chunked_prefill=False, block_size=32
        )


PRESETS: dict[str, SchedulerPreset] = {
    p.name: p
    for p in (
        SchedulerPreset(
            "vllm-like",
            "vLLM v1 scheduler: chunked prefill on, decodes first then prompt chunks in a token budget, "
            "16-token KV blocks, preemption by recompute; 8192 tokens / 1024 sequences on >= 70 GiB devices, "
            "else 2048 / 256",
            "vllm-project/vllm vllm/engine/arg_utils.py EngineArgs.get_batch_defaults (OPENAI_API_SERVER); "
            "https://docs.vllm.ai/en/latest/configuration/engine_args.html (--block-size 16, "
            "--enable-chunked-prefill); https://docs.vllm.ai/en/latest/configuration/optimization.html (preemption "
            "by recompute)",
            "vllm",
        ),
        SchedulerPreset(
            "sglang-like",
            "SGLang scheduler: chunked prefill of 2048/8192/16384 tokens by device memory (<35 GB / <160 GB / "
            "larger), token-granular KV (page size 1), running requests capped at min(KV tokens / 2, 4096) and "
            "at the chunk size (one decode token each per step)",
            "sgl-project/sglang python/sglang/srt/server_args.py (chunked_prefill_size by gpu_mem, page_size 1) "
            "and managers/scheduler.py (max_running_requests = min(max_total_num_tokens // 2, req_to_token_pool "
            "size)); https://docs.sglang.io/advanced_features/server_arguments.html",
            "sglang",
        ),
        SchedulerPreset(
            "trtllm-like",
            "TensorRT-LLM in-flight batching: whole prompts (no chunked context) batched with generation, "
            "max_num_tokens 8192, max_batch_size 2048, 32-token KV blocks",
            "NVIDIA/TensorRT-LLM tensorrt_llm/llmapi/llm_args.py (max_batch_size 2048, max_num_tokens 8192, "
            "enable_chunked_prefill False, KvCacheConfig.tokens_per_block 32); "
            "https://nvidia.github.io/TensorRT-LLM/features/paged-attention-ifb-scheduler.html",
            "tensorrt-llm",
        ),
    )
}


def get_preset(name: str) -> SchedulerPreset:
    key = name.strip().lower()
    if key not in PRESETS:
        close = difflib.get_close_matches(key, list(PRESETS), n=3, cutoff=0.5)
        hint = (
            f"did you mean {', '.join(repr(c) for c in close)}?"
            if close
            else f"choose one of {', '.join(PRESETS)}"
        )
        raise ScenarioError(f"unknown scheduler preset {name!r} for --system; {hint}")
    return PRESETS[key]
