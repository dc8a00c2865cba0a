"""Sweeps: the vectorised grid path equals the scalar predict path; resumable, exactly-once output."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from capsim.cli import app
from capsim.engine import predict
from capsim.scenario import Scenario
from capsim.sweep import Grid, evaluate_segment, parse_int_axis, resolve_group
from capsim.sweep.evaluate import decode_sample_steps
from capsim.sweep.run import Filters, SweepRun, pareto_mask, run_local

runner = CliRunner()


def test_parse_int_axis_forms() -> None:
    assert parse_int_axis("1,2,4", "batch") == (1, 2, 4)
    # geometric: 1, 2, 4, ..., 64 (x2 up to and including the stop)
    assert parse_int_axis("1:64:x2", "batch") == (1, 2, 4, 8, 16, 32, 64)
    # arithmetic: 128, 256, 384, 512
    assert parse_int_axis("128:512:+128", "prompt") == (128, 256, 384, 512)


@pytest.mark.parametrize("text", ["", "a", "0", "1:10:x1", "1:10:+0"])
def test_parse_int_axis_errors(text: str) -> None:
    from capsim import ScenarioError

    with pytest.raises(ScenarioError):
        parse_int_axis(text, "batch")


def test_decode_samples_exact_when_few_steps() -> None:
    # gen 5 -> steps 1..4 all evaluated (weights 1,1,1,1,0,...); gen 100 -> 4 evenly spaced of 99 steps
    pos, w = decode_sample_steps(np.array([5, 100]), 4)
    assert pos[0].tolist() == [1, 2, 3, 4] and w[0].tolist() == [1, 1, 1, 1]
    assert pos[1].tolist() == [1, 34, 66, 99] and w[1].tolist() == [1, 1, 1, 1]


@st.composite
def grid_points(draw: st.DrawFn) -> tuple[str, str, int, int, int, int]:
    """A model/hardware pair and numeric point; gen_len <= 17 so every decode step is evaluated (exact)."""
    model, hw, gpus = draw(st.sampled_from([
        ("mixtral-8x7b", "h100-sxm", 2), ("qwen3-30b-a3b", "a100-sxm-80gb", 1), ("deepseek-v2-lite", "l40s", 1),
        ("gpt-oss-20b", "h200-sxm", 1), ("deepseek-v3", "dgx-h200", 8),
    ]))
    return model, hw, gpus, draw(st.integers(1, 600)), draw(st.integers(1, 20000)), draw(st.integers(1, 17))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(point=grid_points())
def test_sweep_equals_predict(default_hardware_db, point) -> None:  # type: ignore[no-untyped-def]
    model, hw, gpus, batch, prompt, gen = point
    grid = Grid(models=(model,), hardware=(hw,), gpus=(gpus,), batch=(batch,), prompt_len=(prompt,), gen_len=(gen,))
    cols = evaluate_segment(grid, resolve_group(grid, grid.group_keys[0], default_hardware_db), 0, 1)
    from capsim import DoesNotFitError

    try:
        pred = predict(Scenario(model=model, hardware=hw, gpus=gpus, batch=batch, prompt_len=prompt, gen_len=gen),
                       hardware_db=default_hardware_db)
    except DoesNotFitError:
        assert not cols["feasible"][0]
        return
    assert cols["feasible"][0]
    assert cols["waves"][0] == pred.memory.waves
    assert cols["ttft_s"][0] == pytest.approx(pred.ttft_s, rel=1e-9)
    if pred.tpot_s is None:
        assert np.isnan(cols["tpot_s"][0])
    else:
        assert cols["tpot_s"][0] == pytest.approx(pred.tpot_s, rel=1e-9)
        assert cols["s_mbu"][0] == pytest.approx(pred.decode.s_mbu, rel=1e-9)
        assert cols["mfu"][0] == pytest.approx(pred.decode.mfu, rel=1e-9)
    assert cols["e2e_latency_s"][0] == pytest.approx(pred.e2e_latency_s, rel=1e-9)


def test_sampled_tpot_close_to_predict(default_hardware_db) -> None:
    """gen 1000 with 16 samples: the sample mean of a piecewise-linear step time is within 0.1 %."""
    grid = Grid(models=("mixtral-8x7b",), hardware=("h100-sxm",), gpus=(2,), batch=(16,), prompt_len=(1000,),
                gen_len=(1000,))
    cols = evaluate_segment(grid, resolve_group(grid, grid.group_keys[0], default_hardware_db), 0, 1)
    pred = predict(Scenario(model="mixtral-8x7b", hardware="h100-sxm", gpus=2, batch=16, prompt_len=1000,
                            gen_len=1000), hardware_db=default_hardware_db)
    assert cols["tpot_s"][0] == pytest.approx(pred.tpot_s, rel=1e-3)


SMALL = Grid(models=("mixtral-8x7b", "qwen3-30b-a3b"), hardware=("h100-sxm", "rtx-4090"), gpus=(1, 2),
             batch=(1, 4, 64), prompt_len=(256, 4096), gen_len=(8,))


def _read(path):  # type: ignore[no-untyped-def]
    return path.read_text().splitlines()


def test_interrupted_sweep_resumes_without_loss_or_duplicates(tmp_path, default_hardware_db) -> None:
    full = SweepRun(SMALL, tmp_path / "full.csv", "csv", 5, Filters())
    run_local(full, default_hardware_db, full.prepare())
    full.finish()

    part = SweepRun(SMALL, tmp_path / "resumed.csv", "csv", 5, Filters())
    todo = part.prepare()

    class Interrupt(Exception):
        pass

    def stop_after_three(index: int, rows: int) -> None:
        if index == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_local(part, default_hardware_db, todo, stop_after_three)
    remaining = SweepRun(SMALL, tmp_path / "resumed.csv", "csv", 5, Filters()).prepare()
    assert remaining == list(range(3, part.n_chunks))  # chunks 0-2 were written whole, nothing else
    run_local(part, default_hardware_db, remaining)
    part.finish()
    assert _read(tmp_path / "resumed.csv") == _read(tmp_path / "full.csv")
    assert len(_read(tmp_path / "full.csv")) == SMALL.size + 1  # header + every configuration once


def test_resume_refuses_a_different_grid(tmp_path, default_hardware_db) -> None:
    from capsim import ScenarioError

    run = SweepRun(SMALL, tmp_path / "r.csv", "csv", 5, Filters())
    run.prepare()
    other = SweepRun(SMALL.__class__(**{**SMALL.__dict__, "batch": (1, 2)}), tmp_path / "r.csv", "csv", 5, Filters())
    with pytest.raises(ScenarioError, match="different grid"):
        other.prepare()


def test_pareto_mask_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    tpot, tp = rng.random(300), rng.random(300)
    mask = pareto_mask(tpot, tp)
    for i in range(300):
        dominated = np.any((tpot <= tpot[i]) & (tp >= tp[i]) & ((tpot < tpot[i]) | (tp > tp[i])))
        assert mask[i] == (not dominated)


def test_cli_sweep_filters_and_pareto(tmp_path) -> None:
    out = tmp_path / "s.jsonl"
    front = tmp_path / "front.json"
    result = runner.invoke(app, [
        "sweep", "--model", "mixtral-8x7b", "--hardware", "h100-sxm", "--gpus", "1,2", "--batch", "1:64:x4",
        "--prompt-len", "512", "--gen-len", "16", "--out", str(out), "--feasible-only", "--slo-tpot", "20ms",
        "--pareto", str(front), "--chunk-rows", "3",
    ])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    # 1 GPU cannot hold Mixtral (93 GB bf16 > 72 GB usable), so only the 2-GPU rows can survive the filter
    assert rows and all(r["gpus"] == 2 and r["feasible"] and r["tpot_s"] <= 0.020 for r in rows)
    assert json.loads(front.read_text())
    assert not (tmp_path / "s.jsonl.parts").exists()


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--model", "mixtral-8x7b", "--hardware", "h100-sxm", "--batch", "x"], "error: cannot read --batch 'x'"),
        (["--model", "mixtral", "--hardware", "h100-sxm"], "error: unknown model 'mixtral'"),
        (["--model", "mixtral-8x7b", "--hardware", "h100"], "error: unknown hardware 'h100'"),
        (["--hardware", "h100-sxm"], "error: give --model and --hardware"),
    ],
)
def test_cli_sweep_errors(tmp_path, args, expected) -> None:  # type: ignore[no-untyped-def]
    result = runner.invoke(app, ["sweep", *args, "--out", str(tmp_path / "x.csv")])
    assert result.exit_code == 1
    assert result.stderr.startswith(expected), result.stderr
    assert not (tmp_path / "x.csv.parts").exists()


def test_cli_csv_has_header_and_all_rows(tmp_path) -> None:
    out = tmp_path / "s.csv"
    result = runner.invoke(app, ["sweep", "--model", "olmoe-1b-7b", "--hardware", "l4,h100-sxm", "--batch", "1,2,3",
                                 "--gen-len", "4", "--out", str(out), "--chunk-rows", "4"])
    assert result.exit_code == 0, result.output
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * 3
    assert [r["batch"] for r in rows] == ["1", "2", "3"] * 2


def test_explain_prints_substituted_formulas() -> None:
    result = runner.invoke(app, ["explain", "--model", "mixtral-8x7b"])
    assert result.exit_code == 0
    # attention projections: 2 x 41,943,040 params = 83,886,080 FLOPs per token
    assert "83886080*T" in result.stdout
    # routed experts: 2 x k=2 x 176,160,768 = 704,643,072 FLOPs per token; bytes A x 176,160,768 x b_w
    assert "704643072*T" in result.stdout and "176160768*A*b_w" in result.stdout


@pytest.mark.slow
def test_dask_backend_matches_local(tmp_path) -> None:
    pytest.importorskip("distributed")
    local, dask_out = tmp_path / "local.csv", tmp_path / "dask.csv"
    base = ["sweep", "--model", "qwen3-30b-a3b", "--hardware", "h100-sxm,a100-sxm-80gb", "--batch", "1:32:x2",
            "--gen-len", "4", "--chunk-rows", "5"]
    assert runner.invoke(app, [*base, "--out", str(local)]).exit_code == 0
    result = runner.invoke(app, [*base, "--out", str(dask_out), "--backend", "dask", "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert dask_out.read_text() == local.read_text()
