"""Named hypothesis strategies shared by the test files (others may add theirs here).

Ranges are chosen so that the edge cases the formulas treat specially are drawn often and shrink to
obviously simple examples: top-k = 1, k = E (every expert always active), E = 1, a step of 0 or 1 token.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from capsim.models.parts import AttentionSpec, FFNKind, MoESpec
from capsim.models.spec import ModelSpec


def tiny_moe_model(
    num_moe_layers: int = 2, num_experts: int = 8, top_k: int = 2, *, n_group: int = 1, topk_group: int = 1
) -> ModelSpec:
    """A made-up MoE model for routing tests: only the routing shape matters (not a real model)."""
    return ModelSpec(
        id=f"tiny-moe-{num_moe_layers}x{num_experts}k{top_k}",
        name="tiny test MoE (invented for tests)",
        family="test",
        source="invented for tests",
        hidden_size=64,
        num_layers=num_moe_layers,
        vocab_size=128,
        attention=AttentionSpec(kind="gqa", num_heads=4, num_kv_heads=2, head_dim=16),
        ffn_kinds=(FFNKind.MOE,) * num_moe_layers,
        moe=MoESpec(
            num_experts=num_experts,
            top_k=top_k,
            expert_intermediate_size=32,
            n_group=n_group,
            topk_group=topk_group,
        ),
    )


@st.composite
def moe_shapes(draw: st.DrawFn, max_experts: int = 64, max_layers: int = 3) -> tuple[int, int, int]:
    """(layers, E, k) with 1 <= k <= E. E = 1 and k = E are legal and drawn on purpose (A is then k always)."""
    num_experts = draw(st.integers(1, max_experts))
    top_k = draw(st.one_of(st.just(1), st.just(num_experts), st.integers(1, num_experts)))
    layers = draw(st.integers(1, max_layers))
    return layers, num_experts, top_k


def step_tokens(max_tokens: float = 1e5) -> st.SearchStrategy[float]:
    """Tokens per step: 0 and 1 (A = 0 and A = k exactly), small batches, and large prefill chunks."""
    return st.one_of(
        st.sampled_from([0.0, 1.0, 2.0]),
        st.integers(1, 512).map(float),
        st.floats(0.0, max_tokens, allow_nan=False, allow_infinity=False),
    )


@st.composite
def router_specs(draw: st.DrawFn, num_experts: int, top_k: int) -> str:
    """A valid synthetic router spec string for a model with ``num_experts`` experts and top-``top_k``."""
    kinds = ["uniform", "zipf", "dirichlet", "temporal", "affinity"]
    if num_experts >= 2 and top_k < num_experts:
        kinds.append("hot")
    kind = draw(st.sampled_from(kinds))
    prob = st.floats(0.0, 0.95, allow_nan=False)
    if kind == "uniform":
        spec = "uniform"
    elif kind == "zipf":
        spec = f"zipf:{draw(st.floats(0.0, 3.0, allow_nan=False)):.3f}"
    elif kind == "dirichlet":
        spec = f"dirichlet:{draw(st.floats(0.05, 20.0, allow_nan=False)):.3f}"
    elif kind == "temporal":
        spec = f"temporal:{draw(prob):.3f}"
    elif kind == "affinity":
        spec = f"affinity:{draw(prob):.3f},zipf={draw(st.floats(0.0, 2.0, allow_nan=False)):.3f}"
    else:
        hot = draw(st.integers(1, num_experts - 1))
        # a valid share keeps π_hot = share·k/H <= 1 and π_cold = (1 − share)·k/(E − H) <= 1
        lo = max(0.0, 1.0 - (num_experts - hot) / top_k)
        hi = min(1.0, hot / top_k)
        share = draw(st.floats(lo, hi, allow_nan=False, exclude_min=True, exclude_max=True))
        spec = f"hot:{hot},share={share!r}"
    if kind in ("zipf", "dirichlet", "hot", "uniform") and draw(st.booleans()):
        spec += f",reuse={draw(prob):.3f},affinity={draw(prob):.3f}"
    return spec


@st.composite
def inclusion_vectors(draw: st.DrawFn, num_experts: int, top_k: int) -> np.ndarray:
    """An inclusion-probability vector π (Σπ = k, 0 <= π <= 1) from random positive weights, water-filled."""
    from capsim.routing import water_fill

    weights = draw(
        st.lists(st.floats(1e-3, 1.0, allow_nan=False), min_size=num_experts, max_size=num_experts)
    )
    return water_fill(np.asarray(weights), top_k)


@st.composite
def topk_id_arrays(
    draw: st.DrawFn, max_layers: int = 3, max_tokens: int = 40, max_experts: int = 12
) -> tuple[np.ndarray, int]:
    """(ids of shape (L, N, k) with k distinct ids per token, E): arbitrary traces, not from any router."""
    num_experts = draw(st.integers(1, max_experts))
    top_k = draw(st.integers(1, num_experts))
    layers = draw(st.integers(1, max_layers))
    tokens = draw(st.integers(1, max_tokens))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    ids = np.argsort(rng.random((layers, tokens, num_experts)), axis=2)[:, :, :top_k]
    return ids, num_experts
