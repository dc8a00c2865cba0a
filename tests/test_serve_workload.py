"""Workloads, dataset profiles, scheduler presets, disaggregation and goodput of capsim serve, by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from capsim.engine.predict import predict
from capsim.engine.scenario import Scenario
from capsim.errors import DataFileError, ScenarioError
from capsim.hardware.db import load_hardware_db
from capsim.serving import SchedulerConfig, Workload, build_replica, build_workload, parse_length, serve
from capsim.serving.datasets import get_dataset, load_datasets
from capsim.serving.metrics import parse_slo
from capsim.serving.presets import get_preset
from capsim.serving.replica import Disaggregation

GB = 1e9
MIXTRAL = Scenario(model="mixtral-8x7b", hardware="h100-sxm", gpus=8)


def test_gamma_arrivals_have_the_rate_and_burstiness():
    """Gaps of shape k and mean 1/R: mean 1/R, coefficient of variation 1/sqrt(k) (vllm bench serve)."""
    for k in (1.0, 0.25, 4.0):
        w = build_workload(
            num_prompts=40000,
            prompt=parse_length("10", "p"),
            output=parse_length("10", "o"),
            rate=8.0,
            burstiness=k,
            seed=3,
        )
        gaps = np.diff(np.concatenate([[0.0], w.send_s]))
        assert gaps.mean() == pytest.approx(1 / 8.0, rel=0.03)
        assert gaps.std() / gaps.mean() == pytest.approx(1 / math.sqrt(k), rel=0.05)


def test_lognormal_and_uniform_lengths():
    w = build_workload(
        num_prompts=50000,
        prompt=parse_length("lognormal:400:300", "p"),
        output=parse_length("uniform:10:20", "o"),
        rate=None,
        seed=1,
    )
    assert w.prompt_tokens.mean() == pytest.approx(400, rel=0.02)
    assert w.prompt_tokens.std() == pytest.approx(300, rel=0.05)
    assert w.output_tokens.min() == 10 and w.output_tokens.max() == 20


def test_duration_bounds_the_sends():
    w = build_workload(
        num_prompts=1,
        prompt=parse_length("10", "p"),
        output=parse_length("10", "o"),
        rate=50.0,
        duration_s=20.0,
        seed=2,
    )
    assert w.send_s.max() <= 20.0
    assert w.size == pytest.approx(1000, rel=0.1)  # 50 req/s x 20 s


def test_dataset_profiles_carry_their_published_means():
    """vLLM paper (arXiv:2309.06180 §6.1): ShareGPT mean input 161.31, output 337.99 tokens."""
    sharegpt = get_dataset("sharegpt")
    assert (sharegpt.prompt.kind, sharegpt.prompt.a, sharegpt.output.a) == ("fixed", 161, 338)
    assert "2309.06180" in sharegpt.source
    with pytest.raises(ScenarioError, match="did you mean 'sharegpt'"):
        get_dataset("sharegtp")


def test_dataset_file_validation(tmp_path):
    bad = tmp_path / "d.toml"
    bad.write_text(
        '[x]\nname = "x"\ntokenizer = "t"\nsource = "s"\nprompt = { median = 10, p90 = 5 }\n'
        "output = { fixed = 3 }\n"
    )
    with pytest.raises(DataFileError, match="needs 0 < median < p90"):
        load_datasets(str(bad))
    good = tmp_path / "g.toml"
    good.write_text(
        '[x]\nname = "x"\ntokenizer = "t"\nsource = "s"\nprompt = { median = 100, p90 = 300 }\n'
        "output = { mean = 50, std = 10 }\n"
    )
    p = load_datasets(str(good))["x"].prompt
    # lognormal with median 100 and p90 300: σ = ln 3 / 1.2816 = 0.8572, σ²/2 = 0.3674; mean = 100·e^0.3674 = 144.40
    assert p.a == pytest.approx(100 * math.exp((math.log(3) / 1.2815515655446004) ** 2 / 2), rel=1e-12)
    assert p.a == pytest.approx(144.40, abs=0.01)


def test_presets_follow_their_engines_rules():
    vllm = get_preset("vllm-like")
    assert vllm.config(80 * GB, device_id="h100-sxm") == SchedulerConfig(
        1024, 8192, True, 16
    )  # 74.5 GiB >= 70
    assert vllm.config(80 * GB, device_id="a100-sxm-80gb") == SchedulerConfig(
        256, 2048, True, 16
    )  # A100 excluded
    assert vllm.config(48 * GB, device_id="l40s") == SchedulerConfig(256, 2048, True, 16)
    sglang = get_preset("sglang-like")
    assert sglang.config(80 * GB).max_batched_tokens == 8192  # 76,294 MiB < 160 x 1024
    assert sglang.config(192 * GB).max_batched_tokens == 16384
    assert sglang.config(24 * GB).max_batched_tokens == 2048
    assert sglang.config(80 * GB, kv_tokens=3000).max_num_seqs == 1500  # KV tokens // 2
    assert get_preset("trtllm-like").config(80 * GB) == SchedulerConfig(2048, 8192, False, 32)


def test_kv_cache_comes_from_the_memory_plan():
    """Blocks = (usable − weights − buffers of the largest step) / (KV bytes per token per device x block)."""
    sched = SchedulerConfig(max_num_seqs=256, max_batched_tokens=4096, block_size=16)
    rep = build_replica(MIXTRAL, sched)
    m = rep.memory
    pool = m.usable_bytes - m.weights_bytes - m.buffers_bytes
    # Mixtral: 32 layers x 8 KV heads x 128 x 2 (K, V) x 2 bytes = 131,072 B per token, over 8 ranks
    assert rep.kv_bytes_per_token == 131072 / 8
    assert rep.kv_blocks == math.floor(pool / (16384 * 16))


def test_disaggregated_request_pays_the_kv_transfer():
    """One request, one prefill and one decode replica joined by InfiniBand NDR (50 GB/s per direction, the
    hardware DB): E2E = predict's E2E + P x 16,384 B / 50 GB/s; TTFT is predict's."""
    P, G = 2000, 50
    sched = SchedulerConfig(max_num_seqs=256, max_batched_tokens=8192)
    work = Workload(np.zeros(1), np.array([P]), np.array([G]))
    res = serve(MIXTRAL, sched, work, disaggregation=Disaggregation(1, 1, "ib-ndr"))
    ref = predict(Scenario(model="mixtral-8x7b", hardware="h100-sxm", gpus=8, prompt_len=P, gen_len=G))
    link = load_hardware_db().link("ib-ndr").bandwidth_bytes_s
    assert link == 50e9
    transfer = P * 16384 / 50e9
    assert res.latency["ttft"]["mean"] == pytest.approx(ref.ttft_s, rel=1e-9)
    assert res.latency["e2el"]["mean"] == pytest.approx(ref.e2e_latency_s + transfer, rel=1e-9)


def test_goodput_counts_requests_within_every_slo():
    """Two requests sent together without chunking: both TTFTs are the shared prefill; goodput under a TPOT
    bound between the two requests' TPOTs counts one of them."""
    sched = SchedulerConfig(max_num_seqs=256, max_batched_tokens=8192)
    work = Workload(np.zeros(2), np.array([100, 100]), np.array([2, 400]))
    res = serve(MIXTRAL, sched, work)
    tpot = (res.per_request["e2el_s"] - res.per_request["ttft_s"]) / (work.output_tokens - 1)
    bound = float(tpot.mean())
    assert tpot.min() < bound < tpot.max()
    res2 = serve(MIXTRAL, sched, work, slo={"tpot": bound})
    assert res2.goodput == pytest.approx(1 / res2.duration_s, rel=1e-12)
    assert parse_slo("ttft=200ms, tpot=0.05s,e2el=2min") == {"ttft": 0.2, "tpot": 0.05, "e2el": 120.0}


def test_closed_loop_keeps_n_in_flight():
    """A closed loop of 4 clients and 40 requests: every request after the first 4 arrives exactly when one
    finishes."""
    sched = SchedulerConfig(max_num_seqs=256, max_batched_tokens=8192)
    work = build_workload(
        num_prompts=40,
        prompt=parse_length("200", "p"),
        output=parse_length("uniform:5:50", "o"),
        rate=None,
        concurrency=4,
        seed=4,
    )
    res = serve(MIXTRAL, sched, work)
    arr, fin = res.per_request["arrival_s"], res.per_request["finish_s"]
    assert np.all(arr[:4] == 0.0)
    finishes = set(np.round(fin, 12))
    assert all(round(a, 12) in finishes for a in arr[4:])


def test_fleet_sizing_finds_the_fewest_replicas_and_prices_them():
    """The answer is minimal (one replica fewer misses the SLO) and costs replicas x GPUs x the database's
    cloud price (h100-sxm: 4.916 USD per GPU-hour, AWS capacity block, hardware_db)."""
    from capsim.serving.fleet import parse_candidates, size_fleet

    sched = SchedulerConfig(max_num_seqs=256, max_batched_tokens=8192)
    work = build_workload(
        num_prompts=600, prompt=parse_length("1000", "p"), output=parse_length("100", "o"), rate=30.0, seed=5
    )
    slo = {"tpot": 0.030}
    base = Scenario(model="mixtral-8x7b", hardware="h100-sxm")
    options = size_fleet(base, parse_candidates("h100-sxm:2"), lambda sc: sched, work, slo)
    best = options[0]
    assert best.replicas is not None and best.replicas >= 1
    assert best.usd_per_hour == pytest.approx(best.replicas * 2 * 4.916, rel=1e-12)
    assert best.result.latency["tpot"]["p99"] <= 0.030
    if best.replicas > 1:
        scen = Scenario(model="mixtral-8x7b", hardware="h100-sxm", gpus=2)
        fewer = serve(scen, sched, work, replicas=best.replicas - 1)
        assert fewer.latency["tpot"]["p99"] > 0.030
    with pytest.raises(ScenarioError, match="write HARDWARE:GPUS"):
        parse_candidates("h100-sxm")
