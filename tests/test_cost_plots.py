"""capsim.report.plots: MoE-CAP's radar normalisation, and plots that are written and not blank."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from capsim.report.plots import (
    ParetoPoint,
    RadarOption,
    normalize_cost,
    output_stem,
    plot_pareto,
    plot_radar,
    radar_scores,
)

# MoE-CAP's own example (reference/moecap.md §4.1 P6; open-moe-llm-leaderboard
# examples/radar-plot/radar-example.yaml): Qwen3-30B-A3B, GSM8K exact match,
# ticks [0, 2000, ..., 10000] -> cap 8000.
MOECAP_EXAMPLE = [
    RadarOption("SGLang", 0.058, 8920.0, 0.911),
    RadarOption("K-Transformers", 0.073, 3800.0, 0.800),
    RadarOption("MoE-Infinity", 0.150, 3800.0, 0.911),
]


def test_radar_normalisation_reproduces_moecap_example() -> None:
    scores = radar_scores(MOECAP_EXAMPLE, cost_cap=8000.0)
    # performance: 20 + (0.150 - v)/(0.150 - 0.058) x 80
    #   SGLang 100; K-Transformers 20 + 0.077/0.092 x 80 = 86.9565; MoE-Infinity 20
    # cost: 20 + (8000 - min(v, 8000))/8000 x 80
    #   SGLang (8920 clipped to 8000) 20; the others 20 + 4200/8000 x 80 = 62
    # accuracy: 20 + (v - 0.800)/(1 - 0.800) x 80
    #   0.911 -> 20 + 0.111/0.2 x 80 = 64.4; 0.800 -> 20
    expected = np.array([[100.0, 20.0, 64.4], [86.95652, 62.0, 20.0], [20.0, 62.0, 64.4]])
    np.testing.assert_allclose(scores, expected, rtol=1e-6)


def test_radar_default_cap_and_degenerate_axes() -> None:
    same = [RadarOption("a", 0.05, 1000.0, 0.7), RadarOption("b", 0.05, 500.0, 0.7)]
    scores = radar_scores(same)
    # equal TPOT: every option at 100 (MoE-CAP would divide by zero)
    assert list(scores[:, 0]) == [100.0, 100.0]
    # accuracy runs from the lowest option (floor) to 1.0 (rim), so equal 0.7s both sit at the floor ...
    assert list(scores[:, 2]) == [20.0, 20.0]
    # ... and only when the lowest is 1.0 is the axis degenerate
    perfect = radar_scores([RadarOption("a", 0.05, 1.0, 1.0), RadarOption("b", 0.06, 1.0, 1.0)])
    assert list(perfect[:, 2]) == [100.0, 100.0]
    # default cap = the largest cost: 1000 -> 20, 500 -> 20 + 500/1000 x 80 = 60
    assert list(scores[:, 1]) == [20.0, 60.0]


def test_missing_accuracy_is_drawn_at_zero_not_invented() -> None:
    scores = radar_scores([RadarOption("a", 0.05, 1000.0, None), RadarOption("b", 0.06, 900.0, 0.8)])
    assert scores[0, 2] == 0.0
    assert scores[1, 2] == 20.0  # the only known accuracy is the minimum


@given(
    st.lists(
        st.tuples(st.floats(1e-4, 10.0), st.floats(0.0, 1e7), st.floats(0.0, 1.0)), min_size=1, max_size=12
    )
)
def test_radar_scores_stay_in_range(rows: list[tuple[float, float, float]]) -> None:
    options = [RadarOption(str(i), t, c, a) for i, (t, c, a) in enumerate(rows)]
    scores = radar_scores(options, cost_cap=max(1.0, max(c for _, c, _ in rows)))
    assert np.all(scores >= 20.0 - 1e-9) and np.all(scores <= 100.0 + 1e-9)
    # the fastest option reaches the rim of the performance axis
    assert scores[int(np.argmin([t for t, _, _ in rows])), 0] == pytest.approx(100.0)


def test_cost_cap_must_be_positive() -> None:
    with pytest.raises(ValueError, match="cost cap must be positive"):
        normalize_cost([1.0], 0.0)


def _non_white_fraction(png: Path) -> float:
    from matplotlib.image import imread

    pixels = imread(png)[..., :3]
    return float(np.mean(np.any(pixels < 0.95, axis=-1)))


def test_radar_is_written_and_not_blank(tmp_path: Path) -> None:
    png, svg = plot_radar(MOECAP_EXAMPLE, tmp_path / "radar.png", title="MoE-CAP example", cost_cap=8000.0)
    assert (png.name, svg.name) == ("radar.png", "radar.svg")
    assert png.stat().st_size > 10_000 and svg.stat().st_size > 10_000
    assert _non_white_fraction(png) > 0.02
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text
    for label in ("SGLang", "K-Transformers", "MoE-Infinity"):
        assert label in text  # legend entries (svg.fonttype "path" would still name them in ids)


def test_pareto_plot_is_written_and_not_blank(tmp_path: Path) -> None:
    points = [ParetoPoint("gpu-a", 0.010 * i, 1.0 / i) for i in range(1, 6)]
    points += [ParetoPoint("gpu-b", 0.012 * i, 1.5 / i) for i in range(1, 6)]
    front = points[:5]
    png, svg = plot_pareto(points, front, tmp_path / "sub" / "pareto", slo_tpot_s=0.03)
    assert png.exists() and svg.exists() and png.parent.name == "sub"
    assert png.stat().st_size > 10_000
    assert _non_white_fraction(png) > 0.01
    with pytest.raises(ValueError, match="at least one point"):
        plot_pareto([], [], tmp_path / "empty")


def test_output_stem() -> None:
    assert output_stem("a/b.png") == Path("a/b")
    assert output_stem("a/b.SVG") == Path("a/b")
    assert output_stem("a/b") == Path("a/b")
    assert output_stem("a/b.v2") == Path("a/b.v2")
