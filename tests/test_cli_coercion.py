"""capsim.cli._coercion converts option values as typer's pydantic converter does, without importing pydantic
for plain values; and the start-up paths (``--help``, ``predict``) import no heavy library they do not use."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import pytest
import typer
from hypothesis import example, given, settings
from hypothesis import strategies as st
from typer._click import Context
from typer._click.exceptions import BadParameter
from typer._coercion import build_runtime_param
from typer.main import get_command

from capsim.cli._coercion import PlainRuntimeParam, use_plain_conversion

ANNOTATIONS: dict[str, Any] = {
    "s": str,
    "i": int,
    "f": float,
    "b": bool,
    "p": Path,
    "ls": list[str],
    "li": list[int],
    "lp": list[Path],
}


def _command() -> Any:
    app = typer.Typer()

    @app.command()
    def one(
        s: Annotated[str, typer.Option()] = "x",
        i: Annotated[int, typer.Option()] = 1,
        f: Annotated[float, typer.Option()] = 1.0,
        b: Annotated[bool, typer.Option()] = False,
        p: Annotated[Path, typer.Option()] = Path("."),
        ls: Annotated[list[str] | None, typer.Option()] = None,
        li: Annotated[list[int] | None, typer.Option()] = None,
        lp: Annotated[list[Path] | None, typer.Option()] = None,
    ) -> None:
        pass

    @app.command()
    def two() -> None:
        pass

    return get_command(app)


GROUP = _command()
COMMAND = GROUP.commands["one"]
PARAMS = {p.name: p for p in COMMAND.params}
CTX = Context(COMMAND)


def _outcome(convert: Any, value: Any, name: str) -> tuple[str, Any]:
    try:
        return "value", convert._coerce_value(value, param=PARAMS[name], ctx=CTX)
    except BadParameter as exc:
        return "error", exc.format_message()
    except ValueError as exc:  # typer's own path step: os.stat of a name with a NUL byte
        return "error", f"{type(exc).__name__}: {exc}"


def _same(a: tuple[str, Any], b: tuple[str, Any]) -> bool:
    if a[0] != b[0]:
        return False
    x, y = a[1], b[1]
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return True
    return type(x) is type(y) and x == y


def _check(name: str, value: Any) -> None:
    param = PARAMS[name]
    plain = PlainRuntimeParam(
        parameter_info=param.type_descriptor.parameter_info, annotation=ANNOTATIONS[name]
    )
    typer_own = build_runtime_param(param.type_descriptor)  # pydantic's TypeAdapter
    ours, theirs = _outcome(plain, value, name), _outcome(typer_own, value, name)
    assert _same(ours, theirs), (name, value, ours, theirs)


numberish = st.from_regex(r"\A\s?[+-]?[0-9_]{0,6}(\.[0-9_]{0,4})?([eE][+-]?[0-9]{0,3})?\s?\Z")
values = st.one_of(
    numberish,
    st.text(max_size=12),
    st.sampled_from(["inf", "-inf", "nan", "NaN", "1e400", "-0", "0x10", "١٢", "", " ", "true", "no", "-"]),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(["s", "i", "f", "b", "p"]), value=values)
@example(name="i", value="1.0")  # pydantic takes this as 1: handed to it
@example(name="i", value="1_000")
@example(name="i", value="9" * 30)  # beyond 64 bits: still an int
@example(name="f", value=2**60)  # an int pydantic rounds to float
@example(name="p", value="")  # Path('.')
@example(name="p", value="a\x00b")  # os.stat raises ValueError in both
def test_plain_conversion_equals_typers(name: str, value: Any) -> None:
    _check(name, value)


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(["ls", "li", "lp"]),
    items=st.lists(st.one_of(numberish, st.text(max_size=6)), max_size=4),
)
def test_plain_conversion_of_lists_equals_typers(name: str, items: list[str]) -> None:
    _check(name, items)
    _check(name, tuple(items))


def test_every_option_and_help_gets_the_plain_converter() -> None:
    group = use_plain_conversion(_command())
    command = group.commands["one"]
    params = [*command.params, command.get_help_option(Context(command))]
    assert all(isinstance(p._runtime_param, PlainRuntimeParam) for p in params)


@pytest.mark.parametrize(
    "argv,unused",
    [
        (["--help"], ["numpy", "pydantic", "networkx", "sympy", "scipy", "matplotlib", "torch"]),
        (["predict"], ["pydantic", "networkx", "sympy", "scipy", "matplotlib", "torch"]),
    ],
)
def test_start_up_imports_nothing_it_does_not_use(argv: list[str], unused: list[str]) -> None:
    """What made start-up slow (issue 15): a library imported at start-up that the command never uses."""
    code = (
        "import sys, runpy\n"
        f"sys.argv = ['capsim', *{argv!r}]\n"
        "try:\n    runpy.run_module('capsim', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        f"print([m for m in {unused!r} if m in sys.modules], file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stderr.strip().splitlines()[-1] == "[]", done.stderr


def test_help_listing_summaries_equal_the_converted_commands() -> None:
    """`capsim --help` lists commands from summaries (no parameters built); each must show what the converted
    command would: the same help, short help, panel, hidden and deprecated flags."""
    from capsim.cli import _convert, _declared_names, _summary

    summarised = 0
    for name in _declared_names():
        summary = _summary(name)
        if summary is None:  # a group: converted as before
            continue
        summarised += 1
        command = _convert(name)
        for attr in ("name", "help", "short_help", "hidden", "deprecated", "rich_help_panel"):
            assert getattr(summary, attr) == getattr(command, attr), (name, attr)
        assert summary.get_short_help_str(80) == command.get_short_help_str(80)
    assert summarised >= 10


def test_each_command_names_the_modules_that_declare_it() -> None:
    """A run imports only the command modules ``capsim.cli._MODULES`` names: every declared command must be
    there, with the module that declares it (in a fresh process, so every module registers once)."""
    code = (
        "import importlib, typer\n"
        "from capsim.cli import _MODULES, _ORDER, _command_name\n"
        "home = {}\n"
        "for m in _ORDER:\n"
        "    t = typer.Typer()\n"
        "    importlib.import_module('capsim.cli.' + m).register(t)\n"
        "    for name in [_command_name(i) for i in t.registered_commands] + [g.name for g in t.registered_groups]:\n"
        "        home[name] = m\n"
        "from capsim.cli.hardware import hardware_app\n"
        "extra = {_command_name(i) for i in hardware_app.registered_commands} - {'list', 'show'}\n"
        "print(sorted(home) == sorted(_MODULES), all(home[n] in _MODULES[n] for n in home), extra)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "True True {'calibrate'}", done.stdout + done.stderr
    from capsim.cli import _MODULES

    assert "profile" in _MODULES["hardware"]  # the module that adds `hardware calibrate`
