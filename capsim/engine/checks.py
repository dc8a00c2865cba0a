"""One validation layer for scenarios, shared by predict, sweep, fit and plan (and serve).

A scenario is checked in two steps, each in one place:

1. :meth:`capsim.engine.scenario.Scenario.validate` — the values alone (batch >= 1, known dtype names, …).
2. :func:`check_scenario` — the values against the resolved model and layout: the model's context window,
   tensor parallelism dividing the attention heads, expert parallelism dividing the experts, the layout's
   product, dtype names. :func:`capsim.engine.resolve.resolve_on` calls it, so every command that resolves a
   scenario (predict, fit, plan, sweep) refuses the same impossible configurations with the same message.

Each check is a function ``(scenario, model, layout) -> None`` raising :class:`ScenarioError` with one line that
names the problem, the valid choices and the fix. New checks (e.g. for new layout options) are added with
:func:`scenario_check`; they run in registration order.

Vectorised forms for sweeps, where a grid holds many lengths per resolved group, are next to the scalar checks
(:func:`context_window_exceeded`), so a sweep row and a predict call are refused for the same reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, NDArray

from capsim.errors import ScenarioError

if TYPE_CHECKING:
    from capsim.engine.layout import Layout
    from capsim.engine.scenario import Scenario
    from capsim.models.spec import ModelSpec

Check = Callable[["Scenario", "ModelSpec", "Layout"], None]
SCENARIO_CHECKS: list[Check] = []
"""The registered checks, in the order they run."""


def scenario_check(fn: Check) -> Check:
    """Register ``fn`` as a scenario check (decorator); returns ``fn`` unchanged."""
    SCENARIO_CHECKS.append(fn)
    return fn


def check_scenario(scenario: Scenario, model: ModelSpec, layout: Layout) -> None:
    """Run every registered check; the first problem found is raised as a :class:`ScenarioError`."""
    for check in SCENARIO_CHECKS:
        check(scenario, model, layout)


# ---- context window ------------------------------------------------------------------------------------
def context_window_exceeded(model: ModelSpec, prompt_len: ArrayLike, gen_len: ArrayLike) -> NDArray[np.bool_]:
    """Mask of configurations whose prompt + generated tokens exceed the model's context window (vectorised;
    all False when the model publishes no window)."""
    total = np.asarray(prompt_len, dtype=np.int64) + np.asarray(gen_len, dtype=np.int64)
    if not model.max_context:
        return np.zeros(total.shape, dtype=bool)
    return np.asarray(total > model.max_context)


def context_window_message(model: ModelSpec, prompt_len: int, gen_len: int) -> str:
    limit = model.max_context or 0
    return (
        f"prompt {prompt_len:,} + generated {gen_len:,} = {prompt_len + gen_len:,} tokens exceed {model.id}'s "
        f"context window of {limit:,} tokens; use --prompt-len + --gen-len <= {limit}"
    )


@scenario_check
def check_context_window(scenario: Scenario, model: ModelSpec, layout: Layout) -> None:
    """The model attends to at most ``max_context`` tokens (its config's max_position_embeddings)."""
    if bool(context_window_exceeded(model, scenario.prompt_len, scenario.gen_len)):
        raise ScenarioError(context_window_message(model, scenario.prompt_len, scenario.gen_len))


# ---- tensor parallelism: heads -------------------------------------------------------------------------
def valid_tp_degrees(model: ModelSpec, limit: int = 64) -> list[int]:
    """Tensor-parallel degrees (up to ``limit``) that split the attention heads evenly: the query heads must
    divide by TP, and the KV heads must either divide by TP or be replicated (TP a multiple of them), as
    vLLM requires (vllm/model_executor/layers/linear.py QKVParallelLinear; config.verify_with_parallel_config:
    "Total number of attention heads must be divisible by tensor parallel size")."""
    att = model.attention
    return [
        tp
        for tp in range(1, limit + 1)
        if att.num_heads % tp == 0 and (att.num_kv_heads % tp == 0 or tp % att.num_kv_heads == 0)
    ]


@scenario_check
def check_heads_divisible(scenario: Scenario, model: ModelSpec, layout: Layout) -> None:
    tp = layout.tp
    if tp <= 1:
        return
    att = model.attention
    if att.num_heads % tp == 0 and (att.num_kv_heads % tp == 0 or tp % att.num_kv_heads == 0):
        return
    # the degrees that fit in this node's devices (the devices a TP group can span)
    choices = ", ".join(str(d) for d in valid_tp_degrees(model, max(layout.devices_per_node, 1)))
    what = (
        f"{att.num_heads} attention heads"
        if att.num_heads % tp
        else f"{att.num_kv_heads} KV heads (neither divisible by it nor a divisor of it)"
    )
    raise ScenarioError(
        f"--tp {tp} does not divide the model's {what}; valid --tp: {choices} (set --gpus or --tp to one of "
        "them, or put the other devices in --attention-dp, --pp or --dp)"
    )


# ---- expert parallelism: experts -----------------------------------------------------------------------
@scenario_check
def check_experts_divisible(scenario: Scenario, model: ModelSpec, layout: Layout) -> None:
    ep = layout.ep
    if ep <= 1:
        return
    if model.moe is None:
        raise ScenarioError(f"--ep {ep} splits routed experts; {model.id!r} has none (use --ep 1)")
    from capsim.engine.layout import check_expert_layout

    # EP divides the devices the MoE layers run on (tp x attention-dp) and the expert slots
    expert_ranks = getattr(layout, "expert_ranks", layout.tp)
    check_expert_layout(model.moe.num_experts, ep, expert_ranks, getattr(scenario, "redundant_experts", 0))


# ---- layout product ------------------------------------------------------------------------------------
@scenario_check
def check_layout_product(scenario: Scenario, model: ModelSpec, layout: Layout) -> None:
    """TP x PP x DP covers exactly the devices of the nodes (capsim.engine.layout.layout_for builds layouts so;
    this guards layouts built any other way)."""
    adp = getattr(layout, "attention_dp", 1)
    want = layout.tp * adp * layout.pp * layout.dp
    have = layout.nodes * layout.devices_per_node
    if want != have:
        adp_text = f" x --attention-dp {adp}" if adp > 1 else ""
        raise ScenarioError(
            f"--tp {layout.tp}{adp_text} x --pp {layout.pp} x --dp {layout.dp} = {want} devices, but the layout has "
            f"{layout.nodes} node(s) x {layout.devices_per_node} = {have}; make the product equal the devices"
        )
    if layout.pp > model.num_layers:
        raise ScenarioError(
            f"--pp {layout.pp} exceeds {model.id}'s {model.num_layers} layers; use at most {model.num_layers} stages"
        )


# ---- dtypes --------------------------------------------------------------------------------------------
@scenario_check
def check_dtypes(scenario: Scenario, model: ModelSpec, layout: Layout) -> None:
    from capsim.models.precision import KV_PRECISIONS, is_weight_dtype, weight_dtype_choices

    for dtype, flag in ((scenario.weight_dtype, "--weight-dtype"), (scenario.expert_dtype, "--expert-dtype")):
        if dtype is not None and not is_weight_dtype(dtype):  # capsim's formats and the GGUF types
            raise ScenarioError(f"unknown {flag} {dtype!r}; choose one of {weight_dtype_choices()}")
    if scenario.kv_dtype.lower() not in KV_PRECISIONS:
        raise ScenarioError(
            f"unknown --kv-dtype {scenario.kv_dtype!r}; choose one of {', '.join(KV_PRECISIONS)}"
        )
    if scenario.expert_dtype is not None and model.moe is None:
        raise ScenarioError(f"--expert-dtype sets the routed experts' precision; {model.id!r} has none")
