"""``capsim predict``: one scenario -> a table, an assumptions block, or one JSON object."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from capsim.cli._console import out_console, print_json
from capsim.cli.hardware import HardwareDbOption, OverrideOption, load_db
from capsim.cli.scenario_options import scenario_options
from capsim.engine.reports import DeploymentReport
from capsim.engine.scenario import Scenario


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 1e-3:
        return f"{seconds * 1e6:,.1f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:,.2f} ms"
    return f"{seconds:,.3f} s"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def render_prediction(pred: Any) -> None:
    """Rich tables for a :class:`capsim.engine.metrics.Prediction`."""
    console = out_console()
    d = pred.to_dict()
    sc = d["scenario"]
    title = (
        f"{sc['model']} on {sc['gpus']}x {d['assumptions']['hardware']['id']}  ·  batch {sc['batch']}  ·  "
        f"prompt {sc['prompt_len']}  ·  gen {sc['gen_len']}  ·  weights {sc['weight_dtype']}  ·  KV {sc['kv_dtype']}"
    )
    console.print(f"[bold]{title}[/bold]")
    perf = Table(show_header=True)
    perf.add_column("metric")
    perf.add_column("value", justify="right")
    perf.add_row("TTFT (whole batch prefill)", _fmt_time(d["ttft_s"]))
    perf.add_row("TPOT (per decode step)", _fmt_time(d["tpot_s"]))
    perf.add_row("end-to-end latency", _fmt_time(d["e2e_latency_s"]))
    perf.add_row(
        "decode tokens/s (batch aggregate)",
        "n/a" if d["decode_tokens_per_s"] is None else f"{d['decode_tokens_per_s']:,.1f}",
    )
    perf.add_row("prefill tokens/s", f"{d['prefill_tokens_per_s']:,.0f}")
    if d["waves"] > 1:
        perf.add_row(
            "[yellow]waves[/yellow]",
            f"[yellow]{d['waves']} waves of ≤{d['batch_per_wave']} (KV cache holds "
            f"{d['memory']['max_batch']} sequences); job {_fmt_time(d['job_time_s'])}[/yellow]",
        )
    console.print(perf)

    util = Table(title="utilisation (dense vs sparse, MoE-CAP; docs/metrics.md)", title_justify="left")
    for col in ("phase", "passes", "MBU", "S-MBU", "MFU", "S-MFU", "bottleneck", "time split"):
        util.add_column(col, justify="left" if col in ("phase", "bottleneck", "time split") else "right")
    for phase in ("prefill", "decode"):
        p = d[phase]
        if not p["passes"]:
            continue
        r = p["time_by_resource_s"]
        total = sum(r.values()) or 1.0
        split = "  ".join(f"{k} {100 * v / total:.0f}%" for k, v in r.items() if v > 0)
        util.add_row(
            phase,
            str(p["passes"]),
            _pct(p["mbu"]),
            _pct(p["s_mbu"]),
            _pct(p["mfu"]),
            _pct(p["s_mfu"]),
            p["bottleneck"],
            split,
        )
    console.print(util)
    over = [ph for ph in ("prefill", "decode") if d[ph]["passes"] and max(d[ph]["mbu"], d[ph]["mfu"]) > 1.0]
    if over and d["activated_experts_per_layer"]:
        console.print(
            f"note: dense MBU/MFU above 100% ({', '.join(over)}) is expected for a MoE model: they charge "
            "every expert's weights and FLOPs (as a dense model would move them), while the step reads only "
            "the activated experts; S-MBU/S-MFU count what is really moved and computed (docs/metrics.md)",
            soft_wrap=True,
            markup=False,
        )

    if d["activated_experts_per_layer"]:
        acts = d["activated_experts_per_layer"]
        mean = sum(acts) / len(acts)
        console.print(
            f"activated experts per MoE layer per decode step: {mean:.2f} of {d['experts_per_layer']} "
            f"(min {min(acts):.2f}, max {max(acts):.2f}, {len(acts)} MoE layers)"
        )

    _render_deployment(d, pred.deployment)
    m = d["memory"]
    mem = Table(title=f"memory per device ({m['devices']} devices)", title_justify="left")
    for col in ("weights", "KV cache", "buffers", "total", "usable", "capacity", "max batch"):
        mem.add_column(col, justify="right")
    mem.add_row(
        *(
            f"{m[k]:,.1f} GB"
            for k in ("weights_gb", "kv_cache_gb", "buffers_gb", "total_gb", "usable_gb", "capacity_gb")
        ),
        str(m["max_batch"]),
    )
    console.print(mem)

    a = d["assumptions"]
    console.print("[bold]assumptions[/bold]")
    console.print(f"  model: {a['model']['id']} — {a['model']['source']}")
    console.print(f"  hardware: {a['hardware']['id']} ({a['hardware']['node']}) — {a['hardware']['source']}")
    console.print(
        f"  tensor parallel: {a['tensor_parallel']}; link {a['peaks']['link_gb_s_per_dir']:.1f} GB/s per direction"
    )
    lay = a.get("layout", {})
    adp = lay.get("attention_dp", 1)
    if lay.get("devices", 1) > 1 and (
        lay["pp"] > 1 or lay["dp"] > 1 or lay["nodes"] > 1 or adp > 1 or lay["ep"] > 1
    ):
        console.print(
            f"  layout: tp {lay['tp']} x attention-dp {adp} x pp {lay['pp']} x dp {lay['dp']} on "
            f"{lay['nodes']} node(s) of {lay['devices_per_node']} devices; MoE layers: ep {lay['ep']} over "
            f"{lay['tp'] * adp} devices (docs/deployment.md)"
        )
    computes = a.get("compute_precision", {})

    def weight(group: str, prec: str) -> str:
        key = computes.get(group)
        return f"{group}={prec}" + (f" ({key} compute)" if key and key != prec else "")

    console.print(
        f"  weights: {', '.join(weight(g, p) for g, p in a['weight_precision'].items())}; "
        f"KV {a['kv_precision']}"
    )
    console.print(f"  routing: {a['routing']}")
    for name, e in a["efficiency"].items():
        soft = " (soft)" if e["soft"] else ""
        console.print(f"  {name} = {e['value']:g}{soft} — {e['source']}")
    console.print(f"  scope: {a['scope']}")
    console.print("  metric definitions: docs/metrics.md")


def _render_deployment(d: dict[str, Any], dep: DeploymentReport) -> None:
    """Mode summary, experts per tier, load per link and where a decode step's time goes."""
    console = out_console()
    mode = dep.get("mode", "gpu")
    if "cache_experts" in dep:
        console.print(
            f"{mode}: experts of {dep['offloaded_moe_layers']} MoE layers off the device; expert cache "
            f"{dep['cache_experts']} experts ({dep['policy']}), steady-state hit rate {100 * dep['hit_rate']:.1f}%, "
            f"{dep['misses_per_step']:.1f} misses per decode step; prefetch {'on' if dep['prefetch'] else 'off'}",
            soft_wrap=True,
        )
    elif mode == "cpu-experts":
        console.print(
            f"cpu-experts: routed experts of {dep['offloaded_moe_layers']} MoE layers on {dep['cpu']} "
            f"({dep['cpu_bandwidth_gb_s']:.1f} GB/s, {dep['cpu_peak_tflops']:.1f} TFLOPS {dep['cpu_precision']}; "
            f"{dep['derivation']}); hand-off over {dep['handoff_link_gb_s']:.1f} GB/s",
            soft_wrap=True,
        )
    if dep.get("ep", 1) > 1:
        console.print(
            f"expert parallel over {dep['ep']} groups of {dep['expert_ranks'] // dep['ep']} device(s) "
            f"({dep.get('all_to_all', 'nccl')}): straggler factor {dep['straggler_factor_mean']:.2f} (max/mean "
            f"token-expert pairs per group), {dep['straggler_activated_factor_mean']:.2f} (activated experts); "
            f"dispatch + combine {1e3 * dep['all_to_all_s_per_pass']:.3f} ms per decode step",
            soft_wrap=True,
        )
    elif dep.get("attention_dp", 1) > 1:
        console.print(
            f"attention data parallel over {dep['attention_dp']} ranks, experts split over all {dep['expert_ranks']} "
            f"devices: token gather/scatter {1e3 * dep['all_to_all_s_per_pass']:.3f} ms per decode step",
            soft_wrap=True,
        )
    lay = d["assumptions"].get("layout", {})
    if lay.get("devices", 1) > 1 and d["decode_tokens_per_s"]:
        per_gpu = d["decode_tokens_per_s"] / lay["devices"]
        console.print(
            f"decode tokens/s per GPU {per_gpu:,.1f}, per node ({lay['devices_per_node']} GPUs) "
            f"{per_gpu * lay['devices_per_node']:,.1f}, all {lay['devices']} GPUs {d['decode_tokens_per_s']:,.1f}"
        )
    if dep.get("tiers"):
        tiers = Table(title="routed experts per tier", title_justify="left")
        for col in ("tier", "experts", "GB", "capacity GB"):
            tiers.add_column(col, justify="left" if col == "tier" else "right")
        for name, t in dep["tiers"].items():
            if "capacity_gb" not in t:
                cap_text = "memory table"  # the device's own memory plan
            else:
                cap_text = "unknown" if t["capacity_gb"] is None else f"{t['capacity_gb']:,.1f}"
            tiers.add_row(name, str(t["experts"]), f"{t['gb']:,.1f}", cap_text)
        console.print(tiers)
    _render_step_time(d)
    if dep.get("note"):
        console.print(f"[yellow]note: {dep['note']}[/yellow]")


def _render_step_time(d: dict[str, Any]) -> None:
    """Per decode step: time on each resource (device, CPU, links as exposed after overlap) and each link's
    busy time, and the bottleneck."""
    phase = d["decode"] if d["decode"]["passes"] else d["prefill"]
    passes = phase["passes"]
    links = d["deployment"].get("links", {})
    if not passes or (
        set(phase["time_by_resource_s"]) <= {"compute", "memory", "interconnect", "overhead"} and not links
    ):
        return
    label = "decode step" if d["decode"]["passes"] else "prefill pass"
    table = Table(title=f"time per {label} (bottleneck: {phase['bottleneck']})", title_justify="left")
    for col in ("where", "time", "detail"):
        table.add_column(col, justify="right" if col == "time" else "left")
    names = {
        "compute": "device compute",
        "memory": "device memory",
        "interconnect": "device interconnect",
        "overhead": "overheads",
        "cpu": "CPU (experts)",
        "link": "links (time not hidden by compute)",
    }
    for resource, seconds in phase["time_by_resource_s"].items():
        if seconds > 0:
            table.add_row(names.get(resource, resource), _fmt_time(seconds / passes), "")
    for name, link in links.items():
        table.add_row(
            f"link {name}",
            _fmt_time(link["s_per_step"]),
            f"{link['path']}: {link['gb_per_step']:,.2f} GB at {link['gb_s']:,.1f} GB/s (busy time)",
        )
    out_console().print(table)


def register(app: typer.Typer) -> None:
    @app.command(help="Predict TTFT, TPOT, throughput, MBU/MFU, S-MBU/S-MFU and memory for one scenario.")
    @scenario_options
    def predict(
        scenario: Scenario,
        system: Annotated[
            str | None,
            typer.Option(
                help="serving-system preset: vllm-like, sglang-like, vllm-ep-like, "
                "sglang-dp-attention, trtllm-dep, vllm-dp-ep, "
                "hf-transformers-like, moe-infinity-like, mixtral-offloading-like, ktransformers-like, "
                "llamacpp-cpu-moe[:N] (--n-cpu-moe N)"
            ),
        ] = None,
        hardware_db: HardwareDbOption = None,
        override: OverrideOption = False,
        json_out: Annotated[
            bool, typer.Option("--json", help="print one JSON object instead of tables")
        ] = False,
    ) -> None:
        from capsim.engine.predict import predict as run_predict

        preset = None
        if system is not None:
            from capsim.engine.presets import apply_preset

            scenario, preset = apply_preset(system, scenario)
        prediction = run_predict(scenario, hardware_db=load_db(hardware_db, override))
        if json_out:
            payload = prediction.to_dict()
            if preset is not None:
                payload["assumptions"]["system_preset"] = {
                    "name": preset.name,
                    "settings": preset.settings,
                    "assumes": preset.assumes,
                    "source": preset.source,
                }
            print_json(payload)
        else:
            render_prediction(prediction)
            if preset is not None:
                out_console().print(
                    f"  system preset {preset.name}: {preset.assumes} — {preset.source}", soft_wrap=True
                )
