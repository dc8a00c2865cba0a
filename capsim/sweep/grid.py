"""Sweep grids: the product of scenario axes, ordered so that a row index names one configuration.

Rows are ordered group-major: a *group* is one (model, hardware, gpus, weight dtype, KV dtype, layout)
combination (one resolved placement: same rates, same weights), and inside a group the numeric axes (batch x
prompt x generated length) vary fastest. A *layout* is a string of scenario options, ``tp=1,attention_dp=8,ep=8``
(see :data:`LAYOUT_KEYS`); the empty layout is the default TP group. Row ``r`` is group ``r // n_numeric``, numeric point ``r % n_numeric``, so
chunks of contiguous rows can be evaluated, written and resumed independently.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataFileError, ScenarioError


def parse_int_axis(text: str, name: str) -> tuple[int, ...]:
    """Parse ``1,2,4``, ``1:1024:x2`` (geometric, inclusive) or ``128:1024:+128`` (arithmetic, inclusive)."""
    values: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if ":" in part:
                start_s, stop_s, step_s = part.split(":")
                start, stop = int(start_s), int(stop_s)
                if step_s.startswith("x"):
                    factor = float(step_s[1:])
                    if factor <= 1:
                        raise ValueError
                    v = float(start)
                    while v <= stop:
                        values.append(round(v))
                        v *= factor
                else:
                    step = int(step_s.lstrip("+"))
                    if step <= 0:
                        raise ValueError
                    values.extend(range(start, stop + 1, step))
            else:
                values.append(int(part))
        except ValueError:
            raise ScenarioError(
                f"cannot read --{name} {text!r}; write values like 1,2,4 or ranges 1:1024:x2 or 128:1024:+128"
            ) from None
    if not values:
        raise ScenarioError(f"--{name} is empty; give at least one value")
    bad = [v for v in values if v < 1]
    if bad:
        raise ScenarioError(f"--{name} values must be >= 1, got {bad[0]}")
    return tuple(dict.fromkeys(values))


def parse_gpus_axis(text: str) -> tuple[int, ...]:
    """Device counts like :func:`parse_int_axis`, or ``0`` alone: all devices of a system id."""
    return (0,) if text.strip() == "0" else parse_int_axis(text, "gpus")


LAYOUT_KEYS: dict[str, type] = {
    "tp": int, "attention_dp": int, "ep": int, "pp": int, "dp": int, "nodes": int, "redundant_experts": int,
    "all_to_all": str, "network": str, "spec": str, "acceptance": float,
}
"""Scenario options a sweep layout may set (capsim.scenario.Scenario fields)."""


def parse_layout(text: str) -> dict[str, Any]:
    """``tp=1,attention_dp=8,ep=8`` -> Scenario keyword arguments (``""`` -> none)."""
    out: dict[str, Any] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in LAYOUT_KEYS:
            raise ScenarioError(
                f"cannot read layout {text!r}: write key=value pairs separated by commas, keys "
                f"{', '.join(LAYOUT_KEYS)} (e.g. tp=1,attention_dp=8,ep=8)"
            )
        try:
            out[name] = LAYOUT_KEYS[name](value.strip())
        except ValueError:
            raise ScenarioError(f"layout {text!r}: {name} must be {LAYOUT_KEYS[name].__name__}, got {value!r}") from None
    return out


def parse_layout_axis(text: str) -> tuple[str, ...]:
    """Layouts separated by ``;`` (each validated), e.g. ``tp=8;attention_dp=8,ep=8``."""
    layouts = tuple(dict.fromkeys(p.strip() for p in text.split(";")))
    for layout in layouts:
        parse_layout(layout)
    return layouts or ("",)


def parse_str_axis(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))


@dataclass(frozen=True)
class Grid:
    """A sweep grid. ``gpus`` entries of 0 mean "all devices of a system" (only valid for system ids)."""

    models: tuple[str, ...]
    hardware: tuple[str, ...]
    gpus: tuple[int, ...] = (1,)
    batch: tuple[int, ...] = (1,)
    prompt_len: tuple[int, ...] = (512,)
    gen_len: tuple[int, ...] = (128,)
    weight_dtype: tuple[str, ...] = ("native",)
    kv_dtype: tuple[str, ...] = ("bf16",)
    routing: str = "default"
    prefill_chunk_tokens: int = 8192
    extra: dict[str, Any] = field(default_factory=dict)
    layout: tuple[str, ...] = ("",)
    """Parallel layouts (:func:`parse_layout` strings); ``""`` is the default TP group."""

    def __post_init__(self) -> None:
        for name in ("models", "hardware", "gpus", "batch", "prompt_len", "gen_len", "weight_dtype", "kv_dtype",
                     "layout"):
            if not getattr(self, name):
                raise ScenarioError(f"sweep axis {name!r} is empty")
        for layout in self.layout:
            parse_layout(layout)
        if self.prefill_chunk_tokens < 1:
            raise ScenarioError(f"prefill_chunk_tokens must be >= 1, got {self.prefill_chunk_tokens}")

    @property
    def group_keys(self) -> list[tuple[str, str, int, str, str, str]]:
        return list(itertools.product(self.models, self.hardware, self.gpus, self.weight_dtype, self.kv_dtype,
                                      self.layout))

    @property
    def numeric_size(self) -> int:
        return len(self.batch) * len(self.prompt_len) * len(self.gen_len)

    @property
    def size(self) -> int:
        return len(self.group_keys) * self.numeric_size

    @property
    def decode_context_span(self) -> tuple[int, int]:
        """(first, last) context any decode step of the grid attends to: min prompt + 1, max prompt + max gen − 1
        (first > last when no configuration generates a second token)."""
        return min(self.prompt_len) + 1, max(self.prompt_len) + max(self.gen_len) - 1

    def numeric_points(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(batch, prompt_len, gen_len) of numeric points ``start:stop`` inside a group (gen fastest)."""
        idx = np.arange(start, stop)
        n_p, n_g = len(self.prompt_len), len(self.gen_len)
        b = np.asarray(self.batch, dtype=np.int64)[idx // (n_p * n_g)]
        p = np.asarray(self.prompt_len, dtype=np.int64)[(idx // n_g) % n_p]
        g = np.asarray(self.gen_len, dtype=np.int64)[idx % n_g]
        return b, p, g

    def segments(self, start: int, stop: int) -> Iterator[tuple[int, int, int]]:
        """Split rows ``start:stop`` into (group index, numeric start, numeric stop) segments."""
        n = self.numeric_size
        row = start
        while row < stop:
            group, offset = divmod(row, n)
            end = min(stop, (group + 1) * n)
            yield group, offset, offset + (end - row)
            row = end

    def fingerprint(self) -> str:
        """Stable hash of everything that determines the rows (resume refuses a different grid)."""
        fields_ = asdict(self)
        if self.layout == ("",):
            del fields_["layout"]  # grids without layouts keep the fingerprint they had before the axis existed
        payload = json.dumps(fields_, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def chunks(self, chunk_rows: int) -> int:
        return math.ceil(self.size / chunk_rows)


_TOML_KEYS = {
    "models", "hardware", "gpus", "batch", "prompt_len", "gen_len", "weight_dtype", "kv_dtype", "routing",
    "prefill_chunk_tokens", "layout",
}


def load_grid_toml(path: Path) -> Grid:
    """Read a grid from TOML: lists (or axis strings like "1:1024:x2") under the Grid field names."""
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise DataFileError(str(path), "file not found") from None
    except IsADirectoryError:
        raise DataFileError(str(path), "is a directory; give the grid's TOML file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DataFileError(str(path), f"not valid TOML ({exc})") from None
    unknown = set(raw) - _TOML_KEYS
    if unknown:
        raise DataFileError(str(path), f"unknown key {min(unknown)!r}; valid keys: {', '.join(sorted(_TOML_KEYS))}")
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("models", "hardware", "weight_dtype", "kv_dtype", "layout"):
            items = [value] if isinstance(value, str) else value
            kwargs[key] = tuple(str(v) for v in items)
        elif key in ("gpus", "batch", "prompt_len", "gen_len"):
            kwargs[key] = parse_int_axis(value, key) if isinstance(value, str) else tuple(int(v) for v in value)
        else:
            kwargs[key] = value
    if "models" not in kwargs or "hardware" not in kwargs:
        raise DataFileError(str(path), "needs at least 'models' and 'hardware'")
    return Grid(**kwargs)


def describe_axes(grid: Grid) -> Sequence[str]:
    return [
        f"{name}: {len(getattr(grid, name))}"
        for name in ("models", "hardware", "gpus", "batch", "prompt_len", "gen_len", "weight_dtype", "kv_dtype",
                     "layout")
    ]
