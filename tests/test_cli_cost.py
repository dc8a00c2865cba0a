"""``capsim compare``, ``plan`` and ``radar`` through typer's CliRunner: output, JSON/CSV, overrides,
errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from test_cost import COST_FILES
from typer.testing import CliRunner

from capsim.cli import app

runner = CliRunner(env={"NO_COLOR": "1"})
MODEL = "qwen1.5-moe-a2.7b"
SMALL = ["--prompt-len", "256", "--gen-len", "32"]


@pytest.fixture(scope="module")
def cost_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli_cost_db")
    for name, text in COST_FILES.items():
        (root / name).write_text(text.lstrip(), encoding="utf-8")
    return root


def _compare_json(cost_dir: Path, *extra: str) -> dict:
    result = runner.invoke(
        app,
        [
            "compare",
            "--model",
            MODEL,
            "--hardware",
            "cost-test-gpu",
            "--gpus",
            "1",
            "--batch",
            "4",
            *SMALL,
            "--hardware-db",
            str(cost_dir),
            "--json",
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _rates(payload: dict) -> dict:
    return payload["options"][0]["cost"]["rates"]


# --------------------------------------------------------------------------------------------- compare


def test_compare_table(cost_dir: Path) -> None:
    result = runner.invoke(
        app,
        [
            "compare",
            "--model",
            MODEL,
            "--hardware",
            "cost-test-gpu,cost-test-server,l4",
            "--gpus",
            "auto",
            "--batch",
            "4",
            *SMALL,
            "--hardware-db",
            str(cost_dir),
        ],
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "ranked by cost_per_mtok (owned)" in out
    for hw in ("cost-test-gpu", "cost-test-server", "l4"):
        assert hw in out
    # the parts-built server is a lower bound: its SSDs have no capacity (test_cost: system bought as parts)
    assert "≥ $92,560" in out
    assert "missing cost-test-server: price of cost-test-ssd" in out
    # models.md §2: Qwen1.5-MoE-A2.7B MMLU 62.5 (?) from the Qwen blog
    assert "62.5 (?)" in out and "https://qwenlm.github.io/blog/qwen-moe/" in out
    assert (
        "cost basis (docs/cost.md)" in out
        and "electricity_usd_per_kwh = 0.08 USD/kWh [assumption, 2023]" in out
    )


def test_compare_json_by_hand(cost_dir: Path) -> None:
    payload = _compare_json(
        cost_dir,
        "--electricity-usd-kwh",
        "0.10",
        "--pue",
        "1.5",
        "--lifetime-years",
        "4",
        "--idle-power-fraction",
        "0.2",
    )
    option = payload["options"][0]
    # 20,000 / (4 x 8,760) + 0.5 kW x 1.5 x 0.10 = 0.5707763 + 0.075 (tests/test_cost.py)
    assert _rates(payload)["owned_usd_per_busy_hour"] == pytest.approx(20000 / 35040 + 0.075, rel=1e-9)
    full = option["cost"]["full_load"]
    # per token, energy is charged at the decode phase's modelled draw (capsim.economics.energy), not at TDP:
    # 20,000 / 35,040 + P_decode kW x 1.5 x 0.10
    watts = full["energy"]["decode"]["watts"]
    assert 100.0 < watts < 500.0  # between idle (0.2 x 500 W) and TDP
    assert full["owned"]["usd_per_mtok_output"] == pytest.approx(
        (20000 / 35040 + watts / 1000 * 0.15) / 3600 / option["decode_tokens_per_s"] * 1e6, rel=1e-9
    )
    assert full["energy"]["j_per_output_token"] == pytest.approx(watts / option["decode_tokens_per_s"])
    assert option["accuracy"]["value"] == 62.5 and option["accuracy"]["soft"] is True
    names = {i["name"]: i for i in payload["cost_inputs"]["inputs"]}
    assert names["pue"]["overridden"] and not names["utilization"]["overridden"]


@pytest.mark.parametrize(
    ("flags", "field", "expected"),
    [
        # baseline: 20,000/(3 x 8,760) + 0.5 kW x 1.2 x 0.08 = 0.7610350 + 0.048 (defaults)
        ((), "owned_usd_per_busy_hour", 20000 / 26280 + 0.048),
        (("--electricity-usd-kwh", "0.2"), "owned_usd_per_busy_hour", 20000 / 26280 + 0.5 * 1.2 * 0.2),
        (("--pue", "1.5"), "owned_usd_per_busy_hour", 20000 / 26280 + 0.5 * 1.5 * 0.08),
        (("--lifetime-years", "5"), "owned_usd_per_busy_hour", 20000 / 43800 + 0.048),
        # u = 0.5: P = 500 x (0.15 + 0.85 x 0.5) = 287.5 W; (0.7610350 + 0.2875 x 0.096) / 0.5
        (("--utilization", "0.5"), "owned_usd_per_busy_hour", (20000 / 26280 + 0.2875 * 0.096) / 0.5),
        (
            ("--utilization", "0.5", "--idle-power-fraction", "0.5"),
            "owned_usd_per_busy_hour",
            (20000 / 26280 + 0.375 * 0.096) / 0.5,
        ),
        (("--price", "cost-test-gpu=10000"), "owned_usd_per_busy_hour", 10000 / 26280 + 0.048),
        (("--cloud", "cost-test-gpu=3.5"), "cloud_usd_per_hour", 3.5),
    ],
)
def test_every_override_flag_reaches_the_json(
    cost_dir: Path, flags: tuple[str, ...], field: str, expected: float
) -> None:
    assert _rates(_compare_json(cost_dir, *flags))[field] == pytest.approx(expected, rel=1e-9)


def test_prices_file_and_flag_precedence(cost_dir: Path, tmp_path: Path) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text(
        "pue = 1.0\n[purchase_usd]\ncost-test-gpu = 26280\n[cloud_usd_per_hour]\ncost-test-gpu = 1.5\n"
    )
    rates = _rates(_compare_json(cost_dir, "--prices", str(prices)))
    # 26,280 / 26,280 h = 1.0 USD/h; 0.5 kW x 1.0 x 0.08 = 0.04 USD/h
    assert rates["owned_usd_per_busy_hour"] == pytest.approx(1.04, rel=1e-12)
    assert rates["cloud_usd_per_hour"] == 1.5
    # the command line wins over the file
    rates = _rates(_compare_json(cost_dir, "--prices", str(prices), "--pue", "2.0"))
    assert rates["owned_usd_per_busy_hour"] == pytest.approx(1.0 + 0.5 * 2.0 * 0.08, rel=1e-12)


def test_compare_system_option_adds_to_hardware(cost_dir: Path) -> None:
    result = runner.invoke(
        app,
        [
            "compare",
            "--model",
            MODEL,
            "--hardware",
            "cost-test-gpu",
            "--system",
            "cost-test-priced-server",
            *SMALL,
            "--hardware-db",
            str(cost_dir),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    options = {o["hardware"]: o for o in json.loads(result.stdout)["options"]}
    assert set(options) == {"cost-test-gpu", "cost-test-priced-server"}
    # a system is used whole: its 4 accelerators, at its published 150,000 USD
    assert options["cost-test-priced-server"]["devices"] == 4
    assert options["cost-test-priced-server"]["cost"]["rates"]["purchase"]["total_usd"] == 150000.0


def test_compare_csv(cost_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "out" / "compare.csv"
    result = runner.invoke(
        app,
        [
            "compare",
            "--model",
            MODEL,
            "--hardware",
            "cost-test-gpu",
            "--hardware",
            "l40s",
            "--gpus",
            "1",
            *SMALL,
            "--hardware-db",
            str(cost_dir),
            "--csv",
            str(path),
            "--objective",
            "purchase",
        ],
    )
    assert result.exit_code == 0, result.output
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["hardware"] for r in rows] == ["l40s", "cost-test-gpu"] or [r["hardware"] for r in rows] == [
        "cost-test-gpu",
        "l40s",
    ]
    by_hw = {r["hardware"]: r for r in rows}
    assert float(by_hw["cost-test-gpu"]["purchase_usd"]) == 20000.0
    assert by_hw["cost-test-gpu"]["accuracy"] == "62.5"
    assert by_hw["cost-test-gpu"]["accuracy_status"] == "published"
    # ranked by purchase: the cheaper first
    order = sorted(rows, key=lambda r: float(r["purchase_usd"]))
    assert [r["hardware"] for r in rows] == [r["hardware"] for r in order]
    assert "CSV written to" in result.output


def test_compare_does_not_fit_shows_needs_and_has() -> None:
    result = runner.invoke(
        app, ["compare", "--model", "mixtral-8x7b", "--hardware", "l4", "--gpus", "1", *SMALL]
    )
    # issue 15: no option runs = exit 1 (as radar and fit), after the table that shows why
    assert result.exit_code == 1, result.output
    assert (
        result.stderr.strip().splitlines()[-1]
        == "error: no option runs mixtral-8x7b; the reasons are in the table above"
    )
    assert "does not fit" in result.output
    assert "l4: does not fit: needs " in result.output and " has 21.6 GB" in result.output


def test_compare_missing_accuracy_and_quantisation_caveat() -> None:
    result = runner.invoke(
        app,
        [
            "compare",
            "--model",
            "gpt-oss-20b",
            "--hardware",
            "h100-sxm",
            "--gpus",
            "1",
            *SMALL,
            "--benchmark",
            "gsm8k",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "accuracy: no published GSM8K score for gpt-oss-20b (missing, not estimated)" in result.output
    result = runner.invoke(
        app,
        [
            "compare",
            "--model",
            MODEL,
            "--hardware",
            "h100-sxm",
            "--gpus",
            "1",
            *SMALL,
            "--weight-dtype",
            "int4",
        ],
    )
    assert result.exit_code == 0, result.output
    # issue 14: a quantised precision with nothing published is "unknown", not the bf16 62.5 with a star
    assert "62.5" not in result.output.split("accuracy")[0] and "unknown" in result.output
    assert "no published MMLU score for int4 weights; the native 62.5 is not copied" in result.output


# --------------------------------------------------------------------------------------------- plan


def test_plan_json(cost_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "plan",
            "--model",
            MODEL,
            "--slo-tpot",
            "50ms",
            "--slo-ttft",
            "1s",
            "--hardware",
            "cost-test-gpu,l40s",
            "--weight-dtypes",
            "native",
            "--max-batch",
            "16",
            *SMALL,
            "--hardware-db",
            str(cost_dir),
            "--json",
            "--plot",
            str(tmp_path / "plan"),
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["slo"] == {"tpot_s": 0.05, "ttft_s": 1.0}
    assert payload["best"], payload
    for p in payload["best"] + payload["pareto"]:
        assert p["tpot_s"] <= 0.05 and p["ttft_s"] <= 1.0 and p["feasible"]
    costs = [p["usd_per_mtok"] for p in payload["best"]]
    assert costs == sorted(costs)
    assert payload["plot"] == [str(tmp_path / "plan.png"), str(tmp_path / "plan.svg")]
    assert (tmp_path / "plan.png").stat().st_size > 10_000


def test_plan_json_carries_accuracy_per_precision(cost_dir: Path) -> None:
    result = runner.invoke(
        app,
        [
            "plan",
            "--model",
            MODEL,
            "--slo-tpot",
            "50ms",
            "--hardware",
            "cost-test-gpu",
            "--weight-dtypes",
            "native,int4",
            "--max-batch",
            "2",
            *SMALL,
            "--hardware-db",
            str(cost_dir),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    accuracy = json.loads(result.stdout)["accuracy"]
    # models.md §2: Qwen1.5-MoE-A2.7B MMLU 62.5 (?); int4 has no published delta
    assert accuracy["native"]["status"] == "published" and accuracy["native"]["value"] == 62.5
    assert accuracy["int4"]["status"] == "unknown" and accuracy["int4"]["value"] is None


def test_plan_table_and_budget(cost_dir: Path) -> None:
    result = runner.invoke(
        app,
        [
            "plan",
            "--model",
            MODEL,
            "--slo-tpot",
            "0.05s",
            "--budget",
            "25000",
            "--tokens-per-day",
            "1e7",
            "--hardware",
            "cost-test-gpu",
            "--weight-dtypes",
            "native",
            "--max-batch",
            "8",
            *SMALL,
            "--hardware-db",
            str(cost_dir),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "cheapest configurations" in result.output and "Pareto front" in result.output
    assert "10,000,000 output tokens/day" in result.output and "budget $25,000" in result.output


def test_plan_nothing_feasible_says_what_to_do(cost_dir: Path) -> None:
    result = runner.invoke(
        app,
        [
            "plan",
            "--model",
            MODEL,
            "--slo-tpot",
            "1us",
            "--hardware",
            "cost-test-gpu",
            "--weight-dtypes",
            "native",
            "--max-batch",
            "4",
            *SMALL,
            "--hardware-db",
            str(cost_dir),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "no priced configuration meets the SLOs; relax the SLOs" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--slo-tpot", "fast"], "error: bad --slo-tpot 'fast'; write a number with a unit: 50ms"),
        (["--slo-tpot", "50"], "error: --slo-tpot '50' has no unit; write 50ms or 50s"),
        (["--slo-tpot", "50ms", "--slo-ttft", "-1s"], "error: bad --slo-ttft '-1s'"),
        (["--slo-tpot", "50ms", "--basis", "leased"], "error: --basis 'leased' is not one of owned, rented"),
        (["--slo-tpot", "50ms", "--weight-dtypes", "native,int3"], "error: unknown weight dtype 'int3'"),
        (["--slo-tpot", "50ms", "--top", "0"], "error: --top must be >= 1"),
    ],
)
def test_plan_errors(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["plan", "--model", MODEL, "--hardware", "l40s", *args])
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------------------------- radar


def test_radar_writes_png_and_svg(cost_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "radar.png"
    result = runner.invoke(
        app,
        [
            "radar",
            "--model",
            MODEL,
            "--hardware",
            "cost-test-gpu,l40s,h100-sxm",
            "--gpus",
            "1",
            "--batch",
            "4",
            *SMALL,
            "--hardware-db",
            str(cost_dir),
            "--out",
            str(out),
            "--pareto",
        ],
    )
    assert result.exit_code == 0, result.output
    png, svg = tmp_path / "radar.png", tmp_path / "radar.svg"
    assert f"radar: {png} and {svg}" in result.output.replace("\n", "")
    assert png.stat().st_size > 10_000 and svg.stat().st_size > 10_000
    pareto = tmp_path / "radar-pareto.png"
    assert pareto.exists() and pareto.stat().st_size > 10_000

    import numpy as np
    from matplotlib.image import imread

    pixels = imread(png)[..., :3]
    assert np.mean(np.any(pixels < 0.95, axis=-1)) > 0.02


def test_radar_reports_what_it_cannot_draw(cost_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "radar",
            "--model",
            MODEL,
            "--hardware",
            "cost-test-gpu,cost-test-gpu-unpriced",
            "--gpus",
            "1",
            *SMALL,
            "--hardware-db",
            str(cost_dir),
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "not drawn: cost-test-gpu-unpriced x1 [PA]: no purchase value" in result.output  # + MoE-CAP class
    assert (tmp_path / "r.svg").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--hardware", "h100-sx"], "error: unknown hardware 'h100-sx'; did you mean 'h100-sxm'"),
        (["--hardware", "h100-sxm", "--cost-axis", "carbon"], "error: --cost-axis 'carbon' is not one of"),
        (
            ["--hardware", "h100-sxm", "--cost-cap", "-5"],
            "error: --cost-cap must be a positive finite number",
        ),
        # found by tests/test_cli_fuzz.py: inf gave NaN scores and an uncaught RuntimeWarning
        (
            ["--hardware", "h100-sxm", "--cost-cap", "inf"],
            "error: --cost-cap must be a positive finite number",
        ),
        (["--hardware", "l4", "--gpus", "1", "--model", "mixtral-8x7b"], "error: no option can be drawn"),
    ],
)
def test_radar_errors(args: list[str], message: str, tmp_path: Path) -> None:
    base = ["radar", "--model", MODEL, "--out", str(tmp_path / "x"), *SMALL]
    result = runner.invoke(app, base + args)
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--hardware", "h100-sxn"], "error: unknown hardware 'h100-sxn'; did you mean 'h100-sxm'"),
        (
            ["--hardware", "h100-sxm", "--model", "mixtral-8x7"],
            "error: unknown model 'mixtral-8x7'; did you mean",
        ),
        (
            ["--hardware", "h100-sxm", "--objective", "cheapest"],
            "error: --objective 'cheapest' is not one of",
        ),
        (["--hardware", "h100-sxm", "--price", "h100-sxm"], "error: --price 'h100-sxm' is not ID=PRICE"),
        (
            ["--hardware", "h100-sxm", "--price", "h100-sx=1"],
            "error: unknown hardware 'h100-sx'; did you mean",
        ),
        (
            ["--hardware", "h100-sxm", "--cloud", "nvlink4=1"],
            "error: --cloud nvlink4: a link entry has no price",
        ),
        (["--hardware", "h100-sxm", "--utilization", "1.5"], "error: utilization must be in (0, 1]"),
        (["--hardware", "h100-sxm", "--pue", "0.5"], "error: pue must be >= 1"),
        (["--hardware", "h100-sxm", "--gpus", "lots"], "error: --gpus 'lots' is not a device count"),
        (["--hardware", "h100-sxm", "--benchmark", "iq"], "error: unknown benchmark 'iq'"),
        (["--hardware", "h100-sxm", "--prices", "/nonexistent/prices.toml"], "cannot be read"),
        (["--hardware", " , "], "error: no ids given"),
    ],
)
def test_compare_errors(args: list[str], message: str) -> None:
    base = ["compare", "--model", MODEL]
    if "--model" in args:
        base = ["compare"]
    result = runner.invoke(app, base + args)
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_bad_prices_file_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text("[purchase_usd]\nh100-sxm = 'cheap'\n")
    result = runner.invoke(
        app, ["compare", "--model", MODEL, "--hardware", "h100-sxm", "--prices", str(path)]
    )
    assert result.exit_code == 1
    assert f"error: {path}: field 'purchase_usd.h100-sxm' must be a number, got 'cheap'" in result.output
