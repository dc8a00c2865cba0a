"""Predict the transformers MoE-block timings of an H200 run (``h200_validate.py``) with capsim's roofline and
print measured vs predicted as a markdown table.

The prediction is the router + routed (+ shared) expert ops of one MoE layer of a decode pass of T tokens, each
its own sequence (so T tokens activate what T independent tokens activate), on ``--hardware`` with its database
efficiencies, uniform routing (random weights route near-uniformly: Qwen3 at T = 4 activated 29 experts, the
uniform expectation 128·(1 − (1 − 8/128)⁴) = 29.0). Overheads (per step, per layer) are left out: the block is
timed alone.

Usage: python benchmarks/gpu/compare_h200.py validation/cuda-nvidia-h200-2026-12-04/transformers_moe.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

MOE_OPS = ("router", "routed_experts", "shared_experts")


def predicted_block_seconds(model: str, hardware: str, tokens: int) -> tuple[float, float]:
    """(seconds of one MoE layer's router + experts for a decode pass of ``tokens`` tokens, expected experts)."""
    import numpy as np

    from capsim.engine.passes import decode_passes
    from capsim.engine.resolve import resolve, resolve_model
    from capsim.engine.scenario import Scenario
    from capsim.profile.scaling import min_layers_for_moe, truncate_layers

    spec = resolve_model(model)
    spec = truncate_layers(spec, min_layers_for_moe(spec), "bf16")  # one MoE layer: fits one device
    rs, _ = resolve(Scenario(model=spec, hardware=hardware, gpus=1, batch=1, prompt_len=16, gen_len=2))
    cost = decode_passes(rs, np.array([float(tokens)]), np.array([17.0]))
    seconds = sum(float(cost.time_by_op[op][0]) for op in MOE_OPS if op in cost.time_by_op)
    return seconds / rs.model.num_moe_layers, float(cost.activated_by_layer()[0, 0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--hardware", default="h200-sxm")
    args = parser.parse_args()
    data = json.loads(args.results.read_text())
    print(
        "| model | implementation | tokens | experts measured / expected | measured ms | capsim ms | measured / capsim |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for model, entry in data.items():
        for impl, points in entry.get("runs", {}).items():
            for p in points:
                seconds, expected = predicted_block_seconds(model, args.hardware, p["tokens"])
                print(
                    f"| {model} | {impl} | {p['tokens']} | {p['activated_experts']:.0f} / {expected:.1f} | "
                    f"{p['median_s'] * 1e3:.3f} | {seconds * 1e3:.3f} | {p['median_s'] / seconds:.2f} |"
                )


if __name__ == "__main__":
    main()
