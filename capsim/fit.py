"""``capsim fit``: the fastest way to run a model on given hardware, and the limits of what fits.

- :func:`placements`: predicts every execution mode that applies (GPU-resident at the fewest devices that
  hold the model; expert offload and CPU experts, each with ``--placement auto`` -- as many of the hottest
  experts on the GPU as fit -- and with every expert off the GPU; CPU-only) and ranks them by TPOT; modes that
  cannot run are listed with the reason. An auto placement that keeps every expert on the GPU is the GPU mode
  and is listed once.
- :func:`max_batch_at` / :func:`max_context_at`: the largest batch whose KV cache fits at a context, and the
  longest context (prompt + generated) that fits at a batch, from the same memory plan predict uses.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .engine import predict, resolve
from .errors import CapsimError
from .hardware import HardwareDB
from .memory import largest_batch, max_batch_that_fits
from .scenario import Scenario

CANDIDATES: tuple[tuple[str, str | None], ...] = (
    ("gpu", None), ("offload", "auto"), ("offload", None), ("cpu-experts", "auto"), ("cpu-experts", None),
    ("cpu", None),
)
"""(mode, --placement) pairs tried; None = the mode's default placement (every expert off the GPU)."""


@dataclass(frozen=True)
class PlacementResult:
    """One candidate's outcome: its mode and placement, speed, and what it put where (or why it failed)."""

    mode: str
    placement: str | None
    gpus: int | None
    tpot_s: float | None
    ttft_s: float | None
    decode_tokens_per_s: float | None
    detail: str
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def placements(base: Scenario, db: HardwareDB) -> list[PlacementResult]:
    """Every applicable (mode, placement) for ``base``'s model and hardware, fastest first (failures last, with
    their reasons)."""
    results: list[PlacementResult] = []
    seen: set[tuple[str, str]] = set()
    for mode, placement in CANDIDATES:
        sc = replace(base, mode=mode, placement=placement)
        try:
            pred = predict(sc, hardware_db=db)
        except CapsimError as exc:
            results.append(PlacementResult(mode, placement, base.gpus, None, None, None, "", str(exc)))
            continue
        dep = pred.deployment
        detail = _detail(pred.deployment["mode"], dep, pred)
        key = (dep["mode"], detail)
        if key in seen:
            continue  # e.g. auto placement that keeps every expert on the GPU = the gpu row
        seen.add(key)
        results.append(PlacementResult(dep["mode"], placement, pred.scenario["gpus"], pred.tpot_s, pred.ttft_s,
                                       pred.decode_tokens_per_s, detail))
    return sorted(results, key=lambda r: (r.error is not None, r.tpot_s if r.tpot_s is not None else np.inf))


def _detail(mode: str, dep: dict[str, Any], pred: Any) -> str:
    tiers = dep.get("tiers", {})
    where = ", ".join(f"{t['experts']} experts on {name}" for name, t in tiers.items() if t["experts"])
    if mode == "gpu":
        return f"all weights on {pred.scenario['gpus']} device(s)"
    if mode == "cpu-experts":
        return f"{where}; CPU {dep.get('cpu')} ({dep.get('cpu_bandwidth_gb_s', 0):.0f} GB/s)"
    if "cache_experts" in dep:
        return f"{where}; cache {dep['cache_experts']} experts, cache hit rate {100 * dep['hit_rate']:.0f}%"
    return f"CPU only ({pred.assumptions['hardware']['id']})"


def max_batch_at(base: Scenario, db: HardwareDB) -> int:
    """Largest batch whose weights, buffers and KV cache fit at ``base``'s prompt and generated lengths."""
    rs, _ = resolve(replace(base, batch=1), db)
    return int(largest_batch(rs, base.prompt_len, base.gen_len))  # the one authority predict/plan/sweep use


def max_context_at(base: Scenario, db: HardwareDB, limit: int = 1 << 24) -> int:
    """Longest context (prompt + generated tokens) at which ``base.batch`` sequences fit (0 if none)."""
    rs, _ = resolve(replace(base, batch=1, prompt_len=1, gen_len=1), db)
    model_limit = rs.model.max_context or limit

    def fits(context: int) -> bool:
        return bool(max_batch_that_fits(rs, base.batch, max(context - 1, 1), 1)[0][()] >= base.batch)

    if not fits(2):
        return 0
    lo, hi = 2, 2
    while hi < limit and fits(hi):
        lo, hi = hi, hi * 2
    if hi >= limit and fits(limit):
        return limit
    while hi - lo > 1:  # fits(lo) and not fits(hi)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return min(lo, model_limit) if model_limit else lo
