"""Default routers per model family (model_db/routing.toml), fitted to MoE-CAP's measured activated experts.

Measurements (../shared/reference/moecap.md §4.1-4.2): A = distinct routed experts per MoE layer per decode
step at batch B. The fitted router must reproduce each within a few per cent; uniform routing overstates them.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from capsim import make_router, resolve_model
from capsim.routing.spec import default_router_for

# (model, batch B, measured A, source); the fraction-of-parameters rows were converted as routing.toml says
MEASURED = [
    ("mixtral-8x7b", 32, 7.89, "MoE-CAP vLLM profiler, GSM8K"),
    ("mixtral-8x22b", 20, 7.68, "MoE-CAP vLLM profiler, GSM8K"),
    ("dbrx", 8, 12.27, "MoE-CAP vLLM profiler, GSM8K"),
    ("qwen3-235b-a22b", 16, 57.745, "MoE-CAP README, HF transformers, MATH"),
    ("deepseek-r1", 8, 41.7, "MoE-CAP Fig. 5: 18.44 % of parameters"),
    ("deepseek-v2-lite", 8, 31.2, "MoE-CAP Fig. 5: 53.05 % of parameters"),
    ("qwen1.5-moe-a2.7b", 8, 23.3, "MoE-CAP Fig. 5: 46.79 % of parameters"),
]


def _mean_activated(model: str, spec: str, batch: float) -> float:
    router = make_router(spec, resolve_model(model), seed=0)
    return float(np.mean(router.activated_per_layer(np.array([float(batch)]))))


@pytest.mark.parametrize(("model", "batch", "measured", "source"), MEASURED)
def test_default_router_reproduces_the_measurement(
    model: str, batch: int, measured: float, source: str
) -> None:
    fitted = _mean_activated(model, "default", batch)
    uniform = _mean_activated(model, "uniform", batch)
    # within 2 %: Mixtral's two rows share one exponent (their mean), the other families have one row each
    assert fitted == pytest.approx(measured, rel=0.02), source
    assert uniform > measured  # uniform is the bound for independent tokens


def test_uniform_overstatement_by_hand() -> None:
    """Qwen3-235B-A22B at B = 16: uniform gives 128 x (1 - (1 - 8/128)^16) = 82.42 vs 57.745 measured (1.43x)."""
    uniform = 128 * (1 - (1 - 8 / 128) ** 16)
    assert uniform == pytest.approx(82.42, abs=0.01)
    assert _mean_activated("qwen3-235b-a22b", "uniform", 16) == pytest.approx(uniform)
    assert uniform / 57.745 == pytest.approx(1.427, abs=0.001)


def test_every_default_names_its_source() -> None:
    for family in ("mixtral", "dbrx", "qwen3_moe", "deepseek_v3", "deepseek_v2", "qwen2_moe"):
        chosen = default_router_for(family)
        assert chosen.family == family and "MoE-CAP" in chosen.source
    pooled = default_router_for("gpt_oss")  # no measurement of this family
    assert pooled.family is None and pooled.spec == "zipf:0.91" and "median" in pooled.source
    spec = make_router("default", resolve_model("gpt-oss-20b")).spec
    assert spec.startswith("default (zipf:0.91: pooled")


def test_default_takes_the_synthetic_options() -> None:
    router = make_router("default,reuse=0.3,seed=4", resolve_model("mixtral-8x7b"))
    assert router.spec.startswith("default (zipf:0.98,reuse=0.3,seed=4: mixtral family")


@given(st.sampled_from([m for m, *_ in MEASURED] + ["gpt-oss-20b", "olmoe-1b-7b"]), st.integers(1, 511))
def test_default_activation_is_monotone_and_below_uniform(model: str, batch: int) -> None:
    a, b = _mean_activated(model, "default", batch), _mean_activated(model, "default", batch + 1)
    spec = resolve_model(model).moe
    assert spec is not None
    assert spec.top_k - 1e-9 <= a <= b + 1e-9
    assert a <= _mean_activated(model, "uniform", batch) + 1e-9
