"""The CLI fuzz suite, short run (issue 15): random argument vectors for every command keep the contract of
tests/cli_fuzz.py (no traceback, exit 0/1/2 with one error line, no partial or stray files, nothing
previously written damaged). The long run is scripts/fuzz_cli.py (results in docs/robustness.md)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from cli_fuzz import COMMANDS, any_argv, argv_for, check, populate
from hypothesis import HealthCheck, example, given, settings

_short = settings(
    max_examples=8,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _run(argv: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sandbox = Path(tmp)
        populate(sandbox)
        outcome = check(argv, sandbox)
    assert outcome.problem is None, (
        f"capsim {' '.join(argv)!r} -> exit {outcome.exit_code}: {outcome.problem}"
    )


@_short
@given(argv=any_argv())
# every input class issue 15 listed, pinned
@example(argv=["sweep", "--model", "mixtral-8x7b", "--hardware", "h100-sxm", "--out", "/proc/grid.csv"])
# found by this test on main at d2db18e: an infinite cost cap gave NaN radar scores (uncaught RuntimeWarning)
@example(
    argv=[
        "radar",
        "--hardware",
        "h100-sxm",
        "--out",
        "radar.png",
        "--cost-cap",
        "inf",
        "--model",
        "mixtral-8x7b",
    ]
)
@example(argv=["sweep", "--model", "mixtral-8x7b", "--hardware", "h100-sxm", "--out", "corrupt.npz/grid.csv"])
@example(
    argv=[
        "sweep",
        "--model",
        "mixtral-8x7b",
        "--hardware",
        "h100-sxm",
        "--out",
        "o.csv",
        "--pareto",
        "/proc/p.json",
    ]
)
@example(
    argv=[
        "sweep",
        "--model",
        "mixtral-8x7b",
        "--hardware",
        "h100-sxm",
        "--out",
        "o.csv",
        "--batch",
        "-1:8:x2",
    ]
)
@example(
    argv=["sweep", "--model", "mixtral-8x7b", "--hardware", "h100-sxm", "--out", "o.csv", "--batch", "0:8:x2"]
)
@example(
    argv=[
        "sweep",
        "--model",
        "mixtral-8x7b",
        "--hardware",
        "h100-sxm",
        "--out",
        "o.csv",
        "--gen-len",
        "99999999999999999999999",
    ]
)
@example(
    argv=[
        "sweep",
        "--model",
        "mixtral-8x7b",
        "--hardware",
        "h100-sxm",
        "--out",
        "o.csv",
        "--batch",
        "1:100000000:+1",
    ]
)
@example(
    argv=[
        "sweep",
        "--model",
        "mixtral-8x7b",
        "--hardware",
        "h100-sxm",
        "--out",
        "o.csv",
        "--backend",
        "dask",
        "--workers",
        "0",
    ]
)
@example(argv=["predict", "--prompt-len", "100000"])
@example(argv=["predict", "--gpus", "3"])
@example(argv=["predict", "--model", "qwen3-30b-a3b", "--gpus", "6"])
@example(argv=["trace", "stats", "deepseek-v3-group", "-t", "100000", "--no-png"])
@example(argv=["fit", "--model", "nosuch"])
@example(argv=["plan", "--model", "mixtral-8x7b", "--slo-tpot", "50", "--hardware", "h100-sxm"])
@example(argv=["predict", "--batch", "x"])
# found by the long run: a node of 2^31 (or 219 x 21,750) devices was built before the layout was refused
@example(argv=["predict", "--expert-layers", "5:1", "--gpus", "2147483648", "--tp", "20", "--batch", "1"])
@example(argv=["predict", "--tp", "219", "--pp", "21750", "--prompt-len", "675"])
@example(argv=["explain", "--model", "x" * 300])
@example(argv=["sweep", "--grid", "grid.toml", "--out", "", "--format", "csv"])
@example(argv=["trace", "stats", "~\U0008cd42", "--no-png", "--json"])
@example(
    argv=[
        "compare",
        "--json",
        "--csv",
        "cmp.csv",
        "--gpus",
        "1",
        "--hardware",
        "a100-sxm-80gb",
        "--model",
        "mixtral-8x7b",
    ]
)
@example(
    argv=[
        "serve",
        "--model",
        "mixtral-8x7b",
        "--hardware",
        "mi300x",
        "--gpus",
        "2147483648",
        "--num-prompts",
        "16",
    ]
)
@example(argv=["sweep", "--grid", "existing.csv/inner.csv", "--out", "o.csv"])
# the long run's process killed for memory (rc 137): 2^31 request shards; and a closed loop left without clients
@example(
    argv=["serve", "--model", "mixtral-8x7b", "--offline", "--num-prompts", "16", "--replicas", "2147483648"]
)
@example(
    argv=["serve", "--model", "mixtral-8x7b", "--concurrency", "1", "--replicas", "2", "--num-prompts", "16"]
)
# found by the long run: 1.8e308 GB is finite, in bytes it is inf (fit's expert-slot count became NaN)
@example(argv=["fit", "--json", "--host-memory-gb", "1.7976931348623157e+308", "--gen-len", "128"])
def test_any_command_keeps_the_contract(argv: list[str]) -> None:
    _run(argv)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c.words))
@settings(max_examples=1, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(data=__import__("hypothesis").strategies.data())
def test_every_command_is_fuzzed(command, data) -> None:  # type: ignore[no-untyped-def]
    _run(data.draw(argv_for(command)))
