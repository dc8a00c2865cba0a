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

Acceptance: ``--acceptance`` a, applied at every draft position (E = 1 + a + … + a^K tokens per verify step),
or, for MTP without it, the tokens per verify step TensorRT-LLM measured for DeepSeek-R1 with K = 1…5 draft
steps of its one MTP module (:data:`MTP_TOKENS_PER_STEP`): later positions are accepted less often (the one
module drafts from its own guesses), so E saturates near 3 instead of growing as a constant-a series would. A
draft model has no sourced default: it needs ``--acceptance``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from capsim.errors import ScenarioError

MTP_ACCEPTANCE = 0.875
MTP_ACCEPTANCE_SOURCE = (
    "DeepSeek-V3 Technical Report (arXiv:2412.19437) §5.4.3: second-token acceptance rate 85%-90% "
    "(midpoint 0.875), taken for every draft position"
)
MTP_TOKENS_PER_STEP = (1.92, 2.58, 2.82, 2.99, 3.01)
"""Tokens per verify step of DeepSeek-R1's MTP with K = 1…5 draft steps (the one MTP module run
autoregressively), as measured by TensorRT-LLM; K > 5 takes the K = 5 value (the gain has stopped)."""
MTP_TOKENS_SOURCE = (
    "NVIDIA/TensorRT-LLM docs/source/blogs/tech_blog/blog1_Pushing_Latency_Boundaries_Optimizing_DeepSeek-R1_"
    "Performance_on_NVIDIA_B200_GPUs.md (commit 01c4ece), 'Autoregressive MTP Layers' table: acceptance rate "
    "1.92 / 2.58 / 2.82 / 2.99 / 3.01 tokens per step for MTP 1-5 (DeepSeek-R1, 8xB200, strict acceptance)"
)


@dataclass(frozen=True)
class Speculation:
    """A parsed ``--spec``: ``kind`` mtp or draft, ``draft_tokens`` K, per-token ``acceptance`` a."""

    kind: str
    draft_tokens: int
    acceptance: float
    acceptance_source: str
    draft_model: str | None = None
    measured_tokens_per_step: float | None = None
    """Tokens per verify step from a measurement (MTP default), used instead of the constant-a series."""

    @property
    def tokens_per_step(self) -> float:
        """Expected tokens a verify step yields per sequence: the measured figure where there is one, else
        E = (1 − a^{K+1}) / (1 − a)."""
        if self.measured_tokens_per_step is not None:
            return self.measured_tokens_per_step
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
            measured = MTP_TOKENS_PER_STEP[min(k, len(MTP_TOKENS_PER_STEP)) - 1]
            # the first draft's acceptance (E = 1 + a at K = 1), reported; E itself is the measured figure
            first = MTP_TOKENS_PER_STEP[0] - 1.0
            return Speculation("mtp", k, first, MTP_TOKENS_SOURCE, measured_tokens_per_step=measured)
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
