"""Rich consoles for the CLI. Created per call so test runners that swap sys.stdout/sys.stderr see output."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console


def out_console() -> Console:
    # Tables are wide; when stdout is not a terminal (pipes, CI logs) rich would default to 80 columns.
    import sys

    width = None if sys.stdout.isatty() else 120
    return Console(highlight=False, width=width, emoji=False)


def err_console() -> Console:
    return Console(stderr=True, highlight=False, emoji=False)


def print_json(payload: Any) -> None:
    """Print ``payload`` as one JSON document on stdout (no rich markup, no wrapping)."""
    import sys

    sys.stdout.write(json.dumps(payload, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
