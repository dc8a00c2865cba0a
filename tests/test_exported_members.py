"""The public API is exactly what capsim.__all__ lists (httpx's test_exported_members pattern)."""

from __future__ import annotations

import capsim


def test_all_is_sorted_and_complete() -> None:
    public = {name for name in dir(capsim) if not name.startswith("_") and name != "annotations"}
    modules = {name for name in public if type(getattr(capsim, name)).__name__ == "module"}
    assert set(capsim.__all__) - {"__version__"} == public - modules
    assert capsim.__all__ == sorted(capsim.__all__)
