"""``capsim sweep`` (grids of scenarios, resumable output) and ``capsim explain`` (the engine's formulas)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from capsim.cli._console import err_console, out_console, print_json
from capsim.cli.hardware import HardwareDbOption, OverrideOption, load_db

if TYPE_CHECKING:  # the sweep package loads when the command runs, not at start-up
    from capsim.hardware.db import HardwareDB
    from capsim.sweep.grid import Grid
    from capsim.sweep.run import SweepRun


def register(app: typer.Typer) -> None:
    @app.command(help="Evaluate a grid of scenarios (vectorised) into CSV/JSONL/Parquet; resumable.")
    def sweep(
        out: Annotated[Path, typer.Option("--out", help="output file (.csv, .jsonl or .parquet)")],
        model: Annotated[str | None, typer.Option(help="model ids, comma-separated")] = None,
        hardware: Annotated[
            str | None, typer.Option(help="accelerator or system ids, comma-separated")
        ] = None,
        gpus: Annotated[str, typer.Option(help="device counts (0 = all of a system), e.g. 1,2,4,8")] = "1",
        batch: Annotated[str, typer.Option(help="batch sizes, e.g. 1,8,64 or 1:1024:x2")] = "1",
        prompt_len: Annotated[str, typer.Option(help="prompt lengths, e.g. 512 or 128:8192:x2")] = "512",
        gen_len: Annotated[str, typer.Option(help="generated lengths")] = "128",
        weight_dtype: Annotated[
            str, typer.Option(help="weight precisions, comma-separated; native = published")
        ] = "native",
        kv_dtype: Annotated[str, typer.Option(help="KV-cache precisions, comma-separated")] = "bf16",
        layout: Annotated[
            str,
            typer.Option(
                help="parallel layouts and modes separated by ';', each key=value pairs of tp, "
                "attention_dp, ep, dp, redundant_experts, all_to_all, two_batch_overlap, spec, acceptance, "
                "mode (gpu, offload, cpu-experts, cpu), expert_tier, expert_layers, placement, prefetch, "
                "cache_policy, e.g. 'tp=8;tp=1,attention_dp=8,ep=8;tp=8,ep=4,spec=mtp:3' or "
                "'mode=offload;mode=offload,prefetch=false' (empty: the default TP group)"
            ),
        ] = "",
        grid_file: Annotated[
            Path | None, typer.Option("--grid", help="TOML grid file (overrides the axis options)")
        ] = None,
        fmt: Annotated[
            str | None, typer.Option("--format", help="csv, jsonl or parquet (default: from --out)")
        ] = None,
        chunk_rows: Annotated[
            int, typer.Option(help="rows per chunk (memory and resume granularity)")
        ] = 50_000,
        feasible_only: Annotated[
            bool, typer.Option("--feasible-only", help="write only configurations that fit")
        ] = False,
        slo_tpot: Annotated[str | None, typer.Option(help="keep rows with TPOT <= this (e.g. 50ms)")] = None,
        slo_ttft: Annotated[str | None, typer.Option(help="keep rows with TTFT <= this (e.g. 1s)")] = None,
        pareto: Annotated[
            Path | None, typer.Option(help="also write the Pareto front (TPOT vs throughput) as JSON")
        ] = None,
        backend: Annotated[str, typer.Option(help="local or dask")] = "local",
        scheduler: Annotated[
            str | None, typer.Option(help="Dask scheduler address (default: a local cluster)")
        ] = None,
        workers: Annotated[int, typer.Option(help="worker processes of the local Dask cluster")] = 2,
        host_memory_gb: Annotated[
            float | None, typer.Option(help="host DRAM in GB for systems whose entry lacks it")
        ] = None,
        force: Annotated[
            bool, typer.Option("--force", help="run even above the size limits (rows, disk, memory)")
        ] = False,
        hardware_db: HardwareDbOption = None,
        override: OverrideOption = False,
        json_out: Annotated[bool, typer.Option("--json", help="print the run summary as JSON")] = False,
    ) -> None:
        from capsim.economics.plan import parse_duration
        from capsim.errors import ScenarioError
        from capsim.sweep.grid import (
            Grid,
            load_grid_toml,
            parse_gpus_axis,
            parse_int_axis,
            parse_layout_axis,
            parse_str_axis,
        )
        from capsim.sweep.guard import (
            check_output_path,
            check_size,
            discard_parts_on_failure,
            estimate,
            sweep_lock,
        )
        from capsim.sweep.run import Filters, SweepRun, format_of, resolve_groups

        if grid_file is not None:
            grid = load_grid_toml(grid_file)
        else:
            if not model or not hardware:
                raise ScenarioError(
                    "give --model and --hardware (comma-separated lists) or a --grid TOML file"
                )
            grid = Grid(
                models=parse_str_axis(model),
                hardware=parse_str_axis(hardware),
                gpus=parse_gpus_axis(gpus),
                batch=parse_int_axis(batch, "batch"),
                prompt_len=parse_int_axis(prompt_len, "prompt-len"),
                gen_len=parse_int_axis(gen_len, "gen-len"),
                weight_dtype=parse_str_axis(weight_dtype),
                kv_dtype=parse_str_axis(kv_dtype),
                layout=parse_layout_axis(layout),
                host_memory_gb=host_memory_gb,
            )
        if grid_file is not None and host_memory_gb is not None:
            from dataclasses import replace

            grid = replace(grid, host_memory_gb=host_memory_gb)
        if chunk_rows < 1:
            raise ScenarioError("--chunk-rows must be >= 1")
        if backend not in ("local", "dask"):
            raise ScenarioError(f"unknown backend {backend!r}; choose local or dask")
        if backend == "dask" and not scheduler and workers < 1:
            raise ScenarioError(f"--workers must be >= 1 for a local Dask cluster, got {workers}")
        filters = Filters(
            feasible_only=feasible_only,
            slo_tpot_s=parse_duration(slo_tpot, "--slo-tpot") if slo_tpot else None,
            slo_ttft_s=parse_duration(slo_ttft, "--slo-ttft") if slo_ttft else None,
        )
        db = load_db(hardware_db, override)
        # everything that can be refused is refused before the first byte is written
        check_output_path(out, "--out")
        run = SweepRun(grid, out, format_of(out, fmt), chunk_rows, filters)
        if pareto is not None:
            check_output_path(pareto, "--pareto")
            if pareto.resolve() == out.resolve():
                raise ScenarioError(
                    "--pareto and --out name the same file; give the Pareto front its own name"
                )
        resolve_groups(grid, db)  # unknown ids
        check_size(estimate(grid, run.fmt, chunk_rows), out, force)
        with sweep_lock(run.parts_dir), discard_parts_on_failure(run.parts_dir):
            _run_and_write(
                run, grid, db, backend, scheduler, workers, hardware_db, override, pareto, json_out
            )

    def _run_and_write(
        run: SweepRun,
        grid: Grid,
        db: HardwareDB,
        backend: str,
        scheduler: str | None,
        workers: int,
        hardware_db: list[Path] | None,
        override: bool,
        pareto: Path | None,
        json_out: bool,
    ) -> None:
        from capsim.sweep.run import run_dask, run_local

        todo = run.prepare()
        resumed = run.n_chunks - len(todo)
        start = time.perf_counter()
        progress = Progress(
            TextColumn("sweep"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("rows"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err_console(),
            transient=True,
            disable=json_out,
        )
        done_rows = 0
        with progress:
            task = progress.add_task(
                "sweep",
                total=grid.size,
                completed=grid.size - sum(run.rows_of(i)[1] - run.rows_of(i)[0] for i in todo),
                rate="",
            )

            def on_chunk(index: int, rows: int) -> None:
                nonlocal done_rows
                done_rows += rows
                elapsed = max(time.perf_counter() - start, 1e-9)
                progress.update(task, advance=rows, rate=f"{done_rows / elapsed:,.0f} rows/s")

            if backend == "dask":
                extra = tuple(str(p.resolve()) for p in hardware_db or ())
                written = run_dask(run, todo, scheduler, extra, on_chunk, workers, override)
            else:
                written = run_local(run, db, todo, on_chunk)
        elapsed = time.perf_counter() - start
        front = run.pareto_front()
        path = run.finish()
        if pareto is not None:
            import json

            from capsim.sweep.writers import atomic_write

            pareto.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(pareto, (json.dumps(front, indent=2) + "\n").encode())
        summary = {
            "output": str(path),
            "rows_in_grid": grid.size,
            "chunks": run.n_chunks,
            "resumed_chunks": resumed,
            "rows_written_this_run": written,
            "seconds": elapsed,
            "rows_per_s": done_rows / elapsed if elapsed > 0 else None,
            "pareto_front": front,
        }
        if json_out:
            print_json(summary)
            return
        console = out_console()
        console.print(
            f"wrote {path} ({grid.size:,} configurations in {run.n_chunks} chunks"
            + (f", {resumed} resumed" if resumed else "")
            + f"; {elapsed:.2f} s)"
        )
        if front:
            table = Table(
                title="Pareto front: lowest TPOT vs highest decode tokens/s (feasible rows)",
                title_justify="left",
            )
            for col in (
                "model",
                "hardware",
                "gpus",
                "weight",
                "layout",
                "batch",
                "prompt",
                "gen",
                "TPOT ms",
                "tok/s",
            ):
                table.add_column(
                    col, justify="right" if col not in ("model", "hardware", "weight", "layout") else "left"
                )
            for r in front[:20]:
                table.add_row(
                    r["model"],
                    r["hardware"],
                    str(r["gpus"]),
                    r["weight_dtype"],
                    r.get("layout") or "tp",
                    str(r["batch"]),
                    str(r["prompt_len"]),
                    str(r["gen_len"]),
                    f"{1e3 * r['tpot_s']:.2f}",
                    f"{r['decode_tokens_per_s']:,.0f}",
                )
            console.print(table)
            if len(front) > 20:
                console.print(
                    f"… {len(front) - 20} more on the front" + (f" (all in {pareto})" if pareto else "")
                )

    @app.command(help="Print the per-operation FLOPs and bytes formulas the engine uses, for a model.")
    def explain(
        model: Annotated[str, typer.Option(help="model id or config.json path")] = "mixtral-8x7b",
        phase: Annotated[str, typer.Option(help="decode or prefill (MLA attention differs)")] = "decode",
        json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    ) -> None:
        from capsim.engine.explain import attention_kinds
        from capsim.engine.explain import explain as explain_ops
        from capsim.engine.formulas import SYMBOL_MEANINGS
        from capsim.errors import ScenarioError
        from capsim.models.db import resolve_model

        if phase not in ("decode", "prefill"):
            raise ScenarioError(f"unknown phase {phase!r}; choose decode or prefill")
        spec = resolve_model(model)
        ops = explain_ops(spec, phase)
        kinds = attention_kinds(spec, phase)
        if json_out:
            print_json(
                {
                    "model": spec.id,
                    "phase": phase,
                    "ops": [
                        {
                            "name": o.name,
                            "applies_to": o.applies_to,
                            "flops": str(o.flops),
                            "bytes": str(o.bytes),
                            "flops_model": str(o.flops_model),
                            "bytes_model": str(o.bytes_model),
                        }
                        for o in ops
                    ],
                    "attention_layers": [
                        {
                            "window": k.window,
                            "layers": k.layers,
                            "pairs": str(k.pairs),
                            "kv_read_tokens": str(k.kv_read_tokens),
                        }
                        for k in kinds
                    ],
                    "symbols": {str(s): m for s, m in SYMBOL_MEANINGS.items()},
                }
            )
            return
        console = out_console()
        console.print(
            f"[bold]{spec.id}[/bold] — per-layer operation costs ({phase}); each op takes "
            "max(FLOPs / (F_peak·η_c), bytes / (BW_peak·η_m)), split over the TP ranks (docs/metrics.md)"
        )
        for o in ops:
            console.print(f"[bold]{o.name}[/bold] — {o.description}; {o.applies_to}")
            console.print(f"  FLOPs = {o.flops}  =  {o.flops_model}")
            console.print(f"  bytes = {o.bytes}  =  {o.bytes_model}")
        where = (
            "c = context of the new token"
            if phase == "decode"
            else "P = prompt length; pairs of the whole prefill, shared among its chunks by tokens; T = chunk tokens"
        )
        console.print(f"attention core inputs per layer kind ({where}):")
        for k in kinds:
            label = "full attention" if k.window is None else f"sliding window {k.window}"
            console.print(
                f"  {label} ({k.layers} layers): pairs = {k.pairs}, kv_read_tokens = {k.kv_read_tokens}"
            )
        console.print("symbols:")
        for s, meaning in SYMBOL_MEANINGS.items():
            console.print(f"  {s} — {meaning}")
