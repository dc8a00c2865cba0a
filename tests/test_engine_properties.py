"""Property tests of the engine's invariants (hypothesis).

Hypothesis calls each test ~50-100 times, so the databases come from the module-scoped fixtures and the
scenarios stay small (short prompts and generations) to keep each example cheap.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from capsim import DoesNotFitError
from capsim.engine.passes import decode_times
from capsim.engine.predict import predict
from capsim.engine.resolve import resolve
from capsim.engine.scenario import Scenario
from capsim.models.db import resolve_model
from capsim.models.parts import FFNKind
from capsim.routing import uniform_expected_activated

MODELS = [
    "mixtral-8x7b",
    "qwen3-30b-a3b",
    "deepseek-v2-lite",
    "gpt-oss-20b",
    "olmoe-1b-7b",
    "qwen1.5-moe-a2.7b",
]
HARDWARE = ["h100-sxm", "a100-sxm-80gb", "mi300x", "h200-sxm", "l40s"]

_settings = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    """Small scenarios over several families and devices. Batch 1 and powers of two are included because
    batch 1 is the extreme where S-MBU and MBU differ most."""
    model = draw(st.sampled_from(MODELS))
    gen_len = draw(st.integers(2, 16))
    # within the model's context window (OLMoE's is 4,096 tokens): longer scenarios are refused (issue 15)
    window = resolve_model(model).max_context or 4096 + 16
    return Scenario(
        model=model,
        hardware=draw(st.sampled_from(HARDWARE)),
        gpus=draw(st.sampled_from([1, 2, 4, 8])),
        batch=draw(st.one_of(st.just(1), st.integers(1, 512))),
        prompt_len=draw(st.integers(1, min(4096, window - gen_len))),
        gen_len=gen_len,
        weight_dtype=draw(st.sampled_from([None, "bf16", "fp8", "int4"])),
        kv_dtype=draw(st.sampled_from(["bf16", "fp8"])),
    )


def _predict_or_skip(sc: Scenario, db):  # type: ignore[no-untyped-def]
    try:
        return predict(sc, hardware_db=db)
    except DoesNotFitError:
        assume(False)
        raise AssertionError("unreachable")


@_settings
@given(sc=scenarios())
@example(sc=Scenario(model="mixtral-8x7b", hardware="h100-sxm", gpus=2, batch=1, prompt_len=1, gen_len=2))
def test_sparse_metrics_bounded_by_dense_and_one(default_hardware_db, sc: Scenario) -> None:
    pred = _predict_or_skip(sc, default_hardware_db)
    for phase in (pred.prefill, pred.decode):
        assert 0.0 <= phase.s_mbu <= min(phase.mbu, 1.0) + 1e-12
        assert 0.0 <= phase.s_mfu <= min(phase.mfu, 1.0) + 1e-12


@_settings
@given(sc=scenarios(), factor=st.floats(1.0, 16.0))
def test_tpot_non_increasing_in_bandwidth_and_flops(default_hardware_db, sc: Scenario, factor: float) -> None:
    try:
        rs, memory = resolve(sc, default_hardware_db)
    except DoesNotFitError:
        assume(False)
        return
    batch = min(sc.batch, memory.max_batch)
    base = decode_times(rs, batch).time
    faster_mem = replace(rs, rates=replace(rs.rates, memory_bandwidth=rs.rates.memory_bandwidth * factor))
    faster_flops = replace(
        rs, rates=replace(rs.rates, peak_flops={k: v * factor for k, v in rs.rates.peak_flops.items()})
    )
    assert np.all(decode_times(faster_mem, batch).time <= base * (1 + 1e-12))
    assert np.all(decode_times(faster_flops, batch).time <= base * (1 + 1e-12))


@settings(max_examples=200, deadline=None)
@given(e=st.integers(1, 512), data=st.data())
@example(e=256, data=None)
def test_expected_activated_between_k_and_e_and_monotone(e: int, data) -> None:  # type: ignore[no-untyped-def]
    k = data.draw(st.integers(1, e)) if data is not None else 8
    t = np.arange(1, 300)
    a = uniform_expected_activated(e, k, t)
    assert np.all(a >= k - 1e-9)
    assert np.all(a <= e + 1e-9)
    assert np.all(np.diff(a) >= -1e-9)
    assert a[0] == pytest.approx(k)


def test_dense_model_s_mbu_equals_mbu(default_hardware_db) -> None:
    """A dense model (Mixtral's shapes with one 14336-wide FFN per layer): nothing is sparse."""
    moe_model = resolve_model("mixtral-8x7b")
    dense = replace(
        moe_model,
        id="mixtral-dense-test",
        moe=None,
        ffn_kinds=tuple(FFNKind.DENSE for _ in range(moe_model.num_layers)),
        dense_intermediate_size=14336,
    )
    sc = Scenario(model=dense, hardware="h100-sxm", gpus=1, batch=8, prompt_len=256, gen_len=8)
    pred = predict(sc, hardware_db=default_hardware_db)
    assert pred.decode.s_mbu == pytest.approx(pred.decode.mbu, rel=1e-12)
    assert pred.decode.s_mfu == pytest.approx(pred.decode.mfu, rel=1e-12)
    assert pred.activated_experts_per_layer == []
