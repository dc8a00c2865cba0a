"""Workloads for ``capsim serve``: when requests arrive and how many prompt and output tokens each has.

Arrivals follow ``vllm bench serve`` (benchmarks/serve.py, ``get_request``): inter-arrival gaps are gamma
distributed with shape = burstiness and mean 1/rate, so burstiness 1 is a Poisson process, < 1 burstier,
> 1 more regular; an infinite rate (``--offline``) sends every request at t = 0. ``--concurrency N`` caps the
requests in flight at N (vLLM's --max-concurrency): with no rate it is a closed loop of N clients, each
sending its next request the moment the previous one completes.

Lengths: a fixed number, a distribution (``lognormal:MEAN:STD``, ``uniform:LOW:HIGH``), a named dataset
profile (capsim/serving/datasets.toml, sourced) or a request file (JSONL or CSV with ``prompt_tokens``,
``output_tokens`` and optionally ``arrival_s``).
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from capsim.errors import DataFileError, ScenarioError

IntArray = np.ndarray


@dataclass(frozen=True)
class Workload:
    """Requests in send order. ``send_s``: when each client sends (before any concurrency cap; inf-rate runs
    send at 0). Lengths in tokens; every request has ≥ 1 prompt and ≥ 1 output token."""

    send_s: np.ndarray
    prompt_tokens: IntArray
    output_tokens: IntArray
    concurrency: int | None = None
    description: str = ""

    @property
    def size(self) -> int:
        return int(self.prompt_tokens.shape[0])

    def subset(self, index: np.ndarray, concurrency: int | None) -> Workload:
        return Workload(
            self.send_s[index],
            self.prompt_tokens[index],
            self.output_tokens[index],
            concurrency,
            self.description,
        )


_LENGTH = re.compile(r"^\s*(?:(fixed|lognormal|uniform):)?([0-9.eE+]+)(?::([0-9.eE+]+))?\s*$")


@dataclass(frozen=True)
class LengthSpec:
    """A length distribution: ``fixed`` (a), ``lognormal`` (mean a, std b), ``uniform`` (integers a..b)."""

    kind: str
    a: float
    b: float = 0.0

    def sample(self, n: int, rng: np.random.Generator) -> IntArray:
        if self.kind == "fixed":
            return np.full(n, round(self.a), dtype=np.int64)
        if self.kind == "uniform":
            return rng.integers(int(self.a), int(self.b) + 1, n).astype(np.int64)
        # lognormal with the given mean and std: σ² = ln(1 + std²/mean²), μ = ln(mean) − σ²/2
        sigma2 = math.log1p((self.b / self.a) ** 2)
        mu = math.log(self.a) - sigma2 / 2.0
        return np.maximum(1, np.rint(rng.lognormal(mu, math.sqrt(sigma2), n))).astype(np.int64)

    def describe(self) -> str:
        if self.kind == "fixed":
            return f"{round(self.a)}"
        if self.kind == "uniform":
            return f"uniform {int(self.a)}..{int(self.b)}"
        return f"lognormal mean {self.a:g} std {self.b:g}"


def parse_length(text: str | int, option: str) -> LengthSpec:
    """``"512"`` → fixed 512; ``"lognormal:450:300"`` → mean 450, std 300; ``"uniform:100:800"``."""
    if isinstance(text, int) and not isinstance(text, bool):
        text = str(text)
    match = _LENGTH.match(str(text))
    hint = f"write {option} 512, {option} lognormal:MEAN:STD or {option} uniform:LOW:HIGH"
    if match is None:
        raise ScenarioError(f"bad length {text!r} for {option}; {hint}")
    kind = match.group(1) or "fixed"
    try:
        a = float(match.group(2))
        b = float(match.group(3)) if match.group(3) is not None else None
    except ValueError:
        raise ScenarioError(f"bad length {text!r} for {option}; {hint}") from None
    if kind == "fixed":
        if b is not None or a < 1 or a != int(a):
            raise ScenarioError(f"{option} {text!r} must be a whole number of tokens >= 1; {hint}")
        return LengthSpec("fixed", a)
    if b is None:
        raise ScenarioError(f"{option} {text!r} needs two numbers; {hint}")
    if kind == "uniform":
        if a < 1 or b < a or a != int(a) or b != int(b):
            raise ScenarioError(f"{option} {text!r}: uniform needs whole numbers 1 <= LOW <= HIGH")
        return LengthSpec("uniform", a, b)
    if a < 1 or b < 0:
        raise ScenarioError(f"{option} {text!r}: lognormal needs MEAN >= 1 and STD >= 0")
    return LengthSpec("lognormal", a, b)


def send_times(n: int, rate: float | None, burstiness: float, rng: np.random.Generator) -> np.ndarray:
    """Send times of ``n`` requests: gamma gaps of shape ``burstiness`` and mean 1/rate (vllm bench serve),
    the first request at its first gap; ``rate`` None = all at t = 0."""
    if rate is None:
        return np.zeros(n)
    if not (rate > 0 and math.isfinite(rate)):
        raise ScenarioError(f"--rate must be a positive number of requests/s, got {rate!r}")
    if not (burstiness > 0 and math.isfinite(burstiness)):
        raise ScenarioError(f"--burstiness must be > 0 (1 = Poisson), got {burstiness!r}")
    theta = 1.0 / (rate * burstiness)
    return np.cumsum(rng.gamma(burstiness, theta, n))


def build_workload(
    *,
    num_prompts: int,
    prompt: LengthSpec,
    output: LengthSpec,
    rate: float | None,
    burstiness: float = 1.0,
    concurrency: int | None = None,
    seed: int = 0,
    duration_s: float | None = None,
) -> Workload:
    """Synthetic requests. ``duration_s`` (with a rate) sends requests for that long instead of a count."""
    if concurrency is not None and concurrency < 1:
        raise ScenarioError(f"--concurrency must be >= 1, got {concurrency}")
    rng = np.random.default_rng(seed)
    if duration_s is not None:
        if rate is None:
            raise ScenarioError(
                "--duration needs --rate (an offline or closed-loop run has no send schedule)"
            )
        # enough draws to cover the duration with overwhelming probability, then cut
        n_draw = int(rate * duration_s + 10 * math.sqrt(rate * duration_s / burstiness) + 16)
        send = send_times(n_draw, rate, burstiness, rng)
        num_prompts = int(np.searchsorted(send, duration_s, side="right"))
        send = send[:num_prompts]
        if num_prompts == 0:
            raise ScenarioError(f"no request is sent within --duration {duration_s:g} s at --rate {rate:g}")
    else:
        if num_prompts < 1:
            raise ScenarioError(f"--num-prompts must be >= 1, got {num_prompts}")
        send = send_times(num_prompts, rate, burstiness, rng)
    prompts = prompt.sample(num_prompts, rng)
    outputs = output.sample(num_prompts, rng)
    arrivals = (
        "all at t=0"
        if rate is None
        else (
            f"Poisson {rate:g} req/s"
            if burstiness == 1.0
            else f"gamma arrivals {rate:g} req/s, burstiness {burstiness:g}"
        )
    )
    if concurrency is not None:
        arrivals += f", at most {concurrency} in flight"
    desc = f"{num_prompts} requests, {arrivals}; prompt {prompt.describe()}, output {output.describe()}"
    return Workload(send, prompts, outputs, concurrency, desc)


_FIELDS = ("prompt_tokens", "output_tokens")


def load_request_file(path: str | Path, *, rate_given: bool) -> Workload:
    """Requests from a JSONL (one object per line) or CSV file with ``prompt_tokens``, ``output_tokens`` and
    optionally ``arrival_s`` (seconds from the start; required unless a rate or --offline is given)."""
    p = Path(path)
    if not p.is_file():
        raise DataFileError(str(p), "no such request file; give a JSONL or CSV file of requests")
    rows: list[dict[str, object]] = []
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFileError(str(p), f"cannot read the request file ({exc.__class__.__name__})") from None
    if p.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        for row in reader:
            rows.append(dict(row))
    else:
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                raise DataFileError(
                    str(p),
                    f"line {i} is not JSON; write one object per line, e.g. "
                    '{"arrival_s": 0.1, "prompt_tokens": 512, "output_tokens": 128}',
                ) from None
            if not isinstance(obj, dict):
                raise DataFileError(str(p), f"line {i} is not a JSON object")
            rows.append(obj)
    if not rows:
        raise DataFileError(str(p), "holds no requests")
    has_arrival = "arrival_s" in rows[0]
    prompts, outputs, arrivals = [], [], []
    for i, row in enumerate(rows, 1):
        values = []
        for name in _FIELDS:
            v = row.get(name)
            try:
                n = int(str(v)) if not isinstance(v, int) else v
            except (TypeError, ValueError):
                n = -1
            if isinstance(v, bool) or n < 1:
                raise DataFileError(str(p), f"request {i}: {name} must be a whole number >= 1, got {v!r}")
            values.append(n)
        prompts.append(values[0])
        outputs.append(values[1])
        if has_arrival:
            try:
                value = row["arrival_s"]
                if not isinstance(value, int | float | str):
                    raise TypeError(value)
                a = float(value)
            except (KeyError, TypeError, ValueError):
                raise DataFileError(str(p), f"request {i}: arrival_s must be a number of seconds") from None
            if not (a >= 0 and math.isfinite(a)):
                raise DataFileError(str(p), f"request {i}: arrival_s must be >= 0, got {a!r}")
            arrivals.append(a)
    if not has_arrival and not rate_given:
        raise DataFileError(str(p), "has no arrival_s column; add one, or give --rate or --offline")
    send = np.array(arrivals) if has_arrival else np.zeros(len(rows))
    order = np.argsort(send, kind="stable")
    desc = f"{len(rows)} requests from {p.name}"
    return Workload(
        send[order],
        np.array(prompts, dtype=np.int64)[order],
        np.array(outputs, dtype=np.int64)[order],
        None,
        desc,
    )
