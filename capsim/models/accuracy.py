"""Published accuracy of the models in the model database (``model_db/accuracy.toml``), with sources.

capsim never invents an accuracy number. A lookup returns an :class:`AccuracyValue` whose ``status`` says what
the number is:

- ``published``: the authors' figure for the native checkpoint;
- ``published-delta``: a quantised precision whose published delta (percentage points) has been applied;
- ``unknown``: a quantised precision (or quantisation method) with no published figure; ``value`` is None and
  the caveat says so. The native score is *not* copied: quantisation usually costs accuracy, by an amount
  capsim cannot know;
- ``missing``: nothing published for this model and benchmark; ``value`` is None.

Scores are percentages (0-100) as published, with the authors' own settings (shots, maj@k): they are
comparable only where the settings match.
"""

from __future__ import annotations

import difflib
import functools
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from capsim._paths import data_dir
from capsim.errors import DataFileError, ScenarioError

ACCURACY_FILE = "accuracy.toml"

BENCHMARKS: dict[str, str] = {
    "mmlu": "MMLU",
    "mmlu_pro": "MMLU-Pro",
    "gsm8k": "GSM8K",
    "math": "MATH",
    "math_500": "MATH-500",
    "humaneval": "HumanEval",
    "humaneval_mul": "HumanEval-Mul",
    "evalplus": "EvalPlus",
    "mbpp": "MBPP",
    "livecodebench": "LiveCodeBench",
    "bbh": "BBH",
    "hellaswag": "HellaSwag",
    "arc_c": "ARC-Challenge",
    "gpqa": "GPQA",
    "gpqa_diamond": "GPQA-Diamond",
    "aime_2024": "AIME 2024",
    "aime_2025": "AIME 2025",
    "arena_hard": "Arena-Hard",
    "mmmu": "MMMU",
    "chartqa": "ChartQA",
    "docvqa": "DocVQA",
    "multilingual": "Multilingual",
    "open_llm_leaderboard": "Open LLM Leaderboard",
}
"""Benchmark keys of accuracy.toml and their display names. Every score is a percentage."""

Status = Literal["published", "published-delta", "unknown", "missing"]

_VARIANT_KEYS = frozenset({"variant", "source", "note", "quantization"})
_SCORE_KEYS = frozenset({"value", "setting", "soft", "source", "note"})
_QUANT_KEYS = frozenset({"weight_dtype", "method", "source", "note"})
_DELTA_KEYS = frozenset({"delta", "setting", "soft", "source", "note"})


@dataclass(frozen=True)
class Score:
    """One published score in percent, with its setting (shots etc.), source and soft flag."""

    benchmark: str
    value: float
    source: str
    setting: str = ""
    soft: bool = False
    note: str = ""


@dataclass(frozen=True)
class QuantDelta:
    """A published change of a score (percentage points) when the weights are stored in ``weight_dtype``."""

    benchmark: str
    weight_dtype: str
    delta: float
    source: str
    method: str = ""
    setting: str = ""
    soft: bool = False


@dataclass(frozen=True)
class Evaluation:
    """The published scores of one variant of a model (base, instruct, a reasoning level ...)."""

    model_id: str
    variant: str
    source: str
    scores: Mapping[str, Score]
    deltas: Mapping[tuple[str, str], QuantDelta] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class AccuracyValue:
    """The answer to "how accurate is model M on benchmark B at precision P" (see the module docstring)."""

    model_id: str
    benchmark: str
    status: Status
    value: float | None
    variant: str = ""
    setting: str = ""
    source: str = ""
    soft: bool = False
    caveat: str = ""

    @property
    def fraction(self) -> float | None:
        """The value as a fraction of 1 (what the CAP radar's accuracy axis uses); None when missing."""
        return None if self.value is None else self.value / 100.0

    def label(self) -> str:
        """Short text for tables: ``70.6``, ``77.8 (?)``, ``68.5Δ`` (published delta applied), ``unknown``
        (quantised, nothing published) or ``missing``."""
        if self.value is None:
            return "unknown" if self.status == "unknown" else "missing"
        text = f"{self.value:.1f}"
        if self.status == "published-delta":
            text += "Δ"
        if self.soft:
            text += " (?)"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "status": self.status,
            "value": self.value,
            "variant": self.variant,
            "setting": self.setting,
            "source": self.source,
            "soft": self.soft,
            "caveat": self.caveat,
        }


class AccuracyDB:
    """The parsed accuracy table: ``{model_id: [Evaluation, ...]}``, first evaluation = default variant."""

    def __init__(self, evaluations: Mapping[str, tuple[Evaluation, ...]], path: str = "") -> None:
        self._evaluations = dict(evaluations)
        self.path = path

    def ids(self) -> list[str]:
        """Model ids with at least one published evaluation, sorted."""
        return sorted(self._evaluations)

    def evaluations(self, model_id: str) -> tuple[Evaluation, ...]:
        """Every published evaluation of ``model_id`` (empty when none is published)."""
        return self._evaluations.get(model_id.lower(), ())

    def lookup(
        self,
        model_id: str,
        benchmark: str,
        *,
        weight_dtype: str | None = None,
        native_dtype: str | None = None,
        variant: str | None = None,
        method: str | None = None,
    ) -> AccuracyValue:
        """The published ``benchmark`` score of ``model_id``.

        ``weight_dtype`` is the precision the model is served at (None = its published checkpoint);
        ``native_dtype`` is the precision of that checkpoint's transformer weights, so serving at the native
        precision is not treated as quantisation. ``variant`` picks an evaluation by name (default: the first
        evaluation that has the benchmark; for a quantised precision, the first that also publishes a delta
        for it, so the delta is applied to the score measured the same way). ``method`` (``GPTQ``, ``AWQ``,
        ``Q4_K_M`` ...) restricts the deltas to that quantisation method.
        """
        key = check_benchmark(benchmark)
        evals = self.evaluations(model_id)
        if variant is not None:
            evals = tuple(e for e in evals if e.variant == variant)
            if not evals:
                names = [e.variant for e in self.evaluations(model_id)]
                raise ScenarioError(
                    f"no evaluation variant {variant!r} for {model_id}; published variants: "
                    f"{', '.join(repr(n) for n in names) or 'none'}"
                )
        quantised = weight_dtype is not None and weight_dtype.lower() != (native_dtype or "").lower()
        found = None
        if quantised and variant is None:
            found = next(
                (e for e in evals if key in e.scores and _delta_for(e, weight_dtype or "", key, method)), None
            )
        found = found or next((e for e in evals if key in e.scores), None)
        if found is None:
            return AccuracyValue(
                model_id, key, "missing", None, caveat=f"no published {BENCHMARKS[key]} score"
            )
        score = found.scores[key]
        base = {
            "model_id": model_id,
            "benchmark": key,
            "variant": found.variant,
            "setting": score.setting,
            "source": score.source,
        }
        if not quantised:
            return AccuracyValue(status="published", value=score.value, soft=score.soft, **base)
        delta = _delta_for(found, weight_dtype or "", key, method)
        if delta is None:
            how = f"{weight_dtype} ({method})" if method else str(weight_dtype)
            return AccuracyValue(
                status="unknown",
                value=None,
                soft=False,
                caveat=f"no published {BENCHMARKS[key]} score for {how} weights; the native "
                f"{score.value:.1f} is not copied (quantisation may cost accuracy)",
                **base,
            )
        return AccuracyValue(
            status="published-delta",
            value=score.value + delta.delta,
            soft=score.soft or delta.soft,
            caveat=(
                f"native {score.value:.1f} {delta.delta:+.1f} points "
                f"({delta.method or weight_dtype}: {delta.source})"
            ),
            **base,
        )


def comparable_variant(
    db: AccuracyDB,
    model_id: str,
    benchmark: str,
    quantised: list[tuple[str, str | None]],
) -> str | None:
    """The variant to read every option of one comparison from, so that native and quantised scores come
    from the same evaluation (same harness and setting): the first evaluation with ``benchmark`` that
    publishes a delta for every (dtype, method) in ``quantised``; None (= the default rule) when there is
    none or nothing is quantised."""
    key = check_benchmark(benchmark)
    if not quantised:
        return None
    for e in db.evaluations(model_id):
        if key in e.scores and all(_delta_for(e, d, key, m) for d, m in quantised):
            return e.variant
    return None


def _delta_for(evaluation: Evaluation, weight_dtype: str, key: str, method: str | None) -> QuantDelta | None:
    """The evaluation's published delta for (dtype, benchmark), of ``method`` when given (case-insensitive)."""
    delta = evaluation.deltas.get((weight_dtype.lower(), key))
    if delta is None or method is None:
        return delta
    wanted = method.strip().lower()
    return delta if wanted and wanted in delta.method.lower() else None


def check_benchmark(name: str) -> str:
    """Normalise a benchmark name (``MMLU``, ``mmlu-pro``) to its key; ScenarioError with close matches."""
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    if key in BENCHMARKS:
        return key
    close = difflib.get_close_matches(key, list(BENCHMARKS), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else f"choose one of {', '.join(BENCHMARKS)}"
    raise ScenarioError(f"unknown benchmark {name!r}; {hint}")


# --------------------------------------------------------------------------------------------- parsing


def _bad(path: str, where: str, problem: str) -> DataFileError:
    return DataFileError(path, f"{where}: {problem}")


def _text(table: Mapping[str, Any], key: str, path: str, where: str, required: bool = False) -> str:
    value = table.get(key, "")
    if not isinstance(value, str) or (required and not value.strip()):
        need = "a non-empty string" if required else "a string"
        raise _bad(path, where, f"field {key!r} must be {need}")
    return value


def _flag(table: Mapping[str, Any], path: str, where: str) -> bool:
    soft = table.get("soft", False)
    if not isinstance(soft, bool):
        raise _bad(path, where, "field 'soft' must be true or false")
    return soft


def _number(table: Mapping[str, Any], key: str, path: str, where: str) -> float:
    value = table.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(path, where, f"field {key!r} must be a number, got {value!r}")
    return float(value)


def _unknown_keys(table: Mapping[str, Any], allowed: frozenset[str], path: str, where: str) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise _bad(path, where, f"unknown key(s) {', '.join(extra)}; allowed: {', '.join(sorted(allowed))}")


def _benchmark_key(name: str, path: str, where: str) -> str:
    if name in BENCHMARKS:
        return name
    close = difflib.get_close_matches(name, list(BENCHMARKS), n=2, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}?" if close else "add it to capsim.models.accuracy.BENCHMARKS"
    raise _bad(path, where, f"unknown benchmark {name!r}; {hint}")


def _parse_score(name: str, raw: Any, default_source: str, path: str, where: str) -> Score:
    key = _benchmark_key(name, path, where)
    here = f"{where} {name}"
    if not isinstance(raw, dict):
        raise _bad(path, here, 'must be a table like { value = 70.6, setting = "5-shot" }')
    _unknown_keys(raw, _SCORE_KEYS, path, here)
    value = _number(raw, "value", path, here)
    if not 0.0 <= value <= 100.0:
        raise _bad(path, here, f"value {value} is not a percentage in [0, 100]")
    return Score(
        benchmark=key,
        value=value,
        source=_text(raw, "source", path, here) or default_source,
        setting=_text(raw, "setting", path, here),
        soft=_flag(raw, path, here),
        note=_text(raw, "note", path, here),
    )


def _parse_quantization(raw: Any, path: str, where: str) -> dict[tuple[str, str], QuantDelta]:
    from capsim.models.precision import WEIGHT_PRECISIONS

    if not isinstance(raw, list):
        raise _bad(path, where, "'quantization' must be an array of tables [[<model>.quantization]]")
    out: dict[tuple[str, str], QuantDelta] = {}
    for i, table in enumerate(raw):
        here = f"{where} quantization[{i}]"
        if not isinstance(table, dict):
            raise _bad(path, here, "must be a table")
        dtype = _text(table, "weight_dtype", path, here, required=True).lower()
        if dtype not in WEIGHT_PRECISIONS:
            raise _bad(path, here, f"weight_dtype {dtype!r} is not one of {', '.join(WEIGHT_PRECISIONS)}")
        source = _text(table, "source", path, here, required=True)
        for name, value in table.items():
            if name in _QUANT_KEYS:
                continue
            key = _benchmark_key(name, path, here)
            if not isinstance(value, dict):
                raise _bad(path, f"{here} {name}", "must be a table like { delta = -1.2 }")
            _unknown_keys(value, _DELTA_KEYS, path, f"{here} {name}")
            out[(dtype, key)] = QuantDelta(
                benchmark=key,
                weight_dtype=dtype,
                delta=_number(value, "delta", path, f"{here} {name}"),
                source=_text(value, "source", path, here) or source,
                method=_text(table, "method", path, here),
                setting=_text(value, "setting", path, here),
                soft=_flag(value, path, here),
            )
    return out


def _parse_evaluation(model_id: str, index: int, raw: Any, path: str) -> Evaluation:
    where = f"[[{model_id}]] #{index + 1}"
    if not isinstance(raw, dict):
        raise _bad(path, where, "must be a table")
    variant = _text(raw, "variant", path, where, required=True)
    source = _text(raw, "source", path, where, required=True)
    scores: dict[str, Score] = {}
    for name, value in raw.items():
        if name in _VARIANT_KEYS:
            continue
        score = _parse_score(name, value, source, path, where)
        scores[score.benchmark] = score
    deltas = _parse_quantization(raw["quantization"], path, where) if "quantization" in raw else {}
    return Evaluation(model_id, variant, source, scores, deltas, _text(raw, "note", path, where))


def parse_accuracy(data: Mapping[str, Any], path: str, model_ids: set[str] | None = None) -> AccuracyDB:
    """Validate parsed TOML ``data`` into an :class:`AccuracyDB`; ``model_ids`` (when given) are the ids a
    table may name. Raises DataFileError naming the table and field of any problem."""
    out: dict[str, tuple[Evaluation, ...]] = {}
    for model_id, evaluations in data.items():
        key = model_id.lower()
        if model_ids is not None and key not in model_ids:
            close = difflib.get_close_matches(key, sorted(model_ids), n=2, cutoff=0.6)
            hint = f"did you mean {' or '.join(close)}?" if close else "add model_db/<id>.json first"
            raise DataFileError(path, f"[[{model_id}]] names no model in the model database; {hint}")
        if not isinstance(evaluations, list) or not evaluations:
            raise DataFileError(path, f"{model_id!r} must be an array of tables [[{model_id}]]")
        out[key] = tuple(_parse_evaluation(key, i, e, path) for i, e in enumerate(evaluations))
    return AccuracyDB(out, path)


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise DataFileError(str(path), f"not valid TOML ({exc}); fix the syntax") from None
    except UnicodeDecodeError:
        raise DataFileError(str(path), "not UTF-8 text (TOML must be UTF-8); save it as UTF-8") from None
    except OSError as exc:
        raise DataFileError(str(path), f"cannot be read ({exc.strerror})") from None


@functools.lru_cache(maxsize=1)
def _default_db() -> AccuracyDB:
    from capsim.models.db import load_model_db

    path = data_dir("model_db") / ACCURACY_FILE
    return parse_accuracy(_read(path), str(path), set(load_model_db().ids()))


def load_accuracy_db(path: Path | str | None = None) -> AccuracyDB:
    """The shipped accuracy table (cached), or the one in ``path`` (not checked against the model DB)."""
    if path is None:
        return _default_db()
    return parse_accuracy(_read(Path(path)), str(path))
