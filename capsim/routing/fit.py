"""Estimate synthetic-router parameters from a trace, so a short trace can be extended to any length.

Estimators (each documented with the model it assumes, see capsim.routing.synthetic):
- popularity: per-layer inclusion frequencies q_{l,i} = n_{l,i}/N, smoothed by one pseudo-token spread
  uniformly, π̂ = (n + k/E)/(N + 1) (rows still sum to k; never-seen experts keep a small chance).
- zipf exponent ŝ: least squares between each layer's frequencies sorted in decreasing order and the
  water-filled Zipf profile π(s) (sorting makes ŝ slightly positive for truly uniform routing).
- Dirichlet concentration α̂: method of moments. For w ~ Dirichlet(α·1_E), Var(w_i) = (1/E)(1 − 1/E)/(Eα + 1);
  the observed variance of q/k across experts is corrected for the binomial noise q(1 − q)/(N_eff·k²),
  N_eff = N(1 − ρ̂)/(1 + ρ̂). None when the spread is within noise (no measurable skew).
- reuse ρ̂ (layer 0, which affinity cannot touch): the rate f at which a token's set equals the previous
  token's, corrected for chance equality c (the rate between randomly paired tokens): ρ̂ = (f − c)/(1 − c).
- affinity â and the maps f_l: f_l maximises the co-occurrence count Σ_t [i ∈ S_l(t)]·[f_l(i) ∈ S_{l+1}(t)]
  (Hungarian assignment). Only tokens whose sets changed from the previous token at both layers l and l+1
  are used, so no copy is involved; among them a mapped token matches (S_{l+1} = f_l(S_l)) unless its image
  equals the previous set, and a fresh one matches by chance. With one chance rate c for every such
  coincidence (measured between randomly paired tokens), match = (a(1 − c) + (1 − a)c)/(1 − c), so
  â_l = (match·(1 − c) − c)/(1 − 2c); â is their mean. Independent of ρ̂.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from capsim.errors import TraceError
from capsim.routing._base import FloatArray, IntArray
from capsim.routing.analytics import expert_counts
from capsim.routing.popularity import empirical_popularity, water_fill
from capsim.routing.synthetic import SyntheticRouter

_FIT_SEED = 20240101
"""Seed of the random pairings that estimate chance rates: fixed so a fit is reproducible."""


@dataclass(frozen=True)
class TraceFit:
    """Parameters estimated from a trace (module docstring); :meth:`router` extends it to any length."""

    num_layers: int
    num_experts: int
    top_k: int
    num_tokens: int
    inclusion: FloatArray
    zipf_s: float
    dirichlet_alpha: float | None
    reuse: float
    affinity: float
    layer_affinity: FloatArray
    layer_maps: IntArray
    source: str

    def spec(self) -> str:
        """The closest parametric router spec string, e.g. ``zipf:1.17,reuse=0.12,affinity=0.3``."""
        parts = [f"zipf:{self.zipf_s:.3g}"]
        if self.reuse > 0:
            parts.append(f"reuse={self.reuse:.3g}")
        if self.affinity > 0:
            parts.append(f"affinity={self.affinity:.3g}")
        return ",".join(parts)

    def router(self, *, seed: int = 0, spec: str | None = None) -> SyntheticRouter:
        """A synthetic router with the measured per-layer popularity, ρ̂, â and the fitted maps."""
        pop = empirical_popularity(self.inclusion, self.layer_maps)
        return SyntheticRouter(
            pop,
            name="fit",
            spec=spec or f"fit:{self.source}",
            reuse=self.reuse,
            affinity=self.affinity,
            seed=seed,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "num_layers": self.num_layers,
            "num_experts": self.num_experts,
            "top_k": self.top_k,
            "num_tokens": self.num_tokens,
            "zipf_s": self.zipf_s,
            "dirichlet_alpha": self.dirichlet_alpha,
            "reuse": self.reuse,
            "affinity": self.affinity,
            "layer_affinity": self.layer_affinity.tolist(),
            "spec": self.spec(),
        }


def fit_trace(topk_ids: NDArray[np.integer[Any]], num_experts: int, *, source: str = "<trace>") -> TraceFit:
    """Fit popularity, Zipf exponent, Dirichlet concentration, reuse and affinity to ids (L, N, k)."""
    ids = np.asarray(topk_ids).astype(np.int64)
    num_layers, num_tokens, k = ids.shape
    if num_tokens < 2:
        raise TraceError(
            source, f"fitting needs at least 2 tokens, the trace has {num_tokens}; record a longer trace"
        )
    counts = expert_counts(ids, num_experts)
    inclusion = (counts + k / num_experts) / (num_tokens + 1.0)
    sets = np.sort(ids, axis=2)  # sets compare equal as sorted rows
    rng = np.random.default_rng(_FIT_SEED)
    reuse = _fit_reuse(sets[0], rng)
    freq = counts / float(num_tokens)
    zipf_s = _fit_zipf(freq, k)
    alpha = _fit_dirichlet(freq, k, num_tokens, reuse)
    maps, layer_aff = _fit_affinity(ids, sets, num_experts, reuse, rng)
    affinity = float(layer_aff.mean()) if layer_aff.size else 0.0
    return TraceFit(
        num_layers=num_layers,
        num_experts=num_experts,
        top_k=k,
        num_tokens=num_tokens,
        inclusion=inclusion,
        zipf_s=zipf_s,
        dirichlet_alpha=alpha,
        reuse=reuse,
        affinity=affinity,
        layer_affinity=layer_aff,
        layer_maps=maps,
        source=source,
    )


def _rows_equal(a: IntArray, b: IntArray) -> NDArray[np.bool_]:
    return np.asarray((a == b).all(axis=-1))


def _fit_reuse(sets0: IntArray, rng: np.random.Generator) -> float:
    same = float(_rows_equal(sets0[1:], sets0[:-1]).mean())
    chance = float(_rows_equal(sets0, sets0[rng.permutation(sets0.shape[0])]).mean())
    if chance >= 1.0:
        return 0.0
    return float(np.clip((same - chance) / (1.0 - chance), 0.0, 1.0))


def _fit_zipf(freq: FloatArray, k: int) -> float:
    num_experts = freq.shape[1]
    observed = -np.sort(-freq, axis=1)
    ranks = np.arange(1, num_experts + 1, dtype=np.float64)

    def loss(s: float) -> float:
        model = water_fill(ranks ** (-s), k)
        return float(((observed - model[None, :]) ** 2).sum())

    from scipy.optimize import minimize_scalar  # deferred: scipy.optimize adds ~0.5 s to every CLI start

    res = minimize_scalar(loss, bounds=(0.0, 6.0), method="bounded", options={"xatol": 1e-4})
    return float(res.x)


def _fit_dirichlet(freq: FloatArray, k: int, num_tokens: int, reuse: float) -> float | None:
    num_experts = freq.shape[1]
    w = freq / k
    # Σ_i w_i = 1 exactly, so the mean 1/E is known and no degree of freedom is lost
    observed_var = float(((w - 1.0 / num_experts) ** 2).mean())
    n_eff = num_tokens * (1.0 - reuse) / (1.0 + reuse) if reuse < 1.0 else 1.0
    noise = float((freq * (1.0 - freq)).mean() / (max(n_eff, 1.0) * k * k))
    signal = observed_var - noise
    if signal <= 0:
        return None
    return float(((1.0 / num_experts) * (1.0 - 1.0 / num_experts) / signal - 1.0) / num_experts)


def _fit_affinity(
    ids: IntArray, sets: IntArray, num_experts: int, reuse: float, rng: np.random.Generator
) -> tuple[IntArray, FloatArray]:
    num_layers, num_tokens, _ = ids.shape
    maps = np.empty((max(num_layers - 1, 0), num_experts), dtype=np.int64)
    aff = np.zeros(max(num_layers - 1, 0))
    for layer in range(num_layers - 1):
        a_ids, b_ids = ids[layer], ids[layer + 1]
        pairs = (a_ids[:, :, None] * num_experts + b_ids[:, None, :]).ravel()
        co = np.bincount(pairs, minlength=num_experts * num_experts).reshape(num_experts, num_experts)
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(-co)
        f = np.empty(num_experts, dtype=np.int64)
        f[rows] = cols
        maps[layer] = f
        image = np.sort(f[a_ids], axis=1)
        changed = np.zeros(num_tokens, dtype=bool)
        changed[1:] = ~_rows_equal(sets[layer][1:], sets[layer][:-1]) & ~_rows_equal(
            sets[layer + 1][1:], sets[layer + 1][:-1]
        )
        if changed.sum() < 2:
            continue
        match = float(_rows_equal(image[changed], sets[layer + 1][changed]).mean())
        chance = float(_rows_equal(image, sets[layer + 1][rng.permutation(num_tokens)]).mean())
        if chance < 0.5:
            aff[layer] = float(np.clip((match * (1.0 - chance) - chance) / (1.0 - 2.0 * chance), 0.0, 1.0))
    return maps, aff
