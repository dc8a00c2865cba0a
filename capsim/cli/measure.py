"""CLI command ``capsim measure``: MBU, MFU, S-MBU and S-MFU of a run the user measured (formatting only).

The work happens in :mod:`capsim.engine.measure`; definitions in docs/metrics.md, MoE-CAP conventions in docs/cap.md.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any

import typer

from capsim.cli._console import out_console, print_json
from capsim.cli.hardware import HardwareDbOption, OverrideOption, load_db
from capsim.engine.scenario import Scenario

_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(Scenario)}


def _help(name: str) -> str:
    return Scenario.help_for(name)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:.2f}%"


def render_measure(result: Any) -> None:
    """The metrics table of a :class:`capsim.engine.measure.MeasureResult`, then its basis."""
    console = out_console()
    console.print(
        f"[bold]{result.model}[/bold] on {result.hardware} x{result.devices} · batch {result.batch} · "
        f"TPOT {result.tpot_s * 1e3:.2f} ms ({result.batch / result.tpot_s:,.1f} tok/s) · "
        f"convention: {result.convention}",
        soft_wrap=True,
    )
    for name, u in (("decode", result.decode), ("prefill", result.prefill)):
        if u is None:
            continue
        console.print(
            f"  {name:7s}  MBU {_pct(u.mbu)}  MFU {_pct(u.mfu)}  S-MBU {_pct(u.s_mbu)}  S-MFU {_pct(u.s_mfu)}"
        )
    if result.activated_per_layer_mean is not None:
        console.print(
            f"  activated experts per MoE layer (mean): {result.activated_per_layer_mean:.2f} "
            f"— {result.activated_source}",
            soft_wrap=True,
        )
    for key, value in result.basis.items():
        console.print(f"  {key}: {value}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    @app.command(
        help="MBU, MFU, S-MBU and S-MFU of a run you measured: give TPOT (or decode throughput), optionally "
        "TTFT, the configuration, and the activated experts (a count or an expert-count dump). "
        "--moecap-compat reproduces MoE-CAP's published code (docs/cap.md)."
    )
    def measure(
        model: Annotated[str, typer.Option(help=_help("model"))] = _DEFAULTS["model"],
        hardware: Annotated[str, typer.Option(help=_help("hardware"))] = _DEFAULTS["hardware"],
        gpus: Annotated[int | None, typer.Option(help="devices the run used (tensor parallel)")] = None,
        batch: Annotated[int, typer.Option(help="concurrent sequences in the measured decode steps")] = 1,
        prompt_len: Annotated[int, typer.Option(help=_help("prompt_len"))] = _DEFAULTS["prompt_len"],
        gen_len: Annotated[int, typer.Option(help=_help("gen_len"))] = _DEFAULTS["gen_len"],
        weight_dtype: Annotated[str | None, typer.Option(help=_help("weight_dtype"))] = None,
        kv_dtype: Annotated[str, typer.Option(help=_help("kv_dtype"))] = _DEFAULTS["kv_dtype"],
        tpot: Annotated[
            str | None, typer.Option(help="measured TPOT (time per output token of one sequence): 50ms, 0.05")
        ] = None,
        throughput: Annotated[
            float | None,
            typer.Option(help="measured decode throughput in tokens/s over the batch (instead of --tpot)"),
        ] = None,
        ttft: Annotated[
            str | None, typer.Option(help="measured TTFT of the batch's prefill: 200ms, 1.5s (optional)")
        ] = None,
        activated_experts: Annotated[
            str | None,
            typer.Option(
                help="measured distinct experts per MoE layer per decode step: one mean, or comma-separated "
                "per layer"
            ),
        ] = None,
        expert_counts: Annotated[
            Path | None,
            typer.Option(
                help="expert-count dump: MoE-CAP *_expert_counts.csv, JSON (layers x experts) or JSON lines "
                "of per-pass records with expert_counts"
            ),
        ] = None,
        moecap_records: Annotated[
            Path | None,
            typer.Option(
                help="MoE-CAP per-pass records (detailed_results_*.jsonl: forward_mode, expert_activation, "
                "batch_size, seq_lens_sum, latency/tpot/ttft); read with --moecap-compat"
            ),
        ] = None,
        moecap_compat: Annotated[
            bool,
            typer.Option(
                "--moecap-compat", help="use MoE-CAP's published code conventions instead of the paper's"
            ),
        ] = False,
        engine: Annotated[
            str,
            typer.Option(help="--moecap-compat: the engine measured (sglang or vllm: seq_lens_sum differs)"),
        ] = "sglang",
        hardware_db: HardwareDbOption = None,
        override: OverrideOption = False,
        json_out: Annotated[
            bool, typer.Option("--json", help="print one JSON object instead of text")
        ] = False,
    ) -> None:
        from capsim.economics.plan import parse_duration
        from capsim.engine.measure import Measurement, load_expert_counts, load_moecap_records
        from capsim.engine.measure import measure as run_measure
        from capsim.errors import ScenarioError

        if activated_experts is not None and expert_counts is not None:
            raise ScenarioError("give --activated-experts or --expert-counts, not both")
        activated: tuple[float, ...] | None = None
        source = ""
        if activated_experts is not None:
            try:
                activated = tuple(float(x) for x in activated_experts.split(",") if x.strip())
            except ValueError:
                raise ScenarioError(
                    f"--activated-experts {activated_experts!r}: write a number (6.44) or comma-separated "
                    "numbers, one per MoE layer"
                ) from None
            source = "given (--activated-experts)"
        elif expert_counts is not None:
            activated = tuple(float(x) for x in load_expert_counts(expert_counts))
            source = f"counted from {expert_counts} (experts with a count > 0, per layer)"
        measured = Measurement(
            tpot_s=None if tpot is None else parse_duration(tpot),
            decode_tokens_per_s=throughput,
            ttft_s=None if ttft is None else parse_duration(ttft),
            activated_per_layer=activated,
            activated_source=source,
        )
        scenario = Scenario(
            model=model,
            hardware=hardware,
            gpus=gpus,
            batch=batch,
            prompt_len=prompt_len,
            gen_len=gen_len,
            weight_dtype=weight_dtype,
            kv_dtype=kv_dtype,
        )
        result = run_measure(
            scenario,
            measured,
            hardware_db=load_db(hardware_db, override),
            convention="moecap-compat" if moecap_compat else "paper",
            engine=engine,
            records=None if moecap_records is None else load_moecap_records(moecap_records),
        )
        if json_out:
            print_json(result.to_dict())
        else:
            render_measure(result)
