"""Lazy access to PyTorch, the optional dependency of the profiling harness (``pip install capsim[profile]``).

capsim itself never imports torch; only the functions that run real kernels call :func:`require_torch`,
which turns a missing install into one clear :class:`TorchMissingError` line instead of a traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import Any

from capsim.errors import CapsimError

INSTALL_HINT = (
    "install the profiling extra: pip install 'capsim[profile]' "
    "(on a CPU-only machine install the CPU wheel first, e.g. pip install torch==2.13.0)"
)


class TorchMissingError(ImportError, CapsimError):
    """PyTorch is needed for real measurements but is not installed."""

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(f"{what} needs PyTorch, which is not installed; {INSTALL_HINT}")


def torch_available() -> bool:
    """True when ``import torch`` would succeed (checked without importing it)."""
    return importlib.util.find_spec("torch") is not None


def require_torch(what: str = "the profiling harness") -> ModuleType:
    """Import and return ``torch``; raise :class:`TorchMissingError` naming ``what`` needed it."""
    try:
        return importlib.import_module("torch")
    except ImportError:
        raise TorchMissingError(what) from None


def resolve_device(torch: ModuleType, name: str) -> Any:
    """``torch.device`` for ``name`` (``auto`` = CUDA when available, else CPU), checked to exist."""
    from capsim.errors import ScenarioError

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ScenarioError(f"device {name!r} requested but PyTorch sees no CUDA GPU; use --device cpu")
    if not (name == "cpu" or name.startswith("cuda")):
        raise ScenarioError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto")
    return torch.device(name)


def synchronizer(torch: ModuleType, device: Any) -> Any:
    """A no-argument function that waits for all queued work on ``device`` (a no-op on the CPU, where
    PyTorch ops return only once they are done)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def dtype_of(torch: ModuleType, name: str) -> Any:
    """torch dtype for a capsim precision name (fp32, bf16, fp16)."""
    from capsim.errors import ScenarioError

    table = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    try:
        return table[name]
    except KeyError:
        raise ScenarioError(
            f"the harness runs fp32, bf16 or fp16, not {name!r}; choose one of those"
        ) from None
