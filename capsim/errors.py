"""capsim's exceptions. Every user-facing failure is a :class:`CapsimError` with a one-line message that
names the problem and the fix; the CLI catches ``CapsimError`` once and prints it without a traceback.

Hierarchy::

    CapsimError
    ├── UnknownIdError (KeyError)            unknown hardware / model / router id, with close matches
    │   ├── UnknownHardwareError
    │   ├── UnknownModelError
    │   └── UnknownRouterError
    ├── DataFileError (ValueError)           a malformed data file (hardware entry, config.json, trace)
    │   ├── ConfigFieldError                 a config.json field missing or of the wrong type
    │   └── TraceError                       a corrupt, truncated or mismatched routing trace
    ├── UnsupportedModelError (ValueError)   an architecture capsim does not model
    ├── ScenarioError (ValueError)           impossible scenario values (batch 0, negative lengths, bad layout)
    ├── DoesNotFitError (ValueError)         weights + KV + buffers exceed the memory available
    └── MissingValueError (LookupError)      a value the computation needs is absent from the database
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


class CapsimError(Exception):
    """Base class of every error capsim raises for bad input or missing data."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else self.__class__.__name__


class UnknownIdError(KeyError, CapsimError):
    """An id that is not in the database. Carries the close matches and the full list of valid ids."""

    kind = "id"

    def __init__(self, name: str, valid: Iterable[str], close_matches: Sequence[str] = ()) -> None:
        self.name = name
        self.valid = sorted(valid)
        self.close_matches = list(close_matches)
        super().__init__(self._message())

    def __str__(self) -> str:  # KeyError.__str__ (first in the MRO) would quote the message
        return str(self.args[0])

    def _message(self) -> str:
        msg = f"unknown {self.kind} {self.name!r}"
        if self.close_matches:
            msg += f"; did you mean {', '.join(repr(m) for m in self.close_matches)}?"
        else:
            shown = ", ".join(self.valid[:12]) + (", …" if len(self.valid) > 12 else "")
            msg += f"; valid ids: {shown}"
        return msg


class UnknownHardwareError(UnknownIdError):
    """A hardware id not found in the hardware database (``capsim hardware list`` shows them)."""

    kind = "hardware"


class UnknownModelError(UnknownIdError):
    """A model id not found in the model database (``capsim model list`` shows them)."""

    kind = "model"


class UnknownRouterError(UnknownIdError):
    """A router kind that :func:`capsim.make_router` does not know (the message lists the close matches)."""

    kind = "router"


class DataFileError(ValueError, CapsimError):
    """A data file (hardware entry, model config, trace) that cannot be parsed or fails validation."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class ConfigFieldError(DataFileError):
    """A config.json whose field ``field`` is missing or malformed."""

    def __init__(self, path: str, field: str, problem: str) -> None:
        self.field = field
        super().__init__(path, f"field {field!r} {problem}")


class TraceError(DataFileError):
    """A routing trace that is corrupt, truncated or does not match the model it is used with."""


class UnsupportedModelError(ValueError, CapsimError):
    """A model architecture capsim does not model (e.g. encoder-decoder)."""


class ScenarioError(ValueError, CapsimError):
    """Scenario values that cannot describe a real run (batch 0, negative lengths, invalid layouts)."""


class DoesNotFitError(ValueError, CapsimError):
    """The model's weights, KV cache and buffers exceed the memory of the devices that must hold them."""

    def __init__(self, required_bytes: float, available_bytes: float, where: str, hint: str = "") -> None:
        self.required_bytes = required_bytes
        self.available_bytes = available_bytes
        self.where = where
        self.hint = hint
        msg = (
            f"does not fit: needs {required_bytes / 1e9:,.1f} GB, {where} has {available_bytes / 1e9:,.1f} GB"
        )
        if hint:
            msg += f"; {hint}"
        super().__init__(msg)


class MissingValueError(LookupError, CapsimError):
    """A value needed by the computation is absent from a database entry (capsim never invents one)."""

    def __init__(self, entry: str, field: str, why: str = "") -> None:
        self.entry = entry
        self.field = field
        msg = f"{entry} has no {field!r} in its database entry"
        if why:
            msg += f" (needed for {why})"
        msg += "; add it with a source via --hardware-db, or choose another option"
        super().__init__(msg)


def read_user_toml(path: Path, flag: str) -> dict[str, Any]:
    """A TOML file the user named with ``flag``: its tables, or one DataFileError line saying what is wrong
    (syntax, encoding, unreadable path). Shared by every command that reads a user's TOML file."""
    import tomllib

    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise DataFileError(str(path), f"not valid TOML ({exc}); fix the syntax") from None
    except UnicodeDecodeError:
        raise DataFileError(str(path), "not UTF-8 text (TOML must be UTF-8); save it as UTF-8") from None
    except OSError as exc:
        raise DataFileError(str(path), f"cannot be read ({exc.strerror}); check the {flag} path") from None
