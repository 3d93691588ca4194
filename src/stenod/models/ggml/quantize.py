"""ggml q8_0 / q5_0 quantizers and dequantizers, bit-exact with ggml's reference implementations."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from stenod.models.ggml.format import _BLOCK_Q5_0, _BLOCK_Q8_0, GGML_TYPE_Q5_0, GGML_TYPE_Q8_0, QK, GgmlConversionError

# --------------------------------------------------------------------------------------------------
# ggml quantizers (ggml-quants.c quantize_row_q8_0_ref / quantize_row_q5_0_ref, vectorized)
# --------------------------------------------------------------------------------------------------


def _as_blocks(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 0 or x.shape[-1] % QK:
        raise GgmlConversionError(f"row length {x.shape[-1] if x.ndim else 0} is not a multiple of {QK}")
    return x.reshape(-1, QK)


def _roundf(v: np.ndarray) -> np.ndarray:
    """C ``roundf`` (half away from zero). Not ``floor(|v| + 0.5)``: in float32 that rounds
    0.49999997 up to 1; ``|v| - floor(|v|)`` is exact, so comparing it with 0.5 is not."""
    a = np.abs(v)
    f = np.floor(a)
    rounded: np.ndarray = np.copysign(f + (a - f >= np.float32(0.5)), v)
    return rounded


def quantize_q8_0(x: np.ndarray) -> np.ndarray:
    """Quantize rows (last dim a multiple of 32) to ggml q8_0 blocks: fp16 scale + 32 int8.

    Bit-exact with ggml's ``quantize_row_q8_0_ref`` (what whisper.cpp's quantize tool stores).
    Returns a 1-D structured array; ``.tobytes()`` is the on-disk data.
    """
    blocks = _as_blocks(x)
    amax = np.max(np.abs(blocks), axis=1)
    d = amax / np.float32(127)
    with np.errstate(divide="ignore"):
        inv = np.where(d != 0, np.float32(1) / d, np.float32(0)).astype(np.float32)
    out = np.empty(blocks.shape[0], dtype=_BLOCK_Q8_0)
    out["d"] = d.astype(np.float16)
    out["qs"] = _roundf(blocks * inv[:, None]).astype(np.int8)
    return out


def dequantize_q8_0(blocks: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of ``quantize_q8_0`` (ggml's dequantize_row_q8_0), for tests and round-trip checks."""
    b = np.frombuffer(np.ascontiguousarray(blocks).tobytes(), dtype=_BLOCK_Q8_0)
    values = b["d"].astype(np.float32)[:, None] * b["qs"].astype(np.float32)
    return values.reshape(shape)


def quantize_q5_0(x: np.ndarray) -> np.ndarray:
    """Quantize rows to ggml q5_0 blocks: fp16 scale, 32 high bits, 16 bytes of low nibbles.

    Bit-exact with ggml's ``quantize_row_q5_0_ref``: the scale is the signed max-magnitude value / -16
    and codes are ``min(31, (int8)(x/d + 16.5f))`` computed in float32.
    """
    blocks = _as_blocks(x)
    rows = np.arange(blocks.shape[0])
    signed_max = blocks[rows, np.argmax(np.abs(blocks), axis=1)]  # first index of max |x|, as in C
    d = (signed_max / np.float32(-16)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(d != 0, np.float32(1) / d, np.float32(0)).astype(np.float32)
    scaled = (blocks * inv[:, None]).astype(np.float32) + np.float32(16.5)
    codes = np.minimum(31, np.trunc(scaled).astype(np.int32)).astype(np.uint32)
    lo, hi = codes[:, : QK // 2], codes[:, QK // 2 :]
    out = np.empty(blocks.shape[0], dtype=_BLOCK_Q5_0)
    out["d"] = d.astype(np.float16)
    out["qs"] = ((lo & 0x0F) | ((hi & 0x0F) << 4)).astype(np.uint8)
    bit = np.arange(QK // 2, dtype=np.uint32)
    qh = (((lo & 0x10) >> 4) << bit).sum(axis=1, dtype=np.uint64) + (
        ((hi & 0x10) >> 4) << (bit + QK // 2)
    ).sum(axis=1, dtype=np.uint64)
    out["qh"] = qh.astype(np.uint32)
    return out


def dequantize_q5_0(blocks: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of ``quantize_q5_0`` (ggml's dequantize_row_q5_0)."""
    b = np.frombuffer(np.ascontiguousarray(blocks).tobytes(), dtype=_BLOCK_Q5_0)
    bit = np.arange(QK // 2, dtype=np.uint32)
    qh = b["qh"].astype(np.uint32)[:, None]
    qs = b["qs"].astype(np.int32)
    x0 = ((qs & 0x0F) | (((qh >> bit) << 4) & 0x10).astype(np.int32)) - 16
    x1 = ((qs >> 4) | ((qh >> (bit + 12)) & 0x10).astype(np.int32)) - 16
    values = np.concatenate([x0, x1], axis=1).astype(np.float32) * b["d"].astype(np.float32)[:, None]
    return values.reshape(shape)


_QUANTIZERS: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    GGML_TYPE_Q8_0: quantize_q8_0,
    GGML_TYPE_Q5_0: quantize_q5_0,
}
