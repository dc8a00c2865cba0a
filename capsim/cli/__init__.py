"""The ``capsim`` command line: a thin layer over the library API (formatting only).

Every command module under ``capsim.cli`` exposes ``register(app)``. Errors: library code raises
:class:`capsim.errors.CapsimError`; it is caught exactly once, in :class:`_CapsimGroup.invoke`, printed as one
``error: …`` line on stderr, and the process exits with status 1. No traceback for user errors.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.markup import escape
from typer.core import TyperGroup

from ..errors import CapsimError
from ._console import err_console


class _CapsimGroup(TyperGroup):
    """Top-level command group: turns any CapsimError raised below it into one error line and exit 1, and a
    usage error (unknown option or command, a value of the wrong type) into one error line and exit 2."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        from typer import _click  # the click typer ships (its exceptions are what the parser raises)

        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except _click.exceptions.NoArgsIsHelpError as exc:
            if not standalone_mode:
                raise
            sys.exit(exc.exit_code)  # bare `capsim` / `capsim hardware`: the help text was printed, as before
        except _click.exceptions.UsageError as exc:
            if not standalone_mode:
                raise
            where = exc.ctx.command_path if exc.ctx is not None else "capsim"
            message = " ".join(exc.format_message().split())  # one line, however the parser wrapped it
            err_console().print(f"[bold red]error[/bold red]: {escape(message)} (see: {escape(where)} --help)",
                                highlight=False, soft_wrap=True)
            sys.exit(exc.exit_code)
        except _click.exceptions.ClickException as exc:  # e.g. a file option that cannot be opened
            if not standalone_mode:
                raise
            err_console().print(f"[bold red]error[/bold red]: {escape(exc.format_message())}", highlight=False,
                                soft_wrap=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            if not standalone_mode:
                raise
            err_console().print("aborted", highlight=False)
            sys.exit(1)
        if not standalone_mode:
            return result
        sys.exit(result if isinstance(result, int) else 0)

    def invoke(self, ctx: typer.Context) -> Any:  # typer vendors click; do not import it
        try:
            return super().invoke(ctx)
        except CapsimError as exc:
            # escape: messages may contain [brackets] (e.g. capsim[profile]) that rich would eat as markup
            err_console().print(f"[bold red]error[/bold red]: {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=1) from None
        except OSError as exc:
            # a path the user gave that the system refuses (name too long, permission denied, disk full):
            # the system's reason and the path, as one line
            where = f"{exc.filename}: " if exc.filename else ""
            if len(where) > 120:
                where = where[:100] + "…: "
            err_console().print(f"[bold red]error[/bold red]: {escape(where + (exc.strerror or str(exc)))}; "
                                "check the path and try again", highlight=False, soft_wrap=True)
            raise typer.Exit(code=1) from None


app = typer.Typer(
    cls=_CapsimGroup,
    name="capsim",
    help="Analytical simulator and cost model for sparse MoE LLM inference. Metrics: see docs/metrics.md.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        print(f"capsim {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Analytical simulator and cost model for sparse MoE LLM inference. Metrics: see docs/metrics.md."""


def _register_all() -> None:
    from . import cost, fit, hardware, model, predict, profile, sweep, trace

    for module in (predict, fit, hardware, model, trace, profile, cost, sweep):
        module.register(app)


_register_all()


def main() -> None:
    """Console-script entry point."""
    app()
