"""predict and sweep outputs equal the golden file (issue 10: refactors change no number).

The golden file was written at commit d0823b1, before the package restructure. A deliberate model change
rewrites it (`python scripts/golden.py --write`) in the commit that changes the model, naming what changed."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "golden.py"


def _golden_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("capsim_golden", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["capsim_golden"] = module
    spec.loader.exec_module(module)
    return module


def test_predict_and_sweep_outputs_equal_the_golden_file() -> None:
    golden = _golden_module()
    expected = json.loads(golden.GOLDEN.read_text(encoding="utf-8"))
    assert golden.differences(expected, golden.current_outputs()) == []


def test_the_golden_comparison_can_fail() -> None:
    golden = _golden_module()
    expected = json.loads(golden.GOLDEN.read_text(encoding="utf-8"))
    changed = json.loads(json.dumps(expected))
    first = next(iter(changed["predict"]))
    changed["predict"][first]["tpot_s"] = -1.0
    assert golden.differences(expected, changed) != []
