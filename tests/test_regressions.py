"""Regression tests for defects found by adversarial QA of the CLI and library (one test per fix, pint's
``test_issues.py`` pattern). CLI tests assert the exact ``error: …`` line, exit status 1, an empty stdout and
no traceback: the contract of tests/test_cli_errors.py."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from capsim import ScenarioError, load_hardware_db, make_router, resolve_model
from capsim.cli import app
from capsim.economics.cost import load_cost_file, owned_usd_per_hour
from capsim.economics.inputs import CostInputs
from capsim.errors import ConfigFieldError, DataFileError, TraceError
from capsim.hardware.paths import min_pair_bottleneck, widest_from
from capsim.models.ingest_hf import spec_from_config
from capsim.report.plots import ParetoPoint, output_stem, plot_pareto
from capsim.routing.traces import write_trace
from capsim.units import HOURS, HOURS_PER_DAY, HOURS_PER_YEAR, KWH

runner = CliRunner()
REPO = Path(__file__).resolve().parent.parent


def _one_error_line(args: list[str]) -> str:
    """Run the CLI, check the bad-input contract and return the single stderr line."""
    result = runner.invoke(app, args)
    assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    # exactly one line, nothing before it (no blank line left by a progress bar)
    assert result.stderr.endswith("\n") and result.stderr.count("\n") == 1, repr(result.stderr)
    return result.stderr.rstrip("\n")


def _mixtral_config() -> dict[str, Any]:
    return json.loads((REPO / "model_db" / "mixtral-8x7b.json").read_text())


# ---- routing ------------------------------------------------------------------------------------------------


def test_negative_seed_is_one_error_line() -> None:
    # numpy's SeedSequence raised "ValueError: expected non-negative integer" with a traceback
    assert _one_error_line(["predict", "--seed", "-1"]) == (
        "error: seed must be an integer >= 0, got -1; pass e.g. --seed 0"
    )


def test_negative_seed_option_in_router_spec_is_one_error_line(tmp_path: Path) -> None:
    line = _one_error_line(
        [
            "trace",
            "synth",
            "-m",
            "mixtral-8x7b",
            "-r",
            "zipf:1.2,seed=-3",
            "-n",
            "10",
            "-o",
            str(tmp_path / "t.npz"),
        ]
    )
    assert line == "error: router spec 'zipf:1.2,seed=-3': seed must be an integer >= 0, got -3"
    assert list(tmp_path.iterdir()) == []


def test_router_spec_that_is_a_trace_path_suggests_the_trace_prefix() -> None:
    # was "unknown router '/tmp/x.npz'; valid ids: affinity, ..." with no hint of the trace: syntax
    assert _one_error_line(["predict", "--routing", "/tmp/x.npz"]) == (
        "error: router spec '/tmp/x.npz' looks like a trace file; write trace:/tmp/x.npz "
        "(or fit:/tmp/x.npz for a router fitted to it)"
    )
    assert _one_error_line(["predict", "--routing", "mixtral-8x7b-zipf1.2"]).startswith(
        "error: router spec 'mixtral-8x7b-zipf1.2' looks like a trace file; write trace:mixtral-8x7b-zipf1.2"
    )


def test_make_router_rejects_negative_seed() -> None:
    with pytest.raises(ScenarioError, match=r"seed must be an integer >= 0, got -5"):
        make_router("zipf:1.2", resolve_model("mixtral-8x7b"), seed=-5)


# ---- files that are not UTF-8 ----------------------------------------------------------------------------


def test_non_utf8_hardware_db_file_is_one_error_line(tmp_path: Path) -> None:
    # tomllib raised UnicodeDecodeError (not a TOMLDecodeError) with a traceback
    bad = tmp_path / "x.toml"
    bad.write_bytes(b"\xff\xfe\x00garbage")
    assert _one_error_line(["hardware", "list", "--hardware-db", str(bad)]) == (
        f"error: {bad}: not UTF-8 text (TOML must be UTF-8); save it as UTF-8"
    )


def test_non_utf8_prices_file_is_one_error_line(tmp_path: Path) -> None:
    bad = tmp_path / "prices.toml"
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataFileError, match="not UTF-8 text"):
        load_cost_file(bad)
    assert _one_error_line(
        ["compare", "--model", "mixtral-8x7b", "--hardware", "h100-sxm", "--prices", str(bad)]
    ) == (f"error: {bad}: not UTF-8 text (TOML must be UTF-8); save it as UTF-8")


def test_non_utf8_accuracy_file_is_a_data_file_error(tmp_path: Path) -> None:
    from capsim.models.accuracy import load_accuracy_db

    bad = tmp_path / "accuracy.toml"
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataFileError, match="not UTF-8 text"):
        load_accuracy_db(bad)


# ---- compare / plan / radar ------------------------------------------------------------------------------


def test_compare_csv_to_a_directory_fails_before_any_work(tmp_path: Path) -> None:
    # was IsADirectoryError with a traceback, after the whole comparison had run
    line = _one_error_line(
        ["compare", "--model", "mixtral-8x7b", "--hardware", "h100-sxm", "--csv", str(tmp_path)]
    )
    assert (
        line == f"error: --csv {tmp_path} is a directory; give a file name, e.g. {tmp_path / 'compare.csv'}"
    )


def test_compare_csv_under_a_file_fails_before_any_work(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    target = blocker / "out.csv"
    line = _one_error_line(
        ["compare", "--model", "mixtral-8x7b", "--hardware", "h100-sxm", "--csv", str(target)]
    )
    assert line == f"error: --csv {target}: {blocker} is a file, not a directory; choose another path"


def test_cost_overflow_is_one_error_line_not_infinity_in_json() -> None:
    # electricity at 1e308 USD/kWh: energy ≈ 1.4 kW x 1.2 x 1e308 per hour overflows to inf in USD per Mtok;
    # --json printed "Infinity", which is not JSON
    expected = (
        "error: USD per million tokens is not finite (inf); the cost inputs are out of range: check "
        "--electricity-usd-kwh, --lifetime-years, --utilization and the prices"
    )
    common = ["--model", "mixtral-8x7b", "--hardware", "h100-sxm", "--electricity-usd-kwh", "1e308", "--json"]
    assert _one_error_line(["compare", *common]) == expected
    assert _one_error_line(["plan", "--slo-tpot", "50ms", *common]) == expected


def test_plan_tokens_per_day_infinity_is_one_error_line() -> None:
    # was OverflowError: cannot convert float infinity to integer (replicas), after a RuntimeWarning
    line = _one_error_line(
        [
            "plan",
            "--model",
            "mixtral-8x7b",
            "--hardware",
            "h100-sxm",
            "--slo-tpot",
            "50ms",
            "--tokens-per-day",
            "inf",
        ]
    )
    assert line == "error: --tokens-per-day must be positive and finite, got inf"


def test_plan_budget_infinity_is_one_error_line() -> None:
    line = _one_error_line(
        ["plan", "--model", "mixtral-8x7b", "--hardware", "h100-sxm", "--slo-tpot", "50ms", "--budget", "inf"]
    )
    assert line == "error: --budget must be positive and finite, got inf"


def test_plan_empty_weight_dtypes_names_that_option() -> None:
    # the message named --hardware
    line = _one_error_line(
        [
            "plan",
            "--model",
            "mixtral-8x7b",
            "--hardware",
            "h100-sxm",
            "--slo-tpot",
            "50ms",
            "--weight-dtypes",
            ",",
        ]
    )
    assert line == "error: no ids given; write a comma-separated list, e.g. --weight-dtypes native,fp8"


def test_plan_error_inside_the_search_leaves_no_blank_line() -> None:
    # rich's transient progress bar wrote "\n" to stderr before the error line when stderr is not a terminal
    line = _one_error_line(["plan", "--model", "mixtral-8x7b", "--slo-tpot", "50ms", "--hardware", "h100"])
    assert line.startswith("error: unknown hardware 'h100'; did you mean 'h100-sxm'")


def test_compare_rejects_a_part_id_instead_of_an_empty_row() -> None:
    # a DRAM id gave exit 0 and an "n/a" row; compare's contract is that bad ids raise before any prediction
    assert _one_error_line(["compare", "--model", "mixtral-8x7b", "--hardware", "h100-sxm,ddr5-4800"]) == (
        "error: 'ddr5-4800' is a dram entry, not a deployment; give accelerator or system ids "
        "(capsim hardware list --kind accelerator / --kind system)"
    )


def test_plan_rejects_a_part_id() -> None:
    line = _one_error_line(["plan", "--model", "mixtral-8x7b", "--slo-tpot", "50ms", "--hardware", "nvlink4"])
    assert line.startswith("error: 'nvlink4' is a link entry, not a deployment")


def test_system_option_rejects_an_accelerator_id() -> None:
    assert _one_error_line(["compare", "--model", "mixtral-8x7b", "--system", "h100-sxm"]) == (
        "error: --system h100-sxm: a accelerator entry, not a system; pass it with --hardware "
        "(capsim hardware list --kind system shows the systems)"
    )


def test_radar_with_nothing_drawable_is_one_error_line(tmp_path: Path) -> None:
    # "not drawn: …" lines were printed before the error line (two lines on stderr)
    line = _one_error_line(
        ["radar", "--model", "deepseek-v3", "--hardware", "rtx-4090", "--out", str(tmp_path / "r")]
    )
    assert line.startswith("error: no option can be drawn (rtx-4090 xauto [PA]: does not fit: needs ")
    assert line.endswith("); try more GPUs, another --cost-axis or --price")
    assert list(tmp_path.iterdir()) == []


def test_radar_out_directory_fails_before_any_work(tmp_path: Path) -> None:
    line = _one_error_line(
        ["radar", "--model", "mixtral-8x7b", "--hardware", "h100-sxm", "--out", str(tmp_path)]
    )
    assert line == f"error: --out {tmp_path} is a directory; give a file name, e.g. {tmp_path / 'radar.png'}"


def test_plot_file_names_keep_the_dots_of_their_stem(tmp_path: Path) -> None:
    # with_suffix(".png") turned the default radar name of qwen1.5-moe-a2.7b into "...-qwen1.5-moe-a2.png"
    pts = [ParetoPoint("h100-sxm", 0.01, 1.0)]
    png, svg = plot_pareto(pts, pts, tmp_path / "capsim-radar-qwen1.5-moe-a2.7b")
    assert png == tmp_path / "capsim-radar-qwen1.5-moe-a2.7b.png" and png.is_file()
    assert svg == tmp_path / "capsim-radar-qwen1.5-moe-a2.7b.svg" and svg.is_file()


def test_output_stem_drops_any_image_suffix() -> None:
    # "--plot plan.pdf" wrote plan.pdf.png / plan.pdf.svg
    assert output_stem("a/plan.pdf") == Path("a/plan")
    assert output_stem("a/run.v2") == Path("a/run.v2")


# ---- model configs --------------------------------------------------------------------------------------


def test_config_with_top_k_above_the_expert_count_is_rejected_at_load() -> None:
    # top-9 of 8 experts loaded fine: `model show` printed 52.2 B active of 46.7 B total parameters
    config = _mixtral_config() | {"num_experts_per_tok": 9}
    with pytest.raises(ConfigFieldError) as info:
        spec_from_config(config, model_id="bad", path="bad.json")
    assert str(info.value) == (
        "bad.json: field 'num_experts_per_tok' (9) exceeds the 8 routed experts; correct the config file"
    )


@pytest.mark.parametrize(
    "change,message",
    [
        ({"n_group": 7}, "field 'n_group' (7) must divide the 256 routed experts; correct the config file"),
        ({"topk_group": 9}, "field 'topk_group' (9) must be in [1, n_group=8]; correct the config file"),
    ],
)
def test_deepseek_config_with_impossible_groups_is_rejected_at_load(
    change: dict[str, int], message: str
) -> None:
    config = json.loads((REPO / "model_db" / "deepseek-v3.json").read_text()) | change
    with pytest.raises(ConfigFieldError) as info:
        spec_from_config(config, model_id="bad", path="bad.json")
    assert str(info.value) == f"bad.json: {message}"


def test_model_folder_without_config_json_says_so(tmp_path: Path) -> None:
    # was "unknown model '<folder>'; valid ids: …"
    assert _one_error_line(["predict", "--model", str(tmp_path)]) == (
        f"error: {tmp_path}: is a folder without a config.json; give a config.json path or a model id "
        "(capsim model list)"
    )


def test_family_with_a_database_id_is_refused_not_ignored() -> None:
    # `model show mixtral-8x7b --family grok1` printed Mixtral's family and counts as if --family were absent
    assert _one_error_line(["model", "show", "mixtral-8x7b", "--family", "grok1"]) == (
        "error: --family applies to a config.json; 'mixtral-8x7b' is a database model of family 'mixtral' "
        "(drop --family, or give --config PATH)"
    )


# ---- traces -------------------------------------------------------------------------------------------------


def test_trace_synth_to_a_directory_is_one_error_line(tmp_path: Path) -> None:
    # was IsADirectoryError from os.replace with a traceback
    assert (
        _one_error_line(
            ["trace", "synth", "-m", "mixtral-8x7b", "-r", "zipf:1.2", "-n", "10", "-o", str(tmp_path)]
        )
        == f"error: {tmp_path}: is a directory; give a file name, e.g. {tmp_path / 'trace.npz'}"
    )
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def test_write_trace_to_a_directory_raises_trace_error(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="is a directory"):
        write_trace(tmp_path, np.zeros((1, 2, 1), dtype=np.int64), model_id="x", num_experts=2, top_k=1)


def test_trace_synth_with_more_tokens_than_memory_is_one_error_line(tmp_path: Path) -> None:
    # was numpy's _ArrayMemoryError with a traceback. 32 MoE layers x 1e10 tokens x top-2 x 8 bytes = 5,120 GB
    assert _one_error_line(
        [
            "trace",
            "synth",
            "-m",
            "mixtral-8x7b",
            "-r",
            "zipf:1.2",
            "-n",
            "10000000000",
            "-o",
            str(tmp_path / "t.npz"),
        ]
    ) == (
        "error: a trace of 10,000,000,000 tokens holds 32 x 10,000,000,000 x 2 expert ids (5,120.0 GB in "
        "memory), more than this machine can sample; use fewer --tokens"
    )


def test_trace_stats_png_directory_and_bad_suffix(tmp_path: Path) -> None:
    # a directory was passed to savefig (written as <dir>.png but reported as <dir>); '.xyz' raised ValueError
    assert _one_error_line(["trace", "stats", "mixtral-8x7b-zipf1.2", "--png", str(tmp_path)]) == (
        f"error: --png {tmp_path} is a directory; give a file name, e.g. {tmp_path / 'heatmap.png'}"
    )
    bad = tmp_path / "h.xyz"
    assert _one_error_line(["trace", "stats", "mixtral-8x7b-zipf1.2", "--png", str(bad)]) == (
        f"error: --png {bad}: cannot write a '.xyz' image; use a .png (or .svg/.pdf) name"
    )


def test_trace_stats_reports_the_png_it_wrote(tmp_path: Path) -> None:
    # matplotlib appends .png to a name without a suffix; the JSON reported the name without it
    result = runner.invoke(
        app, ["trace", "stats", "mixtral-8x7b-zipf1.2", "--png", str(tmp_path / "heat"), "--json"]
    )
    assert result.exit_code == 0, result.stderr
    reported = json.loads(result.stdout)["heatmap_png"]
    assert reported == str(tmp_path / "heat.png")
    assert Path(reported).is_file()


def test_trace_stats_empty_path_is_one_error_line() -> None:
    # was "error: : no such trace file; …"
    assert _one_error_line(["trace", "stats", "", "--no-png"]) == (
        "error: empty trace path; give a trace file or a shipped trace name (capsim trace list)"
    )


# ---- hardware topology --------------------------------------------------------------------------------------


def _huge_system(tmp_path: Path, count: int) -> Path:
    text = (REPO / "hardware_db" / "systems" / "dgx-h100.toml").read_text()
    folder = tmp_path / "db"
    folder.mkdir()
    (folder / "big-node.toml").write_text(
        text.replace('id = "dgx-h100"', 'id = "big-node"').replace("count = 8 }", f"count = {count} }}", 1)
    )
    return folder


def test_system_with_many_accelerators_has_its_bandwidths_in_seconds(tmp_path: Path) -> None:
    # the GPU-GPU bandwidth ran one widest-path search per GPU and kept all n^2 pair widths: a system entry
    # with 100,000 accelerators hung `hardware show` and `predict`. 20,000 switched GPUs now take well under
    # a second; every GPU reaches every other through the NVSwitch at 450 GB/s (nvlink4, hardware.md §3),
    # and the host through PCIe 5.0 x16 at 63 GB/s.
    system = load_hardware_db([_huge_system(tmp_path, 20_000)]).system("big-node")
    start = time.perf_counter()
    summary = system.bandwidth_summary()
    assert time.perf_counter() - start < 10.0
    assert summary == {"gpu_to_gpu_bytes_s": pytest.approx(450e9), "host_to_gpu_bytes_s": pytest.approx(63e9)}


def test_shipped_systems_gpu_bandwidth_equals_the_pairwise_search() -> None:
    db = load_hardware_db()
    for sid in db.ids("system"):
        system = db.system(sid)
        gpus = system.accelerator_nodes
        if len(gpus) < 2:
            continue
        brute = min(widest_from(system.graph, g).get(h, 0.0) for g in gpus for h in gpus if h != g)
        assert system.gpu_to_gpu_bandwidth() == pytest.approx(brute), sid


@st.composite
def symmetric_graphs(draw: Any) -> tuple[nx.DiGraph, list[str]]:
    """Small random graphs with equal bandwidth both ways, plus a subset of 2+ terminal nodes."""
    n = draw(st.integers(2, 7))
    nodes = [f"n{i}" for i in range(n)]
    g = nx.DiGraph()
    g.add_nodes_from(nodes)
    for i in range(n):
        for j in range(i + 1, n):
            if draw(st.booleans()):
                w = float(draw(st.integers(1, 5)))
                g.add_edge(nodes[i], nodes[j], bandwidth_bytes_s=w)
                g.add_edge(nodes[j], nodes[i], bandwidth_bytes_s=w)
    terminals = draw(st.lists(st.sampled_from(nodes), min_size=2, max_size=n, unique=True))
    return g, terminals


@given(symmetric_graphs())
def test_min_pair_bottleneck_equals_the_pairwise_widest_path(case: tuple[nx.DiGraph, list[str]]) -> None:
    graph, terminals = case
    brute = min(widest_from(graph, a).get(b, 0.0) for a in terminals for b in terminals if a != b)
    assert min_pair_bottleneck(graph, terminals) == brute


def test_min_pair_bottleneck_declines_direction_dependent_links() -> None:
    g = nx.DiGraph()
    g.add_edge("a", "b", bandwidth_bytes_s=2.0)
    g.add_edge("b", "a", bandwidth_bytes_s=1.0)
    assert min_pair_bottleneck(g, ["a", "b"]) is None


def test_topology_table_is_capped(tmp_path: Path) -> None:
    # 2,000 GPUs -> 8,004 directed edges; rich took minutes to draw 400,000 rows for 100,000 GPUs
    result = runner.invoke(
        app, ["hardware", "show", "big-node", "--hardware-db", str(_huge_system(tmp_path, 2000))]
    )
    assert result.exit_code == 0, result.stderr
    assert "… 6,980 more edges; --json lists all 8,004" in result.stdout


# ---- units ------------------------------------------------------------------------------------------------


def test_hour_constants_live_in_units_and_drive_the_owned_cost() -> None:
    assert HOURS_PER_DAY == 24.0 and HOURS_PER_YEAR == 365 * 24
    # $20,000 over 2 years of 8,760 h = 1.14155 $/h; 1,000 W busy all the time (u = 1) x 1.5 PUE x $0.10/kWh
    # = 0.15 $/h; total 1.29155 $/h
    inputs = CostInputs(electricity_usd_per_kwh=0.10, pue=1.5, lifetime_years=2.0, utilization=1.0)
    rate = float(owned_usd_per_hour(20_000.0, 1_000.0, inputs))
    assert rate == pytest.approx(20_000 / 17_520 + 1.0 * 1.5 * 0.10)
    assert KWH / HOURS == 1000.0  # a kWh is 1,000 W for one hour
    assert math.isclose(rate, 1.2915525, rel_tol=1e-7)


def test_error_messages_keep_colon_words_verbatim() -> None:
    """rich would turn ':thumbs_up:' into an emoji in the one-line error; the consoles disable emoji codes."""
    from typer.testing import CliRunner

    from capsim.cli import app

    result = CliRunner().invoke(app, ["model", "show", ":thumbs_up:"])
    assert result.exit_code == 1
    assert "':thumbs_up:'" in result.stderr


def test_sweep_grid_that_is_a_directory(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from capsim.cli import app

    result = CliRunner().invoke(app, ["sweep", "--grid", str(tmp_path), "--out", str(tmp_path / "x.csv")])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and "is a directory" in result.stderr


def test_fit_unknown_or_link_hardware_is_one_error_line() -> None:
    from typer.testing import CliRunner

    from capsim.cli import app

    runner = CliRunner()
    unknown = runner.invoke(app, ["fit", "--hardware", "h10"])
    assert unknown.exit_code == 1 and unknown.stderr.startswith("error: unknown hardware 'h10'")
    link = runner.invoke(app, ["fit", "--hardware", "nvlink4"])
    assert link.exit_code == 1 and "is a link entry, not a deployment" in link.stderr
