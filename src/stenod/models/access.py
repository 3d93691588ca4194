"""Which model names a *client* may send (the ``model`` form field of a request).

A client's model name is untrusted text. Before this module, it went straight to
:func:`~stenod.models.registry.resolve_model_or_raise`, which treats paths as paths and hub names
as downloads: ``model=/etc/passwd`` answered "not a ggml model file (wrong magic)", ``/root``
"not a model folder", ``/nonexistent`` "does not exist" (a file-system oracle), ``/proc/self/mem``
and 300-character names crashed with a 500, and ``org/repo`` downloaded from the hub (issue 16).

The rule here: a client may only name what the server *offers*, decided from the name alone and
from the operator's configuration, without touching the file system for names that are not
offered:

- the server's default and its aliases (``whisper-1``, ``default``), the operator's configured
  models, and models already loaded (the operator or an admin loaded them);
- bundled models (``base``, ``tiny.en``) whose packages are installed;
- a plain name (letters, digits, ``.``, ``_``, ``-``; no separators) that is a model folder or
  ggml file directly inside one of the operator's model folders;
- a file-system path, only when the operator enables ``allow_request_paths``;
- a hub name, only when the operator enables ``allow_request_downloads`` (and the server is online).

Everything else gets one message that says nothing about the file system. The CLI and the
operator's own configuration (``--model /path``) do not go through this module: they are trusted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from stenod.errors import ModelNotFoundError
from stenod.models.bundled import BUNDLED_MODELS, bundled_model_installed
from stenod.models.registry import GGML_MAGIC, HUB_MODELS

MAX_SHOWN_NAME_CHARS = 64
"""Longest part of an unknown name echoed back in the error message."""

_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""A name that can be one directory entry: no separators, no leading dot (so never ``..``)."""
_HUB_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")


@dataclass(frozen=True, slots=True)
class ModelAccess:
    """The operator's model policy for client-named models.

    Attributes:
        configured: names the operator configured (the default model and ``[model] served``);
            these may be paths or hub names, since the operator wrote them.
        model_dirs: folders whose entries (CTranslate2 folders or ggml files) clients may name.
        allow_paths: clients may name any file-system path (off by default).
        allow_downloads: clients may name hub models, downloaded on first use (off by default).
    """

    configured: frozenset[str] = frozenset()
    model_dirs: tuple[Path, ...] = ()
    allow_paths: bool = False
    allow_downloads: bool = False


MAX_LISTED_NAMES = 8


def unknown_model_error(name: str, offered: list[str] | None = None) -> ModelNotFoundError:
    """The one answer for a model the server does not offer, whatever the reason: the same text
    for a missing file, a real model file elsewhere, a device or a hub name."""
    shown = name if len(name) <= MAX_SHOWN_NAME_CHARS else name[:MAX_SHOWN_NAME_CHARS] + "..."
    listed = ""
    if offered:
        more = ", ..." if len(offered) > MAX_LISTED_NAMES else ""
        listed = f"this server offers {', '.join(offered[:MAX_LISTED_NAMES])}{more}; "
    return ModelNotFoundError(
        f"unknown model {shown!r}; {listed}GET /v1/models lists them all", param="model"
    )


def offered_names(access: ModelAccess) -> list[str]:
    """Names to suggest in the unknown-model message: installed bundled and configured names
    that are not paths (an operator's path is not shown to clients)."""
    names = {n for n in BUNDLED_MODELS if bundled_model_installed(n)}
    names |= {n for n in access.configured if not looks_like_path(n)}
    return sorted(names)


def is_plain_name(name: str) -> bool:
    return _PLAIN_NAME.fullmatch(name) is not None


def model_in_dirs(name: str, model_dirs: tuple[Path, ...]) -> Path | None:
    """The entry ``name`` inside one of ``model_dirs`` that holds a model, or ``None``.

    Only plain names are looked up (no separators, no leading dot), so the result is always a
    direct child of a configured folder; a symlink inside that folder is the operator's choice.
    """
    if not is_plain_name(name):
        return None
    for folder in model_dirs:
        candidate = folder / name
        try:
            if candidate.is_dir() and (candidate / "model.bin").is_file() and (candidate / "config.json").is_file():
                return candidate
            if candidate.is_file() and name.endswith(".bin"):
                with candidate.open("rb") as f:
                    if f.read(4) == GGML_MAGIC:
                        return candidate
        except OSError:
            continue
    return None


def list_dir_models(model_dirs: tuple[Path, ...]) -> list[tuple[str, Path]]:
    """Every model a client may name from the configured folders, first folder winning."""
    seen: dict[str, Path] = {}
    for folder in model_dirs:
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            continue
        for entry in entries:
            if entry.name not in seen and model_in_dirs(entry.name, (folder,)) is not None:
                seen[entry.name] = entry
    return list(seen.items())


def looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~", "\\")) or "\\" in name or name.count("/") > 1 or name.endswith(".bin")


def check_client_model_or_raise(name: str, *, access: ModelAccess, loaded: frozenset[str]) -> None:
    """Raise the unknown-model error unless a client may name ``name``.

    No file-system access happens for a name that is not configured, loaded or bundled, except
    the lookup of a plain name inside the configured model folders (and any path, when the
    operator allowed paths).

    Raises:
        ModelNotFoundError: the one unknown-model message (404).
    """
    if name in access.configured or name in loaded:
        return
    if name in BUNDLED_MODELS and bundled_model_installed(name):
        return
    if model_in_dirs(name, access.model_dirs) is not None:
        return
    if access.allow_paths and looks_like_path(name) and "\x00" not in name:
        return
    if access.allow_downloads and (name in HUB_MODELS or _HUB_REPO.fullmatch(name)) and not looks_like_path(name):
        return
    raise unknown_model_error(name, offered_names(access))
