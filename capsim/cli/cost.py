"""CLI commands ``capsim compare``, ``capsim plan`` and ``capsim radar`` (formatting only).

The work happens in :mod:`capsim.economics.plan` (options, search), :mod:`capsim.economics.cost` (prices, energy, $/Mtok),
:mod:`capsim.models.accuracy` and :mod:`capsim.report.plots`; JSON and CSV come from the results' ``to_dict`` /
``to_row``. Cost formulas and the source of every default: docs/cost.md.
"""

from __future__ import annotations

import csv
import math
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from capsim import units
from capsim.cli._console import err_console, out_console, print_json
from capsim.cli.hardware import HardwareDbOption, OverrideOption, load_db
from capsim.economics.inputs import CostInputs
from capsim.engine.scenario import Scenario
from capsim.errors import ScenarioError

if TYPE_CHECKING:
    from capsim.economics.plan import Basis, Objective, Option, PlanPoint

_SCENARIO_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(Scenario)}
_COST_FIELDS = {f.name: f for f in fields(CostInputs)}
_PROGRESS_MIN_POINTS = 50
"""plan shows a progress bar when it evaluates at least this many points."""


def _scenario_help(name: str) -> str:
    return Scenario.help_for(name)


def _cost_help(name: str) -> str:
    f = _COST_FIELDS[name]
    kind = "assumption" if f.metadata.get("assumption") else "source"
    return f"{f.metadata['help']} (default {f.default:g}; {kind}: {f.metadata['source']})"


# Options shared by the three commands. Declared once so that their help and defaults cannot drift.
PriceOption = Annotated[
    list[str] | None,
    typer.Option(
        "--price",
        metavar="ID=USD",
        help="override a purchase price: accelerator/CPU/system id = USD each, DRAM id = USD/GB, "
        "SSD id = USD/TB "
        "(repeatable)",
        show_default=False,
    ),
]
CloudOption = Annotated[
    list[str] | None,
    typer.Option(
        "--cloud",
        metavar="ID=USD_PER_HOUR",
        help="override a cloud price: accelerator id = USD per device-hour, system id = USD per system-hour "
        "(repeatable)",
        show_default=False,
    ),
]
PricesFileOption = Annotated[
    Path | None,
    typer.Option(
        "--prices",
        metavar="FILE",
        help="TOML file of cost inputs and purchase_usd / cloud_usd_per_hour tables (see docs/cost.md); "
        "command-line values win",
        show_default=False,
    ),
]
ElectricityOption = Annotated[
    float | None,
    typer.Option("--electricity-usd-kwh", help=_cost_help("electricity_usd_per_kwh"), show_default=False),
]
PueOption = Annotated[float | None, typer.Option("--pue", help=_cost_help("pue"), show_default=False)]
LifetimeOption = Annotated[
    float | None, typer.Option("--lifetime-years", help=_cost_help("lifetime_years"), show_default=False)
]
UtilizationOption = Annotated[
    float | None, typer.Option("--utilization", help=_cost_help("utilization"), show_default=False)
]
IdleOption = Annotated[
    float | None,
    typer.Option("--idle-power-fraction", help=_cost_help("idle_power_fraction"), show_default=False),
]
BasisOption = Annotated[
    str,
    typer.Option(
        "--basis", help="rank by owned cost (amortised purchase + energy) or rented cost (cloud $/h)"
    ),
]
BenchmarkOption = Annotated[
    str,
    typer.Option(
        "--benchmark",
        help="published accuracy benchmark shown (mmlu, gsm8k, humaneval, ...; see docs/cost.md)",
    ),
]
SystemOption = Annotated[
    list[str] | None,
    typer.Option(
        help="comma-separated system ids, added to --hardware (capsim hardware list)", show_default=False
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON object instead of tables")]
DeploymentOptionsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--option",
        metavar="KEY=VALUE;...",
        help="a deployment option carrying any predict setting, e.g. "
        "'name=kt;hardware=epyc-9654-4090;system=ktransformers-like;weight-dtype=int4;quant-method=Q4_K_M' "
        "(repeatable; keys: name, system, quant-method and every predict option; see docs/cap.md)",
        show_default=False,
    ),
]
OptionsFileOption = Annotated[
    Path | None,
    typer.Option(
        "--options",
        metavar="FILE",
        help="TOML file of [[option]] tables with the same keys as --option",
        show_default=False,
    ),
]
HostMemoryOption = Annotated[
    float | None, typer.Option(help=_scenario_help("host_memory_gb"), show_default=False)
]
GridOption = Annotated[
    float | None,
    typer.Option(
        "--grid-gco2-kwh",
        help="grid carbon intensity in gCO2 per kWh; adds gCO2 per output token (optional, no default)",
        show_default=False,
    ),
]


def deployment_options(option: list[str] | None, options_file: Path | None, base: Scenario) -> list[Any]:
    """The ``--option`` / ``--options`` deployments over ``base`` (the command's own flags)."""
    from capsim.economics.options import collect_options

    return collect_options(option, options_file, base)


def option_ids(hardware: list[str] | None, system: list[str] | None, db: Any) -> list[str]:
    """The ids of ``--hardware`` then ``--system`` (comma-separated, deduplicated); ``--system`` ids must
    name system entries."""
    from capsim.economics.plan import split_ids
    from capsim.hardware.entries import entry_kind

    systems = split_ids(system) if system else []
    for sid in systems:
        kind = entry_kind(db.get(sid))
        if kind != "system":
            raise ScenarioError(
                f"--system {sid}: a {kind} entry, not a system; pass it with --hardware "
                "(capsim hardware list --kind system shows the systems)"
            )
    return split_ids([*(hardware or []), *systems])


def _default_radar_stem(model_ids: list[str], hw_ids: list[str], batch: int) -> Path:
    """``capsim-radar-<model>-<hardware>-b<batch>`` in the current folder (the inputs that change the picture;
    a short hash stands in for long id lists); ``-2``, ``-3`` … are appended rather than overwrite an
    existing radar."""
    import hashlib

    models = model_ids[0] if len(model_ids) == 1 else f"{len(model_ids)}models"
    hardware = (
        "-".join(hw_ids)
        if len(hw_ids) <= 3
        else f"{len(hw_ids)}hw-" + hashlib.sha256(",".join(hw_ids).encode()).hexdigest()[:8]
    )
    base = f"capsim-radar-{models}-{hardware}-b{batch}".replace("/", "_")
    stem, n = Path(base), 1
    while stem.with_suffix(".png").exists() or stem.with_suffix(".svg").exists():
        n += 1
        stem = Path(f"{base}-{n}")
    return stem


def check_output_file(path: Path, option: str, example: str) -> None:
    """Fail before any work when ``path`` cannot be an output file (a directory, or under a file);
    ``example`` is a file name to suggest inside a directory."""
    if path.is_dir():
        raise ScenarioError(f"{option} {path} is a directory; give a file name, e.g. {path / example}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ScenarioError(
                    f"{option} {path}: {parent} is a file, not a directory; choose another path"
                )
            break


def cost_inputs(
    prices_file: Path | None,
    price: list[str] | None,
    cloud: list[str] | None,
    electricity_usd_kwh: float | None,
    pue: float | None,
    lifetime_years: float | None,
    utilization: float | None,
    idle_power_fraction: float | None,
    grid_gco2_kwh: float | None = None,
) -> CostInputs:
    """CostInputs from the defaults, then the ``--prices`` file, then the command-line options."""
    from capsim.economics.cost import load_cost_file, parse_price_assignments  # numpy: not at start-up

    inputs = CostInputs()
    if prices_file is not None:
        inputs = inputs.override(**load_cost_file(prices_file))
    scalars = {
        "electricity_usd_per_kwh": electricity_usd_kwh,
        "pue": pue,
        "lifetime_years": lifetime_years,
        "utilization": utilization,
        "idle_power_fraction": idle_power_fraction,
        "grid_gco2_per_kwh": grid_gco2_kwh,
    }
    return inputs.override(
        **{k: v for k, v in scalars.items() if v is not None},
        purchase_usd=parse_price_assignments(price, "--price"),
        cloud_usd_per_hour=parse_price_assignments(cloud, "--cloud"),
    )


# --------------------------------------------------------------------------------------------- formatting


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds / units.MS:,.1f}ms" if seconds < 1.0 else f"{seconds:,.2f}s"


def _usd(value: float | None) -> str:
    """Three significant figures below $100 ($0.00912, $0.109, $12.3), whole dollars above."""
    if value is None or not math.isfinite(value):
        return "missing"
    if value >= 100:
        return f"${value:,.0f}"
    return f"${value:#.3g}".rstrip(".")


def _print_cost_basis(inputs: CostInputs) -> None:
    console = out_console()
    console.print("[bold]cost basis[/bold] (docs/cost.md)")
    for item in inputs.basis():
        tag = "override" if item["overridden"] else ("assumption" if item["assumption"] else "sourced")
        date = f", {item['date']}" if item["date"] else ""
        console.print(
            escape(f"  {item['name']} = {item['value']:g} {item['unit']} [{tag}{date}] — {item['source']}"),
            soft_wrap=True,
        )
    if inputs.grid_gco2_per_kwh is not None:
        console.print(escape(f"  grid_gco2_per_kwh = {inputs.grid_gco2_per_kwh:g} gCO2/kWh [user input]"))
    for label, prices in (
        ("price override", inputs.purchase_usd),
        ("cloud override", inputs.cloud_usd_per_hour),
    ):
        for key, value in prices.items():
            console.print(f"  {label}: {key} = {value:g}")


def _print_parts_notes(options: Any) -> None:
    console = out_console()
    seen: set[str] = set()
    for o in options:
        if o.cost is None:
            continue
        rates = o.cost.rates
        for text in [f"price of {p.part}: {p.missing}" for p in rates.purchase.missing] + [
            f"power of {p.part}: {p.missing}" for p in rates.power.missing
        ]:
            if text not in seen:
                seen.add(text)
                console.print(
                    f"  [yellow]missing[/yellow] {escape(o.hardware)}: {escape(text)}", soft_wrap=True
                )
        if rates.owned_missing and rates.owned_missing not in seen:
            seen.add(rates.owned_missing)
            console.print(
                f"  [yellow]no owned cost[/yellow] {escape(o.hardware)}: {escape(rates.owned_missing)}",
                soft_wrap=True,
            )


def render_comparison(result: Any) -> None:
    """Rich table of a :class:`capsim.economics.plan.Comparison`, then the notes behind its numbers."""
    console = out_console()
    first = result.options[0]
    dtypes = sorted({o.weight_dtype for o in result.options})
    title = (
        f"{result.model} · batch {first.batch} (full load) · ranked by {result.objective} ({result.basis})"
        + (f" · weights {dtypes[0]}" if len(dtypes) == 1 else "")
    )
    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        collapse_padding=True,
        caption="in/out$/M = owned USD per million input/output tokens at full load; user$/M = output "
        "at batch 1; rent$/M = output at cloud prices; free = memory headroom per device",
        caption_justify="left",
    )
    named = any(o.name for o in result.options)
    for col in (
        "option" if named else "hardware",
        "n",
        "CAP",
        "purchase",
        "in$/M",
        "out$/M",
        "user$/M",
        "rent$/M",
        "TPOT",
        "TTFT",
        "tok/s",
        "J/tok",
        "free",
        result.benchmark.upper(),
    ):
        if col == "option":  # option names are free text: wrap them rather than squeeze the numbers
            table.add_column(col, justify="left", max_width=20, overflow="fold")
        else:
            table.add_column(col, justify="left" if col == "hardware" else "right", no_wrap=True)
    for o in result.options:
        if not o.ok:
            table.add_row(
                escape(o.label),
                str(o.devices or "auto"),
                o.cap_class,
                f"[red]{'no fit' if 'does not fit' in o.problem else 'n/a'}[/red]",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                escape(o.accuracy.label()),
            )
            continue
        full, user = o.cost.full_load, o.cost.per_user
        joules = None if full.energy is None else full.energy.decode.j_per_token
        table.add_row(
            escape(o.label),
            str(o.devices),
            o.cap_class,
            escape(o.cost.rates.purchase.label()),
            _usd(full.owned.usd_per_mtok_input),
            _usd(full.owned.usd_per_mtok_output),
            _usd(user.owned.usd_per_mtok_output),
            _usd(full.rented.usd_per_mtok_output),
            _ms(o.tpot_s),
            _ms(o.ttft_s),
            f"{o.throughput:,.0f}" if o.throughput else "n/a",
            "n/a"
            if joules is None
            else (("≥" if full.energy.decode.is_lower_bound else "") + f"{joules:.3g}"),
            f"{o.headroom_gb:,.0f}GB",
            escape(o.accuracy.label()),
        )
    console.print(table)
    for o in result.options:
        if not o.ok:
            console.print(f"  [red]{escape(o.label)}[/red]: {escape(o.problem)}", soft_wrap=True)
        elif o.prediction.memory.waves > 1:
            console.print(
                f"  [yellow]{o.hardware}[/yellow]: the KV cache holds {o.prediction.memory.max_batch} "
                f"sequences; batch {o.batch} runs in {o.prediction.memory.waves} waves",
                soft_wrap=True,
            )
    seen_acc: set[str] = set()
    for o in result.options:
        acc = o.accuracy
        lines = []
        if acc.value is None:
            if acc.status == "missing":
                lines.append(f"accuracy: {acc.caveat} for {result.model} (missing, not estimated)")
            else:
                lines.append(f"accuracy ({o.label}): {acc.caveat} ({acc.status}, not estimated)")
        else:
            soft = "; (?) = uncertain in the reference" if acc.soft else ""
            setting = f" {acc.setting}" if acc.setting else ""
            lines.append(f"accuracy: {acc.benchmark}{setting} ({acc.variant}) — {acc.source}{soft}")
            if acc.caveat:
                lines.append(f"  Δ {o.label}: {acc.caveat}")
        for text in lines:
            if text not in seen_acc:
                seen_acc.add(text)
                console.print(escape(text), soft_wrap=True)
    if named:
        for o in result.options:
            if o.system or o.settings:
                console.print(
                    escape(
                        f"  {o.label}: {o.hardware}"
                        + (f", system {o.system}" if o.system else "")
                        + "".join(f", {k}={v}" for k, v in o.settings.items() if k != "hardware")
                    ),
                    soft_wrap=True,
                )
    console.print(
        "CAP = MoE-CAP class: PA performance+accuracy, PC performance+cost (quantised), "
        "CA cost+accuracy (offloaded); J/tok = joules per output token at full load (docs/cap.md)",
        soft_wrap=True,
    )
    console.print(
        "cost: prefill time charged to input tokens, decode time to output tokens; "
        "'≥' = lower bound (a part has no price); ? = a soft price",
        soft_wrap=True,
    )
    _print_parts_notes(result.options)
    _print_cost_basis(result.inputs)


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """Write flat records to ``path`` (header from the first record)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    except OSError as exc:
        raise ScenarioError(f"cannot write {path} ({exc.strerror}); choose another --csv path") from None


def render_plan(result: Any) -> None:
    """Rich tables of a :class:`capsim.economics.plan.PlanResult`."""
    console = out_console()
    slo = f"TPOT ≤ {_ms(result.slo.tpot_s)}" + (
        f", TTFT ≤ {_ms(result.slo.ttft_s)}" if result.slo.ttft_s else ""
    )
    volume = f" · {result.tokens_per_day:,.0f} output tokens/day" if result.tokens_per_day else ""
    budget = f" · budget ${result.budget_usd:,.0f}" if result.budget_usd else ""
    console.print(
        f"[bold]{result.model}[/bold]: {slo}{volume}{budget} · {result.basis} cost · "
        f"{len(result.points)} points evaluated, {len(result.feasible)} meet the SLOs",
        soft_wrap=True,
    )
    if not result.best:
        console.print(
            "[red]no priced configuration meets the SLOs[/red]"
            + (" within the budget" if result.budget_usd else "")
            + "; relax the SLOs, raise the budget or add prices (--price)"
        )
    first = next(iter(result.accuracy.values()), None)
    bench = first.benchmark.upper() if first else "accuracy"
    for title, rows in (
        ("cheapest configurations", result.best),
        ("Pareto front: cost vs TPOT", result.pareto),
    ):
        if not rows:
            continue
        table = Table(
            title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, collapse_padding=True
        )
        for col in (
            "hardware",
            "n",
            "weights",
            "batch",
            "replicas",
            "purchase",
            "out$/M",
            "$/day",
            "TPOT",
            "TTFT",
            "tok/s/replica",
            "util",
            bench,
        ):
            table.add_column(col, justify="left" if col in ("hardware", "weights") else "right", no_wrap=True)
        for p in rows:
            purchase = (
                "missing"
                if p.purchase_usd is None
                else (("≥ " if p.purchase_is_lower_bound else "") + f"${p.purchase_usd:,.0f}")
            )
            table.add_row(
                escape(f"{p.option} ({p.hardware})" if p.option else p.hardware),
                str(p.devices),
                p.weight_dtype,
                str(p.batch),
                str(p.replicas),
                purchase,
                _usd(p.usd_per_mtok),
                _usd(p.usd_per_day),
                _ms(p.tpot_s),
                _ms(p.ttft_s),
                f"{p.sustained_tokens_per_s:,.0f}",
                f"{p.utilization:.0%}",
                escape(result.accuracy[p.option or p.weight_dtype].label())
                if (p.option or p.weight_dtype) in result.accuracy
                else "",
            )
        console.print(table)
    if result.unpriced:
        console.print(
            f"meet the SLOs but have no {result.basis} price (not ranked): {', '.join(result.unpriced)}",
            soft_wrap=True,
        )
    if result.skipped:
        console.print(
            f"{len(result.skipped)} configurations skipped (do not fit or cannot be built); "
            "--json lists each with its reason"
        )
    console.print(
        "out$/M: all-in USD per million generated tokens (prefill + decode busy time); n = devices per replica",
        soft_wrap=True,
    )
    for dtype, acc in result.accuracy.items():
        if acc.value is None:
            console.print(
                escape(f"accuracy ({dtype}): {acc.caveat} (missing, not estimated)"), soft_wrap=True
            )
        elif acc.caveat:
            console.print(escape(f"accuracy ({dtype}): * {acc.caveat}"), soft_wrap=True)
    _print_cost_basis(result.inputs)


# --------------------------------------------------------------------------------------------- commands


def register(app: typer.Typer) -> None:
    """Add ``compare``, ``plan`` and ``radar`` to the top-level app."""

    @app.command(
        help="Procurement table: one model on several hardware options, with purchase cost, $/Mtok "
        "(input and output, per user and at full load, owned and rented), TPOT, TTFT, throughput, "
        "memory headroom and published accuracy, ranked by an objective."
    )
    def compare(
        model: Annotated[str, typer.Option(help=_scenario_help("model"))],
        hardware: Annotated[
            list[str] | None,
            typer.Option(help="comma-separated accelerator or system ids (capsim hardware list); repeatable"),
        ] = None,
        system: SystemOption = None,
        gpus: Annotated[
            str,
            typer.Option(
                help="devices per option, or 'auto' (fewest of 1, 2, 4, 8 that fit; all of a system)"
            ),
        ] = "auto",
        batch: Annotated[
            int, typer.Option(help=_scenario_help("batch") + " (full load)")
        ] = _SCENARIO_DEFAULTS["batch"],
        prompt_len: Annotated[int, typer.Option(help=_scenario_help("prompt_len"))] = _SCENARIO_DEFAULTS[
            "prompt_len"
        ],
        gen_len: Annotated[int, typer.Option(help=_scenario_help("gen_len"))] = _SCENARIO_DEFAULTS["gen_len"],
        weight_dtype: Annotated[str | None, typer.Option(help=_scenario_help("weight_dtype"))] = None,
        kv_dtype: Annotated[str, typer.Option(help=_scenario_help("kv_dtype"))] = _SCENARIO_DEFAULTS[
            "kv_dtype"
        ],
        objective: Annotated[
            str, typer.Option(help="rank by cost_per_mtok (output, full load), tpot, throughput or purchase")
        ] = "cost_per_mtok",
        basis: BasisOption = "owned",
        benchmark: BenchmarkOption = "mmlu",
        option: DeploymentOptionsOption = None,
        options_file: OptionsFileOption = None,
        host_memory_gb: HostMemoryOption = None,
        grid_gco2_kwh: GridOption = None,
        price: PriceOption = None,
        cloud: CloudOption = None,
        prices: PricesFileOption = None,
        electricity_usd_kwh: ElectricityOption = None,
        pue: PueOption = None,
        lifetime_years: LifetimeOption = None,
        utilization: UtilizationOption = None,
        idle_power_fraction: IdleOption = None,
        hardware_db: HardwareDbOption = None,
        override: OverrideOption = False,
        json_out: JsonFlag = False,
        csv_path: Annotated[
            Path | None,
            typer.Option("--csv", help="also write one CSV row per option to PATH", show_default=False),
        ] = None,
    ) -> None:
        from capsim.economics.plan import compare as run_compare
        from capsim.economics.plan import parse_gpus

        if csv_path is not None:
            check_output_file(csv_path, "--csv", "compare.csv")
        inputs = cost_inputs(
            prices,
            price,
            cloud,
            electricity_usd_kwh,
            pue,
            lifetime_years,
            utilization,
            idle_power_fraction,
            grid_gco2_kwh,
        )
        db = load_db(hardware_db, override)
        base = Scenario(
            model=model,
            gpus=parse_gpus(gpus),
            batch=batch,
            prompt_len=prompt_len,
            gen_len=gen_len,
            weight_dtype=weight_dtype,
            kv_dtype=kv_dtype,
            host_memory_gb=host_memory_gb,
        )
        deployments = deployment_options(option, options_file, base)
        result = run_compare(
            model,
            option_ids(hardware, system, db) if (hardware or system or not deployments) else [],
            hardware_db=db,
            gpus=parse_gpus(gpus),
            batch=batch,
            prompt_len=prompt_len,
            gen_len=gen_len,
            weight_dtype=weight_dtype,
            kv_dtype=kv_dtype,
            objective=cast("Objective", objective),
            basis=cast("Basis", basis),
            benchmark=benchmark,
            inputs=inputs,
            deployments=deployments,
            host_memory_gb=host_memory_gb,
        )
        runs = any(o.ok for o in result.options)
        if csv_path is not None and runs:  # a failed run (exit 1) leaves no file behind
            write_csv([o.to_row() for o in result.options], csv_path)
        if json_out:
            print_json(result.to_dict())
        else:
            render_comparison(result)
        if csv_path is not None and runs:
            err_console().print(f"CSV written to {csv_path}")
        if not runs:
            # the same contract as radar and fit: no option runs = exit 1 (after showing why)
            raise ScenarioError(f"no option runs {result.model}; the reasons are in the table above")

    @app.command(
        help="Search hardware x device count x weight precision x batch for the cheapest deployments "
        "that meet TPOT (and TTFT) SLOs, with the Pareto front of cost vs TPOT."
    )
    def plan(
        model: Annotated[str, typer.Option(help=_scenario_help("model"))],
        slo_tpot: Annotated[
            str, typer.Option(help="TPOT target per decode step, with its unit: 50ms, 0.05s, 200us")
        ],
        slo_ttft: Annotated[
            str | None,
            typer.Option(help="TTFT target (the whole batch's prefill), e.g. 1s", show_default=False),
        ] = None,
        budget: Annotated[
            float | None,
            typer.Option(help="maximum purchase cost in USD of all replicas", show_default=False),
        ] = None,
        tokens_per_day: Annotated[
            float | None,
            typer.Option(
                help="generated tokens per day to serve; sets the number of replicas and their utilisation",
                show_default=False,
            ),
        ] = None,
        hardware: Annotated[
            list[str] | None,
            typer.Option(
                help="comma-separated ids to search (default: every accelerator and GPU system)",
                show_default=False,
            ),
        ] = None,
        weight_dtypes: Annotated[
            str,
            typer.Option(
                help="comma-separated weight precisions to try ('native' = the published checkpoint)"
            ),
        ] = "native,fp8,int4",
        prompt_len: Annotated[int, typer.Option(help=_scenario_help("prompt_len"))] = _SCENARIO_DEFAULTS[
            "prompt_len"
        ],
        gen_len: Annotated[int, typer.Option(help=_scenario_help("gen_len"))] = _SCENARIO_DEFAULTS["gen_len"],
        kv_dtype: Annotated[str, typer.Option(help=_scenario_help("kv_dtype"))] = _SCENARIO_DEFAULTS[
            "kv_dtype"
        ],
        max_batch: Annotated[
            int | None,
            typer.Option(help="largest batch tried (default: what the KV cache holds)", show_default=False),
        ] = None,
        top: Annotated[int, typer.Option(help="configurations listed")] = 5,
        basis: BasisOption = "owned",
        benchmark: BenchmarkOption = "mmlu",
        option: DeploymentOptionsOption = None,
        options_file: OptionsFileOption = None,
        host_memory_gb: HostMemoryOption = None,
        grid_gco2_kwh: GridOption = None,
        plot: Annotated[
            Path | None,
            typer.Option(
                help="also write the cost-vs-TPOT Pareto plot to PATH (.png and .svg)", show_default=False
            ),
        ] = None,
        price: PriceOption = None,
        cloud: CloudOption = None,
        prices: PricesFileOption = None,
        electricity_usd_kwh: ElectricityOption = None,
        pue: PueOption = None,
        lifetime_years: LifetimeOption = None,
        utilization: UtilizationOption = None,
        idle_power_fraction: IdleOption = None,
        hardware_db: HardwareDbOption = None,
        override: OverrideOption = False,
        json_out: JsonFlag = False,
    ) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from capsim.economics.plan import SLO, parse_duration, split_ids
        from capsim.economics.plan import plan as run_plan

        slo = SLO(
            parse_duration(slo_tpot, "--slo-tpot"),
            None if slo_ttft is None else parse_duration(slo_ttft, "--slo-ttft"),
        )
        if top < 1:
            raise ScenarioError(f"--top must be >= 1, got {top}")
        if plot is not None:
            check_output_file(plot, "--plot", "pareto.png")
        inputs = cost_inputs(
            prices,
            price,
            cloud,
            electricity_usd_kwh,
            pue,
            lifetime_years,
            utilization,
            idle_power_fraction,
            grid_gco2_kwh,
        )
        deployments = deployment_options(
            option,
            options_file,
            Scenario(
                model=model,
                prompt_len=prompt_len,
                gen_len=gen_len,
                kv_dtype=kv_dtype,
                host_memory_gb=host_memory_gb,
            ),
        )
        console = err_console()
        with Progress(
            TextColumn("searching"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            # off a terminal rich still ends the live display with a newline: stderr must stay one error line
            disable=not console.is_terminal,
        ) as bar:
            task = bar.add_task("search", total=None, visible=False)

            def progress(done: int, total: int) -> None:
                if total >= _PROGRESS_MIN_POINTS:
                    bar.update(task, completed=done, total=total, visible=True)

            result = run_plan(
                model,
                slo,
                hardware_db=load_db(hardware_db, override),
                hardware=split_ids(hardware) if hardware else None,
                weight_dtypes=split_ids(weight_dtypes, "--weight-dtypes", "native,fp8"),
                prompt_len=prompt_len,
                gen_len=gen_len,
                kv_dtype=kv_dtype,
                max_batch=max_batch,
                budget_usd=budget,
                tokens_per_day=tokens_per_day,
                basis=cast("Basis", basis),
                inputs=inputs,
                benchmark=benchmark,
                top=top,
                progress=progress,
                deployments=deployments,
                host_memory_gb=host_memory_gb,
            )
        paths = _plan_plot(result, plot) if plot is not None else None
        if json_out:
            payload = result.to_dict()
            if paths:
                payload["plot"] = [str(p) for p in paths]
            print_json(payload)
        else:
            render_plan(result)
            if paths:
                out_console().print(f"Pareto plot: {paths[0]} and {paths[1]}")

    @app.command(
        help="The CAP radar (cost, accuracy, performance; normalised as MoE-CAP's draw_radar.py, "
        "floor 20) of one model on several hardware options, to PNG and SVG; --pareto also writes "
        "the cost-vs-TPOT Pareto plot over batch sizes."
    )
    def radar(
        model: Annotated[str, typer.Option(help="model id, or comma-separated ids to compare models too")],
        hardware: Annotated[
            list[str] | None, typer.Option(help="comma-separated accelerator or system ids; repeatable")
        ] = None,
        system: SystemOption = None,
        gpus: Annotated[str, typer.Option(help="devices per option, or 'auto'")] = "auto",
        batch: Annotated[int, typer.Option(help=_scenario_help("batch"))] = _SCENARIO_DEFAULTS["batch"],
        prompt_len: Annotated[int, typer.Option(help=_scenario_help("prompt_len"))] = _SCENARIO_DEFAULTS[
            "prompt_len"
        ],
        gen_len: Annotated[int, typer.Option(help=_scenario_help("gen_len"))] = _SCENARIO_DEFAULTS["gen_len"],
        weight_dtype: Annotated[str | None, typer.Option(help=_scenario_help("weight_dtype"))] = None,
        benchmark: BenchmarkOption = "mmlu",
        cost_axis: Annotated[
            str,
            typer.Option(
                help="cost axis: purchase (USD, as MoE-CAP), power (W, TDP sum) or usd_per_mtok "
                "(owned, output)"
            ),
        ] = "purchase",
        cost_cap: Annotated[
            float | None,
            typer.Option(
                help="cost at which the cost axis reaches its floor (MoE-CAP's second-to-last tick); "
                "default: the "
                "largest cost shown",
                show_default=False,
            ),
        ] = None,
        out: Annotated[
            Path | None,
            typer.Option(
                help="output path; .png and .svg are both written (default: capsim-radar-<model>)",
                show_default=False,
            ),
        ] = None,
        pareto: Annotated[
            bool, typer.Option("--pareto", help="also write the cost-vs-TPOT Pareto plot")
        ] = False,
        option: DeploymentOptionsOption = None,
        options_file: OptionsFileOption = None,
        host_memory_gb: HostMemoryOption = None,
        grid_gco2_kwh: GridOption = None,
        json_out: Annotated[
            bool, typer.Option("--json", help="also print the radar's data (raw values and scores) as JSON")
        ] = False,
        price: PriceOption = None,
        cloud: CloudOption = None,
        prices: PricesFileOption = None,
        electricity_usd_kwh: ElectricityOption = None,
        pue: PueOption = None,
        lifetime_years: LifetimeOption = None,
        utilization: UtilizationOption = None,
        idle_power_fraction: IdleOption = None,
        hardware_db: HardwareDbOption = None,
        override: OverrideOption = False,
    ) -> None:
        from capsim.economics.plan import compare as run_compare
        from capsim.economics.plan import parse_gpus, split_ids

        if out is not None:
            check_output_file(out, "--out", "radar.png")
        if cost_axis not in _COST_AXES:
            raise ScenarioError(f"--cost-axis {cost_axis!r} is not one of {', '.join(_COST_AXES)}")
        if cost_cap is not None and not 0 < cost_cap < float("inf"):
            # inf would make every score inf/inf = NaN
            raise ScenarioError(f"--cost-cap must be a positive finite number, got {cost_cap}")
        inputs = cost_inputs(
            prices,
            price,
            cloud,
            electricity_usd_kwh,
            pue,
            lifetime_years,
            utilization,
            idle_power_fraction,
            grid_gco2_kwh,
        )
        db = load_db(hardware_db, override)
        models = split_ids(model, "--model", "mixtral-8x7b,qwen3-30b-a3b")
        base = Scenario(
            model=models[0],
            gpus=parse_gpus(gpus),
            batch=batch,
            prompt_len=prompt_len,
            gen_len=gen_len,
            weight_dtype=weight_dtype,
            host_memory_gb=host_memory_gb,
        )
        deployments = deployment_options(option, options_file, base)
        hw_ids = option_ids(hardware, system, db) if (hardware or system or not deployments) else []
        options: list[tuple[str, Option]] = []
        model_ids: list[str] = []
        for m in models:
            result = run_compare(
                m,
                hw_ids,
                hardware_db=db,
                gpus=parse_gpus(gpus),
                batch=batch,
                prompt_len=prompt_len,
                gen_len=gen_len,
                weight_dtype=weight_dtype,
                benchmark=benchmark,
                inputs=inputs,
                deployments=deployments,
                host_memory_gb=host_memory_gb,
            )
            model_ids.append(result.model)
            options.extend((result.model if len(models) > 1 else "", o) for o in result.options)
        radar_options, dropped = _radar_options(options, cost_axis)
        if not radar_options:
            # one error line: the reasons go into it rather than onto separate "not drawn" lines
            raise ScenarioError(
                f"no option can be drawn ({'; '.join(dropped)}); "
                "try more GPUs, another --cost-axis or --price"
            )
        for text in dropped:
            err_console().print(f"[yellow]not drawn[/yellow]: {escape(text)}", soft_wrap=True)
        from capsim.report.plots import output_stem, plot_radar, radar_scores

        # the resolved id, not the argument: a config.json path must not become a directory in the name
        stem = output_stem(out) if out is not None else _default_radar_stem(model_ids, hw_ids, batch)
        png, svg = plot_radar(
            radar_options,
            stem,
            title=f"CAP radar: {', '.join(models)} (batch {batch})",
            cost_label=_COST_AXES[cost_axis],
            accuracy_label=f"Accuracy ({benchmark})",
            cost_cap=cost_cap,
        )
        if json_out:
            scores = radar_scores(radar_options, cost_cap)
            drawn = [o for _, o in options if _radar_name(_, o) in {r.label for r in radar_options}]
            print_json(
                {
                    "models": model_ids,
                    "batch": batch,
                    "axes": {
                        "performance": "TPOT (s), reversed min-max",
                        "cost": _COST_AXES[cost_axis],
                        "accuracy": f"{benchmark} (fraction), min-max up to 1",
                    },
                    "cost_axis": cost_axis,
                    "cost_cap": cost_cap if cost_cap is not None else max(r.cost for r in radar_options),
                    "floor": 20.0,
                    "png": str(png),
                    "svg": str(svg),
                    "options": [
                        {
                            "label": r.label,
                            "tpot_s": r.tpot_s,
                            "cost": r.cost,
                            "accuracy": r.accuracy,
                            "accuracy_status": o.accuracy.status,
                            "cost_is_lower_bound": r.cost_is_lower_bound,
                            "scores": {
                                "performance": float(sc[0]),
                                "cost": float(sc[1]),
                                "accuracy": float(sc[2]),
                            },
                            "option": o.to_dict(),
                        }
                        for r, sc, o in zip(radar_options, scores, drawn)
                    ],
                    "not_drawn": dropped,
                }
            )
            err_console().print(f"radar: {png} and {svg}")
            return
        console = out_console()
        console.print(f"radar: {png} and {svg}")
        if pareto:
            paths = _radar_pareto(options, stem, db, inputs, prompt_len, gen_len)
            console.print(f"Pareto plot: {paths[0]} and {paths[1]}")


_COST_AXES = {
    "purchase": "Cost (USD purchase)",
    "power": "Cost (W, TDP)",
    "usd_per_mtok": "Cost (USD/Mtok out)",
}


def _radar_name(prefix: str, o: Any) -> str:
    """Legend name: the option's name (or hardware x devices) and its MoE-CAP class."""
    base = o.name or f"{o.hardware} x{o.devices or 'auto'}"
    return f"{prefix + ' on ' if prefix else ''}{base} [{o.cap_class}]" if o.cap_class else base


def _radar_options(options: list[tuple[str, Any]], cost_axis: str) -> tuple[list[Any], list[str]]:
    """RadarOptions of the options that ran and have a value on the cost axis; the others with reasons."""
    from capsim.report.plots import RadarOption

    drawn, dropped = [], []
    for prefix, o in options:
        name = _radar_name(prefix, o)
        if not o.ok:
            dropped.append(f"{name}: {o.problem}")
            continue
        if cost_axis == "purchase":
            cost = o.purchase_usd
        elif cost_axis == "power":
            cost = o.cost.rates.power.busy_w if o.cost.rates.power.accelerators_known else None
        else:
            cost = o.cost.full_load.owned.usd_per_mtok_output
        if cost is None:
            dropped.append(f"{name}: no {cost_axis} value (a price or TDP is missing)")
            continue
        lower = (
            o.cost.rates.purchase.is_lower_bound if cost_axis != "power" else bool(o.cost.rates.power.missing)
        )
        drawn.append(
            RadarOption(name, float(o.tpot_s), float(cost), o.accuracy.fraction, lower, o.accuracy.status)
        )
    return drawn, dropped


def _radar_pareto(
    options: list[tuple[str, Any]], stem: Path, db: Any, inputs: CostInputs, prompt_len: int, gen_len: int
) -> tuple[Path, Path]:
    """Sweep the batch of every drawable option (SLOs unbounded) and plot cost vs TPOT with the front."""
    from capsim.economics.plan import SLO, pareto_front
    from capsim.economics.plan import plan as run_plan
    from capsim.report.plots import ParetoPoint, plot_pareto

    points: list[tuple[str, PlanPoint, float]] = []
    for prefix, o in options:
        if not o.ok:
            continue
        result = run_plan(
            o.model,
            SLO(math.inf),
            hardware_db=db,
            hardware=[o.hardware],
            weight_dtypes=[o.weight_dtype],
            device_counts=[o.devices],
            prompt_len=prompt_len,
            gen_len=gen_len,
            inputs=inputs,
        )
        group = f"{prefix + ' on ' if prefix else ''}{o.hardware} x{o.devices}"
        points.extend((group, p, p.usd_per_mtok) for p in result.feasible if p.usd_per_mtok is not None)
    if not points:
        raise ScenarioError("no option has an owned cost to plot; add prices with --price")
    front_ids = {id(p) for p in pareto_front(p for _, p, _ in points)}
    plot_points = [ParetoPoint(g, p.tpot_s, cost, f"batch {p.batch}") for g, p, cost in points]
    front_points = [ParetoPoint(g, p.tpot_s, cost) for g, p, cost in points if id(p) in front_ids]
    return plot_pareto(
        plot_points,
        front_points,
        stem.with_name(stem.name + "-pareto"),
        title="Cost vs TPOT over batch sizes (all-in $/Mtok out)",
    )


def _plan_plot(result: Any, path: Path) -> tuple[Path, Path]:
    from capsim.report.plots import ParetoPoint, plot_pareto

    priced = [p for p in result.feasible if p.usd_per_mtok is not None]
    if not priced:
        raise ScenarioError("nothing to plot: no priced configuration meets the SLOs")
    pts = [
        ParetoPoint(p.hardware, p.tpot_s, p.usd_per_mtok, f"x{p.devices} {p.weight_dtype}") for p in priced
    ]
    front = [ParetoPoint("front", p.tpot_s, p.usd_per_mtok) for p in result.pareto]
    return plot_pareto(
        pts,
        front,
        path,
        title=f"{result.model}: cost vs TPOT (feasible points)",
        slo_tpot_s=result.slo.tpot_s,
    )
