"""Where the shipped data directories are, for a source checkout and for an installed wheel.

The wheel carries copies of ``hardware_db/``, ``model_db/`` and ``traces/`` under ``capsim/_data``
(pyproject ``force-include``); a source checkout has them at the repository root. Both are tried,
installed copy first, so the same code works from ``pip install .`` and from a clone.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def data_candidates(name: str, in_clone: str | None = None) -> tuple[Path, Path]:
    """Where data set ``name`` may be: the wheel's copy, then the clone's (``in_clone``, default ``name``)."""
    return _PACKAGE_DIR / "_data" / name, _PACKAGE_DIR.parent / (in_clone or name)


def data_dir(name: str) -> Path:
    """Return the directory of the shipped data set ``name`` (``hardware_db``, ``model_db``, ``traces``)."""
    for candidate in data_candidates(name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"capsim data directory {name!r} not found next to the package; reinstall capsim")
