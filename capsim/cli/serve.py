"""``capsim serve``: simulate a serving replica (or fleet) under a workload -> vLLM-named latency metrics."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from capsim.cli._console import out_console, print_json
from capsim.cli.hardware import HardwareDbOption, OverrideOption, load_db
from capsim.engine.scenario import Scenario

_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(Scenario)}


def _help(name: str) -> str:
    return Scenario.help_for(name)


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1e3:,.2f}"


def engine_line(engine: dict[str, Any]) -> str:
    """'vllm — vLLM (0.10-0.11, late 2025): CUDA graphs, kernel latency 6.75 µs, compute fraction 0.26; chosen
    by --system vllm-like' from capsim.serving.metrics.engine_summary (plus ``selected_by``)."""
    head = engine["name"] if engine["id"] is None else f"{engine['id']} — {engine['name']}"
    if engine["execution"] == "eager":
        how = (
            f"eager, host dispatch {engine['moe_host_s'] * 1e3:g} ms per MoE layer + "
            f"{engine['expert_host_s'] * 1e3:g} ms per activated expert"
        )
    else:
        how = f"CUDA graphs, kernel latency {engine['kernel_latency_s'] * 1e6:g} µs"
    text = f"{head}: {how}, compute fraction {engine['compute_fraction']:g}"
    if "not_applied" in engine:
        text += f" ({engine['not_applied']})"
    by = engine.get("selected_by")
    if by:
        text += f"; chosen by {by}" + (" (--engine to choose another)" if by.startswith("--system") else "")
    return text


def render(result: Any, console: Any = None) -> None:
    """Tables in the layout of ``vllm bench serve``'s summary."""
    console = console or out_console()
    d = result.to_dict()
    cfg = d["config"]
    sched = cfg["scheduler"]
    where = (
        f"{cfg['replicas']} replica(s) of {cfg['gpus_per_replica']}x {cfg['hardware']}"
        if cfg["replicas"]
        else f"{cfg['disaggregation']['prefill_replicas']} prefill + {cfg['disaggregation']['decode_replicas']} "
        f"decode replicas of {cfg['gpus_per_replica']}x {cfg['hardware']}"
    )
    console.print(
        f"[bold]{cfg['model']} on {where}  ·  weights {cfg['weight_dtype']}  ·  KV {cfg['kv_dtype']}[/bold]"
    )
    console.print(f"workload: {cfg['workload']}", soft_wrap=True)
    console.print(f"engine: {engine_line(cfg['engine'])}", soft_wrap=True)
    console.print(
        f"scheduler: max-num-seqs {sched['max_num_seqs']}, max-batched-tokens {sched['max_batched_tokens']}, "
        f"chunked prefill {'on' if sched['chunked_prefill'] else 'off'}, block {sched['block_size']} tokens; "
        f"KV cache {d['kv_cache']['blocks']:,} blocks ({cfg['kv_pool_gb_per_device']:.1f} GB per device)",
        soft_wrap=True,
    )
    table = Table(title="serving result (vllm bench serve names)", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("Successful requests", str(d["completed"]))
    table.add_row("Benchmark duration (s)", f"{d['duration']:,.2f}")
    table.add_row("Request throughput (req/s)", f"{d['request_throughput']:,.2f}")
    if d["request_goodput"] is not None:
        slo = ", ".join(f"{k} ≤ {v:g} ms" for k, v in d["slo_ms"].items())
        table.add_row(f"Request goodput (req/s) [{slo}]", f"{d['request_goodput']:,.2f}")
    table.add_row("Output token throughput (tok/s)", f"{d['output_throughput']:,.1f}")
    table.add_row("Total token throughput (tok/s)", f"{d['total_token_throughput']:,.1f}")
    console.print(table)
    lat = Table(title="latency (ms)", title_justify="left")
    for col in ("metric", "mean", "median", "p90", "p99"):
        lat.add_column(col, justify="left" if col == "metric" else "right")
    names = {"ttft": "TTFT", "tpot": "TPOT", "itl": "ITL", "e2el": "E2EL"}
    for key, label in names.items():
        lat.add_row(label, *(_ms(result.latency[key][s]) for s in ("mean", "median", "p90", "p99")))
    console.print(lat)
    console.print(
        f"S-MBU {100 * d['s_mbu']:.1f}%  S-MFU {100 * d['s_mfu']:.1f}%  (dense MBU {100 * d['mbu']:.1f}%, "
        f"MFU {100 * d['mfu']:.1f}%; time-weighted over busy steps, busy {100 * d['busy_fraction']:.0f}% of "
        f"the run)  ·  {d['steps']:,} steps  ·  {d['preemptions']} preemptions  ·  peak KV use "
        f"{100 * d['kv_cache']['max_use']:.0f}%",
        soft_wrap=True,
    )
    for note in d["notes"]:
        console.print(f"note: {note}", soft_wrap=True)
    console.print("model and assumptions: docs/serving.md; metric definitions: docs/metrics.md")


def render_curve(curve: Any) -> None:
    console = out_console()
    if curve.engine:
        console.print(f"engine: {engine_line(curve.engine)}", soft_wrap=True)
    table = Table(title="latency-throughput curve", title_justify="left")
    for col in (
        "rate req/s",
        "req/s",
        "out tok/s",
        "mean TTFT ms",
        "p99 TTFT ms",
        "mean TPOT ms",
        "p99 TPOT ms",
        "p99 ITL ms",
        "goodput req/s",
        "meets SLO",
    ):
        table.add_column(col, justify="right")
    for row in curve.rows:
        table.add_row(
            f"{row['rate']:g}",
            f"{row['request_throughput']:.2f}",
            f"{row['output_throughput']:,.0f}",
            _ms(row["mean_ttft_s"]),
            _ms(row["p99_ttft_s"]),
            _ms(row["mean_tpot_s"]),
            _ms(row["p99_tpot_s"]),
            _ms(row["p99_itl_s"]),
            "n/a" if row["goodput"] is None else f"{row['goodput']:.2f}",
            "-" if row["meets_slo"] is None else ("yes" if row["meets_slo"] else "no"),
        )
    console.print(table)
    if curve.slo:
        best = curve.best_rate
        console.print(
            "highest rate meeting the SLOs (p99 of each bound): "
            + ("none of the rates tried" if best is None else f"{best:g} req/s")
        )


def render_fleet(plan: Any) -> None:
    console = out_console()
    slo = ", ".join(f"p99 {k} ≤ {v * 1e3:g} ms" for k, v in plan.slo.items())
    console.print(f"[bold]fleets meeting {slo}[/bold]; workload: {plan.workload}", soft_wrap=True)
    console.print(
        f"engine: {plan.engine or 'device class defaults'}; chosen by {plan.engine_selected_by}",
        soft_wrap=True,
    )
    table = Table(
        title="cheapest first (cloud USD per hour from the hardware database)", title_justify="left"
    )
    for col in (
        "hardware",
        "GPUs/replica",
        "replicas",
        "devices",
        "USD/h",
        "p99 TTFT ms",
        "p99 TPOT ms",
        "note",
    ):
        table.add_column(col, justify="left" if col in ("hardware", "note") else "right")
    for o in plan.options:
        d = o.to_dict()
        table.add_row(
            o.hardware,
            str(o.gpus_per_replica),
            "-" if o.replicas is None else str(o.replicas),
            "-" if d["devices"] is None else str(d["devices"]),
            "n/a" if o.usd_per_hour is None else f"{o.usd_per_hour:,.2f}",
            _ms(None if d["p99_ttft_ms"] is None else d["p99_ttft_ms"] / 1e3),
            _ms(None if d["p99_tpot_ms"] is None else d["p99_tpot_ms"] / 1e3),
            o.note,
        )
    console.print(table)
    best = plan.best
    console.print(
        "cheapest: "
        + (
            "none of the candidates"
            if best is None
            else f"{best.replicas} x {best.gpus_per_replica} {best.hardware}"
        ),
        soft_wrap=True,
    )
    if best is not None and best.price_source:
        console.print(f"price: {best.price_source}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    @app.command(
        help="Simulate serving under a workload (continuous batching, chunked prefill, paged KV): "
        "TTFT/TPOT/ITL/E2EL percentiles, throughput, goodput, S-MBU/S-MFU. See docs/serving.md."
    )
    def serve(
        model: Annotated[str, typer.Option(help=_help("model"))] = _DEFAULTS["model"],
        hardware: Annotated[str, typer.Option(help=_help("hardware"))] = _DEFAULTS["hardware"],
        gpus: Annotated[
            int | None,
            typer.Option(
                help="devices per replica (tensor parallel); default: the "
                "fewest of 1, 2, 4, 8 that hold the model"
            ),
        ] = None,
        weight_dtype: Annotated[str | None, typer.Option(help=_help("weight_dtype"))] = _DEFAULTS[
            "weight_dtype"
        ],
        kv_dtype: Annotated[str, typer.Option(help=_help("kv_dtype"))] = _DEFAULTS["kv_dtype"],
        routing: Annotated[str, typer.Option(help=_help("routing"))] = _DEFAULTS["routing"],
        seed: Annotated[int, typer.Option(help="seed for arrivals, lengths and stochastic routers")] = 0,
        system: Annotated[
            str,
            typer.Option(
                help="scheduler preset: vllm-like, sglang-like or trtllm-like "
                "(sourced defaults; docs/serving.md); it also picks that engine's profile for the step "
                "costs (vllm, sglang, tensorrt-llm) unless --engine names one"
            ),
        ] = "vllm-like",
        engine: Annotated[
            str | None,
            typer.Option(
                help=_help("engine").partition("; default:")[0]
                + "; default: the --system preset's engine (vllm-like: vllm, the newest vLLM release with data; "
                "sglang-like: sglang; trtllm-like: tensorrt-llm); none: no profile, the device class's values"
            ),
        ] = None,
        max_num_seqs: Annotated[
            int | None, typer.Option(help="most requests running at once (default: the preset's)")
        ] = None,
        max_batched_tokens: Annotated[
            int | None, typer.Option(help="token budget of one step (default: the preset's)")
        ] = None,
        chunked_prefill: Annotated[
            bool | None,
            typer.Option(
                "--chunked-prefill/--no-chunked-prefill",
                help="split prompts over steps (default: the preset's)",
            ),
        ] = None,
        block_size: Annotated[
            int | None, typer.Option(help="KV-cache block size in tokens (default: the preset's)")
        ] = None,
        rate: Annotated[
            str | None,
            typer.Option(
                help="request rate in req/s (Poisson with --burstiness 1); a "
                "list or range (1:32:x2) gives the latency-throughput curve"
            ),
        ] = None,
        burstiness: Annotated[
            float, typer.Option(help="gamma shape of inter-arrival gaps (1 = Poisson)")
        ] = 1.0,
        concurrency: Annotated[
            int | None, typer.Option(help="most requests in flight (closed loop of N clients without --rate)")
        ] = None,
        offline: Annotated[bool, typer.Option("--offline", help="send every request at t = 0")] = False,
        num_prompts: Annotated[int, typer.Option(help="requests to send")] = 1000,
        duration: Annotated[
            str | None,
            typer.Option(help="send requests for this long instead of --num-prompts (with --rate), e.g. 60s"),
        ] = None,
        prompt_len: Annotated[
            str, typer.Option(help="prompt tokens: N, lognormal:MEAN:STD or uniform:LOW:HIGH")
        ] = "512",
        output_len: Annotated[
            str, typer.Option(help="output tokens: N, lognormal:MEAN:STD or uniform:LOW:HIGH")
        ] = "128",
        dataset: Annotated[
            str | None,
            typer.Option(
                help="named length profile (capsim serve --list-datasets); replaces --prompt-len/--output-len"
            ),
        ] = None,
        requests: Annotated[
            Path | None,
            typer.Option(
                help="request file: JSONL or CSV with prompt_tokens, output_tokens and optionally arrival_s"
            ),
        ] = None,
        replicas: Annotated[int, typer.Option(help="data-parallel replicas; requests go round-robin")] = 1,
        prefill_replicas: Annotated[
            int | None, typer.Option(help="disaggregated serving: prefill replicas")
        ] = None,
        decode_replicas: Annotated[
            int | None, typer.Option(help="disaggregated serving: decode replicas")
        ] = None,
        kv_link: Annotated[
            str | None,
            typer.Option(
                help="hardware-DB link id carrying KV from prefill to decode "
                "(default: the node's GPU-to-GPU link)"
            ),
        ] = None,
        slo: Annotated[
            str | None, typer.Option(help="SLOs for goodput, e.g. ttft=200ms,tpot=50ms,e2el=10s")
        ] = None,
        fleet_candidates: Annotated[
            str | None,
            typer.Option(
                help="size a fleet: the fewest replicas of each "
                "candidate HARDWARE:GPUS[,GPUS];... meeting --slo (p99) "
                "at --rate, cheapest first"
            ),
        ] = None,
        figure: Annotated[
            Path | None,
            typer.Option(
                help="write the timeline (or, with a rate range, the "
                "latency-throughput curve) to PATH.png and PATH.svg"
            ),
        ] = None,
        list_datasets: Annotated[
            bool, typer.Option("--list-datasets", help="list the named length profiles")
        ] = False,
        hardware_db: HardwareDbOption = None,
        override: OverrideOption = False,
        json_out: Annotated[
            bool, typer.Option("--json", help="print one JSON object instead of tables")
        ] = False,
    ) -> None:
        from capsim.serving import api

        if list_datasets:
            _print_datasets(json_out)
            return
        request = api.ServeRequest(
            scenario=Scenario(
                model=model,
                hardware=hardware,
                gpus=gpus,
                weight_dtype=weight_dtype,
                kv_dtype=kv_dtype,
                routing=routing,
                seed=seed,
                engine=engine,
            ),
            system=system,
            max_num_seqs=max_num_seqs,
            max_batched_tokens=max_batched_tokens,
            chunked_prefill=chunked_prefill,
            block_size=block_size,
            rate=rate,
            burstiness=burstiness,
            concurrency=concurrency,
            offline=offline,
            num_prompts=num_prompts,
            duration=duration,
            prompt_len=prompt_len,
            output_len=output_len,
            dataset=dataset,
            requests=requests,
            replicas=replicas,
            prefill_replicas=prefill_replicas,
            decode_replicas=decode_replicas,
            kv_link=kv_link,
            slo=slo,
            seed=seed,
            fleet_candidates=fleet_candidates,
        )
        db = load_db(hardware_db, override)
        outcome = api.run(request, hardware_db=db)
        if isinstance(outcome, api.FleetPlan):
            if json_out:
                print_json(outcome.to_dict())
            else:
                render_fleet(outcome)
            return
        if isinstance(outcome, api.Curve):
            if figure is not None:
                paths = api.curve_figure(outcome, figure)
            if json_out:
                print_json(outcome.to_dict())
            else:
                render_curve(outcome)
            if figure is not None and not json_out:
                out_console().print("figure: " + ", ".join(str(p) for p in paths))
            return
        if figure is not None:
            paths = api.timeline_figure(outcome, figure)
        if json_out:
            print_json(outcome.to_dict())
        else:
            render(outcome)
            if figure is not None:
                out_console().print("figure: " + ", ".join(str(p) for p in paths))


def _print_datasets(json_out: bool) -> None:
    from capsim.serving.datasets import load_datasets

    profiles = load_datasets()
    if json_out:
        print_json({k: v.to_dict() for k, v in profiles.items()})
        return
    table = Table(title="named length profiles (capsim/serving/datasets.toml)", title_justify="left")
    for col in ("id", "prompt tokens", "output tokens", "source"):
        table.add_column(col)
    for p in profiles.values():
        table.add_row(p.id, p.prompt.describe(), p.output.describe(), p.source)
    out_console().print(table)
