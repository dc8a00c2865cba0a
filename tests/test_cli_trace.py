"""``capsim trace synth|stats|fit|list`` through typer's CliRunner: exit codes, exact lines, JSON, the PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from strategies import tiny_moe_model
from typer.testing import CliRunner

from capsim.cli import app
from capsim.cli import trace as trace_cli
from capsim.routing.traces import load_trace, write_trace

runner = CliRunner()


def _run(*args: str) -> Any:
    return runner.invoke(app, ["trace", *args])


def _rows(stdout: str) -> dict[str, list[str]]:
    """Table rows keyed by their first cell (rich draws cells between │ characters)."""
    rows = {}
    for line in stdout.splitlines():
        if line.startswith("│"):
            cells = [c.strip() for c in line.strip("│").split("│")]
            rows[cells[0]] = cells
    return rows


@pytest.fixture
def hand_trace(tmp_path: Path) -> Path:
    """One MoE layer, E = 3, k = 1, tokens routed to experts 0, 0, 1, 2 (values worked out in the tests)."""
    return write_trace(
        tmp_path / "hand.npz",
        np.array([[[0], [0], [1], [2]]]),
        model_id="tiny-moe-1x3k1",
        num_experts=3,
        top_k=1,
        metadata={"router": "hand-made"},
    )


@pytest.fixture
def tiny_models(monkeypatch):
    """Resolve the ids tiny-moe-LxEkK to invented test models (no model database needed)."""

    def resolve(model_id: str):
        shapes = {"tiny-moe-1x3k1": (1, 3, 1), "tiny-moe-2x8k2": (2, 8, 2), "tiny-moe-2x8k1": (2, 8, 1)}
        return tiny_moe_model(*shapes[model_id])

    monkeypatch.setattr(trace_cli, "_resolve_model", resolve)


# ---- synth --------------------------------------------------------------------------------------------------
def test_synth_writes_a_valid_trace(tmp_path: Path, tiny_models):
    out = tmp_path / "z.npz"
    result = _run(
        "synth",
        "--model",
        "tiny-moe-2x8k2",
        "--router",
        "zipf:1.2,reuse=0.3",
        "--tokens",
        "300",
        "--out",
        str(out),
        "--seed",
        "4",
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == f"wrote {out} (tiny-moe-2x8k2: 2 MoE layers x 300 tokens x top-2 of 8)\n"
    tr = load_trace(out)
    assert (tr.num_layers, tr.num_tokens, tr.top_k, tr.num_experts) == (2, 300, 2, 8)
    assert tr.metadata["router"] == "zipf:1.2,reuse=0.3"
    assert tr.metadata["seed"] == 4
    assert tr.metadata["command"].startswith(
        "capsim trace synth --model tiny-moe-2x8k2 --router zipf:1.2,reuse=0.3"
    )
    tr.validate_against(tiny_moe_model(2, 8, 2))
    # same seed, same ids
    again = tmp_path / "z2.npz"
    _run(
        "synth",
        "--model",
        "tiny-moe-2x8k2",
        "--router",
        "zipf:1.2,reuse=0.3",
        "--tokens",
        "300",
        "--out",
        str(again),
        "--seed",
        "4",
    )
    np.testing.assert_array_equal(load_trace(again).topk_ids, tr.topk_ids)


def test_synth_with_real_model_id(tmp_path: Path):
    out = tmp_path / "m.npz"
    result = _run(
        "synth", "--model", "mixtral-8x7b", "--router", "uniform", "--tokens", "10", "--out", str(out)
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == f"wrote {out} (mixtral-8x7b: 32 MoE layers x 10 tokens x top-2 of 8)\n"


def test_synth_refuses_a_trace_router(tmp_path: Path, tiny_models, hand_trace: Path):
    result = _run(
        "synth",
        "--model",
        "tiny-moe-1x3k1",
        "--router",
        f"trace:{hand_trace}",
        "--tokens",
        "5",
        "--out",
        str(tmp_path / "x.npz"),
    )
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: router 'trace:{hand_trace}' is not synthetic;")
    assert len(result.stderr.splitlines()) == 1


def test_synth_bad_router_is_one_error_line(tmp_path: Path, tiny_models):
    result = _run(
        "synth",
        "--model",
        "tiny-moe-2x8k2",
        "--router",
        "zipff:1",
        "--tokens",
        "5",
        "--out",
        str(tmp_path / "x.npz"),
    )
    assert result.exit_code == 1
    assert result.stderr == "error: unknown router 'zipff'; did you mean 'zipf'?\n"
    assert not (tmp_path / "x.npz").exists()


# ---- stats ----------------------------------------------------------------------------------------------------
def test_stats_table_values_by_hand(hand_trace: Path, tmp_path: Path, tiny_models):
    png = tmp_path / "heat.png"
    result = _run("stats", str(hand_trace), "--model", "tiny-moe-1x3k1", "--tokens", "2", "--png", str(png))
    assert result.exit_code == 0, result.output
    row = _rows(result.stdout)["0"]
    # experts used 3 of 3; max/mean = 2/(4/3) = 1.50; per step of 2: (3 + 1.5)/2 = 2.25;
    # A(2) decode (random pair of distinct tokens) = 3 − (C(2,2) + 2·C(3,2))/C(4,2) = 11/6 -> "1.83";
    # windows {0},{0,1},{1,2} -> 5/3 = "1.67"; uniform A(2) = 3·(1 − (2/3)²) = 5/3, ratio (11/6)/(5/3) = 1.100;
    # the only reuse (token 1, expert 0) has distance 0
    assert row == ["0", "3/3", "1.50", "2.25", "1.83", "1.67", "1.100", "0"]
    assert "T=2: mean A decode 1.83, window 1.67, uniform bound 1.67 (ratio 1.100)" in result.stdout
    assert result.stdout.splitlines()[-1] == f"heatmap: {png}"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stats_json(hand_trace: Path, tmp_path: Path):
    png = tmp_path / "h.png"
    result = _run("stats", str(hand_trace), "--json", "--tokens", "1", "--tokens", "2", "--png", str(png))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["steps"] == [1, 2]
    layer = data["layers"][0]
    assert layer["tokens_per_expert"] == [2, 1, 1]
    assert layer["activated_independent"] == pytest.approx([1.0, 11 / 6])
    assert layer["activated_window"] == pytest.approx([1.0, 5 / 3])
    assert data["uniform_bound"] == pytest.approx([1.0, 5 / 3])
    assert data["heatmap_png"] == str(png)
    assert data["trace"]["metadata"] == {"router": "hand-made"}


def test_stats_default_png_goes_to_cwd(hand_trace: Path, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _run("stats", str(hand_trace))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "heatmap: hand-heatmap.png"
    assert (tmp_path / "hand-heatmap.png").is_file()


def test_stats_no_png(hand_trace: Path, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _run("stats", str(hand_trace), "--no-png")
    assert result.exit_code == 0, result.output
    assert "heatmap:" not in result.stdout
    assert not list(tmp_path.glob("*.png"))


def test_stats_model_mismatch_is_one_error_line(hand_trace: Path, tiny_models):
    result = _run("stats", str(hand_trace), "--model", "tiny-moe-2x8k2", "--no-png")
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: {hand_trace}: trace has 1 MoE layers but model 'tiny-moe-2x8k2' has 2; use a trace recorded on "
        "'tiny-moe-2x8k2' or synthesise one with `capsim trace synth --model tiny-moe-2x8k2 ...`\n"
    )


def test_stats_corrupt_file_is_one_error_line(tmp_path: Path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a trace")
    result = _run("stats", str(bad), "--no-png")
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: {bad}: not a capsim trace (not a zip/npz container, or truncated); re-record it or re-create it "
        "with `capsim trace synth`\n"
    )


# ---- fit and list ----------------------------------------------------------------------------------------------
def test_fit_prints_parameters(tmp_path: Path, tiny_models):
    out = tmp_path / "t.npz"
    _run(
        "synth",
        "--model",
        "tiny-moe-2x8k2",
        "--router",
        "temporal:0.5",
        "--tokens",
        "4000",
        "--out",
        str(out),
    )
    result = _run("fit", str(out), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["reuse"] == pytest.approx(0.5, abs=0.05)
    text = _run("fit", str(out))
    assert text.exit_code == 0
    assert f"extend with: --routing fit:{out}" in text.stdout


def test_list_shows_every_shipped_trace():
    result = _run("list", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    from capsim.routing import shipped_traces

    assert [r["name"] for r in rows] == list(shipped_traces())
    for r in rows:
        assert r["router"], r  # every shipped trace says which router made it


# ---- import-sglang ------------------------------------------------------------------------------------------
def test_import_sglang_per_token_dump(tmp_path: Path, tiny_models):
    """SGLang's per_token recorder (_DetailAccumulator.dump): records with topk_ids_of_layer (layers, tokens, 8),
    -1 in the unused columns, physical ids mapped to logical ones by last_physical_to_logical_map. Two passes
    of 2 and 1 tokens, 2 layers, k = 2 of 8 logical experts, physical expert 8 a replica of logical 3."""
    torch = pytest.importorskip("torch")
    pad = -torch.ones((2, 2, 6), dtype=torch.int32)
    first = torch.cat([torch.tensor([[[0, 1], [2, 8]], [[4, 5], [6, 7]]], dtype=torch.int32), pad], dim=2)
    second = torch.cat(
        [torch.tensor([[[8, 0]], [[1, 2]]], dtype=torch.int32), -torch.ones((2, 1, 6), dtype=torch.int32)],
        dim=2,
    )
    mapping = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 3]] * 2)
    dump = tmp_path / "expert_distribution_recorder_1.0_0.pt"
    torch.save(
        {
            "records": [
                {
                    "forward_pass_id": 0,
                    "topk_ids_of_layer": first,
                    "global_physical_count": torch.zeros(2, 9),
                },
                {
                    "forward_pass_id": 1,
                    "topk_ids_of_layer": second,
                    "global_physical_count": torch.zeros(2, 9),
                },
            ],
            "last_physical_to_logical_map": mapping,
        },
        dump,
    )
    out = tmp_path / "sg.npz"
    result = _run("import-sglang", str(dump), "--model", "tiny-moe-2x8k2", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"wrote {out} (tiny-moe-2x8k2: 2 MoE layers x 3 tokens x top-2)\n"
    tr = load_trace(out)
    # layer 0: tokens (0,1), (2,8->3), (8->3,0); layer 1: (4,5), (6,7), (1,2)
    assert tr.topk_ids.tolist() == [[[0, 1], [2, 3], [3, 0]], [[4, 5], [6, 7], [1, 2]]]
    assert tr.metadata["recorded_with"].startswith("sglang")


def test_import_sglang_needs_per_token_records(tmp_path: Path, tiny_models):
    torch = pytest.importorskip("torch")
    dump = tmp_path / "stat.pt"
    torch.save({"rank": 0, "logical_count": torch.zeros((1, 2, 8), dtype=torch.int32)}, dump)
    result = _run("import-sglang", str(dump), "--model", "tiny-moe-2x8k2", "--out", str(tmp_path / "x.npz"))
    assert result.exit_code == 1
    assert (
        "no per-token routes in it: record with --expert-distribution-recorder-mode per_token"
        in result.output
    )
