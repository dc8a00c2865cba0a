"""MoE-CAP metrics of a *measured* run: MBU, MFU, S-MBU and S-MFU from the user's TTFT/TPOT/throughput.

The user gives what they measured (TPOT or decode throughput, optionally TTFT) and the configuration they ran
(model, hardware, devices, batch, lengths, precision), and optionally the activated experts: a mean count per
MoE layer, or an expert-count dump (tokens per layer x expert, as MoE-CAP's recorders write it), from which
A_l = #{experts of layer l with a count > 0}.

Two conventions:

- **paper** (default): the definitions of docs/metrics.md and :mod:`capsim.engine.metrics`, applied unchanged. The
  engine's byte and FLOP accounting of every decode step (prefill chunk) is kept and its *time* is replaced by
  the measured one, so S-MBU = Σ(W_act + KV)/Σt_measured/(N·BW_peak), the same function
  (:func:`capsim.engine.metrics.phase_metrics`) that ``capsim predict`` reports with; the activated experts come from
  the dump (or the count) instead of the routing model.
- **moecap-compat**: the published MoE-CAP code's formulas (reference/moecap.md §1.2, §1.4), so numbers line
  up with its dashboard: Q/K/V/O-only attention sizes, experts as 3·d·f, KV at the weight byte width, one
  routed expert per MoE layer in S-MFU, attention FLOPs 4·L·H·d_h·C_r with C_r the engine's ``seq_lens_sum``
  (SGLang: the batch's summed context; vLLM: the scheduled tokens), peak FLOPS taken from MoE-CAP's table and
  halved, and the unweighted mean over passes.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from capsim.errors import DataFileError, ScenarioError

if TYPE_CHECKING:
    from capsim.engine.metrics import PhaseMetrics
    from capsim.engine.scenario import Scenario
    from capsim.hardware.db import HardwareDB
    from capsim.models.spec import ModelSpec

Engine = Literal["sglang", "vllm"]
ENGINES: tuple[str, ...] = ("sglang", "vllm")

# MoE-CAP's hardware table (Auto-CAP/MoE-CAP @ e9e0d88 moe_cap/utils/hardware_utils.py, transcribed in
# reference/moecap.md §2.3): peak bandwidth GB/s and the bf16 "peak" TFLOPS its S-MFU halves (mostly NVIDIA's
# with-sparsity figures). Keyed by capsim accelerator id.
MOECAP_HARDWARE: dict[str, tuple[float, float]] = {
    "a100-pcie-40gb": (1555.0, 624.0),
    "a100-sxm-80gb": (2039.0, 624.0),
    "h100-pcie": (2039.0, 1513.0),
    "h100-sxm": (3350.0, 1979.0),
    "h200-sxm": (4800.0, 1979.0),
    "b200": (8000.0, 2250.0),
    "mi300x": (5300.0, 1307.0),
    "mi325x": (6000.0, 1307.0),
}
MOECAP_HARDWARE_SOURCE = (
    "Auto-CAP/MoE-CAP @ e9e0d88 moe_cap/utils/hardware_utils.py (reference/moecap.md §2.3)"
)

# Bytes per weight parameter in MoE-CAP (model_loader/hf_model_info_loader.py::get_model_precision_bytes).
MOECAP_BYTES_PER_PARAM: dict[str, float] = {
    "fp32": 4.0,
    "fp16": 2.0,
    "bf16": 2.0,
    "int8": 1.0,
    "fp8": 1.0,
    "int4": 0.5,
    "mxfp4": 0.5,
}


# --------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Measurement:
    """What was measured. Times in seconds; ``activated_per_layer`` holds the mean distinct experts per MoE
    layer during decode (one value = every MoE layer), None = take it from the routing model."""

    tpot_s: float | None = None
    decode_tokens_per_s: float | None = None
    ttft_s: float | None = None
    activated_per_layer: tuple[float, ...] | None = None
    activated_source: str = ""

    def decode_step_s(self, batch: int) -> float:
        """TPOT, or batch / decode throughput (tokens/s over the batch)."""
        if self.tpot_s is not None:
            return self.tpot_s
        if self.decode_tokens_per_s is not None:
            return batch / self.decode_tokens_per_s
        raise ScenarioError("give the measured --tpot or --throughput (decode tokens/s)")


def check_measurement(m: Measurement) -> None:
    """ScenarioError for non-positive or non-finite measured values."""
    for name, value in (("--tpot", m.tpot_s), ("--throughput", m.decode_tokens_per_s), ("--ttft", m.ttft_s)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ScenarioError(f"{name} must be a positive measured value, got {value}")
    if m.tpot_s is not None and m.decode_tokens_per_s is not None:
        raise ScenarioError("give either --tpot or --throughput, not both (one is batch / the other)")
    if m.activated_per_layer is not None:
        a = np.asarray(m.activated_per_layer, dtype=np.float64)
        if a.size == 0 or not np.all(np.isfinite(a)) or np.any(a < 0):
            raise ScenarioError("activated experts must be finite counts >= 0")


def activated_from_counts(counts: ArrayLike) -> NDArray[np.float64]:
    """A_l = #{experts i of layer l with count[l, i] > 0}: a (layers, experts) token-count matrix, or a
    (passes, layers, experts) stack (then averaged over passes, as MoE-CAP averages per pass)."""
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim == 2:
        return np.asarray((c > 0).sum(axis=1), dtype=np.float64)
    if c.ndim == 3:
        return np.asarray((c > 0).sum(axis=2).mean(axis=0), dtype=np.float64)
    raise ScenarioError(
        f"an expert-count dump must be (layers, experts) or (passes, layers, experts); got shape {c.shape}"
    )


def load_expert_counts(path: Path | str) -> NDArray[np.float64]:
    """Activated experts per MoE layer from a dump file.

    Accepted: MoE-CAP's ``*_expert_counts.csv`` (``layer_id,expert_0,...``); JSON holding a (layers,
    experts) or (passes, layers, experts) array, bare or under ``expert_counts``; or JSON lines of per-pass
    records with ``expert_counts`` (MoE-CAP's vLLM per-pass mode) or ``activated_per_layer``.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataFileError(str(p), "not UTF-8 text; give a CSV or JSON expert-count dump") from None
    except OSError as exc:
        raise DataFileError(
            str(p), f"cannot be read ({exc.strerror}); check the --expert-counts path"
        ) from None
    try:
        if p.suffix.lower() == ".csv":
            rows = list(csv.DictReader(text.splitlines()))
            if not rows or "layer_id" not in rows[0]:
                raise DataFileError(str(p), "a CSV dump needs a header layer_id,expert_0,expert_1,...")
            cols = [k for k in rows[0] if k and k.startswith("expert_")]
            if not cols:
                raise DataFileError(str(p), "no expert_<i> columns in the header")
            return activated_from_counts([[float(r[k]) for k in cols] for r in rows])
        if p.suffix.lower() == ".jsonl":
            per_pass = []
            for line in text.splitlines():
                if not line.strip():
                    continue
                rec = json.loads(line)
                if "expert_counts" in rec:
                    per_pass.append(activated_from_counts(rec["expert_counts"]))
                elif "activated_per_layer" in rec:
                    per_pass.append(np.asarray(rec["activated_per_layer"], dtype=np.float64))
            if not per_pass:
                raise DataFileError(str(p), "no record has expert_counts or activated_per_layer")
            return np.asarray(np.mean(np.stack(per_pass), axis=0), dtype=np.float64)
        raw = json.loads(text)
        if isinstance(raw, dict):
            if "expert_counts" not in raw:
                raise DataFileError(str(p), "a JSON object dump needs an 'expert_counts' array")
            raw = raw["expert_counts"]
        return activated_from_counts(raw)
    except (ValueError, TypeError) as exc:
        if isinstance(exc, DataFileError):
            raise
        raise DataFileError(str(p), f"not a readable expert-count dump ({exc}); see docs/cap.md") from None


class FixedActivation:
    """A router that reports given activated-expert counts (measured) for every step, clipped to what a step
    of ``tokens`` tokens can activate: min(A_l, tokens·k, E)."""

    name = "measured"

    def __init__(self, per_layer: ArrayLike, num_moe_layers: int, num_experts: int, top_k: int) -> None:
        a = np.asarray(per_layer, dtype=np.float64).reshape(-1)
        if a.size == 1:
            a = np.full(num_moe_layers, float(a[0]))
        if a.size != num_moe_layers:
            raise ScenarioError(
                f"the expert counts cover {a.size} layers but the model has {num_moe_layers} MoE layers; "
                "give one count per MoE layer (or a single mean)"
            )
        if np.any(a > num_experts):
            raise ScenarioError(f"an activated-expert count exceeds the {num_experts} experts per layer")
        least = min(top_k, num_experts)
        if np.any(a < least):
            raise ScenarioError(
                f"an activated-expert count is below top-k = {least}: every token of a step activates at least "
                f"{least} experts of each MoE layer; give counts of MoE layers only (a mean over dense layers "
                "too is diluted)"
            )
        self.values = a
        self.num_moe_layers = num_moe_layers
        self.num_experts = num_experts
        self.top_k = top_k

    def activated_per_layer(
        self, tokens: ArrayLike, *, sequences: ArrayLike | None = None
    ) -> NDArray[np.float64]:
        t = np.asarray(tokens, dtype=np.float64)
        cap = np.minimum(t * self.top_k, float(self.num_experts))
        return np.asarray(
            np.minimum(self.values.reshape((-1,) + (1,) * t.ndim), cap[None, ...]), dtype=np.float64
        )

    def describe(self) -> str:
        return (
            f"measured activated experts per MoE layer (mean {self.values.mean():.2f} of {self.num_experts})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "activated_per_layer": [float(v) for v in self.values]}


# --------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class PhaseUtilisation:
    """MBU, MFU, S-MBU and S-MFU of one phase (fractions of the peaks)."""

    mbu: float | None
    mfu: float | None
    s_mbu: float
    s_mfu: float

    def to_dict(self) -> dict[str, float | None]:
        return {"mbu": self.mbu, "mfu": self.mfu, "s_mbu": self.s_mbu, "s_mfu": self.s_mfu}


@dataclass(frozen=True)
class MeasureResult:
    """The measured run's metrics under one convention, with what went into them."""

    convention: str
    model: str
    hardware: str
    devices: int
    batch: int
    tpot_s: float
    ttft_s: float | None
    decode: PhaseUtilisation
    prefill: PhaseUtilisation | None
    activated_per_layer_mean: float | None
    activated_source: str
    basis: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "convention": self.convention,
            "model": self.model,
            "hardware": self.hardware,
            "devices": self.devices,
            "batch": self.batch,
            "tpot_s": self.tpot_s,
            "ttft_s": self.ttft_s,
            "decode_tokens_per_s": self.batch / self.tpot_s,
            "decode": self.decode.to_dict(),
            "prefill": None if self.prefill is None else self.prefill.to_dict(),
            "activated_experts_per_layer_mean": self.activated_per_layer_mean,
            "activated_source": self.activated_source,
            "basis": self.basis,
        }


def _util(pm: PhaseMetrics) -> PhaseUtilisation:
    return PhaseUtilisation(pm.mbu, pm.mfu, pm.s_mbu, pm.s_mfu)


def measure(
    scenario: Scenario,
    measured: Measurement,
    *,
    hardware_db: HardwareDB | None = None,
    convention: Literal["paper", "moecap-compat"] = "paper",
    engine: str = "sglang",
    records: PassRecords | None = None,
) -> MeasureResult:
    """MBU/MFU/S-MBU/S-MFU of a measured run of ``scenario`` (see the module docstring)."""
    check_measurement(measured)
    scenario.validate()
    if convention == "moecap-compat":
        return _measure_compat(scenario, measured, hardware_db, engine, records)
    if records is not None:
        raise ScenarioError("--moecap-records are read with --moecap-compat (MoE-CAP's per-pass formulas)")
    from capsim.engine.metrics import phase_metrics
    from capsim.engine.passes import decode_times, prefill_times
    from capsim.engine.resolve import resolve

    rs, _memory = resolve(scenario, hardware_db)
    source = measured.activated_source or "routing model (capsim predict's): no measured counts given"
    if measured.activated_per_layer is not None and rs.model.moe is not None and rs.router is not None:
        router = FixedActivation(
            measured.activated_per_layer,
            rs.router.num_moe_layers,
            rs.model.moe.num_experts,
            rs.model.moe.top_k,
        )
        rs = replace(rs, router=router)
    batch = scenario.batch
    tpot = measured.decode_step_s(batch)
    devices = rs.layout.devices_per_replica
    bw = rs.rates.memory_bandwidth
    decode = decode_times(rs, batch)
    if decode.time.size == 0:
        raise ScenarioError("--gen-len must be >= 2 for decode metrics (the first token comes from prefill)")
    # the measured TPOT replaces the modelled step time; bytes and FLOPs per step are the engine's
    dec = phase_metrics(replace(decode, time=np.full_like(decode.time, tpot)), devices, bw)
    pre_util = None
    if measured.ttft_s is not None:
        prefill = prefill_times(rs, batch)
        scale = measured.ttft_s / float(prefill.time.sum())
        pre_util = _util(phase_metrics(replace(prefill, time=prefill.time * scale), devices, bw))
    activated = decode.activated_by_layer()
    return MeasureResult(
        convention="paper",
        model=rs.model.id,
        hardware=scenario.hardware,
        devices=devices,
        batch=batch,
        tpot_s=tpot,
        ttft_s=measured.ttft_s,
        decode=_util(dec),
        prefill=pre_util,
        activated_per_layer_mean=float(activated.mean()) if activated.size else None,
        activated_source=source,
        basis={
            "bandwidth_peak_gb_s_per_device": bw / 1e9,
            "flops_peak_tflops_per_device": decode.metric_peak_flops / 1e12,
            "definition": "docs/metrics.md (time-weighted; S-MBU counts the experts activated by the batch)",
        },
    )


# --------------------------------------------------------------------------------------------- compat


@dataclass(frozen=True)
class CompatSizes:
    """Parameter counts as MoE-CAP's code computes them (reference/moecap.md §1.2), per layer."""

    family: str
    layers: int
    moe_layers: int
    dense_layers: int
    s_attn: float
    s_expert: float
    s_shared: float
    s_dense: float
    kv_elements_per_token: float
    attn_flop_width: float
    """Per-layer width W of the attention-score FLOP term 2·L·W·C_r: 2·H·d_h (default), H·(d_qk + d_v) (MLA)."""


def compat_sizes(model: ModelSpec) -> CompatSizes:
    """Sizes by MoE-CAP's family rules: the family is chosen by substring of the model id ("deepseek",
    "qwen3", "qwen", else default), exactly as its code does."""
    if model.moe is None:
        raise ScenarioError(f"{model.id} is dense: MoE-CAP's S-MBU/S-MFU are defined for MoE models only")
    d = model.hidden_size
    att = model.attention
    moe = model.moe
    f = moe.expert_intermediate_size
    mid = model.id.lower()
    family = (
        "deepseek"
        if "deepseek" in mid
        else "qwen3"
        if "qwen3" in mid
        else "qwen"
        if "qwen" in mid
        else "default"
    )
    layers = model.num_layers
    n_moe = sum(1 for k in model.ffn_kinds if k.name == "MOE")
    if family == "deepseek":
        h = att.num_heads
        q = (
            d * att.q_lora_rank + att.q_lora_rank * h * (att.qk_nope_head_dim + att.qk_rope_head_dim)
            if att.q_lora_rank
            else d * h * (att.qk_nope_head_dim + att.qk_rope_head_dim)
        )
        s_attn = (
            d * (att.kv_lora_rank + att.qk_rope_head_dim)
            + att.kv_lora_rank * h * (att.qk_nope_head_dim + att.v_head_dim)
            + att.v_head_dim * h * d
            + q
        )
        kv = float(att.kv_lora_rank + att.qk_rope_head_dim)
        width = h * (att.qk_nope_head_dim + att.qk_rope_head_dim + att.v_head_dim) / 2.0
        s_shared = 2 * 3 * d * f  # the code hard-codes 2 shared experts (V3/R1 have 1)
        s_dense = 3 * d * model.dense_intermediate_size
        return CompatSizes(
            family, layers, n_moe, layers - n_moe, s_attn, 3 * d * f, s_shared, s_dense, layers * kv, width
        )
    hd = att.head_dim
    s_attn = d * (att.num_heads * hd + 2 * att.num_kv_heads * hd) + att.num_heads * hd * d
    kv = float(2 * layers * att.num_kv_heads * hd)
    width = float(att.num_heads * hd)
    if family == "qwen3":
        return CompatSizes(
            family,
            layers,
            n_moe,
            layers - n_moe,
            s_attn,
            3 * d * f,
            0.0,
            3 * d * model.dense_intermediate_size,
            kv,
            width,
        )
    if family == "qwen":
        return CompatSizes(
            family, layers, layers, 0, s_attn, 3 * d * f, 3 * d * moe.shared_intermediate_size, 0.0, kv, width
        )
    # default path: every layer taken as a MoE layer, no shared or dense FFN (Mixtral, DBRX, gpt-oss ...)
    return CompatSizes(family, layers, layers, 0, s_attn, 3 * d * f, 0.0, 0.0, kv, width)


@dataclass(frozen=True)
class PassRecords:
    """Per-forward-pass records of a MoE-CAP run (``detailed_results_*.jsonl`` or the server's per-pass JSONL):
    arrays over the decode passes kept, and over the prefill passes kept."""

    decode_latency_s: NDArray[np.float64]
    decode_batch: NDArray[np.float64]
    decode_seq_lens_sum: NDArray[np.float64]
    decode_activated: NDArray[np.float64]
    prefill_latency_s: NDArray[np.float64]
    prefill_seq_lens_sum: NDArray[np.float64]
    prefill_activated: NDArray[np.float64]
    skipped: int


def load_moecap_records(path: Path | str) -> PassRecords:
    """Read MoE-CAP per-pass records (JSON lines with ``forward_mode``, ``expert_activation``, ``batch_size``,
    ``seq_lens_sum`` and ``latency`` or ``tpot``/``ttft``), keeping the passes MoE-CAP's code keeps: it skips
    passes whose ``expert_activation`` is missing or < 0, and prefill passes with ``seq_lens_sum`` <= 10
    (warm-up probes; reference/moecap.md §1.2)."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise DataFileError(str(p), "not UTF-8 text; give MoE-CAP's detailed_results_*.jsonl") from None
    except OSError as exc:
        raise DataFileError(
            str(p), f"cannot be read ({exc.strerror}); check the --moecap-records path"
        ) from None
    dec: list[tuple[float, float, float, float]] = []
    pre: list[tuple[float, float, float]] = []
    skipped = 0
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            mode = str(rec.get("forward_mode", "")).lower()
            act = rec.get("expert_activation")
            latency = rec.get("latency", rec.get("tpot" if mode == "decode" else "ttft"))
            if act is None or float(act) < 0 or latency is None or mode not in ("decode", "prefill"):
                skipped += 1
                continue
            c = float(rec["seq_lens_sum"])
            if mode == "decode":
                dec.append((float(latency), float(rec["batch_size"]), c, float(act)))
            elif c > 10:
                pre.append((float(latency), c, float(act)))
            else:
                skipped += 1
        except (ValueError, KeyError, TypeError) as exc:
            raise DataFileError(
                str(p), f"line {n}: not a MoE-CAP pass record ({exc}); see docs/cap.md"
            ) from None
    if not dec:
        raise DataFileError(
            str(p), "no decode pass with expert_activation, batch_size, seq_lens_sum and latency"
        )
    d = np.asarray(dec, dtype=np.float64)
    q = np.asarray(pre, dtype=np.float64).reshape(-1, 3)
    if np.any(d[:, 0] <= 0) or (q.size and np.any(q[:, 0] <= 0)):
        raise DataFileError(str(p), "a pass latency is not positive")
    return PassRecords(d[:, 0], d[:, 1], d[:, 2], d[:, 3], q[:, 0], q[:, 1], q[:, 2], skipped)


def compat_decode(
    sizes: CompatSizes,
    *,
    activated: ArrayLike,
    batch: ArrayLike,
    seq_lens_sum: ArrayLike,
    latency_s: ArrayLike,
    bytes_per_param: float,
    devices: int,
    bandwidth_gb_s: float,
    peak_tflops: float,
) -> tuple[float, float]:
    """(S-MBU, S-MFU) of decode passes as MoE-CAP's code computes them, unweighted mean over passes:

    S-MBU_r = b·[L_moe·(A·S_exp + S_sh) + L_dense·S_dense + L·S_attn + C_r·κ] / t_r / (N·BW)
    S-MFU_r = 2·[L_moe·(S_exp + S_sh) + L_dense·S_dense + L·S_attn + 2·L·W·C_r]·(B_r/t_r) / (N·P/2)

    (one routed expert per MoE layer in S-MFU; W = H·d_h; C_r = ``seq_lens_sum`` of pass r; ``activated`` and
    ``batch`` are per pass or one value for all)."""
    c = np.asarray(seq_lens_sum, dtype=np.float64)
    t = np.asarray(latency_s, dtype=np.float64)
    a = np.asarray(activated, dtype=np.float64)
    b_r = np.asarray(batch, dtype=np.float64)
    s = sizes
    weights = s.moe_layers * (a * s.s_expert + s.s_shared) + s.dense_layers * s.s_dense + s.layers * s.s_attn
    bytes_per_pass = bytes_per_param * (weights + c * s.kv_elements_per_token)
    s_mbu = bytes_per_pass / t / (devices * bandwidth_gb_s * 1e9)
    flops_per_token = 2.0 * (
        s.moe_layers * (s.s_expert + s.s_shared)
        + s.dense_layers * s.s_dense
        + s.layers * s.s_attn
        + 2.0 * s.layers * s.attn_flop_width * c
    )
    s_mfu = flops_per_token * (b_r / t) / (devices * peak_tflops * 1e12 / 2.0)
    return float(np.mean(s_mbu)), float(np.mean(s_mfu))


def _compat_records(
    scenario: Scenario,
    model: ModelSpec,
    sizes: CompatSizes,
    rec: PassRecords,
    b: float,
    devices: int,
    bw: float,
    peak: float,
    table: str,
    engine: str,
) -> MeasureResult:
    """MoE-CAP's per-pass formulas over the recorded passes (their C_r, B_r, A_r and t_r), unweighted means;
    TPOT = mean decode-pass latency, as its code reports."""
    s_mbu, s_mfu = compat_decode(
        sizes,
        activated=rec.decode_activated,
        batch=rec.decode_batch,
        seq_lens_sum=rec.decode_seq_lens_sum,
        latency_s=rec.decode_latency_s,
        bytes_per_param=b,
        devices=devices,
        bandwidth_gb_s=bw,
        peak_tflops=peak,
    )
    pre = None
    ttft = None
    if rec.prefill_latency_s.size:
        p_mbu, p_mfu = compat_decode(
            sizes,
            activated=rec.prefill_activated,
            batch=rec.prefill_seq_lens_sum,
            seq_lens_sum=rec.prefill_seq_lens_sum,
            latency_s=rec.prefill_latency_s,
            bytes_per_param=b,
            devices=devices,
            bandwidth_gb_s=bw,
            peak_tflops=peak,
        )
        pre = PhaseUtilisation(None, None, p_mbu, p_mfu)
        ttft = float(rec.prefill_latency_s.mean())
    tpot = float(rec.decode_latency_s.mean())
    return MeasureResult(
        convention="moecap-compat",
        model=model.id,
        hardware=scenario.hardware,
        devices=devices,
        batch=round(float(rec.decode_batch.mean())),
        tpot_s=tpot,
        ttft_s=ttft,
        decode=PhaseUtilisation(None, None, s_mbu, s_mfu),
        prefill=pre,
        activated_per_layer_mean=float(rec.decode_activated.mean()),
        activated_source=f"MoE-CAP per-pass records ({rec.decode_latency_s.size} decode, "
        f"{rec.prefill_latency_s.size} prefill passes kept, {rec.skipped} skipped)",
        basis={
            "family": sizes.family,
            "engine": engine,
            "bytes_per_param": b,
            "bandwidth_gb_s_per_device": bw,
            "peak_tflops_table": peak,
            "peak_used_tflops": peak / 2.0,
            "hardware_table": table,
            "decode_tokens_per_s_moecap": float(np.mean(rec.decode_batch / rec.decode_latency_s)),
            "conventions": "per-pass C_r (seq_lens_sum), B_r, A_r, t_r from the records; unweighted means",
        },
    )


def _measure_compat(
    scenario: Scenario,
    measured: Measurement,
    hardware_db: HardwareDB | None,
    engine: str,
    records: PassRecords | None = None,
) -> MeasureResult:
    from capsim.engine.resolve import resolve, resolve_model
    from capsim.hardware.db import load_hardware_db

    if engine not in ENGINES:
        raise ScenarioError(f"--engine {engine!r} is not one of {', '.join(ENGINES)}")
    db = hardware_db or load_hardware_db()
    model = resolve_model(scenario.model) if isinstance(scenario.model, str) else scenario.model
    sizes = compat_sizes(model)
    rs, _ = resolve(scenario, db)
    devices = rs.layout.devices_per_replica
    dtype = (scenario.weight_dtype or model.native_dtypes.get("routed_experts", "bf16")).lower()
    b = MOECAP_BYTES_PER_PARAM.get(dtype, 2.0)  # the code's default is 2 bytes
    device_id = getattr(rs.device, "id", scenario.hardware)
    if device_id in MOECAP_HARDWARE:
        bw, peak = MOECAP_HARDWARE[device_id]
        table = MOECAP_HARDWARE_SOURCE
    else:
        bw = float(rs.device.memory_bandwidth_gb_s)
        sparse = dict(getattr(rs.device, "peak_tflops_sparse", {}) or {})
        dense = dict(rs.device.peak_tflops_dense)
        peak = float(sparse.get("bf16") or 2.0 * dense.get("bf16", 0.0))
        if not peak:
            raise ScenarioError(f"{device_id} has no bf16 peak in the database for the compat S-MFU")
        table = (
            f"{device_id} is not in MoE-CAP's table: capsim's bandwidth and with-sparsity bf16 peak "
            "(the convention the table mostly follows)"
        )
    if records is not None:
        return _compat_records(scenario, model, sizes, records, b, devices, bw, peak, table, engine)
    if measured.activated_per_layer is None:
        raise ScenarioError(
            "--moecap-compat needs the measured activated experts (--activated-experts, --expert-counts or "
            "--moecap-records): MoE-CAP's S-MBU uses the recorded count, not a routing model"
        )
    activated = float(np.mean(measured.activated_per_layer))
    batch = scenario.batch
    tpot = measured.decode_step_s(batch)
    steps = max(scenario.gen_len - 1, 1)
    # SGLang's seq_lens_sum is the running context of the whole batch; vLLM v1's the scheduled tokens (B)
    if engine == "sglang":
        c = batch * (scenario.prompt_len + np.arange(1, steps + 1, dtype=np.float64))
    else:
        c = np.full(steps, float(batch))
    s_mbu, s_mfu = compat_decode(
        sizes,
        activated=activated,
        batch=batch,
        seq_lens_sum=c,
        latency_s=np.full(steps, tpot),
        bytes_per_param=b,
        devices=devices,
        bandwidth_gb_s=bw,
        peak_tflops=peak,
    )
    pre = None
    if measured.ttft_s is not None:
        # one prefill pass of B·P tokens: throughput C_r / t_r, the same formulas with B_r -> C_r tokens
        tokens = float(batch * scenario.prompt_len)
        p_mbu, p_mfu = compat_decode(
            sizes,
            activated=activated,
            batch=int(tokens),
            seq_lens_sum=[tokens],
            latency_s=[measured.ttft_s],
            bytes_per_param=b,
            devices=devices,
            bandwidth_gb_s=bw,
            peak_tflops=peak,
        )
        pre = PhaseUtilisation(None, None, p_mbu, p_mfu)
    return MeasureResult(
        convention="moecap-compat",
        model=model.id,
        hardware=scenario.hardware,
        devices=devices,
        batch=batch,
        tpot_s=tpot,
        ttft_s=measured.ttft_s,
        decode=PhaseUtilisation(None, None, s_mbu, s_mfu),
        prefill=pre,
        activated_per_layer_mean=activated,
        activated_source=measured.activated_source or "given",
        basis={
            "family": sizes.family,
            "engine": engine,
            "bytes_per_param": b,
            "bandwidth_gb_s_per_device": bw,
            "peak_tflops_table": peak,
            "peak_used_tflops": peak / 2.0,
            "hardware_table": table,
            "sizes_params": {
                "s_attn": sizes.s_attn,
                "s_expert": sizes.s_expert,
                "s_shared": sizes.s_shared,
                "s_dense": sizes.s_dense,
                "kv_elements_per_token": sizes.kv_elements_per_token,
            },
            "conventions": "reference/moecap.md §1.2/§1.4: QKVO attention, 3·d·f experts, weight-width KV, "
            "one expert in S-MFU, 4·L·H·d_h·C_r attention FLOPs, P/2, unweighted mean",
        },
    )
