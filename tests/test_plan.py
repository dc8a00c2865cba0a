"""capsim.economics.plan: duration parsing, compare's ranking, and the SLO search against brute force."""

from __future__ import annotations

from itertools import product

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from test_cost import write_cost_db

from capsim.economics.cost import busy_rate, deployment_rates, owned_usd_per_hour
from capsim.economics.energy import energy_report
from capsim.economics.inputs import CostInputs
from capsim.economics.plan import (
    SLO,
    PlanPoint,
    compare,
    pareto_front,
    parse_duration,
    parse_gpus,
    plan,
    split_ids,
)
from capsim.engine.predict import predict
from capsim.engine.scenario import Scenario
from capsim.errors import DoesNotFitError, ScenarioError, UnknownHardwareError
from capsim.hardware.db import HardwareDB

# Pinned prices (USD) so that the search's answer does not move when the shipped prices are revised.
PRICES = {"h100-sxm": 30000.0, "mi300x": 15000.0, "l40s": 8000.0}
GRID_HW = ("h100-sxm", "mi300x", "l40s")
GRID_COUNTS = (1, 2)
GRID_DTYPES = ("native", "fp8")
GRID_MAX_BATCH = 64
MODEL = "qwen1.5-moe-a2.7b"
PROMPT, GEN = 256, 64


@pytest.fixture(scope="module")
def cost_db(tmp_path_factory: pytest.TempPathFactory) -> HardwareDB:
    return write_cost_db(tmp_path_factory.mktemp("plan_cost_db"))


# --------------------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("50ms", 0.05),
        ("50 ms", 0.05),
        ("1s", 1.0),
        ("0.05s", 0.05),
        ("200us", 2e-4),
        ("200µs", 2e-4),
        ("2min", 120.0),
        ("1e-2s", 0.01),
        (".5s", 0.5),
        (0.25, 0.25),
    ],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-12)


@pytest.mark.parametrize("text", ["fast", "50 parsecs", "ms", "-5ms", "0", "1h", ""])
def test_bad_durations_say_how_to_write_one(text: str) -> None:
    with pytest.raises(ScenarioError, match=r"duration|50ms"):
        parse_duration(text)


@given(st.floats(min_value=1e-3, max_value=1e6, allow_nan=False))
@example(50.0)
def test_duration_units_agree(ms: float) -> None:
    assert parse_duration(f"{ms}ms") == pytest.approx(parse_duration(f"{ms / 1000}s"), rel=1e-12)


@pytest.mark.parametrize("text", ["50", "0.05", "1e-2"])
def test_issue_15_a_time_without_unit_is_refused(text: str) -> None:
    # --slo-tpot 50 was read as 50 seconds; a bare number names both readings instead
    with pytest.raises(ScenarioError, match=rf"--slo-tpot '{text}' has no unit; write {text}ms or {text}s"):
        parse_duration(text, "--slo-tpot")


def test_gpus_and_id_lists() -> None:
    assert parse_gpus("auto") is None and parse_gpus(None) is None and parse_gpus("4") == 4
    with pytest.raises(ScenarioError, match="--gpus 'many' is not a device count"):
        parse_gpus("many")
    with pytest.raises(ScenarioError, match="--gpus must be >= 1"):
        parse_gpus("0")
    assert split_ids("a, b,,c") == ["a", "b", "c"]
    assert split_ids(["a,b", "b", "c"]) == ["a", "b", "c"]
    with pytest.raises(ScenarioError, match="no ids given"):
        split_ids(" , ")


# --------------------------------------------------------------------------------------------- pareto


def pareto_mask(cost: np.ndarray, tpot: np.ndarray) -> np.ndarray:
    """Brute-force reference: rows no other row beats on (cost, tpot), both minimised (O(n²))."""
    c, t = cost[:, None], tpot[:, None]
    dominated = ((c >= c.T) & (t >= t.T) & ((c > c.T) | (t > t.T))).any(axis=1)
    return ~dominated


def _point(cost: float, tpot: float, i: int = 0) -> PlanPoint:
    return PlanPoint(f"hw{i}", 1, "native", 1, tpot, 0.1, 1.0, 1, 1.0, False, cost, 1.0, 1.0, True, 1)


@given(st.lists(st.tuples(st.floats(0.01, 100.0), st.floats(1e-3, 1.0)), min_size=1, max_size=40))
@example([(1.0, 0.5), (1.0, 0.5)])
@example([(1.0, 0.5), (2.0, 0.1), (3.0, 0.1)])
def test_pareto_front_matches_brute_force(pairs: list[tuple[float, float]]) -> None:
    points = [_point(c, t, i) for i, (c, t) in enumerate(pairs)]
    front = pareto_front(points)
    mask = pareto_mask(np.array([c for c, _ in pairs]), np.array([t for _, t in pairs]))
    # the sweep keeps one of exact duplicates; the mask keeps all: compare the (cost, tpot) sets
    assert {(p.usd_per_mtok, p.tpot_s) for p in front} == {pairs[i] for i in np.flatnonzero(mask)}
    costs = [p.usd_per_mtok for p in front]
    tpots = [p.tpot_s for p in front]
    assert costs == sorted(costs) and tpots == sorted(tpots, reverse=True)


# --------------------------------------------------------------------------------------------- plan


def _all_in_cost(rate_per_busy_hour: float, batch: int, e2e_s: float) -> float:
    """USD per million generated tokens: busy rate over batch x GEN tokens produced in e2e seconds."""
    return rate_per_busy_hour / 3600.0 / (batch * GEN / e2e_s) * 1e6


def _brute_force(db: HardwareDB, inputs: CostInputs, slo: SLO) -> dict[tuple[str, int, str, int], float]:
    """Every grid point meeting the SLO -> its all-in cost, by direct prediction (no pruning, no search)."""
    feasible = {}
    for hw, n, dtype in product(GRID_HW, GRID_COUNTS, GRID_DTYPES):
        rates = deployment_rates(hw, n, db, inputs)
        for batch in (1, 2, 4, 8, 16, 32, 64):
            sc = Scenario(
                model=MODEL,
                hardware=hw,
                gpus=n,
                batch=batch,
                prompt_len=PROMPT,
                gen_len=GEN,
                weight_dtype=None if dtype == "native" else dtype,
            )
            try:
                pred = predict(sc, hardware_db=db)
            except DoesNotFitError:
                continue
            if batch > pred.memory.max_batch:
                continue
            if pred.tpot_s <= slo.tpot_s and (slo.ttft_s is None or pred.ttft_s <= slo.ttft_s):
                # issue 14: energy at the modelled draw, time-weighted over prefill and decode (capsim.economics.energy)
                e = energy_report(
                    rates.power.parts,
                    pred,
                    idle_fraction=inputs.idle_power_fraction,
                    pue=inputs.pue,
                    electricity_usd_per_kwh=inputs.electricity_usd_per_kwh,
                )
                watts = (
                    e.prefill.watts * pred.ttft_s + e.decode.watts * pred.decode.time_s
                ) / pred.e2e_latency_s
                rate = float(
                    busy_rate(
                        owned_usd_per_hour(rates.purchase.total_usd, watts, inputs, idle_w=e.idle_w), inputs
                    )
                )
                feasible[(hw, n, dtype, batch)] = _all_in_cost(rate, batch, pred.e2e_latency_s)
    return feasible


@pytest.mark.parametrize("slo", [SLO(5e-3, 30e-3), SLO(8e-3), SLO(3.3e-3)])
def test_search_matches_brute_force(max_roofline_db: HardwareDB, slo: SLO) -> None:
    # the plain roofline (no fitted GEMM terms, no kernel-latency floor): these SLOs were chosen on it, and the
    # search must match brute force on any database
    default_hardware_db = max_roofline_db
    inputs = CostInputs().override(purchase_usd=PRICES)
    result = plan(
        MODEL,
        slo,
        hardware_db=default_hardware_db,
        hardware=GRID_HW,
        device_counts=GRID_COUNTS,
        weight_dtypes=GRID_DTYPES,
        max_batch=GRID_MAX_BATCH,
        prompt_len=PROMPT,
        gen_len=GEN,
        inputs=inputs,
    )
    expected = _brute_force(default_hardware_db, inputs, slo)
    assert expected, "the SLO leaves nothing feasible: the test would prove nothing"
    got = {(p.hardware, p.devices, p.weight_dtype, p.batch): p.usd_per_mtok for p in result.feasible}
    # only feasible points, and all of them (pruning loses none)
    assert set(got) == set(expected)
    for key, cost in expected.items():
        assert got[key] == pytest.approx(cost, rel=1e-9), key
    cheapest = min(expected, key=expected.__getitem__)
    best = result.best[0]
    assert (best.hardware, best.devices, best.weight_dtype, best.batch) == cheapest
    for p in result.best + result.pareto:
        assert p.tpot_s <= slo.tpot_s and (slo.ttft_s is None or p.ttft_s <= slo.ttft_s)
    # best: one row per configuration, ranked by cost
    assert len({p.config for p in result.best}) == len(result.best)
    assert [p.usd_per_mtok for p in result.best] == sorted(p.usd_per_mtok for p in result.best)


def test_search_finds_the_known_cheapest(cost_db: HardwareDB) -> None:
    """Two identical devices, one priced and one at double the price: the cheaper must win at every batch."""
    inputs = CostInputs().override(purchase_usd={"cost-test-gpu-unpriced": 40000.0})
    result = plan(
        MODEL,
        SLO(1.0),
        hardware_db=cost_db,
        hardware=["cost-test-gpu", "cost-test-gpu-unpriced"],
        device_counts=(1,),
        weight_dtypes=("native",),
        max_batch=8,
        prompt_len=PROMPT,
        gen_len=GEN,
        inputs=inputs,
    )
    # the unpriced clone has no TDP, so it has no owned cost and is listed as unpriced, not ranked
    assert result.unpriced == ("cost-test-gpu-unpriced x1 native",)
    assert [p.hardware for p in result.best] == ["cost-test-gpu"]
    assert result.best[0].batch == 8  # the largest batch spreads the same cost over the most tokens


def test_rented_basis_and_tokens_per_day_by_hand(cost_db: HardwareDB) -> None:
    inputs = CostInputs().override(utilization=0.5)
    kwargs = {
        "hardware_db": cost_db,
        "hardware": ["cost-test-gpu"],
        "device_counts": (1,),
        "weight_dtypes": ("native",),
        "max_batch": 4,
        "prompt_len": PROMPT,
        "gen_len": GEN,
        "inputs": inputs,
    }
    rented = plan(MODEL, SLO(1.0), basis="rented", **kwargs)
    p = next(q for q in rented.points if q.batch == 4)
    # cloud 2.0 USD/h at u = 0.5 -> 4.0 per busy hour, charged to the sustained rate
    assert p.usd_per_mtok == pytest.approx(4.0 / 3600 / p.sustained_tokens_per_s * 1e6, rel=1e-9)
    # a volume of 3.5 replica-days: 4 replicas, each busy 3.5/4 of the day (derived, not the 0.5 input)
    volume = 3.5 * p.sustained_tokens_per_s * 86400
    fleet = plan(MODEL, SLO(1.0), basis="owned", tokens_per_day=volume, **kwargs)
    q = next(x for x in fleet.points if x.batch == 4)
    assert q.replicas == 4 and q.utilization == pytest.approx(0.875)
    assert q.purchase_usd == 4 * 20000.0
    # 4 x [20,000/(3 x 8,760) + (P_idle + (P_busy - P_idle) x 0.875) kW x 1.2 x 0.08] x 24 h per day, over
    # the volume; P_idle = 0.15 x 500 W = 75 W, P_busy = the modelled draw (capsim.economics.energy), time-weighted over
    # prefill and decode
    pred = predict(
        Scenario(model=MODEL, hardware="cost-test-gpu", gpus=1, batch=4, prompt_len=PROMPT, gen_len=GEN),
        hardware_db=cost_db,
    )
    e = energy_report(
        deployment_rates("cost-test-gpu", 1, cost_db, inputs).power.parts,
        pred,
        idle_fraction=0.15,
        pue=1.2,
        electricity_usd_per_kwh=0.08,
    )
    busy = (e.prefill.watts * pred.ttft_s + e.decode.watts * pred.decode.time_s) / pred.e2e_latency_s
    assert e.idle_w == pytest.approx(75.0) and 75.0 < busy < 500.0
    per_hour = 20000 / (3 * 8760) + (75 + (busy - 75) * 0.875) / 1000 * 1.2 * 0.08
    assert q.usd_per_day == pytest.approx(4 * per_hour * 24, rel=1e-9)
    assert q.usd_per_mtok == pytest.approx(q.usd_per_day / volume * 1e6, rel=1e-9)


def test_budget_excludes_what_it_cannot_buy(cost_db: HardwareDB) -> None:
    kwargs = {
        "hardware_db": cost_db,
        "hardware": ["cost-test-gpu"],
        "device_counts": (1, 2),
        "weight_dtypes": ("native",),
        "max_batch": 4,
        "prompt_len": PROMPT,
        "gen_len": GEN,
    }
    result = plan(MODEL, SLO(1.0), budget_usd=30000, **kwargs)
    assert {p.devices for p in result.feasible} == {1}  # 2 x 20,000 > 30,000
    with pytest.raises(ScenarioError, match="--budget caps the purchase cost"):
        plan(MODEL, SLO(1.0), budget_usd=30000, basis="rented", **kwargs)
    with pytest.raises(ScenarioError, match="--tokens-per-day must be positive"):
        plan(MODEL, SLO(1.0), tokens_per_day=0, **kwargs)


def test_plan_reports_skipped_configurations(default_hardware_db: HardwareDB) -> None:
    result = plan(
        "mixtral-8x7b",
        SLO(0.1),
        hardware_db=default_hardware_db,
        hardware=["l4"],
        device_counts=(1,),
        weight_dtypes=("native",),
        prompt_len=PROMPT,
        gen_len=GEN,
    )
    assert result.points == ()
    ((label, reason),) = result.skipped
    assert label == "l4 x1 native" and reason.startswith("does not fit: needs")


def test_plan_progress_is_reported(default_hardware_db: HardwareDB) -> None:
    seen: list[tuple[int, int]] = []
    plan(
        MODEL,
        SLO(5e-3),
        hardware_db=default_hardware_db,
        hardware=["mi300x"],
        device_counts=(1,),
        weight_dtypes=("native",),
        max_batch=64,
        prompt_len=PROMPT,
        gen_len=GEN,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen and seen[-1][0] == seen[-1][1] == 7  # batches 1..64, the pruned ones counted as done


# --------------------------------------------------------------------------------------------- compare


def test_compare_ranks_by_each_objective(cost_db: HardwareDB) -> None:
    hw = ["cost-test-gpu", "h100-sxm", "l40s"]
    inputs = CostInputs().override(purchase_usd=PRICES)
    kwargs = {
        "hardware_db": cost_db,
        "gpus": 1,
        "batch": 8,
        "prompt_len": PROMPT,
        "gen_len": GEN,
        "inputs": inputs,
    }
    by_cost = compare(MODEL, hw, objective="cost_per_mtok", **kwargs)
    costs = [o.usd_per_mtok_output for o in by_cost.options]
    assert costs == sorted(costs)
    by_tpot = compare(MODEL, hw, objective="tpot", **kwargs)
    assert [o.tpot_s for o in by_tpot.options] == sorted(o.tpot_s for o in by_tpot.options)
    by_tput = compare(MODEL, hw, objective="throughput", **kwargs)
    assert [o.throughput for o in by_tput.options] == sorted(
        (o.throughput for o in by_tput.options), reverse=True
    )
    by_buy = compare(MODEL, hw, objective="purchase", **kwargs)
    assert [o.purchase_usd for o in by_buy.options] == [8000.0, 20000.0, 30000.0]
    option = by_buy.options[0]
    assert option.accuracy.value == 62.5 and option.accuracy.soft  # models.md §2: Qwen1.5-MoE MMLU 62.5 (?)
    row = option.to_row()
    assert row["hardware"] == "l40s" and row["purchase_usd"] == 8000.0 and row["accuracy"] == 62.5


def test_compare_keeps_options_that_do_not_fit(default_hardware_db: HardwareDB) -> None:
    # Mixtral-8x7B's ~93 GB of bf16 weights: 2 x H100 (2 x 72 GB usable) hold them; 2 x L4 (2 x 21.6 GB) not
    result = compare(
        "mixtral-8x7b",
        ["l4", "h100-sxm"],
        hardware_db=default_hardware_db,
        gpus=2,
        batch=4,
        prompt_len=PROMPT,
        gen_len=GEN,
    )
    assert [o.hardware for o in result.options] == ["h100-sxm", "l4"]
    assert result.options[0].fits
    l4 = next(o for o in result.options if o.hardware == "l4")
    assert not l4.fits and l4.prediction is None and l4.cost is None
    assert l4.problem.startswith("does not fit: needs ") and " has " in l4.problem
    assert result.options[-1].hardware == "l4"  # options that cannot run rank last
    assert l4.to_dict()["accuracy"]["value"] == 70.6  # accuracy is the model's, fit or not


def test_compare_headroom_and_quantisation_caveat(default_hardware_db: HardwareDB) -> None:
    result = compare(
        "mixtral-8x7b",
        ["h100-sxm"],
        hardware_db=default_hardware_db,
        gpus=1,
        batch=4,
        prompt_len=PROMPT,
        gen_len=GEN,
        weight_dtype="int4",
    )
    (o,) = result.options
    m = o.prediction.memory
    assert o.headroom_gb == pytest.approx((m.usable_bytes - m.total_bytes) / 1e9)
    assert o.headroom_gb > 0
    assert o.accuracy.status == "unknown" and o.accuracy.value is None and "int4" in o.accuracy.caveat


def test_compare_rejects_bad_input_before_predicting(default_hardware_db: HardwareDB) -> None:
    with pytest.raises(UnknownHardwareError, match="did you mean 'h100-sxm'"):
        compare(MODEL, ["h100-sxn"], hardware_db=default_hardware_db)
    with pytest.raises(ScenarioError, match="--objective 'cheap' is not one of"):
        compare(MODEL, ["h100-sxm"], hardware_db=default_hardware_db, objective="cheap")  # type: ignore[arg-type]
    with pytest.raises(ScenarioError, match="unknown weight dtype 'int3'"):
        compare(MODEL, ["h100-sxm"], hardware_db=default_hardware_db, weight_dtype="int3")
    with pytest.raises(ScenarioError, match="unknown benchmark"):
        compare(MODEL, ["h100-sxm"], hardware_db=default_hardware_db, benchmark="iq")
