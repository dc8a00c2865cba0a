"""Validation: comparison arithmetic, the pass/fail gate, the written reports, the engine wiring, and a loud
failure on a deliberately wrong hardware entry. Runs without PyTorch: profile runs here are built by hand
(labelled), with routing traces written in the real trace format."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from test_profile_calibrate import fake_calibration, m  # shared hand-made calibration fixture
from typer.testing import CliRunner

from capsim.cli import app
from capsim.errors import ScenarioError
from capsim.hardware.db import load_hardware_db
from capsim.profile.calibrate import write_entry
from capsim.profile.harness import CaseResult, ProfileCase, ProfileRun
from capsim.profile.timing import Timing
from capsim.profile.validate import compare, engine_predictor, report_stem, write_validation
from capsim.routing.traces import write_trace

CASES = (
    ProfileCase("decode", 1, 128),
    ProfileCase("decode", 4, 128),
    ProfileCase("decode", 16, 512),
    ProfileCase("prefill", 1, 64),
)


def synthetic_run(folder: Path, measured_s: dict[str, float]) -> ProfileRun:
    """A ProfileRun of OLMoE's first 2 layers in fp32 with hand-set times (not a measurement) and uniformly
    random routing traces (64 experts, top-8) written in the real trace format."""
    rng = np.random.default_rng(0)
    (folder / "traces").mkdir(parents=True, exist_ok=True)
    results = []
    for case in CASES:
        ids = np.stack(
            [np.stack([rng.choice(64, 8, replace=False) for _ in range(case.tokens)]) for _ in range(2)]
        )
        write_trace(
            folder / "traces" / f"{case.name}.npz",
            ids,
            model_id="olmoe-1b-7b-2L",
            num_experts=64,
            top_k=8,
            metadata={"recorded_with": "capsim tests: synthetic uniform routing"},
        )
        distinct = [float(len(np.unique(ids[layer]))) for layer in range(2)]
        t = measured_s[case.name]
        results.append(
            CaseResult(case, Timing((t, t, t)), f"traces/{case.name}.npz", case.tokens, tuple(distinct))
        )
    run = ProfileRun(
        machine={"device_type": "cpu", "cpu": "Test CPU", "slug": "cpu-test-1t", "torch_threads": 1},
        model="olmoe-1b-7b",
        num_layers=2,
        dtype="fp32",
        plan={},
        cases=results,
        date="2026-01-02T03:04:05+00:00",
        command="synthetic",
    )
    run.save(folder / "profile.json")
    return run


def test_errors_median_and_gate_by_hand(tmp_path: Path) -> None:
    measured = {
        "decode-b1-c128": 0.100,
        "decode-b4-c128": 0.200,
        "decode-b16-c512": 0.400,
        "prefill-b1-p64": 1.0,
    }
    run = synthetic_run(tmp_path, measured)
    # predictions off by -10 %, +30 %, -40 % (decode) and +50 % (prefill)
    factor = {"decode-b1-c128": 0.9, "decode-b4-c128": 1.3, "decode-b16-c512": 0.6, "prefill-b1-p64": 1.5}
    report = compare(run, lambda case, trace: measured[case.name] * factor[case.name], hardware_id="x")
    errors = {c.case.name: c.error for c in report.comparisons}
    assert errors == pytest.approx({k: v - 1.0 for k, v in factor.items()})
    assert report.median_abs_error("decode") == pytest.approx(0.30)  # median of 0.1, 0.3, 0.4
    assert report.median_error("decode") == pytest.approx(-0.10)  # median of -0.1, +0.3, -0.4
    assert report.median_abs_error("prefill") == pytest.approx(0.50)
    assert not report.passed  # 30 % > 25 %
    assert report.verdict() == "FAIL: median |error| of decode-step time 30.0% (threshold 25%)"
    relaxed = compare(run, lambda case, trace: measured[case.name] * factor[case.name], threshold=0.35)
    assert relaxed.passed


def test_predictor_gets_the_recorded_trace(tmp_path: Path) -> None:
    run = synthetic_run(tmp_path, {c.name: 0.1 for c in CASES})
    seen: list[Path] = []
    compare(run, lambda case, trace: (seen.append(trace), 0.1)[1])
    assert seen == [tmp_path / "traces" / f"{c.name}.npz" for c in CASES]


def test_bad_predictions_and_thresholds_are_refused(tmp_path: Path) -> None:
    run = synthetic_run(tmp_path, {c.name: 0.1 for c in CASES})
    with pytest.raises(ScenarioError, match="a time must be positive"):
        compare(run, lambda case, trace: 0.0)
    with pytest.raises(ScenarioError, match="threshold must be positive"):
        compare(run, lambda case, trace: 0.1, threshold=0)


def test_reports_are_written_with_machine_command_and_date(tmp_path: Path) -> None:
    run = synthetic_run(tmp_path / "run", {c.name: 0.1 for c in CASES})
    report = compare(run, lambda case, trace: 0.11, hardware_id="hw", command="capsim validate --quick")
    stem = report_stem(report, quick=True)
    assert stem == "cpu-test-1t-2026-01-02-quick"
    json_path, md_path = write_validation(report, tmp_path / "validation", stem)
    data = json.loads(json_path.read_text())
    assert data["machine"]["cpu"] == "Test CPU" and data["command"] == "capsim validate --quick"
    assert data["date"] == "2026-01-02T03:04:05+00:00" and data["passed"] is True
    assert [c["name"] for c in data["cases"]] == [c.name for c in CASES]
    assert data["cases"][0]["error"] == pytest.approx(0.1)
    md = md_path.read_text()
    assert "| decode-b1-c128 | decode | 1 | 128 | " in md and "| 100.00 | 110.00 | +10.0% |" in md
    assert "**PASS: median |error| of decode-step time 10.0% (threshold 25%)**" in md


@pytest.fixture
def entries(tmp_path: Path) -> dict[str, Path]:
    """A calibrated-style entry (hand-made numbers) and the same with every bandwidth x4."""
    right = write_entry(fake_calibration(), tmp_path / "right")
    fast = fake_calibration(memory={k: m(k, 4 * v.value) for k, v in fake_calibration().memory.items()})
    wrong = write_entry(fast, tmp_path / "wrong")
    return {"right": right, "wrong": wrong}


def engine_times(run_dir: Path, entry: Path) -> dict[str, float]:
    """What the engine predicts for each case with ``entry``, via the same predictor validation uses."""
    probe = synthetic_run(run_dir, {c.name: 1.0 for c in CASES})
    predictor = engine_predictor(probe, hardware_id=entry.stem, hardware_db=load_hardware_db([entry]))
    return {r.case.name: predictor(r.case, probe.trace_path(r)) for r in probe.cases}


def test_deliberately_wrong_entry_fails_loudly(tmp_path: Path, entries: dict[str, Path]) -> None:
    # "measured" = the engine's own predictions with the right entry, so the right entry matches exactly and
    # only the bandwidth x4 entry can move the error: this isolates the gate, not the engine's accuracy
    truth = engine_times(tmp_path / "probe", entries["right"])
    run = synthetic_run(tmp_path / "run", truth)
    db = load_hardware_db([entries["right"]])
    ok = compare(run, engine_predictor(run, hardware_id=entries["right"].stem, hardware_db=db))
    assert ok.passed and ok.median_abs_error("decode") == pytest.approx(0.0, abs=1e-9)
    bad_db = load_hardware_db([entries["wrong"]])
    bad = compare(run, engine_predictor(run, hardware_id=entries["wrong"].stem, hardware_db=bad_db))
    assert not bad.passed
    # decode here is memory-bound, so 4x the bandwidth removes most of the time: error well below -50 %
    assert bad.median_error("decode") < -0.5


def test_cli_validate_exit_codes(tmp_path: Path, entries: dict[str, Path]) -> None:
    truth = engine_times(tmp_path / "probe", entries["right"])
    run = synthetic_run(tmp_path / "run", truth)
    runner = CliRunner()
    common = ["validate", "--profile", str(run.path), "--out-dir", str(tmp_path / "out")]
    good = runner.invoke(app, [*common, "--hardware-db", str(entries["right"])])
    assert good.exit_code == 0, good.output
    assert "PASS: median |error| of decode-step time 0.0% (threshold 25%)" in good.output
    bad = runner.invoke(app, [*common, "--hardware-db", str(entries["wrong"])])
    assert bad.exit_code == 1
    assert "error: validation FAIL: median |error| of decode-step time" in bad.output
    day = datetime.now(UTC).date().isoformat()  # the report is dated when validation runs
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    # issue 15: the second run of the day gets its own report instead of overwriting the first
    assert written == [
        f"cpu-test-1t-{day}-2.json",
        f"cpu-test-1t-{day}-2.md",
        f"cpu-test-1t-{day}.json",
        f"cpu-test-1t-{day}.md",
    ]
    as_json = runner.invoke(app, [*common, "--hardware-db", str(entries["right"]), "--json"])
    assert json.loads(as_json.stdout)["passed"] is True


def test_cli_validate_needs_an_id_for_several_entries(tmp_path: Path, entries: dict[str, Path]) -> None:
    run = synthetic_run(tmp_path / "run", {c.name: 0.1 for c in CASES})
    result = CliRunner().invoke(
        app,
        [
            "validate",
            "--profile",
            str(run.path),
            "--hardware-db",
            str(entries["right"]),
            "--hardware-db",
            str(entries["wrong"]),
        ],
    )
    assert result.exit_code == 1
    assert "name the entry with --hardware" in result.output


def test_uniform_routing_option_reaches_the_engine(tmp_path: Path, entries: dict[str, Path]) -> None:
    run = synthetic_run(tmp_path, {c.name: 0.1 for c in CASES})
    db = load_hardware_db([entries["right"]])
    traced = engine_predictor(run, hardware_id=entries["right"].stem, hardware_db=db)
    uniform = engine_predictor(run, hardware_id=entries["right"].stem, hardware_db=db, routing="uniform")
    # the synthetic traces are uniform random, so both routers give close (not identical) predictions
    for r in run.cases:
        a, b = traced(r.case, run.trace_path(r)), uniform(r.case, run.trace_path(r))
        assert a == pytest.approx(b, rel=0.15)
