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
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from capsim.errors import DataFileError, ScenarioError

MAX_AXIS_VALUES = 1_000_000
"""Values one numeric axis may hold (counted before the range is expanded, so 1:100000000:+1 costs nothing)."""

MAX_AXIS_VALUE = 2**31 - 1
"""Largest batch, length or device count an axis accepts (sums and products stay exact in int64)."""


def _axis_error(name: str, text: str) -> ScenarioError:
    return ScenarioError(
        f"cannot read --{name} {text!r}; write values like 1,2,4 or ranges 1:1024:x2 or 128:1024:+128"
    )


def _range_values(name: str, part: str, minimum: int) -> list[int]:
    """Expand ``START:STOP:xF`` or ``START:STOP:+S`` after checking its bounds and its length."""
    start_s, stop_s, step_s = part.split(":")
    start, stop = int(start_s), int(stop_s)
    for v in (start, stop):
        if v < minimum or v > MAX_AXIS_VALUE:
            raise ScenarioError(
                f"--{name} range {part!r}: values must be between {minimum} and {MAX_AXIS_VALUE:,}"
            )
    if stop < start:
        raise ScenarioError(f"--{name} range {part!r} is empty: STOP {stop} is below START {start}")
    if step_s.startswith("x"):
        factor = float(step_s[1:])
        if not factor > 1 or not math.isfinite(factor):
            raise ScenarioError(f"--{name} range {part!r}: the factor after x must be a number > 1, e.g. x2")
        count = math.floor(math.log(stop / start) / math.log(factor) + 1e-9) + 1
    else:
        step = int(step_s.removeprefix("+"))
        if step <= 0:
            raise ScenarioError(f"--{name} range {part!r}: the step after + must be >= 1, e.g. +128")
        count = (stop - start) // step + 1
    if count > MAX_AXIS_VALUES:
        raise ScenarioError(
            f"--{name} range {part!r} has {count:,} values; an axis holds at most {MAX_AXIS_VALUES:,} "
            "(use a coarser step or split the sweep)"
        )
    if step_s.startswith("x"):
        values: list[int] = []
        current = float(start)
        while current <= stop:
            values.append(round(current))
            current *= factor
        return values
    return list(range(start, stop + 1, step))


def parse_int_axis(text: str, name: str, minimum: int = 1) -> tuple[int, ...]:
    """Parse ``1,2,4``, ``1:1024:x2`` (geometric, inclusive) or ``128:1024:+128`` (arithmetic, inclusive).
    Every value lies in ``minimum .. MAX_AXIS_VALUE``; a range is counted before it is expanded."""
    values: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            values.extend(_range_values(name, part, minimum) if ":" in part else [int(part)])
        except ScenarioError:
            raise
        except (ValueError, OverflowError, ZeroDivisionError):
            raise _axis_error(name, text) from None
        if len(values) > MAX_AXIS_VALUES:
            raise ScenarioError(f"--{name} has more than {MAX_AXIS_VALUES:,} values; split the sweep")
    if not values:
        raise ScenarioError(f"--{name} is empty; give at least one value")
    bad = [v for v in values if v < minimum or v > MAX_AXIS_VALUE]
    if bad:
        raise ScenarioError(f"--{name} values must be between {minimum} and {MAX_AXIS_VALUE:,}, got {bad[0]}")
    return tuple(dict.fromkeys(values))


def parse_gpus_axis(text: str) -> tuple[int, ...]:
    """Device counts like :func:`parse_int_axis`; ``0`` (alone or in a list) means all devices of a system id."""
    return parse_int_axis(text, "gpus", minimum=0)


LAYOUT_KEYS: dict[str, type] = {
    "tp": int,
    "attention_dp": int,
    "ep": int,
    "pp": int,
    "dp": int,
    "nodes": int,
    "redundant_experts": int,
    "all_to_all": str,
    "network": str,
    "spec": str,
    "acceptance": float,
    "two_batch_overlap": bool,
    "mode": str,
    "expert_tier": str,
    "expert_layers": str,
    "placement": str,
    "cache_policy": str,
    "prefetch": bool,
    "prefetch_accuracy": float,
    "host_copy": str,
}
"""Scenario options a sweep layout may set (capsim.engine.scenario.Scenario fields)."""


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
            kind = LAYOUT_KEYS[name]
            if kind is bool:
                flag = value.strip().lower()
                if flag not in ("1", "true", "yes", "0", "false", "no"):
                    raise ValueError(value)
                out[name] = flag in ("1", "true", "yes")
            else:
                out[name] = kind(value.strip())
        except ValueError:
            raise ScenarioError(
                f"layout {text!r}: {name} must be {LAYOUT_KEYS[name].__name__}, got {value!r}"
            ) from None
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
    host_memory_gb: float | None = None
    """Host DRAM in GB for systems whose entry does not give it (CPU-only rows)."""
    extra: dict[str, Any] = field(default_factory=dict)
    layout: tuple[str, ...] = ("",)
    """Parallel layouts (:func:`parse_layout` strings); ``""`` is the default TP group."""

    def __post_init__(self) -> None:
        for name in (
            "models",
            "hardware",
            "gpus",
            "batch",
            "prompt_len",
            "gen_len",
            "weight_dtype",
            "kv_dtype",
            "layout",
        ):
            if not getattr(self, name):
                raise ScenarioError(f"sweep axis {name!r} is empty")
        for layout in self.layout:
            parse_layout(layout)
        if self.prefill_chunk_tokens < 1:
            raise ScenarioError(f"prefill_chunk_tokens must be >= 1, got {self.prefill_chunk_tokens}")
        if self.host_memory_gb is not None and not (0 < self.host_memory_gb < float("inf")):
            raise ScenarioError(
                f"--host-memory-gb must be a positive number of GB, got {self.host_memory_gb}"
            )

    @property
    def group_keys(self) -> list[tuple[str, str, int, str, str, str]]:
        return list(
            itertools.product(
                self.models, self.hardware, self.gpus, self.weight_dtype, self.kv_dtype, self.layout
            )
        )

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
            del fields_[
                "layout"
            ]  # grids without layouts keep the fingerprint they had before the axis existed
        payload = json.dumps(fields_, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def chunks(self, chunk_rows: int) -> int:
        return math.ceil(self.size / chunk_rows)


_TOML_KEYS = {
    "models",
    "hardware",
    "gpus",
    "batch",
    "prompt_len",
    "gen_len",
    "weight_dtype",
    "kv_dtype",
    "routing",
    "prefill_chunk_tokens",
    "host_memory_gb",
    "layout",
}


def load_grid_toml(path: Path) -> Grid:
    """Read a grid from TOML: lists (or axis strings like "1:1024:x2") under the Grid field names."""
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise DataFileError(str(path), "file not found") from None
    except IsADirectoryError:
        raise DataFileError(str(path), "is a directory; give the grid's TOML file") from None
    except OSError as exc:  # a file used as a folder on the way, permissions, a name too long
        raise DataFileError(
            str(path), f"cannot be read ({exc.strerror or exc}); give the grid's TOML file"
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DataFileError(str(path), f"not valid TOML ({exc})") from None
    unknown = set(raw) - _TOML_KEYS
    if unknown:
        raise DataFileError(
            str(path), f"unknown key {min(unknown)!r}; valid keys: {', '.join(sorted(_TOML_KEYS))}"
        )
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("models", "hardware", "weight_dtype", "kv_dtype", "layout"):
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
                raise DataFileError(str(path), f"{key!r} must be a string or a list of strings")
            kwargs[key] = tuple(items)
        elif key in ("gpus", "batch", "prompt_len", "gen_len"):
            items = value if isinstance(value, list) else [value]
            if not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in items):
                raise DataFileError(str(path), f'{key!r} must be integers or axis strings like "1:1024:x2"')
            text = ",".join(str(v) for v in items)
            kwargs[key] = parse_gpus_axis(text) if key == "gpus" else parse_int_axis(text, key)
        elif key == "routing" and not isinstance(value, str):
            raise DataFileError(str(path), "'routing' must be a string, e.g. \"uniform\"")
        elif key == "prefill_chunk_tokens" and (not isinstance(value, int) or isinstance(value, bool)):
            raise DataFileError(str(path), "'prefill_chunk_tokens' must be an integer")
        elif key == "host_memory_gb" and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise DataFileError(str(path), "'host_memory_gb' must be a number of GB")
        else:
            kwargs[key] = value
    if "models" not in kwargs or "hardware" not in kwargs:
        raise DataFileError(str(path), "needs at least 'models' and 'hardware'")
    return Grid(**kwargs)
