"""Seedable synthetic routers: a per-layer popularity profile plus temporal reuse and cross-layer affinity.

Generative model, per MoE layer l and token t of one sequence (parameters ρ = ``reuse``, a = ``affinity``):

1. with probability ρ the token repeats the previous token's expert set at this layer (temporal reuse);
2. otherwise, for l ≥ 1 and with probability a, it takes the image f_l(S_{l−1}) of its own set at the
   previous layer under a fixed expert permutation f_l (cross-layer affinity: "expert i at layer l predicts
   expert f_l(i) at layer l+1");
3. otherwise it draws a fresh set from the layer's fresh-draw distribution.

f_l maps the r-th most popular expert of layer l to the r-th of layer l+1. When layer profiles differ (Dirichlet,
empirical), the fresh-draw inclusion vector is adjusted to ν = (π_{l+1} − a·π_l∘f_l⁻¹)/(1 − a) so that every
token's marginal inclusion at layer l stays exactly π_l; where that would need ν < 0 the affinity of that layer
is lowered to the largest value that keeps ν valid (reported as ``effective_affinity``).

Expected distinct experts for a step of T tokens from s sequences (m = T/s consecutive tokens each):
- independent tokens (s = T, decode): Σ_i 1 − (1 − π_i)^T, exact for every router here (marginals are exact
  and tokens of different sequences are independent);
- runs (s < T): Σ_i 1 − [(1 − π_i)·(1 − ν_l·π_i)^(m−1)]^s, where ν_l is the probability that a token brings
  a new expert set rather than one already seen earlier in its run. With a = 0, ν_l = 1 − ρ and the formula is
  exact (each run is 1 + Binomial(m−1, 1−ρ) independent draws, and E[x^Binomial(n,p)] = (1−p+px)^n). With
  affinity it is an estimator that keeps only repeats of the immediate predecessor (a renewal approximation):
  ν_0 = 1 − ρ; β_l = (1 − ρ)·a_l / (1 − ρ·(1 − ν_{l−1})) is the probability that a token's layer-l set is the
  image of its own layer-(l−1) set (mapped now, or copied from a predecessor that was, with the same layer-(l−1)
  set); a mapped token repeats its predecessor's set when its layer-(l−1) set repeated (1 − ν_{l−1}) and the
  predecessor carries the image (β_l), so ν_l = (1 − ρ)·(1 − a_l·(1 − ν_{l−1})·β_l). Against Monte Carlo
  (tests/test_routing_synthetic.py) it is within 5 % for ρ, a ≤ 0.9.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from capsim.errors import ScenarioError
from capsim.routing._base import FloatArray, IntArray, expected_activated_iid_runs, step_geometry
from capsim.routing.popularity import GroupPopularity, Popularity


class SyntheticRouter:
    """A router defined by a :class:`Popularity` profile, temporal ``reuse`` ρ and cross-layer ``affinity`` a."""

    def __init__(
        self,
        popularity: Popularity,
        *,
        name: str,
        spec: str,
        reuse: float = 0.0,
        affinity: float = 0.0,
        seed: int = 0,
    ) -> None:
        for label, value in (("reuse", reuse), ("affinity", affinity)):
            if not (np.isfinite(value) and 0.0 <= value <= 1.0):
                raise ScenarioError(f"{label} must be a probability in [0, 1], got {value}; e.g. {label}=0.3")
        self.popularity = popularity
        self.name = name
        self.spec = spec
        self.reuse = float(reuse)
        self.affinity = float(affinity)
        self.seed = seed
        self.num_moe_layers = popularity.num_layers
        self.num_experts = popularity.num_experts
        self.top_k = popularity.top_k
        self.effective_affinity, self.fresh_inclusion = self._affinity_adjustment()
        self.new_origin = self._new_origin_probability()

    # ---- model structure ---------------------------------------------------------------------------------
    @property
    def inclusion(self) -> FloatArray:
        """π: (L, E) probability that one token's top-k set at layer l contains expert i (rows sum to k)."""
        return self.popularity.inclusion

    def _affinity_adjustment(self) -> tuple[FloatArray, FloatArray]:
        pi, maps = self.popularity.inclusion, self.popularity.layer_maps
        num_layers = pi.shape[0]
        eff = np.zeros(num_layers)
        fresh = pi.copy()
        if self.affinity == 0.0:
            return eff, fresh
        for layer in range(1, num_layers):
            image = np.empty_like(pi[layer])
            image[maps[layer - 1]] = pi[layer - 1]  # inclusion of f(S_{l-1}) at layer l
            if np.allclose(image, pi[layer], rtol=0, atol=1e-12):
                eff[layer] = self.affinity
                continue
            if not self.popularity.supports_custom_inclusion:
                raise ScenarioError("affinity is not supported with this popularity profile; drop affinity=")
            with np.errstate(divide="ignore", invalid="ignore"):
                lo = np.where(image > 0, pi[layer] / image, np.inf)  # keeps ν >= 0
                hi = np.where(image < 1, (1 - pi[layer]) / (1 - image), np.inf)  # keeps ν <= 1
            a = min(self.affinity, float(lo.min()), float(hi.min()))
            eff[layer] = a
            if a < 1.0:
                nu = np.clip((pi[layer] - a * image) / (1.0 - a), 0.0, 1.0)
                fresh[layer] = nu * (pi[layer].sum() / nu.sum())
        return eff, fresh

    def _new_origin_probability(self) -> FloatArray:
        nu = np.empty(self.num_moe_layers)
        previous = 1.0
        rho = self.reuse
        for layer in range(self.num_moe_layers):
            a = self.effective_affinity[layer] if layer > 0 else 0.0
            if layer == 0 or a == 0.0 or rho >= 1.0:
                nu[layer] = 1.0 - rho
            else:
                beta = (1.0 - rho) * a / (1.0 - rho * (1.0 - previous))
                nu[layer] = (1.0 - rho) * (1.0 - a * (1.0 - previous) * beta)
            previous = nu[layer]
        return nu

    # ---- analytics ---------------------------------------------------------------------------------------
    def activated_per_layer(self, tokens: ArrayLike, *, sequences: ArrayLike | None = None) -> FloatArray:
        """Expected distinct experts per layer for steps of ``tokens`` tokens from ``sequences`` sequences.

        See the module docstring for the formulas; None = one token per sequence (decode).
        """
        t, s, m = step_geometry(tokens, sequences)
        return expected_activated_iid_runs(self.inclusion, self.new_origin, t, s, m)

    def expected_load_imbalance(self) -> FloatArray:
        """max_i π_i / mean_i π_i per layer: the long-run max/mean tokens per expert (1 = perfectly even)."""
        pi = self.inclusion
        return np.asarray(pi.max(axis=1) / pi.mean(axis=1))

    def activated_groups_per_layer(
        self, tokens: ArrayLike, *, sequences: ArrayLike | None = None
    ) -> FloatArray:
        """Expected distinct expert groups touched per layer (group-limited routing only): Σ_g 1 − (1 − ρ_g)^T."""
        pop = self.popularity
        if not isinstance(pop, GroupPopularity):
            raise ScenarioError(f"router {self.spec!r} is not group-limited; use group:... for group counts")
        t, s, m = step_geometry(tokens, sequences)
        return expected_activated_iid_runs(pop.group_inclusion, self.new_origin, t, s, m)

    # ---- sampling ----------------------------------------------------------------------------------------
    def sample(self, num_tokens: int, *, seed: int | None = None) -> IntArray:
        """Draw a trace of ``num_tokens`` consecutive tokens of one sequence: ids of shape (L, N, k).

        Deterministic for a given ``seed`` (default: the router's seed).
        """
        if num_tokens < 1:
            raise ScenarioError(
                f"a trace needs at least 1 token, got {num_tokens}; pass --tokens N with N >= 1"
            )
        _check_sample_size(self.num_moe_layers, num_tokens, self.top_k)
        rng = np.random.default_rng(self.seed if seed is None else seed)
        try:
            out = np.empty((self.num_moe_layers, num_tokens, self.top_k), dtype=np.int64)
        except MemoryError:
            raise ScenarioError(_too_large(self.num_moe_layers, num_tokens, self.top_k)) from None
        pop = self.popularity
        for layer in range(self.num_moe_layers):
            custom = (
                None
                if np.array_equal(self.fresh_inclusion[layer], pop.inclusion[layer])
                else self.fresh_inclusion[layer]
            )
            sets = pop.draw(layer, num_tokens, rng, custom)
            a = self.effective_affinity[layer]
            if layer > 0 and a > 0:
                mapped = pop.layer_maps[layer - 1][out[layer - 1]]
                use = rng.random(num_tokens) < a
                sets[use] = mapped[use]
            if self.reuse > 0:
                copy = rng.random(num_tokens) < self.reuse
                copy[0] = False  # the first token has no predecessor
                idx = np.arange(num_tokens)
                # each copying token takes the set of the latest non-copying token before it
                src = np.maximum.accumulate(np.where(copy, 0, idx))
                sets = sets[src]
            out[layer] = sets
        return out

    # ---- reporting ---------------------------------------------------------------------------------------
    def describe(self) -> str:
        parts = [f"{self.spec}: {self._profile_text()}, E={self.num_experts}, k={self.top_k}"]
        if self.reuse:
            parts.append(f"a token repeats the previous token's experts with probability {self.reuse:g}")
        if self.affinity:
            parts.append(f"layer l's experts predict layer l+1's with probability {self.affinity:g}")
        parts.append("activated = Σ_i 1−(1−π_i)^T for independent tokens")
        return "; ".join(parts)

    def _profile_text(self) -> str:
        p = self.popularity.params
        if self.name == "uniform" or (not p and self.popularity.kind == "independent"):
            return "uniform popularity (the bound: real routers activate fewer experts)"
        if "s" in p:
            return f"Zipf popularity, exponent {p['s']:g}, ranks shuffled per layer (seed {self.seed})"
        if "alpha" in p:
            return f"Dirichlet({p['alpha']:g}) popularity drawn per layer (seed {self.seed})"
        if "hot" in p:
            return f"{p['hot']} hot experts per layer take {p['share']:.0%} of the routing mass (seed {self.seed})"
        if "n_group" in p:
            return (
                f"group-limited: {p['topk_group']} of {p['n_group']} groups per token, experts uniform "
                f"within groups (group skew {p['group_s']:g})"
            )
        return "popularity measured on a trace"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "spec": self.spec,
            "num_moe_layers": self.num_moe_layers,
            "num_experts": self.num_experts,
            "top_k": self.top_k,
            "seed": self.seed,
            "reuse": self.reuse,
            "affinity": self.affinity,
        }
        d.update({k: v for k, v in self.popularity.params.items() if k != "empirical"})
        if self.affinity and not np.allclose(self.effective_affinity[1:], self.affinity):
            d["effective_affinity"] = self.effective_affinity.tolist()
        return d


class UniformRouter(SyntheticRouter):
    """Independent uniform routing: the optimistic bound (fewest tokens per expert, most experts read)."""

    def __init__(self, num_moe_layers: int, num_experts: int, top_k: int) -> None:
        from capsim.routing.popularity import uniform_popularity

        super().__init__(
            uniform_popularity(num_moe_layers, num_experts, top_k), name="uniform", spec="uniform"
        )

    def describe(self) -> str:
        return (
            f"uniform independent routing, E·(1−(1−k/E)^T) with E={self.num_experts}, k={self.top_k} "
            "(optimistic bound: real routers activate fewer experts)"
        )


def _physical_memory_bytes() -> float | None:
    """This machine's RAM in bytes, or None where the OS does not say (then only MemoryError guards)."""
    import os

    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def _too_large(num_layers: int, num_tokens: int, top_k: int) -> str:
    from capsim.units import GB

    need = num_layers * num_tokens * top_k * np.dtype(np.int64).itemsize
    return (
        f"a trace of {num_tokens:,} tokens holds {num_layers} x {num_tokens:,} x {top_k} expert ids "
        f"({need / GB:,.1f} GB in memory), more than this machine can sample; use fewer --tokens"
    )


def _check_sample_size(num_layers: int, num_tokens: int, top_k: int) -> None:
    """Refuse a sample whose id array alone exceeds half of the RAM: numpy may over-commit and the OS would
    kill the process later instead of raising."""
    ram = _physical_memory_bytes()
    need = float(num_layers) * num_tokens * top_k * np.dtype(np.int64).itemsize
    if ram is not None and need > ram / 2:
        raise ScenarioError(_too_large(num_layers, num_tokens, top_k))
