"""One prepared validation run on a lent CUDA GPU (issue 13, item 8): measure, bring the numbers home, predict
them here.

A lent GPU machine has no network and may lack capsim's CLI dependencies (typer, rich, scipy), so this script
uses only the library's profiling harness (numpy, sympy, networkx — all PyTorch dependencies — and torch) and
writes every result as JSON under ``--out`` as soon as it exists: a run cut short still returns what it
measured. Prediction and comparison happen afterwards on any machine (``benchmarks/gpu/compare_h200.py``).

Stages, each skipped when the time budget is spent:
1. environment (versions, device, free memory);
2. ``capsim.profile.calibrate`` on CUDA with the vendor's nominal peaks from hardware_db/h200-sxm → a calibrated
   hardware entry (TOML) and every sample (JSON);
3. the capsim harness (``capsim.profile.harness.run_profile``): real-size MoE decoder layers of Mixtral-8x7B,
   Qwen3-30B-A3B and DeepSeek-V3 (first n layers, random weights, bf16, their real routers), decode steps at
   batch 1…256 and prefills, routing recorded per case;
4. transformers' own sparse-MoE blocks (Mixtral, Qwen3-MoE, DeepSeek-V3) with random weights in bf16, timed
   over 1…8192 tokens, with the distinct experts each call activated (the eager implementations Hugging Face
   users run).

Usage (on the GPU machine, from the repository root):
    python benchmarks/gpu/h200_validate.py --out "$OUT" --budget-s 420
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

START = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - START:7.1f}s] {message}", flush=True)


def dump(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")


def stage_environment(out: Path) -> None:
    import importlib

    info: dict[str, Any] = {"python": sys.version, "platform": platform.platform()}
    for name in (
        "torch",
        "transformers",
        "numpy",
        "sympy",
        "networkx",
        "scipy",
        "typer",
        "rich",
        "matplotlib",
    ):
        try:
            info[name] = getattr(importlib.import_module(name), "__version__", "present")
        except Exception as exc:
            info[name] = f"missing: {exc!r}"
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        free, total = torch.cuda.mem_get_info(0)
        info.update(
            device=props.name,
            sm_count=props.multi_processor_count,
            capability=f"{props.major}.{props.minor}",
            memory_total_gb=total / 1e9,
            memory_free_gb=free / 1e9,
            cuda=torch.version.cuda,
        )
    dump(out / "environment.json", info)
    log(f"environment: {info}")


def stage_calibrate(out: Path, device: str, tiny: bool) -> None:
    from capsim.hardware.db import load_hardware_db
    from capsim.profile.calibrate import calibrate, write_entry, write_report

    nominal = load_hardware_db().get("h200-sxm")
    peaks = {k: v for k, v in nominal.peak_tflops_dense.items() if k in ("fp32", "bf16", "fp16")}
    cal = calibrate(
        device=device,
        quick=tiny,
        nominal_bw_gb_s=nominal.memory_bandwidth_gb_s,
        nominal_tflops=peaks,
        command="python benchmarks/gpu/h200_validate.py (stage calibrate)",
        progress=log,
    )
    path = write_entry(cal, out / "calibration", "h200-sxm-calibrated")
    write_report(cal, path.with_name(f"{path.stem}.calibration.json"))
    log(f"calibration written: {path}")


PROFILES: tuple[tuple[str, int, tuple[int, ...], tuple[int, ...], tuple[tuple[int, int], ...]], ...] = (
    # model, layers, decode batches, decode contexts, prefills (batch, prompt)
    (
        "mixtral-8x7b",
        4,
        (1, 2, 4, 8, 16, 32, 64, 128, 256),
        (1024, 4096),
        ((1, 512), (1, 2048), (4, 2048), (16, 2048)),
    ),
    (
        "qwen3-30b-a3b",
        8,
        (1, 2, 4, 8, 16, 32, 64, 128, 256),
        (1024, 4096),
        ((1, 512), (1, 2048), (4, 2048), (16, 2048)),
    ),
    # DeepSeek-V3's first three layers are dense: four layers hold one MoE layer (22.5 GB of bf16 experts).
    # The harness's MLA decode (SDPA over the latent with 128 query heads) needs 64 GiB at batch 64: batch <= 16.
    ("deepseek-v3", 4, (1, 4, 16), (1024,), ((1, 512), (1, 2048), (4, 2048))),
)


TINY_PROFILES = (("olmoe-1b-7b", 1, (1, 4), (64,), ((1, 32),)),)


def stage_profile(out: Path, deadline: float, device: str, tiny: bool) -> None:
    from capsim.profile.harness import ProfilePlan, grid, run_profile

    for model, layers, batches, contexts, prefills in TINY_PROFILES if tiny else PROFILES:
        if time.monotonic() > deadline:
            log(f"profile {model}: skipped (time budget spent)")
            continue
        plan = ProfilePlan(
            model=model,
            cases=grid(batches, contexts, prefills),
            num_layers=layers,
            device=device,
            dtype="bf16" if device.startswith("cuda") else "fp32",
            warmup=2,
            repetitions=5,
            threads=None if device.startswith("cuda") else 1,
        )
        try:
            run = run_profile(
                plan,
                out / f"profile-{model}",
                command=f"python benchmarks/gpu/h200_validate.py (stage profile {model})",
                progress=log,
            )
            log(f"profile {model}: {len(run.cases)} cases")
        except Exception:
            (out / f"profile-{model}").mkdir(parents=True, exist_ok=True)
            (out / f"profile-{model}" / "error.txt").write_text(traceback.format_exc())
            log(f"profile {model} failed:\n{traceback.format_exc()}")
        import torch

        if device.startswith("cuda"):
            torch.cuda.empty_cache()


TRANSFORMERS_BLOCKS = (
    (
        "mixtral-8x7b",
        "transformers.models.mixtral.modeling_mixtral",
        "MixtralSparseMoeBlock",
        "MixtralConfig",
    ),
    (
        "qwen3-30b-a3b",
        "transformers.models.qwen3_moe.modeling_qwen3_moe",
        "Qwen3MoeSparseMoeBlock",
        "Qwen3MoeConfig",
    ),
    (
        "deepseek-v3",
        "transformers.models.deepseek_v3.modeling_deepseek_v3",
        "DeepseekV3MoE",
        "DeepseekV3Config",
    ),
)
TOKENS = (1, 4, 16, 64, 256, 1024, 4096, 8192)


def _config(module: Any, config_class: str, model: str, tiny: bool) -> Any:
    raw = json.loads((ROOT / "model_db" / f"{model}.json").read_text())
    fields = {k: v for k, v in raw.items() if not k.startswith("_")}
    fields.pop("quantization_config", None)  # random bf16 weights: no FP8 checkpoint format
    if tiny:  # CPU smoke test of this script: same structure, small widths
        fields.update(hidden_size=128, intermediate_size=64, moe_intermediate_size=64)
    return getattr(module, config_class)(**fields)


def _expert_ids_hook(record: list[Any], top_k: int, num_experts: int) -> Any:
    """Forward hook on the router: keep the routed expert ids of the call, whatever the router returns
    (transformers versions differ: logits, or a tuple holding the top-k indices)."""
    import torch

    def hook(_module: Any, _inputs: Any, output: Any) -> None:
        items = output if isinstance(output, tuple) else (output,)
        for item in items:
            if isinstance(item, torch.Tensor) and not item.is_floating_point() and item.shape[-1] == top_k:
                record.append(item.reshape(-1).unique().numel())
                return
        for item in items:
            if isinstance(item, torch.Tensor) and item.is_floating_point() and item.shape[-1] == num_experts:
                record.append(item.reshape(-1, num_experts).topk(top_k, dim=-1).indices.unique().numel())
                return

    return hook


def stage_transformers(out: Path, deadline: float, device: str, tiny: bool) -> None:
    import importlib

    import torch

    results: dict[str, Any] = {}
    for model, module_name, block_class, config_class in TRANSFORMERS_BLOCKS:
        if time.monotonic() > deadline:
            log(f"transformers {model}: skipped (time budget spent)")
            continue
        entry: dict[str, Any] = {"block": f"{module_name}.{block_class}", "dtype": "bf16", "runs": {}}
        results[model] = entry
        try:
            module = importlib.import_module(module_name)
            config = _config(module, config_class, model, tiny)
            torch.manual_seed(0)
            torch.set_default_dtype(torch.bfloat16)
            with torch.device(device):
                block = getattr(module, block_class)(config)
                # random weights, as the harness uses: N(0, 0.02); the router's correction bias stays zero
                for name, p in block.named_parameters():
                    if "bias" not in name:
                        torch.nn.init.normal_(p, std=0.02)
            torch.set_default_dtype(torch.float32)
            block.eval()
            int(config.num_experts_per_tok)
            record: list[int] = []
            experts = getattr(block, "experts", None)

            def pre_hook(_module: Any, args: tuple[Any, ...]) -> None:
                for item in args[1:]:
                    if isinstance(item, torch.Tensor) and not item.is_floating_point():
                        record.append(int(item.reshape(-1).unique().numel()))  # noqa: B023 (hook runs inside this iteration)
                        return

            if experts is not None:
                experts.register_forward_pre_hook(pre_hook)
            implementations = ["eager"]
            if hasattr(config, "_experts_implementation") and device.startswith("cuda"):
                implementations.append("grouped_mm")
            hidden = int(config.hidden_size)
            for impl in implementations:
                if hasattr(config, "_experts_implementation"):
                    config._experts_implementation = impl
                points: list[dict[str, Any]] = []
                entry["runs"][impl] = points
                for tokens in TOKENS if not tiny else TOKENS[:4]:
                    if time.monotonic() > deadline:
                        break
                    x = torch.randn(1, tokens, hidden, device=device, dtype=torch.bfloat16)
                    try:
                        times = _time_block(torch, block, x, device, record)
                    except Exception:
                        entry[f"error_{impl}"] = traceback.format_exc()
                        log(f"transformers {model} {impl} failed:\n{entry[f'error_{impl}']}")
                        break
                    point = {
                        "tokens": tokens,
                        "median_s": times[len(times) // 2],
                        "min_s": times[0],
                        "max_s": times[-1],
                        "activated_experts": (sum(record) / len(record)) if record else None,
                    }
                    points.append(point)
                    log(f"transformers {model} {impl} T={tokens}: {point}")
            del block
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
        except Exception:
            torch.set_default_dtype(torch.float32)
            entry["error"] = traceback.format_exc()
            log(f"transformers {model} failed:\n{entry['error']}")
        dump(out / "transformers_moe.json", results)


def _time_block(torch: Any, block: Any, x: Any, device: str, record: list[int]) -> list[float]:
    """Median-ready sorted seconds of 7 timed calls after 3 warm-ups (CUDA events on a GPU)."""
    cuda = device.startswith("cuda")
    with torch.no_grad():
        for _ in range(3):
            block(x)
        if cuda:
            torch.cuda.synchronize()
        record.clear()
        times = []
        for _ in range(7):
            if cuda:
                begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                begin.record()
                block(x)
                end.record()
                torch.cuda.synchronize()
                times.append(begin.elapsed_time(end) / 1e3)
            else:
                t0 = time.perf_counter()
                block(x)
                times.append(time.perf_counter() - t0)
    return sorted(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--budget-s", type=float, default=420.0, help="stop starting new work after this long"
    )
    parser.add_argument("--stages", default="environment,calibrate,profile,transformers")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke test of this script (small shapes)")
    args = parser.parse_args()
    deadline = START + args.budget_s
    stages = args.stages.split(",")
    if "environment" in stages:
        stage_environment(args.out)
    if "calibrate" in stages:
        try:
            stage_calibrate(args.out, args.device, args.tiny)
        except Exception:
            log(f"calibrate failed:\n{traceback.format_exc()}")
    if "transformers" in stages:  # before the long profiles: the cheapest evidence first
        stage_transformers(args.out, START + args.budget_s * 0.45, args.device, args.tiny)
    if "profile" in stages:
        stage_profile(args.out, deadline, args.device, args.tiny)
    log("done")


if __name__ == "__main__":
    main()
