"""Numeric precisions for weights, KV cache and compute: bytes per element and which peak FLOPS applies.

Bits per parameter include block-scale overheads, because that is what is read from memory:
- mxfp4: 4-bit E2M1 elements plus one 8-bit E8M0 scale per 32-element block = 4 + 8/32 = 4.25 bits
  (OCP Microscaling Formats (MX) Specification v1.0, 2023, §5; GPT-OSS stores its experts this way).
- int4: GPTQ/AWQ-style groups of 128 weights with one fp16 scale = 4 + 16/128 = 4.125 bits
  (zero points, where used, are ignored: symmetric quantisation).
- fp8 with DeepSeek-V3's 128x128 fp32 block scales adds 32/16384 bits per weight, i.e. < 0.3 %: ignored.

Compute: a weight format only runs at that format's tensor-core rate when the hardware has it *and* the
activations are quantised too. Weight-only formats (int8, int4 as served by Marlin/AWQ kernels) dequantise
to bf16 and run at the bf16 rate; fp8 and mxfp4 use their own rate where the device lists one and fall
back to bf16 otherwise (e.g. fp8 on A100 or RTX 3090). "Half the bits" is therefore not "twice the speed".
"""

from __future__ import annotations

from dataclasses import dataclass

from capsim.errors import ScenarioError
from capsim.models.ggml_types import FILE_TYPES, NATIVE_COMPUTE, bits, is_gguf


@dataclass(frozen=True)
class Precision:
    """A storage precision: ``bits_per_element`` as read from memory, and the compute rate it can use."""

    name: str
    bits_per_element: float
    native_compute: str
    """Key of the peak-FLOPS column used when the device lists it (``bf16``, ``fp16``, ``fp8``, ``fp4``)."""

    @property
    def bytes_per_element(self) -> float:
        return self.bits_per_element / 8.0


WEIGHT_PRECISIONS: dict[str, Precision] = {
    p.name: p
    for p in (
        Precision("fp32", 32.0, "fp32"),
        Precision("bf16", 16.0, "bf16"),
        Precision("fp16", 16.0, "fp16"),
        Precision("fp8", 8.0, "fp8"),
        Precision("int8", 8.0, "bf16"),  # weight-only W8A16: dequantised, bf16 GEMM
        # W8A8: int8 weights and dynamically quantised int8 activations, int8 GEMMs (AMX-INT8 / AVX-512 VNNI on
        # Xeon as SGLang's CPU backend runs DeepSeek-R1, lmsys.org/blog/2025-07-14-intel-xeon-optimization;
        # int8 tensor cores on GPUs)
        Precision("w8a8", 8.0, "int8"),
        Precision("int4", 4.125, "bf16"),  # weight-only W4A16, group 128 fp16 scales
        Precision("mxfp4", 4.25, "fp4"),
    )
}

KV_PRECISIONS: dict[str, Precision] = {
    p.name: p
    for p in (
        Precision("fp32", 32.0, "fp32"),
        Precision("bf16", 16.0, "bf16"),
        Precision("fp16", 16.0, "fp16"),
        Precision("fp8", 8.0, "bf16"),  # fp8 KV is upcast inside attention kernels
    )
}


def weight_dtype_choices() -> str:
    """The valid weight dtypes as said in error messages (the GGUF types are many: a few examples)."""
    return f"{', '.join(WEIGHT_PRECISIONS)}, or a GGUF type such as q4_k_m, q8_0, q4_0, iq4_xs (docs/deployment.md)"


def is_weight_dtype(name: str) -> bool:
    """Whether ``name`` is an accepted weight dtype (case-insensitive)."""

    return name.lower() in WEIGHT_PRECISIONS or is_gguf(name)


def weight_precision(name: str) -> Precision:
    """Look up a weight precision by name, with a clear error listing the valid names.

    A GGUF file type (``q4_k_m``) gives its default tensor type here; the per-group mix it really stores
    comes from :func:`capsim.models.gguf.group_precisions`."""
    key = name.lower()
    if key in WEIGHT_PRECISIONS:
        return WEIGHT_PRECISIONS[key]
    pass

    if is_gguf(key):
        return base_precision(key)
    raise ScenarioError(f"unknown weight dtype {name!r}; choose one of {weight_dtype_choices()}")


def kv_precision(name: str) -> Precision:
    """Look up a KV-cache precision by name, with a clear error listing the valid names."""
    try:
        return KV_PRECISIONS[name.lower()]
    except KeyError:
        raise ScenarioError(
            f"unknown KV-cache dtype {name!r}; choose one of {', '.join(KV_PRECISIONS)}"
        ) from None


def compute_key(precision: Precision, available: frozenset[str] | set[str]) -> str:
    """The peak-FLOPS key a GEMM on weights of ``precision`` runs at on a device with ``available`` keys.

    Falls back to bf16 (then fp16) when the device has no native rate for the format.
    """
    if precision.native_compute in available:
        return precision.native_compute
    for fallback in ("bf16", "fp16", "fp32"):
        if fallback in available:
            return fallback
    raise ScenarioError("device lists no bf16, fp16 or fp32 peak FLOPS; cannot cost compute")


def base_precision(name: str) -> Precision:
    """The default tensor type of a GGUF file type (or the block type itself), as a :class:`Precision`."""
    key = name.lower()
    return Precision(key, bits(FILE_TYPES.get(key, key)), NATIVE_COMPUTE)
