"""Speculative decoding: ``--spec mtp:K`` (DeepSeek's multi-token-prediction module drafts K tokens) and
``--spec draft:MODEL:K`` (a separate draft model drafts K tokens); the target model verifies them in one step.

A decode step becomes: K sequential draft passes over the batch's B sequences, then one *verify* pass of the
target model over B x (K + 1) tokens (each sequence's last accepted token and its K drafts; every query of a
sequence attends to the same cached context, so its KV is read once). With each draft token accepted with
probability a given the previous one was (the chain stops at the first rejection), a step yields

    E = 1 + a + a² + … + a^K = (1 − a^{K+1}) / (1 − a)      (E = K + 1 at a = 1)

tokens per sequence, so TPOT = step time / E and decode tokens/s = B x E / step time. S-MBU and S-MFU count
the verify pass's B x (K + 1) tokens (its bytes and FLOPs; the draft passes are in the time only).

MTP draft pass (DeepSeek-V3 report §2.2, arXiv:2412.19437): the module is one decoder layer (DeepSeek-V3: an
MoE layer) plus a projection of the concatenated [hidden; embedding] (2d x d) and its norms, sharing the main
model's embedding and lm_head; one draft pass costs one MoE layer's share of a decode step at B tokens (its
attention, router, experts, shared experts, communication and per-layer overhead), the projection's weight
read and the lm_head over B rows. For K > the checkpoint's modules the one module is run K times (SGLang's
and TensorRT-LLM's MTP with more draft steps than modules reuse it), its weights held once.

Acceptance a: ``--acceptance`` or, for MTP, the DeepSeek-V3 report's figure (§5.4.3: "the acceptance rate of
the second token prediction ranges between 85% and 90%"; the midpoint 0.875), applied at every draft position
(an optimistic assumption for K > 1: later positions are accepted less often). A draft model has no sourced
default: it needs ``--acceptance``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from capsim.errors import ScenarioError

MTP_ACCEPTANCE = 0.875
MTP_ACCEPTANCE_SOURCE = (
    "DeepSeek-V3 Technical Report (arXiv:2412.19437) §5.4.3: second-token acceptance rate 85%-90% "
    "(midpoint 0.875), taken for every draft position"
)


@dataclass(frozen=True)
class Speculation:
    """A parsed ``--spec``: ``kind`` mtp or draft, ``draft_tokens`` K, per-token ``acceptance`` a."""

    kind: str
    draft_tokens: int
    acceptance: float
    acceptance_source: str
    draft_model: str | None = None

    @property
    def tokens_per_step(self) -> float:
        """E = (1 − a^{K+1}) / (1 − a): expected tokens a verify step yields per sequence."""
        return expected_tokens(self.acceptance, self.draft_tokens)

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "draft_tokens": self.draft_tokens,
            "acceptance": self.acceptance,
            "acceptance_source": self.acceptance_source,
            "draft_model": self.draft_model,
            "tokens_per_step": self.tokens_per_step,
        }


def expected_tokens(acceptance: float, draft_tokens: int) -> float:
    """Tokens per verify step: 1 + a + … + a^K."""
    a, k = float(acceptance), int(draft_tokens)
    if a >= 1.0:
        return float(k + 1)
    return (1.0 - a ** (k + 1)) / (1.0 - a)


def parse_spec(text: str, acceptance: float | None) -> Speculation:
    """``mtp:K`` or ``draft:MODEL:K`` (K >= 1), with ``acceptance`` in [0, 1] or the sourced default."""
    parts = text.strip().split(":")
    hint = "write --spec mtp:K or --spec draft:MODEL:K with K >= 1 draft tokens"
    if acceptance is not None and not 0.0 <= acceptance <= 1.0:
        raise ScenarioError(f"--acceptance must be between 0 and 1, got {acceptance!r}")
    if parts[0] == "mtp" and len(parts) == 2:
        k = _draft_count(parts[1], text, hint)
        if acceptance is None:
            return Speculation("mtp", k, MTP_ACCEPTANCE, MTP_ACCEPTANCE_SOURCE)
        return Speculation("mtp", k, acceptance, "--acceptance")
    if parts[0] == "draft" and len(parts) >= 3:
        k = _draft_count(parts[-1], text, hint)
        model = ":".join(parts[1:-1])
        if acceptance is None:
            raise ScenarioError(
                f"--spec {text}: a draft model's acceptance rate depends on the pair of models and has no sourced "
                "default; give --acceptance A (the probability a draft token is accepted, 0-1)"
            )
        return Speculation("draft", k, acceptance, "--acceptance", draft_model=model)
    raise ScenarioError(f"cannot read --spec {text!r}; {hint}")


def _draft_count(value: str, text: str, hint: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise ScenarioError(f"cannot read --spec {text!r}; {hint}")
    return int(value)


def resolve_speculation(rs: Any, db: Any, count: int | None) -> Any:
    """``rs`` with its :class:`Speculation` (and, for a draft model, the draft resolved on the same devices)."""
    from capsim.engine.predict import resolve_model, resolve_on

    sc = rs.scenario
    spec = parse_spec(sc.spec, sc.acceptance)
    if rs.layout.pp > 1:
        raise ScenarioError(
            "--spec with --pp is not modelled; use speculative decoding with TP/attention-DP/EP layouts"
        )
    if rs.deployment.mode != "gpu" or sc.placement not in (None, "gpu"):
        raise ScenarioError("--spec with experts off the GPU is not modelled; use --mode gpu")
    if spec.kind == "mtp":
        if not rs.model.mtp_modules:
            raise ScenarioError(
                f"{rs.model.id!r} has no multi-token-prediction module (num_nextn_predict_layers = 0), so --spec "
                "mtp:K cannot draft; use --spec draft:MODEL:K with a draft model"
            )
        return replace(rs, speculation=spec)
    draft_model = resolve_model(spec.draft_model)  # type: ignore[arg-type]
    if draft_model.vocab_size != rs.model.vocab_size:
        raise ScenarioError(
            f"draft model {draft_model.id!r} has a vocabulary of {draft_model.vocab_size:,} tokens, "
            f"{rs.model.id!r} {rs.model.vocab_size:,}: speculative decoding needs the target's tokenizer; "
            "choose a draft model of the same family"
        )
    draft_sc = replace(
        sc,
        model=draft_model,
        spec=None,
        acceptance=None,
        ep=1,
        redundant_experts=0,
        placement=None,
        expert_dtype=None,
    )
    draft = resolve_on(draft_sc, db, draft_model, count)
    return replace(rs, speculation=spec, draft=draft)


def mtp_module_params(model: Any) -> dict[str, float]:
    """Parameters of one MTP module by weight group: one MoE decoder layer (attention, router, experts, shared
    experts) plus the 2d x d projection of [hidden; embedding] (counted with attention) and its norms."""
    moe = model.moe
    d = float(model.hidden_size)
    return {
        "attention": float(model.attention_params_per_layer) + 2.0 * d * d,
        "router": float(model.router_params_per_moe_layer) if moe else 0.0,
        "routed_experts": float(moe.num_experts * model.expert_params) if moe else 0.0,
        "shared_experts": float(model.shared_params_per_moe_layer) if moe else 0.0,
        "norms": 4.0 * d,  # the layer's two norms plus the module's hidden and embedding norms
    }


def draft_weight_bytes_per_device(rs: Any) -> float:
    """Device bytes of the drafter's weights: the MTP module (split like the main model's layers) or the whole
    draft model (its own plan)."""
    spec = rs.speculation
    if spec is None:
        return 0.0
    if spec.kind == "draft":
        from capsim.engine.memory import weight_bytes_per_device

        return float(sum(weight_bytes_per_device(rs.draft).values()))
    prec = rs.placement.weight_precision
    tp, ranks = rs.placement.tp, rs.placement.expert_ranks
    divisor = {"attention": tp, "router": 1, "routed_experts": ranks, "shared_experts": tp, "norms": 1}
    return sum(
        params * prec[g].bytes_per_element / divisor[g] for g, params in mtp_module_params(rs.model).items()
    )


def add_draft_passes(rs: Any, decode: Any, batch: Any, context: Any) -> dict[str, Any]:
    """Add the K draft passes of every verify step (steps of ``batch`` sequences at ``context``, arrays) to
    ``decode`` in place; returns what they cost. The draft pass's roofline charges join ``decode.op_times``
    so that sweeps see where its ops change binding resource along the context."""
    from capsim.engine.predict import decode_passes

    spec = rs.speculation
    if decode.time.size == 0:
        return spec.to_dict()
    batch, context = (np.asarray(a, dtype=np.float64) for a in np.broadcast_arrays(batch, context))
    if spec.kind == "draft":
        plain = decode_passes(rs.draft, batch, context)
        one = plain.time
    else:
        plain = decode_passes(rs, batch, context)
        if rs.layout.ep > 1 or rs.layout.attention_dp > 1:
            from capsim.engine.parallel import apply_expert_parallel

            apply_expert_parallel(rs, plain, "decode")
        one = _mtp_pass_time(rs, plain, batch)
    decode.op_times.extend((f"draft:{name}", tc, tm) for name, tc, tm in plain.op_times)
    draft = spec.draft_tokens * one
    decode.time = decode.time + draft
    decode.time_by_op["spec_draft"] = draft
    share = {
        r: np.divide(v, plain.time, out=np.zeros_like(v), where=plain.time > 0)
        for r, v in plain.time_by_resource.items()
    }
    for r in decode.time_by_resource:
        decode.time_by_resource[r] = decode.time_by_resource[r] + draft * share.get(r, 0.0)
    return {**spec.to_dict(), "draft_s_per_step": float(draft.mean()), "draft_pass_s": float(one.mean())}


def _mtp_pass_time(rs: Any, plain: Any, batch: int) -> np.ndarray:
    """One MTP draft pass over ``batch`` sequences: one MoE layer's share of a plain decode step (attention per
    layer, MoE ops and their communication per MoE layer, the per-layer overhead), the lm_head, and the 2d x d
    projection (weight read or GEMM, whichever is longer, split over the TP ranks)."""
    model, rates = rs.model, rs.rates
    ops = plain.time_by_op
    zero = np.zeros_like(plain.time)
    layers, moe_layers = float(model.num_layers), float(max(model.num_moe_layers, 1))
    attention = (
        ops.get("attn_proj", zero) + ops.get("attn_core", zero) + ops.get("allreduce", zero)
    ) / layers
    moe = (
        sum((ops.get(op, zero) for op in ("router", "routed_experts", "shared_experts", "all_to_all")), zero)
        / moe_layers
    )
    d = float(model.hidden_size)
    prec = rs.placement.weight_precision["attention"]
    tp = rs.placement.tp
    rows = np.ceil(np.asarray(batch, dtype=np.float64) / rs.placement.attention_dp)
    from capsim.models.precision import compute_key

    flops_rate = rates.flops_rate(compute_key(prec, frozenset(rates.peak_flops)))
    projection = np.maximum(
        2.0 * d * d * prec.bytes_per_element / tp / rates.bytes_rate,
        2.0 * rows * 2.0 * d * d / tp / flops_rate,
    )
    return attention + moe + ops.get("lm_head", zero) + rates.per_layer_overhead_s + projection
