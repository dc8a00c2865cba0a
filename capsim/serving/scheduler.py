"""The scheduler's configuration (vLLM-named limits) and what a replica's simulation returns; shared by the
stepwise (capsim.serving.simulate) and event-driven (capsim.serving.events) simulators."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from capsim.errors import ScenarioError

STRETCH_CAP = 4096
"""Most decode steps evaluated in one vectorised stretch (bounds the arrays, not the result)."""


@dataclass(frozen=True)
class SchedulerConfig:
    """Scheduler limits of one replica (names as vLLM's engine arguments)."""

    max_num_seqs: int = 256
    max_batched_tokens: int = 8192
    chunked_prefill: bool = True
    block_size: int = 16

    def validate(self) -> None:
        for value, flag in (
            (self.max_num_seqs, "--max-num-seqs"),
            (self.max_batched_tokens, "--max-batched-tokens"),
            (self.block_size, "--block-size"),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ScenarioError(f"{flag} must be an integer >= 1, got {value!r}")
        if self.max_batched_tokens < self.max_num_seqs:
            # vLLM refuses this too (SchedulerConfig: max_num_batched_tokens must be >= max_num_seqs): every
            # running request must be able to decode in each step
            raise ScenarioError(
                f"--max-batched-tokens {self.max_batched_tokens} is smaller than --max-num-seqs {self.max_num_seqs}; "
                "a step must hold one decode token per running request: raise the budget or lower --max-num-seqs"
            )


@dataclass
class ReplicaRun:
    """What one replica's simulation produced. Per-request arrays are in the workload's order."""

    arrival_s: np.ndarray
    first_token_s: np.ndarray
    finish_s: np.ndarray
    preemptions: np.ndarray
    itl_values: list[np.ndarray] = field(default_factory=list)
    itl_weights: list[np.ndarray] = field(default_factory=list)
    steps: int = 0
    busy_s: float = 0.0
    weight_bytes_sparse: float = 0.0
    weight_bytes_dense: float = 0.0
    kv_read_bytes: float = 0.0
    flops_sparse: float = 0.0
    flops_dense: float = 0.0
    max_kv_blocks_used: int = 0
    kv_blocks: int = 0
    timeline: dict[str, Sequence[float]] = field(default_factory=dict)

    def itl_samples(self) -> np.ndarray:
        """Every inter-token latency (seconds), one per output token after the first."""
        if not self.itl_values:
            return np.zeros(0)
        return np.repeat(np.concatenate(self.itl_values), np.concatenate(self.itl_weights).astype(np.int64))
