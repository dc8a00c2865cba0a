"""A decoder-only MoE language model in PyTorch, built from a :class:`~capsim.models.spec.ModelSpec`'s real shapes
with random weights: what the profiling harness times.

Imported lazily (it imports torch at module level); use :func:`capsim.profile.harness.build_model`.

What is real: every matrix has the published shape (hidden size, GQA heads and head_dim or DeepSeek MLA ranks,
expert width, expert count, shared experts, dense FFN layers); the router is a real softmax (or, for
DeepSeek-V3-style models, sigmoid with the correction bias and group-limited) top-k over the real hidden states
of the step; tokens are dispatched to the experts they chose, so only the activated experts' weights are read.
What is not: the weights are random (values do not change the time of a dense kernel), the KV cache is filled
with random values rather than by running a prompt, and the expert loop is eager PyTorch (one GEMM per active
expert, like Hugging Face transformers), not a fused MoE kernel.

Data layout follows serving engines (vLLM/SGLang): q, k, v in one fused projection, gate and up projections
of each expert fused, the KV cache preallocated for the longest context, the lm_head applied to the last
position of each sequence only, and greedy sampling (argmax) at the end of each step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function as _scope  # labels each block in profiles; ~µs when not profiling

from capsim.errors import UnsupportedModelError
from capsim.models.parts import FFNKind
from capsim.models.spec import ModelSpec

INIT_STD = 0.02
"""Standard deviation of the random weights (Hugging Face's ``initializer_range`` default)."""
ROPE_THETA = 10000.0


_POOL_ELEMENTS = 1 << 23
"""Random values drawn once per (device, dtype) and copied, at random offsets, into every weight: drawing
fresh random numbers runs at well under 1 GB/s on a small CPU, which would make building a model of several
GB take minutes; copying windows of a pool runs at memory speed. Each tensor still gets distinct values."""
_pools: dict[tuple[str, Any], torch.Tensor] = {}


def _pool(device: Any, dtype: Any) -> torch.Tensor:
    key = (str(device), dtype)
    if key not in _pools:
        gen = torch.Generator(device="cpu").manual_seed(0x5EED)
        bound = math.sqrt(3.0)  # uniform on [-√3, √3] has unit standard deviation
        values = torch.empty(2 * _POOL_ELEMENTS, dtype=torch.float32).uniform_(-bound, bound, generator=gen)
        _pools[key] = values.to(device=device, dtype=dtype)
    return _pools[key]


def _uniform_(t: torch.Tensor, std: float = INIT_STD) -> torch.Tensor:
    """Fill ``t`` with random values of standard deviation ``std`` (windows of the shared pool, drawn at
    offsets from torch's global generator, so ``torch.manual_seed`` makes a model reproducible)."""
    pool = _pool(t.device, t.dtype)
    flat = t.view(-1)
    with torch.no_grad():
        for begin in range(0, flat.numel(), _POOL_ELEMENTS):
            n = min(_POOL_ELEMENTS, flat.numel() - begin)
            offset = int(torch.randint(0, _POOL_ELEMENTS, (1,)).item())
            flat[begin : begin + n].copy_(pool[offset : offset + n])
        if std != 1.0:
            t.mul_(std)
    return t


def _param(shape: tuple[int, ...], device: Any, dtype: Any, *, std: float = INIT_STD) -> nn.Parameter:
    return nn.Parameter(_uniform_(torch.empty(shape, device=device, dtype=dtype), std), requires_grad=False)


def _ones(n: int, device: Any, dtype: Any) -> nn.Parameter:
    return nn.Parameter(torch.ones(n, device=device, dtype=dtype), requires_grad=False)


# ------------------------------------------------------------------------------------------- routing record
@dataclass
class RoutingRecorder:
    """Collects the router's choice per MoE layer during the steps run while ``active``."""

    active: bool = False
    ids: list[torch.Tensor] = field(default_factory=list)
    gates: list[torch.Tensor] = field(default_factory=list)

    def record(self, ids: torch.Tensor, gates: torch.Tensor) -> None:
        if self.active:
            self.ids.append(ids.detach().to("cpu", copy=True))
            self.gates.append(gates.detach().float().to("cpu", copy=True))

    def clear(self) -> None:
        self.ids.clear()
        self.gates.clear()

    def stacked(self) -> tuple[np.ndarray, np.ndarray]:
        """(topk_ids, gate_weights) of the recorded step, each of shape (moe_layers, tokens, k)."""
        ids = torch.stack(self.ids).numpy().astype(np.int64)
        gates = torch.stack(self.gates).numpy().astype(np.float32)
        return ids, gates


# ------------------------------------------------------------------------------------------- building blocks
class RMSNorm(nn.Module):
    def __init__(self, width: int, device: Any, dtype: Any, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = _ones(width, device, dtype)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


class Rotary:
    """Rotary position embedding tables for positions [0, max_positions) over ``dim`` channels."""

    def __init__(self, dim: int, max_positions: int, device: Any, dtype: Any) -> None:
        inv = 1.0 / (ROPE_THETA ** (torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim))
        angles = torch.outer(torch.arange(max_positions, device=device, dtype=torch.float32), inv)
        self.cos = torch.cat([angles.cos(), angles.cos()], dim=-1).to(dtype)
        self.sin = torch.cat([angles.sin(), angles.sin()], dim=-1).to(dtype)

    def apply(self, x: torch.Tensor, start: int, length: int) -> torch.Tensor:
        """Rotate ``x`` (..., length, dim) for positions start..start+length-1."""
        cos = self.cos[start : start + length]
        sin = self.sin[start : start + length]
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rotated * sin


class GQAAttention(nn.Module):
    """Grouped-query attention (MHA when H_kv = H) with a preallocated KV cache (B, H_kv, max_ctx, d_h)."""

    def __init__(
        self, spec: ModelSpec, window: int | None, max_positions: int, device: Any, dtype: Any
    ) -> None:
        super().__init__()
        att = spec.attention
        if att.sinks:
            raise UnsupportedModelError(
                f"{spec.id}: attention sinks (GPT-OSS) are not implemented in the profiling harness; "
                "profile a model without them (olmoe-1b-7b, qwen3-30b-a3b, qwen1.5-moe-a2.7b, deepseek-v2-lite)"
            )
        if window is not None and spec.window_kind != "sliding":
            raise UnsupportedModelError(
                f"{spec.id}: {spec.window_kind} attention windows are not implemented in the profiling harness "
                "(sliding windows are); profile a model without them"
            )
        d = spec.hidden_size
        self.h, self.h_kv, self.d_h = att.num_heads, att.num_kv_heads, att.head_dim
        self.q_out, self.kv_out = self.h * self.d_h, self.h_kv * self.d_h
        self.w_qkv = _param((self.q_out + 2 * self.kv_out, d), device, dtype)
        self.b_qkv = _param((self.q_out + 2 * self.kv_out,), device, dtype) if att.qkv_bias else None
        self.w_o = _param((d, self.q_out), device, dtype)
        self.b_o = _param((d,), device, dtype) if att.o_bias else None
        self.q_norm: RMSNorm | None = None
        self.k_norm: RMSNorm | None = None
        if att.qk_norm:
            # OLMoE normalises the full q/k width, Qwen3 each head (qk_norm_width says which)
            per_head = att.qk_norm_width == self.d_h
            self.q_norm = RMSNorm(self.d_h if per_head else self.q_out, device, dtype)
            self.k_norm = RMSNorm(self.d_h if per_head else self.kv_out, device, dtype)
            self.qk_per_head = per_head
        self.window = window
        self.rotary = Rotary(self.d_h, max_positions, device, dtype)
        self.k_cache: torch.Tensor | None = None
        self.v_cache: torch.Tensor | None = None

    def allocate_cache(self, batch: int, max_context: int) -> None:
        shape = (batch, self.h_kv, max_context, self.d_h)
        p = self.w_qkv
        self.k_cache = _uniform_(torch.empty(shape, device=p.device, dtype=p.dtype), 1.0)
        self.v_cache = _uniform_(torch.empty(shape, device=p.device, dtype=p.dtype), 1.0)

    def _qkv(self, x: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, _ = x.shape
        with _scope("attn_proj"):
            qkv = F.linear(x, self.w_qkv, self.b_qkv)
        q, k, v = torch.split(qkv, [self.q_out, self.kv_out, self.kv_out], dim=-1)
        if self.q_norm is not None and self.k_norm is not None and not self.qk_per_head:
            q, k = self.q_norm(q), self.k_norm(k)
        q = q.view(b, t, self.h, self.d_h).transpose(1, 2)
        k = k.view(b, t, self.h_kv, self.d_h).transpose(1, 2)
        v = v.view(b, t, self.h_kv, self.d_h).transpose(1, 2)
        if self.q_norm is not None and self.k_norm is not None and self.qk_per_head:
            q, k = self.q_norm(q), self.k_norm(k)
        return self.rotary.apply(q, start, t), self.rotary.apply(k, start, t), v

    def forward(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Attend the ``t`` tokens of ``x`` (B, t, d) at positions start..start+t-1 to the cache and themselves."""
        b, t, _ = x.shape
        q, k, v = self._qkv(x, start)
        with _scope("attn_core"):
            o = self._attend(q, k, v, b, t, start, x.device)
        with _scope("attn_proj"):
            return F.linear(o, self.w_o, self.b_o)

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, b: int, t: int, start: int, device: Any
    ) -> torch.Tensor:
        assert self.k_cache is not None and self.v_cache is not None, "allocate_cache() first"
        end = start + t
        # a step of b sequences uses the first b slots of the cache preallocated for the largest batch
        k_cache, v_cache = self.k_cache[:b], self.v_cache[:b]
        k_cache[:, :, start:end] = k
        v_cache[:, :, start:end] = v
        # the earliest query (position ``start``) sees keys back to start − window + 1
        lo = 0 if self.window is None else max(0, start - self.window + 1)
        keys, values = k_cache[:, :, lo:end], v_cache[:, :, lo:end]
        mask = _causal_mask(t, end - lo, self.window, device) if t > 1 else None
        o = F.scaled_dot_product_attention(
            q, keys, values, attn_mask=mask, is_causal=False, enable_gqa=self.h != self.h_kv
        )
        return o.transpose(1, 2).reshape(b, t, self.q_out)


def _causal_mask(queries: int, keys: int, window: int | None, device: Any) -> torch.Tensor:
    """Boolean (queries, keys) mask: query i (the last ``queries`` of ``keys`` positions) sees keys ≤ itself,
    and at most ``window`` of them."""
    qpos = torch.arange(keys - queries, keys, device=device)[:, None]
    kpos = torch.arange(keys, device=device)[None, :]
    allowed = kpos <= qpos
    if window is not None:
        allowed &= kpos > qpos - window
    return allowed


class MLAAttention(nn.Module):
    """DeepSeek-V2/V3 multi-head latent attention (arXiv:2405.04434 §2.1).

    The cache holds, per token, the compressed latent c_KV (kv_lora_rank) and the shared RoPE key
    (qk_rope_head_dim), one (B, 1, max_ctx, r_kv + d_rope) tensor. Decode uses the weight-absorbed form that
    serving engines use (scores and values in the latent space, so the cache is read as-is); prefill
    decompresses K and V and runs ordinary causal attention.
    """

    def __init__(self, spec: ModelSpec, max_positions: int, device: Any, dtype: Any) -> None:
        super().__init__()
        att = spec.attention
        d = spec.hidden_size
        self.h = att.num_heads
        self.nope, self.rope, self.d_v = att.qk_nope_head_dim, att.qk_rope_head_dim, att.v_head_dim
        self.r_kv = att.kv_lora_rank
        q_width = self.h * (self.nope + self.rope)
        self.q_lora = att.q_lora_rank
        if self.q_lora:
            self.w_dq = _param((self.q_lora, d), device, dtype)
            self.q_norm = RMSNorm(self.q_lora, device, dtype)
            self.w_uq = _param((q_width, self.q_lora), device, dtype)
        else:
            self.w_q = _param((q_width, d), device, dtype)
        self.w_dkv = _param((self.r_kv + self.rope, d), device, dtype)
        self.kv_norm = RMSNorm(self.r_kv, device, dtype)
        self.w_ukv = _param((self.h * (self.nope + self.d_v), self.r_kv), device, dtype)
        self.w_o = _param((d, self.h * self.d_v), device, dtype)
        self.scale = 1.0 / math.sqrt(self.nope + self.rope)
        self.rotary = Rotary(self.rope, max_positions, device, dtype)
        self.cache: torch.Tensor | None = None

    def allocate_cache(self, batch: int, max_context: int) -> None:
        p = self.w_dkv
        shape = (batch, 1, max_context, self.r_kv + self.rope)
        self.cache = _uniform_(torch.empty(shape, device=p.device, dtype=p.dtype), 1.0)

    def _queries(self, x: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, _ = x.shape
        q = F.linear(self.q_norm(F.linear(x, self.w_dq)), self.w_uq) if self.q_lora else F.linear(x, self.w_q)
        q = q.view(b, t, self.h, self.nope + self.rope).transpose(1, 2)
        q_nope, q_rope = torch.split(q, [self.nope, self.rope], dim=-1)
        return q_nope, self.rotary.apply(q_rope, start, t)

    def forward(self, x: torch.Tensor, start: int) -> torch.Tensor:
        assert self.cache is not None, "allocate_cache() first"
        b, t, _ = x.shape
        end = start + t
        q_nope, q_rope = self._queries(x, start)
        latent, k_rope = torch.split(F.linear(x, self.w_dkv), [self.r_kv, self.rope], dim=-1)
        latent = self.kv_norm(latent)
        k_rope = self.rotary.apply(k_rope, start, t)
        cache = self.cache[:b]
        cache[:, 0, start:end] = torch.cat([latent, k_rope], dim=-1)
        w_ukv = self.w_ukv.view(self.h, self.nope + self.d_v, self.r_kv)
        w_uk, w_uv = torch.split(w_ukv, [self.nope, self.d_v], dim=1)
        if t == 1:
            # absorbed: q_lat = q_nope · W_UK per head; attend over [c_KV | k_rope]; values are c_KV
            q_lat = torch.einsum("bhtn,hnc->bhtc", q_nope, w_uk)
            query = torch.cat([q_lat, q_rope], dim=-1)
            keys = cache[:, :, :end]
            values = keys[..., : self.r_kv]
            o_lat = F.scaled_dot_product_attention(query, keys, values, scale=self.scale, enable_gqa=True)
            o = torch.einsum("bhtc,hvc->bhtv", o_lat, w_uv)
        else:
            cached = cache[:, 0, :end]
            kv = F.linear(cached[..., : self.r_kv], self.w_ukv).view(b, end, self.h, self.nope + self.d_v)
            k_nope, v = torch.split(kv.transpose(1, 2), [self.nope, self.d_v], dim=-1)
            k_r = cached[..., self.r_kv :].unsqueeze(1).expand(b, self.h, end, self.rope)
            keys = torch.cat([k_nope, k_r], dim=-1)
            query = torch.cat([q_nope, q_rope], dim=-1)
            mask = _causal_mask(t, end, None, x.device)
            o = F.scaled_dot_product_attention(query, keys, v, attn_mask=mask, scale=self.scale)
        o = o.transpose(1, 2).reshape(b, t, self.h * self.d_v)
        return F.linear(o, self.w_o)


class GatedFFN(nn.Module):
    """SwiGLU FFN (gate and up fused) or, with ``gated=False``, up -> GELU -> down."""

    def __init__(self, d: int, width: int, gated: bool, device: Any, dtype: Any) -> None:
        super().__init__()
        self.gated = gated
        self.w_in = _param(((2 if gated else 1) * width, d), device, dtype)
        self.w_out = _param((d, width), device, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.linear(x, self.w_in)
        if self.gated:
            g, u = h.chunk(2, dim=-1)
            h = F.silu(g) * u
        else:
            h = F.gelu(h)
        return F.linear(h, self.w_out)


class MoEBlock(nn.Module):
    """Router + routed experts (+ shared experts). Tokens are sorted by expert and each activated expert runs
    one fused gate/up GEMM and one down GEMM over its tokens; experts no token chose are never touched."""

    def __init__(self, spec: ModelSpec, recorder: RoutingRecorder, device: Any, dtype: Any) -> None:
        super().__init__()
        moe = spec.moe
        assert moe is not None  # internal: only built for MoE layers of a MoE model
        d, f = spec.hidden_size, moe.expert_intermediate_size
        self.e, self.k = moe.num_experts, moe.top_k
        self.gated = spec.gated_ffn
        n_in = (2 if self.gated else 1) * f
        self.w_router = _param((self.e, d), device, dtype)
        self.b_router = _param((self.e,), device, dtype) if moe.router_bias else None
        self.correction = (
            nn.Parameter(torch.zeros(self.e, device=device, dtype=torch.float32), requires_grad=False)
            if moe.score_correction_bias
            else None
        )
        self.n_group, self.topk_group = moe.n_group, moe.topk_group
        self.w_in = _param((self.e, n_in, d), device, dtype)
        self.w_out = _param((self.e, d, f), device, dtype)
        self.b_in = _param((self.e, n_in), device, dtype) if moe.expert_bias else None
        self.b_out = _param((self.e, d), device, dtype) if moe.expert_bias else None
        self.shared = (
            GatedFFN(d, moe.shared_intermediate_size, spec.gated_ffn, device, dtype)
            if moe.shared_intermediate_size
            else None
        )
        self.w_shared_gate = _param((1, d), device, dtype) if moe.shared_expert_gate else None
        self.recorder = recorder

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(gate weights, expert ids), each (T, k): softmax top-k, or sigmoid + correction bias with
        group-limited selection for DeepSeek-V3-style routers (arXiv:2412.19437 §2.1.2)."""
        logits = F.linear(x, self.w_router, self.b_router).float()
        if self.correction is None:
            return logits.softmax(dim=-1).topk(self.k, dim=-1)
        scores = logits.sigmoid()
        biased = scores + self.correction
        if self.n_group > 1:
            grouped = biased.view(-1, self.n_group, self.e // self.n_group)
            group_score = grouped.topk(2, dim=-1).values.sum(-1)
            keep = group_score.topk(self.topk_group, dim=-1).indices
            group_mask = torch.zeros_like(group_score).scatter_(1, keep, 1.0)
            biased = biased.masked_fill(~group_mask.bool().repeat_interleave(self.e // self.n_group, 1), -1e9)
        ids = biased.topk(self.k, dim=-1).indices
        gates = scores.gather(1, ids)
        return gates / gates.sum(dim=-1, keepdim=True), ids

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        with _scope("router"):
            gates, ids = self.route(x)
        self.recorder.record(ids, gates)
        with _scope("routed_experts"):
            y = self._experts(x, gates, ids)
        if self.shared is not None:
            with _scope("shared_experts"):
                s = self.shared(x)
                if self.w_shared_gate is not None:
                    s = torch.sigmoid(F.linear(x, self.w_shared_gate)) * s
            y = y + s
        return y.view(shape)

    def _experts(self, x: torch.Tensor, gates: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.flatten()
        order = flat.argsort(stable=True)
        counts = torch.bincount(flat, minlength=self.e).tolist()
        token_of = order // self.k
        x_sorted = x[token_of]
        outs = []
        begin = 0
        for expert, n in enumerate(counts):
            if n == 0:
                continue
            h = x_sorted[begin : begin + n]
            h = F.linear(h, self.w_in[expert], None if self.b_in is None else self.b_in[expert])
            if self.gated:
                g, u = h.chunk(2, dim=-1)
                h = F.silu(g) * u
            else:
                h = F.gelu(h)
            outs.append(F.linear(h, self.w_out[expert], None if self.b_out is None else self.b_out[expert]))
            begin += n
        weighted = torch.cat(outs) * gates.flatten()[order].to(x.dtype)[:, None]
        return torch.zeros_like(x).index_add_(0, token_of, weighted)


class DecoderLayer(nn.Module):
    def __init__(
        self,
        spec: ModelSpec,
        index: int,
        max_positions: int,
        recorder: RoutingRecorder,
        device: Any,
        dtype: Any,
    ) -> None:
        super().__init__()
        d = spec.hidden_size
        self.norm_attn = RMSNorm(d, device, dtype)
        self.norm_ffn = RMSNorm(d, device, dtype)
        self.attn: GQAAttention | MLAAttention
        if spec.attention.kind == "mla":
            self.attn = MLAAttention(spec, max_positions, device, dtype)
        else:
            self.attn = GQAAttention(spec, spec.window(index), max_positions, device, dtype)
        self.ffn: MoEBlock | GatedFFN
        if spec.ffn_kinds[index] is FFNKind.MOE:
            self.ffn = MoEBlock(spec, recorder, device, dtype)
        else:
            self.ffn = GatedFFN(d, spec.dense_intermediate_size, spec.gated_ffn, device, dtype)

    def forward(self, x: torch.Tensor, start: int) -> torch.Tensor:
        if isinstance(self.attn, MLAAttention):
            with _scope("attention"):
                a = self.attn(self.norm_attn(x), start)
        else:
            a = self.attn(self.norm_attn(x), start)
        h = x + a
        if isinstance(self.ffn, GatedFFN):
            with _scope("dense_ffn"):
                out: torch.Tensor = h + self.ffn(self.norm_ffn(h))
                return out
        out = h + self.ffn(self.norm_ffn(h))
        return out


class MoEDecoder(nn.Module):
    """Embedding, the decoder layers of ``spec`` (all of them: truncate the spec to scale), final norm,
    lm_head on the last position of each sequence, greedy sampling."""

    def __init__(self, spec: ModelSpec, max_positions: int, device: Any, dtype: Any) -> None:
        super().__init__()
        d = spec.hidden_size
        self.spec = spec
        self.recorder = RoutingRecorder()
        self.embed = _param((spec.vocab_size, d), device, dtype)
        self.layers = nn.ModuleList(
            DecoderLayer(spec, i, max_positions, self.recorder, device, dtype) for i in range(spec.num_layers)
        )
        self.norm = RMSNorm(d, device, dtype)
        self.lm_head = self.embed if spec.tie_word_embeddings else _param((spec.vocab_size, d), device, dtype)
        self.max_positions = max_positions
        self.cache_batch = 0

    def allocate_cache(self, batch: int) -> None:
        """Preallocate the KV cache of every layer for ``batch`` sequences of ``max_positions`` tokens."""
        for layer in self.layers:
            assert isinstance(layer, DecoderLayer)  # internal: the ModuleList holds only decoder layers
            layer.attn.allocate_cache(batch, self.max_positions)
        self.cache_batch = batch

    @torch.inference_mode()
    def logits(self, token_ids: torch.Tensor, start: int) -> torch.Tensor:
        """One forward pass of ``token_ids`` (B, t) at positions start..start+t-1, writing the KV cache;
        returns the logits of the last position of each sequence (B, vocab)."""
        x = F.embedding(token_ids, self.embed)
        for layer in self.layers:
            x = layer(x, start)
        last = self.norm(x[:, -1])
        with _scope("lm_head"):
            return F.linear(last, self.lm_head)

    def step(self, token_ids: torch.Tensor, start: int) -> torch.Tensor:
        """A full step: :meth:`logits` then greedy sampling; returns the next token of each sequence (B,).
        Prefill: start = 0, t = prompt length. Decode: t = 1, start = context − 1."""
        return self.logits(token_ids, start).argmax(dim=-1)
