"""Issue 14: whole-system cost, energy per token, $/Mtok with energy, and the measured-run metrics calculator.

Every expected value is computed by hand in the comments, on the labelled test entries of tests/test_cost.py
(invented values, said so in their ``source``) or on published model configurations.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from test_cost import HAND, write_cost_db
from typer.testing import CliRunner

from capsim.cli import app
from capsim.economics.cost import deployment_rates, load_cost
from capsim.economics.energy import energy_report
from capsim.economics.inputs import CostInputs
from capsim.economics.options import cap_class, collect_options, load_options_file, parse_option
from capsim.economics.pricing import purchase_cost
from capsim.engine.measure import (
    Measurement,
    activated_from_counts,
    compat_sizes,
    load_expert_counts,
    measure,
)
from capsim.engine.metrics import PhaseMetrics
from capsim.engine.scenario import Scenario
from capsim.errors import DataFileError, ScenarioError
from capsim.hardware.db import HardwareDB


@pytest.fixture(scope="module")
def cost_db(tmp_path_factory: pytest.TempPathFactory) -> HardwareDB:
    return write_cost_db(tmp_path_factory.mktemp("cap_cost_db"))


@pytest.fixture
def hand() -> CostInputs:
    return CostInputs().override(**HAND)


def _phase(time_s: float, kernels_s: float, tokens: float) -> PhaseMetrics:
    """A phase whose time splits into ``kernels_s`` of memory-bound kernels and the rest overhead."""
    by = {"compute": 0.0, "memory": kernels_s, "interconnect": 0.0, "overhead": time_s - kernels_s}
    return PhaseMetrics(time_s, tokens, 0.0, 0.0, 0.0, 0.0, "memory", by, {}, 1)


def _prediction(prefill_tps: float, decode_tps: float, kernel_share: float) -> SimpleNamespace:
    """The parts of a Prediction that energy and cost read: both phases 1 s long, ``kernel_share`` of it in
    kernels, at the given throughputs."""
    return SimpleNamespace(
        scenario={"mode": "gpu"},
        deployment={"mode": "gpu"},
        prefill=_phase(1.0, kernel_share, prefill_tps),
        decode=_phase(1.0, kernel_share, decode_tps),
        prefill_tokens_per_s=prefill_tps,
        decode_tokens_per_s=decode_tps,
        batch_per_wave=16,
    )


# --------------------------------------------------------------------------------------------- whole server


def test_whole_server_total_by_hand(cost_db: HardwareDB, hand: CostInputs) -> None:
    purchase = purchase_cost("cost-test-full-server", 2, cost_db, hand)
    by_part = {p.part: p.total_usd for p in purchase.parts}
    # 2 GPUs x 20,000 = 40,000; 1 CPU x 5,000; 512 GB x 2.5 = 1,280; 2 x 3.84 TB x 100 USD/TB = 768;
    # platform: chassis 600 + motherboard 900 + PSU 1,200 + cooling 450 + NICs 1,500 + assembly 350 = 5,000
    assert by_part["cost-test-gpu"] == 40_000
    assert by_part["cost-test-cpu"] == 5_000
    assert by_part["cost-test-dram"] == 1_280
    assert by_part["cost-test-ssd"] == pytest.approx(768)
    assert sum(by_part[k] for k in ("chassis", "motherboard", "psu", "cooling", "nics", "assembly")) == 5_000
    # total 40,000 + 5,000 + 1,280 + 768 + 5,000 = 52,048, every part priced: not a lower bound
    assert purchase.total_usd == pytest.approx(52_048)
    assert not purchase.is_lower_bound
    assert purchase.label() == "$52,048"


def test_missing_platform_is_named_and_total_is_lower_bound(cost_db: HardwareDB, hand: CostInputs) -> None:
    # cost-test-server has no platform prices: one line names them, the total is "≥"
    purchase = purchase_cost("cost-test-server", 4, cost_db, hand)
    missing = {p.part: p.missing for p in purchase.missing}
    assert "chassis, motherboard, PSU" in missing["platform"]
    assert purchase.is_lower_bound and purchase.label().startswith("≥ $")


def test_host_memory_prices_dram_when_the_system_leaves_it_to_the_buyer(
    default_hardware_db: HardwareDB,
) -> None:
    # workstation-4090 gives no DRAM capacity; --host-memory-gb 64 buys 64 GB. ddr5-5200 has no sourced $/GB:
    # the DRAM is then named as missing; with a user price of 3 USD/GB it costs 64 x 3 = 192 USD.
    without = purchase_cost("workstation-4090", 1, default_hardware_db, CostInputs(), host_memory_gb=64)
    assert any(p.part == "ddr5-5200" and p.unit_usd is None for p in without.parts)
    priced = CostInputs().override(purchase_usd={"ddr5-5200": 3.0})
    with_64 = purchase_cost("workstation-4090", 1, default_hardware_db, priced, host_memory_gb=64)
    assert with_64.total_usd - without.total_usd == pytest.approx(192.0)


# --------------------------------------------------------------------------------------------- energy


def test_joules_per_token_at_a_known_utilisation(cost_db: HardwareDB, hand: CostInputs) -> None:
    rates = deployment_rates("cost-test-full-server", 2, cost_db, hand)
    pred = _prediction(prefill_tps=20_000.0, decode_tps=2_000.0, kernel_share=0.75)
    energy = energy_report(
        rates.power.parts,
        pred,
        idle_fraction=0.2,
        pue=1.5,
        electricity_usd_per_kwh=0.10,
        grid_gco2_per_kwh=400,
    )
    # GPUs: idle 0.2 x 500 = 100 W, at a = 0.75: 100 + 400 x 0.75 = 400 W each, x2 = 800 W
    # CPU (hosting only, a = 0): 0.2 x 300 = 60 W; SSDs (a = 0): 2 x 0.2 x 10 = 4 W; platform 150 W always
    # P = 800 + 60 + 4 + 150 = 1,014 W; DRAM has no power figure (lower bound)
    assert energy.decode.watts == pytest.approx(1014.0)
    # J/token = 1,014 W / 2,000 tok/s = 0.507 J per output token; / 20,000 = 0.0507 J per input token
    assert energy.decode.j_per_token == pytest.approx(0.507)
    assert energy.prefill.j_per_token == pytest.approx(0.0507)
    # energy $ per Mtok = 0.507 J x 1e6 / 3.6e6 J/kWh x PUE 1.5 x 0.10 $/kWh = 0.021125 $
    assert energy.usd_per_mtok(energy.decode) == pytest.approx(0.021125)
    # gCO2/token = 0.507 / 3.6e6 kWh x 1.5 x 400 g/kWh = 8.45e-5 g
    assert energy.gco2_per_token(energy.decode) == pytest.approx(8.45e-5)
    # idle: 2 x 100 + 60 + 4 + 150 = 414 W
    assert energy.idle_w == pytest.approx(414.0)


def test_usd_per_mtok_with_energy_by_hand(cost_db: HardwareDB, hand: CostInputs) -> None:
    inputs = hand.override(utilization=0.5)
    rates = deployment_rates("cost-test-full-server", 2, cost_db, inputs)
    cost = load_cost(rates, _prediction(prefill_tps=20_000.0, decode_tps=2_000.0, kernel_share=0.75))
    # amortised 52,048 / (4 x 8,760 h) = 1.485388 $/h (wall clock)
    # power at u = 0.5: idle 414 W + (1,014 - 414) x 0.5 = 714 W -> 0.714 kW x 1.5 x 0.10 = 0.1071 $/h
    # busy rate = (1.485388 + 0.1071) / 0.5 = 3.184977 $/h; / 3600 / 2,000 tok/s x 1e6 = 0.442358 $/Mtok
    amortised = 52_048 / 35_040
    busy = (amortised + 0.714 * 1.5 * 0.10) / 0.5
    assert cost.owned.usd_per_mtok_output == pytest.approx(busy / 3600 / 2000 * 1e6, rel=1e-9)
    assert cost.owned.usd_per_mtok_output == pytest.approx(0.442358, rel=1e-5)
    # the energy share of it at u = 1 would be the J/token figure: 0.507 J -> 0.021125 $/Mtok (test above)
    assert cost.energy is not None and cost.energy.decode.j_per_token == pytest.approx(0.507)


def test_unused_accelerators_of_a_system_idle(cost_db: HardwareDB) -> None:
    from capsim.economics.cost import power_draw

    draw = power_draw("cost-test-server", 4, cost_db, used_devices=1)
    roles = {(p.role, p.count) for p in draw.parts if p.kind == "accelerator"}
    assert roles == {("accelerator", 1), ("accelerator-unused", 3)}


# --------------------------------------------------------------------------------------------- measure

MIXTRAL_A100 = Scenario(
    model="mixtral-8x7b", hardware="a100-sxm-80gb", gpus=2, batch=16, prompt_len=512, gen_len=256
)


def test_s_mbu_from_measured_tpot_and_activated_experts_moecap_compat() -> None:
    m = Measurement(tpot_s=0.040, activated_per_layer=(6.44,))
    r = measure(MIXTRAL_A100, m, convention="moecap-compat")
    # Mixtral-8x7B (d 4096, 32 layers, 32 heads, 8 KV heads, d_h 128, f 14336), MoE-CAP's sizes:
    # S_attn = 4096 x (32·128 + 2·8·128) + 32·128·4096 = 41,943,040; S_exp = 3 x 4096 x 14336 = 176,160,768
    # weights/step = 32 x (6.44 x 176,160,768 + 41,943,040) = 37,645,388,349 params
    # SGLang seq_lens_sum averaged over the 255 steps = 16 x (512 + 128) = 10,240; KV = 10,240 x 2·32·8·128
    # = 671,088,640 elements; bytes = 2 x (37,645,388,349 + 671,088,640) = 76,632,953,979
    # S-MBU = 76,632,953,979 / 0.040 s / (2 x 2,039e9 B/s) = 0.469795
    assert r.decode.s_mbu == pytest.approx(0.469795, rel=1e-5)
    # S-MFU: one expert per layer, 2 x [32 x (176,160,768 + 41,943,040) + 2·32·4096·10,240] per token
    # = 2 x (6,979,321,856 + 2,684,354,560) = 19,327,352,832 FLOP; x 16/0.04 tok/s = 7.73094e15 FLOP/s
    # / (2 x 624e12 / 2) = 0.0123893
    assert r.decode.s_mfu == pytest.approx(0.0123893, rel=1e-5)


def test_s_mbu_paper_definition_counts_each_activated_expert_once_per_step() -> None:
    one = measure(MIXTRAL_A100, Measurement(tpot_s=0.040, activated_per_layer=(6.0,)))
    two = measure(MIXTRAL_A100, Measurement(tpot_s=0.040, activated_per_layer=(7.0,)))
    # one more distinct expert per layer and step reads 32 layers x 3·4096·14336 params x 2 B = 11,274,289,152 B
    # more per step; over TPOT 0.04 s on 2 x 2,039 GB/s: 11,274,289,152 / 0.04 / 4.078e12 = 0.0691165
    assert two.decode.s_mbu - one.decode.s_mbu == pytest.approx(0.0691165, rel=1e-5)
    # dense MBU reads every expert regardless of the count
    assert two.decode.mbu == pytest.approx(one.decode.mbu)
    # S-MBU x TPOT is the bytes per step / peak: halving the measured TPOT doubles it
    fast = measure(MIXTRAL_A100, Measurement(tpot_s=0.020, activated_per_layer=(6.0,)))
    assert fast.decode.s_mbu == pytest.approx(2 * one.decode.s_mbu)
    # decode throughput is the same measurement: 16 sequences / 0.04 s = 400 tok/s
    via_tps = measure(MIXTRAL_A100, Measurement(decode_tokens_per_s=400.0, activated_per_layer=(6.0,)))
    assert via_tps.decode.s_mbu == pytest.approx(one.decode.s_mbu)


def test_expert_count_dump_gives_the_distinct_experts_per_layer(tmp_path: Path) -> None:
    counts = np.zeros((32, 8))
    counts[:, :6] = 3.0  # six experts of every layer received tokens
    counts[0, 6] = 1.0  # layer 0 a seventh
    assert activated_from_counts(counts)[0] == 7 and activated_from_counts(counts)[1] == 6
    csv_path = tmp_path / "mixtral_bs16_expert_counts.csv"
    header = "layer_id," + ",".join(f"expert_{i}" for i in range(8))
    rows = [f"{layer}," + ",".join(str(int(v)) for v in counts[layer]) for layer in range(32)]
    csv_path.write_text("\n".join([header, *rows]) + "\n")
    per_layer = load_expert_counts(csv_path)
    assert per_layer.tolist() == [7.0] + [6.0] * 31
    json_path = tmp_path / "counts.json"
    json_path.write_text(json.dumps({"expert_counts": counts.tolist()}))
    assert load_expert_counts(json_path).tolist() == per_layer.tolist()
    from_dump = measure(MIXTRAL_A100, Measurement(tpot_s=0.04, activated_per_layer=tuple(per_layer)))
    # mean 6 + 1/32 distinct experts per layer: S-MBU between the counts 6 and 7
    six = measure(MIXTRAL_A100, Measurement(tpot_s=0.04, activated_per_layer=(6.0,)))
    assert from_dump.decode.s_mbu == pytest.approx(six.decode.s_mbu + 0.0691165 / 32, rel=1e-4)


def test_measure_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="--tpot or --throughput"):
        measure(MIXTRAL_A100, Measurement())
    with pytest.raises(ScenarioError, match="exceeds the 8 experts"):
        measure(MIXTRAL_A100, Measurement(tpot_s=0.04, activated_per_layer=(9.0,)))
    with pytest.raises(ScenarioError, match="below top-k = 2"):
        measure(MIXTRAL_A100, Measurement(tpot_s=0.04, activated_per_layer=(1.5,)))
    with pytest.raises(ScenarioError, match="cover 3 layers"):
        measure(MIXTRAL_A100, Measurement(tpot_s=0.04, activated_per_layer=(1.0, 2.0, 3.0)))
    with pytest.raises(ScenarioError, match="needs the measured activated experts"):
        measure(MIXTRAL_A100, Measurement(tpot_s=0.04), convention="moecap-compat")
    bad = tmp_path / "x.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(DataFileError, match="layer_id"):
        load_expert_counts(bad)


def test_compat_family_sizes_follow_moecap_code() -> None:
    from capsim.engine.resolve import resolve_model

    qwen = compat_sizes(resolve_model("qwen1.5-moe-a2.7b"))
    # Qwen2-MoE path: shared expert 3 x d x shared_expert_intermediate_size = 3 x 2048 x 5632 = 34,603,008
    assert qwen.family == "qwen" and qwen.s_shared == 3 * 2048 * 5632
    ds = compat_sizes(resolve_model("deepseek-v2-lite"))
    # DeepSeek path: the code hard-codes 2 shared experts of 3·d·f = 2 x 3 x 2048 x 1408; 1 dense layer
    assert ds.family == "deepseek" and ds.s_shared == 2 * 3 * 2048 * 1408 and ds.dense_layers == 1


def test_cli_measure_json() -> None:
    result = CliRunner().invoke(
        app,
        [
            "measure",
            "--model",
            "mixtral-8x7b",
            "--hardware",
            "a100-sxm-80gb",
            "--gpus",
            "2",
            "--batch",
            "16",
            "--gen-len",
            "256",
            "--tpot",
            "40ms",
            "--activated-experts",
            "6.44",
            "--moecap-compat",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["decode"]["s_mbu"] == pytest.approx(0.469795, rel=1e-5)
    assert data["decode_tokens_per_s"] == pytest.approx(400.0)
    bad = CliRunner().invoke(app, ["measure", "--model", "mixtral-8x7b", "--tpot", "fast"])
    assert bad.exit_code == 1


# --------------------------------------------------------------------------------------------- options, CAP class

BASE = Scenario(model="qwen3-30b-a3b", batch=8)


def test_option_string_carries_every_predict_setting() -> None:
    o = parse_option(
        "name=kt;hardware=epyc-9654-4090;system=ktransformers-like;weight-dtype=int4;host-memory-gb=256;"
        "quant-method=Q4_K_M;prompt-len=1024",
        BASE,
    )
    assert o.name == "kt" and o.system == "ktransformers-like" and o.quant_method == "Q4_K_M"
    sc = o.scenario
    assert (sc.hardware, sc.weight_dtype, sc.host_memory_gb, sc.prompt_len, sc.batch) == (
        "epyc-9654-4090",
        "int4",
        256.0,
        1024,
        8,
    )
    assert sc.mode == "cpu-experts"  # filled in by the ktransformers-like preset
    # an explicit key wins over the preset (as `capsim predict --system` does)
    assert parse_option(
        "hardware=workstation-4090;system=ktransformers-like;mode=offload", BASE
    ).scenario.mode == ("offload")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hardware=h100-sxm;gpus=two", "gpus='two' is not an integer"),
        ("hardware=h100-sxm;weight-dtyp=int4", "did you mean weight-dtype"),
        ("gpus=2", "give hardware="),
        ("hardware=h100-sxm;hardware=b200", "given twice"),
        ("hardware=h100-sxm;system=vllm", "unknown system preset"),
        ("hardware h100-sxm", "is not KEY=VALUE"),
    ],
)
def test_bad_options_are_one_line_errors(text: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse_option(text, BASE)


def test_options_file_and_unique_names(tmp_path: Path) -> None:
    f = tmp_path / "options.toml"
    f.write_text(
        '[[option]]\nname = "server"\nhardware = "dgx-h200"\ngpus = 1\nsystem = "vllm-like"\n\n'
        '[[option]]\nname = "desktop"\nhardware = "workstation-4090"\nsystem = "moe-infinity-like"\n'
        "host_memory_gb = 128\n"
    )
    opts = load_options_file(f, BASE)
    assert [o.name for o in opts] == ["server", "desktop"]
    assert opts[1].scenario.mode == "offload" and opts[1].scenario.host_memory_gb == 128
    with pytest.raises(ScenarioError, match="two options are named 'server'"):
        collect_options(["name=server;hardware=h100-sxm"], f, BASE)
    bad = tmp_path / "bad.toml"
    bad.write_text('[[option]]\nhardware = "h100-sxm"\ngpus = "x"\n')
    with pytest.raises(DataFileError, match="gpus='x' is not an integer"):
        load_options_file(bad, BASE)


@pytest.mark.parametrize(
    ("settings", "mode", "expected"),
    [
        # published precision, everything on the accelerators: performance + accuracy
        ({"hardware": "h100-sxm"}, None, "PA"),
        # quantised below the published bf16: accuracy given up for cost and speed (SGLang-FP8/AWQ, KTransformers)
        ({"hardware": "h100-sxm", "weight_dtype": "fp8"}, None, "PC"),
        ({"hardware": "epyc-9654-4090", "weight_dtype": "int4", "mode": "cpu-experts"}, None, "PC"),
        ({"hardware": "h100-sxm", "expert_dtype": "int4"}, None, "PC"),
        # published precision with experts off the GPU: latency given up (MoE-Infinity, Fiddler)
        ({"hardware": "workstation-4090", "mode": "offload"}, None, "CA"),
        ({"hardware": "workstation-4090", "mode": "cpu-experts"}, None, "CA"),
        ({"hardware": "workstation-4090", "placement": "experts[0:24]:dram"}, None, "CA"),
        # the mode the engine resolved (e.g. offload implied by a placement) decides
        ({"hardware": "workstation-4090"}, "offload", "CA"),
        # bf16 served at its own precision is not quantisation
        ({"hardware": "h100-sxm", "weight_dtype": "bf16"}, None, "PA"),
    ],
)
def test_pa_pc_ca_labels_of_constructed_options(settings: dict, mode: str | None, expected: str) -> None:
    from dataclasses import replace

    assert cap_class(replace(BASE, **settings), "bf16", mode) == expected


RADAR_OPTIONS = [
    "--option",
    "name=GPU server (vLLM);hardware=dgx-h200;gpus=1;system=vllm-like",
    "--option",
    (
        "name=CPU-GPU (KTransformers);hardware=epyc-9654-4090;system=ktransformers-like;weight-dtype=int4;"
        "quant-method=Q4_K_M"
    ),
    "--option",
    (
        "name=offloading desktop (MoE-Infinity);hardware=workstation-4090;system=moe-infinity-like;"
        "weight-dtype=int8;host-memory-gb=64"
    ),
]


def test_radar_three_deployments_differ_on_every_axis(tmp_path: Path) -> None:
    out = tmp_path / "radar"
    result = CliRunner().invoke(
        app,
        [
            "radar",
            "--model",
            "qwen3-30b-a3b",
            "--batch",
            "8",
            "--cost-cap",
            "20000",
            "--out",
            str(out),
            "--json",
            *RADAR_OPTIONS,
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert Path(data["png"]).stat().st_size > 0 and Path(data["svg"]).stat().st_size > 0
    opts = {o["option"]["name"]: o for o in data["options"]}
    assert set(opts) == {"GPU server (vLLM)", "CPU-GPU (KTransformers)", "offloading desktop (MoE-Infinity)"}
    for axis in ("performance", "cost", "accuracy"):
        scores = [o["scores"][axis] for o in opts.values()]
        assert len({round(v, 6) for v in scores}) == 3, (axis, scores)
    server, kt, desk = (
        opts[k] for k in ("GPU server (vLLM)", "CPU-GPU (KTransformers)", "offloading desktop (MoE-Infinity)")
    )
    # accuracy moves with precision (one published study, same harness): 78.7 bf16, 71.1 Q8_0, 69.1 Q4_K_M
    assert server["accuracy"] == pytest.approx(0.787)
    assert desk["accuracy"] == pytest.approx(0.711) and kt["accuracy"] == pytest.approx(0.691)
    # cost axis: linear from 0, clipped at the 20,000 cap: 20 + (20,000 - min(v, 20,000)) / 20,000 x 80
    assert kt["scores"]["cost"] == pytest.approx(20 + (20000 - kt["cost"]) / 20000 * 80)
    assert server["scores"]["cost"] == pytest.approx(20.0)
    assert kt["cost_is_lower_bound"] and desk["cost_is_lower_bound"]
    # MoE-CAP classes: the GPU server serves bf16 all on the GPU (PA), the other two are quantised (PC)
    assert [o["option"]["cap_class"] for o in (server, kt, desk)] == ["PA", "PC", "PC"]
    # performance: the server is fastest, the offloading desktop slowest
    assert server["tpot_s"] < kt["tpot_s"] < desk["tpot_s"]


def test_compare_with_options_prices_whole_systems(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "compare",
            "--model",
            "qwen3-30b-a3b",
            "--batch",
            "8",
            "--json",
            "--grid-gco2-kwh",
            "400",
            *RADAR_OPTIONS,
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    server = next(o for o in data["options"] if o["name"] == "GPU server (vLLM)")
    purchase = server["cost"]["rates"]["purchase"]
    parts = {p["part"]: p["total_usd"] for p in purchase["parts"]}
    # DGX H200 from parts: 8 x 35,000 + 2 x 10,710 + 2,048 GB x 4 + platform (10,908 + 563 + 875 + 463 + 1,200
    # + 1,485 = 15,494) = 280,000 + 21,420 + 8,192 + 15,494 = 325,106
    assert purchase["total_usd"] == pytest.approx(325_106)
    assert parts["nics"] == 10_908 and parts["xeon-8480"] == 21_420
    energy = server["cost"]["full_load"]["energy"]
    # gCO2 per token = J/token / 3.6e6 x PUE 1.2 x 400 g/kWh
    assert energy["decode"]["gco2_per_token"] == pytest.approx(
        energy["j_per_output_token"] / 3.6e6 * 1.2 * 400, rel=1e-9
    )
    # 7 of the DGX's 8 GPUs are unused by a 1-GPU option: they idle at the sourced 80.3 W each
    unused = next(p for p in server["cost"]["rates"]["power"]["parts"] if p["role"] == "accelerator-unused")
    assert unused["count"] == 7 and unused["idle_w_each"] == 80.3


def test_plan_searches_the_batch_of_deployment_options() -> None:
    result = CliRunner().invoke(
        app,
        [
            "plan",
            "--model",
            "qwen3-30b-a3b",
            "--slo-tpot",
            "50ms",
            "--max-batch",
            "16",
            "--json",
            "--option",
            (
                "name=kt;hardware=epyc-9654-4090;system=ktransformers-like;weight-dtype=int4;"
                "quant-method=Q4_K_M"
            ),
            "--option",
            "name=server;hardware=dgx-h200;gpus=1;system=vllm-like",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {p["option"] for p in data["best"]} == {"kt", "server"}
    kt = next(p for p in data["best"] if p["option"] == "kt")
    # the KTransformers box is a lower bound (no platform price) and its accuracy the published Q4_K_M figure
    assert kt["purchase_is_lower_bound"] and data["accuracy"]["kt"]["value"] == pytest.approx(69.1)
    # both options' accuracy from the same evaluation: the server's bf16 baseline of that study, 78.7
    assert data["accuracy"]["server"]["value"] == pytest.approx(78.7)


def test_moecap_records_use_the_per_pass_formula_and_skip_rules(tmp_path: Path) -> None:
    from capsim.engine.measure import load_moecap_records

    recs = [
        # two decode passes identical to the hand-computed case above: S-MBU 0.469795 each
        {
            "forward_mode": "decode",
            "expert_activation": 6.44,
            "batch_size": 16,
            "seq_lens_sum": 10240,
            "latency": 0.04,
        },
        {
            "forward_mode": "decode",
            "expert_activation": 6.44,
            "batch_size": 16,
            "seq_lens_sum": 10240,
            "latency": 0.04,
        },
        # skipped as MoE-CAP's code skips them: no activation, negative activation, a warm-up prefill probe
        {"forward_mode": "decode", "batch_size": 16, "seq_lens_sum": 10240, "latency": 0.04},
        {
            "forward_mode": "decode",
            "expert_activation": -1,
            "batch_size": 16,
            "seq_lens_sum": 10240,
            "latency": 0.04,
        },
        {
            "forward_mode": "prefill",
            "expert_activation": 8,
            "batch_size": 1,
            "seq_lens_sum": 5,
            "latency": 0.01,
        },
    ]
    path = tmp_path / "detailed_results_x.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    rec = load_moecap_records(path)
    assert rec.decode_latency_s.size == 2 and rec.prefill_latency_s.size == 0 and rec.skipped == 3
    r = measure(MIXTRAL_A100, Measurement(), convention="moecap-compat", records=rec)
    assert r.decode.s_mbu == pytest.approx(0.469795, rel=1e-5)
    assert r.decode.s_mfu == pytest.approx(0.0123893, rel=1e-5)
    assert r.tpot_s == pytest.approx(0.04)
    # the unweighted mean over passes: a second pass twice as slow halves its own S-MBU only
    recs[1]["latency"] = 0.08
    path.write_text("\n".join(json.dumps(x) for x in recs) + "\n")
    r2 = measure(MIXTRAL_A100, Measurement(), convention="moecap-compat", records=load_moecap_records(path))
    assert r2.decode.s_mbu == pytest.approx((0.469795 + 0.469795 / 2) / 2, rel=1e-5)
    with pytest.raises(ScenarioError, match="read with --moecap-compat"):
        measure(MIXTRAL_A100, Measurement(tpot_s=0.04), records=rec)


def test_published_quantised_accuracy_moves_with_precision_and_cites_its_source() -> None:
    from capsim.models.accuracy import load_accuracy_db

    db = load_accuracy_db()
    # Neural Magic's model card: OpenLLM v1 average 79.93 unquantised, 79.04 for its FP8 checkpoint
    bf16 = db.lookup("mixtral-8x22b", "open_llm_leaderboard", native_dtype="bf16")
    fp8 = db.lookup("mixtral-8x22b", "open_llm_leaderboard", weight_dtype="fp8", native_dtype="bf16")
    assert (bf16.value, bf16.status) == (79.93, "published")
    assert fp8.status == "published-delta" and fp8.value == pytest.approx(79.04)
    assert "neuralmagic/Mixtral-8x22B-Instruct-v0.1-FP8" in fp8.caveat
    # Qwen3-30B-A3B MMLU ladder of one study: FP16 78.7, Q8_0 71.1, Q4_K_M 69.1 (joshua8.ai)
    q = {
        d: db.lookup("qwen3-30b-a3b", "mmlu", weight_dtype=d, native_dtype="bf16", variant=v).value
        for d, v in ((None, None), ("int8", None), ("int4", None))
    }
    assert q["int8"] == pytest.approx(71.1) and q["int4"] == pytest.approx(69.1)
    # an unpublished precision is unknown, not the bf16 score
    assert (
        db.lookup("mixtral-8x22b", "open_llm_leaderboard", weight_dtype="int4", native_dtype="bf16").value
        is None
    )
