"""``capsim serve`` on the command line: output, JSON keys (vllm bench serve names), curves, bad input."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from capsim.cli import app

runner = CliRunner()
BASE = ["serve", "--model", "mixtral-8x7b", "--hardware", "h100-sxm", "--gpus", "8", "--num-prompts", "40"]


def test_serve_json_has_vllm_metric_names() -> None:
    result = runner.invoke(app, [*BASE, "--rate", "4", "--slo", "ttft=200ms,tpot=50ms", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    for lat in ("ttft", "tpot", "itl", "e2el"):
        for stat in ("mean", "median", "p90", "p99"):
            assert f"{stat}_{lat}_ms" in data
    for key in (
        "request_throughput",
        "output_throughput",
        "total_token_throughput",
        "request_goodput",
        "s_mbu",
        "s_mfu",
        "completed",
    ):
        assert key in data
    assert data["completed"] == 40
    assert data["slo_ms"] == {"ttft": pytest.approx(200.0), "tpot": pytest.approx(50.0)}
    assert 0 < data["s_mbu"] <= 1 and 0 < data["s_mfu"] <= 1


def test_serve_table_and_figure(tmp_path) -> None:
    result = runner.invoke(app, [*BASE, "--rate", "4", "--figure", str(tmp_path / "tl")])
    assert result.exit_code == 0, result.output
    assert "TPOT" in result.stdout and "Request throughput (req/s)" in result.stdout
    assert (tmp_path / "tl.png").stat().st_size > 0 and (tmp_path / "tl.svg").stat().st_size > 0


def test_rate_range_gives_a_curve_and_the_best_rate(tmp_path) -> None:
    result = runner.invoke(
        app, [*BASE, "--rate", "1:8:x2", "--slo", "tpot=1s", "--json", "--figure", str(tmp_path / "curve")]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [r["rate"] for r in data["rates"]] == [1.0, 2.0, 4.0, 8.0]
    assert data["highest_rate_meeting_slo"] == 8.0  # a 1 s TPOT bound holds at every rate tried
    assert (tmp_path / "curve.png").exists()


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--rate", "0"], "--rate must be a positive number"),
        (["--rate", "-3"], "--rate must be a positive number"),
        (["--rate", "fast"], "cannot read --rate"),
        (["--rate", "2", "--prompt-len", "40000"], "beyond mixtral-8x7b's context window of 32768"),
        (["--rate", "2", "--prompt-len", "lognormal:10"], "needs two numbers"),
        (["--rate", "2", "--max-batched-tokens", "256"], "smaller than --max-num-seqs 1024"),
        (
            ["--rate", "2", "--no-chunked-prefill", "--max-batched-tokens", "256", "--max-num-seqs", "64"],
            "--max-batched-tokens 256 is smaller than one prompt of 512 tokens",
        ),
        (["--rate", "2", "--slo", "ttft=fast"], "bad duration"),
        (["--rate", "2", "--slo", "latency=1s"], "bad --slo clause"),
        (["--rate", "2", "--system", "vlm-like"], "did you mean 'vllm-like'"),
        ([], "say how requests arrive"),
        (["--offline", "--rate", "3"], "--offline sends every request at t = 0"),
        (["--rate", "2", "--prefill-replicas", "1"], "needs both --prefill-replicas and --decode-replicas"),
    ],
)
def test_bad_input_is_one_error_line(args, fragment) -> None:
    result = runner.invoke(app, [*BASE, *args])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "content,suffix,fragment",
    [
        (
            '{"arrival_s": 0, "prompt_tokens": 10, "output_tokens": 5}\nnot json\n',
            ".jsonl",
            "line 2 is not JSON",
        ),
        (
            '{"arrival_s": 0, "prompt_tokens": 0, "output_tokens": 5}\n',
            ".jsonl",
            "prompt_tokens must be a whole number",
        ),
        ("arrival_s,prompt_tokens,output_tokens\n0.1,12,x\n", ".csv", "output_tokens must be a whole number"),
        ('{"prompt_tokens": 10, "output_tokens": 5}\n', ".jsonl", "has no arrival_s column"),
        ("", ".jsonl", "holds no requests"),
    ],
)
def test_malformed_request_file(tmp_path, content, suffix, fragment) -> None:
    path = tmp_path / f"reqs{suffix}"
    path.write_text(content)
    result = runner.invoke(app, [*BASE, "--requests", str(path)])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr


def test_request_file_runs(tmp_path) -> None:
    path = tmp_path / "reqs.csv"
    path.write_text("arrival_s,prompt_tokens,output_tokens\n0.0,100,20\n0.5,300,10\n0.7,50,1\n")
    result = runner.invoke(app, [*BASE, "--requests", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["completed"] == 3


def test_disaggregated_serving_runs() -> None:
    result = runner.invoke(
        app,
        [
            *BASE,
            "--rate",
            "4",
            "--prefill-replicas",
            "1",
            "--decode-replicas",
            "1",
            "--kv-link",
            "ib-ndr",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["completed"] == 40
    assert data["config"]["disaggregation"] == {"prefill_replicas": 1, "decode_replicas": 1, "link": "ib-ndr"}


def test_fleet_sizing_cli() -> None:
    result = runner.invoke(
        app,
        [
            "serve",
            "--rate",
            "30",
            "--num-prompts",
            "300",
            "--prompt-len",
            "1000",
            "--output-len",
            "100",
            "--slo",
            "tpot=30ms",
            "--fleet-candidates",
            "h100-sxm:1,2",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    one, _ = sorted(data["options"], key=lambda o: o["gpus_per_replica"])
    assert one["replicas"] is None and "does not fit" in one["note"]  # Mixtral bf16 needs > 1 H100
    assert data["cheapest"]["gpus_per_replica"] == 2
    bad = runner.invoke(app, [*BASE, "--rate", "3", "--fleet-candidates", "h100-sxm:8"])
    assert bad.exit_code == 1 and "fleet sizing needs --slo" in bad.stderr
