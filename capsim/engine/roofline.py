"""Per-layer FLOPs and bytes -> time on the devices, roofline-style.

For each operation of each layer the engine evaluates the symbolic formulas of :mod:`capsim.engine.formulas`
(vectorised over steps or chunks), splits them over the tensor-parallel ranks, and charges

    t_op = max(FLOPs_dev / (F_peak · η_compute), bytes_dev / (B_peak · η_memory · g(M)))

where η are the achievable fractions of peak from the hardware database (shown in every output) and g(M) is the
device's optional calibrated ``gemm_tokens_efficiency`` curve, applied to weight GEMMs only (attention
projections, router, routed and shared experts, dense FFN, lm_head): M is the number of token rows multiplied
by one weight matrix (dense ops: the pass's tokens T, the lm_head: the sequences that emit a token, routed
experts: T·k/A per MoE layer, the mean tokens per activated expert). g is interpolated linearly in log M between
the table's points and clamped outside them; without a table g = 1. It captures BLAS kernels that stream a
weight for a few rows far slower than for one (CPUs pack the weight for M > 1). A step adds the
tensor-parallel all-reduces (two per layer, ring model on the node's links) and fixed per-step and per-layer
overheads (launch, scheduling, sampling), which is what makes small batches slower than a bare roofline says.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from capsim.engine import formulas_eval as formulas
from capsim.engine.reports import PassExtras
from capsim.models.parts import FFNKind
from capsim.models.precision import Precision, compute_key
from capsim.models.spec import ModelSpec

FloatArray = NDArray[np.float64]

RESOURCES = ("compute", "memory", "interconnect", "overhead")
ACTIVATION_BYTES = 2.0
"""Activations are bf16/fp16 in every engine capsim models."""


@dataclass(frozen=True)
class DeviceRates:
    """What one device can sustain, after efficiency factors. All SI (FLOP/s, bytes/s, seconds)."""

    peak_flops: dict[str, float]
    """Dense peak FLOP/s by precision key (bf16, fp8, ...), before efficiency."""
    memory_bandwidth: float
    compute_fraction: float
    memory_fraction: float
    step_overhead_s: float
    per_layer_overhead_s: float
    link_bandwidth: float
    """Per-direction bytes/s between two tensor-parallel ranks (0 for a single device)."""
    allreduce_hop_latency_s: float
    allreduce_base_latency_s: float = 0.0
    gemm_m_curve: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    """Optional calibration ``(tokens M, fraction)``, M ascending: the fraction of ``bytes_rate`` a weight GEMM
    over M token rows sustains (``gemm_tokens_efficiency``). None = 1 at every M."""
    kernel_latency_s: float = 0.0
    """Fixed device time per kernel of a forward pass (``kernel_latency_s``), charged for every kernel the
    floor of each weight-GEMM op, whose block of :data:`BLOCK_KERNELS` kernels takes at least that each: a decode
step at batch 1 is mostly these."""
    eager_moe_host_s: float | None = None
    """Eager execution (capsim.engine.engines): host dispatch per MoE layer besides its experts; a pass then
    takes max(host dispatch, device time). None = CUDA/HIP graphs (no host term beyond the step overhead)."""
    eager_expert_host_s: float = 0.0
    """Eager execution: host dispatch per activated expert per MoE layer."""
    per_sequence_s: float = 0.0
    """Engine time per sequence that emits a token in a pass (capsim.engine.engines ``per_sequence_s``): charged
    as overhead, so a step grows with the requests in flight even where the device's work does not."""
    gemm_overlap: float | None = None
    """Optional exponent p of the weight GEMMs' soft roofline, t = (t_c^p + t_m^p)^(1/p)
    (``gemm_overlap_exponent``): near the ridge a real kernel keeps neither the tensor cores nor the memory
    system busy all the time, so its time exceeds max(t_c, t_m). None = max (p -> infinity)."""

    def gemm_time(self, t_compute: FloatArray, t_memory: FloatArray) -> FloatArray:
        """Time of a weight GEMM from its compute and memory times: max, or the p-norm with :attr:`gemm_overlap`.

        Computed as m·(1 + (n/m)^p)^(1/p) with m = max, n = min, so large p cannot overflow."""
        hi = np.maximum(t_compute, t_memory)
        if self.gemm_overlap is None:
            return hi
        lo = np.minimum(t_compute, t_memory)
        ratio = np.divide(lo, hi, out=np.zeros_like(hi), where=hi > 0)
        return hi * (1.0 + ratio**self.gemm_overlap) ** (1.0 / self.gemm_overlap)

    def gemm_factor(self, rows: FloatArray | float) -> FloatArray | float:
        """g(M): multiplier on the memory bandwidth of weight GEMMs with ``rows`` = M token rows per weight.

        g(M) = interpolation of the curve linear in ln M between its points, clamped to the first and last
        fraction outside them (M < 1 counts as 1); exactly 1.0 (a float) without a curve."""
        if self.gemm_m_curve is None:
            return 1.0
        ms, fractions = self.gemm_m_curve
        factor: FloatArray | float = np.interp(
            np.log(np.maximum(rows, 1.0)), np.log(np.asarray(ms)), np.asarray(fractions)
        )
        return factor

    def flops_rate(self, key: str) -> float:
        return self.peak_flops[key] * self.compute_fraction

    @property
    def bytes_rate(self) -> float:
        return self.memory_bandwidth * self.memory_fraction


@dataclass(frozen=True)
class Sharding:
    """How the model is laid out: weight precision per group and the tensor-parallel degree."""

    tp: int
    weight_precision: dict[str, Precision]
    kv_precision: Precision
    attention_dp: int = 1
    """Attention data-parallel ranks (capsim.engine.parallel): each holds a ``tp``-way copy of the attention, dense
    and shared weights and its own sequences; the routed experts are split over all ``tp x attention_dp``."""
    redundant_experts: int = 0
    """Extra expert replicas (EPLB) held next to the E experts, spread over the expert ranks."""

    @property
    def expert_ranks(self) -> int:
        """Devices the routed experts are split over (whole experts under EP, slices under TP)."""
        return self.tp * self.attention_dp

    def kv_divisor(self, model: ModelSpec) -> int:
        """Ranks the KV cache is split over: KV heads are sharded up to H_kv ranks (then replicated);
        MLA's single latent is replicated on every rank (vLLM/SGLang behaviour)."""
        if model.attention.kind == "mla":
            return 1
        return max(1, min(self.tp, model.attention.num_kv_heads))


@dataclass
class PassTimes:
    """Cost of a sequence of forward passes (decode steps or prefill chunks), one entry per pass.

    ``time_by_op`` and ``flops``/``bytes`` are per pass (arrays over passes); ``*_replica`` are for the whole
    model replica (used by the MBU/MFU family of metrics), ``time`` is wall time on the devices.
    """

    time: FloatArray
    time_by_op: dict[str, FloatArray]
    time_by_resource: dict[str, FloatArray]
    weight_bytes_sparse: FloatArray
    weight_bytes_dense: FloatArray
    kv_read_bytes: FloatArray
    flops_sparse: FloatArray
    flops_dense: FloatArray
    activated_experts: FloatArray
    """Expected distinct experts, shape (rows, passes); row ``activated_rows[l]`` is MoE layer l's."""
    tokens: FloatArray
    metric_peak_flops: float
    activated_rows: NDArray[np.int64] | None = None
    extra: PassExtras = field(default_factory=lambda: PassExtras())
    op_times: list[tuple[str, FloatArray, FloatArray]] = field(default_factory=list)
    """(op, t_compute, t_memory) of every roofline charge, in order (arrays over passes); the op's time is
    their max. Sweeps use them to find where an op's binding resource flips along the context."""

    def activated_by_layer(self) -> FloatArray:
        """Expected distinct experts per MoE layer and pass, shape (num_moe_layers, passes)."""
        if self.activated_rows is None:
            return self.activated_experts
        return self.activated_experts[self.activated_rows]


BLOCK_KERNELS: dict[str, dict[str, int]] = {
    "attn_proj": {"gqa": 6, "mla": 10},
    "router": {"gqa": 2, "mla": 2},
    "routed_experts": {"gqa": 5, "mla": 5},
    "shared_experts": {"gqa": 3, "mla": 3},
    "dense_ffn": {"gqa": 3, "mla": 3},
    "lm_head": {"gqa": 1, "mla": 1},
}
"""Kernels per layer (lm_head: per pass) of the block each weight-GEMM op stands for, by attention kind: the
op takes at least that many ``kernel_latency_s`` (a latency floor; a large op is unaffected).

- attn_proj, the attention block with its two RMSNorms (residual add fused: vLLM fused_add_rms_norm) but
  without the attention kernel itself (charged as attn_core). GQA: 2 norms + qkv GEMM, rotary embedding,
  KV-cache write, o GEMM (vLLM ``vllm/model_executor/models/llama.py``: qkv_proj, rotary_emb,
  reshape_and_cache, attention, o_proj) = 6. MLA: 2 norms + 8 of the 9 kernels of TensorRT-LLM's DeepSeek-R1
  decode layer (modules 1-8 of the 'Everything in One Diagram' list in docs/source/blogs/tech_blog/blog1_
  Pushing_Latency_Boundaries_Optimizing_DeepSeek-R1_Performance_on_NVIDIA_B200_GPUs.md, commit 01c4ece:
  Fuse_A GEMM, two RMSNorms, UQ_QR GEMM, UK batched GEMM, KV-cache concat + RoPE, [attention], UV batched GEMM,
  WO GEMM) = 10.
- router: router GEMM and top-k; routed_experts: token alignment, grouped GEMM, activation, grouped GEMM,
  reduction of the k outputs (vLLM ``fused_moe.py``: gate, topk_softmax | moe_align_block_size,
  fused_moe_kernel, silu_and_mul, fused_moe_kernel, moe_sum).
- shared_experts, dense_ffn: gate/up GEMM, activation, down GEMM (vLLM LlamaMLP); lm_head: one GEMM.

The attention kernel (attn_core) keeps its plain roofline, affine in the context, and no floor: decode sums over
the context stay exact; tensor-parallel all-reduces have their own latency model."""


def kernels_per_pass(model: ModelSpec) -> float:
    """Kernels of one forward pass as :data:`BLOCK_KERNELS` counts them:

        K = L·attn + L_moe·(router + routed + shared if any) + L_dense·FFN + 1 (lm_head)

    e.g. DeepSeek-V3 (61 MLA layers, 58 MoE layers with a shared expert, 3 dense): 61·10 + 58·10 + 3·3 + 1 =
    1,200; Mixtral-8x7B (32 GQA layers, all MoE, no shared expert): 32·6 + 32·7 + 1 = 417."""
    kind = model.attention.kind
    k = {op: kinds[kind] for op, kinds in BLOCK_KERNELS.items()}
    moe = (
        k["router"] + k["routed_experts"] + (k["shared_experts"] if model.shared_params_per_moe_layer else 0)
    )
    dense = k["dense_ffn"] if model.dense_ffn_params_per_layer else 0
    return float(
        model.num_layers * k["attn_proj"]
        + model.num_moe_layers * moe
        + model.num_dense_layers * dense
        + k["lm_head"]
    )


def layer_tables(model: ModelSpec) -> tuple[NDArray[np.bool_], FloatArray]:
    is_moe = np.array([k is FFNKind.MOE for k in model.ffn_kinds], dtype=bool)
    windows = np.array(
        [np.inf if (w := model.window(i)) is None else float(w) for i in range(model.num_layers)]
    )
    return is_moe, windows


def causal_pairs(length: FloatArray | float, window: FloatArray | float) -> FloatArray:
    """Query-key pairs of causal attention over ``length`` tokens with each query seeing at most ``window``
    keys (itself included): Σ_{i=1..P} min(i, w) = P(P+1)/2 if P ≤ w, else w(w+1)/2 + (P−w)·w."""
    p = np.asarray(length, dtype=np.float64)
    w = np.minimum(np.asarray(window, dtype=np.float64), p)
    return w * (w + 1.0) / 2.0 + (p - w) * w


def attention_dims(model: ModelSpec, phase: str) -> tuple[float, float]:
    """(d_qk, d_v) of the score and weighted-sum products.

    MLA decode uses the weight-absorbed form (DeepSeek-V2 §2.1.2; vLLM/SGLang MLA decode kernels): scores and
    values live in the latent space, d_qk = kv_lora_rank + rope dim, d_v = kv_lora_rank. MLA prefill
    decompresses K and V and runs ordinary attention with qk_nope+qk_rope and v_head_dim.
    """
    att = model.attention
    if att.kind == "mla" and phase == "decode":
        return float(att.kv_lora_rank + att.qk_rope_head_dim), float(att.kv_lora_rank)
    return float(att.qk_head_dim), float(att.value_head_dim)


def projection_widths(model: ModelSpec) -> tuple[float, float]:
    """(w_qkv, w_o): output width of the fused q/k/v projection and input width of the output projection.

    GQA/MHA: w_qkv = H·d_qk + 2·H_kv·d_head. MLA: the queries plus the compressed latent and the shared rope
    key, w_qkv = H·d_qk + kv_lora_rank + d_rope (K and V are decompressed from the latent). w_o = H·d_v.
    """
    att = model.attention
    if att.kind == "mla":
        w_qkv = float(att.num_heads * att.qk_head_dim + att.kv_lora_rank + att.qk_rope_head_dim)
    else:
        w_qkv = float(att.num_heads * att.qk_head_dim + 2 * att.num_kv_heads * att.head_dim)
    return w_qkv, float(att.num_heads * att.value_head_dim)


def pass_times(
    model: ModelSpec,
    sharding: Sharding,
    rates: DeviceRates,
    *,
    phase: str,
    tokens: FloatArray,
    sequences: FloatArray,
    context: FloatArray,
    pairs_per_layer: FloatArray,
    kv_read_tokens_per_layer: FloatArray,
    activated: FloatArray,
    lm_head_sequences: FloatArray,
    layer_weights: FloatArray | None = None,
    moe_layer_weights: FloatArray | None = None,
    expert_tokens: FloatArray | None = None,
) -> PassTimes:
    """Cost of ``n`` forward passes at once (arrays of shape (n,); per-layer arrays (num_layers, n)).

    ``activated`` is the expected distinct experts per MoE layer, shape (num_moe_layers, n).
    Layers that are identical may be folded: ``layer_weights`` (shape (rows,)) says how many decoder layers
    each row of the per-layer arrays stands for, ``moe_layer_weights`` likewise for the rows of
    ``activated`` (default: one layer per row). Folding changes no result, only the work.

    Under attention data parallelism (``sharding.attention_dp`` = N > 1) ``tokens``, ``sequences`` and the
    per-layer arrays are one attention rank's (its share of the sequences), and ``expert_tokens`` the tokens
    all N ranks send to the MoE layers together (default ``tokens``): times are one rank's, with the routed
    experts split over tp x N devices; the replica totals of bytes, FLOPs and tokens (for the MBU family)
    count N copies of the attention-side weights and expert_tokens/tokens times its per-token work.
    """
    att = model.attention
    d = float(model.hidden_size)
    n_layers = model.num_layers
    tp = sharding.tp
    wp = sharding.weight_precision
    available = frozenset(rates.peak_flops)

    def rate_for(group: str) -> float:
        return rates.flops_rate(compute_key(wp[group], available))

    attn_rate = rates.flops_rate(compute_key(wp["attention"], available))
    # Attention core runs in the activation precision (bf16) whatever the weights are.
    core_rate = rates.flops_rate(compute_key(Precision("bf16", 16, "bf16"), available))
    bytes_rate = rates.bytes_rate
    kv_div = sharding.kv_divisor(model)
    d_qk, d_v = attention_dims(model, phase)
    w_qkv, w_o = projection_widths(model)
    moe = model.moe
    n_moe = model.num_moe_layers
    n_dense = model.num_dense_layers

    T = np.asarray(tokens, dtype=np.float64)
    n = T.shape[0]
    T_exp = (
        T if expert_tokens is None else np.broadcast_to(np.asarray(expert_tokens, dtype=np.float64), T.shape)
    )
    adp = sharding.attention_dp
    # replica totals: attention-side work runs on every attention-DP rank (weights read adp times, per-token
    # work in proportion to the tokens); 1 without attention DP
    work_scale = T_exp / T if expert_tokens is not None else 1.0
    zeros = np.zeros(n)
    time_by_op: dict[str, FloatArray] = {}
    op_times: list[tuple[str, FloatArray, FloatArray]] = []
    by_resource = {r: np.zeros(n) for r in RESOURCES}

    def charge(
        name: str,
        flops: FloatArray,
        bytes_dev: FloatArray,
        rate: float,
        rows: FloatArray | None = None,
        gemm: bool = True,
        layers: float = 1.0,
    ) -> FloatArray:
        # weight GEMMs over few token rows stream their weights below the GEMV rate on some devices
        # (calibrated curve g(M)); ops charged with bytes already divided by g pass rows=None. Weight GEMMs
        # combine the two times by the soft roofline (gemm_overlap); the attention core keeps the max, which
        # also keeps a decode step piecewise affine in the context (capsim.sweep.decode relies on it)
        t_compute = flops / rate
        t_memory = bytes_dev / (bytes_rate * (rates.gemm_factor(rows) if rows is not None else 1.0))
        t = rates.gemm_time(t_compute, t_memory) if gemm else np.maximum(t_compute, t_memory)
        if gemm and rates.kernel_latency_s:
            # a block of kernels takes at least its kernels' latencies (BLOCK_KERNELS per layer); the floor is
            # constant in the context, so decode sums stay piecewise affine
            t = np.maximum(t, layers * BLOCK_KERNELS[name][att.kind] * rates.kernel_latency_s)
        time_by_op[name] = time_by_op.get(name, zeros) + t
        op_times.append((name, t_compute, t_memory))
        # t·mask, not np.where: the same values for finite t, without where's slow data-dependent branches
        compute_bound = t_compute >= t_memory
        by_resource["compute"] += t * compute_bound
        by_resource["memory"] += t * ~compute_bound
        return t

    common = {"T": T, "B": sequences, "d": d, "b_a": ACTIVATION_BYTES, "V": float(model.vocab_size)}

    # --- attention projections (identical every layer) -------------------------------------------------
    f, wb, ob = formulas.evaluate(
        "attn_proj",
        {
            **common,
            "N_attn": float(model.attention_params_per_layer),
            "w_qkv": w_qkv,
            "w_o": w_o,
            "b_w": wp["attention"].bytes_per_element,
        },
    )
    charge("attn_proj", n_layers * f / tp, n_layers * (wb + ob) / tp, attn_rate, T, layers=n_layers)
    # Accumulators are explicit (n,) arrays: lambdified formulas return 0-d values for scalar inputs.
    weight_sparse = zeros + n_layers * wb
    flops_sparse = zeros + n_layers * f

    # --- attention core, per layer (windows differ) ----------------------------------------------------
    f, _, ob = formulas.evaluate(
        "attn_core",
        {
            "H": float(att.num_heads),
            "pairs": pairs_per_layer,
            "d_qk": d_qk,
            "d_v": d_v,
            "kv_read_tokens": kv_read_tokens_per_layer,
            "T": T[None, :],
            "kv_e": float(att.kv_elements_per_token()),
            "b_kv": sharding.kv_precision.bytes_per_element,
        },
    )
    rows = np.asarray(pairs_per_layer).shape[0]
    lw = (np.ones(rows) if layer_weights is None else np.asarray(layer_weights, dtype=np.float64))[:, None]
    f_core = (np.broadcast_to(f, (rows, n)) * lw).sum(axis=0)
    kv_bytes = (np.broadcast_to(ob, (rows, n)) * lw).sum(axis=0)
    charge("attn_core", f_core / tp, kv_bytes / kv_div, core_rate, gemm=False)
    kv_read = (
        (np.broadcast_to(np.asarray(kv_read_tokens_per_layer, dtype=np.float64), (rows, n)) * lw).sum(axis=0)
        * att.kv_elements_per_token()
        * sharding.kv_precision.bytes_per_element
    )
    flops_sparse = flops_sparse + f_core

    weight_dense = weight_sparse.copy()
    flops_dense = flops_sparse.copy()

    # --- MoE blocks -------------------------------------------------------------------------------------
    if moe is not None and n_moe:
        router_vals = {
            **common,
            "N_router": float(model.router_params_per_moe_layer),
            "E": float(moe.num_experts),
            "b_w": wp["router"].bytes_per_element,
        }
        f, wb, ob = formulas.evaluate("router", router_vals)
        # the router is replicated on every rank (small), so its weights are not split
        charge("router", n_moe * f, n_moe * (wb + ob / tp), rate_for("router"), T, layers=n_moe)
        weight_sparse += n_moe * wb
        weight_dense += n_moe * wb
        flops_sparse += n_moe * f
        flops_dense += n_moe * f

        exp_vals = {
            **common,
            "T": T_exp,
            "k": float(moe.top_k),
            "E": float(moe.num_experts),
            "N_exp": float(model.expert_params),
            "b_w": wp["routed_experts"].bytes_per_element,
        }
        f, wb_layers, ob = formulas.evaluate("routed_experts", {**exp_vals, "A": activated})
        moe_rows = np.asarray(activated).shape[0]
        mw = (
            np.ones(moe_rows)
            if moe_layer_weights is None
            else np.asarray(moe_layer_weights, dtype=np.float64)
        )
        wb_rows = np.broadcast_to(wb_layers, (moe_rows, n)) * mw[:, None]
        wb_total = wb_rows.sum(axis=0)
        # each MoE layer's experts see M = T·k/A_l token rows on average (its T·k token-expert pairs over the
        # A_l experts that receive them), so each layer's bytes go at its own g(M_l)
        a = np.broadcast_to(np.asarray(activated, dtype=np.float64), (moe_rows, n))
        expert_rows = np.divide(T_exp * moe.top_k, a, out=np.ones_like(a), where=a > 0)
        g = rates.gemm_factor(expert_rows)
        ob_rows = np.broadcast_to(ob, (moe_rows, n)) * mw[:, None]
        bytes_at_g = ((wb_rows + ob_rows) / g).sum(axis=0)
        ranks = sharding.expert_ranks
        charge(
            "routed_experts", n_moe * f / ranks, bytes_at_g / ranks, rate_for("routed_experts"), layers=n_moe
        )
        f_d, wb_d, _ = formulas.evaluate("routed_experts_dense", exp_vals)
        # routed experts are counted for the whole replica already: set aside from the attention-side scaling
        experts = (wb_total, zeros + n_moe * wb_d, zeros + n_moe * f, zeros + n_moe * f_d)

        if model.shared_params_per_moe_layer:
            f, wb, ob = formulas.evaluate(
                "shared_experts",
                {
                    **common,
                    "N_sh": float(model.shared_params_per_moe_layer),
                    "b_w": wp["shared_experts"].bytes_per_element,
                },
            )
            charge(
                "shared_experts",
                n_moe * f / tp,
                n_moe * (wb + ob) / tp,
                rate_for("shared_experts"),
                T,
                layers=n_moe,
            )
            weight_sparse = weight_sparse + n_moe * wb
            weight_dense = weight_dense + n_moe * wb
            flops_sparse += n_moe * f
            flops_dense += n_moe * f

    if n_dense and model.dense_ffn_params_per_layer:
        f, wb, ob = formulas.evaluate(
            "dense_ffn",
            {
                **common,
                "N_dense": float(model.dense_ffn_params_per_layer),
                "b_w": wp["dense_ffn"].bytes_per_element,
            },
        )
        charge(
            "dense_ffn", n_dense * f / tp, n_dense * (wb + ob) / tp, rate_for("dense_ffn"), T, layers=n_dense
        )
        weight_sparse = weight_sparse + n_dense * wb
        weight_dense = weight_dense + n_dense * wb
        flops_sparse += n_dense * f
        flops_dense += n_dense * f

    # --- lm_head (only for passes that emit tokens) ------------------------------------------------------
    lm_b = np.asarray(lm_head_sequences, dtype=np.float64)
    f, wb, ob = formulas.evaluate("lm_head", {**common, "B": lm_b, "b_w": wp["lm_head"].bytes_per_element})
    emits = lm_b > 0
    charge("lm_head", f / tp, np.where(emits, wb + ob, 0.0) / tp, rate_for("lm_head"), lm_b)
    wb = np.where(emits, wb, 0.0)
    weight_sparse = weight_sparse + wb
    weight_dense = weight_dense + wb
    flops_sparse = flops_sparse + f
    flops_dense = flops_dense + f

    # --- tensor-parallel all-reduces: after attention and after the FFN of every layer ------------------
    if tp > 1:
        message = T * d * ACTIVATION_BYTES
        t_ar = (
            2
            * n_layers
            * formulas.ring_allreduce_time(
                message,
                tp,
                rates.link_bandwidth,
                rates.allreduce_hop_latency_s,
                rates.allreduce_base_latency_s,
            )
        )
        time_by_op["allreduce"] = t_ar
        by_resource["interconnect"] += t_ar

    overhead = np.full(n, rates.step_overhead_s + n_layers * rates.per_layer_overhead_s)
    if rates.per_sequence_s:
        # the engine's per-request work each step (sampling, stop checks, bookkeeping): one per emitted token
        overhead = overhead + lm_b * rates.per_sequence_s
    time_by_op["overhead"] = overhead
    by_resource["overhead"] += overhead
    if rates.eager_moe_host_s is not None and moe is not None and n_moe:
        # eager execution: the host dispatches every op while the device runs the ones already queued, so the
        # pass takes max(host dispatch, device time); the host pays per MoE layer and per activated expert
        # (capsim.engine.engines). The unhidden host time is charged as overhead; (host, device) joins op_times
        # so that sweeps find where the binding side flips along the context.
        host = n_moe * rates.eager_moe_host_s + rates.eager_expert_host_s * (a * mw[:, None]).sum(axis=0)
        device = np.sum(list(time_by_op.values()), axis=0) - rates.step_overhead_s
        waiting = np.maximum(host - device, 0.0)
        time_by_op["host_dispatch"] = waiting
        by_resource["overhead"] += waiting
        op_times.append(("host_dispatch", host, device))

    if moe is not None and n_moe:
        w_s, w_d, f_s, f_d = experts
        weight_sparse = weight_sparse * adp + w_s
        weight_dense = weight_dense * adp + w_d
        flops_sparse = flops_sparse * work_scale + f_s
        flops_dense = flops_dense * work_scale + f_d
    else:
        weight_sparse, weight_dense = weight_sparse * adp, weight_dense * adp
        flops_sparse, flops_dense = flops_sparse * work_scale, flops_dense * work_scale
    kv_read = kv_read * work_scale

    total = np.sum(list(time_by_op.values()), axis=0)
    # Metric denominators use the fastest rate any op ran at, so S-MFU <= 1 holds by construction.
    used = {compute_key(p, available) for p in wp.values()} | {"bf16"} & set(available)
    metric_peak = max(rates.peak_flops[key] for key in used if key in rates.peak_flops)
    return PassTimes(
        time=total,
        time_by_op=time_by_op,
        time_by_resource=by_resource,
        weight_bytes_sparse=weight_sparse,
        weight_bytes_dense=weight_dense,
        kv_read_bytes=kv_read,
        flops_sparse=flops_sparse,
        flops_dense=flops_dense,
        activated_experts=np.asarray(activated, dtype=np.float64),
        activated_rows=None
        if moe_layer_weights is None
        else np.repeat(
            np.arange(np.asarray(activated).shape[0]), np.asarray(moe_layer_weights, dtype=np.int64)
        ),
        tokens=T_exp,
        metric_peak_flops=metric_peak,
        op_times=op_times,
    )
