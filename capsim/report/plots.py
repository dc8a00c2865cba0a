"""Plots written to PNG and SVG files (matplotlib, Agg canvas; nothing is shown on screen).

- The **CAP radar** (MoE-CAP, reference/moecap.md §5; ``plot_drawer/draw_radar.py`` of
  sparse-generative-ai/open-moe-llm-leaderboard): three axes, each mapped onto [floor = 20, 100],
  outer = better:

  - performance (TPOT, lower is better), reversed min-max over the options: 20 + (max − v)/(max − min)·80;
  - cost, linear from 0 and clipped at a cap T: 20 + (T − min(v, T))/T·80. MoE-CAP sets T by hand (the
    second-to-last axis tick); capsim defaults T to the largest cost among the options;
  - accuracy, min-max from the lowest option up to 1.0: 20 + (v − min)/(1 − min)·80.

  Where MoE-CAP would divide by zero (all options equal on an axis) every option scores 100 on it. An option
  whose accuracy is missing is drawn at 0 on that axis and labelled "accuracy missing", never at a made-up
  value.
- The **Pareto plot**: cost per million output tokens vs TPOT for every evaluated point, one colour per
  hardware, with the non-dominated front drawn as a line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
from numpy.typing import ArrayLike, NDArray

from capsim import units

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from matplotlib.projections.polar import PolarAxes

RADAR_FLOOR = 20.0
"""MoE-CAP's baseline: the worst option on an axis still shows at 20 of 100."""
RADAR_AXES: tuple[str, ...] = ("Performance", "Cost", "Accuracy")
MISSING_SCORE = 0.0


def normalize(values: ArrayLike, vmin: float, vmax: float, floor: float = RADAR_FLOOR) -> NDArray[np.float64]:
    """floor + (v − vmin)/(vmax − vmin)·(100 − floor); 100 everywhere when vmax == vmin."""
    v = np.asarray(values, dtype=np.float64)
    if vmax == vmin:
        return np.full_like(v, 100.0)
    return floor + (v - vmin) / (vmax - vmin) * (100.0 - floor)


def normalize_reversed(
    values: ArrayLike, vmin: float, vmax: float, floor: float = RADAR_FLOOR
) -> NDArray[np.float64]:
    """floor + (vmax − v)/(vmax − vmin)·(100 − floor): the smallest value reaches the rim."""
    v = np.asarray(values, dtype=np.float64)
    if vmax == vmin:
        return np.full_like(v, 100.0)
    return floor + (vmax - v) / (vmax - vmin) * (100.0 - floor)


def normalize_cost(values: ArrayLike, cap: float, floor: float = RADAR_FLOOR) -> NDArray[np.float64]:
    """floor + (cap − min(v, cap))/cap·(100 − floor): free reaches the rim, ``cap`` and above the floor."""
    v = np.asarray(values, dtype=np.float64)
    if not cap > 0:
        raise ValueError(f"cost cap must be positive, got {cap}")
    return floor + (cap - np.minimum(v, cap)) / cap * (100.0 - floor)


@dataclass(frozen=True)
class RadarOption:
    """One polygon: raw TPOT (s), cost (USD or W) and accuracy (fraction of 1, None when missing)."""

    label: str
    tpot_s: float
    cost: float
    accuracy: float | None
    cost_is_lower_bound: bool = False
    """True when a part of the cost has no price (the legend shows "≥")."""
    accuracy_status: str = "missing"
    """Why ``accuracy`` is None: ``missing`` (nothing published for the model) or ``unknown`` (nothing
    published for this precision); shown in the legend."""


def radar_scores(options: Sequence[RadarOption], cost_cap: float | None = None) -> NDArray[np.float64]:
    """(n, 3) scores in [0, 100] on (performance, cost, accuracy), normalised as MoE-CAP's draw_radar.py."""
    if not options:
        raise ValueError("the radar needs at least one option")
    tpot = np.array([o.tpot_s for o in options], dtype=np.float64)
    cost = np.array([o.cost for o in options], dtype=np.float64)
    cap = float(cost.max()) if cost_cap is None else float(cost_cap)
    known = [o.accuracy for o in options if o.accuracy is not None]
    perf = normalize_reversed(tpot, float(tpot.min()), float(tpot.max()))
    cost_score = normalize_cost(cost, cap) if cap > 0 else np.full_like(cost, 100.0)
    acc = np.full(len(options), MISSING_SCORE)
    if known:
        acc_min = min(known)
        for i, o in enumerate(options):
            if o.accuracy is not None:
                acc[i] = normalize([o.accuracy], acc_min, 1.0)[0]
    return np.column_stack([perf, cost_score, acc])


def _save(fig: Figure, out: Path) -> tuple[Path, Path]:
    """Write ``out``.png and ``out``.svg (suffixes appended: a stem such as ``radar-qwen1.5-moe-a2.7b`` keeps
    its dots); returns both paths. An unwritable path raises ScenarioError."""
    from capsim.errors import ScenarioError

    png, svg = out.with_name(out.name + ".png"), out.with_name(out.name + ".svg")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(png, dpi=120)
        fig.savefig(svg)
    except OSError as exc:
        raise ScenarioError(f"cannot write {png} ({exc.strerror}); choose another output path") from None
    return png, svg


_IMAGE_SUFFIXES = (".png", ".svg", ".pdf", ".jpg", ".jpeg", ".webp", ".eps")


def output_stem(path: Path | str) -> Path:
    """``radar.png`` / ``radar.svg`` / ``radar`` -> ``radar`` (both formats are always written; another image
    suffix such as ``.pdf`` is dropped too, other dots are kept: ``run.v2`` stays ``run.v2``)."""
    p = Path(path)
    return p.with_suffix("") if p.suffix.lower() in _IMAGE_SUFFIXES else p


def plot_radar(
    options: Sequence[RadarOption],
    out: Path | str,
    *,
    title: str = "",
    cost_label: str = "Cost (USD)",
    accuracy_label: str = "Accuracy",
    cost_cap: float | None = None,
) -> tuple[Path, Path]:
    """Draw the CAP radar of ``options`` to ``out``.png and ``out``.svg; returns the two paths."""
    from matplotlib.figure import Figure

    scores = radar_scores(options, cost_cap)
    labels = [
        "Performance\n(TPOT, lower is better)",
        f"{cost_label}\n(lower is better)",
        accuracy_label,
    ]
    angles = np.linspace(0.0, 2.0 * np.pi, len(RADAR_AXES), endpoint=False)
    closed = np.append(angles, angles[0])
    fig = Figure(figsize=(7.5, 7.5))
    ax = cast("PolarAxes", fig.add_subplot(projection="polar"))
    ax.set_theta_offset(np.pi / 2)
    ax.set_theta_direction(-1)
    ax.set_ylim(0, 100)
    ax.set_yticks([20, 40, 60, 80, 100])
    ax.set_xticks(angles)
    ax.set_xticklabels(labels)
    for opt, row in zip(options, scores):
        values = np.append(row, row[0])
        name = opt.label + (f"  (accuracy {opt.accuracy_status})" if opt.accuracy is None else "")
        raw = f"TPOT {opt.tpot_s / units.MS:.1f} ms, cost {'≥' if opt.cost_is_lower_bound else ''}{opt.cost:,.0f}"
        if opt.accuracy is not None:
            raw += f", acc {opt.accuracy:.3f}"
        (line,) = ax.plot(closed, values, linewidth=2, label=f"{name}: {raw}")
        ax.fill(closed, values, alpha=0.15, color=line.get_color())
    ax.set_title(title or "CAP radar", pad=24)
    fig.legend(loc="lower center", fontsize=8, ncol=1, frameon=False)
    fig.subplots_adjust(bottom=0.08 + 0.035 * len(options), top=0.88)
    return _save(fig, output_stem(out))


@dataclass(frozen=True)
class ParetoPoint:
    """One point of the cost-vs-TPOT plot; ``group`` picks its colour (e.g. the hardware)."""

    group: str
    tpot_s: float
    usd_per_mtok: float
    label: str = ""


def plot_pareto(
    points: Sequence[ParetoPoint],
    front: Sequence[ParetoPoint],
    out: Path | str,
    *,
    title: str = "",
    slo_tpot_s: float | None = None,
) -> tuple[Path, Path]:
    """Scatter cost per million output tokens (log) vs TPOT (ms), front as a line; PNG and SVG."""
    from matplotlib.figure import Figure

    if not points:
        raise ValueError("the Pareto plot needs at least one point")
    fig = Figure(figsize=(8.5, 6))
    ax = fig.add_subplot()
    groups = list(dict.fromkeys(p.group for p in points))
    for g in groups:
        mine = [p for p in points if p.group == g]
        ax.scatter(
            [p.tpot_s / units.MS for p in mine], [p.usd_per_mtok for p in mine], s=18, alpha=0.7, label=g
        )
    if front:
        ordered = sorted(front, key=lambda p: p.tpot_s)
        ax.plot(
            [p.tpot_s / units.MS for p in ordered],
            [p.usd_per_mtok for p in ordered],
            color="black",
            linewidth=1.5,
            marker="o",
            markersize=4,
            label="Pareto front",
        )
    if slo_tpot_s is not None:
        ax.axvline(slo_tpot_s / units.MS, color="red", linestyle="--", linewidth=1, label="TPOT SLO")
    if all(p.usd_per_mtok > 0 for p in points):
        ax.set_yscale("log")
    ax.set_xlabel("TPOT (ms per decode step)")
    ax.set_ylabel("USD per million output tokens")
    ax.set_title(title or "Cost vs performance")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return _save(fig, output_stem(out))
