"""Shared fixtures (pint's testsuite pattern) and hypothesis profiles.

- ``default_hardware_db``: the shipped database, loaded once per module. Read-only: entries are frozen
  dataclasses and their graphs are frozen, but do not rely on tests to stay polite -- never mutate it.
- ``tiny_hardware_db``: two labelled *test* entries (an accelerator and its link) plus one efficiency class,
  written to ``tmp_path`` and loaded without the built-in database. Values are invented for tests only and say so
  in their ``source``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from capsim.hardware.db import HardwareDB, load_hardware_db

settings.register_profile("dev", max_examples=25, deadline=None)
settings.register_profile("ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

TINY_SOURCE = "capsim test fixture: invented values, not a real device"

TINY_FILES: dict[str, str] = {
    "efficiency.toml": f"""
schema = 1
kind = "efficiency"
source = "{TINY_SOURCE}"

[test-class]
memory_bw_fraction = 0.5
compute_fraction = 0.5
step_overhead_s = 1e-3
per_layer_overhead_s = 1e-5
allreduce_latency_s = 1e-6
allreduce_base_latency_s = 5e-6
gpu_memory_utilization = 0.8
""",
    "links/test-link.toml": f"""
schema = 1
id = "test-link"
kind = "link"
name = "Test switched link"
source = "{TINY_SOURCE}"
technology = "test"
topology = "switch"
scope = "per-device"
gb_s_per_dir = 100
""",
    "accelerators/test-gpu.toml": f"""
schema = 1
id = "test-gpu"
kind = "accelerator"
name = "Test GPU"
vendor = "capsim tests"
device_class = "test-class"
source = "{TINY_SOURCE}"
memory_capacity_gb = 10
memory_bandwidth_gb_s = 1000
[peak_tflops_dense]
bf16 = 100
[links]
scale_up = "test-link"
scale_up_domain_max = 4
""",
}


def write_tree(root: Path, files: dict[str, str]) -> Path:
    """Write ``{relative path: text}`` under ``root`` and return ``root``."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.lstrip(), encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def write_hardware_tree() -> Callable[[Path, dict[str, str]], Path]:
    """:func:`write_tree`, for tests that write their own hardware files (a pure function: safe to share)."""
    return write_tree


@pytest.fixture(scope="session")
def tiny_source() -> str:
    """The ``source`` string of every tiny test entry."""
    return TINY_SOURCE


@pytest.fixture(scope="module")
def default_hardware_db() -> HardwareDB:
    """The shipped hardware database. Only use it in tests that do not modify it."""
    return load_hardware_db()


@pytest.fixture(scope="module")
def max_roofline_db() -> HardwareDB:
    """The shipped database with the fitted weight-GEMM terms (``gemm_overlap_exponent``, the class-level
    ``gemm_tokens_efficiency`` and the ``kernel_latency_s`` floor) taken out of every efficiency class: the plain roofline max(t_c, t_m). For
    tests of mechanisms whose hand arithmetic is exact only there (byte ratios of memory-bound ops, FLOP ratios
    of compute-bound ones). Do not modify it."""
    from types import MappingProxyType

    from capsim.hardware.parse import build_efficiency

    db = load_hardware_db()
    plain = {}
    for cls in db.efficiency_classes():
        prov = {
            k: v
            for k, v in db.efficiency(cls).provenance.items()
            if not (
                k.startswith("gemm_tokens_efficiency.") or k in ("gemm_overlap_exponent", "kernel_latency_s")
            )
        }
        plain[cls] = build_efficiency(cls, MappingProxyType(prov))
    return HardwareDB({i: db.get(i) for i in db.ids()}, plain)


@pytest.fixture
def tiny_hardware_db(tmp_path: Path) -> HardwareDB:
    """A database of only the two labelled test entries in :data:`TINY_FILES` (no built-in entries)."""
    return load_hardware_db([write_tree(tmp_path / "tiny_db", TINY_FILES)], builtin=False)
