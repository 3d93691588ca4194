"""ggml files for the whisper.cpp engine, derived once from CTranslate2 weights and cached.

``stenod transcribe --model tiny.en --engine whisper.cpp`` resolves ``tiny.en`` to the bundled
CTranslate2 folder; :func:`ensure_ggml_model_or_raise` converts it with
:func:`stenod.models.ggml.convert_ct2_to_ggml` into
``<cache_dir>/ggml/<name>-<quant>.bin`` the first time (about 1-3 s for tiny/base) and reuses the
file afterwards. The converter writes a temporary file, validates it and renames it into place,
so a crash or a concurrent conversion never leaves a half-written file under the final name; a
cached file that no longer validates is converted again.

Bundled models are named by their bundled name; any other CTranslate2 folder also gets a short
hash of its path, size and modification time, so two different folders called ``model`` (or a
folder whose weights changed) never share a cached file.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path
from typing import TypeGuard, get_args

from stenod.errors import ModelLoadError
from stenod.models.ggml import GgmlConversionError, QuantizeType, convert_ct2_to_ggml, validate_ggml_file
from stenod.models.registry import ResolvedModel

logger = logging.getLogger(__name__)

GGML_QUANTIZATIONS: tuple[str, ...] = get_args(QuantizeType)
"""What the converter writes: f16, q8_0, q5_0 (f32 is refused by the engine, see whisper_cpp)."""

GGML_QUANTIZATION_FOR_COMPUTE_TYPE: dict[str, QuantizeType] = {
    "int8": "q8_0",
    "int8_float16": "q8_0",
    "int8_float32": "q8_0",
    "float16": "f16",
    "bfloat16": "f16",
    "float32": "f16",
}
"""The ggml storage nearest to a CTranslate2 compute type (same table as the benchmark matrix)."""

_convert_lock = threading.Lock()


def is_ggml_quantization(value: str) -> TypeGuard[QuantizeType]:
    """Whether ``value`` is a quantization the converter writes (narrows it for the type checker)."""
    return value in GGML_QUANTIZATIONS


def ggml_quantization_for(compute_type: str) -> QuantizeType:
    """``int8*`` -> q8_0, float types -> f16; anything else (``auto``) -> q8_0, the CPU default."""
    return GGML_QUANTIZATION_FOR_COMPUTE_TYPE.get(compute_type, "q8_0")


def cached_ggml_path(model: ResolvedModel, *, cache_dir: Path, quantize: QuantizeType) -> Path:
    """Where the converted file for ``model`` lives: ``<cache_dir>/ggml/<name>-<quant>.bin``."""
    if model.source == "bundled":
        stem = model.name
    else:
        stem = f"{model.path.name or 'model'}-{_source_fingerprint(model.path)}"
    return cache_dir / "ggml" / f"{stem}-{quantize}.bin"


def _source_fingerprint(folder: Path) -> str:
    model_bin = folder / "model.bin"
    try:
        stat = model_bin.stat()
        key = f"{folder.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    except OSError:
        key = str(folder.resolve())
    return hashlib.sha256(key.encode()).hexdigest()[:10]


def ensure_ggml_model_or_raise(model: ResolvedModel, *, cache_dir: Path, quantize: QuantizeType) -> ResolvedModel:
    """Return ``model`` as a ggml file: unchanged if it already is one, else the cached conversion
    of its CTranslate2 folder (converted now if missing or invalid).

    Raises:
        ModelLoadError: the CTranslate2 weights could not be converted (not Whisper, truncated).
    """
    if model.format == "ggml":
        return model
    if quantize not in GGML_QUANTIZATIONS:
        raise ModelLoadError(f"unknown ggml quantization {quantize!r}; choose one of {', '.join(GGML_QUANTIZATIONS)}")
    out = cached_ggml_path(model, cache_dir=cache_dir, quantize=quantize)
    with _convert_lock:  # one conversion at a time in this process; files are replaced atomically anyway
        if not _valid(out):
            out.parent.mkdir(parents=True, exist_ok=True)
            logger.info("converting %s to ggml %s at %s (once)", model.name, quantize, out)
            try:
                convert_ct2_to_ggml(model.path, out, quantize=quantize)
            except GgmlConversionError as exc:
                raise ModelLoadError(f"could not convert {model.name!r} to ggml for whisper.cpp: {exc}") from exc
            except OSError as exc:
                raise ModelLoadError(f"could not write the ggml cache file {out}: {exc.strerror or exc}") from exc
    return ResolvedModel(model.name, out, "ggml", model.source, model.multilingual)


def _valid(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        validate_ggml_file(path)
    except GgmlConversionError as exc:
        logger.warning("cached ggml file %s is invalid (%s); converting again", path, exc)
        return False
    return True
