"""The router interface and the step geometry shared by every router.

A *step* pushes ``T`` tokens through a MoE layer. Those tokens come from ``s`` sequences (decode: one token
from each of the batch's sequences, s = T; a prefill chunk: runs of consecutive tokens from a few prompts).
Tokens of different sequences are independent draws from the layer's stationary routing distribution;
consecutive tokens of one sequence may be correlated (temporal reuse). Every router therefore answers
``activated_per_layer(tokens, sequences=None)``; ``sequences=None`` means every token comes from its own
sequence (the decode case and the convention of the classic closed form E·(1 − (1 − k/E)^T)).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from capsim.errors import ScenarioError

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

_CHUNK_ELEMENTS = 1 << 22
"""Largest (layers x experts x step-sizes) block evaluated at once: bounds memory on big sweeps (32 MiB)."""


@runtime_checkable
class Router(Protocol):
    """A routing model. ``activated_per_layer`` is the only method the engine needs."""

    name: str
    num_moe_layers: int
    num_experts: int
    top_k: int

    def activated_per_layer(self, tokens: ArrayLike, *, sequences: ArrayLike | None = None) -> FloatArray:
        """Expected distinct routed experts activated per MoE layer by a step of ``tokens`` tokens.

        ``sequences``: how many independent sequences the step's tokens come from (broadcast with
        ``tokens``); None = every token from its own sequence (decode). Returns an array of shape
        ``(num_moe_layers, *broadcast_shape)``; entries lie in [min(k, E), E] for tokens ≥ 1 and are 0 for
        tokens = 0.
        """
        ...

    def describe(self) -> str:
        """One line for the assumptions block."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """Parameters, for ``--json``."""
        ...


def step_geometry(
    tokens: ArrayLike, sequences: ArrayLike | None
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Broadcast ``tokens`` (T) and ``sequences`` (s) and return (T, s_eff, m) with m = T / s_eff tokens per run.

    s_eff = T when ``sequences`` is None (one token per sequence), else min(s, T): a step cannot have more
    non-empty sequences than tokens. For T = 0, s_eff = 0 and m = 1 (so every formula yields 0 activated).
    """
    t = np.asarray(tokens, dtype=np.float64)
    if not np.all(np.isfinite(t)) or np.any(t < 0):
        raise ScenarioError(
            f"tokens per step must be finite and >= 0, got {_show(t)}; pass a batch or chunk size"
        )
    if sequences is None:
        s = t.copy()
    else:
        s_in = np.asarray(sequences, dtype=np.float64)
        if not np.all(np.isfinite(s_in)) or np.any(s_in < 1):
            raise ScenarioError(
                f"sequences per step must be >= 1, got {_show(s_in)}; pass at least one sequence"
            )
        t, s_in = np.broadcast_arrays(t, s_in)
        s = np.minimum(s_in, t)
    with np.errstate(divide="ignore", invalid="ignore"):
        m = np.where(s > 0, t / np.where(s > 0, s, 1.0), 1.0)
    return np.array(t), np.array(s), np.array(m)


def _show(a: FloatArray) -> str:
    flat = a.ravel()
    bad = flat[~np.isfinite(flat) | (flat < 1)] if flat.size else flat
    return repr(float(bad[0])) if bad.size else repr(flat[:3].tolist())


def chunks(n: int, per_item: int) -> list[slice]:
    """Slices of ``range(n)`` so that each block holds at most ~_CHUNK_ELEMENTS values of ``per_item`` each."""
    step = max(1, _CHUNK_ELEMENTS // max(per_item, 1))
    return [slice(i, min(i + step, n)) for i in range(0, max(n, 0), step)] or [slice(0, 0)]


def expected_activated_iid_runs(
    inclusion: FloatArray, new_origin: FloatArray, t: FloatArray, s: FloatArray, m: FloatArray
) -> FloatArray:
    """Σ_i 1 − [(1 − π_i)·(1 − ν·π_i)^(m−1)]^s per layer, over flattened step sizes.

    ``inclusion`` π: (L, E) probability that a token's top-k set contains expert i (Σ_i π_i = k).
    ``new_origin`` ν: (L,) probability that a token of a run draws a new expert set rather than repeating
    the previous token's (1 − reuse; see SyntheticRouter). With ν = 1 this is Σ_i 1 − (1 − π_i)^T, exact
    for independent tokens. ``t``, ``s``, ``m``: from :func:`step_geometry`, any shape. Returns (L, *shape).
    """
    shape = t.shape
    num_layers, num_experts = inclusion.shape
    if num_layers > 1 and np.all(new_origin == new_origin[:1]):
        ordered = np.sort(inclusion, axis=1)
        if np.all(ordered == ordered[:1]):
            # every layer holds the same profile, possibly on other experts (uniform; a Zipf profile shuffled per
            # layer, as the default routers): the sum over experts does not depend on which expert has which π,
            # so evaluate one layer (its sorted row) and broadcast; sweeps ask this a lot
            one = expected_activated_iid_runs(ordered[:1], new_origin[:1], t, s, m)
            return np.broadcast_to(one, (num_layers, *shape)).copy()
    if np.all(new_origin == 1.0):
        # no reuse: a run of m tokens is m independent tokens, so only T = s·m matters
        s, m = t, np.ones_like(t)
    # engine sweeps repeat the same step size many times (every decode step of a wave): evaluate each once
    pairs, inverse = np.unique(np.stack([s.ravel(), m.ravel()]), axis=1, return_inverse=True)
    sf, mf = pairs[0], pairs[1]
    # π = 1 would make 0·log(0) = nan at T = 0; a 1e-12 shortfall changes A by < E·1e-12
    pi = np.clip(inclusion, 0.0, 1.0 - 1e-12)
    log_first = np.log1p(-pi)[:, :, None]  # (L, E, 1)
    log_next = np.log1p(-new_origin[:, None, None] * pi[:, :, None])
    out = np.empty((num_layers, sf.size))
    for sl in chunks(sf.size, num_layers * num_experts):
        log_miss = sf[None, None, sl] * (log_first + (mf[None, None, sl] - 1.0) * log_next)
        # a sequential sum (cumsum) over experts, not numpy's pairwise/SIMD one, whose grouping depends on the
        # array's shape: each column's bits are then the same whatever else is in the call, so values can be
        # cached per step shape (capsim.engine.predict) and a sweep's rows do not depend on their chunk
        out[:, sl] = -np.cumsum(np.expm1(log_miss), axis=1)[:, -1, :] + 0.0  # + 0.0 turns -0.0 into 0.0
    return out[:, inverse.ravel()].reshape((num_layers, *shape))


def uniform_expected_activated(num_experts: int, top_k: int, tokens: ArrayLike) -> FloatArray:
    """E·(1 − (1 − k/E)^T), vectorised over ``tokens``: expected distinct experts under uniform routing.

    Each token picks k distinct experts uniformly at random, tokens independent: an expert is missed by one
    token with probability 1 − k/E and by all T tokens with probability (1 − k/E)^T.
    """
    t = np.asarray(tokens, dtype=np.float64)
    e = float(num_experts)
    miss = 1.0 - top_k / e
    # expm1/log1p keep precision when k/E is tiny and T large
    if miss <= 0.0:
        return np.where(t > 0, e, 0.0)
    return np.asarray(-e * np.expm1(t * np.log1p(-top_k / e)), dtype=np.float64)
