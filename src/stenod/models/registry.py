"""Resolve what a user names (``base``, ``large-v3``, ``Systran/faster-whisper-small``, a folder, a
ggml file) to weights on disk and the format they are in. Lookup only: loading is the engines' job.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from stenod.errors import ModelNotFoundError
from stenod.models.bundled import BUNDLED_MODELS, bundled_model_installed, bundled_model_path

logger = logging.getLogger(__name__)

ModelFormat = Literal["ctranslate2", "ggml", "hf"]
GGML_MAGIC = b"lmgg"  # 0x67676d6c little-endian, as whisper.cpp writes it
MULTILINGUAL_MIN_VOCAB = 51865
"""whisper.cpp's own test: English-only Whisper vocabularies have 51864 tokens."""

# faster-whisper's hub aliases (faster_whisper.utils._MODELS), listed so `models list` can show them.
HUB_MODELS: tuple[str, ...] = (
    "tiny", "tiny.en", "base", "base.en", "small", "small.en", "medium", "medium.en",
    "large-v1", "large-v2", "large-v3", "large", "distil-large-v2", "distil-medium.en",
    "distil-small.en", "distil-large-v3", "distil-large-v3.5", "large-v3-turbo", "turbo",
)


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """A model name turned into weights on disk."""

    name: str
    path: Path
    format: ModelFormat
    source: Literal["bundled", "local", "hub"]
    multilingual: bool


AUTO_MODEL = "auto"


def resolve_model_or_raise(name: str, *, cache_dir: Path, offline: bool) -> ResolvedModel:
    """Find the weights for ``name``.

    Order: bundled names, then local paths, then the hub (only when not offline, or when the hub
    model is already in the cache).

    Raises:
        ModelNotFoundError: with a message that lists the bundled models and how to point at a
            local folder, when nothing matches.
    """
    if name == AUTO_MODEL:
        return _resolve_auto(cache_dir=cache_dir, offline=offline)
    if name in BUNDLED_MODELS and bundled_model_installed(name):
        path = bundled_model_path(name, cache_dir)
        return ResolvedModel(name, path, "ctranslate2", "bundled", BUNDLED_MODELS[name].multilingual)
    if "\x00" in name:
        raise ModelNotFoundError(f"model name {name[:64]!r} contains a NUL byte")
    local = Path(name).expanduser()
    try:
        if local.exists():
            return _resolve_local(name, local)
    except OSError as exc:
        # Names too long for the file system, /proc files that refuse reads, and the like: a
        # clean "not found", never a 500 (issue 16).
        raise ModelNotFoundError(f"model path {name[:64]!r} cannot be read ({exc.strerror or type(exc).__name__})") from exc
    if _looks_like_path(name):
        raise ModelNotFoundError(f"model path {name!r} does not exist")
    return _resolve_hub(name, cache_dir=cache_dir, offline=offline)


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or name.endswith(".bin") or name.count("/") > 1


def resolve_local_model_or_raise(name: str, path: Path) -> ResolvedModel:
    """Resolve weights at a known local ``path`` under the name ``name``.

    Raises:
        ModelNotFoundError: not a model folder or ggml file, or unreadable.
    """
    try:
        return _resolve_local(name, path)
    except OSError as exc:
        raise ModelNotFoundError(f"model {name!r} cannot be read ({exc.strerror or type(exc).__name__})") from exc


def _resolve_local(name: str, path: Path) -> ResolvedModel:
    if path.is_file():
        # Only regular files are opened: a FIFO or device would block or never end.
        with path.open("rb") as f:
            magic = f.read(4)
        if magic == GGML_MAGIC:
            return ResolvedModel(name, path, "ggml", "local", _ggml_multilingual(path))
        raise ModelNotFoundError(
            f"{path} is not a ggml model file (wrong magic); pass a CTranslate2 model folder or a whisper.cpp .bin"
        )
    if (path / "model.bin").is_file() and (path / "config.json").is_file():
        return ResolvedModel(name, path, "ctranslate2", "local", _ct2_multilingual(path))
    if (path / "model.safetensors").is_file() and (path / "config.json").is_file():
        return ResolvedModel(name, path, "hf", "local", _hf_multilingual(path))
    raise ModelNotFoundError(
        f"{path} is not a model folder: expected a CTranslate2 model (model.bin, config.json, "
        "tokenizer.json), a transformers Whisper folder (config.json, model.safetensors) or a "
        "whisper.cpp ggml .bin file"
    )


def _hf_multilingual(path: Path) -> bool:
    """transformers folders state the vocabulary size in config.json."""
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"{path / 'config.json'} is not readable JSON: {exc}") from exc
    if not isinstance(config, dict) or config.get("model_type") != "whisper":
        raise ModelNotFoundError(f"{path} holds a transformers model that is not Whisper")
    return int(config.get("vocab_size", 0)) >= MULTILINGUAL_MIN_VOCAB


def _ct2_multilingual(path: Path) -> bool:
    """Tell from the vocabulary size; config.json's ``lang_ids`` cannot tell, because CTranslate2's
    converter writes them for English-only models too."""
    try:
        if (path / "vocabulary.txt").is_file():
            with (path / "vocabulary.txt").open("rb") as f:
                n_vocab = sum(1 for _ in f)
        elif (path / "vocabulary.json").is_file():
            n_vocab = len(json.loads((path / "vocabulary.json").read_text(encoding="utf-8")))
        else:
            return True
    except (OSError, ValueError):
        return True
    return n_vocab >= MULTILINGUAL_MIN_VOCAB


def _ggml_multilingual(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(4)
        n_vocab = int.from_bytes(f.read(4), "little")
    return n_vocab >= MULTILINGUAL_MIN_VOCAB


def _offline_message(name: str) -> str:
    bundled = ", ".join(sorted(BUNDLED_MODELS))
    return (
        f"model {name!r} is not available offline. Bundled models: {bundled}. "
        "To use another model, download its CTranslate2 folder (e.g. from "
        "Systran/faster-whisper-<size>) and pass its path with --model /path/to/folder, "
        "or pass a whisper.cpp ggml .bin file"
    )


def _resolve_hub(name: str, *, cache_dir: Path, offline: bool) -> ResolvedModel:
    if name not in HUB_MODELS and "/" not in name:
        raise ModelNotFoundError(
            f"unknown model {name!r}. Bundled: {', '.join(sorted(BUNDLED_MODELS))}; hub names: "
            f"{', '.join(HUB_MODELS)}; or a local model folder or ggml file"
        )
    from faster_whisper.utils import download_model  # heavy import, only when a hub name is used

    try:
        path = download_model(name, cache_dir=str(cache_dir / "hub"), local_files_only=offline)
    except Exception as exc:  # huggingface_hub raises many unrelated types for "not reachable"
        logger.info("hub lookup for %s failed: %s", name, exc)
        raise ModelNotFoundError(_offline_message(name)) from exc
    multilingual = not name.endswith(".en")
    return ResolvedModel(name, Path(path), "ctranslate2", "hub", multilingual)


def _resolve_auto(*, cache_dir: Path, offline: bool) -> ResolvedModel:
    """``auto``: the largest model that fits free GPU (or host) memory and is available here."""
    from stenod.models.select import probe_memory, ranked_candidates

    memory = probe_memory()
    tried: list[str] = []
    for candidate in ranked_candidates(memory):
        try:
            resolved = resolve_model_or_raise(candidate, cache_dir=cache_dir, offline=offline)
        except ModelNotFoundError:
            tried.append(candidate)
            continue
        logger.info("model auto: %s (free GPU %s bytes, free host %s bytes; unavailable: %s)",
                    candidate, memory.gpu_free_bytes, memory.host_free_bytes, ", ".join(tried) or "none")
        return resolved
    raise ModelNotFoundError(f"model 'auto': none of {', '.join(tried)} is available; " + _offline_message(AUTO_MODEL))
