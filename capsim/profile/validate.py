"""``capsim validate``: predict every profiled case and compare with what was measured.

For each case the error is e = (t_predicted − t_measured) / t_measured (signed: negative = capsim is
optimistic). The gate is on the *median of |e| over the decode cases*: validation fails when it exceeds the
threshold (25 % by default). Prefill errors are reported, not gated: the quick plan has only two prefill
cases, too few for a stable median.

Predictions come from a :data:`Predictor`, a function ``(case, trace_path) -> seconds``. :func:`engine_predictor`
builds the real one from :mod:`capsim.engine.predict` (the calibrated hardware entry, the truncated model the harness
ran, the dtype it ran in, and routing replayed from the trace recorded during the case); tests pass stubs.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capsim.errors import ScenarioError
from capsim.profile.harness import CaseResult, ProfileCase, ProfileRun

DEFAULT_THRESHOLD = 0.25
"""Largest median |error| of decode-step time that passes (issue #6)."""

Predictor = Callable[[ProfileCase, Path], float]
"""Predicted seconds for a case, given the path of the routing trace recorded while it was measured."""


@dataclass(frozen=True)
class CaseComparison:
    """Measured vs predicted time of one case."""

    case: ProfileCase
    measured_s: float
    predicted_s: float
    spread: float
    """(max − min) / median of the measured repetitions: how noisy the measurement was."""
    activated_experts: float
    """Mean distinct routed experts per MoE layer in the measured steps."""

    @property
    def error(self) -> float:
        """Signed relative error (predicted − measured) / measured."""
        return (self.predicted_s - self.measured_s) / self.measured_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.case.name,
            "phase": self.case.phase,
            "batch": self.case.batch,
            "context": self.case.context,
            "activated_experts": self.activated_experts,
            "measured_s": self.measured_s,
            "predicted_s": self.predicted_s,
            "error": self.error,
            "measurement_spread": self.spread,
        }


@dataclass
class ValidationReport:
    """Per-case comparisons plus where and how they were obtained."""

    comparisons: list[CaseComparison]
    threshold: float
    machine: dict[str, Any]
    date: str
    command: str
    model: str
    num_layers: int
    dtype: str
    hardware_id: str
    hardware_file: str
    routing: str
    notes: list[str] = field(default_factory=list)

    def errors(self, phase: str) -> list[float]:
        return [c.error for c in self.comparisons if c.case.phase == phase]

    def median_abs_error(self, phase: str) -> float | None:
        errs = self.errors(phase)
        return float(statistics.median(abs(e) for e in errs)) if errs else None

    def median_error(self, phase: str) -> float | None:
        """Median signed error: the bias (negative = optimistic)."""
        errs = self.errors(phase)
        return float(statistics.median(errs)) if errs else None

    @property
    def passed(self) -> bool:
        gate = self.median_abs_error("decode")
        return gate is not None and gate <= self.threshold

    def verdict(self) -> str:
        gate = self.median_abs_error("decode")
        if gate is None:
            return "no decode cases: nothing to gate"
        word = "PASS" if self.passed else "FAIL"
        return f"{word}: median |error| of decode-step time {gate:.1%} (threshold {self.threshold:.0%})"

    def to_dict(self) -> dict[str, Any]:
        summary = {
            phase: {
                "cases": len(self.errors(phase)),
                "median_abs_error": self.median_abs_error(phase),
                "median_error": self.median_error(phase),
                "max_abs_error": max((abs(e) for e in self.errors(phase)), default=None),
            }
            for phase in ("decode", "prefill")
        }
        return {
            "format": "capsim-validation",
            "version": 1,
            "date": self.date,
            "command": self.command,
            "machine": self.machine,
            "model": self.model,
            "num_layers": self.num_layers,
            "dtype": self.dtype,
            "hardware_id": self.hardware_id,
            "hardware_file": self.hardware_file,
            "routing": self.routing,
            "threshold": self.threshold,
            "passed": self.passed,
            "verdict": self.verdict(),
            "summary": summary,
            "cases": [c.to_dict() for c in self.comparisons],
            "notes": list(self.notes),
        }

    def to_markdown(self) -> str:
        """A table of every case plus the summary, for validation/<machine>-<date>.md."""
        threads = self.machine.get("torch_threads")
        machine = (
            self.machine.get("gpu")
            or f"{self.machine.get('cpu')} ({threads} thread{'' if threads == 1 else 's'})"
        )
        lines = [
            f"# Validation on {machine}, {self.date[:10]}",
            "",
            f"- command: `{self.command}`",
            f"- date (UTC): {self.date}",
            f"- model: {self.model}, first {self.num_layers} layers, {self.dtype}, random weights, real router",
            f"- hardware entry: `{self.hardware_id}` ({self.hardware_file})",
            f"- routing for predictions: {self.routing}",
            f"- torch {self.machine.get('torch')}, {self.machine.get('platform')}",
            f"- load average (1 min) when profiling started: {self.machine.get('load_average_1m')}",
            f"- **{self.verdict()}**",
            "",
            "| case | phase | batch | context | experts/layer | measured ms | predicted ms | error | spread |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for c in self.comparisons:
            lines.append(
                f"| {c.case.name} | {c.case.phase} | {c.case.batch} | {c.case.context} | {c.activated_experts:.1f} "
                f"| {c.measured_s * 1e3:.2f} | {c.predicted_s * 1e3:.2f} | {c.error:+.1%} | {c.spread:.0%} |"
            )
        lines += [
            "",
            "| phase | cases | median abs error | median error (bias) | max abs error |",
            "|---|---:|---:|---:|---:|",
        ]
        for phase in ("decode", "prefill"):
            errs = self.errors(phase)
            if errs:
                lines.append(
                    f"| {phase} | {len(errs)} | {self.median_abs_error(phase):.1%} | {self.median_error(phase):+.1%} "
                    f"| {max(abs(e) for e in errs):.1%} |"
                )
        if self.notes:
            lines += ["", *[f"- {n}" for n in self.notes]]
        lines += [
            "",
            (
                "error = (predicted − measured) / measured; negative means capsim is optimistic. "
                "spread = (max − min) / median of the measured repetitions."
            ),
            "",
        ]
        return "\n".join(lines)


def compare(
    run: ProfileRun,
    predictor: Predictor,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    hardware_id: str = "",
    hardware_file: str = "",
    routing: str = "trace",
    command: str = "",
    date: str | None = None,
) -> ValidationReport:
    """Predict every case of ``run`` with ``predictor`` and collect the comparisons."""
    if not threshold > 0:
        raise ScenarioError(f"the error threshold must be positive, got {threshold}")
    comparisons = [_compare_case(run, result, predictor) for result in run.cases]
    return ValidationReport(
        comparisons=comparisons,
        threshold=threshold,
        machine=run.machine,
        date=date or run.date,
        command=command or run.command,
        model=run.model,
        num_layers=run.num_layers,
        dtype=run.dtype,
        hardware_id=hardware_id,
        hardware_file=hardware_file,
        routing=routing,
    )


def _compare_case(run: ProfileRun, result: CaseResult, predictor: Predictor) -> CaseComparison:
    predicted = float(predictor(result.case, run.trace_path(result)))
    if not predicted > 0:
        raise ScenarioError(
            f"the predictor returned {predicted} s for {result.case.name}; a time must be positive"
        )
    experts = result.activated_experts
    return CaseComparison(
        case=result.case,
        measured_s=result.timing.median_s,
        predicted_s=predicted,
        spread=result.timing.spread,
        activated_experts=sum(experts) / len(experts) if experts else 0.0,
    )


def engine_predictor(
    run: ProfileRun, *, hardware_id: str, hardware_db: Any, routing: str = "trace"
) -> Predictor:
    """Predictions from :mod:`capsim.engine.predict` for the model the harness ran (truncated, in its dtype).

    ``routing``: ``trace`` replays the routing recorded during each case (``trace:<file>``); anything else is
    passed on as a router spec (``uniform``, ``zipf:1.2``, ...). Decode cases use
    ``decode_step_time(scenario, context)``; prefill cases the prefill time of a one-chunk prefill
    (``prefill_chunk_tokens`` ≥ batch × prompt, as the harness runs it in one pass).
    """
    from capsim.engine.predict import decode_step_time, predict
    from capsim.engine.scenario import Scenario

    spec = run.scaled_spec()

    def predict_case(case: ProfileCase, trace: Path) -> float:
        router = f"trace:{trace}" if routing == "trace" else routing
        scenario = Scenario(
            model=spec,
            hardware=hardware_id,
            gpus=1,
            batch=case.batch,
            prompt_len=case.context if case.phase == "prefill" else case.context - 1,
            gen_len=1 if case.phase == "prefill" else 2,
            weight_dtype=None,  # the truncated spec stores every group in the harness's dtype
            kv_dtype=run.dtype,
            routing=router,
            # a prefill case runs as one pass; a decode case's (unmodelled) prefill keeps the default chunk, or
            # its activation workspace (B x c tokens) would be charged against memory the step never uses
            prefill_chunk_tokens=max(8192, case.batch * case.context) if case.phase == "prefill" else 8192,
        )
        if case.phase == "decode":
            return float(decode_step_time(scenario, case.context, hardware_db=hardware_db))
        return float(predict(scenario, hardware_db=hardware_db).prefill_time_s)

    return predict_case


def report_stem(report: ValidationReport, quick: bool) -> str:
    """``<machine>-<date>[-quick]``: the file name (without suffix) of a report in validation/."""
    return f"{report.machine.get('slug', 'machine')}-{report.date[:10]}{'-quick' if quick else ''}"


def write_validation(report: ValidationReport, out_dir: Path, stem: str) -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` into ``out_dir`` atomically; return both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = (out_dir / f"{stem}.json", out_dir / f"{stem}.md")
    payloads = (json.dumps(report.to_dict(), indent=1) + "\n", report.to_markdown())
    for path, text in zip(paths, payloads):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return paths
