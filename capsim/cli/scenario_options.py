"""The scenario's options on a command, built from :class:`capsim.engine.scenario.Scenario`'s fields: every option
is declared once (name, type, default, help) in the dataclass, and commands that take a whole scenario get them
from here instead of repeating them."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import fields
from typing import Annotated, Any, get_type_hints

import typer

from capsim.engine.scenario import Scenario

_FLAG_NAMES = {"prefill_chunk_tokens": "--prefill-chunk"}
"""Fields whose flag is not the field name with dashes (kept as the CLI has always spelt them)."""

_CLI_TYPES: dict[str, Any] = {"model": str}
"""Fields whose dataclass type the command line cannot give (a ModelSpec comes from a config.json path)."""


def _option(name: str, kind: Any) -> Any:
    flag = _FLAG_NAMES.get(name, "--" + name.replace("_", "-"))
    decls = (f"{flag}/--no-{flag[2:]}",) if kind is bool else (flag,)
    return Annotated[kind, typer.Option(*decls, help=Scenario.help_for(name))]


def scenario_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give ``command(scenario, **own)`` one option per Scenario field ahead of its own parameters; it is called
    with the Scenario they build."""
    own = [p for p in inspect.signature(command).parameters.values() if p.name != "scenario"]
    own_hints = get_type_hints(command, include_extras=True)
    hints = get_type_hints(Scenario)
    params: list[inspect.Parameter] = []
    annotations: dict[str, Any] = {}
    for f in fields(Scenario):
        annotations[f.name] = _option(f.name, _CLI_TYPES.get(f.name, hints[f.name]))
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default))
    for p in own:
        annotations[p.name] = own_hints[p.name]
        params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY))
    names = [f.name for f in fields(Scenario)]

    @functools.wraps(command)
    def run(**kwargs: Any) -> None:
        scenario = Scenario(**{name: kwargs.pop(name) for name in names})
        command(scenario, **kwargs)

    del run.__wrapped__  # typer must read the signature below, not the wrapped function's
    # inspect (and so typer) reads __signature__; typeshed does not declare it on functions
    run.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [p.replace(annotation=annotations[p.name]) for p in params]
    )
    run.__annotations__ = {**annotations, "return": None}
    return run
