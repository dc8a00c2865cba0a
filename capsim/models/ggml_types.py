"""ggml block types and GGUF file types: bits per weight of each block type and the default block type of each
file type (sources in capsim.models.gguf's docstring: ggml-common.h and llama-quant.cpp)."""

from __future__ import annotations

# ggml type -> (weights per block, bytes per block), ggml-common.h (commit 01243c58)
GGML_BLOCKS: dict[str, tuple[int, int]] = {
    "q4_0": (32, 18),  # fp16 d + 16 B nibbles
    "q4_1": (32, 20),  # fp16 d, m + 16 B
    "q5_0": (32, 22),  # fp16 d + 4 B high bits + 16 B
    "q5_1": (32, 24),
    "q8_0": (32, 34),  # fp16 d + 32 int8
    "q2_k": (256, 84),  # "Effectively 2.625 bits per weight"
    "q3_k": (256, 110),  # 3.4375
    "q4_k": (256, 144),  # 4.5
    "q5_k": (256, 176),  # 5.5
    "q6_k": (256, 210),  # 6.5625
    "iq1_s": (256, 50),  # 1.5625
    "iq1_m": (256, 56),  # 1.75
    "iq2_xxs": (256, 66),  # 2.0625
    "iq2_xs": (256, 74),  # 2.3125
    "iq2_s": (256, 82),  # 2.5625
    "iq3_xxs": (256, 98),  # 3.0625
    "iq3_s": (256, 110),  # 3.4375
    "iq4_nl": (32, 18),  # 4.5
    "iq4_xs": (256, 136),  # 4.25
}


# GGUF file type (llama-quantize's name, lower case) -> default ggml type (llama_ftype_get_default_type)
FILE_TYPES: dict[str, str] = {
    "q4_0": "q4_0",
    "q4_1": "q4_1",
    "q5_0": "q5_0",
    "q5_1": "q5_1",
    "q8_0": "q8_0",
    "q2_k": "q2_k",
    "q3_k_s": "q3_k",
    "q3_k_m": "q3_k",
    "q3_k_l": "q3_k",
    "q4_k_s": "q4_k",
    "q4_k_m": "q4_k",
    "q5_k_s": "q5_k",
    "q5_k_m": "q5_k",
    "q6_k": "q6_k",
    "iq1_s": "iq1_s",
    "iq1_m": "iq1_m",
    "iq2_xxs": "iq2_xxs",
    "iq2_xs": "iq2_xs",
    "iq2_s": "iq2_xs",
    "iq2_m": "iq2_s",
    "iq3_xxs": "iq3_xxs",
    "iq3_xs": "iq3_s",
    "iq3_s": "iq3_s",
    "iq3_m": "iq3_s",
    "iq4_nl": "iq4_nl",
    "iq4_xs": "iq4_xs",
    # LLAMA_FTYPE_MOSTLY_MXFP4_MOE (gpt-oss GGUFs): expert tensors MXFP4, every other one Q8_0 (capsim.models.gguf)
    "mxfp4_moe": "mxfp4",
}
"""Block types without a file type of that name (q4_k, q5_k, q3_k) mean every quantisable tensor in that type
(llama-quantize --pure)."""


# llama.cpp's integer dot-product kernels quantise activations to 8 bits (q8_0/q8_1/q8_K), so the compute is
# int8 where the device lists an int8 rate (AVX-512 VNNI / AMX on CPUs, dp4a/mma MMQ on GPUs), else bf16.
NATIVE_COMPUTE = "int8"


MXFP4_BLOCK = (32, 17)
"""ggml's block_mxfp4 (ggml-common.h): one E8M0 scale byte + 16 bytes of E2M1 nibbles per 32 weights = 4.25 bits
(the OCP MX layout). Only inside the MXFP4_MOE file type: a bare ``mxfp4`` weight dtype is capsim's own
(capsim.models.precision), not a GGUF type."""


def bits(ggml_type: str) -> float:
    """Bits per weight of a ggml block type, block bytes x 8 / block weights."""
    n, size = MXFP4_BLOCK if ggml_type == "mxfp4" else GGML_BLOCKS[ggml_type]
    return size * 8.0 / n


def is_gguf(name: str) -> bool:
    """Whether ``name`` is a GGUF file type or ggml block type capsim knows."""
    return name.lower() in FILE_TYPES or name.lower() in GGML_BLOCKS
