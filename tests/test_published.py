"""capsim validate --published: the shipped measurement set, its loader, the case -> Scenario mapper, the
scores and the command."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from capsim import DataFileError, load_hardware_db
from capsim.cli import app
from capsim.hardware.db import load_hardware_db_with
from capsim.validation.published import (
    CaseResult,
    PublishedCase,
    PublishedReport,
    load_published,
    predict_case,
    scenario_for,
    summarise,
)

CASE = """
[[case]]
id = "tiny"
group = "single_user"
confidence = "high"
source = "test fixture"
locator = "here"
engine = "vllm"
model = "mixtral-8x7b"
hardware = "h100-sxm"
gpus_per_replica = 1
replicas = 1
tp = 1
ep = 1
placement = "gpu"
weight_dtype = "fp8"
kv_dtype = "bf16"
batch = 1
prompt_len = 128
gen_len = 16
metric = "tpot_s"
value = 0.010
"""


def _case(**changes: object) -> PublishedCase:
    base = dict(
        id="c",
        group="g",
        confidence="high",
        source="s",
        locator="l",
        model="mixtral-8x7b",
        hardware="h100-sxm",
        gpus_per_replica=1,
        replicas=1,
        tp=1,
        ep=1,
        placement="gpu",
        weight_dtype="fp8",
        kv_dtype="bf16",
        batch=1,
        prompt_len=128,
        gen_len=16,
        metric="tpot_s",
        value=0.010,
    )
    base.update(changes)
    return PublishedCase(**base)  # type: ignore[arg-type]


def test_shipped_set_loads_with_sources() -> None:
    cases = load_published()
    # the 19 cases of the project's shared measurement notes
    assert len(cases) >= 19
    assert len({c.id for c in cases}) == len(cases)
    for c in cases:
        assert c.source and c.locator and c.notes, c.id
        assert c.engine, c.id
        if c.source.startswith("github:"):
            assert c.commit and len(c.commit) == 40, c.id
    groups = {c.group for c in cases}
    assert {"gpu_serving", "multi_gpu", "single_user", "cpu_hybrid", "offloading", "apple_silicon"} <= groups


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (('metric = "tpot_s"', 'metric = "tps"'), "metric 'tps' is not one of tpot_s"),
        (("batch = 1", "batch = 0"), "field 'batch' must be >= 1, got 0"),
        (('confidence = "high"', 'confidence = "sure"'), "confidence 'sure' is not one of high, medium, low"),
        (("batch = 1", "batch = true"), "field 'batch' must be int, got True"),
        (('engine = "vllm"', 'engine = "vllm"\ncolour = "red"'), "unknown field(s) colour"),
        (('locator = "here"\n', ""), "field 'locator' is required"),
        (('placement = "gpu"', 'placement = "cpu-only"'), "cpu-only cases have gpus_per_replica = 0"),
    ],
)
def test_loader_names_the_bad_field(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    path = tmp_path / "m.toml"
    path.write_text(CASE.replace(*edit))
    with pytest.raises(DataFileError) as err:
        load_published(path)
    assert message in str(err.value)
    assert "case 'tiny'" in str(err.value)


def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text(CASE + CASE)
    with pytest.raises(DataFileError, match="duplicate id"):
        load_published(path)


def test_ratio_error_and_speed_ratio_by_hand() -> None:
    # a time metric: measured 10 ms, predicted 8 ms -> ratio 0.8, error -20 %, speed ratio 10/8 = 1.25
    r = CaseResult(_case(value=0.010), 0.008, "ok")
    assert r.ratio == pytest.approx(0.8)
    assert r.error == pytest.approx(-0.2)
    assert r.speed_ratio == pytest.approx(1.25)
    # a rate metric: measured 1000 tok/s, predicted 1500 -> speed ratio 1.5
    r = CaseResult(
        _case(metric="decode_tokens_per_s_per_replica", value=1000.0, includes_prefill=False), 1500.0, "ok"
    )
    assert r.error == pytest.approx(0.5)
    assert r.speed_ratio == pytest.approx(1.5)


def test_summary_median_and_geomean_by_hand() -> None:
    # speed ratios 1.25, 0.8 and 2.0: geomean = (1.25 x 0.8 x 2)^(1/3) = 2^(1/3) = 1.2599
    # |errors| 0.2, 0.25, 0.5: median 0.25. A not-expressible case counts as a case, not as a prediction.
    results = [
        CaseResult(_case(value=0.010), 0.008, "ok"),
        CaseResult(_case(value=0.010), 0.0125, "ok"),
        CaseResult(_case(metric="prefill_tokens_per_s", value=100.0), 200.0, "ok"),
        CaseResult(_case(), None, "not expressible", "why"),
    ]
    s = summarise("g", results)
    assert (s.cases, s.predicted) == (4, 3)
    assert s.median_abs_error == pytest.approx(0.25)
    assert s.geomean_speed_ratio == pytest.approx(2 ** (1 / 3))


def test_report_gates() -> None:
    ok = CaseResult(_case(value=0.010), 0.0101, "ok")
    assert PublishedReport((ok,), "x").failures() == []
    slow = CaseResult(_case(value=0.010), 0.02, "ok")  # speed ratio 0.5, |error| 100 %
    failures = PublishedReport((slow,), "x").failures()
    assert failures == [
        "median |error| 100.0% > 25%",
        "geo-mean speed ratio 0.50 outside 0.85-1.15",
        "group g: median |error| 100.0% > 35%",
    ]


def test_features_capsim_lacks_are_listed_not_dropped() -> None:
    db = load_hardware_db()
    # attention DP became a Scenario field (issue 12): such a case now maps onto it
    scenario, _ = scenario_for(_case(attention_dp=8, gpus_per_replica=8, tp=1, ep=8), db)
    assert (scenario.attention_dp, scenario.tp, scenario.ep) == (8, 1, 8)
    r = predict_case(_case(speculative=True), db)
    assert r.reason == 'speculative decoding: the case does not say how (give spec = "mtp:K")'
    scenario, _ = scenario_for(_case(model="deepseek-r1", speculative=True, spec="mtp:3"), db)
    assert scenario.spec == "mtp:3"
    r = predict_case(_case(hardware="no-such-gpu"), db)
    assert r.reason == "hardware 'no-such-gpu' is not in the hardware database"


def test_a_feature_is_used_once_the_scenario_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """attention_dp is passed through as soon as Scenario has the field FEATURE_FIELDS names (it does now);
    a feature whose field is missing makes the case not expressible, naming the feature."""
    from dataclasses import fields

    from capsim import Scenario
    from capsim.validation import published

    db = load_hardware_db()
    case = _case(
        attention_dp=8, gpus_per_replica=8, tp=1, ep=8, hardware="h200-sxm", model="deepseek-r1", batch=64
    )
    assert "attention_dp" in {f.name for f in fields(Scenario)}
    scenario, _ = scenario_for(case, db)
    assert scenario.attention_dp == 8 and scenario.ep == 8 and scenario.tp == 1
    monkeypatch.setitem(published.FEATURE_FIELDS, "attention_dp", "no_such_field")
    with pytest.raises(published.NotExpressible, match=r"attention data parallelism \(attention_dp = 8\)"):
        scenario_for(case, db)


def test_cpu_cases_get_a_system_from_their_parts() -> None:
    case = _case(
        placement="cpu-only",
        hardware=None,
        gpus_per_replica=0,
        cpu="xeon-6454s",
        cpu_sockets=2,
        dram="ddr5-4800 x 8 channels per socket",
        host_memory_gb=512.0,
        model="qwen3-30b-a3b",
        weight_dtype="int4",
    )
    scenario, db = scenario_for(case, load_hardware_db())
    assert scenario.mode == "cpu" and scenario.numa == "replicate" and scenario.host_memory_gb == 512.0
    system = db.system(scenario.hardware)
    assert system.cpus[0][0].id == "xeon-6454s" and system.cpus[0][1] == 2
    assert system.dram.channels == 16  # 8 per socket x 2 sockets


def test_in_memory_entries_go_through_the_validator() -> None:
    db = load_hardware_db()
    bad = {"schema": 1, "id": "x", "kind": "system", "name": "x", "source": "s", "fabric": "warp"}
    with pytest.raises(DataFileError, match="fabric"):
        load_hardware_db_with(db, [bad])
    with pytest.raises(DataFileError, match="already in the database"):
        load_hardware_db_with(
            db,
            [{"schema": 1, "id": "dgx-h100", "kind": "system", "name": "x", "source": "s", "fabric": "none"}],
        )


def test_throughput_with_prefill_counts_every_wave() -> None:
    """includes_prefill: batch x gen_len over the job time (all waves), times the replicas for *_total."""
    from capsim import predict

    case = _case(
        metric="decode_tokens_per_s_total",
        value=1000.0,
        includes_prefill=True,
        replicas=4,
        batch=64,
        prompt_len=256,
        gen_len=32,
    )
    result = predict_case(case)
    scenario, db = scenario_for(case, load_hardware_db())
    p = predict(scenario, hardware_db=db)
    assert result.predicted == pytest.approx(4 * 64 * 32 / p.job_time_s)
    steady = predict_case(
        _case(
            metric="decode_tokens_per_s_per_replica",
            value=1000.0,
            includes_prefill=False,
            batch=64,
            prompt_len=256,
            gen_len=32,
        )
    )
    assert steady.predicted == pytest.approx(p.batch_per_wave / p.tpot_s)
    assert math.isfinite(steady.predicted)


def test_prefill_throughput_is_prompt_tokens_of_a_wave_over_its_ttft() -> None:
    """prefill_tokens_per_s: the resident batch's prompt tokens over the TTFT of that batch (one replica). The
    shipped set has such cases (vllm bench serve runs of 100 prompts of 32,000 tokens: input tokens / duration)."""
    from capsim import predict

    case = _case(metric="prefill_tokens_per_s", value=10000.0, batch=8, prompt_len=4096, gen_len=1)
    result = predict_case(case)
    scenario, db = scenario_for(case, load_hardware_db())
    p = predict(scenario, hardware_db=db)
    assert result.status == "ok"
    assert result.predicted == pytest.approx(p.batch_per_wave * 4096 / p.ttft_s)
    assert any(c.metric == "prefill_tokens_per_s" for c in load_published())


def test_cli_published_table_and_json(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text(CASE)
    runner = CliRunner()
    res = runner.invoke(app, ["validate", "--published-file", str(path), "--json"])
    import json

    payload = json.loads(res.stdout)
    assert payload["cases"][0]["id"] == "tiny"
    assert payload["cases"][0]["status"] == "ok"
    assert res.exit_code == (1 if payload["failures"] else 0)
    res = runner.invoke(app, ["validate", "--published-file", str(path), "--group", "nope"])
    assert res.exit_code == 1
    assert "unknown group(s) nope; groups in m.toml: single_user" in res.stderr
    res = runner.invoke(app, ["validate", "--published-file", str(tmp_path / "missing.toml")])
    assert res.exit_code == 1
    assert "no such file" in res.stderr


def test_new_hardware_entries_for_the_set() -> None:
    db = load_hardware_db()
    for entry_id in (
        "gb10",
        "rtx-4090d",
        "rtx-2080",
        "rtx-a5000",
        "m2-max",
        "xeon-6454s",
        "epyc-9b14",
        "core-i9-10900x",
    ):
        entry = db.get(entry_id)
        assert entry.source, entry_id
    assert db.accelerator("rtx-a5000").peak_tflops_dense["bf16"] == pytest.approx(
        222.2 / 2
    )  # datasheet sparse / 2
    assert db.accelerator("gb10").unified_memory
    # Xeon Gold 6454S: 32 cores x 2.2 GHz x 1,024 AMX-BF16 FLOP/cycle = 72.09 TFLOPS
    assert db.cpu("xeon-6454s").peak_tflops_dense["bf16"] == pytest.approx(32 * 2.2 * 1024 / 1000)


def test_every_shipped_case_is_predicted_or_says_why() -> None:
    """No case of the shipped set is dropped: each gets a finite prediction or a 'not expressible' reason."""
    report = __import__("capsim.validation.published", fromlist=["score_published"]).score_published()
    assert len(report.results) == len(load_published())
    for r in report.results:
        if r.status == "ok":
            assert r.predicted is not None and math.isfinite(r.predicted) and r.predicted > 0, r.case.id
        else:
            assert r.status == "not expressible" and r.reason, r.case.id
    # the m2-max case runs on the derived (soft) fp32 peak of its entry, derived as the m2-ultra entry's
    m2 = next(r for r in report.results if r.case.hardware == "m2-max")
    assert m2.status == "ok"
