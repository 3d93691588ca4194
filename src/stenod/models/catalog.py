"""What `stenod models list/info` and `GET /v1/models` show: known models, where their weights
are, size, languages, and which one is the default."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stenod.errors import ModelNotFoundError
from stenod.models.bundled import BUNDLED_MODELS, bundled_model_installed
from stenod.models.registry import HUB_MODELS, resolve_model_or_raise


@dataclass(frozen=True, slots=True)
class ModelEntry:
    name: str
    source: str
    """bundled, local or hub."""
    available: bool
    """Weights are on this machine (bundled packages installed, or found in the hub cache)."""
    path: str | None
    size_bytes: int | None
    languages: str
    """"multilingual (99)" or "en"."""
    description: str
    default: bool


def _dir_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def model_entry(name: str, *, default: str, cache_dir: Path, offline: bool = True) -> ModelEntry:
    """Describe one model; bundled 'base' is assembled on first use, so this may take a second.

    Raises:
        ModelNotFoundError: unknown and not a path.
    """
    if name in BUNDLED_MODELS:
        spec = BUNDLED_MODELS[name]
        installed = bundled_model_installed(name)
        path = resolve_model_or_raise(name, cache_dir=cache_dir, offline=True).path if installed else None
        return ModelEntry(
            name=name, source="bundled", available=installed, path=str(path) if path else None,
            size_bytes=_dir_size(path) if path else spec.size_bytes,
            languages="multilingual (99)" if spec.multilingual else "en",
            description=spec.description + f" [{spec.package}]", default=name == default,
        )
    try:
        resolved = resolve_model_or_raise(name, cache_dir=cache_dir, offline=offline)
    except ModelNotFoundError:
        if name in HUB_MODELS:
            return ModelEntry(
                name=name, source="hub", available=False, path=None, size_bytes=None,
                # distil-whisper's large checkpoints keep the multilingual vocabulary but are English-only
                languages="en" if name.endswith(".en") or name.startswith("distil-large") else "multilingual (99)",
                description="downloaded from the model hub on first use (needs network)",
                default=name == default,
            )
        raise
    return ModelEntry(
        name=name, source=resolved.source, available=True, path=str(resolved.path),
        size_bytes=_dir_size(resolved.path), languages="multilingual (99)" if resolved.multilingual else "en",
        description=f"{resolved.format} weights", default=name == default,
    )


def model_languages(name: str) -> str:
    """``"en"`` or ``"multilingual (99)"`` from a model's name alone (no weights read): bundled
    models by their spec, hub names by Whisper's naming (``*.en`` and distil-whisper's checkpoints
    are English-only); ``"unknown"`` for paths and other names."""
    if name in BUNDLED_MODELS:
        return "multilingual (99)" if BUNDLED_MODELS[name].multilingual else "en"
    base = name.rsplit("/", 1)[-1].removeprefix("faster-whisper-").removesuffix(".bin")
    base = base.removeprefix("ggml-")
    for suffix in ("-q8_0", "-q5_0", "-f16"):  # converted ggml file names: <name>-<quant>.bin
        base = base.removesuffix(suffix)
    if base in HUB_MODELS or base in BUNDLED_MODELS:
        if base in BUNDLED_MODELS:
            return model_languages(base)
        return "en" if base.endswith(".en") or base.startswith("distil-") else "multilingual (99)"
    return "unknown"


def list_models(*, default: str, cache_dir: Path, include_hub: bool = True) -> list[ModelEntry]:
    names = list(BUNDLED_MODELS)
    if default not in names:
        names.insert(0, default)
    if include_hub:
        names += [n for n in HUB_MODELS if n not in names]
    entries = []
    for name in names:
        try:
            entries.append(model_entry(name, default=default, cache_dir=cache_dir))
        except ModelNotFoundError:
            continue
    return entries
