"""Trace-driven routing: the activated-expert count read off a recorded (or synthesised) trace.

For a trace of N tokens with n_{l,i} tokens routed to expert i at layer l:
- independent tokens (``sequences=None``, decode): the step's T tokens are a uniformly random subset of T
  distinct trace tokens, so expert i is missed with probability C(N − n_{l,i}, T)/C(N, T) (hypergeometric)
  and A_l(T) = E − Σ_i C(N − n_{l,i}, T)/C(N, T), exactly (no sampling; Γ functions for fractional T). If the
  trace's tokens are independent draws with inclusion π, a random subset of them is too, so the expectation
  over traces is exactly Σ_i 1 − (1 − π_i)^T: a trace of the uniform router reproduces the closed form without
  bias. For T ≥ N the subset is the whole trace.
- runs of consecutive tokens (``sequences=s``, m = T/s tokens each, prefill chunks): a run is a window of m
  consecutive trace tokens at a uniformly random start; the fraction of the N − m + 1 windows that miss
  expert i is W_i(m) = Σ_gaps max(0, g − m + 1) / (N − m + 1), where the gaps g are the maximal runs of
  tokens not using i. With s independent windows A_l = E − Σ_i W_i(m)^s, exactly for integer m (linear
  interpolation between ⌊m⌋ and ⌈m⌉ otherwise). ``sequences=1`` is the exact mean over all windows.

Beyond the trace's length (m > N) a window cannot be longer than the trace: W_i(m) is held at W_i(N), so the
count saturates at the number of experts the trace ever used. To extend a short trace use ``fit:PATH``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from capsim.routing._base import FloatArray, IntArray, chunks, step_geometry
from capsim.routing.analytics import expert_counts, occupancy
from capsim.routing.traces import Trace


class _GapTable:
    """Sorted gap lengths per (layer, expert), flattened, with prefix sums for O(log) window-miss queries."""

    def __init__(self, topk_ids: np.ndarray, num_experts: int) -> None:
        num_layers, num_tokens, _ = topk_ids.shape
        occ = occupancy(topk_ids, num_experts).transpose(0, 2, 1)  # (L, E, N)
        layer, expert, token = np.nonzero(occ)
        keys = layer * num_experts + expert
        n_keys = num_layers * num_experts
        all_keys = np.arange(n_keys)
        # sentinels at −1 and N close the first and last gaps of every expert
        keys = np.concatenate([keys, all_keys, all_keys])
        pos = np.concatenate([token, np.full(n_keys, -1), np.full(n_keys, num_tokens)])
        order = np.lexsort((pos, keys))
        keys, pos = keys[order], pos[order]
        same = keys[1:] == keys[:-1]
        gap_keys = keys[:-1][same]
        gaps = (pos[1:] - pos[:-1] - 1)[same]
        order = np.lexsort((gaps, gap_keys))
        self.keys, self.gaps = gap_keys[order], gaps[order].astype(np.int64)
        self.num_tokens = num_tokens
        self.shape = (num_layers, num_experts)
        stride = num_tokens + 2
        self._stride = stride
        self._composite = self.keys * stride + self.gaps
        self._ends = np.searchsorted(self.keys, np.arange(n_keys), side="right")
        self._csum = np.concatenate([[0], np.cumsum(self.gaps)])

    def window_miss(self, m: IntArray) -> FloatArray:
        """W_i(m) for integer window lengths m (1 ≤ m ≤ N), shape (L, E, len(m))."""
        n_keys = self.shape[0] * self.shape[1]
        keys = np.arange(n_keys)[:, None]
        q = keys * self._stride + m[None, :]
        idx = np.searchsorted(self._composite, q, side="left")  # first gap >= m within the key's block
        ends = self._ends[:, None]
        c0 = ends - idx
        c1 = self._csum[ends] - self._csum[idx]
        missed_windows = c1 - (m[None, :] - 1) * c0  # Σ_{g ≥ m} (g − m + 1)
        miss = missed_windows / (self.num_tokens - m[None, :] + 1)
        return np.asarray(miss.reshape(*self.shape, m.size), dtype=np.float64)


class TraceRouter:
    """Activated experts per layer from a recorded trace (see module docstring for the exact formulas)."""

    name = "trace"

    def __init__(self, trace: Trace, *, spec: str | None = None) -> None:
        self.trace = trace
        self.spec = spec or f"trace:{trace.name}"
        self.num_moe_layers = trace.num_layers
        self.num_experts = trace.num_experts
        self.top_k = trace.top_k
        self._counts: IntArray | None = None
        self._gaps: _GapTable | None = None

    @property
    def counts(self) -> IntArray:
        """n[l, i]: tokens routed to expert i at layer l over the trace."""
        if self._counts is None:
            self._counts = expert_counts(self.trace.topk_ids, self.num_experts)
        return self._counts

    @property
    def inclusion(self) -> FloatArray:
        """Empirical π[l, i] = n[l, i] / N."""
        return self.counts / float(self.trace.num_tokens)

    def activated_per_layer(self, tokens: ArrayLike, *, sequences: ArrayLike | None = None) -> FloatArray:
        """Expected distinct experts per layer for steps of ``tokens`` tokens (exact; module docstring)."""
        t, s, m = step_geometry(tokens, sequences)
        if sequences is None:
            return self._independent(t)
        return self._windows(s, m)

    def _independent(self, t: FloatArray) -> FloatArray:
        from scipy.special import (
            gammaln,  # deferred: scipy costs start-up time and only trace replay needs it
        )

        shape = t.shape
        tf, inverse = np.unique(t.ravel(), return_inverse=True)  # each distinct step size once
        n_total = float(self.trace.num_tokens)
        free = (n_total - self.counts)[:, :, None].astype(np.float64)  # tokens not using expert i
        out = np.empty((self.num_moe_layers, tf.size))
        for sl in chunks(tf.size, self.counts.size):
            t_q = np.minimum(
                tf[None, None, sl], n_total
            )  # a step cannot hold more distinct tokens than the trace
            ok = free - t_q > -1.0  # C(free, T) > 0 (T <= free); elsewhere no subset misses the expert
            with np.errstate(invalid="ignore"):
                # log C(free, T) − log C(N, T), with Γ for fractional T
                log_miss = (
                    gammaln(free + 1.0)
                    - gammaln(np.where(ok, free - t_q + 1.0, 1.0))
                    - gammaln(n_total + 1.0)
                    + gammaln(n_total - t_q + 1.0)
                )
            miss = np.where(ok, np.exp(np.minimum(log_miss, 0.0)), 0.0)
            out[:, sl] = self.num_experts - miss.sum(axis=1) + 0.0
        return out[:, inverse.ravel()].reshape((self.num_moe_layers, *shape))

    def _windows(self, s: FloatArray, m: FloatArray) -> FloatArray:
        if self._gaps is None:
            self._gaps = _GapTable(self.trace.topk_ids, self.num_experts)
        n = self.trace.num_tokens
        shape = s.shape
        pairs, inverse = np.unique(
            np.stack([s.ravel(), np.clip(m.ravel(), 1.0, float(n))]), axis=1, return_inverse=True
        )
        sf, mf = pairs[0], pairs[1]
        lo = np.floor(mf).astype(np.int64)
        hi = np.minimum(lo + 1, n)
        frac = mf - lo
        out = np.empty((self.num_moe_layers, sf.size))
        for sl in chunks(sf.size, self.num_moe_layers * self.num_experts * 2):
            w_lo = self._gaps.window_miss(lo[sl])
            w_hi = self._gaps.window_miss(hi[sl])
            miss = w_lo + (w_hi - w_lo) * frac[None, None, sl]
            with np.errstate(divide="ignore"):
                # 0^0 = 1: a step with s = 0 (T = 0) misses everything
                total_miss = np.power(miss, sf[None, None, sl])
            out[:, sl] = self.num_experts - total_miss.sum(axis=1)
        return out[:, inverse.ravel()].reshape((self.num_moe_layers, *shape))

    def describe(self) -> str:
        t = self.trace
        seen = int((self.counts > 0).sum(axis=1).min())
        return (
            f"trace {t.name} ({t.model_id}, {t.num_tokens} tokens): activated = E − Σ_i C(N−n_i, T)/C(N, T) "
            f"for a random subset of T trace tokens (exact); saturates at the experts the trace used (min {seen} "
            f"of {t.num_experts} per layer)"
        )

    def to_dict(self) -> dict[str, Any]:
        t = self.trace
        return {
            "name": self.name,
            "spec": self.spec,
            "path": None if t.path is None else str(t.path),
            "model_id": t.model_id,
            "num_moe_layers": t.num_layers,
            "num_experts": t.num_experts,
            "top_k": t.top_k,
            "num_tokens": t.num_tokens,
            "metadata": dict(t.metadata),
        }
