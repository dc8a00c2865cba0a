"""Expert parallelism: layout validation, all-to-all cost, straggler factor."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capsim import ScenarioError, predict
from capsim.engine.parallel import all_to_all_time, straggler_factor
from capsim.engine.scenario import Scenario
from capsim.models.db import resolve_model
from capsim.routing import make_router


def test_all_to_all_hand_computed() -> None:
    # 8 ranks, 64 tokens, top-8, d = 7168, bf16: per rank 64/8 x 8 x 7168 x 2 bytes x 7/8 = 802,816 bytes;
    # over 450 GB/s per direction: 1.784 us, plus 6.6 us base and 7 x 0.6 us hops = 12.584 us
    t = all_to_all_time(np.array([64.0]), 8, 8, 7168, 450e9, 0.6e-6, 6.6e-6)
    assert 64 / 8 * 8 * 7168 * 2 * 7 / 8 == 802_816
    assert t[0] == pytest.approx(6.6e-6 + 7 * 0.6e-6 + 802_816 / 450e9)


@settings(max_examples=50, deadline=None)
@given(t1=st.integers(1, 10_000), t2=st.integers(1, 10_000), ranks=st.sampled_from([2, 4, 8]))
def test_all_to_all_time_grows_with_tokens(t1: int, t2: int, ranks: int) -> None:
    lo, hi = sorted((t1, t2))
    a = all_to_all_time(np.array([lo, hi], dtype=float), ranks, 8, 7168, 450e9, 0.6e-6, 6.6e-6)
    assert a[0] <= a[1]


def test_straggler_factor_uniform_shrinks_with_tokens() -> None:
    model = resolve_model("deepseek-v3")
    router = make_router("uniform", model)
    one = straggler_factor(router, 256, 8, 1)
    many = straggler_factor(router, 256, 8, 512)
    # one token's 8 experts land on at most 8 ranks: max/mean >= 1; with 512 tokens the load evens out
    assert one >= many >= 1.0
    assert many < 1.2


@pytest.mark.parametrize(
    "kw,match",
    [
        (
            dict(model="mixtral-8x7b", hardware="h100-sxm", gpus=2, ep=4),
            r"--ep 4 must divide both the 2 devices .* and the 8 experts; valid --ep: 1, 2$",
        ),
        (
            dict(model="qwen1.5-moe-a2.7b", hardware="dgx-h100", ep=8),
            "--ep 8 must divide both the 8 devices .* and the 60 experts; valid --ep: 1, 2, 4$",
        ),
        (
            dict(model="deepseek-v3", hardware="h100-sxm", gpus=8, nodes=9, attention_dp=72, ep=72),
            "--ep 72 must divide both the 72 devices .* and the 256 experts; valid --ep: 1, 2, 4, 8$",
        ),
        (
            dict(
                model="deepseek-v3",
                hardware="h100-sxm",
                gpus=8,
                nodes=9,
                attention_dp=72,
                ep=72,
                redundant_experts=30,
                network="ib-ndr",
            ),
            r"the 286 expert slots \(256 experts \+ 30 redundant\); valid --ep: 1, 2$",
        ),
        (
            dict(model="mixtral-8x7b", hardware="h100-sxm", gpus=2, ep=2, all_to_all="mpi"),
            "unknown --all-to-all 'mpi'; choose one of nccl, deepep",
        ),
        (dict(model="mixtral-8x7b", hardware="h100-sxm", gpus=2, ep=0), "ep must be an integer >= 1"),
    ],
)
def test_invalid_ep_layouts(default_hardware_db, kw, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ScenarioError, match=match):
        predict(Scenario(**kw), hardware_db=default_hardware_db)


def test_ep_replaces_moe_allreduce_with_all_to_all(default_hardware_db) -> None:
    tp = predict(
        Scenario(model="mixtral-8x7b", hardware="dgx-h100", batch=64, prompt_len=256, gen_len=4),
        hardware_db=default_hardware_db,
    )
    ep = predict(
        Scenario(model="mixtral-8x7b", hardware="dgx-h100", batch=64, prompt_len=256, gen_len=4, ep=8),
        hardware_db=default_hardware_db,
    )
    assert "all_to_all" in ep.decode.time_by_op_s and "all_to_all" not in tp.decode.time_by_op_s
    # 32 MoE layers of 64 layers' worth of all-reduces (2 per layer) are gone: half the all-reduce time
    assert ep.decode.time_by_op_s["allreduce"] == pytest.approx(tp.decode.time_by_op_s["allreduce"] / 2)
    assert ep.deployment["straggler_factor_mean"] >= 1.0
