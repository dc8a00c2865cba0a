"""Named length profiles of public datasets (capsim/serving/datasets.toml), loaded and validated here.

Each profile gives the prompt and output token lengths as a distribution (fixed, lognormal from a published
mean and standard deviation, or lognormal from a published median and 90th percentile) with the source of
every statistic. The lengths depend on the tokenizer the source used; the profile says which.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from capsim.errors import DataFileError, ScenarioError
from capsim.serving.workload import LengthSpec

_FILE = Path(__file__).with_name("datasets.toml")
_Z90 = 1.2815515655446004
"""Standard normal 90th percentile: a lognormal's p90 = median · exp(1.2816 σ)."""


@dataclass(frozen=True)
class DatasetProfile:
    id: str
    name: str
    prompt: LengthSpec
    output: LengthSpec
    tokenizer: str
    source: str
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "prompt": self.prompt.describe(),
            "output": self.output.describe(),
            "tokenizer": self.tokenizer,
            "source": self.source,
            "note": self.note,
        }


def _length(entry: dict[str, Any], key: str, path: str, pid: str) -> LengthSpec:
    spec = entry.get(key)
    if not isinstance(spec, dict):
        raise DataFileError(path, f"[{pid}] needs a [{pid}.{key}] table")
    if "fixed" in spec:
        return LengthSpec("fixed", float(spec["fixed"]))
    if "mean" in spec and "std" in spec:
        return LengthSpec("lognormal", float(spec["mean"]), float(spec["std"]))
    if "median" in spec and "p90" in spec:
        median, p90 = float(spec["median"]), float(spec["p90"])
        if not 0 < median < p90:
            raise DataFileError(path, f"[{pid}.{key}] needs 0 < median < p90")
        sigma = math.log(p90 / median) / _Z90
        mean = median * math.exp(sigma**2 / 2)
        std = mean * math.sqrt(math.expm1(sigma**2))
        return LengthSpec("lognormal", mean, std)
    raise DataFileError(path, f"[{pid}.{key}] needs fixed, mean+std or median+p90")


@cache
def load_datasets(path: str | None = None) -> dict[str, DatasetProfile]:
    p = Path(path) if path else _FILE
    try:
        data = tomllib.loads(p.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise DataFileError(str(p), f"cannot read dataset profiles ({exc})") from None
    out = {}
    for pid, entry in data.items():
        if not isinstance(entry, dict):
            continue
        for field in ("name", "source", "tokenizer"):
            if not isinstance(entry.get(field), str) or not entry[field]:
                raise DataFileError(str(p), f"[{pid}] needs a non-empty {field!r}")
        out[pid] = DatasetProfile(
            pid,
            entry["name"],
            _length(entry, "prompt", str(p), pid),
            _length(entry, "output", str(p), pid),
            entry["tokenizer"],
            entry["source"],
            entry.get("note", ""),
        )
    return out


def get_dataset(name: str) -> DatasetProfile:
    profiles = load_datasets()
    key = name.strip().lower()
    if key not in profiles:
        close = difflib.get_close_matches(key, list(profiles), n=3, cutoff=0.5)
        hint = (
            f"did you mean {', '.join(repr(c) for c in close)}?"
            if close
            else f"choose one of {', '.join(profiles)}"
        )
        raise ScenarioError(f"unknown dataset profile {name!r} for --dataset; {hint}")
    return profiles[key]
