"""``capsim explain``: the engine's formulas with a model's values substituted, per layer kind.

Expected coefficients are computed by hand from the models' published configs
(/work/shared/reference/models/*.json) in the comments.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import sympy as sp
from typer.testing import CliRunner

from capsim.cli import app
from capsim.engine import formulas as F
from capsim.engine.explain import PROMPT, attention_kinds, causal_pairs_expr, explain, model_values
from capsim.engine.roofline import causal_pairs, projection_widths
from capsim.models.db import resolve_model

runner = CliRunner()


def test_cli_prints_mixtral_substituted_formulas() -> None:
    result = runner.invoke(app, ["explain", "--model", "mixtral-8x7b"])
    assert result.exit_code == 0, result.output
    # attention projections (Mixtral-8x7B.json: d 4096, 32 heads of 128, 8 KV heads):
    # q 4096·4096 + k,v 2·4096·1024 + o 4096·4096 = 41,943,040 params -> 2·41,943,040 = 83,886,080 FLOPs/token
    assert "83886080*T" in result.stdout
    # routed experts: 3·4096·14336 = 176,160,768 params; 2·k(2)·176,160,768 = 704,643,072 FLOPs per token,
    # bytes A·176,160,768·b_w
    assert "704643072*T" in result.stdout and "176160768*A*b_w" in result.stdout
    assert "full attention (32 layers): pairs = B*c" in result.stdout


def test_mla_projection_and_attention_widths() -> None:
    """DeepSeek-V2-Lite.json: d 2048, 16 heads, qk_nope 128 + rope 64, v 128, kv_lora_rank 512."""
    spec = resolve_model("deepseek-v2-lite")
    ops = {o.name: o for o in explain(spec, "decode")}
    # activation bytes of the projections: (2d + w_o + w_qkv)·T·b_a with w_qkv = 16·192 + 512 + 64 = 3648
    # (queries, latent, shared rope key) and w_o = 16·128 = 2048: 4096 + 2048 + 3648 = 9792
    assert "9792*T*b_a" in str(ops["attn_proj"].bytes_model)
    assert projection_widths(spec) == (3648.0, 2048.0)
    # absorbed decode attention: 2·16·(576 + 512) = 34,816 FLOPs per pair; prefill 2·16·(192 + 128) = 10,240
    assert str(ops["attn_core"].flops_model) == "34816*pairs"
    prefill = {o.name: o for o in explain(spec, "prefill")}
    assert str(prefill["attn_core"].flops_model) == "10240*pairs"
    # KV cache: the 512-wide latent + the 64-wide rope key per token per layer
    assert model_values(spec)[F.kv_e] == 576
    # 2 shared experts of 3·2048·1408 = 17,301,504 params; layer 0 is a dense FFN of 3·2048·10944 = 67,239,936
    assert "17301504*b_w" in str(ops["shared_experts"].bytes_model)
    assert "67239936*b_w" in str(ops["dense_ffn"].bytes_model)
    assert (
        ops["dense_ffn"].applies_to == "dense layers (1)"
        and ops["routed_experts"].applies_to == "MoE layers (26)"
    )


def test_sliding_window_layer_kinds() -> None:
    """GPT-OSS-20B.json: 24 layers alternating sliding_attention (window 128) and full_attention."""
    kinds = attention_kinds(resolve_model("gpt-oss-20b"), "decode")
    assert [(k.window, k.layers) for k in kinds] == [(128, 12), (None, 12)]
    c = sp.Symbol("c", positive=True)
    assert kinds[0].pairs.subs({F.B: 3, c: 1000}) == 3 * 128
    assert kinds[1].pairs.subs({F.B: 3, c: 1000}) == 3 * 1000


@pytest.mark.parametrize("window", [None, 1, 128, 4096])
def test_prefill_pairs_expression_is_the_roofline_formula(window: int | None) -> None:
    """The printed causal-pairs formula evaluates to what capsim.engine.roofline.causal_pairs computes."""
    expr = causal_pairs_expr(window)
    for p in (1, 2, 127, 128, 129, 5000):
        expected = causal_pairs(float(p), np.inf if window is None else float(window))
        assert float(expr.subs(PROMPT, p)) == float(expected)


def test_ops_the_model_lacks_are_left_out() -> None:
    ops = [o.name for o in explain(resolve_model("mixtral-8x7b"))]
    assert (
        "dense_ffn" not in ops and "shared_experts" not in ops
    )  # every Mixtral layer is MoE, no shared expert


def test_cli_json_and_bad_phase() -> None:
    result = runner.invoke(app, ["explain", "--model", "gpt-oss-20b", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {o["name"] for o in data["ops"]} >= {
        "attn_proj",
        "attn_core",
        "router",
        "routed_experts",
        "lm_head",
    }
    assert [(k["window"], k["layers"]) for k in data["attention_layers"]] == [(128, 12), (None, 12)]
    bad = runner.invoke(app, ["explain", "--model", "gpt-oss-20b", "--phase", "train"])
    assert bad.exit_code == 1
    assert bad.stderr.startswith("error: unknown phase 'train'")
