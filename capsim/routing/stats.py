"""The analytics ``capsim trace stats`` reports, computed once from a trace into a plain result object."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from capsim.errors import ScenarioError
from capsim.routing._base import FloatArray, IntArray, uniform_expected_activated
from capsim.routing.analytics import load_imbalance, reuse_distances, step_load_imbalance
from capsim.routing.fit import TraceFit, fit_trace
from capsim.routing.trace_router import TraceRouter
from capsim.routing.traces import Trace


@dataclass(frozen=True)
class TraceStats:
    """Per-layer analytics of one trace at step sizes ``steps`` (tokens per step).

    ``activated_independent[l, j]``: E − Σ_i C(N − n_i, T)/C(N, T) for T = steps[j] (decode: T random
    distinct trace tokens);
    ``activated_window[l, j]``: mean distinct experts over all windows of T consecutive tokens (prefill);
    ``uniform[j]``: E·(1 − (1 − k/E)^T), the bound. ``step_imbalance[l, j]``: mean over disjoint steps of
    T consecutive tokens of max/mean tokens per expert. Reuse distances: see capsim.routing.analytics.
    """

    trace: Trace
    steps: tuple[int, ...]
    counts: IntArray
    experts_used: IntArray
    load_imbalance: FloatArray
    step_imbalance: FloatArray
    activated_independent: FloatArray
    activated_window: FloatArray
    uniform: FloatArray
    reuse_median: FloatArray
    reuse_mean: FloatArray
    cold_fraction: FloatArray
    fit: TraceFit

    def to_dict(self) -> dict[str, Any]:
        return {
            "trace": self.trace.to_dict(),
            "steps": list(self.steps),
            "uniform_bound": self.uniform.tolist(),
            "layers": [
                {
                    "layer": layer,
                    "experts_used": int(self.experts_used[layer]),
                    "tokens_per_expert": self.counts[layer].tolist(),
                    "load_imbalance": _num(self.load_imbalance[layer]),
                    "step_imbalance": [_num(x) for x in self.step_imbalance[layer]],
                    "activated_independent": self.activated_independent[layer].tolist(),
                    "activated_window": self.activated_window[layer].tolist(),
                    "reuse_distance_median": _num(self.reuse_median[layer]),
                    "reuse_distance_mean": _num(self.reuse_mean[layer]),
                    "cold_fraction": _num(self.cold_fraction[layer]),
                }
                for layer in range(self.counts.shape[0])
            ],
            "fit": self.fit.to_dict(),
        }


def _num(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def trace_stats(trace: Trace, steps: tuple[int, ...] = (1, 8, 32, 128)) -> TraceStats:
    """Compute :class:`TraceStats` for ``trace`` at the step sizes ``steps`` (each >= 1)."""
    if not steps or any(s < 1 for s in steps):
        raise ScenarioError(f"step sizes must be >= 1 tokens, got {list(steps)}")
    router = TraceRouter(trace)
    ids = trace.topk_ids
    e = trace.num_experts
    t = np.asarray(steps, dtype=np.float64)
    dists = reuse_distances(ids, e)
    warm = [d[d >= 0] for d in dists]
    return TraceStats(
        trace=trace,
        steps=tuple(int(s) for s in steps),
        counts=router.counts,
        experts_used=(router.counts > 0).sum(axis=1),
        load_imbalance=load_imbalance(router.counts),
        step_imbalance=np.stack([step_load_imbalance(ids, e, int(s)) for s in steps], axis=1),
        activated_independent=router.activated_per_layer(t),
        activated_window=router.activated_per_layer(t, sequences=1),
        uniform=uniform_expected_activated(e, trace.top_k, t),
        reuse_median=np.array([float(np.median(w)) if w.size else np.nan for w in warm]),
        reuse_mean=np.array([float(w.mean()) if w.size else np.nan for w in warm]),
        cold_fraction=np.array([float(np.mean(d < 0)) for d in dists]),
        fit=fit_trace(ids, e, source=trace.name),
    )
