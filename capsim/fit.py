"""``capsim fit``: the fastest way to run a model on given hardware, and the limits of what fits.

- :func:`placements`: predicts every execution mode that applies (GPU-resident at the fewest devices that
  hold the model, expert offload, CPU experts, CPU-only) and ranks them by TPOT; modes that cannot run are
  listed with the reason.
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
from .memory import max_batch_that_fits
from .scenario import Scenario

MODES_TRIED = ("gpu", "offload", "cpu-experts", "cpu")


@dataclass(frozen=True)
class PlacementResult:
    mode: str
    gpus: int | None
    tpot_s: float | None
    ttft_s: float | None
    decode_tokens_per_s: float | None
    detail: str
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def placements(base: Scenario, db: HardwareDB) -> list[PlacementResult]:
    """Every applicable mode for ``base``'s model and hardware, fastest first (failures last, with reasons)."""
    results: list[PlacementResult] = []
    for mode in MODES_TRIED:
        sc = replace(base, mode=mode)
        try:
            pred = predict(sc, hardware_db=db)
        except CapsimError as exc:
            results.append(PlacementResult(mode, base.gpus, None, None, None, "", str(exc)))
            continue
        dep = pred.deployment
        detail = {
            "gpu": f"all weights on {pred.scenario['gpus']} device(s)",
            "offload": f"expert cache {dep.get('cache_experts')} experts, hit rate {100 * dep.get('hit_rate', 0):.0f}%",
            "cpu-experts": f"experts on {dep.get('cpu')} ({dep.get('cpu_bandwidth_gb_s', 0):.0f} GB/s)",
            "cpu": f"CPU only ({pred.assumptions['hardware']['id']})",
        }[mode]
        results.append(PlacementResult(mode, pred.scenario["gpus"], pred.tpot_s, pred.ttft_s,
                                       pred.decode_tokens_per_s, detail))
    return sorted(results, key=lambda r: (r.error is not None, r.tpot_s if r.tpot_s is not None else np.inf))


def max_batch_at(base: Scenario, db: HardwareDB) -> int:
    """Largest batch whose weights, buffers and KV cache fit at ``base``'s prompt and generated lengths."""
    rs, _ = resolve(replace(base, batch=1), db)
    # buffers grow with the batch (logits), so check the candidate batch itself, not batch 1
    candidate = int(max_batch_that_fits(rs, 1, base.prompt_len, base.gen_len)[0][()])
    while candidate > 0 and max_batch_that_fits(rs, candidate, base.prompt_len, base.gen_len)[0][()] < candidate:
        candidate -= max(1, candidate // 64)
    return candidate


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
