"""The profiling harness: run a real MoE model (random weights, a published model's shapes) in PyTorch and
time its decode steps and prefills; record what the router chose in every timed step as a routing trace.

Definitions shared with the engine (capsim.engine.predict.decode_step_time):
- a *decode case* (batch B, context c) is one forward pass of B new tokens, each attending to c tokens
  (c − 1 cached plus itself), through every layer, the final norm, the lm_head and greedy sampling;
- a *prefill case* (batch B, prompt P) is one forward pass of B·P prompt tokens with causal attention,
  writing the KV cache, then the lm_head and sampling on the last position of each sequence.

Timing: decode cases cycle through ``repetitions`` different random token batches (real steps see different
tokens, and so activate different experts); each batch is run once untimed with the routing recorded (the
warm-up), then each batch is timed once and the median step is reported. The trace of a decode case therefore
holds repetitions × B tokens: exactly the tokens that were timed. Prefill cases repeat one prompt.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from capsim import units
from capsim.errors import DataFileError, ScenarioError
from capsim.models.spec import ModelSpec
from capsim.profile._torch import dtype_of, require_torch, resolve_device, synchronizer
from capsim.profile.scaling import layers_that_fit, truncate_layers
from capsim.profile.timing import Timing, time_op

Phase = Literal["decode", "prefill"]
RESULTS_FORMAT = "capsim-profile"
RESULTS_VERSION = 1
MEMORY_BUDGET_FRACTION = 0.5
"""Share of the memory available at start that the profiled model (weights + KV cache) may take: the rest
is head-room for activations, the allocator and the OS."""


@dataclass(frozen=True, order=True)
class ProfileCase:
    """One measured configuration. ``context``: decode = tokens attended by each new token (cached + itself);
    prefill = prompt tokens per sequence."""

    phase: Phase
    batch: int
    context: int

    @property
    def name(self) -> str:
        tag = "c" if self.phase == "decode" else "p"
        return f"{self.phase}-b{self.batch}-{tag}{self.context}"

    @property
    def tokens(self) -> int:
        """Tokens pushed through the layers in one step."""
        return self.batch if self.phase == "decode" else self.batch * self.context

    def validate(self) -> None:
        if self.phase not in ("decode", "prefill"):
            raise ScenarioError(f"case phase must be decode or prefill, got {self.phase!r}")
        if self.batch < 1:
            raise ScenarioError(f"case {self.name}: batch must be >= 1")
        least = 2 if self.phase == "decode" else 1
        if self.context < least:
            raise ScenarioError(f"case {self.name}: context must be >= {least} tokens")


@dataclass(frozen=True)
class ProfilePlan:
    """What to profile: a model (database id or config.json path), how many layers, which cases, how."""

    model: str
    cases: tuple[ProfileCase, ...]
    num_layers: int | None = None
    """Layers kept (None: as many as fit in the memory budget, capped by ``max_layers``)."""
    max_layers: int | None = None
    dtype: str = "auto"
    """fp32 on a CPU (no native bf16 GEMM on most), bf16 on a GPU; or fp32/bf16/fp16 explicitly."""
    device: str = "auto"
    warmup: int = 1
    repetitions: int = 5
    seed: int = 0
    threads: int | None = None
    """CPU threads for PyTorch (None: its default, one per core). One thread is steadier on a shared
    machine: with several, one preempted thread stalls the others at every barrier."""

    @property
    def max_batch(self) -> int:
        return max(c.batch for c in self.cases)

    @property
    def max_context(self) -> int:
        return max(c.context for c in self.cases)

    def validate(self) -> None:
        if not self.cases:
            raise ScenarioError("a profile plan needs at least one case")
        for case in self.cases:
            case.validate()
        if self.repetitions < 1 or self.warmup < 0:
            raise ScenarioError("repetitions must be >= 1 and warm-up >= 0")
        if self.threads is not None and self.threads < 1:
            raise ScenarioError(f"threads must be >= 1, got {self.threads}")


def grid(
    decode_batches: Sequence[int], decode_contexts: Sequence[int], prefills: Sequence[tuple[int, int]]
) -> tuple[ProfileCase, ...]:
    """Every (batch, context) decode case plus the (batch, prompt) prefill cases, sorted."""
    cases = [ProfileCase("decode", b, c) for b in decode_batches for c in decode_contexts]
    cases += [ProfileCase("prefill", b, p) for b, p in prefills]
    return tuple(sorted(set(cases)))


DEFAULT_MODEL = "olmoe-1b-7b"
"""OLMoE-1B-7B: 64 experts of width 1024, top-8, hidden 2048: the smallest real MoE layer in the database,
so a 2-core CPU can run a few of its layers in seconds."""


def quick_plan(model: str = DEFAULT_MODEL, device: str = "auto", threads: int | None = 1) -> ProfilePlan:
    """CI-sized plan: 2 layers, decode at B ∈ {1, 4, 16} × c ∈ {128, 512}, prefill of 1 × 128 and 1 × 512,
    one thread (steady on a shared runner).

    Spans memory-bound decode (B = 1: 8 of 64 experts read) to nearly all experts read (B = 16), and a
    compute-heavier prefill; under a minute on 2 CPU cores.
    """
    return ProfilePlan(
        model=model,
        cases=grid((1, 4, 16), (128, 512), ((1, 128), (1, 512))),
        num_layers=None,
        max_layers=2,
        device=device,
        warmup=1,
        repetitions=5,
        threads=threads,
    )


def full_plan(model: str = DEFAULT_MODEL, device: str = "auto", threads: int | None = None) -> ProfilePlan:
    """The full sweep: B ∈ {1, 2, 4, 8, 16, 32, 64} × c ∈ {128, 1024, 4096}; prefills B·P ∈ {1×128, 1×512,
    1×2048, 4×512}; as many layers as fit in memory, at most 8."""
    return ProfilePlan(
        model=model,
        cases=grid((1, 2, 4, 8, 16, 32, 64), (128, 1024, 4096), ((1, 128), (1, 512), (1, 2048), (4, 512))),
        num_layers=None,
        max_layers=8,
        device=device,
        warmup=1,
        repetitions=7,
        threads=threads,
    )


# ------------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class CaseResult:
    """Measured time of one case and the routing trace recorded while it ran."""

    case: ProfileCase
    timing: Timing
    trace_file: str
    """Path of the trace, relative to the results file's directory."""
    trace_tokens: int
    activated_experts: tuple[float, ...]
    """Mean distinct routed experts per step, per MoE layer, over the timed steps."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "case": asdict(self.case),
            "name": self.case.name,
            "tokens_per_step": self.case.tokens,
            "timing": self.timing.to_dict(),
            "trace_file": self.trace_file,
            "trace_tokens": self.trace_tokens,
            "activated_experts": list(self.activated_experts),
        }


@dataclass
class ProfileRun:
    """Everything one harness run measured; ``save``/``load`` round-trip it as JSON next to its traces."""

    machine: dict[str, Any]
    model: str
    num_layers: int
    dtype: str
    plan: dict[str, Any]
    cases: list[CaseResult]
    date: str
    command: str
    setup_s: float = 0.0
    path: Path | None = field(default=None, compare=False)

    def scaled_spec(self) -> ModelSpec:
        """The truncated ModelSpec that was run (rebuilt from the model id, layer count and dtype)."""
        from capsim.models.db import resolve_model

        return truncate_layers(resolve_model(self.model), self.num_layers, self.dtype)

    def trace_path(self, result: CaseResult) -> Path:
        base = self.path.parent if self.path is not None else Path(".")
        return base / result.trace_file

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": RESULTS_FORMAT,
            "version": RESULTS_VERSION,
            "date": self.date,
            "command": self.command,
            "machine": self.machine,
            "model": self.model,
            "num_layers": self.num_layers,
            "dtype": self.dtype,
            "plan": self.plan,
            "setup_s": self.setup_s,
            "cases": [c.to_dict() for c in self.cases],
        }

    def save(self, path: Path) -> Path:
        """Write the results JSON atomically (temporary file + os.replace)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        self.path = path
        return path


def load_run(path: str | Path) -> ProfileRun:
    """Read a results file written by :meth:`ProfileRun.save`; DataFileError names a missing field."""
    p = Path(path)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataFileError(str(p), "no such profile results file; run `capsim profile` first") from None
    except json.JSONDecodeError as exc:
        raise DataFileError(str(p), f"not valid JSON ({exc}); re-run `capsim profile`") from None
    if not isinstance(raw, dict) or raw.get("format") != RESULTS_FORMAT:
        raise DataFileError(str(p), f"not a capsim profile results file (format != {RESULTS_FORMAT!r})")
    try:
        cases = [
            CaseResult(
                case=ProfileCase(**c["case"]),
                timing=Timing(tuple(float(s) for s in c["timing"]["samples_s"])),
                trace_file=str(c["trace_file"]),
                trace_tokens=int(c["trace_tokens"]),
                activated_experts=tuple(float(a) for a in c["activated_experts"]),
            )
            for c in raw["cases"]
        ]
        run = ProfileRun(
            machine=dict(raw["machine"]),
            model=str(raw["model"]),
            num_layers=int(raw["num_layers"]),
            dtype=str(raw["dtype"]),
            plan=dict(raw["plan"]),
            cases=cases,
            date=str(raw["date"]),
            command=str(raw["command"]),
            setup_s=float(raw.get("setup_s", 0.0)),
            path=p,
        )
    except KeyError as exc:
        raise DataFileError(str(p), f"field {exc.args[0]!r} is missing; re-run `capsim profile`") from None
    except (TypeError, ValueError) as exc:
        raise DataFileError(str(p), f"a field has the wrong type ({exc}); re-run `capsim profile`") from None
    return run


# ------------------------------------------------------------------------------------------------- machine
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _meminfo_bytes(key: str) -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return float(line.split()[1]) * units.KIB
    except OSError:
        pass
    return None


def _slug(text: str) -> str:
    out = "".join(ch.lower() if ch.isalnum() else "-" for ch in text)
    while "--" in out:
        out = out.replace("--", "-")
    return out.strip("-")


def machine_info(device: Any) -> dict[str, Any]:
    """Facts about the machine the harness runs on, and a slug naming it in file names."""
    torch = require_torch("describing the machine")
    info: dict[str, Any] = {
        "device_type": device.type,
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "host_memory_bytes": _meminfo_bytes("MemTotal"),
        # something else running makes timings noisy; keep the evidence with the results
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            gpu=props.name,
            gpu_memory_bytes=float(props.total_memory),
            cuda=torch.version.cuda,
            slug=_slug(props.name),
        )
    else:
        info["slug"] = _slug(f"cpu-{info['cpu']}-{info['torch_threads']}t")
    return info


def memory_available(device: Any) -> float:
    """Bytes free for the profiled model now: MemAvailable on a CPU, free device memory on a GPU."""
    torch = require_torch("sizing the profiled model")
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return float(free)
    avail = _meminfo_bytes("MemAvailable")
    if avail is None:
        raise ScenarioError("cannot read available memory (/proc/meminfo); pass --layers explicitly")
    return avail


def set_threads(torch: Any, threads: int | None) -> None:
    """Pin PyTorch's CPU thread count (None leaves its default)."""
    if threads is not None:
        if threads < 1:
            raise ScenarioError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)


def default_dtype(device: Any) -> str:
    """fp32 on a CPU (PyTorch bf16 GEMMs are emulated on CPUs without AVX512-BF16/AMX), bf16 on a GPU."""
    return "bf16" if device.type == "cuda" else "fp32"


# ------------------------------------------------------------------------------------------------- running
Progress = Callable[[str], None]


def run_profile(
    plan: ProfilePlan,
    out_dir: Path,
    *,
    command: str | None = None,
    progress: Progress = lambda message: None,
    spec: ModelSpec | None = None,
) -> ProfileRun:
    """Build the model of ``plan`` on its device, time every case, write one trace per case under
    ``out_dir/traces`` and the results to ``out_dir/profile.json``; return the run.

    ``spec`` overrides the database lookup of ``plan.model`` (tests use tiny invented shapes).
    """
    import time

    from capsim.models.db import resolve_model

    plan.validate()
    torch = require_torch("capsim profile")
    set_threads(torch, plan.threads)
    device = resolve_device(torch, plan.device)
    dtype_name = default_dtype(device) if plan.dtype == "auto" else plan.dtype
    dtype = dtype_of(torch, dtype_name)
    base = spec if spec is not None else resolve_model(plan.model)
    n_layers = plan.num_layers or layers_that_fit(
        base,
        dtype_name,
        budget_bytes=MEMORY_BUDGET_FRACTION * memory_available(device),
        batch=plan.max_batch,
        context=plan.max_context,
        max_layers=plan.max_layers,
    )
    scaled = truncate_layers(base, n_layers, dtype_name)
    progress(f"building {scaled.name} ({dtype_name}, {device}) ...")
    started = time.perf_counter()
    torch.manual_seed(plan.seed)
    from capsim.profile.moe_torch import MoEDecoder

    model = MoEDecoder(scaled, plan.max_context, device, dtype)
    model.allocate_cache(plan.max_batch)
    setup_s = time.perf_counter() - started
    sync = synchronizer(torch, device)
    traces_dir = out_dir / "traces"
    traces_dir.mkdir(parents=True, exist_ok=True)
    machine = machine_info(device)
    results = []
    for i, case in enumerate(plan.cases):
        progress(f"[{i + 1}/{len(plan.cases)}] {case.name}")
        results.append(_run_case(torch, model, scaled, case, plan, device, sync, traces_dir, machine))
    run = ProfileRun(
        machine=machine,
        model=plan.model if spec is None else spec.id,
        num_layers=n_layers,
        dtype=dtype_name,
        plan=_plan_dict(plan),
        cases=results,
        date=datetime.now(UTC).isoformat(timespec="seconds"),
        command=command if command is not None else shlex.join(sys.argv),
        setup_s=setup_s,
    )
    run.save(out_dir / "profile.json")
    return run


def _plan_dict(plan: ProfilePlan) -> dict[str, Any]:
    out = asdict(plan)
    out["cases"] = [c.name for c in plan.cases]
    return out


def _token_batches(
    torch: Any, case: ProfileCase, vocab: int, count: int, seed: int, device: Any
) -> list[Any]:
    gen = torch.Generator().manual_seed(seed)
    length = 1 if case.phase == "decode" else case.context
    return [torch.randint(0, vocab, (case.batch, length), generator=gen).to(device) for _ in range(count)]


def _run_case(
    torch: Any,
    model: Any,
    spec: ModelSpec,
    case: ProfileCase,
    plan: ProfilePlan,
    device: Any,
    sync: Callable[[], object],
    traces_dir: Path,
    machine: dict[str, Any],
) -> CaseResult:
    from capsim.routing.traces import write_trace

    assert spec.moe is not None  # internal: truncate_layers guarantees a MoE layer
    # decode: a different batch of tokens for every repetition; prefill: one prompt, repeated
    variants = plan.repetitions if case.phase == "decode" else 1
    batches = _token_batches(
        torch, case, spec.vocab_size, variants, plan.seed + case.batch + case.context, device
    )
    start = case.context - 1 if case.phase == "decode" else 0
    # the recorded pass doubles as the first warm-up of every variant
    model.recorder.clear()
    model.recorder.active = True
    for ids in batches:
        model.step(ids, start)
    model.recorder.active = False
    n_moe = spec.num_moe_layers
    ids_per_step = [model.recorder.ids[j * n_moe : (j + 1) * n_moe] for j in range(variants)]
    topk, gates = model.recorder.stacked()  # (variants·L_moe, tokens, k), variant-major
    topk = (
        topk.reshape(variants, n_moe, case.tokens, -1)
        .transpose(1, 0, 2, 3)
        .reshape(n_moe, -1, spec.moe.top_k)
    )
    gates = (
        gates.reshape(variants, n_moe, case.tokens, -1)
        .transpose(1, 0, 2, 3)
        .reshape(n_moe, -1, spec.moe.top_k)
    )
    activated = _activated_per_layer(ids_per_step)
    counter = [0]

    def step() -> None:
        model.step(batches[counter[0] % variants], start)
        counter[0] += 1

    timing = time_op(step, warmup=max(0, plan.warmup - 1) * variants, repetitions=plan.repetitions, sync=sync)
    trace_name = f"traces/{case.name}.npz"
    write_trace(
        traces_dir / f"{case.name}.npz",
        topk,
        model_id=spec.id,
        num_experts=spec.moe.num_experts,
        top_k=spec.moe.top_k,
        gate_weights=gates,
        metadata={
            "recorded_with": "capsim profile (PyTorch harness, random weights, real router)",
            "case": case.name,
            "phase": case.phase,
            "batch": case.batch,
            "context": case.context,
            "steps": variants,
            "tokens_per_step": case.tokens,
            "layout": "step-major: tokens [j*T, (j+1)*T) are step j; within a step, sequence-major",
            "dtype": str(model.embed.dtype).replace("torch.", ""),
            "device": machine.get("gpu", machine.get("cpu")),
            "seed": plan.seed,
        },
    )
    return CaseResult(case, timing, trace_name, int(topk.shape[1]), activated)


def _activated_per_layer(ids_per_step: list[list[Any]]) -> tuple[float, ...]:
    """Mean over steps of the distinct experts each MoE layer's step activated."""
    per_step = [[len(np.unique(layer_ids.numpy())) for layer_ids in step] for step in ids_per_step]
    return tuple(float(x) for x in np.mean(np.asarray(per_step, dtype=np.float64), axis=0))
