"""The numeric path (capsim.engine.formulas_eval, no sympy) runs exactly the formula table of capsim.engine.formulas."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from capsim.engine import formulas
from capsim.engine.formulas_eval import evaluate

GENERATED = Path(formulas.__file__).with_name("_formulas_compiled.py")


def test_generated_module_matches_the_table() -> None:
    # regenerate with: python -m capsim.engine.formulas > capsim/engine/_formulas_compiled.py
    assert GENERATED.read_text() == formulas.compiled_source()


@pytest.mark.parametrize("name", sorted(formulas.OPS))
def test_compiled_equals_lambdified(name: str) -> None:
    op = formulas.compiled(name)  # sympy.lambdify of the same expressions
    rng = np.random.default_rng(len(name))
    values = {a: rng.uniform(1.0, 1e4, size=5) for a in op.args}
    got = evaluate(name, values)
    args = [values[a] for a in op.args]
    want = (op.flops(*args), op.weight_bytes(*args), op.other_bytes(*args))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, np.broadcast_to(w, g.shape) if np.ndim(w) else w, rtol=1e-15)
