"""Header-only validation of a whisper.cpp ggml file against what whisper.cpp will load."""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from stenod.models.ggml.format import (
    _FTYPE_TO_WTYPE,
    _GGML_TYPE_LAYOUT,
    _GGML_TYPE_NAMES,
    GGML_FILE_MAGIC,
    GGML_QNT_VERSION,
    GGML_QNT_VERSION_FACTOR,
    WHISPER_N_FFT,
    GgmlConversionError,
    WhisperHparams,
    _check_hparams,
    _expected_tensors,
    _ggml_type_for,
    _Role,
)

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
    n_vocab, a_ctx, a_state, a_head, a_layer, t_ctx, t_state, t_head, t_layer, n_mels = values[:10]
    hp = WhisperHparams(n_vocab, a_ctx, a_state, a_head, a_layer, t_ctx, t_state, t_head, t_layer, n_mels, ftype=ftype)
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


def _check_tensor(cur: _FileCursor, t: GgmlTensorInfo, hp: WhisperHparams, expected: Mapping[str, tuple[tuple[int, ...], _Role]]) -> None:
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
