"""``capsim validate --published``: the published-measurement score as a table or JSON (formatting only; the
work is in :mod:`capsim.validation.published`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from capsim.cli._console import err_console, out_console, print_json

if TYPE_CHECKING:
    from capsim.hardware.db import HardwareDB


def _fmt(value: float, metric: str) -> str:
    if metric in ("tpot_s", "ttft_s"):
        return f"{value * 1e3:,.2f} ms"
    return f"{value:,.0f} tok/s"


def run_published(
    path: Path | None, groups: Sequence[str], hardware_db: HardwareDB | None, as_json: bool
) -> None:
    """Score capsim on the measurement set at ``path`` (default: the shipped one); exit 1 when a gate fails."""
    from capsim.validation.published import score_published

    report = score_published(path, hardware_db=hardware_db, groups=groups)
    if as_json:
        print_json(report.to_dict())
    else:
        console = out_console()
        table = Table(
            title=f"capsim vs published measurements ({Path(report.source_file).name})", title_justify="left"
        )
        for col in ("case", "group", "metric", "measured", "predicted", "ratio", "error", "speed"):
            table.add_column(
                col, justify="left" if col in ("case", "group", "metric") else "right", overflow="fold"
            )
        for r in report.results:
            c = r.case
            metric = c.metric.replace("decode_tokens_per_s_", "decode tok/s ").replace("_", " ")
            predicted, error = r.predicted, r.error
            if predicted is None or error is None:  # no prediction (the error is None exactly then)
                table.add_row(
                    c.id, c.group, metric, _fmt(c.value, c.metric), f"[yellow]{r.status}[/yellow]", "", "", ""
                )
                continue
            colour = "green" if abs(error) <= 0.25 else "red"
            table.add_row(
                c.id,
                c.group,
                metric,
                _fmt(c.value, c.metric),
                _fmt(predicted, c.metric),
                f"{r.ratio:.2f}",
                f"[{colour}]{error:+.1%}[/{colour}]",
                f"{r.speed_ratio:.2f}x",
            )
        console.print(table)
        summary = Table(
            title="median |error| and geo-mean speed ratio (predicted/measured speed)", title_justify="left"
        )
        for col in ("group", "cases", "predicted", "median |error|", "geo-mean speed"):
            summary.add_column(col, justify="left" if col == "group" else "right")
        for g in [*report.groups(), report.overall()]:
            summary.add_row(
                g.name,
                str(g.cases),
                str(g.predicted),
                "-" if g.median_abs_error is None else f"{g.median_abs_error:.1%}",
                "-" if g.geomean_speed_ratio is None else f"{g.geomean_speed_ratio:.2f}x",
            )
        console.print(summary)
        for r in report.results:
            if r.status != "ok":
                console.print(f"{r.case.id}: {r.status}: {r.reason}", soft_wrap=True)
    failures = report.failures()
    if failures:
        err_console().print(
            f"[bold red]error[/bold red]: published-set gates missed: {'; '.join(failures)}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(code=1)
