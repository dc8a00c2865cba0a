"""Routing models: how many distinct routed experts a step activates, per MoE layer.

The engine asks one question of a router: for a step that pushes ``T`` tokens through MoE layer ``l``,
how many distinct experts are activated (in expectation)? That count sets the bytes read for routed
experts (S-MBU) while the FLOPs follow top-k per token.

Uniform independent routing (each token picks k distinct experts uniformly at random, tokens independent)
gives the closed form E·(1 − (1 − k/E)^T). It spreads tokens as evenly as possible, so it is the *upper*
bound on expected activation for independent tokens: Σ_i 1 − (1 − π_i)^T is Schur-concave in the inclusion
probabilities π (each term is concave), and π = (k/E, …, k/E) is majorised by every other π with Σπ = k.
Real, skewed routers activate fewer experts (MoE-CAP §4.2 measured 0.68–0.99x of it).

Modules: :mod:`.popularity` (per-layer profiles and the exact-marginal sampler), :mod:`.synthetic`
(seedable routers with temporal reuse and cross-layer affinity), :mod:`.trace_router` (trace-driven,
exact), :mod:`.analytics` (load, imbalance, reuse distance), :mod:`.fit` (parameters from a trace),
:mod:`.spec` (spec strings and :func:`make_router`). docs/routing.md has the derivations.
"""

from __future__ import annotations

from capsim.errors import UnknownRouterError
from capsim.routing._base import FloatArray, IntArray, Router, step_geometry, uniform_expected_activated
from capsim.routing.analytics import (
    expert_counts,
    load_imbalance,
    lru_hit_rate,
    rank_load_imbalance,
    reuse_distance_histogram,
    reuse_distances,
    step_load_imbalance,
    unique_per_step,
)
from capsim.routing.fit import TraceFit, fit_trace
from capsim.routing.popularity import (
    GroupPopularity,
    Popularity,
    dirichlet_popularity,
    empirical_popularity,
    hot_popularity,
    systematic_sample,
    uniform_popularity,
    water_fill,
    zipf_popularity,
)
from capsim.routing.spec import (
    ROUTER_KINDS,
    RouterSpec,
    make_router,
    parse_router_spec,
    resolve_trace_path,
    shipped_traces,
)
from capsim.routing.stats import TraceStats, trace_stats
from capsim.routing.synthetic import SyntheticRouter, UniformRouter
from capsim.routing.trace_router import TraceRouter

__all__ = [
    "ROUTER_KINDS",
    "FloatArray",
    "GroupPopularity",
    "IntArray",
    "Popularity",
    "Router",
    "RouterSpec",
    "SyntheticRouter",
    "TraceFit",
    "TraceRouter",
    "TraceStats",
    "UniformRouter",
    "UnknownRouterError",
    "dirichlet_popularity",
    "empirical_popularity",
    "expert_counts",
    "fit_trace",
    "hot_popularity",
    "load_imbalance",
    "lru_hit_rate",
    "make_router",
    "parse_router_spec",
    "rank_load_imbalance",
    "resolve_trace_path",
    "reuse_distance_histogram",
    "reuse_distances",
    "shipped_traces",
    "step_geometry",
    "step_load_imbalance",
    "systematic_sample",
    "trace_stats",
    "uniform_expected_activated",
    "uniform_popularity",
    "unique_per_step",
    "water_fill",
    "zipf_popularity",
]
