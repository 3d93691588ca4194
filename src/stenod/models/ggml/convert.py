"""CTranslate2 Whisper folder -> whisper.cpp ggml file: tensor mapping, writer and atomic write."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO, get_args

import numpy as np

from stenod.models.ggml.assets import load_vocabulary_bytes, mel_filters, sinusoids
from stenod.models.ggml.ct2 import _require, read_ct2_model, whisper_hparams_from_ct2
from stenod.models.ggml.format import (
    _QUANTIZE_TO_FTYPE,
    GGML_FILE_MAGIC,
    GGML_TYPE_F16,
    GGML_TYPE_F32,
    QK,
    GgmlConversionError,
    QuantizeType,
    WhisperHparams,
    _expected_tensors,
    _ggml_type_for,
)
from stenod.models.ggml.quantize import _QUANTIZERS
from stenod.models.ggml.validate import validate_ggml_file
from stenod.storage.atomic import atomic_file

# --------------------------------------------------------------------------------------------------
# CTranslate2 -> OpenAI/whisper.cpp tensor mapping
# --------------------------------------------------------------------------------------------------


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
    dequantized: np.ndarray = out.reshape(value.shape)
    return dequantized


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
    # Readers (and a concurrently starting engine) only ever see no file or a complete, validated one.
    with atomic_file(out_path, verify=validate_ggml_file) as f:
        _write_ggml(f, hp, filters, tokens, tensors, model_bin)
    return out_path
