"""``capsim fit``: fastest placement of a model on hardware, and the largest batch / longest context."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from capsim.cli._console import out_console, print_json
from capsim.cli.hardware import HardwareDbOption, OverrideOption, load_db


def register(app: typer.Typer) -> None:
    @app.command(
        help="Fastest way to run MODEL on HARDWARE (every mode ranked), and the largest batch and "
        "longest context that fit."
    )
    def fit(
        model: Annotated[str, typer.Option(help="model id or config.json path")] = "mixtral-8x7b",
        hardware: Annotated[str, typer.Option(help="accelerator or system id")] = "workstation-4090",
        gpus: Annotated[
            int | None, typer.Option(help="devices (default: fewest that fit / all of a system)")
        ] = None,
        batch: Annotated[int, typer.Option(help="concurrent sequences")] = 1,
        prompt_len: Annotated[int, typer.Option(help="prompt tokens")] = 512,
        gen_len: Annotated[int, typer.Option(help="generated tokens")] = 128,
        weight_dtype: Annotated[
            str | None, typer.Option(help="weight precision (default: published)")
        ] = None,
        kv_dtype: Annotated[str, typer.Option(help="KV-cache precision")] = "bf16",
        host_memory_gb: Annotated[
            float | None, typer.Option(help="host DRAM in GB if the system lacks it")
        ] = None,
        hardware_db: HardwareDbOption = None,
        override: OverrideOption = False,
        json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    ) -> None:
        from capsim.economics.feasibility import max_batch_at, max_context_at, placements
        from capsim.engine.scenario import Scenario
        from capsim.errors import CapsimError, ScenarioError

        db = load_db(hardware_db, override)
        from capsim.economics.plan import check_node_ids

        check_node_ids([hardware], db)  # unknown ids and non-deployable entries: one error line, exit 1
        from capsim.models.db import resolve_model

        resolve_model(model)  # an unknown model is one error line (exit 1), not a table of failed modes
        base = Scenario(
            model=model,
            hardware=hardware,
            gpus=gpus,
            batch=batch,
            prompt_len=prompt_len,
            gen_len=gen_len,
            weight_dtype=weight_dtype,
            kv_dtype=kv_dtype,
            host_memory_gb=host_memory_gb,
        )
        base.validate()
        ranked = placements(base, db)
        limits: dict[str, object] = {}
        best = next((r for r in ranked if r.error is None), None)
        if best is not None:
            from dataclasses import replace

            # auto trades GPU-resident experts for KV cache, so its limits are those of the mode with every
            # expert off the GPU (the most room for KV)
            chosen = replace(base, mode=best.mode, placement=None, **(best.options or {}))
            try:
                limits = {
                    "mode": best.mode,
                    "layout": best.layout,
                    "max_batch": max_batch_at(chosen, db),
                    "max_context_at_batch": max_context_at(chosen, db),
                }
            except CapsimError as exc:
                limits = {"mode": best.mode, "error": str(exc)}
        nothing_runs = best is None
        if json_out:
            print_json({"placements": [r.to_dict() for r in ranked], "limits": limits})
            if nothing_runs:
                raise ScenarioError(f"no mode runs {model} on {hardware}; the reasons are in the JSON above")
            return
        console = out_console()
        table = Table(title=f"{model} on {hardware}: placements, fastest first", title_justify="left")
        for col in ("mode", "placement", "layout", "devices", "TPOT", "tokens/s", "TTFT", "detail"):
            table.add_column(
                col,
                justify="right" if col in ("devices", "TPOT", "tokens/s", "TTFT") else "left",
                no_wrap=col == "layout",
            )
        for r in ranked:
            where = r.placement or "default"
            if r.error:
                table.add_row(r.mode, where, r.layout or "", "", "", "", "", f"[red]{escape(r.error)}[/red]")
            else:
                table.add_row(
                    r.mode,
                    where,
                    r.layout or "",
                    str(r.gpus),
                    f"{1e3 * r.tpot_s:,.2f} ms" if r.tpot_s else "n/a",
                    f"{r.decode_tokens_per_s:,.1f}" if r.decode_tokens_per_s else "n/a",
                    f"{1e3 * r.ttft_s:,.1f} ms" if r.ttft_s else "n/a",
                    r.detail,
                )
        console.print(table)
        if best is not None and "max_batch" in limits:
            moved = " (experts moved off the GPU as needed)" if best.placement == "auto" else ""
            layout = f" ({limits['layout']})" if limits.get("layout") else ""
            console.print(
                f"{limits['mode']}{layout}{moved}: largest batch at prompt {prompt_len} + gen {gen_len}: {limits['max_batch']}; "
                f"longest context at batch {batch}: {limits['max_context_at_batch']:,} tokens"
            )
        elif "error" in limits:
            console.print(f"[yellow]limits: {limits['error']}[/yellow]")
        if nothing_runs:
            raise ScenarioError(f"no mode runs {model} on {hardware}; the reasons are in the table above")
