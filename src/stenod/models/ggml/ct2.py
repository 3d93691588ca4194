"""CTranslate2 ``model.bin`` reader and whisper.cpp hparams derived from its tensors."""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stenod.models.ggml.format import GgmlConversionError, WhisperHparams, _check_hparams

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
# Whisper hparams from CTranslate2 tensor shapes
# --------------------------------------------------------------------------------------------------


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
