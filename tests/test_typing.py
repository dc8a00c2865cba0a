"""The package type-checks clean under mypy --strict (issue 10; the configuration is ``[tool.mypy]`` in
pyproject.toml). Also run by scripts/check; here so that a change that adds a type error fails the suite that
every change runs, not only CI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_strict_is_clean() -> None:
    pytest.importorskip("mypy", reason="mypy is in the test extra: pip install '.[test]'")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "capsim"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-1000:]
