"""Weight storage formats: bytes per weight, the dtype the matmul runs in, and the cost of dequantising.

Bits per weight are the formats' block layouts, scales included (ggml's ggml-common.h block
structs for the GGUF types; the OCP MX spec for mxfp4; DeepSeek-V3's 128x128 fp32 block scales for
fp8):
  q4_0 = 18 B / 32 weights = 4.5    q4_1 = 20/32 = 5.0    q5_0 = 22/32 = 5.5   q5_1 = 24/32 = 6.0
  q8_0 = 34/32 = 8.5                q2_K = 84/256 = 2.625 q3_K = 110/256 = 3.4375
  q4_K = 144/256 = 4.5              q5_K = 176/256 = 5.5  q6_K = 210/256 = 6.5625
  mxfp4 = 17 B / 32 = 4.25 (4-bit values + one 8-bit scale per 32)   fp8 = 8 (+ 4 B per 128x128)
Q4_K_M is a file type, not a tensor type: its tensors mix q4_K, q5_K/q6_K and q8_0 (a GGUF file
gives each tensor's own type; moesim.traces.models.gguf_shapes reads them).

Dequantisation (DEQUANT_OPS, elementwise operations per weight, each time a kernel reads a quantised
weight): unpack (shift/mask), convert to float, multiply by the block scale, and for the K formats
with mins subtract the block min. Counted from ggml's dequantize_row_* loops: q8_0 2 (convert,
scale), q4_0 / q5_0 4 (unpack, offset, convert, scale; q5 adds the high bit: 5), K formats 5-6
(two-level scales and mins), mxfp4 3 (lookup, convert, scale), fp8 1 (convert). These run at the
processor's elementwise (fp32) rate, not its tensor-core rate.
"""

from __future__ import annotations

BITS_PER_WEIGHT: dict[str, float] = {
    "fp32": 32.0, "bf16": 16.0, "fp16": 16.0, "fp8": 8.0, "int8": 8.0, "q8_0": 8.5,
    "q6_K": 6.5625, "q5_1": 6.0, "q5_K": 5.5, "q5_0": 5.5, "q4_1": 5.0, "q4_K": 4.5, "q4_0": 4.5,
    "int4": 4.0 + 16 / 128, "mxfp4": 4.25, "q3_K": 3.4375, "q2_K": 2.625,
}
DEQUANT_OPS: dict[str, float] = {
    "fp32": 0.0, "bf16": 0.0, "fp16": 0.0, "fp8": 1.0, "int8": 2.0, "q8_0": 2.0, "q6_K": 6.0, "q5_1": 5.0,
    "q5_K": 6.0, "q5_0": 5.0, "q4_1": 4.0, "q4_K": 5.0, "q4_0": 4.0, "int4": 4.0, "mxfp4": 3.0,
    "q3_K": 6.0, "q2_K": 6.0,
}
# The peak_flops key a matmul on weights of this format runs at (after dequantisation).
COMPUTE_DTYPE: dict[str, str] = {"fp32": "fp32", "fp16": "fp16", "fp8": "fp8", "int8": "int8", "q8_0": "int8"}
ALIASES = {"q4_k_m": "q4_K", "q4_k_s": "q4_K", "q5_k_m": "q5_K", "q5_k_s": "q5_K", "q6_k": "q6_K",
           "q4_k": "q4_K", "q5_k": "q5_K", "q3_k": "q3_K", "q2_k": "q2_K", "q3_k_m": "q3_K", "q2_k_s": "q2_K"}


def canonical(fmt: str) -> str:
    """"Q4_K_M" -> "q4_K" (a file type maps to its main tensor type); unknown names pass unchanged."""
    if fmt in BITS_PER_WEIGHT:
        return fmt
    low = fmt.lower()
    if low in ALIASES:
        return ALIASES[low]
    return low if low in BITS_PER_WEIGHT else fmt


def known(fmt: str) -> bool:
    return canonical(fmt) in BITS_PER_WEIGHT


def bytes_per_weight(fmt: str) -> float:
    return BITS_PER_WEIGHT[canonical(fmt)] / 8.0


def dequant_ops(fmt: str) -> float:
    return DEQUANT_OPS[canonical(fmt)]


def compute_dtype(fmt: str) -> str:
    return COMPUTE_DTYPE.get(canonical(fmt), "bf16")


def nearest_format(bits_per_weight: float) -> str:
    """The format whose bits per weight is closest to a measured figure (trace bytes / params x 8)."""
    return min(BITS_PER_WEIGHT, key=lambda f: (abs(BITS_PER_WEIGHT[f] - bits_per_weight), f))
