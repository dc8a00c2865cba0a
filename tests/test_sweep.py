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
from capsim.engine.predict import predict
from capsim.engine.scenario import Scenario
from capsim.sweep import Grid, evaluate_segment, parse_int_axis, resolve_group
from capsim.sweep.fronts import pareto_mask
from capsim.sweep.run import Filters, SweepRun, run_local

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


@st.composite
def grid_points(draw: st.DrawFn) -> tuple[str, str, int, int, int, int]:
    """A model/hardware pair and a numeric point. gen_len up to 3000: TPOT is an exact sum over every step,
    so it must equal predict's however long the generation. Prompts are drawn short half the time so that
    gpt-oss's 128-token windows fall inside the decode range."""
    model, hw, gpus = draw(
        st.sampled_from(
            [
                ("mixtral-8x7b", "h100-sxm", 2),
                ("qwen3-30b-a3b", "a100-sxm-80gb", 1),
                ("deepseek-v2-lite", "l40s", 1),
                ("gpt-oss-20b", "h200-sxm", 1),
                ("deepseek-v3", "dgx-h200", 8),
                ("gpt-oss-120b", "b200", 1),
            ]
        )
    )
    prompt = draw(st.one_of(st.integers(1, 300), st.integers(1, 20000)))
    return model, hw, gpus, draw(st.integers(1, 600)), prompt, draw(st.integers(1, 3000))


def _assert_row_equals_prediction(cols, i, pred) -> None:  # type: ignore[no-untyped-def]
    from capsim.units import GB

    assert cols["feasible"][i]
    assert cols["max_batch"][i] == pred.memory.max_batch
    assert cols["waves"][i] == pred.memory.waves
    assert cols["batch_per_wave"][i] == pred.batch_per_wave
    assert cols["weights_gb"][i] == pytest.approx(pred.memory.weights_bytes / GB, rel=1e-12)
    assert cols["usable_gb"][i] == pytest.approx(pred.memory.usable_bytes / GB, rel=1e-12)
    assert cols["memory_needed_gb"][i] == pytest.approx(pred.memory.total_bytes / GB, rel=1e-12)
    assert cols["ttft_s"][i] == pytest.approx(pred.ttft_s, rel=1e-9)
    assert cols["prefill_tokens_per_s"][i] == pytest.approx(pred.prefill_tokens_per_s, rel=1e-9)
    assert cols["e2e_latency_s"][i] == pytest.approx(pred.e2e_latency_s, rel=1e-9)
    # the metrics predict reports: the decode's, or the prefill's where one token is generated (no decode step)
    reported = pred.to_dict()
    for name in ("s_mbu", "mbu", "s_mfu", "mfu"):
        assert cols[name][i] == pytest.approx(reported[name], rel=1e-9), name
    assert cols["bottleneck"][i] == reported["bottleneck"]
    if pred.tpot_s is None:
        assert np.isnan(cols["tpot_s"][i]) and np.isnan(cols["decode_tokens_per_s"][i])
        assert reported["mbu"] == pred.prefill.mbu > 0  # issue 16: the sweep wrote NaN here
        return
    assert cols["tpot_s"][i] == pytest.approx(pred.tpot_s, rel=1e-9)
    assert cols["decode_tokens_per_s"][i] == pytest.approx(pred.decode_tokens_per_s, rel=1e-9)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(point=grid_points())
def test_sweep_equals_predict(default_hardware_db, point) -> None:  # type: ignore[no-untyped-def]
    model, hw, gpus, batch, prompt, gen = point
    grid = Grid(
        models=(model,), hardware=(hw,), gpus=(gpus,), batch=(batch,), prompt_len=(prompt,), gen_len=(gen,)
    )
    cols = evaluate_segment(grid, resolve_group(grid, grid.group_keys[0], default_hardware_db), 0, 1)
    from capsim import DoesNotFitError

    try:
        pred = predict(
            Scenario(model=model, hardware=hw, gpus=gpus, batch=batch, prompt_len=prompt, gen_len=gen),
            hardware_db=default_hardware_db,
        )
    except DoesNotFitError:
        assert not cols["feasible"][0]
        return
    _assert_row_equals_prediction(cols, 0, pred)


@pytest.mark.parametrize("model,hw,gpus", [("gpt-oss-20b", "h200-sxm", 1), ("mixtral-8x7b", "h100-sxm", 2)])
def test_whole_segment_equals_predict_row_by_row(default_hardware_db, model, hw, gpus) -> None:  # type: ignore[no-untyped-def]
    """One vectorised call over a 3 x 5 x 4 grid (batches mixed, prompts either side of gpt-oss's 128-token
    window, single- and multi-chunk prefills, gen 1 = no decode step) equals 60 separate predicts."""
    grid = Grid(
        models=(model,),
        hardware=(hw,),
        gpus=(gpus,),
        batch=(1, 7, 64),
        prompt_len=(60, 127, 128, 129, 3000),
        gen_len=(1, 2, 70, 1000),
    )
    group = resolve_group(grid, grid.group_keys[0], default_hardware_db)
    cols = evaluate_segment(grid, group, 0, grid.numeric_size)
    for i in range(grid.numeric_size):
        pred = predict(
            Scenario(
                model=model,
                hardware=hw,
                gpus=gpus,
                batch=int(cols["batch"][i]),
                prompt_len=int(cols["prompt_len"][i]),
                gen_len=int(cols["gen_len"][i]),
            ),
            hardware_db=default_hardware_db,
        )
        _assert_row_equals_prediction(cols, i, pred)


def test_batch_beyond_kv_capacity_runs_in_waves(default_hardware_db) -> None:
    """Mixtral on 2 x H100 with 32k-token sequences: the KV cache holds fewer sequences than asked, so the row
    runs in waves of max_batch, as predict's memory plan says."""
    grid = Grid(
        models=("mixtral-8x7b",),
        hardware=("h100-sxm",),
        gpus=(2,),
        batch=(1024,),
        prompt_len=(32000,),
        gen_len=(64,),
    )
    cols = evaluate_segment(grid, resolve_group(grid, grid.group_keys[0], default_hardware_db), 0, 1)
    pred = predict(
        Scenario(model="mixtral-8x7b", hardware="h100-sxm", gpus=2, batch=1024, prompt_len=32000, gen_len=64),
        hardware_db=default_hardware_db,
    )
    assert pred.memory.waves > 1  # the case is what it claims to be
    assert cols["max_batch"][0] == pred.memory.max_batch
    assert cols["waves"][0] == pred.memory.waves == -(-1024 // pred.memory.max_batch)
    _assert_row_equals_prediction(cols, 0, pred)


def test_group_that_cannot_run_says_why(default_hardware_db) -> None:
    """A system id asked for more GPUs than it has: every row of that group is infeasible with the reason,
    and the rest of the sweep goes on."""
    grid = Grid(models=("olmoe-1b-7b",), hardware=("dgx-h100",), gpus=(16,), batch=(1, 2))
    group = resolve_group(grid, grid.group_keys[0], default_hardware_db)
    cols = evaluate_segment(grid, group, 0, 2)
    assert group.resolved is None and group.error
    assert not cols["feasible"].any()
    assert all(str(b).startswith("does not run: ") for b in cols["bottleneck"])


SMALL = Grid(
    models=("mixtral-8x7b", "qwen3-30b-a3b"),
    hardware=("h100-sxm", "rtx-4090"),
    gpus=(1, 2),
    batch=(1, 4, 64),
    prompt_len=(256, 4096),
    gen_len=(8,),
)


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
    run_local(run, default_hardware_db, run.prepare()[:1])  # one finished part: something to resume
    other = SweepRun(
        SMALL.__class__(**{**SMALL.__dict__, "batch": (1, 2)}), tmp_path / "r.csv", "csv", 5, Filters()
    )
    with pytest.raises(ScenarioError, match="different grid"):
        other.prepare()


def test_issue_15_parts_without_a_finished_part_do_not_block(tmp_path, default_hardware_db) -> None:
    # a run that stopped before its first chunk (e.g. the old --gen-len 99999999999999999999999 overflow)
    # left a manifest only; a different sweep to the same path now starts over instead of refusing
    run = SweepRun(SMALL, tmp_path / "r.csv", "csv", 5, Filters())
    run.prepare()
    other = SweepRun(
        SMALL.__class__(**{**SMALL.__dict__, "batch": (1, 2)}), tmp_path / "r.csv", "csv", 5, Filters()
    )
    assert other.prepare() == list(range(other.n_chunks))
    run_local(other, default_hardware_db, list(range(other.n_chunks)))
    assert other.finish().exists() and not other.parts_dir.exists()


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
    result = runner.invoke(
        app,
        [
            "sweep",
            "--model",
            "mixtral-8x7b",
            "--hardware",
            "h100-sxm",
            "--gpus",
            "1,2",
            "--batch",
            "1:64:x4",
            "--prompt-len",
            "512",
            "--gen-len",
            "16",
            "--out",
            str(out),
            "--feasible-only",
            "--slo-tpot",
            "20ms",
            "--pareto",
            str(front),
            "--chunk-rows",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    # 1 GPU cannot hold Mixtral (93 GB bf16 > 72 GB usable), so only the 2-GPU rows can survive the filter
    assert rows and all(r["gpus"] == 2 and r["feasible"] and r["tpot_s"] <= 0.020 for r in rows)
    assert json.loads(front.read_text())
    assert not (tmp_path / "s.jsonl.parts").exists()


@pytest.mark.parametrize(
    "args,expected",
    [
        (
            ["--model", "mixtral-8x7b", "--hardware", "h100-sxm", "--batch", "x"],
            "error: cannot read --batch 'x'",
        ),
        (["--model", "mixtral", "--hardware", "h100-sxm"], "error: unknown model 'mixtral'"),
        (["--model", "mixtral-8x7b", "--hardware", "h100"], "error: unknown hardware 'h100'"),
        (["--hardware", "h100-sxm"], "error: give --model and --hardware"),
        (
            ["--model", "mixtral-8x7b", "--hardware", "h100-sxm", "--gpus", "a"],
            "error: cannot read --gpus 'a'",
        ),
    ],
)
def test_cli_sweep_errors(tmp_path, args, expected) -> None:  # type: ignore[no-untyped-def]
    result = runner.invoke(app, ["sweep", *args, "--out", str(tmp_path / "x.csv")])
    assert result.exit_code == 1
    assert result.stderr.startswith(expected), result.stderr
    assert not (tmp_path / "x.csv.parts").exists()


def test_cli_csv_has_header_and_all_rows(tmp_path) -> None:
    out = tmp_path / "s.csv"
    result = runner.invoke(
        app,
        [
            "sweep",
            "--model",
            "olmoe-1b-7b",
            "--hardware",
            "l4,h100-sxm",
            "--batch",
            "1,2,3",
            "--gen-len",
            "4",
            "--out",
            str(out),
            "--chunk-rows",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * 3
    assert [r["batch"] for r in rows] == ["1", "2", "3"] * 2


@pytest.mark.slow
def test_dask_backend_matches_local_and_resumes(tmp_path, default_hardware_db) -> None:  # type: ignore[no-untyped-def]
    """A local Dask cluster of 2 worker processes finishes a sweep that a local run left half done (its first 3
    chunks written): the output is byte for byte the uninterrupted local run's."""
    pytest.importorskip("distributed")
    local, dask_out = tmp_path / "local.csv", tmp_path / "dask.csv"
    base = [
        "sweep",
        "--model",
        "qwen3-30b-a3b",
        "--hardware",
        "h100-sxm,a100-sxm-80gb",
        "--batch",
        "1:32:x2",
        "--gen-len",
        "4,300",
        "--chunk-rows",
        "5",
    ]
    assert runner.invoke(app, [*base, "--out", str(local)]).exit_code == 0
    grid = Grid(
        models=("qwen3-30b-a3b",),
        hardware=("h100-sxm", "a100-sxm-80gb"),
        batch=(1, 2, 4, 8, 16, 32),
        gen_len=(4, 300),
    )
    half = SweepRun(grid, dask_out, "csv", 5, Filters())
    run_local(half, default_hardware_db, half.prepare()[:3])  # an interrupted run: chunks 0-2 only
    result = runner.invoke(
        app, [*base, "--out", str(dask_out), "--backend", "dask", "--workers", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["resumed_chunks"] == 3 and summary["chunks"] == 5  # 24 rows in chunks of 5
    assert dask_out.read_text() == local.read_text()


def _columns_with_awkward_values():  # type: ignore[no-untyped-def]
    """Three rows: a normal one, one that does not run (NaN floats, a reason with a comma and quotes), and
    one with an infinite value."""
    from capsim.sweep.evaluate import empty_columns

    cols = empty_columns(
        3,
        {"model": "m", "hardware": "h", "weight_dtype": "native", "kv_dtype": "bf16", "bottleneck": "memory"},
    )
    cols["bottleneck"] = np.array(["memory", 'does not run: "x", y', "compute"])
    cols["feasible"][:] = [True, False, True]
    cols["batch"][:] = [1, 2, 3]
    cols["ttft_s"][:] = [0.1, np.nan, 1 / 3]
    cols["tpot_s"][:] = [2.5e-3, np.nan, np.inf]
    return cols


def test_text_encoders_write_what_csv_and_json_modules_would(tmp_path) -> None:
    from capsim.sweep.evaluate import COLUMNS, cell
    from capsim.sweep.writers import csv_header, encode_chunk

    cols = _columns_with_awkward_values()
    lines = encode_chunk(cols, "jsonl").decode().splitlines()
    for i, line in enumerate(lines):
        assert line == json.dumps({k: cell(cols[k][i]) for k in COLUMNS})
    path = tmp_path / "x.csv"
    path.write_bytes(csv_header() + encode_chunk(cols, "csv"))
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(COLUMNS)
    assert [r["bottleneck"] for r in rows] == ["memory", 'does not run: "x", y', "compute"]
    # pyarrow writes a float's shortest round-trip digits, as repr does: 1/3 parses back to the same double
    assert [r["ttft_s"] for r in rows] == ["0.1", "", repr(1 / 3)]  # missing = empty
    assert float(rows[2]["ttft_s"]) == 1 / 3
    assert [r["tpot_s"] for r in rows] == ["0.0025", "", ""]  # inf is not a value a row reports: missing
    assert [r["feasible"] for r in rows] == ["true", "false", "true"]


def test_parquet_output_round_trips(tmp_path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "s.parquet"
    result = runner.invoke(
        app,
        [
            "sweep",
            "--model",
            "olmoe-1b-7b",
            "--hardware",
            "l4,h100-sxm",
            "--batch",
            "1,2,3",
            "--gen-len",
            "4",
            "--out",
            str(out),
            "--chunk-rows",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    table = pq.read_table(out).to_pydict()
    assert table["batch"] == [1, 2, 3] * 2 and table["hardware"] == ["l4"] * 3 + ["h100-sxm"] * 3
    csv_out = tmp_path / "s.csv"
    runner.invoke(
        app,
        [
            "sweep",
            "--model",
            "olmoe-1b-7b",
            "--hardware",
            "l4,h100-sxm",
            "--batch",
            "1,2,3",
            "--gen-len",
            "4",
            "--out",
            str(csv_out),
        ],
    )
    with csv_out.open() as fh:
        rows = list(csv.DictReader(fh))
    assert [None if r["tpot_s"] == "" else float(r["tpot_s"]) for r in rows] == table["tpot_s"]
    assert [r["feasible"] == "true" for r in rows] == table["feasible"]


def test_rows_do_not_depend_on_chunking(default_hardware_db) -> None:
    """The same columns whether the grid is evaluated in one call or in chunks of 7 rows (which split groups
    and batches): decode knots come from the grid, not the chunk, and the router's expected distinct experts
    of a step shape do not depend on the other shapes of the call (a sequential sum). The per-router cache of
    those values is emptied before each evaluation, so it is not what makes them agree. Floats to 1e-15
    relative, not bit for bit: some prefill sums still round differently for a call of one pass shape."""
    from capsim.engine.passes import _ACTIVATED_CACHE
    from capsim.sweep.run import evaluate_chunk, resolve_groups

    grid = Grid(
        models=("gpt-oss-20b", "deepseek-v2-lite"),
        hardware=("h200-sxm",),
        batch=(1, 5, 64),
        prompt_len=(100, 2000),
        gen_len=(1, 40, 900),
        routing="zipf:1.1,reuse=0.3",
    )
    groups = resolve_groups(grid, default_hardware_db)
    _ACTIVATED_CACHE.clear()
    whole = evaluate_chunk(grid, groups, 0, grid.size)
    _ACTIVATED_CACHE.clear()
    parts = [evaluate_chunk(grid, groups, i, min(i + 7, grid.size)) for i in range(0, grid.size, 7)]
    for name, column in whole.items():
        chunked = np.concatenate([p[name] for p in parts])
        if column.dtype.kind == "f":
            np.testing.assert_allclose(chunked, column, rtol=1e-15, atol=0, err_msg=name)
        else:
            np.testing.assert_array_equal(chunked, column, err_msg=name)


def test_cli_unknown_output_format_and_toml_grid(tmp_path) -> None:
    bad = runner.invoke(
        app, ["sweep", "--model", "olmoe-1b-7b", "--hardware", "l4", "--out", str(tmp_path / "x.txt")]
    )
    assert bad.exit_code == 1 and bad.stderr.startswith("error: cannot tell the output format")
    toml = tmp_path / "grid.toml"
    toml.write_text('models = ["olmoe-1b-7b"]\nhardware = "h100-sxm"\nbatch = "1:4:x2"\ngen_len = [4]\n')
    out = tmp_path / "t.jsonl"
    result = runner.invoke(app, ["sweep", "--grid", str(toml), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["batch"] for line in out.read_text().splitlines()] == [1, 2, 4]
    toml.write_text('models = ["olmoe-1b-7b"]\nhardware = "h100-sxm"\nbatches = [1]\n')
    typo = runner.invoke(app, ["sweep", "--grid", str(toml), "--out", str(out)])
    assert typo.exit_code == 1 and "unknown key 'batches'" in typo.stderr


@pytest.mark.parametrize("model,wdt", [("mixtral-8x7b", "int4"), ("qwen3-30b-a3b", "native")])
def test_cpu_experts_segment_equals_predict_row_by_row(default_hardware_db, model, wdt) -> None:  # type: ignore[no-untyped-def]
    """Issue 16: the cpu-experts mode is a sweep axis (``mode=cpu-experts`` in the layout). Every expert is
    computed by the EPYC 9654 next to the RTX 4090; rows (batches 1-16, one- and many-step generations)
    equal predict's, the CPU time and PCIe hand-offs included (bottleneck "cpu")."""
    grid = Grid(
        models=(model,),
        hardware=("epyc-9654-4090",),
        batch=(1, 3, 16),
        prompt_len=(60, 2000),
        gen_len=(1, 2, 300),
        weight_dtype=(wdt,),
        layout=("mode=cpu-experts",),
    )
    group = resolve_group(grid, grid.group_keys[0], default_hardware_db)
    assert group.error is None
    cols = evaluate_segment(grid, group, 0, grid.numeric_size)
    assert (cols["bottleneck"] == "cpu").any()
    for i in range(grid.numeric_size):
        pred = predict(
            Scenario(
                model=model,
                hardware="epyc-9654-4090",
                gpus=1,
                mode="cpu-experts",
                weight_dtype=None if wdt == "native" else wdt,
                batch=int(cols["batch"][i]),
                prompt_len=int(cols["prompt_len"][i]),
                gen_len=int(cols["gen_len"][i]),
            ),
            hardware_db=default_hardware_db,
        )
        assert pred.deployment["mode"] == "cpu-experts"
        _assert_row_equals_prediction(cols, i, pred)
