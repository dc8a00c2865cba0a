"""The ``capsim`` command line: a thin layer over the library API (formatting only).

Every command module under ``capsim.cli`` exposes ``register(app)``. Errors: library code raises
:class:`capsim.errors.CapsimError`; it is caught exactly once, in :class:`_CapsimGroup.invoke`, printed as one
``error: …`` line on stderr, and the process exits with status 1. No traceback for user errors.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from typer.core import TyperGroup

from capsim.cli._console import err_console
from capsim.errors import CapsimError

if TYPE_CHECKING:  # the click that typer vendors: its Context is what the group's methods receive
    from typer._click.core import Context as ClickContext
    from typer.models import CommandInfo


class _CapsimGroup(TyperGroup):
    """Top-level command group: turns any CapsimError raised below it into one error line and exit 1, and a
    usage error (unknown option or command, a value of the wrong type) into one error line and exit 2."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        from typer import _click  # the click typer ships (its exceptions are what the parser raises)

        from capsim.cli._coercion import use_plain_conversion

        use_plain_conversion(self)  # the root's own options (--version); commands get it in _convert
        try:
            result = super().main(
                args,
                prog_name,
                complete_var,
                standalone_mode=False,
                windows_expand_args=windows_expand_args,
                **extra,
            )
        except _click.exceptions.NoArgsIsHelpError as exc:
            if not standalone_mode:
                raise
            sys.exit(exc.exit_code)  # bare `capsim` / `capsim hardware`: the help text was printed, as before
        except _click.exceptions.UsageError as exc:
            if not standalone_mode:
                raise
            where = exc.ctx.command_path if exc.ctx is not None else "capsim"
            message = " ".join(exc.format_message().split())  # one line, however the parser wrapped it
            err_console().print(
                f"[bold red]error[/bold red]: {escape(message)} (see: {escape(where)} --help)",
                highlight=False,
                soft_wrap=True,
            )
            sys.exit(exc.exit_code)
        except _click.exceptions.ClickException as exc:  # e.g. a file option that cannot be opened
            if not standalone_mode:
                raise
            err_console().print(
                f"[bold red]error[/bold red]: {escape(exc.format_message())}", highlight=False, soft_wrap=True
            )
            sys.exit(exc.exit_code)
        except typer.Abort:
            if not standalone_mode:
                raise
            err_console().print("aborted", highlight=False)
            sys.exit(1)
        if not standalone_mode:
            return result
        sys.exit(result if isinstance(result, int) else 0)

    # Commands are converted from their typer declarations to click commands on first use: typer would
    # otherwise build every command's parameters (signature and annotation evaluation, ~0.2 s) at each start,
    # though one run uses one command.
    def list_commands(self, ctx: ClickContext) -> list[str]:
        return list(dict.fromkeys([*super().list_commands(ctx), *_declared_names()]))

    def get_command(self, ctx: ClickContext, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is None and self._listing:
            command = _summary(cmd_name)
        if command is None:
            command = _convert(cmd_name)
            if command is not None:
                self.add_command(command, cmd_name)
        return command

    # `capsim --help` lists each command's name and short help: for that, a command without its parameters
    # (building all of them is ~0.04 s CPU, a sixth of --help) and not kept, so a run converts it properly.
    _listing = False

    def format_help(self, ctx: ClickContext, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def resolve_command(self, ctx: ClickContext, args: list[str]) -> Any:
        from difflib import get_close_matches

        from typer import _click

        try:
            return super().resolve_command(ctx, args)
        except _click.exceptions.UsageError as exc:
            # typer suggests among the commands built so far; suggest among all of them
            matches = get_close_matches(args[0], self.list_commands(ctx)) if args else []
            if matches and "Did you mean" not in exc.message:
                exc.message = (
                    f"{exc.message.rstrip('.')}. Did you mean {', '.join(repr(m) for m in matches)}?"
                )
            raise

    def invoke(self, ctx: ClickContext) -> Any:  # typer vendors click; do not import it
        try:
            return super().invoke(ctx)
        except CapsimError as exc:
            # escape: messages may contain [brackets] (e.g. capsim[profile]) that rich would eat as markup
            err_console().print(
                f"[bold red]error[/bold red]: {escape(str(exc))}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(code=1) from None
        except OSError as exc:
            # a path the user gave that the system refuses (name too long, permission denied, disk full):
            # the system's reason and the path, as one line
            where = f"{exc.filename}: " if exc.filename else ""
            if len(where) > 120:
                where = where[:100] + "…: "
            err_console().print(
                f"[bold red]error[/bold red]: {escape(where + (exc.strerror or str(exc)))}; "
                "check the path and try again",
                highlight=False,
                soft_wrap=True,
            )
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
        from capsim import __version__

        print(f"capsim {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Analytical simulator and cost model for sparse MoE LLM inference. Metrics: see docs/metrics.md."""


_MODULES: dict[str, tuple[str, ...]] = {
    "predict": ("predict",),
    "fit": ("fit",),
    "hardware": ("hardware", "profile"),  # profile adds `hardware calibrate` to the group
    "model": ("model",),
    "trace": ("trace",),
    "profile": ("profile",),
    "validate": ("profile",),
    "calibrate": ("profile",),
    "compare": ("cost",),
    "plan": ("cost",),
    "radar": ("cost",),
    "sweep": ("sweep",),
    "explain": ("sweep",),
    "measure": ("measure",),
    "serve": ("serve",),
}
"""Which modules of ``capsim.cli`` declare each command: a run imports those only (importing every command's
module costs ~0.05 s of start-up). ``tests/test_cli_coercion.py`` checks this against the declarations."""
_ORDER = ("predict", "fit", "hardware", "model", "trace", "profile", "cost", "sweep", "measure", "serve")
"""Every command module, in the order of the help listing."""
_REGISTRIES: dict[str, typer.Typer] = {}
"""Each imported command module's declarations (its ``register``), by module name."""


def _registry(module: str) -> typer.Typer:
    registry = _REGISTRIES.get(module)
    if registry is None:
        import importlib

        registry = typer.Typer()
        importlib.import_module(f"capsim.cli.{module}").register(registry)
        _REGISTRIES[module] = registry
    return registry


def _declared(modules: Sequence[str] = _ORDER) -> tuple[list[CommandInfo], list[Any]]:
    """The commands and the groups ``modules`` declare, in listing order (commands first, then groups)."""
    registries = [_registry(m) for m in _ORDER if m in modules]
    commands = [info for r in registries for info in r.registered_commands]
    return commands, [group for r in registries for group in r.registered_groups]


def _command_name(info: CommandInfo) -> str:
    """The name typer gives a declared command: its explicit name, else its function's, dashed."""
    from typer.main import get_command_name

    if info.name:
        return info.name
    assert info.callback is not None  # @app.command() always records the decorated function
    return get_command_name(info.callback.__name__)


def _declared_names() -> list[str]:
    commands, groups = _declared()
    return [_command_name(info) for info in commands] + [str(info.name) for info in groups]


def _summary(name: str) -> Any:
    """Command ``name`` as the help listing shows it (name, help, panel; no parameters), or None for a group
    or an unknown name. The help text is what typer's conversion takes: ``help=`` else the docstring."""
    import inspect

    from typer.core import TyperCommand

    for info in _declared(_MODULES.get(name, _ORDER))[0]:
        if _command_name(info) == name:
            return TyperCommand(
                name=name,
                help=inspect.getdoc(info.callback) if info.help is None else inspect.cleandoc(info.help),
                short_help=info.short_help,
                hidden=info.hidden,
                deprecated=info.deprecated,
                rich_markup_mode=app.rich_markup_mode,
                rich_help_panel=info.rich_help_panel,
            )
    return None


def _convert(name: str) -> Any:
    from typer.main import get_command_from_info, get_group_from_info

    from capsim.cli._coercion import use_plain_conversion  # option values without pydantic (start-up)

    commands, groups = _declared(_MODULES.get(name, _ORDER))
    for info in commands:
        if _command_name(info) == name:
            return use_plain_conversion(
                get_command_from_info(
                    info,
                    pretty_exceptions_short=app.pretty_exceptions_short,
                    rich_markup_mode=app.rich_markup_mode,
                )
            )
    for group in groups:
        if group.name == name:
            return use_plain_conversion(
                get_group_from_info(
                    group,
                    pretty_exceptions_short=app.pretty_exceptions_short,
                    suggest_commands=app.suggest_commands,
                    rich_markup_mode=app.rich_markup_mode,
                )
            )
    return None


def main() -> None:
    """Console-script entry point."""
    app()
