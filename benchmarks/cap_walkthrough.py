"""Reproduce MoE-CAP's published findings with capsim (docs/cap.md prints this script's output).

Run from the repository root: PYTHONPATH=. python benchmarks/cap_walkthrough.py  (seconds; no network, no GPU)
Paper numbers are from /work/shared/reference/moecap.md §4.1 (P1-P3, P9) and §4.2; capsim's are computed here.
"""

from __future__ import annotations

import numpy as np

from capsim.engine.passes import decode_times
from capsim.engine.predict import predict
from capsim.engine.resolve import resolve
from capsim.engine.scenario import Scenario
from capsim.hardware.db import load_hardware_db
from capsim.routing._base import uniform_expected_activated

DB = load_hardware_db()


def activated_share(model: str, batch: int) -> float:
    """Weight bytes a decode step of ``batch`` tokens reads with the experts the batch activates (uniform
    iid routing, capsim's default) over the bytes of every weight: the share of parameters activated."""
    rs, _ = resolve(
        Scenario(
            model=model,
            hardware="h200-sxm",
            gpus=8 if "r1" in model else 1,
            batch=batch,
            prompt_len=64,
            gen_len=2,
        ),
        DB,
    )
    cost = decode_times(rs, batch)
    return float(cost.weight_bytes_sparse[0] / cost.weight_bytes_dense[0])


def main() -> None:
    print("## P2: share of parameters activated at batch 8 (paper: MATH on vLLM, traced routing)")
    paper = {"deepseek-v2-lite": 53.05, "qwen1.5-moe-a2.7b": 46.79, "deepseek-r1": 18.44}
    print("| model | paper % | capsim uniform routing % | capsim / paper |")
    print("|---|---|---|---|")
    for model, value in paper.items():
        share = 100 * activated_share(model, 8)
        print(f"| {model} | {value:.2f} | {share:.2f} | {share / value:.2f} |")

    print("\n## P9: dense MBU overstates the sparse one (paper: 1.5-3x at batch > 1)")
    print("| model, hardware | batch | MBU % | S-MBU % | MBU / S-MBU | MFU % | S-MFU % | MFU / S-MFU |")
    print("|---|---|---|---|---|---|---|---|")
    for model, hw, gpus in (
        ("mixtral-8x7b", "a100-sxm-80gb", 2),
        ("qwen1.5-moe-a2.7b", "a100-sxm-80gb", 1),
        ("deepseek-v2-lite", "a100-sxm-80gb", 1),
    ):
        for batch in (1, 4, 16, 64):
            p = predict(
                Scenario(model=model, hardware=hw, gpus=gpus, batch=batch, prompt_len=512, gen_len=64),
                hardware_db=DB,
            )
            d = p.decode
            print(
                f"| {model}, {gpus}x {hw} | {batch} | {100 * d.mbu:.1f} | {100 * d.s_mbu:.1f} | "
                f"{d.mbu / d.s_mbu:.2f} | {100 * d.mfu:.3f} | {100 * d.s_mfu:.3f} | {d.mfu / d.s_mfu:.2f} |"
            )

    print(
        "\n## P1: bandwidth needed for TPOT 0.1 s, DeepSeek-R1 (paper: 18,901 GB/s all experts; 1,040 GB/s at batch 1)"
    )
    rs, _ = resolve(
        Scenario(model="deepseek-r1", hardware="h200-sxm", gpus=8, batch=1, prompt_len=64, gen_len=2), DB
    )
    cost = decode_times(rs, 1)
    rs16, _ = resolve(
        Scenario(
            model="deepseek-r1",
            hardware="gb200-nvl72",
            gpus=16,
            batch=1,
            prompt_len=64,
            gen_len=2,
            weight_dtype="bf16",
        ),
        DB,
    )
    cost16 = decode_times(rs16, 1)

    def need(c: object, which: str) -> float:
        return float(getattr(c, which)[0] + c.kv_read_bytes[0]) / 0.1 / 1e9  # type: ignore[attr-defined]

    print("| quantity | paper GB/s | capsim, fp8 checkpoint | capsim, bf16 weights |")
    print("|---|---|---|---|")
    print(
        f"| every weight read per token | 18,901 (older version: ~13,400) | {need(cost, 'weight_bytes_dense'):,.0f} | "
        f"{need(cost16, 'weight_bytes_dense'):,.0f} |"
    )
    print(
        f"| activated weights at batch 1 | 1,040 | {need(cost, 'weight_bytes_sparse'):,.0f} | "
        f"{need(cost16, 'weight_bytes_sparse'):,.0f} |"
    )

    print(
        "\n## P3 by the paper's own method: bytes per decode step (S-MBU numerator) / peak bandwidth <= 0.25 s"
    )
    print(
        "| device (peak GB/s, MoE-CAP spreadsheet) | paper | capsim bandwidth bound | step time at that batch |"
    )
    print("|---|---|---|---|")
    for hw, bw, paper_b in (("Apple M3 Max", 400.0, 32), ("Orin AGX", 204.8, 16), ("Orin NX", 102.4, 4)):
        best = None
        for batch in (1, 2, 4, 8, 16, 32, 64, 128):
            rs, _ = resolve(
                Scenario(
                    model="deepseek-v2-lite",
                    hardware="h100-sxm",
                    gpus=1,
                    batch=batch,
                    prompt_len=512,
                    gen_len=64,
                ),
                DB,
            )
            c = decode_times(rs, batch)
            step = float((c.weight_bytes_sparse + c.kv_read_bytes).mean()) / (bw * 1e9)
            if step <= 0.25:
                best = (batch, step)
        print(
            f"| {hw} ({bw:g}) | {paper_b} | {best[0] if best else 'none'} | "
            f"{'' if best is None else f'{best[1] * 1e3:.0f} ms'} |"
        )

    print("\n## §4.2: measured distinct experts per layer vs iid-uniform routing (capsim's default router)")
    print("| model (E, k) | batch | measured A | capsim uniform | ratio |")
    print("|---|---|---|---|---|")
    for name, e, k, b, a in (
        ("Mixtral-8x7B", 8, 2, 32, 7.89),
        ("Mixtral-8x7B", 8, 2, 16, 6.44),
        ("DBRX", 16, 4, 8, 12.27),
        ("Qwen1.5-MoE", 60, 4, 16, 27.25),
        ("Qwen3-235B-A22B", 128, 8, 16, 57.745),
    ):
        iid = float(np.asarray(uniform_expected_activated(e, k, b)))
        print(f"| {name} ({e}, {k}) | {b} | {a} | {iid:.2f} | {a / iid:.2f} |")


if __name__ == "__main__":
    main()
