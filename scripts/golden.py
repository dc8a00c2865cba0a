"""Golden outputs of `capsim predict --json` and `capsim sweep` on a fixed set of scenarios (issue 10).

A refactor must leave every number identical: `python scripts/golden.py --check` compares the current outputs with
tests/golden/outputs.json (tests/test_golden.py runs it). A deliberate model change rewrites the file with
`python scripts/golden.py --write` in the same commit, and the commit message names what changed and why.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
import tempfile
from pathlib import Path

from typer.testing import CliRunner

GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "golden" / "outputs.json"

# One scenario per mode and layout family; small enough that the whole set runs in a few seconds.
PREDICT_SCENARIOS: list[list[str]] = [
    ["--model", "mixtral-8x7b", "--hardware", "h100-sxm", "--gpus", "2", "--batch", "32"],
    ["--model", "mixtral-8x7b", "--hardware", "h100-sxm", "--gpus", "2", "--batch", "1", "--gen-len", "1"],
    [
        "--model",
        "qwen3-30b-a3b",
        "--hardware",
        "h100-sxm",
        "--gpus",
        "1",
        "--batch",
        "64",
        "--routing",
        "uniform",
    ],
    ["--model", "deepseek-v3", "--hardware", "h200-sxm", "--gpus", "8", "--batch", "128", "--ep", "8"],
    [
        "--model",
        "deepseek-v3",
        "--hardware",
        "h200-sxm",
        "--gpus",
        "8",
        "--batch",
        "256",
        "--ep",
        "8",
        "--attention-dp",
        "8",
        "--all-to-all",
        "deepep",
    ],
    ["--model", "deepseek-v3", "--hardware", "h200-sxm", "--gpus", "8", "--batch", "16", "--spec", "mtp:1"],
    ["--model", "mixtral-8x7b", "--hardware", "rtx-4090", "--gpus", "1", "--mode", "offload", "--batch", "1"],
    ["--model", "deepseek-v2-lite", "--hardware", "epyc-9654-4090", "--mode", "cpu-experts", "--batch", "4"],
    [
        "--model",
        "qwen3-30b-a3b",
        "--hardware",
        "epyc-9654-2s",
        "--mode",
        "cpu",
        "--batch",
        "1",
        "--host-memory-gb",
        "384",
    ],
    [
        "--model",
        "qwen3-235b-a22b",
        "--hardware",
        "h100-sxm",
        "--gpus",
        "8",
        "--batch",
        "64",
        "--prompt-len",
        "2048",
        "--system",
        "vllm-like",
    ],
    [
        "--model",
        "gpt-oss-120b",
        "--hardware",
        "h100-sxm",
        "--gpus",
        "1",
        "--batch",
        "8",
        "--weight-dtype",
        "mxfp4",
    ],
    [
        "--model",
        "mixtral-8x22b",
        "--hardware",
        "h100-sxm",
        "--gpus",
        "8",
        "--batch",
        "16",
        "--pp",
        "2",
        "--tp",
        "4",
    ],
]

SWEEP_ARGS: list[str] = [
    "--model",
    "mixtral-8x7b,qwen3-30b-a3b",
    "--hardware",
    "h100-sxm,mi300x",
    "--gpus",
    "1,2",
    "--batch",
    "1:256:x4",
    "--prompt-len",
    "512,2048",
    "--gen-len",
    "1,128",
]


def _rounded(value: object) -> object:
    """Floats to 12 significant digits: identical code gives identical digits; noise in the 15th does not count."""
    if isinstance(value, float):
        return value if not math.isfinite(value) else float(f"{value:.12g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def current_outputs() -> dict[str, object]:
    from capsim.cli import app

    runner = CliRunner()
    predictions: dict[str, object] = {}
    for args in PREDICT_SCENARIOS:
        result = runner.invoke(app, ["predict", *args, "--json"])
        key = " ".join(args)
        predictions[key] = (
            _rounded(json.loads(result.stdout))
            if result.exit_code == 0
            else {"exit_code": result.exit_code, "output": result.output.strip()}
        )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "grid.csv"
        result = runner.invoke(app, ["sweep", *SWEEP_ARGS, "--out", str(out)])
        if result.exit_code != 0:
            raise SystemExit(f"golden sweep failed: {result.output}")
        rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    sweep_rows = [{k: _rounded(float(v)) if _is_float(v) else v for k, v in row.items()} for row in rows]
    return {"predict": predictions, "sweep": sweep_rows}


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def differences(expected: dict[str, object], actual: dict[str, object], limit: int = 20) -> list[str]:
    out: list[str] = []

    def walk(a: object, b: object, where: str) -> None:
        if len(out) >= limit:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                if key not in a or key not in b:
                    out.append(f"{where}/{key}: only in {'golden' if key in a else 'current'}")
                else:
                    walk(a[key], b[key], f"{where}/{key}")
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b)):
                walk(x, y, f"{where}[{i}]")
        elif a != b and not (
            isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
        ):
            out.append(f"{where}: golden {a!r}, now {b!r}")

    walk(expected, actual, "")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true", help="rewrite tests/golden/outputs.json")
    group.add_argument("--check", action="store_true", help="compare with tests/golden/outputs.json")
    args = parser.parse_args()
    outputs = current_outputs()
    if args.write:
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps(outputs, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        print(f"wrote {GOLDEN} ({len(outputs['predict'])} predictions, {len(outputs['sweep'])} sweep rows)")
        return 0
    diffs = differences(json.loads(GOLDEN.read_text(encoding="utf-8")), outputs)
    for line in diffs:
        print(line)
    print("golden outputs identical" if not diffs else f"{len(diffs)}+ differences")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
