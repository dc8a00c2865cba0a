"""Option values converted without pydantic where the answer is plain (issue 15: start-up).

typer 0.29 converts every option's value through a pydantic ``TypeAdapter``: importing pydantic and building
the adapters costs about 0.07 s of CPU on each run, most of ``capsim predict``'s budget beyond numpy. capsim's
options are ``str``, ``int``, ``float``, ``bool``, ``Path`` and lists of them with no constraints, and almost
every value is a plain decimal number, a string or a default of the right type. For those this module gives
the value pydantic would give; for anything else (``1_000``, ``1.0`` as an integer, `` 5``, ``inf``, a value
that is wrong) it hands the value to typer's own converter, so the result and the error message are typer's.
``tests/test_cli_coercion.py`` checks both agree on every kind of input.

This uses two names typer does not document: ``RuntimeParam`` and the parameter's ``_runtime_param`` slot (what
``get_runtime_param`` returns once set); the test fails when a typer release changes them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, get_args, get_origin

from typer._click import Context
from typer._coercion import RuntimeParam, build_runtime_param
from typer._param_types import coerce_cli_path
from typer.core import _TyperParameter

_INT = re.compile(r"[+-]?[0-9]{1,4000}")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_EXACT_FLOAT_INT = 2**53  # ints below this convert to float exactly (pydantic's float(int) then agrees)
_LEAVES = (str, int, float, bool, Path)
_MISS = object()


def _leaf(annotation: Any, value: Any) -> Any:
    """``value`` converted to ``annotation`` as pydantic would, or ``_MISS`` when the case is not plain."""
    if annotation is str:
        return value if isinstance(value, str) else _MISS
    if annotation is bool:
        return value if isinstance(value, bool) else _MISS
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and _INT.fullmatch(value):
            return int(value)
        return _MISS
    if annotation is float:
        if isinstance(value, float):
            return value
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) < _EXACT_FLOAT_INT:
            return float(value)
        if isinstance(value, str) and _FLOAT.fullmatch(value):
            return float(value)
        return _MISS
    if annotation is Path:
        if isinstance(value, Path):
            return value
        return Path(value) if isinstance(value, str) else _MISS
    return _MISS


def _plain(annotation: Any, value: Any) -> Any:
    if get_origin(annotation) is list:
        if not isinstance(value, (list, tuple)):
            return _MISS
        (item_type,) = get_args(annotation)
        items = [_leaf(item_type, item) for item in value]
        return _MISS if any(item is _MISS for item in items) else items
    return _leaf(annotation, value)


class PlainRuntimeParam(RuntimeParam):
    """Converts plain values itself and everything else through typer's converter (built when first needed)."""

    def _coerce_value(self, value: Any, param: _TyperParameter, ctx: Context) -> Any:
        converted = _plain(self.annotation, value)
        if converted is _MISS:
            return build_runtime_param(param.type_descriptor)._coerce_value(value, param=param, ctx=ctx)
        if self.annotation is Path or get_args(self.annotation) == (Path,):
            # typer's path step (stat, dash handling) on the Path pydantic would have made; a name the system
            # cannot stat (a NUL byte: ValueError) is an error pydantic words, so typer's converter answers
            try:
                if isinstance(converted, list):
                    return [self._path(p, param, ctx) for p in converted]
                return self._path(converted, param, ctx)
            except ValueError:
                return build_runtime_param(param.type_descriptor)._coerce_value(value, param=param, ctx=ctx)
        return converted

    def _path(self, value: Path, param: _TyperParameter, ctx: Context) -> Any:
        return coerce_cli_path(value, self.parameter_info, path_type=Path, param=param, ctx=ctx)


def _supported(param: _TyperParameter) -> bool:
    descriptor = param.type_descriptor
    info = descriptor.parameter_info
    annotation: Any = descriptor.annotation
    if get_origin(annotation) is list:
        args = get_args(annotation)
        if len(args) != 1:
            return False
        annotation = args[0]
    plain_info = (
        info.parser is None
        and info.min is None
        and info.max is None
        and not info.exists
        and not info.resolve_path
        and not info.allow_dash
        and info.path_type is None
    )
    return annotation in _LEAVES and descriptor.file_annotation is None and plain_info


def use_plain_conversion(command: Any) -> Any:
    """Give every plain option of ``command`` (and of its subcommands) :class:`PlainRuntimeParam`, its
    ``--help`` option included (click makes that one on first use and caches it; capsim sets no
    ``help_option_names``, so a bare context makes the same one)."""
    help_option = command.get_help_option(Context(command))
    for param in [*getattr(command, "params", ()), *([help_option] if help_option else [])]:
        if isinstance(param, _TyperParameter) and _supported(param):
            param._runtime_param = PlainRuntimeParam(
                parameter_info=param.type_descriptor.parameter_info,
                annotation=param.type_descriptor.annotation,
            )
    for sub in getattr(command, "commands", {}).values():
        use_plain_conversion(sub)
    return command
