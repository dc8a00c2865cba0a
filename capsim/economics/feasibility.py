"""``capsim fit``: the fastest way to run a model on given hardware, and the limits of what fits.

- :func:`placements`: predicts every execution mode that applies (GPU-resident at the fewest devices that
  hold the model; expert offload and CPU experts, each with ``--placement auto`` -- as many of the hottest
  experts on the GPU as fit -- and with every expert off the GPU; CPU-only) and ranks them by TPOT; modes that
  cannot run are listed with the reason. An auto placement that keeps every expert on the GPU is the GPU mode
  and is listed once.
  For a MoE model on a node of N > 1 devices (the GPU mode's N) it also predicts the parallel layouts of MoE
  serving (:data:`LAYOUTS`: plain TP, TP with EP, attention DP with EP, TP x attention DP with EP), each checked
  by the scenario validation layer (an impossible layout is listed with its reason) and ranked with the modes.
- :func:`max_batch_at` / :func:`max_context_at`: the largest batch whose KV cache fits at a context, and the
  longest context (prompt + generated) that fits at a batch, from the same memory plan predict uses.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from capsim.engine.memory import largest_batch, max_batch_that_fits
from capsim.engine.predict import predict
from capsim.engine.reports import DeploymentReport
from capsim.engine.resolve import resolve
from capsim.engine.scenario import Scenario
from capsim.errors import CapsimError
from capsim.hardware.db import HardwareDB

CANDIDATES: tuple[tuple[str, str | None], ...] = (
    ("gpu", None),
    ("offload", "auto"),
    ("offload", None),
    ("cpu-experts", "auto"),
    ("cpu-experts", None),
    ("cpu", None),
)
"""(mode, --placement) pairs tried; None = the mode's default placement (every expert off the GPU)."""

LAYOUTS: tuple[tuple[str, str], ...] = (
    ("N", "1"),  # plain TP over the node: experts tensor-parallel (the GPU mode's default layout)
    ("N", "N"),  # TP with EP: each device holds whole experts, all-to-all dispatch
    ("1", "N"),  # attention DP + EP (tp=1): each device its own sequences and KV, experts split whole
    ("N/2", "N"),  # TP N/2 x attention DP 2 + EP (SGLang --tp N --dp 2 --enable-dp-attention)
)
"""(tp, ep) of the GPU layouts tried at N devices of one node; attention DP = N / tp. N/2 only for even N."""


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
    layout: str | None = None
    """GPU modes: the parallel layout, e.g. ``TP1 attn-DP8 EP8`` (tensor, attention-data and expert parallel)."""
    options: dict[str, Any] | None = None
    """Layout candidates: the Scenario fields that select the layout (tp, attention_dp, ep, pp, dp)."""

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def placements(base: Scenario, db: HardwareDB) -> list[PlacementResult]:
    """Every applicable (mode, placement) for ``base``'s model and hardware, and for a MoE model on N > 1
    devices every layout of :data:`LAYOUTS`; fastest first (failures last, with their reasons)."""
    results: list[PlacementResult] = []
    seen: set[tuple[Any, ...]] = set()

    def attempt(
        sc: Scenario, layout: str | None, options: dict[str, Any] | None = None
    ) -> PlacementResult | None:
        try:
            pred = predict(sc, hardware_db=db)
        except CapsimError as exc:
            key: tuple[Any, ...] = ("error", sc.mode, layout, str(exc))
            if key in seen:
                return None  # the plain-TP layout that is the gpu row, failing the same way
            seen.add(key)
            res = PlacementResult(
                sc.mode, sc.placement, sc.gpus, None, None, None, "", str(exc), layout, options
            )
            results.append(res)
            return res
        dep = pred.deployment
        detail = _detail(dep["mode"], dep, pred)
        if dep["mode"] == "gpu":
            layout = layout_label(pred.assumptions["layout"])
        key = (dep["mode"], layout, detail)
        if key in seen:
            return None  # auto placement that keeps every expert on the GPU = the gpu row; plain TP = the gpu row
        seen.add(key)
        res = PlacementResult(
            dep["mode"],
            sc.placement,
            pred.scenario["gpus"],
            pred.tpot_s,
            pred.ttft_s,
            pred.decode_tokens_per_s,
            detail,
            None,
            layout,
            options,
        )
        results.append(res)
        return res

    gpu_row = None
    for mode, placement in CANDIDATES:
        sc = replace(base, mode=mode, placement=placement)
        res = attempt(sc, _requested_layout(sc) if mode == "gpu" else None)
        if mode == "gpu":
            gpu_row = res
    for sc in layout_scenarios(base, gpu_row.gpus if gpu_row is not None else None):
        attempt(
            sc, _requested_layout(sc), {k: getattr(sc, k) for k in ("tp", "attention_dp", "ep", "pp", "dp")}
        )
    return sorted(results, key=lambda r: (r.error is not None, r.tpot_s if r.tpot_s is not None else np.inf))


def layout_scenarios(base: Scenario, gpu_devices: int | None) -> list[Scenario]:
    """The GPU-mode scenarios of :data:`LAYOUTS` at N devices of one node: N = ``base.gpus`` if given, else
    the devices the GPU mode chose. None for dense models, one device, several nodes or unknown N."""
    from capsim.models.db import resolve_model

    n = base.gpus or gpu_devices
    if not n or n < 2 or base.nodes != 1:
        return []
    try:
        model = base.model if not isinstance(base.model, str) else resolve_model(base.model)
    except CapsimError:
        return []  # an unknown model: the mode rows already carry the reason
    if getattr(model, "moe", None) is None:
        return []
    out: list[Scenario] = []
    for tp_text, ep_text in LAYOUTS:
        if tp_text == "N/2" and n % 2:
            continue
        tp = {"N": n, "N/2": n // 2, "1": 1}[tp_text]
        ep = n if ep_text == "N" else 1
        if any(sc.tp == tp and sc.ep == ep for sc in out):
            continue  # N = 2: TP N/2 x attention-DP 2 is attention-DP N
        out.append(
            replace(
                base,
                mode="gpu",
                placement=None,
                gpus=n,
                tp=tp,
                attention_dp=n // tp,
                ep=ep,
                pp=1,
                dp=1,
                two_batch_overlap=False,
            )
        )
    return out


def layout_label(layout: dict[str, int]) -> str:
    """``TP4 attn-DP2 EP8`` (TP always; attention DP, EP, PP and DP when > 1)."""
    parts = [f"TP{layout['tp']}"]
    parts += [
        f"{name}{layout[key]}"
        for key, name in (("attention_dp", "attn-DP"), ("ep", "EP"), ("pp", "PP"), ("dp", "DP"))
        if layout.get(key, 1) > 1
    ]
    return " ".join(parts)


def _requested_layout(sc: Scenario) -> str | None:
    """The label of the layout ``sc`` asks for (tp defaulting to what the other degrees leave), when known
    without resolving; used for candidates that fail."""
    if not sc.gpus:
        return None
    rest = sc.attention_dp * sc.pp * sc.dp
    tp = (
        sc.tp
        if sc.tp is not None
        else (sc.gpus * sc.nodes // rest if (sc.gpus * sc.nodes) % rest == 0 else None)
    )
    if tp is None:
        return None
    return layout_label({"tp": tp, "attention_dp": sc.attention_dp, "ep": sc.ep, "pp": sc.pp, "dp": sc.dp})


def _detail(mode: str, dep: DeploymentReport, pred: Any) -> str:
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
