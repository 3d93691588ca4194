"""ggml / whisper.cpp file format: constants, hparams and the tensor layout whisper.cpp expects.

Shared by the writer (:mod:`.convert`) and the validator (:mod:`.validate`); imports nothing from
the other ``ggml`` modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from stenod.audio import SAMPLE_RATE

QuantizeType = Literal["f16", "q8_0", "q5_0"]


class GgmlConversionError(ValueError):
    """A model file could not be read, converted or validated; the message names file and reason."""


# --------------------------------------------------------------------------------------------------
# ggml constants (ggml.h / whisper.cpp)
# --------------------------------------------------------------------------------------------------

GGML_FILE_MAGIC = 0x67676D6C  # "ggml"
GGML_QNT_VERSION = 2  # ggml.h; stored in the ftype field of quantized files
GGML_QNT_VERSION_FACTOR = 1000

# enum ggml_type
GGML_TYPE_F32 = 0
GGML_TYPE_F16 = 1
GGML_TYPE_Q4_0 = 2
GGML_TYPE_Q4_1 = 3
GGML_TYPE_Q5_0 = 6
GGML_TYPE_Q5_1 = 7
GGML_TYPE_Q8_0 = 8

# ggml_type -> (block size in elements, bytes per block)
_GGML_TYPE_LAYOUT: dict[int, tuple[int, int]] = {
    GGML_TYPE_F32: (1, 4),
    GGML_TYPE_F16: (1, 2),
    GGML_TYPE_Q4_0: (32, 18),
    GGML_TYPE_Q4_1: (32, 20),
    GGML_TYPE_Q5_0: (32, 22),
    GGML_TYPE_Q5_1: (32, 24),
    GGML_TYPE_Q8_0: (32, 34),
}
_GGML_TYPE_NAMES = {0: "f32", 1: "f16", 2: "q4_0", 3: "q4_1", 6: "q5_0", 7: "q5_1", 8: "q8_0"}

# enum ggml_ftype -> weight type (ggml_ftype_to_ggml_type); whisper.cpp uses it for the 2-D weights
_FTYPE_TO_WTYPE: dict[int, int] = {
    0: GGML_TYPE_F32,
    1: GGML_TYPE_F16,
    2: GGML_TYPE_Q4_0,
    3: GGML_TYPE_Q4_1,
    7: GGML_TYPE_Q8_0,
    8: GGML_TYPE_Q5_0,
    9: GGML_TYPE_Q5_1,
}
_QUANTIZE_TO_FTYPE: dict[str, int] = {"f16": 1, "q8_0": 7, "q5_0": 8}

QK = 32  # elements per block for q8_0 / q5_0

# Exact on-disk block layouts (ggml-common.h); numpy structured dtypes are packed (no padding).
_BLOCK_Q8_0 = np.dtype([("d", "<f2"), ("qs", "i1", (QK,))])
_BLOCK_Q5_0 = np.dtype([("d", "<f2"), ("qh", "<u4"), ("qs", "u1", (QK // 2,))])
assert _BLOCK_Q8_0.itemsize == 34 and _BLOCK_Q5_0.itemsize == 22

# whisper.cpp constants the converted file must agree with
WHISPER_SAMPLE_RATE = SAMPLE_RATE  # the one sample rate, audio.decode.SAMPLE_RATE
WHISPER_N_FFT = 400
_WHISPER_EOT_EN = 50256  # whisper.cpp hardcodes token_eot (= 50257 for multilingual vocabularies)
_WHISPER_MULTILINGUAL_MIN_VOCAB = 51865


# --------------------------------------------------------------------------------------------------
# Whisper hparams and the expected tensor layout
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WhisperHparams:
    """The 11 int32 hyper-parameters at the start of a whisper.cpp ggml file.

    ``ftype`` is the plain ggml_ftype (1 = f16, 7 = q8_0, 8 = q5_0); quantized files store it as
    ``GGML_QNT_VERSION * GGML_QNT_VERSION_FACTOR + ftype`` (see ``stored_ftype``).
    """

    n_vocab: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int
    n_mels: int
    ftype: int

    @property
    def is_quantized(self) -> bool:
        return self.ftype not in (0, 1)

    @property
    def stored_ftype(self) -> int:
        """What whisper.cpp's quantize tool writes: the qnt version is folded into quantized ftypes."""
        return self.ftype + (GGML_QNT_VERSION * GGML_QNT_VERSION_FACTOR if self.is_quantized else 0)

    def as_tuple(self) -> tuple[int, ...]:
        return (
            self.n_vocab, self.n_audio_ctx, self.n_audio_state, self.n_audio_head,
            self.n_audio_layer, self.n_text_ctx, self.n_text_state, self.n_text_head,
            self.n_text_layer, self.n_mels, self.ftype,
        )  # fmt: skip


def _check_hparams(hp: WhisperHparams, path: Path) -> None:
    """Sanity limits shared by reader and validator; whisper.cpp asserts text/audio state match."""
    if any(v <= 0 or v > 10_000_000 for v in hp.as_tuple()[:10]):
        raise GgmlConversionError(f"{path}: implausible hparams {hp}")
    if hp.n_audio_state != hp.n_text_state:
        raise GgmlConversionError(
            f"{path}: audio state {hp.n_audio_state} != text state {hp.n_text_state} (whisper.cpp requires equal)"
        )
    if hp.n_audio_state % hp.n_audio_head or hp.n_text_state % hp.n_text_head:
        raise GgmlConversionError(f"{path}: state size is not divisible by the number of heads: {hp}")
    if hp.ftype not in _FTYPE_TO_WTYPE:
        raise GgmlConversionError(f"{path}: unsupported ggml ftype {hp.ftype}")


# Tensor roles decide the ggml type, mirroring whisper.cpp's loader (ggml_new_tensor_* calls):
# "f32": 1-D tensors, conv biases, positional embeddings; "conv": conv kernels (f16 unless the
# file is f32); "weight": 2-D matrices stored in the model's wtype (f16 or quantized).
_Role = Literal["f32", "conv", "weight"]


def _layer_spec(prefix: str, n: int, cross: bool) -> list[tuple[str, tuple[int, ...], _Role]]:
    spec: list[tuple[str, tuple[int, ...], _Role]] = []
    attns = ["attn", "cross_attn"] if cross else ["attn"]
    for attn in attns:
        spec += [
            (f"{prefix}.{attn}.query.weight", (n, n), "weight"),
            (f"{prefix}.{attn}.query.bias", (n,), "f32"),
            (f"{prefix}.{attn}.key.weight", (n, n), "weight"),
            (f"{prefix}.{attn}.value.weight", (n, n), "weight"),
            (f"{prefix}.{attn}.value.bias", (n,), "f32"),
            (f"{prefix}.{attn}.out.weight", (n, n), "weight"),
            (f"{prefix}.{attn}.out.bias", (n,), "f32"),
            (f"{prefix}.{attn}_ln.weight", (n,), "f32"),
            (f"{prefix}.{attn}_ln.bias", (n,), "f32"),
        ]
    spec += [
        (f"{prefix}.mlp.0.weight", (4 * n, n), "weight"),
        (f"{prefix}.mlp.0.bias", (4 * n,), "f32"),
        (f"{prefix}.mlp.2.weight", (n, 4 * n), "weight"),
        (f"{prefix}.mlp.2.bias", (n,), "f32"),
        (f"{prefix}.mlp_ln.weight", (n,), "f32"),
        (f"{prefix}.mlp_ln.bias", (n,), "f32"),
    ]
    return spec


def _expected_tensors(hp: WhisperHparams) -> dict[str, tuple[tuple[int, ...], _Role]]:
    """Every tensor whisper.cpp loads, with its numpy (row-major) shape; ggml dims are reversed."""
    n = hp.n_audio_state
    spec: list[tuple[str, tuple[int, ...], _Role]] = [
        ("encoder.positional_embedding", (hp.n_audio_ctx, n), "f32"),
        ("encoder.conv1.weight", (n, hp.n_mels, 3), "conv"),
        ("encoder.conv1.bias", (n, 1), "f32"),
        ("encoder.conv2.weight", (n, n, 3), "conv"),
        ("encoder.conv2.bias", (n, 1), "f32"),
    ]
    for i in range(hp.n_audio_layer):
        spec += _layer_spec(f"encoder.blocks.{i}", n, cross=False)
    spec += [
        ("encoder.ln_post.weight", (n,), "f32"),
        ("encoder.ln_post.bias", (n,), "f32"),
        ("decoder.positional_embedding", (hp.n_text_ctx, hp.n_text_state), "f32"),
        ("decoder.token_embedding.weight", (hp.n_vocab, hp.n_text_state), "weight"),
    ]
    for i in range(hp.n_text_layer):
        spec += _layer_spec(f"decoder.blocks.{i}", hp.n_text_state, cross=True)
    spec += [
        ("decoder.ln.weight", (hp.n_text_state,), "f32"),
        ("decoder.ln.bias", (hp.n_text_state,), "f32"),
    ]
    return {name: (shape, role) for name, shape, role in spec}


def _ggml_type_for(role: _Role, hp: WhisperHparams) -> int:
    wtype = _FTYPE_TO_WTYPE[hp.ftype]
    if role == "f32":
        return GGML_TYPE_F32
    if role == "conv":
        return GGML_TYPE_F32 if wtype == GGML_TYPE_F32 else GGML_TYPE_F16
    return wtype
