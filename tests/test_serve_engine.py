"""engine.mixed_passes and the serving step model agree with the engine's own decode and prefill passes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from capsim.engine.passes import attention_window_rows, decode_passes, mixed_passes, prefill_passes
from capsim.engine.resolve import resolve
from capsim.engine.roofline import causal_pairs
from capsim.engine.scenario import Scenario
from capsim.serving.stepcost import StepCost


@pytest.fixture(scope="module")
def mixtral():
    """Mixtral-8x7B on 8x H100 (full attention). Read-only."""
    return resolve(Scenario(model="mixtral-8x7b", hardware="h100-sxm", gpus=8))[0]


@pytest.fixture(scope="module")
def windowed():
    """gpt-oss-20b: alternating 128-token sliding-window and full-attention layers. Read-only."""
    return resolve(Scenario(model="gpt-oss-20b", hardware="h100-sxm", gpus=1))[0]


@pytest.fixture(scope="module")
def mla():
    """DeepSeek-R1 (MLA: absorbed decode differs from prefill attention). Read-only."""
    return resolve(Scenario(model="deepseek-r1", hardware="mi300x", gpus=8))[0]


def _decode_args(rs, batch, context):
    windows, _ = attention_window_rows(rs.model)
    per = np.minimum(float(context), windows) * batch  # each of the batch's tokens sees min(c, w) keys
    return per[:, None]


@pytest.mark.parametrize("case", ["mixtral", "windowed", "mla"])
@pytest.mark.parametrize("batch,context", [(1, 2), (7, 129), (64, 1000), (256, 4097)])
def test_mixed_pass_of_decodes_is_decode_pass(case, batch, context, request):
    rs = request.getfixturevalue(case)
    ref = decode_passes(rs, np.float64(batch), np.array([float(context)]))
    per = _decode_args(rs, batch, context)
    mixed = mixed_passes(
        rs,
        np.array([float(batch)]),
        np.array([float(batch)]),
        np.array([float(batch)]),
        per,
        np.zeros_like(per),
        per,
    )
    assert mixed.time[0] == pytest.approx(ref.time[0], rel=1e-12)
    assert mixed.flops_sparse[0] == pytest.approx(ref.flops_sparse[0], rel=1e-12)
    assert mixed.weight_bytes_sparse[0] == pytest.approx(ref.weight_bytes_sparse[0], rel=1e-12)


@pytest.mark.parametrize("case", ["mixtral", "windowed", "mla"])
@pytest.mark.parametrize("batch,prompt", [(1, 1), (1, 512), (4, 300), (16, 2048)])
def test_mixed_pass_of_whole_prompts_is_prefill_pass(case, batch, prompt, request):
    rs = request.getfixturevalue(case)
    tokens = float(batch * prompt)
    ref = prefill_passes(
        rs, np.float64(batch), np.float64(prompt), np.array([tokens]), np.array([float(batch)])
    )
    windows, _ = attention_window_rows(rs.model)
    pairs = (batch * causal_pairs(float(prompt), windows))[:, None]  # Σ_{i=1..P} min(i, w) per prompt
    kv = np.full((windows.shape[0], 1), tokens)  # a chunk from position 0 reads its own P tokens
    mixed = mixed_passes(
        rs,
        np.array([tokens]),
        np.array([float(batch)]),
        np.array([float(batch)]),
        np.zeros_like(pairs),
        pairs,
        kv,
    )
    assert mixed.time[0] == pytest.approx(ref.time[0], rel=1e-12)
    assert mixed.flops_sparse[0] == pytest.approx(ref.flops_sparse[0], rel=1e-12)


def test_mixed_step_reads_weights_once():
    """A mixed step of 32 decodes and a 512-token chunk costs less than the decode pass plus the prefill pass
    (weights and the activated experts are read once for both), and more than either alone."""
    rs = resolve(Scenario(model="mixtral-8x7b", hardware="h100-sxm", gpus=8))[0]
    dec = decode_passes(rs, np.float64(32), np.array([600.0]))
    pre = prefill_passes(rs, np.float64(1), np.float64(512), np.array([512.0]), np.array([1.0]))
    pairs_d = np.array([[32 * 600.0]])
    pairs_p = np.array([[512 * 513 / 2.0]])
    mixed = mixed_passes(
        rs,
        np.array([544.0]),
        np.array([33.0]),
        np.array([33.0]),
        pairs_d,
        pairs_p,
        np.array([[32 * 600.0 + 512.0]]),
    )
    assert max(dec.time[0], pre.time[0]) < mixed.time[0] < dec.time[0] + pre.time[0]
    # the weight bytes of the mixed step are those of its 544 tokens' activated experts, not the sum
    assert mixed.weight_bytes_sparse[0] < dec.weight_bytes_sparse[0] + pre.weight_bytes_sparse[0]


@pytest.mark.parametrize("case", ["mixtral", "windowed", "mla"])
def test_step_model_equals_engine(case, request):
    rs = request.getfixturevalue(case)
    cost = StepCost(rs, 2048 + 64, 2048 + 64)
    assert cost.check(samples=64, seed=3) < 1e-12


@given(
    tokens=st.integers(1, 300),
    seqs_frac=st.floats(0.0, 1.0),
    lm_frac=st.floats(0.0, 1.0),
    pairs=st.floats(0.0, 1e8),
    kv=st.floats(0.0, 1e7),
)
def test_step_model_equals_engine_property(mixtral_cost, tokens, seqs_frac, lm_frac, pairs, kv):
    cost, rs = mixtral_cost
    seqs = max(1, round(seqs_frac * tokens))
    lm = round(lm_frac * seqs)
    L = cost.num_layers
    ref = mixed_passes(
        rs,
        np.array([float(tokens)]),
        np.array([float(seqs)]),
        np.array([float(lm)]),
        np.zeros((1, 1)),
        np.array([[pairs / L]]),
        np.array([[kv / L]]),
    )
    assert cost.time(tokens, seqs, lm, pairs, kv) == pytest.approx(ref.time[0], rel=1e-11)


@pytest.fixture(scope="module")
def mixtral_cost(mixtral):
    return StepCost(mixtral, 320, 320), mixtral
