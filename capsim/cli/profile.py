"""CLI commands of the profiling harness (formatting only; the work is in :mod:`capsim.profile`):

- ``capsim hardware calibrate`` (also ``capsim calibrate``): microbenchmarks -> a hardware entry;
- ``capsim profile``: time real MoE decode steps and prefills, record their routing traces;
- ``capsim validate``: calibrate + profile + predict + compare; exit 1 when the median decode error is too big.

All three need PyTorch (``pip install 'capsim[profile]'``); without it they print the install hint.
"""

from __future__ import annotations

import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from capsim.cli._console import err_console, out_console, print_json
from capsim.cli.hardware import HardwareDbOption, OverrideOption, hardware_app, load_db
from capsim.errors import ScenarioError

DEFAULT_OUT = Path("validation")

DeviceOption = Annotated[
    str, typer.Option("--device", help="cpu, cuda, cuda:N, or auto (CUDA when available).")
]
ThreadsOption = Annotated[
    int | None,
    typer.Option(
        "--threads",
        help="PyTorch CPU threads (default: 1 with --quick, steadier on a shared machine; else one per core).",
        show_default=False,
    ),
]
QuickOption = Annotated[
    bool, typer.Option("--quick/--full", help="quick: CI-sized (a few small shapes, ~1-2 min on 2 cores).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
ModelOption = Annotated[
    str, typer.Option("--model", help="model id (capsim model list) whose layer shapes to run.")
]


def _command_line() -> str:
    return shlex.join(["capsim", *sys.argv[1:]])


def _progress(quiet: bool) -> Any:
    console = err_console()
    return (lambda message: None) if quiet else (lambda message: console.print(f"[dim]{message}[/dim]"))


def _threads(threads: int | None, quick: bool) -> int | None:
    return threads if threads is not None else (1 if quick else None)


def _run_dir(out_dir: Path, slug: str, quick: bool) -> Path:
    """``<out_dir>/<machine>-<date>[-quick]``, or with ``-2``, ``-3`` … when a run of the same day already
    wrote there: each run gets its own folder, so two runs are never mixed."""
    day = datetime.now(UTC).date().isoformat()
    return _unused(out_dir / f"{slug}-{day}{'-quick' if quick else ''}")


def _unused(path: Path, suffixes: tuple[str, ...] = ("",)) -> Path:
    """``path``, or ``path-2``, ``path-3`` … : the first for which no ``<name><suffix>`` exists yet."""
    candidate, n = path, 1
    while any(candidate.with_name(candidate.name + sfx).exists() for sfx in suffixes):
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


def _slug_now(device: str, threads: int | None, what: str) -> str:
    from capsim.profile._torch import require_torch, resolve_device
    from capsim.profile.harness import machine_info, set_threads

    torch = require_torch(what)
    set_threads(torch, threads)
    return str(machine_info(resolve_device(torch, device))["slug"])


# --------------------------------------------------------------------------------------------- calibrate
def calibrate_command(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="entry file (<id>.toml) or folder; default validation/<machine>-<date>[-quick]/",
            show_default=False,
        ),
    ] = None,
    entry_id: Annotated[
        str | None,
        typer.Option(
            "--id", help="entry id (default calibrated-<machine>-<date>[-quick])", show_default=False
        ),
    ] = None,
    device: DeviceOption = "auto",
    threads: ThreadsOption = None,
    quick: Annotated[
        bool, typer.Option("--quick/--full", help="quick: smaller arrays, fewer repetitions.")
    ] = False,
    peak_bw_gb_s: Annotated[
        float | None,
        typer.Option("--peak-bw-gb-s", help="nominal memory bandwidth, GB/s", show_default=False),
    ] = None,
    peak_tflops_fp32: Annotated[
        float | None,
        typer.Option("--peak-tflops-fp32", help="nominal dense fp32 peak, TFLOPS", show_default=False),
    ] = None,
    peak_tflops_bf16: Annotated[
        float | None,
        typer.Option("--peak-tflops-bf16", help="nominal dense bf16 peak, TFLOPS", show_default=False),
    ] = None,
    peak_tflops_fp16: Annotated[
        float | None,
        typer.Option("--peak-tflops-fp16", help="nominal dense fp16 peak, TFLOPS", show_default=False),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Measure this machine (memory bandwidth, matmul FLOPS, overheads) and write a hardware entry.

    Use it with any command: --hardware-db <file> --hardware <id>.
    """
    from capsim.profile.calibrate import calibrate, write_entry, write_report

    threads = _threads(threads, quick)
    nominal = {
        k: v
        for k, v in (("fp32", peak_tflops_fp32), ("bf16", peak_tflops_bf16), ("fp16", peak_tflops_fp16))
        if v
    }
    cal = calibrate(
        device=device,
        quick=quick,
        nominal_bw_gb_s=peak_bw_gb_s,
        nominal_tflops=nominal,
        command=_command_line(),
        threads=threads,
        progress=_progress(as_json),
    )
    if out is None:
        out = _run_dir(DEFAULT_OUT, str(cal.machine["slug"]), quick)
        # one id per run folder, so that --hardware-db validation/ never sees the same id twice
        entry_id = entry_id or f"calibrated-{out.name}"
    path = write_entry(cal, out, entry_id)
    report = write_report(cal, path.with_name(f"{path.stem}.calibration.json"))
    if as_json:
        print_json({"entry_file": str(path), "report_file": str(report), **cal.to_dict()})
        return
    _render_calibration(cal, path, report)


def _render_calibration(cal: Any, path: Path, report: Path) -> None:
    console = out_console()
    table = Table(
        title=f"calibration of {cal.machine.get('gpu') or cal.machine['cpu']}", title_justify="left"
    )
    table.add_column("measurement")
    table.add_column("value", justify="right")
    table.add_column("spread", justify="right")
    for name, m in cal.memory.items():
        table.add_row(f"memory {name}", f"{m.value:,.1f} GB/s", f"{m.timing.spread:.0%}")
    for name, m in cal.matmul.items():
        listed = "" if name in cal.native_precisions() else " (emulated: not listed)"
        table.add_row(f"matmul {name}{listed}", f"{m.value * 1e3:,.3g} GFLOPS", f"{m.timing.spread:.0%}")
    for name, m in cal.host_device.items():
        table.add_row(f"host-device {name}", f"{m.value:,.1f} GB/s", f"{m.timing.spread:.0%}")
    table.add_row(
        "op dispatch overhead",
        f"{cal.op_overhead.value * 1e6:.2f} µs",
        f"{cal.op_overhead.timing.spread:.0%}",
    )
    table.add_row("per-layer overhead", f"{cal.per_layer_overhead_s * 1e6:,.0f} µs", "")
    table.add_row("per-step overhead", f"{cal.step_overhead_s * 1e6:,.0f} µs", "")
    console.print(table)
    console.print(f"entry: {path}  (use: --hardware-db {path} --hardware {path.stem})")
    console.print(f"all samples: {report}")


# --------------------------------------------------------------------------------------------- profile
BatchOption = Annotated[
    list[int] | None,
    typer.Option(
        "--batch", help="decode batch size (repeatable; replaces the plan's list)", show_default=False
    ),
]
ContextOption = Annotated[
    list[int] | None,
    typer.Option(
        "--context",
        help="decode context in tokens (repeatable; replaces the plan's list)",
        show_default=False,
    ),
]
PrefillOption = Annotated[
    list[str] | None,
    typer.Option(
        "--prefill",
        help="prefill case BATCHxPROMPT, e.g. 1x512 (repeatable; replaces the plan's list)",
        show_default=False,
    ),
]


def _parse_prefill(text: str) -> tuple[int, int]:
    batch, sep, prompt = text.lower().partition("x")
    try:
        if not sep:
            raise ValueError
        return int(batch), int(prompt)
    except ValueError:
        raise ScenarioError(f"--prefill {text!r} must be BATCHxPROMPT, e.g. 1x512") from None


def _plan(
    model: str,
    quick: bool,
    device: str,
    threads: int | None,
    layers: int | None,
    dtype: str,
    batches: list[int] | None = None,
    contexts: list[int] | None = None,
    prefills: list[str] | None = None,
) -> Any:
    from dataclasses import replace

    from capsim.profile.harness import full_plan, grid, quick_plan

    plan = quick_plan(model, device, threads) if quick else full_plan(model, device, threads)
    if batches or contexts or prefills:
        decode = [c for c in plan.cases if c.phase == "decode"]
        cases = grid(
            batches or sorted({c.batch for c in decode}),
            contexts or sorted({c.context for c in decode}),
            [_parse_prefill(p) for p in prefills]
            if prefills
            else [(c.batch, c.context) for c in plan.cases if c.phase == "prefill"],
        )
        plan = replace(plan, cases=cases)
    return replace(plan, num_layers=layers, dtype=dtype)


def profile_command(
    model: ModelOption = "olmoe-1b-7b",
    quick: QuickOption = False,
    layers: Annotated[
        int | None,
        typer.Option(
            "--layers", help="decoder layers to run (default: as many as fit, quick 2)", show_default=False
        ),
    ] = None,
    device: DeviceOption = "auto",
    dtype: Annotated[
        str, typer.Option("--dtype", help="fp32, bf16, fp16 or auto (fp32 on CPU, bf16 on GPU).")
    ] = "auto",
    threads: ThreadsOption = None,
    batch: BatchOption = None,
    context: ContextOption = None,
    prefill: PrefillOption = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="results folder (default validation/<machine>-<date>[-quick]/)", show_default=False
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Time real MoE decode steps and prefills in PyTorch (a model's real shapes, random weights, its real
    router); write profile.json and one routing trace per case."""
    from capsim.profile.harness import run_profile

    threads = _threads(threads, quick)
    plan = _plan(model, quick, device, threads, layers, dtype, batch, context, prefill)
    target = (
        out if out is not None else _run_dir(DEFAULT_OUT, _slug_now(device, threads, "capsim profile"), quick)
    )
    run = run_profile(plan, target, command=_command_line(), progress=_progress(as_json))
    if as_json:
        print_json({"results_file": str(run.path), **run.to_dict()})
        return
    console = out_console()
    table = Table(title=f"{run.model}, first {run.num_layers} layers, {run.dtype}", title_justify="left")
    for col in ("case", "tokens/step", "experts/layer", "median ms", "spread"):
        table.add_column(col, justify="left" if col == "case" else "right")
    for c in run.cases:
        experts = sum(c.activated_experts) / len(c.activated_experts)
        table.add_row(
            c.case.name,
            str(c.case.tokens),
            f"{experts:.1f}",
            f"{c.timing.median_s * 1e3:,.2f}",
            f"{c.timing.spread:.0%}",
        )
    console.print(table)
    console.print(f"results: {run.path} (traces in {Path(str(run.path)).parent / 'traces'})")


# --------------------------------------------------------------------------------------------- validate
def validate_command(
    quick: QuickOption = False,
    model: ModelOption = "olmoe-1b-7b",
    device: DeviceOption = "auto",
    threads: ThreadsOption = None,
    layers: Annotated[
        int | None,
        typer.Option(
            "--layers", help="decoder layers to run (default: as many as fit, quick 2)", show_default=False
        ),
    ] = None,
    batch: BatchOption = None,
    context: ContextOption = None,
    prefill: PrefillOption = None,
    hardware_db: HardwareDbOption = None,
    override: OverrideOption = False,
    hardware: Annotated[
        str | None,
        typer.Option(
            "--hardware",
            help="entry to predict with (default: calibrate now; or the stem of a single --hardware-db file)",
            show_default=False,
        ),
    ] = None,
    profile: Annotated[
        Path | None,
        typer.Option("--profile", help="reuse a profile.json instead of profiling now", show_default=False),
    ] = None,
    routing: Annotated[
        str, typer.Option("--routing", help="trace (replay each case's recorded routing) or a router spec.")
    ] = "trace",
    threshold: Annotated[
        float, typer.Option("--threshold", help="largest median |error| of decode-step time that passes.")
    ] = 0.25,
    out_dir: Annotated[Path, typer.Option("--out-dir", help="where results go.")] = DEFAULT_OUT,
    as_json: JsonOption = False,
    published: Annotated[
        bool,
        typer.Option(
            "--published",
            help="score capsim on published third-party measurements instead (no torch needed; "
            "docs/validation.md); exit 1 when a gate of issue 13 is missed",
        ),
    ] = False,
    published_file: Annotated[
        Path | None,
        typer.Option(
            "--published-file", help="measurement set to score (default: the shipped one)", show_default=False
        ),
    ] = None,
    group: Annotated[
        list[str] | None,
        typer.Option(
            "--group", help="with --published: score only this group (repeatable)", show_default=False
        ),
    ] = None,
) -> None:
    """Calibrate this machine, profile real MoE steps, predict each with capsim and compare.

    Writes validation/<machine>-<date>[-quick].json and .md; exits with status 1 when the median error of
    decode-step time exceeds the threshold. With --published: score capsim on the published measurement set.
    """
    if published or published_file is not None:
        from capsim.cli.published import run_published

        db = load_db(list(hardware_db or []), override) if hardware_db else None
        run_published(published_file, group or [], db, as_json)
        return
    from capsim.profile.calibrate import calibrate, write_entry, write_report
    from capsim.profile.harness import load_run, run_profile
    from capsim.profile.validate import compare, engine_predictor, report_stem, write_validation

    command = _command_line()
    progress = _progress(as_json)
    threads = _threads(threads, quick)
    if hardware_db and hardware is None:
        files = [p for p in hardware_db if p.suffix == ".toml"]
        if len(hardware_db) != 1 or len(files) != 1:
            raise ScenarioError("with --hardware-db folders or several files, name the entry with --hardware")
        hardware = files[0].stem
    extra = list(hardware_db or [])
    run_dir: Path | None = None
    if hardware is None:
        progress("calibrating ...")
        cal = calibrate(device=device, quick=quick, command=command, threads=threads, progress=progress)
        run_dir = _run_dir(out_dir, str(cal.machine["slug"]), quick)
        entry = write_entry(cal, run_dir, f"calibrated-{run_dir.name}")
        write_report(cal, entry.with_name(f"{entry.stem}.calibration.json"))
        extra.append(entry)
        hardware = entry.stem
    db = load_db(extra, override)
    entry_file = getattr(db.get(hardware), "file", "")
    if profile is not None:
        run = load_run(profile)
    else:
        target = run_dir or _run_dir(out_dir, _slug_now(device, threads, "capsim validate"), quick)
        plan = _plan(model, quick, device, threads, layers, "auto", batch, context, prefill)
        run = run_profile(plan, target, command=command, progress=progress)
    report = compare(
        run,
        engine_predictor(run, hardware_id=hardware, hardware_db=db, routing=routing),
        threshold=threshold,
        hardware_id=hardware,
        hardware_file=str(entry_file),
        routing=routing,
        command=command,
        date=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    # a report of its own: the run folder's name when this run made one, else the first unused stem
    stem = (
        run_dir.name
        if run_dir is not None
        else _unused(out_dir / report_stem(report, quick), (".json", ".md")).name
    )
    json_path, md_path = write_validation(report, out_dir, stem)
    if as_json:
        print_json({"report_file": str(json_path), **report.to_dict()})
    else:
        _render_report(report, json_path, md_path)
    if not report.passed:
        err_console().print(f"[bold red]error[/bold red]: validation {report.verdict()}", highlight=False)
        raise typer.Exit(code=1)


def _render_report(report: Any, json_path: Path, md_path: Path) -> None:
    console = out_console()
    table = Table(
        title=f"{report.model} ({report.num_layers} layers, {report.dtype}) on {report.hardware_id}",
        title_justify="left",
    )
    for col in ("case", "experts/layer", "measured ms", "predicted ms", "error"):
        table.add_column(col, justify="left" if col == "case" else "right")
    for c in report.comparisons:
        colour = "green" if abs(c.error) <= report.threshold else "red"
        table.add_row(
            c.case.name,
            f"{c.activated_experts:.1f}",
            f"{c.measured_s * 1e3:,.2f}",
            f"{c.predicted_s * 1e3:,.2f}",
            f"[{colour}]{c.error:+.1%}[/{colour}]",
        )
    console.print(table)
    for phase in ("decode", "prefill"):
        med = report.median_abs_error(phase)
        if med is not None:
            console.print(f"{phase}: median |error| {med:.1%}, bias {report.median_error(phase):+.1%}")
    console.print(f"results: {json_path}, {md_path}")
    if report.passed:
        console.print(f"[green]{report.verdict()}[/green]")


def register(app: typer.Typer) -> None:
    """Add ``profile``, ``validate`` and ``calibrate`` to the top-level app and ``calibrate`` to the
    ``hardware`` group (``capsim hardware calibrate``)."""
    app.command("profile")(profile_command)
    app.command("validate")(validate_command)
    app.command("calibrate")(calibrate_command)
    hardware_app.command("calibrate")(calibrate_command)
