"""capsim.models.accuracy: model_db/accuracy.toml against the reference sheet, missing values, quantisation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from capsim.errors import DataFileError, ScenarioError
from capsim.models.accuracy import BENCHMARKS, AccuracyDB, check_benchmark, load_accuracy_db, parse_accuracy
from capsim.models.db import load_model_db

REFERENCE = Path("/work/shared/reference/models.md")

# Transcribed from /work/shared/reference/models.md §2 "Published benchmark accuracy" (MMLU, GSM8K and
# HumanEval columns; None = "—" or not published; soft = the cell is marked "(?)"). The source column of that
# table is the source each entry must carry. Repeated here, not read from accuracy.toml, so a typo there
# cannot pass.
EXPECTED: dict[str, dict[str, tuple[float, bool] | None]] = {
    "mixtral-8x7b": {"mmlu": (70.6, False), "gsm8k": (74.4, False), "humaneval": (40.2, False)},
    "mixtral-8x22b": {"mmlu": (77.8, True), "gsm8k": (88.4, True), "humaneval": (45.1, True)},
    "deepseek-v2": {"mmlu": (78.4, False), "gsm8k": (81.6, False), "humaneval": (43.3, False)},
    "deepseek-v2-lite": {"mmlu": (58.3, True), "gsm8k": (41.1, True), "humaneval": (29.9, True)},
    "deepseek-v3": {"mmlu": (87.1, False), "gsm8k": (89.3, False), "humaneval": (65.2, False)},
    "deepseek-r1": {"mmlu": (90.8, True), "gsm8k": None, "humaneval": None},
    "qwen1.5-moe-a2.7b": {"mmlu": (62.5, True), "gsm8k": (61.5, True), "humaneval": (34.2, True)},
    "qwen2-57b-a14b": {"mmlu": (76.5, True), "gsm8k": (80.7, True), "humaneval": (53.0, True)},
    # Qwen3 reports EvalPlus, not HumanEval, in the HumanEval column
    "qwen3-30b-a3b": {"mmlu": (81.4, True), "gsm8k": (91.8, True), "humaneval": None},
    "qwen3-235b-a22b": {"mmlu": (87.8, True), "gsm8k": (94.4, True), "humaneval": None},
    "dbrx": {"mmlu": (73.7, True), "gsm8k": (66.9, True), "humaneval": (70.1, False)},
    "olmoe-1b-7b": {"mmlu": (54.1, True), "gsm8k": None, "humaneval": None},
    "gpt-oss-20b": {"mmlu": (85.3, True), "gsm8k": None, "humaneval": None},
    # three reasoning levels are published (85.9 / 88.0 / 90.0); "high" is listed first (as for gpt-oss-20b)
    "gpt-oss-120b": {"mmlu": (90.0, False), "gsm8k": None, "humaneval": None},
    # Llama-4: the pretrained MMLU; MBPP, not HumanEval, in the HumanEval column
    "llama-4-scout": {"mmlu": (79.6, True), "gsm8k": None, "humaneval": None},
    "llama-4-maverick": {"mmlu": (85.5, True), "gsm8k": None, "humaneval": None},
    "phi-3.5-moe": {"mmlu": (78.9, False), "gsm8k": (88.7, True), "humaneval": (70.7, True)},
    "grok-1": {"mmlu": (73.0, False), "gsm8k": (62.9, True), "humaneval": (63.2, False)},
}

# The first source named in each row of the models.md table.
SOURCE_PREFIX = {
    "mixtral-8x7b": "arXiv:2401.04088",
    "mixtral-8x22b": "https://mistral.ai/news/mixtral-8x22b/",
    "deepseek-v2": "DeepSeek-V3 README",
    "deepseek-v2-lite": "https://huggingface.co/deepseek-ai/DeepSeek-V2-Lite",
    "deepseek-v3": "DeepSeek-V3 README",
    "deepseek-r1": "https://huggingface.co/deepseek-ai/DeepSeek-R1",
    "qwen1.5-moe-a2.7b": "https://qwenlm.github.io/blog/qwen-moe/",
    "qwen2-57b-a14b": "https://huggingface.co/Qwen/Qwen2-57B-A14B",
    "qwen3-30b-a3b": "Qwen3 technical report arXiv:2505.09388",
    "qwen3-235b-a22b": "Qwen3 technical report arXiv:2505.09388",
    "dbrx": "https://www.databricks.com/blog/introducing-dbrx-new-state-art-open-llm",
    "olmoe-1b-7b": "arXiv:2409.02060",
    "gpt-oss-20b": "OpenAI gpt-oss model card arXiv:2508.10925",
    "gpt-oss-120b": "OpenAI gpt-oss model card arXiv:2508.10925",
    "llama-4-scout": "https://ai.meta.com/blog/llama-4-multimodal-intelligence/",
    "llama-4-maverick": "https://ai.meta.com/blog/llama-4-multimodal-intelligence/",
    "phi-3.5-moe": "https://huggingface.co/microsoft/Phi-3.5-MoE-instruct",
    "grok-1": "https://x.ai/blog/grok",
}


@pytest.fixture(scope="module")
def db() -> AccuracyDB:
    return load_accuracy_db()


def test_every_model_has_an_entry(db: AccuracyDB) -> None:
    assert set(db.ids()) == set(load_model_db().ids()) == set(EXPECTED)


@pytest.mark.parametrize("model_id", sorted(EXPECTED))
def test_values_match_the_reference_with_source(db: AccuracyDB, model_id: str) -> None:
    for benchmark, expected in EXPECTED[model_id].items():
        got = db.lookup(model_id, benchmark)
        if expected is None:
            assert got.status == "missing" and got.value is None, (model_id, benchmark)
            assert got.label() == "missing"
            continue
        value, soft = expected
        assert got.status == "published"
        assert got.value == value, (model_id, benchmark)
        assert got.soft is soft, (model_id, benchmark)
        assert got.source.startswith(SOURCE_PREFIX[model_id]), got.source


def test_other_published_scores(db: AccuracyDB) -> None:
    # models.md §2 "Other" column
    assert db.lookup("mixtral-8x7b", "mbpp").value == 60.7
    assert db.lookup("mixtral-8x7b", "math").setting == "4-shot, maj@4"
    assert db.lookup("deepseek-v3", "mmlu_pro").value == 64.4
    assert (
        db.lookup("qwen3-30b-a3b", "evalplus").value == 71.5 and db.lookup("qwen3-30b-a3b", "evalplus").soft
    )
    assert db.lookup("phi-3.5-moe", "arena_hard").value == 37.9
    # a score of a non-default variant is found in the first variant that has it
    chat = db.lookup("deepseek-v3", "math_500")
    assert (chat.value, chat.variant) == (90.2, "chat")
    assert db.lookup("gpt-oss-120b", "mmlu", variant="low reasoning").value == 85.9
    assert db.lookup("gpt-oss-120b", "aime_2025", variant="medium reasoning").value == 80.0
    assert db.lookup("dbrx", "humaneval").source.endswith(
        "(X-checked at https://centerconsulting.com/ai-library/models/dbrx)"
    )


# Row label of the models.md §2 table -> (model id, variant in accuracy.toml); None = not in the model DB.
REFERENCE_ROWS: dict[str, tuple[str, str] | None] = {
    "Mixtral-8x7B (base)": ("mixtral-8x7b", "base"),
    "Mixtral-8x22B (base)": ("mixtral-8x22b", "base"),
    "DeepSeek-V2 (base)": ("deepseek-v2", "base (re-evaluated in the DeepSeek-V3 report)"),
    "DeepSeek-V2-Lite (base)": ("deepseek-v2-lite", "base"),
    "DeepSeek-V3 (base)": ("deepseek-v3", "base"),
    "DeepSeek-V3 (chat)": ("deepseek-v3", "chat"),
    "DeepSeek-R1": ("deepseek-r1", "release"),
    "Qwen1.5-MoE-A2.7B (base)": ("qwen1.5-moe-a2.7b", "base"),
    "Qwen2-57B-A14B (base)": ("qwen2-57b-a14b", "base"),
    "Qwen3-30B-A3B (base)": ("qwen3-30b-a3b", "base"),
    "Qwen3-235B-A22B (base)": ("qwen3-235b-a22b", "base"),
    "DBRX Instruct": ("dbrx", "instruct"),
    "OLMoE-1B-7B (base)": ("olmoe-1b-7b", "base"),
    "GPT-OSS-20B (high reasoning)": ("gpt-oss-20b", "high reasoning"),
    "GPT-OSS-120B (low / medium / high reasoning)": ("gpt-oss-120b", "high reasoning"),
    "Llama-4-Scout": ("llama-4-scout", "pretrained"),
    "Llama-4-Maverick": ("llama-4-maverick", "pretrained"),
    "Phi-3.5-MoE-instruct": ("phi-3.5-moe", "instruct"),
    "Grok-1 (base, Nov 2023 eval)": ("grok-1", "base (Nov 2023 evaluation)"),
    "Switch-base-8": None,
}


def test_reference_table_agrees_where_it_is_machine_readable(db: AccuracyDB) -> None:
    """Read models.md §2 itself: every cell of the MMLU/GSM8K/HumanEval columns that is one number (with
    bracketed notes) must be in accuracy.toml, under that row's variant, with "(?)" <=> soft."""
    if not REFERENCE.is_file():
        pytest.skip("reference sheet not available")
    section = REFERENCE.read_text().split("## 2. Published benchmark accuracy")[1].split("## 3.")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| Model")]
    checked = 0
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[0] in REFERENCE_ROWS, f"new reference row {cells[0]!r}: map it in REFERENCE_ROWS"
        target = REFERENCE_ROWS[cells[0]]
        if target is None:
            continue
        model_id, variant = target
        for cell, benchmark in zip(cells[1:4], ("mmlu", "gsm8k", "humaneval")):
            match = re.fullmatch(r"([0-9]+\.[0-9])( \([^)]*\))*", cell)
            if not match:
                continue
            got = db.lookup(model_id, benchmark, variant=variant)
            assert got.value == float(match.group(1)), (cells[0], benchmark, cell)
            assert got.soft is ("(?)" in cell), (cells[0], benchmark, cell)
            checked += 1
    assert checked >= 30


def test_missing_model_and_benchmark_show_as_missing(tmp_path: Path) -> None:
    empty = parse_accuracy({}, "inline")
    got = empty.lookup("mixtral-8x7b", "mmlu")
    assert (got.status, got.value, got.fraction, got.label()) == ("missing", None, None, "missing")
    assert got.caveat == "no published MMLU score"


def test_quantised_weights_without_a_published_figure_are_unknown(db: AccuracyDB) -> None:
    # issue 14: never copy the bf16 score to a quantised deployment
    got = db.lookup("mixtral-8x7b", "mmlu", weight_dtype="int4", native_dtype="bf16")
    assert got.status == "unknown" and got.value is None and got.fraction is None
    assert got.caveat == (
        "no published MMLU score for int4 weights; the native 70.6 is not copied (quantisation may cost accuracy)"
    )
    assert got.label() == "unknown"
    # serving at the published precision is not quantisation
    assert db.lookup("deepseek-v3", "mmlu", weight_dtype="fp8", native_dtype="fp8").status == "published"


def test_published_delta_is_applied() -> None:
    data = {
        "mixtral-8x7b": [
            {
                "variant": "base",
                "source": "test source",
                "mmlu": {"value": 70.0},
                "quantization": [
                    {
                        "weight_dtype": "int4",
                        "method": "GPTQ",
                        "source": "test delta source",
                        "mmlu": {"delta": -1.5},
                    }
                ],
            }
        ],
    }
    db = parse_accuracy(data, "inline")
    got = db.lookup("mixtral-8x7b", "mmlu", weight_dtype="int4", native_dtype="bf16")
    assert got.status == "published-delta"
    assert got.value == pytest.approx(68.5)  # 70.0 - 1.5 points
    assert "GPTQ" in got.caveat and "test delta source" in got.caveat
    assert got.label() == "68.5Δ"
    assert db.lookup("mixtral-8x7b", "mmlu", weight_dtype="fp8", native_dtype="bf16").status == "unknown"
    # a method that was not published for int4 is unknown too; the published one matches case-insensitively
    assert (
        db.lookup("mixtral-8x7b", "mmlu", weight_dtype="int4", native_dtype="bf16", method="AWQ").value
        is None
    )
    assert (
        db.lookup("mixtral-8x7b", "mmlu", weight_dtype="int4", native_dtype="bf16", method="gptq").value
        == 68.5
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"mixtral-8x7b": [{"source": "s", "mmlu": {"value": 70}}]},
            "field 'variant' must be a non-empty string",
        ),
        (
            {"mixtral-8x7b": [{"variant": "v", "mmlu": {"value": 70}}]},
            "field 'source' must be a non-empty string",
        ),
        (
            {"mixtral-8x7b": [{"variant": "v", "source": "s", "mmluu": {"value": 70}}]},
            "unknown benchmark 'mmluu'; did you mean mmlu",
        ),
        ({"mixtral-8x7b": [{"variant": "v", "source": "s", "mmlu": {"value": 170}}]}, "not a percentage"),
        (
            {"mixtral-8x7b": [{"variant": "v", "source": "s", "mmlu": {"value": "high"}}]},
            "field 'value' must be a number",
        ),
        (
            {"mixtral-8x7b": [{"variant": "v", "source": "s", "mmlu": {"value": 70, "shots": 5}}]},
            "unknown key",
        ),
        (
            {"mixtral-8x7b": [{"variant": "v", "source": "s", "mmlu": {"value": 70, "soft": "yes"}}]},
            "field 'soft' must be true or false",
        ),
        ({"mixtral-8x7b": [{"variant": "v", "source": "s", "mmlu": 70}]}, "must be a table"),
        ({"mixtral-8x7b": {"variant": "v"}}, "must be an array of tables"),
        (
            {
                "mixtral-8x7b": [
                    {"variant": "v", "source": "s", "quantization": [{"weight_dtype": "int3", "source": "q"}]}
                ]
            },
            "weight_dtype 'int3'",
        ),
    ],
)
def test_malformed_entries_name_the_field(data: dict, message: str) -> None:
    with pytest.raises(DataFileError, match=message):
        parse_accuracy(data, "accuracy.toml")


def test_unknown_model_in_file_is_rejected() -> None:
    with pytest.raises(
        DataFileError, match=r"\[\[mixtral-8x7\]\] names no model in the model database; did you mean"
    ):
        parse_accuracy({"mixtral-8x7": [{"variant": "v", "source": "s"}]}, "x", {"mixtral-8x7b"})


def test_benchmark_names() -> None:
    assert check_benchmark("MMLU") == "mmlu"
    assert check_benchmark("mmlu-pro") == "mmlu_pro"
    assert check_benchmark("HumanEval") == "humaneval"
    with pytest.raises(ScenarioError, match="unknown benchmark 'gsm9k'; did you mean gsm8k"):
        check_benchmark("gsm9k")
    assert set(BENCHMARKS) >= {"mmlu", "gsm8k", "humaneval"}


def test_unknown_variant(db: AccuracyDB) -> None:
    with pytest.raises(
        ScenarioError,
        match="no evaluation variant 'ultra' for gpt-oss-120b; published variants: "
        "'high reasoning', 'medium reasoning', 'low reasoning'",
    ):
        db.lookup("gpt-oss-120b", "mmlu", variant="ultra")


def test_shipped_file_loads_from_path() -> None:
    from capsim._paths import data_dir

    db = load_accuracy_db(data_dir("model_db") / "accuracy.toml")
    assert db.lookup("grok-1", "humaneval").value == 63.2
    with pytest.raises(DataFileError, match="cannot be read"):
        load_accuracy_db("/nonexistent/accuracy.toml")
