"""The ``capsim`` command line: a thin layer over the library API (formatting only).

Every command module under ``capsim.cli`` exposes ``register(app)``. Errors: library code raises
:class:`capsim.errors.CapsimError`; it is caught exactly once, in :class:`_CapsimGroup.invoke`, printed as one
``error: …`` line on stderr, and the process exits with status 1. No traceback for user errors.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.markup import escape
from typer.core import TyperGroup

from ..errors import CapsimError
from ._console import err_console


class _CapsimGroup(TyperGroup):
    """Top-level command group: turns any CapsimError raised below it into one error line and exit 1."""

    def invoke(self, ctx: typer.Context) -> Any:  # typer vendors click; do not import it
        try:
            return super().invoke(ctx)
        except CapsimError as exc:
            # escape: messages may contain [brackets] (e.g. capsim[profile]) that rich would eat as markup
            err_console().print(f"[bold red]error[/bold red]: {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=1) from None


app = typer.Typer(
    cls=_CapsimGroup,
    name="capsim",
    help="Analytical simulator and cost model for sparse MoE LLM inference. Metrics: see docs/metrics.md.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register_all() -> None:
    from . import cost, fit, hardware, measure, model, predict, profile, serve, sweep, trace

    for module in (predict, fit, hardware, model, trace, profile, cost, sweep, measure, serve):
        module.register(app)


_register_all()


def main() -> None:
    """Console-script entry point."""
    app()
