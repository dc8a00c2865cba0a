"""Engine: hand-computed cases (arithmetic in the comments) and the invariants of the metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from capsim import DoesNotFitError, ScenarioError
from capsim.engine.predict import decode_step_time, predict
from capsim.engine.resolve import resolve
from capsim.engine.scenario import Scenario
from capsim.models.db import resolve_model
from capsim.routing import uniform_expected_activated

# Mixtral-8x7B (models.md §1; config model_db/mixtral-8x7b.json): d = 4096, 32 layers, 32 q / 8 kv heads of
# 128, 8 experts of width 14336, top-2, vocab 32000, untied lm_head.
MIXTRAL_ATTN = 4096 * (4096 + 2 * 1024) + 4096 * 4096  # 41,943,040 per layer
MIXTRAL_EXPERT = 3 * 4096 * 14336  # 176,160,768
MIXTRAL_ROUTER = 4096 * 8  # 32,768 per layer
MIXTRAL_LM_HEAD = 32000 * 4096  # 131,072,000
MIXTRAL_KV_PER_TOKEN = 32 * 2 * 8 * 128  # 65,536 elements over all layers


def mixtral_decode_weight_bytes(active_experts: float) -> float:
    """bf16 weight bytes one decode step reads: attention, router, A experts per layer, lm_head."""
    params = 32 * (MIXTRAL_ATTN + MIXTRAL_ROUTER + active_experts * MIXTRAL_EXPERT) + MIXTRAL_LM_HEAD
    return 2.0 * params


def test_mixtral_batch1_bytes_read_per_step(default_hardware_db):
    # batch 1: exactly k = 2 experts per layer are read.
    # 2 bytes x (32 x (41,943,040 + 32,768 + 2 x 176,160,768) + 131,072,000) = 25,497,174,016 bytes
    assert mixtral_decode_weight_bytes(2) == 25_497_174_016
    sc = Scenario(model="mixtral-8x7b", hardware="h100-sxm", gpus=2, batch=1, prompt_len=512, gen_len=2)
    pred = predict(sc, hardware_db=default_hardware_db)
    assert pred.activated_experts_per_layer == [pytest.approx(2.0)] * 32
    # the one decode step attends to 513 tokens: KV read = 513 x 65,536 elements x 2 bytes
    kv = 513 * MIXTRAL_KV_PER_TOKEN * 2
    step = pred.decode_step_times_s[0]
    bw = 2 * 3350e9  # two H100 SXM, hardware.md §1
    assert pred.decode.s_mbu == pytest.approx((25_497_174_016 + kv) / step / bw, rel=1e-9)
    # dense MBU reads all 8 experts
    assert pred.decode.mbu == pytest.approx((mixtral_decode_weight_bytes(8) + kv) / step / bw, rel=1e-9)


def test_mixtral_batch1_tpot_bound(default_hardware_db):
    """TPOT is at least the bytes over the achievable bandwidth, plus the fixed overheads."""
    sc = Scenario(model="mixtral-8x7b", hardware="h100-sxm", gpus=2, batch=1, prompt_len=512, gen_len=2)
    rs, _ = resolve(sc, default_hardware_db)
    eff = rs.efficiency
    pred = predict(sc, hardware_db=default_hardware_db)
    bytes_per_gpu = (mixtral_decode_weight_bytes(2) - 2 * 32 * MIXTRAL_ROUTER) / 2 + 2 * 32 * MIXTRAL_ROUTER
    bound = bytes_per_gpu / (3350e9 * eff.memory_bw_fraction)
    # pure-bandwidth bound at 100 % of 3350 GB/s: 25.5e9 / 2 / 3.35e12 = 3.8 ms
    assert pytest.approx(3.805e-3, rel=1e-3) == 25_497_174_016 / 2 / 3350e9
    assert pred.tpot_s > bound
    memory_time = pred.decode.time_by_resource_s["memory"]
    assert memory_time >= bound  # weights + KV + activations, all memory-bound at batch 1
    assert pred.tpot_s == pytest.approx(sum(pred.decode.time_by_op_s.values()), rel=1e-12)


def test_deepseek_v3_batch32_activates_about_163_of_256(default_hardware_db):
    # 256 x (1 - (1 - 8/256)^32) = 256 x (1 - 0.96875^32) = 256 x (1 - 0.36205) = 163.31
    assert uniform_expected_activated(256, 8, 32) == pytest.approx(163.31, abs=0.01)
    # uniform routing (the bound); the default router (fitted to MoE-CAP) activates fewer: tests/test_routing_defaults
    sc = Scenario(
        model="deepseek-v3",
        hardware="h200-sxm",
        gpus=8,
        batch=32,
        prompt_len=256,
        gen_len=4,
        routing="uniform",
    )
    pred = predict(sc, hardware_db=default_hardware_db)
    acts = pred.activated_experts_per_layer
    assert len(acts) == 58  # 61 layers, first_k_dense_replace = 3
    assert acts == [pytest.approx(163.31, abs=0.01)] * 58
    assert pred.decode.s_mbu < pred.decode.mbu


def test_ttft_counts_whole_prompt(default_hardware_db):
    sc = Scenario(model="mixtral-8x7b", hardware="h100-sxm", gpus=2, batch=4, prompt_len=1000, gen_len=8)
    pred = predict(sc, hardware_db=default_hardware_db)
    # 4 x 1000 = 4000 tokens < 8192 chunk: one prefill pass, throughput = 4000 / TTFT
    assert pred.prefill.passes == 1
    assert pred.prefill_tokens_per_s == pytest.approx(4000 / pred.ttft_s)
    assert pred.decode.passes == 7
    assert pred.e2e_latency_s == pytest.approx(pred.ttft_s + pred.decode_step_times_s.sum())
    assert pred.decode_tokens_per_s == pytest.approx(4 / pred.tpot_s)


def test_default_gpu_count_is_smallest_that_fits(default_hardware_db):
    # Mixtral bf16 weights ~ 93.4 GB > 80 GB x 0.9: one H100 cannot hold it, two can.
    sc = Scenario(model="mixtral-8x7b", hardware="h100-sxm", gpus=None)
    rs, _ = resolve(sc, default_hardware_db)
    assert rs.sharding.tp == 2


def test_does_not_fit_names_need_and_have(default_hardware_db):
    sc = Scenario(model="deepseek-v3", hardware="rtx-4090", gpus=1, weight_dtype="bf16")
    with pytest.raises(DoesNotFitError) as err:
        predict(sc, hardware_db=default_hardware_db)
    msg = str(err.value)
    assert msg.startswith("does not fit: needs ")
    assert "rtx-4090" in msg and "try --gpus" in msg


def test_batch_too_large_runs_in_waves(default_hardware_db):
    sc = Scenario(model="mixtral-8x7b", hardware="h100-sxm", gpus=2, batch=4096, prompt_len=4096, gen_len=256)
    pred = predict(sc, hardware_db=default_hardware_db)
    assert pred.memory.waves == math.ceil(4096 / pred.memory.max_batch) > 1
    assert pred.batch_per_wave == pred.memory.max_batch
    assert pred.job_time_s == pytest.approx(pred.e2e_latency_s * pred.memory.waves)


@pytest.mark.parametrize(
    "field,value",
    [("batch", 0), ("prompt_len", 0), ("gen_len", -1), ("gpus", 0)],
)
def test_impossible_values(default_hardware_db, field, value):
    sc = Scenario(**{field: value})
    with pytest.raises(ScenarioError):
        predict(sc, hardware_db=default_hardware_db)


def test_decode_step_time_matches_predict(default_hardware_db):
    sc = Scenario(model="mixtral-8x7b", hardware="h100-sxm", gpus=2, batch=8, prompt_len=100, gen_len=2)
    pred = predict(sc, hardware_db=default_hardware_db)
    assert decode_step_time(sc, 101, hardware_db=default_hardware_db) == pytest.approx(
        pred.decode_step_times_s[0], rel=1e-12
    )


def test_sliding_window_caps_kv_reads(default_hardware_db):
    """GPT-OSS: half the layers attend to 128 tokens only, so KV bytes grow at half the rate past 128."""
    model = resolve_model("gpt-oss-20b")
    sc = Scenario(model=model, hardware="h100-sxm", gpus=1, batch=1, prompt_len=1000, gen_len=3)
    pred = predict(sc, hardware_db=default_hardware_db)
    t = pred.decode_step_times_s
    assert np.all(np.diff(t) >= 0)


def test_huge_batch_runs_in_waves_not_out_of_memory(default_hardware_db):
    """Regression (QA): fp32 logits were sized by the whole requested batch, so batch 1e9 'did not fit'
    (1e9 x 32,000 x 4 B = 128 TB) and a larger batch shrank the resident one. Logits are per resident sequence."""
    big = predict(Scenario(batch=10**9, prompt_len=512, gen_len=4), hardware_db=default_hardware_db)
    assert big.memory.waves == math.ceil(10**9 / big.memory.max_batch)
    resident = [
        predict(
            Scenario(model="llama-4-scout", hardware="h200-sxm", gpus=2, batch=b, prompt_len=512, gen_len=4),
            hardware_db=default_hardware_db,
        )
        for b in (512, 1024, 2048)
    ]
    assert len({p.batch_per_wave for p in resident}) == 1
    assert resident[0].tpot_s == resident[2].tpot_s
