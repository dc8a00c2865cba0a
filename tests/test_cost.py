"""capsim.economics.cost: hand-computed costs, parts and missing prices, every input reaching the result, price files.

Cost arithmetic runs on labelled *test* entries (COST_FILES: invented values, said so in their ``source``)
added to the shipped database, so that a change of a real price cannot silently move a hand-computed number.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from capsim.economics.cost import (
    HOURS_PER_YEAR,
    busy_rate,
    check_price_ids,
    cost_report,
    deployment_rates,
    load_cost_file,
    owned_usd_per_hour,
    parse_price_assignments,
    purchase_cost,
    usd_per_mtok,
)
from capsim.economics.inputs import SCALAR_INPUTS, CostInputs
from capsim.engine.scenario import Scenario
from capsim.errors import CapsimError, DataFileError, MissingValueError, ScenarioError, UnknownHardwareError
from capsim.hardware.db import HardwareDB, load_hardware_db

TEST_SOURCE = "capsim cost test fixture: invented values, not a real product"

COST_FILES: dict[str, str] = {
    # One accelerator with every price; a clone that has no purchase price, TDP or cloud price.
    "cost-test-gpu.toml": f"""
schema = 1
id = "cost-test-gpu"
kind = "accelerator"
name = "Cost test GPU"
vendor = "capsim tests"
device_class = "datacenter-gpu"
source = "{TEST_SOURCE}"
memory_capacity_gb = 80
memory_bandwidth_gb_s = 2000
tdp_w = 500
[peak_tflops_dense]
bf16 = 500
fp8 = 1000
[links]
scale_up = "nvlink4"
scale_up_domain_max = 8
host = "pcie5-x16"
[price]
purchase_usd = 20000
cloud_usd_per_hour = 2.0
""",
    "cost-test-gpu-unpriced.toml": f"""
schema = 1
id = "cost-test-gpu-unpriced"
kind = "accelerator"
name = "Cost test GPU without prices"
vendor = "capsim tests"
device_class = "datacenter-gpu"
source = "{TEST_SOURCE}"
memory_capacity_gb = 80
memory_bandwidth_gb_s = 2000
[peak_tflops_dense]
bf16 = 500
[links]
scale_up = "nvlink4"
scale_up_domain_max = 8
host = "pcie5-x16"
""",
    "cost-test-cpu.toml": f"""
schema = 1
id = "cost-test-cpu"
kind = "cpu"
name = "Cost test CPU"
vendor = "capsim tests"
source = "{TEST_SOURCE}"
cores = 64
memory_channels = 12
memory_bandwidth_gb_s = 460.8
tdp_w = 300
[price]
purchase_usd = 5000
""",
    "cost-test-dram.toml": f"""
schema = 1
id = "cost-test-dram"
kind = "dram"
name = "Cost test DRAM"
source = "{TEST_SOURCE}"
memory_type = "DDR5"
transfer_rate_mt_s = 4800
channel_bandwidth_gb_s = 38.4
[price]
usd_per_gb = 2.5
""",
    "cost-test-ssd.toml": f"""
schema = 1
id = "cost-test-ssd"
kind = "ssd"
name = "Cost test SSD"
vendor = "capsim tests"
source = "{TEST_SOURCE}"
interface = "PCIe 5.0 x4"
seq_read_gb_s = 10
seq_write_gb_s = 8
power_active_w = 10
[price]
usd_per_tb = 100
""",
    # A server bought as parts (no whole-system price): 4 GPUs, 2 CPUs, 1024 GB DRAM, 2 SSDs.
    "cost-test-server.toml": f"""
schema = 1
id = "cost-test-server"
kind = "system"
name = "Cost test server"
source = "{TEST_SOURCE}"
accelerators = {{ id = "cost-test-gpu", count = 4 }}
cpus = {{ id = "cost-test-cpu", count = 2 }}
dram = {{ kind = "cost-test-dram", channels = 24, capacity_gb = 1024 }}
ssds = [ {{ id = "cost-test-ssd", count = 2 }} ]
fabric = "nvswitch"
""",
    # A whole server with every part priced: 2 GPUs, 1 CPU, 512 GB DRAM, 2 x 3.84 TB SSD, the platform parts
    # (chassis, motherboard, PSU, cooling, NICs, assembly) and a platform power figure; CPU idle is sourced.
    "cost-test-full-server.toml": f"""
schema = 1
id = "cost-test-full-server"
kind = "system"
name = "Cost test server, every part priced"
source = "{TEST_SOURCE}"
accelerators = {{ id = "cost-test-gpu", count = 2 }}
cpus = {{ id = "cost-test-cpu", count = 1 }}
dram = {{ kind = "cost-test-dram", channels = 12, capacity_gb = 512 }}
ssds = [ {{ id = "cost-test-ssd", count = 2, capacity_tb = 3.84 }} ]
fabric = "pcie"
[platform]
chassis_usd = 600
motherboard_usd = 900
psu_usd = 1200
cooling_usd = 450
nics_usd = 1500
assembly_usd = 350
power_w = 150
""",
    # The same server with a whole-system purchase price and a system cloud price.
    "cost-test-priced-server.toml": f"""
schema = 1
id = "cost-test-priced-server"
kind = "system"
name = "Cost test server with a list price"
source = "{TEST_SOURCE}"
accelerators = {{ id = "cost-test-gpu", count = 4 }}
cpus = {{ id = "cost-test-cpu", count = 2 }}
fabric = "nvswitch"
[price]
purchase_usd = 150000
cloud_usd_per_hour = 9.0
""",
}

# Inputs for the hand computations below (every one differs from its default, so a default change is caught).
HAND = {
    "electricity_usd_per_kwh": 0.10,
    "pue": 1.5,
    "lifetime_years": 4.0,
    "utilization": 1.0,
    "idle_power_fraction": 0.2,
}


def write_cost_db(root: Path) -> HardwareDB:
    """The shipped database plus COST_FILES written under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for name, text in COST_FILES.items():
        (root / name).write_text(text.lstrip(), encoding="utf-8")
    return load_hardware_db([root])


@pytest.fixture(scope="module")
def cost_db(tmp_path_factory: pytest.TempPathFactory) -> HardwareDB:
    return write_cost_db(tmp_path_factory.mktemp("cost_db"))


@pytest.fixture
def hand() -> CostInputs:
    return CostInputs().override(**HAND)


# --------------------------------------------------------------------------------------------- hand computed


def test_owned_rate_one_gpu_by_hand(cost_db: HardwareDB, hand: CostInputs) -> None:
    rates = deployment_rates("cost-test-gpu", 1, cost_db, hand)
    # amortised: 20,000 USD / (4 y x 8,760 h) = 20,000 / 35,040 = 0.5707763 USD/h
    # energy:    500 W busy at u = 1 -> 0.5 kW x PUE 1.5 x 0.10 USD/kWh = 0.075 USD/h
    assert rates.purchase.total_usd == 20000.0
    assert rates.power.busy_w == 500.0
    assert rates.owned_usd_per_busy_hour == pytest.approx(0.5707763 + 0.075, rel=1e-6)
    # rented: 2.0 USD per device-hour x 1 device / u = 2.0
    assert rates.rented_usd_per_busy_hour == pytest.approx(2.0)


def test_cost_per_million_tokens_by_hand(cost_db: HardwareDB, hand: CostInputs) -> None:
    rates = deployment_rates("cost-test-gpu", 1, cost_db, hand)
    owned, rented = rates.token_cost(prefill_tokens_per_s=20_000.0, decode_tokens_per_s=500.0)
    # owned: 0.6457763 USD/h / 3600 s = 1.793823e-4 USD/s
    #   input  = 1.793823e-4 / 20,000 tok/s x 1e6 = 0.008969116 USD/Mtok
    #   output = 1.793823e-4 /    500 tok/s x 1e6 = 0.3587646  USD/Mtok
    assert owned.usd_per_mtok_input == pytest.approx(0.008969116, rel=1e-6)
    assert owned.usd_per_mtok_output == pytest.approx(0.3587646, rel=1e-6)
    # rented: 2.0 USD/h / 3600 / 500 x 1e6 = 1.111111 USD/Mtok out; / 20,000 -> 0.02777778 in
    assert rented.usd_per_mtok_output == pytest.approx(1.111111, rel=1e-6)
    assert rented.usd_per_mtok_input == pytest.approx(0.02777778, rel=1e-6)


def test_partial_utilisation_by_hand(cost_db: HardwareDB, hand: CostInputs) -> None:
    rates = deployment_rates("cost-test-gpu", 2, cost_db, hand.override(utilization=0.5))
    # 2 GPUs: purchase 40,000 -> 40,000 / 35,040 = 1.1415525 USD/h
    # power P(u) = 1000 W x (0.2 + 0.8 x 0.5) = 600 W -> 0.6 kW x 1.5 x 0.10 = 0.09 USD/h
    # wall-clock 1.2315525 USD/h; per busy hour / 0.5 = 2.463105 USD/h
    assert rates.owned_usd_per_busy_hour == pytest.approx(2.463105, rel=1e-6)
    # rented: 2 devices x 2.0 USD/h = 4.0 per hour, paid busy or not -> 8.0 per busy hour
    assert rates.cloud_usd_per_hour == pytest.approx(4.0)
    assert rates.rented_usd_per_busy_hour == pytest.approx(8.0)


def test_cost_report_charges_each_phase_to_its_tokens(cost_db: HardwareDB, hand: CostInputs) -> None:
    scenario = Scenario(
        model="qwen1.5-moe-a2.7b", hardware="cost-test-gpu", gpus=1, batch=8, prompt_len=256, gen_len=32
    )
    report = cost_report(scenario, cost_db, hand)
    full = report.full_load
    assert full.batch == 8 and report.per_user.batch == 1
    # Energy is charged at each phase's modelled draw, not at TDP: P = P_idle + (TDP - P_idle) x a with
    # P_idle = 0.2 x 500 W = 100 W and a = the share of the phase in which a kernel runs.
    from capsim.engine.predict import predict

    pred = predict(scenario, hardware_db=cost_db)
    energy = full.energy
    assert energy is not None
    for phase, metrics in (("prefill", pred.prefill), ("decode", pred.decode)):
        by = metrics.time_by_resource_s
        a = (by["compute"] + by["memory"] + by["interconnect"]) / metrics.time_s
        assert getattr(energy, phase).watts == pytest.approx(100 + 400 * a, rel=1e-9)
    # (the host of a bare accelerator id has no power figure: the draw is a lower bound)
    assert energy.decode.is_lower_bound

    def rate(watts: float) -> float:  # USD per busy hour at u = 1, as in test_owned_rate_one_gpu_by_hand
        return 20000 / 35040 + watts / 1000 * 1.5 * 0.10

    rate_in, rate_out = rate(energy.prefill.watts), rate(energy.decode.watts)
    assert full.owned.usd_per_mtok_input == pytest.approx(
        rate_in / 3600 / full.prefill_tokens_per_s * 1e6, rel=1e-6
    )
    assert full.owned.usd_per_mtok_output == pytest.approx(
        rate_out / 3600 / full.decode_tokens_per_s * 1e6, rel=1e-6
    )
    # batching raises throughput, so a user alone pays more per token than at full load
    assert report.per_user.owned.usd_per_mtok_output > full.owned.usd_per_mtok_output
    # What one batch costs, split by phase, adds back up to the busy time it took:
    # in$ x B·P + out$ x B·(G-1) = rate_in x TTFT + rate_out x (G-1)·TPOT
    charged = (full.owned.usd_per_mtok_input * 8 * 256 + full.owned.usd_per_mtok_output * 8 * 31) / 1e6
    assert charged == pytest.approx((rate_in * pred.ttft_s + rate_out * 31 * pred.tpot_s) / 3600, rel=1e-9)


# --------------------------------------------------------------------------------------------- parts


def test_system_bought_as_parts_by_hand(cost_db: HardwareDB, hand: CostInputs) -> None:
    purchase = purchase_cost("cost-test-server", 4, cost_db, hand)
    by_part = {p.part: p for p in purchase.parts}
    # 4 GPUs x 20,000 + 2 CPUs x 5,000 + 1,024 GB x 2.5 USD/GB = 80,000 + 10,000 + 2,560 = 92,560
    assert by_part["cost-test-gpu"].total_usd == 80000.0
    assert by_part["cost-test-cpu"].total_usd == 10000.0
    assert by_part["cost-test-dram"].total_usd == 2560.0
    assert purchase.total_usd == 92560.0
    # the SSDs have $/TB but the system gives no capacity: missing, never zero, so the total is a lower bound
    assert by_part["cost-test-ssd"].total_usd is None
    assert "capacity" in by_part["cost-test-ssd"].missing
    assert purchase.is_lower_bound
    assert purchase.label() == "≥ $92,560"


def test_system_power_by_hand(cost_db: HardwareDB, hand: CostInputs) -> None:
    rates = deployment_rates("cost-test-server", 4, cost_db, hand)
    # 4 x 500 W + 2 x 300 W + 2 x 10 W (SSD active) = 2,620 W; DRAM has no power figure -> listed missing
    assert rates.power.busy_w == 2620.0
    # DRAM and the platform (fans, NICs, board) have no power figure -> listed missing
    assert [p.part for p in rates.power.missing] == ["cost-test-dram", "platform"]
    # owned: 92,560 / 35,040 + 2.62 kW x 1.5 x 0.10 = 2.6415525 + 0.393 = 3.0345525 USD/h
    assert rates.owned_usd_per_busy_hour == pytest.approx(3.0345525, rel=1e-6)
    # no system cloud price: the accelerator's 2.0 USD/h x 4 devices
    assert rates.cloud_usd_per_hour == pytest.approx(8.0)


def test_whole_system_price_and_cloud_price(cost_db: HardwareDB, hand: CostInputs) -> None:
    rates = deployment_rates("cost-test-priced-server", 4, cost_db, hand)
    assert rates.purchase.total_usd == 150000.0
    assert not rates.purchase.is_lower_bound
    assert rates.purchase.scope.startswith("whole system")
    assert rates.cloud_usd_per_hour == 9.0


def test_unpriced_accelerator_has_no_owned_cost(cost_db: HardwareDB, hand: CostInputs) -> None:
    rates = deployment_rates("cost-test-gpu-unpriced", 2, cost_db, hand)
    assert rates.owned_usd_per_busy_hour is None
    assert "price.purchase_usd" in rates.owned_missing
    assert rates.rented_usd_per_busy_hour is None
    assert rates.purchase.label() == "missing"
    with pytest.raises(MissingValueError, match="cost-test-gpu-unpriced has no 'price.purchase_usd'"):
        rates.purchase.require_total("cost-test-gpu-unpriced x2")
    # once priced, the missing TDP is what stops the owned cost (energy)
    priced = deployment_rates(
        "cost-test-gpu-unpriced", 2, cost_db, hand.override(purchase_usd={"cost-test-gpu-unpriced": 1000})
    )
    assert priced.owned_usd_per_busy_hour is None
    assert "tdp_w" in priced.owned_missing


def test_shipped_accelerator_uses_database_price_with_provenance(default_hardware_db: HardwareDB) -> None:
    purchase = purchase_cost("h100-sxm", 2, default_hardware_db, CostInputs())
    part, host = purchase.parts
    # a bare accelerator id has no host server: named as missing, so the total is a lower bound
    assert host.part == "host" and host.unit_usd is None and "host server" in host.missing
    assert purchase.is_lower_bound and purchase.label().startswith("≥ $")
    acc = default_hardware_db.accelerator("h100-sxm")
    assert part.unit_usd == acc.purchase_usd and part.quantity == 2
    assert part.source == acc.provenance["price.purchase_usd"].source
    assert part.soft == acc.provenance["price.purchase_usd"].soft


# --------------------------------------------------------------------------------------------- overrides


def _owned(db: HardwareDB, inputs: CostInputs, hw: str = "cost-test-gpu", n: int = 1) -> float:
    value = deployment_rates(hw, n, db, inputs).owned_usd_per_busy_hour
    assert value is not None
    return value


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        # each: 20,000 USD GPU, 500 W, from HAND with one input changed
        ("electricity_usd_per_kwh", 0.30, 20000 / 35040 + 0.5 * 1.5 * 0.30),
        ("pue", 1.1, 20000 / 35040 + 0.5 * 1.1 * 0.10),
        ("lifetime_years", 2.0, 20000 / (2 * 8760) + 0.5 * 1.5 * 0.10),
        # u = 0.25: P = 500 x (0.2 + 0.8 x 0.25) = 200 W; (0.5707763 + 0.2 x 0.15) / 0.25
        ("utilization", 0.25, (20000 / 35040 + 0.2 * 1.5 * 0.10) / 0.25),
    ],
)
def test_every_scalar_override_reaches_the_owned_rate(
    cost_db: HardwareDB, hand: CostInputs, name: str, value: float, expected: float
) -> None:
    changed = hand.override(**{name: value})
    assert _owned(cost_db, changed) == pytest.approx(expected, rel=1e-9)
    assert _owned(cost_db, changed) != pytest.approx(_owned(cost_db, hand))
    basis = {b["name"]: b for b in changed.basis()}
    assert basis[name]["overridden"] and basis[name]["source"] == "user override"


def test_idle_fraction_override_reaches_the_rate(cost_db: HardwareDB, hand: CostInputs) -> None:
    half = hand.override(utilization=0.5)
    # idle 0.2 -> P = 500 x 0.6 = 300 W; idle 0.6 -> P = 500 x (0.6 + 0.4 x 0.5) = 400 W
    assert _owned(cost_db, half) == pytest.approx((20000 / 35040 + 0.3 * 0.15) / 0.5, rel=1e-9)
    assert _owned(cost_db, half.override(idle_power_fraction=0.6)) == pytest.approx(
        (20000 / 35040 + 0.4 * 0.15) / 0.5, rel=1e-9
    )


def test_every_scalar_input_is_tested() -> None:
    # the two tests above cover exactly these; a new input must be added there
    assert set(SCALAR_INPUTS) == {
        "electricity_usd_per_kwh",
        "pue",
        "lifetime_years",
        "utilization",
        "idle_power_fraction",
    }


@pytest.mark.parametrize(
    ("part", "price", "expected_total"),
    [
        ("cost-test-gpu", 10000, 4 * 10000 + 10000 + 2560),
        ("cost-test-cpu", 8000, 80000 + 2 * 8000 + 2560),
        ("cost-test-dram", 4.0, 80000 + 10000 + 1024 * 4.0),
    ],
)
def test_price_overrides_reach_every_part(
    cost_db: HardwareDB, hand: CostInputs, part: str, price: float, expected_total: float
) -> None:
    purchase = purchase_cost("cost-test-server", 4, cost_db, hand.override(purchase_usd={part: price}))
    assert purchase.total_usd == expected_total
    line = next(p for p in purchase.parts if p.part == part)
    assert line.overridden and line.source == "user override (--price)"


def test_ssd_price_override_is_still_missing_without_capacity(cost_db: HardwareDB, hand: CostInputs) -> None:
    purchase = purchase_cost(
        "cost-test-server", 4, cost_db, hand.override(purchase_usd={"cost-test-ssd": 50})
    )
    assert purchase.is_lower_bound


def test_system_and_cloud_overrides(cost_db: HardwareDB, hand: CostInputs) -> None:
    inputs = hand.override(
        purchase_usd={"cost-test-priced-server": 120000},
        cloud_usd_per_hour={"cost-test-priced-server": 7.5, "cost-test-gpu": 3.0},
    )
    assert purchase_cost("cost-test-priced-server", 4, cost_db, inputs).total_usd == 120000.0
    assert deployment_rates("cost-test-priced-server", 4, cost_db, inputs).cloud_usd_per_hour == 7.5
    # an accelerator cloud override is per device: 3.0 x 2
    assert deployment_rates("cost-test-gpu", 2, cost_db, inputs).cloud_usd_per_hour == 6.0
    # and reaches a parts-built system that has no cloud price of its own: 3.0 x 4
    assert deployment_rates("cost-test-server", 4, cost_db, inputs).cloud_usd_per_hour == 12.0


def test_price_file_reaches_the_result(tmp_path: Path, cost_db: HardwareDB) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(
        "electricity_usd_per_kwh = 0.2\npue = 1.0\nlifetime_years = 5\nutilization = 1.0\n"
        "idle_power_fraction = 0.1\n"
        "[purchase_usd]\ncost-test-gpu = 17520\n[cloud_usd_per_hour]\ncost-test-gpu = 1.25\n"
    )
    inputs = CostInputs().override(**load_cost_file(path))
    rates = deployment_rates("cost-test-gpu", 1, cost_db, inputs)
    # 17,520 / (5 x 8,760) = 0.4 USD/h; 0.5 kW x 1.0 x 0.2 = 0.1 USD/h
    assert rates.owned_usd_per_busy_hour == pytest.approx(0.5, rel=1e-12)
    assert rates.cloud_usd_per_hour == 1.25
    assert inputs.overridden == frozenset(SCALAR_INPUTS)


# --------------------------------------------------------------------------------------------- errors


def test_price_file_errors_name_the_field(tmp_path: Path) -> None:
    bad_key = tmp_path / "a.toml"
    bad_key.write_text("electricty_usd_per_kwh = 0.1\n")
    with pytest.raises(
        DataFileError, match="unknown field 'electricty_usd_per_kwh'; did you mean electricity_usd_per_kwh"
    ):
        load_cost_file(bad_key)
    bad_value = tmp_path / "b.toml"
    bad_value.write_text('[purchase_usd]\nh100-sxm = "cheap"\n')
    with pytest.raises(DataFileError, match="field 'purchase_usd.h100-sxm' must be a number, got 'cheap'"):
        load_cost_file(bad_value)
    with pytest.raises(DataFileError, match="cannot be read"):
        load_cost_file(tmp_path / "missing.toml")
    broken = tmp_path / "c.toml"
    broken.write_text("pue = = 1\n")
    with pytest.raises(DataFileError, match="not valid TOML"):
        load_cost_file(broken)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"pue": 0.9}, "pue must be >= 1"),
        ({"utilization": 0.0}, r"utilization must be in \(0, 1\]"),
        ({"utilization": 1.5}, r"utilization must be in \(0, 1\]"),
        ({"idle_power_fraction": -0.1}, r"idle_power_fraction must be in \[0, 1\]"),
        ({"lifetime_years": 0}, "lifetime_years must be > 0"),
        ({"electricity_usd_per_kwh": math.nan}, "electricity_usd_per_kwh must be a finite number"),
        ({"purchase_usd": {"h100-sxm": -5}}, "price for 'h100-sxm' must be a positive number"),
        ({"power": 1}, "unknown cost input"),
    ],
)
def test_bad_inputs_raise_scenario_errors(changes: dict, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        CostInputs().override(**changes)


def test_price_assignment_parsing() -> None:
    assert parse_price_assignments(["h100-sxm=25000", " mi300x = 1.5e4 "], "--price") == {
        "h100-sxm": 25000.0,
        "mi300x": 15000.0,
    }
    with pytest.raises(ScenarioError, match="--price 'h100-sxm' is not ID=PRICE"):
        parse_price_assignments(["h100-sxm"], "--price")
    with pytest.raises(ScenarioError, match="'lots' is not a number"):
        parse_price_assignments(["h100-sxm=lots"], "--price")
    with pytest.raises(ScenarioError, match="must be a positive number"):
        parse_price_assignments(["h100-sxm=0"], "--cloud")


def test_unknown_price_id_suggests_close_matches(default_hardware_db: HardwareDB) -> None:
    with pytest.raises(UnknownHardwareError, match="unknown hardware 'h100-sx'; did you mean 'h100-sxm'"):
        check_price_ids(CostInputs().override(purchase_usd={"h100-sx": 1}), default_hardware_db)
    with pytest.raises(ScenarioError, match="--price nvlink4: a link entry has no price"):
        check_price_ids(CostInputs().override(purchase_usd={"nvlink4": 1}), default_hardware_db)
    with pytest.raises(ScenarioError, match="--cloud epyc-9654: a cpu entry has no price"):
        check_price_ids(CostInputs().override(cloud_usd_per_hour={"epyc-9654": 1}), default_hardware_db)
    assert issubclass(UnknownHardwareError, CapsimError)


def test_defaults_are_sourced_or_labelled() -> None:
    for item in CostInputs().basis():
        assert item["source"], item["name"]
        assert not item["overridden"]
    basis = {b["name"]: b for b in CostInputs().basis()}
    # hardware.md §8 "suggested simulator defaults": $0.08/kWh industrial, PUE 1.2 modern colo
    assert basis["electricity_usd_per_kwh"]["value"] == 0.08
    assert basis["pue"]["value"] == 1.2
    assert basis["lifetime_years"]["assumption"] and basis["utilization"]["assumption"]
    assert basis["idle_power_fraction"]["assumption"]


# --------------------------------------------------------------------------------------------- properties

positive = st.floats(min_value=1e-3, max_value=1e7, allow_nan=False, allow_infinity=False)
fraction = st.floats(min_value=0.01, max_value=1.0)


@given(purchase=positive, watts=positive, u=fraction, idle=st.floats(0.0, 1.0))
@example(purchase=1.0, watts=1.0, u=1.0, idle=0.0)
def test_busy_rate_falls_as_utilisation_rises(purchase: float, watts: float, u: float, idle: float) -> None:
    """More busy hours share the same purchase and idle power: the busy rate never rises with u."""
    inputs = CostInputs(idle_power_fraction=idle)
    lower = replace(inputs, utilization=u * 0.5)
    higher = replace(inputs, utilization=u)
    r_low = float(busy_rate(owned_usd_per_hour(purchase, watts, lower), lower))
    r_high = float(busy_rate(owned_usd_per_hour(purchase, watts, higher), higher))
    assert r_high <= r_low * (1 + 1e-12)


@given(purchase=positive, watts=positive, factor=st.floats(1.01, 10.0))
def test_owned_rate_rises_with_every_price(purchase: float, watts: float, factor: float) -> None:
    base = CostInputs()
    r = float(owned_usd_per_hour(purchase, watts, base))
    assert float(owned_usd_per_hour(purchase * factor, watts, base)) > r
    assert float(owned_usd_per_hour(purchase, watts * factor, base)) > r
    for name in ("electricity_usd_per_kwh", "pue"):
        assert (
            float(owned_usd_per_hour(purchase, watts, replace(base, **{name: getattr(base, name) * factor})))
            > r
        )
    assert float(owned_usd_per_hour(purchase, watts, replace(base, lifetime_years=3.0 * factor))) < r


@given(rate=positive, tps=positive)
def test_usd_per_mtok_round_trip(rate: float, tps: float) -> None:
    """$/Mtok x tokens/s x 3600 s / 1e6 gives back the hourly rate."""
    assert float(usd_per_mtok(rate, tps)) * tps * 3600 / 1e6 == pytest.approx(rate, rel=1e-12)


def test_vectorised_rates_match_scalar() -> None:
    import numpy as np

    inputs = CostInputs()
    purchase = np.array([1000.0, 20000.0, 3e5])
    watts = np.array([100.0, 700.0, 10200.0])
    vec = owned_usd_per_hour(purchase, watts, inputs)
    assert vec.shape == (3,)
    for i in range(3):
        assert vec[i] == pytest.approx(float(owned_usd_per_hour(purchase[i], watts[i], inputs)))
    # the formula once more, by hand for the middle row: 20,000/(3 x 8,760) + 0.7 kW x 1.2 x 0.08
    assert vec[1] == pytest.approx(20000 / (3 * HOURS_PER_YEAR) + 0.7 * 1.2 * 0.08)
