"""Convert a CTranslate2 Whisper model folder into a whisper.cpp ggml model file.

Why this exists: stenod ships Whisper weights as CTranslate2 folders (for faster-whisper), but the
whisper.cpp engine needs the legacy ggml file that ``models/convert-pt-to-ggml.py`` writes. Rather
than shipping a second copy of every model (or depending on torch + the openai repo to re-convert),
we derive the ggml file from the CTranslate2 folder with numpy alone.

Pipeline (each step is a small function below):

1. ``read_ct2_model`` parses CTranslate2's ``model.bin`` (binary versions 2..6) into numpy arrays,
   rejecting anything that is truncated, garbled or not a ``WhisperSpec`` with a
   ``GgmlConversionError`` that names the file.
2. ``whisper_hparams_from_ct2`` + ``_openai_tensors`` rename CTranslate2 variables to the OpenAI
   checkpoint names whisper.cpp looks up, un-fusing q/k/v (self-attention) and k/v (cross-attention)
   and dropping CTranslate2's all-zero key bias (whisper.cpp has no key bias tensor).
3. ``mel_filters`` recomputes librosa's Slaney mel filterbank (what whisper's mel_filters.npz holds);
   ``load_vocabulary_bytes`` turns the GPT-2 byte-level vocabulary back into raw bytes.
4. The writer emits the ggml layout (magic, hparams, filters, vocab, tensors) in f16 or quantized
   to q8_0 / q5_0 exactly like whisper.cpp's ``quantize`` tool (ggml's ``*_ref`` quantizers).
5. ``validate_ggml_file`` re-parses the result (headers only) and checks every tensor's type,
   shape and byte size against what whisper.cpp will expect, and that the sizes add up to the file
   length, so a broken file never reaches whisper.cpp (which aborts the process on bad input).

CLI: ``python -m stenod.models.ggml_convert SRC_DIR OUT_FILE [--quantize f16|q8_0|q5_0]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import struct
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, get_args

import numpy as np

__all__ = [
    "GGML_FILE_MAGIC",
    "GgmlConversionError",
    "GgmlFileInfo",
    "GgmlTensorInfo",
    "QuantizeType",
    "WhisperHparams",
    "convert_ct2_to_ggml",
    "dequantize_q5_0",
    "dequantize_q8_0",
    "load_vocabulary_bytes",
    "main",
    "mel_filters",
    "quantize_q5_0",
    "quantize_q8_0",
    "read_ct2_model",
    "sinusoids",
    "validate_ggml_file",
    "whisper_hparams_from_ct2",
]

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
WHISPER_SAMPLE_RATE = 16000
WHISPER_N_FFT = 400
_WHISPER_EOT_EN = 50256  # whisper.cpp hardcodes token_eot (= 50257 for multilingual vocabularies)
_WHISPER_MULTILINGUAL_MIN_VOCAB = 51865

# --------------------------------------------------------------------------------------------------
# CTranslate2 model.bin reader
# --------------------------------------------------------------------------------------------------

# Binary versions written by CTranslate2 so far (python/ctranslate2/specs/model_spec.py); version 1
# has no spec name, so it cannot be a WhisperSpec.
_CT2_MIN_BINARY_VERSION = 2
_CT2_MAX_BINARY_VERSION = 6
_CT2_MAX_WHISPER_REVISION = 3
_CT2_BFLOAT16 = 5
# enum DataType in include/ctranslate2/types.h (bfloat16 has no numpy dtype; handled separately)
_CT2_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    _CT2_BFLOAT16: np.dtype("<u2"),
}
# Pre-v4 files stored an item size instead of a dtype id (model.cc get_dtype_from_item_size).
_CT2_LEGACY_ITEM_SIZES: dict[int, np.dtype] = {4: np.dtype("<f4"), 2: np.dtype("<i2"), 1: np.dtype("i1")}
_CT2_MAX_RANK = 8
_CT2_MIN_VARIABLE_BYTES = 2 + 1 + 1 + 1 + 4  # name length, 1-byte name (NUL), rank, dtype, byte count


class _Ct2Cursor:
    """Bounds-checked sequential reader, so truncation becomes a clear error, never struct.error."""

    def __init__(self, data: bytes, path: Path) -> None:
        self._data = data
        self._view = memoryview(data)
        self._pos = 0
        self._path = path

    @property
    def pos(self) -> int:
        return self._pos

    def fail(self, reason: str) -> GgmlConversionError:
        return GgmlConversionError(f"{self._path}: {reason}")

    def take(self, n: int, what: str) -> memoryview:
        end = self._pos + n
        if n < 0 or end > len(self._data):
            raise self.fail(
                f"file is truncated: needed {n} bytes for {what} at offset {self._pos}, "
                f"but the file has only {len(self._data)} bytes"
            )
        chunk = self._view[self._pos : end]
        self._pos = end
        return chunk

    def unpack(self, fmt: str, what: str) -> int:
        (value,) = struct.unpack(fmt, self.take(struct.calcsize(fmt), what))
        return int(value)

    def string(self, what: str) -> str:
        length = self.unpack("<H", f"length of {what}")
        raw = bytes(self.take(length, what)).rstrip(b"\0")  # CTranslate2 counts the trailing NUL
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} at offset {self._pos - length} is not valid UTF-8") from None


@dataclass(frozen=True)
class Ct2Header:
    """The model.bin header: which serializer wrote it and for which model spec."""

    binary_version: int
    spec_name: str
    spec_revision: int


def _read_ct2_header(cur: _Ct2Cursor) -> Ct2Header:
    version = cur.unpack("<I", "binary version")
    if not _CT2_MIN_BINARY_VERSION <= version <= _CT2_MAX_BINARY_VERSION:
        raise cur.fail(
            f"unsupported CTranslate2 binary version {version} (supported "
            f"{_CT2_MIN_BINARY_VERSION}..{_CT2_MAX_BINARY_VERSION}); not a CTranslate2 model.bin?"
        )
    spec = cur.string("spec name")
    revision = cur.unpack("<I", "spec revision")
    if spec != "WhisperSpec":
        raise cur.fail(f"model spec is {spec!r}, not 'WhisperSpec': only Whisper models can be converted")
    if not 1 <= revision <= _CT2_MAX_WHISPER_REVISION:
        raise cur.fail(
            f"unsupported WhisperSpec revision {revision} (supported 1..{_CT2_MAX_WHISPER_REVISION})"
        )
    return Ct2Header(version, spec, revision)


def _read_ct2_variable(cur: _Ct2Cursor, binary_version: int) -> tuple[str, np.ndarray]:
    name = cur.string("variable name")
    rank = cur.unpack("<B", f"rank of {name!r}")
    if rank > _CT2_MAX_RANK:
        raise cur.fail(f"variable {name!r} has implausible rank {rank}")
    shape = tuple(cur.unpack("<I", f"shape of {name!r}") for _ in range(rank))
    if binary_version >= 4:
        type_id = cur.unpack("<B", f"dtype of {name!r}")
        if type_id not in _CT2_DTYPES:
            raise cur.fail(f"variable {name!r} has unknown dtype id {type_id}")
        dtype = _CT2_DTYPES[type_id]
        num_bytes = cur.unpack("<I", f"byte count of {name!r}")
    else:
        item_size = cur.unpack("<B", f"item size of {name!r}")
        if item_size not in _CT2_LEGACY_ITEM_SIZES:
            raise cur.fail(f"variable {name!r} has unknown item size {item_size}")
        type_id = -1
        dtype = _CT2_LEGACY_ITEM_SIZES[item_size]
        num_bytes = cur.unpack("<I", f"element count of {name!r}") * item_size
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if num_bytes != expected:
        raise cur.fail(
            f"variable {name!r} declares {num_bytes} bytes but shape {shape} of {dtype} needs {expected}"
        )
    array = np.frombuffer(cur.take(num_bytes, f"data of {name!r}"), dtype=dtype).reshape(shape)
    if type_id == _CT2_BFLOAT16:
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return name, array


def read_ct2_model(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a CTranslate2 Whisper ``model.bin`` into ``{variable name: array}``.

    Arrays are returned as stored (float16/float32, or int8/int16 weights next to their
    ``<name>_scale``); aliases (e.g. ``decoder/projection/weight``) map to the same array. Raises
    ``GgmlConversionError`` for a missing, truncated or non-Whisper file, so callers never see
    IndexError/struct.error from a corrupt download.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise GgmlConversionError(f"{path}: cannot read CTranslate2 model: {exc.strerror or exc}") from exc
    cur = _Ct2Cursor(data, path)
    header = _read_ct2_header(cur)
    count = cur.unpack("<I", "variable count")
    if count * _CT2_MIN_VARIABLE_BYTES > len(data) - cur.pos:  # garbage count or cut-off file
        raise cur.fail(
            f"file is truncated or corrupt: {count} variables cannot fit in the remaining "
            f"{len(data) - cur.pos} bytes"
        )
    variables: dict[str, np.ndarray] = {}
    for _ in range(count):
        name, array = _read_ct2_variable(cur, header.binary_version)
        variables[name] = array
    if header.binary_version >= 3:
        for _ in range(cur.unpack("<I", "alias count")):
            alias = cur.string("alias name")
            target = cur.string("alias target")
            for suffix in ("", "_scale"):
                if target + suffix in variables:
                    variables[alias + suffix] = variables[target + suffix]
    if cur.pos != len(data):
        raise cur.fail(f"{len(data) - cur.pos} unexpected trailing bytes after offset {cur.pos}")
    return variables


# --------------------------------------------------------------------------------------------------
# CTranslate2 -> OpenAI/whisper.cpp tensor mapping
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


def _require(variables: Mapping[str, np.ndarray], name: str, path: Path) -> np.ndarray:
    try:
        return variables[name]
    except KeyError:
        raise GgmlConversionError(f"{path}: missing tensor {name!r}; not a complete Whisper model") from None


def _count_layers(variables: Mapping[str, np.ndarray], stack: str, path: Path) -> int:
    """Layers are numbered ``<stack>/layer_<i>/``; require 0..n-1 so a gap cannot go unnoticed."""
    pattern = re.compile(rf"^{stack}/layer_(\d+)/")
    found = {int(m.group(1)) for name in variables if (m := pattern.match(name))}
    if not found:
        raise GgmlConversionError(f"{path}: no {stack} layers found; not a Whisper model")
    if found != set(range(len(found))):
        raise GgmlConversionError(f"{path}: {stack} layers are not numbered 0..{len(found) - 1}: {sorted(found)}")
    return len(found)


def _scalar_int(variables: Mapping[str, np.ndarray], name: str, path: Path) -> int:
    value = _require(variables, name, path)
    if value.size != 1:
        raise GgmlConversionError(f"{path}: {name!r} should be a scalar, has shape {value.shape}")
    return int(value.reshape(()))


def whisper_hparams_from_ct2(
    variables: Mapping[str, np.ndarray], *, ftype: int = 1, path: str | os.PathLike[str] = "model.bin"
) -> WhisperHparams:
    """Derive whisper.cpp's hparams from tensor shapes (CTranslate2 does not store them separately)."""
    path = Path(path)
    conv1 = _require(variables, "encoder/conv1/weight", path)
    embeddings = _require(variables, "decoder/embeddings/weight", path)
    dec_pos = _require(variables, "decoder/position_encodings/encodings", path)
    if conv1.ndim != 3 or embeddings.ndim != 2 or dec_pos.ndim != 2:
        raise GgmlConversionError(f"{path}: unexpected ranks for conv1/embeddings/position encodings")
    n_state = int(conv1.shape[0])
    enc_pos = variables.get("encoder/position_encodings/encodings")
    n_audio_ctx = int(enc_pos.shape[0]) if enc_pos is not None and enc_pos.ndim == 2 else 1500
    hp = WhisperHparams(
        n_vocab=int(embeddings.shape[0]),
        n_audio_ctx=n_audio_ctx,
        n_audio_state=n_state,
        n_audio_head=_scalar_int(variables, "encoder/num_heads", path),
        n_audio_layer=_count_layers(variables, "encoder", path),
        n_text_ctx=int(dec_pos.shape[0]),
        n_text_state=int(embeddings.shape[1]),
        n_text_head=_scalar_int(variables, "decoder/num_heads", path),
        n_text_layer=_count_layers(variables, "decoder", path),
        n_mels=int(conv1.shape[1]),
        ftype=ftype,
    )
    _check_hparams(hp, path)
    return hp


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


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> np.ndarray:
    """openai/whisper's ``sinusoids()``: the fixed encoder positional embedding, for folders lacking it."""
    if channels % 2:
        raise GgmlConversionError(f"sinusoids need an even channel count, got {channels}")
    log_increment = np.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = np.exp(-log_increment * np.arange(channels // 2, dtype=np.float32)).astype(np.float32)
    scaled = np.arange(length, dtype=np.float32)[:, None] * inv_timescales[None, :]
    return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1).astype(np.float32)


def _dequantized(variables: Mapping[str, np.ndarray], name: str, path: Path) -> np.ndarray:
    """Return a float tensor; int8/int16 CTranslate2 weights are divided by their saved scale."""
    value = _require(variables, name, path)
    if value.dtype.kind == "f":
        return value
    scale = variables.get(name + "_scale")
    if scale is None:
        raise GgmlConversionError(f"{path}: integer tensor {name!r} has no {name + '_scale'!r}")
    scale = np.asarray(scale, dtype=np.float32)
    flat = value.reshape(value.shape[0], -1).astype(np.float32)
    if scale.size == 1:  # int16: one scale per layer
        out = flat / scale.reshape(())
    elif scale.shape == (value.shape[0],):  # int8: one scale per output row
        out = flat / scale[:, None]
    else:
        raise GgmlConversionError(f"{path}: scale of {name!r} has shape {scale.shape}, tensor {value.shape}")
    return out.reshape(value.shape)


def _split_rows(array: np.ndarray, parts: int, name: str, path: Path) -> list[np.ndarray]:
    if array.shape[0] % parts:
        raise GgmlConversionError(f"{path}: fused tensor {name!r} of shape {array.shape} cannot split in {parts}")
    return np.split(array, parts, axis=0)


def _ct2_layer_tensors(
    get: Callable[[str], np.ndarray], ct2: str, oai: str, cross: bool, path: Path
) -> Iterator[tuple[str, np.ndarray]]:
    """Yield one encoder/decoder block under OpenAI names, splitting CTranslate2's fused projections."""
    attn_sources = [("self_attention", "attn")] + ([("attention", "cross_attn")] if cross else [])
    for src, dst in attn_sources:
        base = f"{ct2}/{src}"
        if src == "self_attention":
            qkv_w = get(f"{base}/linear_0/weight")
            qkv_b = get(f"{base}/linear_0/bias")
            q_w, k_w, v_w = _split_rows(qkv_w, 3, f"{base}/linear_0/weight", path)
            q_b, _k_b, v_b = _split_rows(qkv_b, 3, f"{base}/linear_0/bias", path)
            out = "linear_1"
        else:
            q_w, q_b = get(f"{base}/linear_0/weight"), get(f"{base}/linear_0/bias")
            k_w, v_w = _split_rows(get(f"{base}/linear_1/weight"), 2, f"{base}/linear_1/weight", path)
            _k_b, v_b = _split_rows(get(f"{base}/linear_1/bias"), 2, f"{base}/linear_1/bias", path)
            out = "linear_2"
        # The key bias is all zeros (Whisper's key projection has none) and whisper.cpp has no slot for it.
        yield f"{oai}.{dst}.query.weight", q_w
        yield f"{oai}.{dst}.query.bias", q_b
        yield f"{oai}.{dst}.key.weight", k_w
        yield f"{oai}.{dst}.value.weight", v_w
        yield f"{oai}.{dst}.value.bias", v_b
        yield f"{oai}.{dst}.out.weight", get(f"{base}/{out}/weight")
        yield f"{oai}.{dst}.out.bias", get(f"{base}/{out}/bias")
        yield f"{oai}.{dst}_ln.weight", get(f"{base}/layer_norm/gamma")
        yield f"{oai}.{dst}_ln.bias", get(f"{base}/layer_norm/beta")
    yield f"{oai}.mlp.0.weight", get(f"{ct2}/ffn/linear_0/weight")
    yield f"{oai}.mlp.0.bias", get(f"{ct2}/ffn/linear_0/bias")
    yield f"{oai}.mlp.2.weight", get(f"{ct2}/ffn/linear_1/weight")
    yield f"{oai}.mlp.2.bias", get(f"{ct2}/ffn/linear_1/bias")
    yield f"{oai}.mlp_ln.weight", get(f"{ct2}/ffn/layer_norm/gamma")
    yield f"{oai}.mlp_ln.bias", get(f"{ct2}/ffn/layer_norm/beta")


def _openai_tensors(
    variables: Mapping[str, np.ndarray], hp: WhisperHparams, path: Path
) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (OpenAI name, float array) in checkpoint order; lazily, to keep peak memory low."""

    def get(name: str) -> np.ndarray:
        return _dequantized(variables, name, path)

    enc_pos = variables.get("encoder/position_encodings/encodings")
    yield "encoder.positional_embedding", (
        get("encoder/position_encodings/encodings") if enc_pos is not None
        else sinusoids(hp.n_audio_ctx, hp.n_audio_state)
    )  # fmt: skip
    yield "encoder.conv1.weight", get("encoder/conv1/weight")
    yield "encoder.conv1.bias", get("encoder/conv1/bias").reshape(-1, 1)
    yield "encoder.conv2.weight", get("encoder/conv2/weight")
    yield "encoder.conv2.bias", get("encoder/conv2/bias").reshape(-1, 1)
    for i in range(hp.n_audio_layer):
        yield from _ct2_layer_tensors(get, f"encoder/layer_{i}", f"encoder.blocks.{i}", False, path)
    yield "encoder.ln_post.weight", get("encoder/layer_norm/gamma")
    yield "encoder.ln_post.bias", get("encoder/layer_norm/beta")
    yield "decoder.positional_embedding", get("decoder/position_encodings/encodings")
    yield "decoder.token_embedding.weight", get("decoder/embeddings/weight")
    for i in range(hp.n_text_layer):
        yield from _ct2_layer_tensors(get, f"decoder/layer_{i}", f"decoder.blocks.{i}", True, path)
    yield "decoder.ln.weight", get("decoder/layer_norm/gamma")
    yield "decoder.ln.bias", get("decoder/layer_norm/beta")


# --------------------------------------------------------------------------------------------------
# Mel filters and vocabulary
# --------------------------------------------------------------------------------------------------


def _hz_to_mel_slaney(hz: float) -> float:
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    return hz / f_sp if hz < min_log_hz else min_log_mel + float(np.log(hz / min_log_hz)) / logstep


def _mel_to_hz_slaney(mels: np.ndarray) -> np.ndarray:
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    freqs = f_sp * mels
    log_t = mels >= min_log_mel
    freqs[log_t] = min_log_hz * np.exp(logstep * (mels[log_t] - min_log_mel))
    return freqs


def mel_filters(n_mels: int, *, sr: int = WHISPER_SAMPLE_RATE, n_fft: int = WHISPER_N_FFT) -> np.ndarray:
    """``librosa.filters.mel(sr, n_fft, n_mels)`` (Slaney scale + norm), i.e. whisper's mel_filters.npz.

    Mirrors librosa's float32 accumulation so values match the npz that convert-pt-to-ggml.py copies.
    Shape (n_mels, n_fft // 2 + 1), float32.
    """
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_f = _mel_to_hz_slaney(np.linspace(_hz_to_mel_slaney(0.0), _hz_to_mel_slaney(sr / 2.0), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    weights = np.zeros((n_mels, n_fft // 2 + 1), dtype=np.float32)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels])
    weights *= enorm[:, np.newaxis]
    return weights


def _gpt2_byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's ``bytes_to_unicode`` (byte-level BPE maps every byte to a printable char)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


def _read_token_strings(src_dir: Path) -> tuple[list[str], Path]:
    """Tokens in id order from vocabulary.json / vocabulary.txt (CTranslate2) or tokenizer.json (HF)."""
    json_vocab, txt_vocab, tok_json = (src_dir / n for n in ("vocabulary.json", "vocabulary.txt", "tokenizer.json"))
    try:
        if json_vocab.is_file():
            tokens = json.loads(json_vocab.read_text(encoding="utf-8"))
            if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
                raise GgmlConversionError(f"{json_vocab}: expected a JSON list of strings")
            return tokens, json_vocab
        if txt_vocab.is_file():
            text = txt_vocab.read_text(encoding="utf-8")
            if text.endswith("\n"):
                text = text[:-1]
            return text.split("\n"), txt_vocab  # not splitlines(): it also splits on U+0085 etc.
        if tok_json.is_file():
            return _tokens_from_tokenizer_json(tok_json), tok_json
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GgmlConversionError(f"{src_dir}: cannot read the vocabulary: {exc}") from exc
    raise GgmlConversionError(f"{src_dir}: no vocabulary.json, vocabulary.txt or tokenizer.json found")


def _tokens_from_tokenizer_json(path: Path) -> list[str]:
    data = json.loads(path.read_text(encoding="utf-8"))
    try:
        by_id: dict[int, str] = {int(i): t for t, i in data["model"]["vocab"].items()}
        by_id.update({int(t["id"]): t["content"] for t in data.get("added_tokens", [])})
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise GgmlConversionError(f"{path}: not a BPE tokenizer.json ({exc!r})") from exc
    size = max(by_id) + 1 if by_id else 0
    return [by_id.get(i, "") for i in range(size)]


def load_vocabulary_bytes(src_dir: str | os.PathLike[str], n_vocab: int) -> list[bytes]:
    """The regular (non-special) tokens as raw bytes, in id order, exactly as convert-pt-to-ggml.py writes.

    whisper.cpp reads these and synthesizes the special tokens itself from hardcoded ids
    (eot = 50256, +1 for multilingual vocabularies), so the token list must stop right before
    ``<|endoftext|>`` and that token must sit where whisper.cpp expects it.
    """
    src_dir = Path(src_dir)
    tokens, source = _read_token_strings(src_dir)
    eot = _WHISPER_EOT_EN + (1 if n_vocab >= _WHISPER_MULTILINGUAL_MIN_VOCAB else 0)
    if len(tokens) <= eot or tokens[eot] != "<|endoftext|>":
        found = tokens.index("<|endoftext|>") if "<|endoftext|>" in tokens else None
        raise GgmlConversionError(
            f"{source}: <|endoftext|> is at id {found}, but whisper.cpp expects id {eot} for n_vocab={n_vocab}"
        )
    decoder = _gpt2_byte_decoder()
    out: list[bytes] = []
    for i, token in enumerate(tokens[:eot]):
        try:
            out.append(bytes(decoder[c] for c in token))
        except KeyError as exc:
            raise GgmlConversionError(f"{source}: token {i} {token!r} is not GPT-2 byte-level ({exc})") from None
    return out


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
    return np.copysign(f + (a - f >= np.float32(0.5)), v)


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

# --------------------------------------------------------------------------------------------------
# ggml writer
# --------------------------------------------------------------------------------------------------


_CHUNK_ELEMENTS = 1 << 20  # encode ~1M values at a time: bounds temporaries to a few MB per tensor


def _encode_rows(name: str, rows: np.ndarray, ggml_type: int) -> bytes:
    """Rows of one tensor in ``ggml_type``. Quantized tensors go through f16 first, as the quantize
    tool does (it reads the f16 file), so our bytes match a convert-then-quantize pipeline."""
    if ggml_type == GGML_TYPE_F32:
        return np.ascontiguousarray(rows, dtype="<f4").tobytes()
    if ggml_type == GGML_TYPE_F16:
        return np.ascontiguousarray(rows, dtype="<f2").tobytes()
    quantizer = _QUANTIZERS.get(ggml_type)
    if quantizer is None:
        raise GgmlConversionError(f"cannot encode {name!r} as ggml type {ggml_type}")
    if rows.shape[-1] % QK:
        raise GgmlConversionError(f"cannot quantize {name!r}: row length {rows.shape[-1]} is not a multiple of {QK}")
    return quantizer(np.asarray(rows, dtype=np.float16).astype(np.float32)).tobytes()


def _encoded_chunks(name: str, array: np.ndarray, ggml_type: int) -> Iterator[bytes]:
    """Encode a tensor in row chunks so quantizing a 50k-row embedding does not need GBs of temporaries."""
    rows = array.reshape(-1, array.shape[-1]) if array.ndim else array.reshape(1, 1)
    step = max(1, _CHUNK_ELEMENTS // max(1, rows.shape[1]))
    for start in range(0, rows.shape[0], step):
        yield _encode_rows(name, rows[start : start + step], ggml_type)


def _write_header(f: BinaryIO, hp: WhisperHparams, filters: np.ndarray, tokens: list[bytes]) -> None:
    f.write(struct.pack("<I", GGML_FILE_MAGIC))
    f.write(struct.pack("<11i", *hp.as_tuple()[:10], hp.stored_ftype))
    f.write(struct.pack("<2i", *filters.shape))
    f.write(np.ascontiguousarray(filters, dtype="<f4").tobytes())
    f.write(struct.pack("<i", len(tokens)))
    for token in tokens:
        f.write(struct.pack("<i", len(token)))
        f.write(token)


def _write_tensor(f: BinaryIO, name: str, array: np.ndarray, ggml_type: int) -> None:
    """Tensor record as convert-pt-to-ggml.py writes it: n_dims, name length, type, reversed dims, name, data."""
    encoded = name.encode("utf-8")
    f.write(struct.pack("<3i", array.ndim, len(encoded), ggml_type))
    f.write(struct.pack(f"<{array.ndim}i", *reversed(array.shape)))
    f.write(encoded)
    for chunk in _encoded_chunks(name, array, ggml_type):
        f.write(chunk)


def _write_ggml(
    f: BinaryIO,
    hp: WhisperHparams,
    filters: np.ndarray,
    tokens: list[bytes],
    tensors: Iterator[tuple[str, np.ndarray]],
    path: Path,
) -> None:
    expected = _expected_tensors(hp)
    _write_header(f, hp, filters, tokens)
    written: set[str] = set()
    for name, array in tensors:
        if name not in expected:
            raise GgmlConversionError(f"{path}: internal error: unexpected tensor {name!r}")
        shape, role = expected[name]
        if tuple(array.shape) != shape:
            raise GgmlConversionError(f"{path}: tensor {name!r} has shape {tuple(array.shape)}, expected {shape}")
        ggml_type = _ggml_type_for(role, hp)
        _write_tensor(f, name, array, ggml_type)
        written.add(name)
    missing = set(expected) - written
    if missing:
        raise GgmlConversionError(f"{path}: internal error: tensors not written: {sorted(missing)[:5]}")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(out_path: Path, write: Callable[[BinaryIO], None], check: Callable[[Path], object]) -> None:
    """Write via a temp file in the target folder, fsync, ``check`` it, then ``os.replace``.

    Readers (and a concurrently starting engine) only ever see no file or a complete, validated one;
    the temp file is removed on any error, including KeyboardInterrupt.
    """
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        check(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(out_path.parent)


def convert_ct2_to_ggml(
    src_dir: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    quantize: QuantizeType = "f16",
) -> Path:
    """Convert the CTranslate2 Whisper folder ``src_dir`` into the whisper.cpp file ``out_path``.

    ``quantize`` picks the storage of the 2-D weight matrices: ``f16`` (like convert-pt-to-ggml.py),
    or ``q8_0`` / ``q5_0`` (like whisper.cpp's ``quantize`` tool; conv kernels stay f16, biases,
    norms and positional embeddings f32). The result is validated before it atomically replaces
    ``out_path``. Returns ``out_path``. Raises ``GgmlConversionError`` on any bad input.
    """
    if quantize not in _QUANTIZE_TO_FTYPE:
        raise GgmlConversionError(f"unknown quantization {quantize!r}; choose one of {list(get_args(QuantizeType))}")
    src_dir, out_path = Path(src_dir), Path(out_path)
    if not src_dir.is_dir():
        raise GgmlConversionError(f"{src_dir}: not a directory (expected a CTranslate2 model folder)")
    model_bin = src_dir / "model.bin"
    variables = read_ct2_model(model_bin)
    hp = whisper_hparams_from_ct2(variables, ftype=_QUANTIZE_TO_FTYPE[quantize], path=model_bin)
    tokens = load_vocabulary_bytes(src_dir, hp.n_vocab)
    filters = mel_filters(hp.n_mels)
    tensors = _openai_tensors(variables, hp, model_bin)
    _atomic_write(
        out_path,
        lambda f: _write_ggml(f, hp, filters, tokens, tensors, model_bin),
        validate_ggml_file,
    )
    return out_path


# --------------------------------------------------------------------------------------------------
# ggml validator
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GgmlTensorInfo:
    """One tensor record: ``ne`` in ggml order (innermost first), data position and size in bytes."""

    name: str
    ne: tuple[int, ...]
    ggml_type: int
    data_offset: int
    nbytes: int

    @property
    def type_name(self) -> str:
        return _GGML_TYPE_NAMES.get(self.ggml_type, str(self.ggml_type))


@dataclass(frozen=True)
class GgmlFileInfo:
    """What ``validate_ggml_file`` learned: hparams (plain ftype), quantization version, sizes."""

    path: Path
    hparams: WhisperHparams
    qntvr: int
    n_mel: int
    n_fft: int
    n_vocab_tokens: int
    tensors: tuple[GgmlTensorInfo, ...]
    file_size: int

    @property
    def weight_type(self) -> str:
        return _GGML_TYPE_NAMES[_FTYPE_TO_WTYPE[self.hparams.ftype]]


class _FileCursor:
    """Header reader over an open file that turns short reads into a GgmlConversionError."""

    def __init__(self, f: BinaryIO, path: Path, size: int) -> None:
        self._f, self._path, self.size = f, path, size

    def fail(self, reason: str) -> GgmlConversionError:
        return GgmlConversionError(f"{self._path}: {reason}")

    @property
    def pos(self) -> int:
        return self._f.tell()

    def read(self, n: int, what: str) -> bytes:
        pos = self.pos
        if n < 0 or pos + n > self.size:
            raise self.fail(
                f"file is truncated: needed {n} bytes for {what} at offset {pos}, file has {self.size} bytes"
            )
        return self._f.read(n)

    def ints(self, count: int, what: str) -> tuple[int, ...]:
        return struct.unpack(f"<{count}i", self.read(4 * count, what))

    def skip(self, n: int, what: str) -> None:
        pos = self.pos
        if pos + n > self.size:
            raise self.fail(
                f"file is truncated: {what} needs {n} bytes at offset {pos}, only {self.size - pos} remain"
            )
        self._f.seek(n, os.SEEK_CUR)


_MAX_TOKEN_BYTES = 4096
_MAX_NAME_BYTES = 1024


def _read_ggml_hparams(cur: _FileCursor) -> tuple[WhisperHparams, int]:
    (magic,) = struct.unpack("<I", cur.read(4, "magic"))
    if magic != GGML_FILE_MAGIC:
        raise cur.fail(f"bad magic 0x{magic:08x} (expected 0x{GGML_FILE_MAGIC:08x}); not a whisper.cpp ggml file")
    values = cur.ints(11, "hparams")
    stored_ftype = values[10]
    qntvr, ftype = divmod(stored_ftype, GGML_QNT_VERSION_FACTOR) if stored_ftype >= 0 else (0, stored_ftype)
    hp = WhisperHparams(*values[:10], ftype=ftype)
    try:
        _check_hparams(hp, cur._path)
    except GgmlConversionError as exc:
        raise cur.fail(f"bad hparams: {exc}") from None
    if hp.is_quantized and qntvr != GGML_QNT_VERSION:
        raise cur.fail(f"quantized file has quantization version {qntvr}, whisper.cpp expects {GGML_QNT_VERSION}")
    return hp, qntvr


def _read_ggml_filters_and_vocab(cur: _FileCursor, hp: WhisperHparams) -> tuple[int, int, int]:
    n_mel, n_fft = cur.ints(2, "mel filter shape")
    if n_mel != hp.n_mels or n_fft != WHISPER_N_FFT // 2 + 1:
        raise cur.fail(f"mel filters are {n_mel}x{n_fft}, expected {hp.n_mels}x{WHISPER_N_FFT // 2 + 1}")
    cur.skip(4 * n_mel * n_fft, "mel filters")
    (n_tokens,) = cur.ints(1, "vocabulary size")
    if not 0 <= n_tokens <= hp.n_vocab:
        raise cur.fail(f"vocabulary has {n_tokens} tokens, hparams say n_vocab={hp.n_vocab}")
    for i in range(n_tokens):
        (length,) = cur.ints(1, f"length of token {i}")
        if not 0 <= length <= _MAX_TOKEN_BYTES:
            raise cur.fail(f"token {i} has implausible length {length}")
        cur.skip(length, f"token {i}")
    return n_mel, n_fft, n_tokens


def _read_ggml_tensor(cur: _FileCursor) -> GgmlTensorInfo:
    n_dims, name_len, ggml_type = cur.ints(3, "tensor header")
    if not 1 <= n_dims <= 4:
        raise cur.fail(f"tensor header at offset {cur.pos - 12} has n_dims={n_dims}")
    if not 1 <= name_len <= _MAX_NAME_BYTES:
        raise cur.fail(f"tensor header at offset {cur.pos - 12} has name length {name_len}")
    if ggml_type not in _GGML_TYPE_LAYOUT:
        raise cur.fail(f"tensor header at offset {cur.pos - 12} has unsupported ggml type {ggml_type}")
    ne = cur.ints(n_dims, "tensor dims")
    raw_name = cur.read(name_len, "tensor name")
    try:
        name = raw_name.decode("utf-8")
    except UnicodeDecodeError:
        raise cur.fail(f"tensor name {raw_name!r} is not UTF-8") from None
    if any(d <= 0 for d in ne):
        raise cur.fail(f"tensor {name!r} has non-positive dims {ne}")
    block, block_bytes = _GGML_TYPE_LAYOUT[ggml_type]
    if ne[0] % block:
        raise cur.fail(f"tensor {name!r} row length {ne[0]} is not a multiple of block size {block}")
    nbytes = int(np.prod(ne, dtype=np.int64)) // block * block_bytes
    offset = cur.pos
    cur.skip(nbytes, f"data of tensor {name!r}")
    return GgmlTensorInfo(name, tuple(ne), ggml_type, offset, nbytes)


def _check_tensor(cur: _FileCursor, t: GgmlTensorInfo, hp: WhisperHparams, expected: Mapping) -> None:
    """Same checks whisper.cpp's loader does (known name, shape, byte size), so it cannot abort later."""
    if t.name not in expected:
        raise cur.fail(f"unknown tensor {t.name!r} (whisper.cpp would reject the file)")
    shape, role = expected[t.name]
    if t.ne != tuple(reversed(shape)):
        raise cur.fail(f"tensor {t.name!r} has dims {t.ne}, expected {tuple(reversed(shape))}")
    want = _ggml_type_for(role, hp)
    if t.ggml_type != want:
        raise cur.fail(
            f"tensor {t.name!r} is {t.type_name}, expected {_GGML_TYPE_NAMES[want]} for a "
            f"{_GGML_TYPE_NAMES[_FTYPE_TO_WTYPE[hp.ftype]]} model"
        )


def validate_ggml_file(path: str | os.PathLike[str]) -> GgmlFileInfo:
    """Parse a whisper.cpp ggml model's header and every tensor header, and check it is loadable.

    whisper.cpp aborts (or crashes) on malformed files, so check in Python first: magic, hparams,
    filter and vocab sections, each tensor's name/shape/type against what whisper.cpp will create
    for these hparams, all tensors present exactly once, and data sizes summing exactly to the
    file length (catches truncated downloads). Reads headers only; does not load tensor data.
    """
    path = Path(path)
    try:
        f = path.open("rb")
    except OSError as exc:
        raise GgmlConversionError(f"{path}: cannot open ggml model: {exc.strerror or exc}") from exc
    with f:
        size = os.fstat(f.fileno()).st_size
        cur = _FileCursor(f, path, size)
        hp, qntvr = _read_ggml_hparams(cur)
        n_mel, n_fft, n_tokens = _read_ggml_filters_and_vocab(cur, hp)
        expected = _expected_tensors(hp)
        tensors: list[GgmlTensorInfo] = []
        seen: set[str] = set()
        while cur.pos < size:
            if size - cur.pos < 12 and len(seen) == len(expected):
                raise cur.fail(f"{size - cur.pos} unexpected trailing bytes after the last tensor")
            t = _read_ggml_tensor(cur)
            if t.name in seen:
                raise cur.fail(f"duplicate tensor {t.name!r}")
            _check_tensor(cur, t, hp, expected)
            seen.add(t.name)
            tensors.append(t)
        missing = [name for name in expected if name not in seen]
        if missing:
            raise cur.fail(f"file is truncated or incomplete: {len(missing)} tensors missing, first {missing[0]!r}")
    return GgmlFileInfo(path, hp, qntvr, n_mel, n_fft, n_tokens, tuple(tensors), size)


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m stenod.models.ggml_convert SRC_DIR OUT [--quantize ...]``; exit 1 on bad input."""
    parser = argparse.ArgumentParser(description="Convert a CTranslate2 Whisper model to whisper.cpp ggml.")
    parser.add_argument("src_dir", type=Path, help="CTranslate2 model folder (model.bin, vocabulary)")
    parser.add_argument("out_path", type=Path, help="ggml file to write (e.g. ggml-base-q8_0.bin)")
    parser.add_argument("--quantize", choices=list(get_args(QuantizeType)), default="f16")
    args = parser.parse_args(argv)
    try:
        out = convert_ct2_to_ggml(args.src_dir, args.out_path, quantize=args.quantize)
        info = validate_ggml_file(out)
    except GgmlConversionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({info.file_size / 1e6:.1f} MB, {info.weight_type}, {len(info.tensors)} tensors)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
