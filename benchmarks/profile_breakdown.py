"""Where a measured decode step's time goes, next to the engine's prediction of each operation.

Runs the harness's PyTorch model (a published model's first layers, random weights) under torch.profiler;
the model labels its blocks (attn_proj, attn_core, router, routed_experts, shared_experts, dense_ffn, lm_head)
with record_function, and the engine reports time_by_op for the same names.

    python benchmarks/profile_breakdown.py --hardware-db validation/<run>/calibrated-<machine>.toml \
        --batch 1 --batch 4 --batch 16 --context 128

Profiling adds a little time to every op; compare shares, and the total against `capsim validate`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from capsim.engine.predict import predict
from capsim.engine.scenario import Scenario
from capsim.hardware.db import load_hardware_db
from capsim.models.db import resolve_model
from capsim.profile.moe_torch import MoEDecoder
from capsim.profile.scaling import truncate_layers

SCOPES = (
    "attn_proj",
    "attn_core",
    "attention",
    "router",
    "routed_experts",
    "shared_experts",
    "dense_ffn",
    "lm_head",
)


def measured_split(
    model: MoEDecoder, batch: int, context: int, steps: int = 5
) -> tuple[float, dict[str, float]]:
    ids = torch.randint(0, model.spec.vocab_size, (batch, 1))
    for _ in range(2):
        model.step(ids, context - 1)
    walls = []
    for _ in range(steps):
        t0 = time.perf_counter()
        model.step(ids, context - 1)
        walls.append(time.perf_counter() - t0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            model.step(ids, context - 1)
    split = {e.key: e.cpu_time_total / 1e6 / steps for e in prof.key_averages() if e.key in SCOPES}
    return sorted(walls)[len(walls) // 2], split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="olmoe-1b-7b")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, action="append", default=None)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--hardware-db", type=Path, required=True, help="a calibrated entry (<id>.toml)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = truncate_layers(resolve_model(args.model), args.layers, "fp32")
    batches = args.batch or [1, 4, 16]
    torch.manual_seed(0)
    model = MoEDecoder(spec, args.context, torch.device("cpu"), torch.float32)
    model.allocate_cache(max(batches))
    db = load_hardware_db([args.hardware_db])
    for batch in batches:
        wall, split = measured_split(model, batch, args.context)
        scenario = Scenario(
            model=spec,
            hardware=args.hardware_db.stem,
            gpus=1,
            batch=batch,
            prompt_len=args.context - 1,
            gen_len=2,
            weight_dtype=None,
            kv_dtype="fp32",
        )
        pred = predict(scenario, hardware_db=db)
        by_op = pred.decode.time_by_op_s
        print(
            f"\n{spec.name}, decode batch {batch}, context {args.context}: measured {wall * 1e3:.1f} ms "
            f"(median wall), predicted {pred.decode_step_times_s[0] * 1e3:.1f} ms"
        )
        print(f"{'op':<16}{'measured ms':>12}{'predicted ms':>14}")
        for op in sorted(set(split) | set(by_op), key=lambda o: -split.get(o, 0.0)):
            m = f"{split[op] * 1e3:.2f}" if op in split else "-"
            p = f"{by_op[op] * 1e3:.2f}" if op in by_op else "-"
            print(f"{op:<16}{m:>12}{p:>14}")
        rest = wall - sum(split.values())
        print(
            f"{'(unlabelled)':<16}{rest * 1e3:>12.2f}{'':>14}  norms, embedding, sampling, Python between ops"
        )


if __name__ == "__main__":
    main()
