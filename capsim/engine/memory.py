"""Memory footprint per device: weights, KV cache and buffers against what the serving engine may use.

- Weights: every expert placed on the device is resident (all of them, not just the activated ones), split
  over the tensor-parallel ranks; router and norms are replicated. Experts placed in host DRAM or on an SSD
  (capsim.engine.placement) are not counted here; an offload expert cache takes the memory left after the KV cache.
- KV cache per sequence: (prompt + generated) tokens x KV elements per token (MLA- and window-aware) x
  bytes, split over KV heads up to the TP degree (MLA's latent is replicated on every rank of a TP group).
- Attention data parallelism (N ranks of tp devices): each rank keeps the KV of its own sequences only (no
  copy on the other ranks), so the replica holds N x the sequences one rank holds; attention, dense-FFN,
  shared-expert, embedding and lm_head weights are copied on every rank (split over its tp devices), the
  routed experts (and EPLB's redundant replicas) are split over all tp x N devices.
- Pipeline stages (--pp) hold ceil(L/pp)/L of the layers' weights and KV, plus the heavier of the embeddings
  and the lm_head (the first and last stage); the largest stage is the one that must fit.
- Buffers: the activation workspace of the largest forward pass (a prefill chunk): its widest intermediate
  (fused q/k/v, the k routed experts' gate+up, or the dense FFN's) plus fp32 logits of the sequences that
  emit a token. An estimate; shown as such.
- Usable: capacity x gpu_memory_utilization (the fraction the engine pre-allocates; vLLM's default 0.9).
A batch larger than the KV cache can hold runs in waves; the output says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from capsim.engine.placement import DEVICE
from capsim.engine.roofline import ACTIVATION_BYTES
from capsim.engine.speculative import mtp_module_params
from capsim.errors import DoesNotFitError
from capsim.units import GB

if TYPE_CHECKING:
    from capsim.engine.resolved import ResolvedScenario

_FP32_LOGIT_BYTES = 4.0
FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class MemoryPlan:
    """Per-device bytes; ``max_batch`` sequences fit at full length; ``waves`` runs cover the batch."""

    weights_bytes: float
    weights_bytes_by_group: dict[str, float]
    kv_bytes_per_sequence: float
    buffers_bytes: float
    capacity_bytes: float
    usable_bytes: float
    max_batch: int
    batch: int
    waves: int
    devices: int
    attention_dp: int = 1
    """Attention data-parallel ranks: ``max_batch`` is theirs together, the bytes one rank's."""

    @property
    def kv_bytes(self) -> float:
        """KV cache of one wave on the busiest device (its attention rank's share of the resident sequences)."""
        return self.kv_bytes_per_sequence * math.ceil(min(self.batch, self.max_batch) / self.attention_dp)

    @property
    def total_bytes(self) -> float:
        return self.weights_bytes + self.kv_bytes + self.buffers_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "weights_gb": self.weights_bytes / GB,
            "kv_cache_gb": self.kv_bytes / GB,
            "buffers_gb": self.buffers_bytes / GB,
            "total_gb": self.total_bytes / GB,
            "capacity_gb": self.capacity_bytes / GB,
            "usable_gb": self.usable_bytes / GB,
            "per": "device",
            "devices": self.devices,
            "weights_gb_by_group": {g: b / GB for g, b in self.weights_bytes_by_group.items()},
            "kv_cache_gb_per_sequence": self.kv_bytes_per_sequence / GB,
            "max_batch": self.max_batch,
            "waves": self.waves,
            "attention_dp": self.attention_dp,
        }


def weight_bytes_per_device(rs: ResolvedScenario) -> dict[str, float]:
    """Resident weight bytes per device by group (all experts), under TP."""
    tp = rs.sharding.tp
    prec = rs.sharding.weight_precision
    replicated = {"router", "norms"}
    by_group = {
        group: params * prec[group].bytes_per_element / (1 if group in replicated else tp)
        for group, params in rs.model.params_by_group().items()
    }
    placement = rs.sharding
    if "routed_experts" in by_group and (placement.attention_dp > 1 or placement.redundant_experts):
        # experts (plus EPLB's redundant replicas) over all tp x attention-dp devices, not one rank's tp
        moe = rs.model.moe
        slots = (moe.num_experts + placement.redundant_experts) / moe.num_experts if moe else 1.0
        by_group["routed_experts"] *= slots * tp / placement.expert_ranks
    pp = rs.layout.pp
    if pp > 1:
        # the largest pipeline stage: ceil(L/pp) layers plus the heavier of the embeddings (first stage) and
        # the lm_head (last stage)
        share = rs.layout.stage_layers(rs.model.num_layers) / rs.model.num_layers
        ends = ("embeddings", "lm_head")
        heavier = max(ends, key=lambda g: by_group.get(g, 0.0))
        by_group = {g: (b if g == heavier else 0.0) if g in ends else b * share for g, b in by_group.items()}
    if getattr(rs, "speculation", None) is not None:
        # the drafter: DeepSeek's MTP module (one MoE layer + projection) or a whole draft model

        by_group["speculative_draft"] = draft_weight_bytes_per_device(rs)
    tiers = rs.expert_tiers
    if tiers.size and (tiers != DEVICE).any():
        # experts placed in host DRAM or on an SSD take no device memory (an offload cache is sized apart)
        by_group["routed_experts"] *= float((tiers == DEVICE).mean())
    return by_group


def logit_bytes_per_sequence(rs: ResolvedScenario) -> float:
    """fp32 logits of one resident sequence, per device: they grow with the resident batch, so the fit counts
    them per sequence next to its KV cache (a batch larger than memory runs in waves, not out of memory)."""
    return rs.model.vocab_size * _FP32_LOGIT_BYTES / rs.sharding.tp


def activation_bytes(rs: ResolvedScenario, batch: ArrayLike, prompt_len: ArrayLike) -> FloatArray:
    """Activation workspace of the largest prefill chunk (capped at the chunk size), per device."""
    return buffer_bytes(rs, batch, prompt_len) - np.asarray(
        batch, dtype=np.float64
    ) * logit_bytes_per_sequence(rs)


def buffer_bytes(rs: ResolvedScenario, batch: ArrayLike, prompt_len: ArrayLike) -> FloatArray:
    """Activation workspace of the largest prefill chunk plus fp32 logits of ``batch`` sequences, per device
    (vectorised over batch and prompt length)."""
    model = rs.model
    att = model.attention
    b = np.asarray(batch, dtype=np.float64)
    chunk_tokens = np.minimum(
        float(rs.scenario.prefill_chunk_tokens), b * np.asarray(prompt_len, dtype=np.float64)
    )
    widths = [att.num_heads * att.qk_head_dim + 2 * att.num_kv_heads * att.head_dim]
    if model.moe is not None:
        widths.append(2 * model.moe.top_k * model.moe.expert_intermediate_size)
        widths.append(2 * model.moe.shared_intermediate_size)
    widths.append(2 * model.dense_intermediate_size)
    act = chunk_tokens * (2 * model.hidden_size + max(widths)) * ACTIVATION_BYTES
    logits = b * model.vocab_size * _FP32_LOGIT_BYTES
    return np.asarray((act + logits) / rs.sharding.tp, dtype=np.float64)


def kv_bytes_per_sequence_at(rs: ResolvedScenario, length: ArrayLike) -> FloatArray:
    """KV-cache bytes per device of one sequence of ``length`` tokens (window- and MLA-aware), vectorised;
    the per-layer window sum is evaluated once per distinct length."""
    model = rs.model
    lengths = np.asarray(length, dtype=np.int64)
    unique, inverse = np.unique(lengths, return_inverse=True)
    per_unique = np.array(
        [model.kv_elements_per_token(context=int(n)) * int(n) for n in unique], dtype=np.float64
    )
    scale = rs.sharding.kv_precision.bytes_per_element / rs.sharding.kv_divisor(model)
    if rs.layout.pp > 1:
        # a pipeline stage keeps the KV of its own layers only
        scale *= rs.layout.stage_layers(model.num_layers) / model.num_layers
    spec = getattr(rs, "speculation", None)
    if spec is not None and spec.kind == "mtp":
        scale *= (model.num_layers + 1) / model.num_layers  # the MTP module's layer keeps its own KV
    kv = per_unique[inverse].reshape(lengths.shape) * scale
    if spec is not None and spec.kind == "draft":
        assert rs.draft is not None  # resolve sets the draft model for every draft-model speculation
        kv = kv + kv_bytes_per_sequence_at(rs.draft, lengths)
    return np.asarray(kv, dtype=np.float64)


def buffer_bytes_per_device(rs: ResolvedScenario) -> float:
    return float(buffer_bytes(rs, rs.scenario.batch, rs.scenario.prompt_len))


def kv_bytes_per_sequence(rs: ResolvedScenario) -> float:
    sc = rs.scenario
    return float(kv_bytes_per_sequence_at(rs, sc.prompt_len + sc.gen_len))


def usable_bytes(rs: ResolvedScenario) -> float:
    """Device memory the serving engine may use: capacity x gpu_memory_utilization; for an engine with a
    ``kv_cache_free_fraction`` f (capsim.engine.engines), what it holds before its KV cache (the weights and the
    activation workspace of a full prefill chunk, which it allocates first) plus f of the capacity left over."""
    capacity = rs.device.memory_capacity_gb * GB
    free_fraction = rs.kv_cache_free_fraction
    if free_fraction is None:
        return capacity * rs.efficiency.gpu_memory_utilization
    # TensorRT-LLM measures the memory free once the engine and its activation buffers are in place (buffers
    # sized for max_num_tokens, here the prefill chunk) and gives the KV cache the fraction f of it
    held = sum(weight_bytes_per_device(rs).values()) + float(
        activation_bytes(rs, 1, rs.scenario.prefill_chunk_tokens)
    )
    return held + free_fraction * (capacity - held)


def largest_batch(rs: ResolvedScenario, prompt_len: ArrayLike, gen_len: ArrayLike) -> NDArray[np.int64]:
    """THE largest batch: the most sequences of ``prompt_len + gen_len`` tokens resident at once, with the
    buffers of that batch itself (0 if not even one fits). Vectorised over the lengths. predict (its memory
    plan and waves), fit, plan and sweep all take the figure from here, so they cannot disagree.

    Per device, B sequences need ``W + A·min(C, B·P) + B·s`` bytes: weights W, the activation workspace of the
    largest prefill chunk (A bytes per chunk token, the chunk capped at C = prefill_chunk_tokens) and, per
    sequence, its KV cache plus fp32 logits s. The need grows with B, so the answer is the larger of the two
    linear pieces' solutions that lies in its own piece:

    - B·P >= C (full chunks): B1 = floor((U − W − A·C) / s), valid when B1·P >= C;
    - B·P <  C (one short chunk): B2 = min(floor((U − W) / (A·P + s)), ceil(C/P) − 1).

    Under attention data parallelism each of the N attention ranks holds its own sequences (and their KV
    cache, logits and workspace), so the batch is N times one rank's.
    """
    p = np.asarray(prompt_len, dtype=np.float64)
    g = np.asarray(gen_len, dtype=np.float64)
    weights = sum(weight_bytes_per_device(rs).values())
    usable = usable_bytes(rs)
    chunk = float(rs.scenario.prefill_chunk_tokens)
    per_token = float(activation_bytes(rs, 1, 1))  # A: one chunk token's workspace, per device
    per_seq = kv_bytes_per_sequence_at(rs, (p + g).astype(np.int64)) + logit_bytes_per_sequence(rs)
    with np.errstate(divide="ignore", invalid="ignore"):
        full = np.floor((usable - weights - per_token * chunk) / per_seq)
        short = np.minimum(np.floor((usable - weights) / (per_token * p + per_seq)), np.ceil(chunk / p) - 1)
    best = np.where(full * p >= chunk, full, short)
    per_rank = np.clip(np.nan_to_num(best, nan=0.0, posinf=0.0, neginf=0.0), 0, None)
    return np.asarray(per_rank * rs.sharding.attention_dp, dtype=np.int64)


def max_batch_that_fits(
    rs: ResolvedScenario, batch: ArrayLike, prompt_len: ArrayLike, gen_len: ArrayLike
) -> tuple[NDArray[np.int64], FloatArray]:
    """(:func:`largest_batch` at these lengths, bytes needed for one sequence next to ``batch``'s buffers),
    vectorised over the scenario axes."""
    weights = sum(weight_bytes_per_device(rs).values())
    fixed = weights + activation_bytes(rs, batch, prompt_len)
    per_seq = kv_bytes_per_sequence_at(
        rs, np.asarray(prompt_len) + np.asarray(gen_len)
    ) + logit_bytes_per_sequence(rs)
    shape = np.broadcast(np.asarray(batch), np.asarray(prompt_len), np.asarray(gen_len)).shape
    most = np.broadcast_to(largest_batch(rs, prompt_len, gen_len), shape)
    return np.array(most, dtype=np.int64), fixed + per_seq


def _fit_hint(rs: ResolvedScenario, needed_per_device: float, usable: float) -> str:
    tp = rs.sharding.tp * rs.layout.pp
    total = needed_per_device * tp
    min_devices = math.ceil(total / usable) if usable > 0 else 0
    hint = f"try --gpus {min_devices} or more" if min_devices > tp else "try more GPUs"
    if rs.scenario.weight_dtype not in ("int4", "mxfp4"):
        hint += ", or a lower precision (--weight-dtype fp8/int4)"
    return hint


def plan_memory(rs: ResolvedScenario) -> MemoryPlan:
    """Check the scenario fits; work out the largest batch the KV cache holds and the number of waves."""
    device = rs.device
    capacity = device.memory_capacity_gb * GB
    usable = usable_bytes(rs)
    by_group = weight_bytes_per_device(rs)
    weights = sum(by_group.values())
    kv_per_seq = kv_bytes_per_sequence(rs)
    logits_per_seq = logit_bytes_per_sequence(rs)
    per_seq = kv_per_seq + logits_per_seq
    sc = rs.scenario
    max_batch = int(largest_batch(rs, sc.prompt_len, sc.gen_len))
    tp = rs.sharding.tp
    where = f"{tp}x {device.id}" if tp > 1 else device.id
    if max_batch < 1:
        needed = weights + float(activation_bytes(rs, 1, sc.prompt_len)) + per_seq
        raise DoesNotFitError(
            needed * tp,
            usable * tp,
            f"{where} (usable {rs.efficiency.gpu_memory_utilization:.0%} of capacity)",
            _fit_hint(rs, needed, usable),
        )
    adp = rs.sharding.attention_dp
    batch = sc.batch
    waves = math.ceil(batch / max_batch)
    resident = math.ceil(min(batch, max_batch) / adp)  # one wave's sequences on the busiest attention rank
    return MemoryPlan(
        weights_bytes=weights,
        weights_bytes_by_group=by_group,
        kv_bytes_per_sequence=kv_per_seq,
        buffers_bytes=float(activation_bytes(rs, resident, sc.prompt_len)) + logits_per_seq * resident,
        attention_dp=adp,
        capacity_bytes=capacity,
        usable_bytes=usable,
        max_batch=max_batch,
        batch=batch,
        waves=waves,
        devices=rs.layout.devices,
    )


def draft_weight_bytes_per_device(rs: ResolvedScenario) -> float:
    """Device bytes of the drafter's weights: the MTP module (split like the main model's layers) or the whole
    draft model (its own plan)."""
    spec = rs.speculation
    if spec is None:
        return 0.0
    if spec.kind == "draft":
        assert rs.draft is not None  # resolve sets the draft model for every draft-model speculation
        return float(sum(weight_bytes_per_device(rs.draft).values()))
    prec = rs.sharding.weight_precision
    tp, ranks = rs.sharding.tp, rs.sharding.expert_ranks
    divisor = {"attention": tp, "router": 1, "routed_experts": ranks, "shared_experts": tp, "norms": 1}
    return sum(
        params * prec[g].bytes_per_element / divisor[g] for g, params in mtp_module_params(rs.model).items()
    )
