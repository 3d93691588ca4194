"""Model names to weights: bundled, local folders, hub names offline, and paths that are not models."""

from __future__ import annotations

from pathlib import Path

import pytest

from stenod.errors import ModelNotFoundError
from stenod.models import resolve_model_or_raise


def test_bundled_names(cache_dir: Path) -> None:
    base = resolve_model_or_raise("base", cache_dir=cache_dir, offline=True)
    tiny = resolve_model_or_raise("tiny.en", cache_dir=cache_dir, offline=True)
    assert (base.source, base.format, base.multilingual) == ("bundled", "ctranslate2", True)
    assert (tiny.source, tiny.format, tiny.multilingual) == ("bundled", "ctranslate2", False)
    assert (tiny.path / "model.bin").is_file() and (base.path / "model.bin").is_file()


def test_hub_name_offline_explains_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model_or_raise("large-v3", cache_dir=tmp_path, offline=True)
    message = info.value.message
    assert "'large-v3' is not available offline" in message
    assert "Bundled models: base, tiny.en" in message
    assert "--model /path/to/folder" in message


def test_unknown_name_lists_bundled(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"unknown model 'huge-v9'\. Bundled: base, tiny\.en"):
        resolve_model_or_raise("huge-v9", cache_dir=tmp_path, offline=True)


def test_local_folder(cache_dir: Path, tmp_path: Path) -> None:
    tiny_folder = resolve_model_or_raise("tiny.en", cache_dir=cache_dir, offline=True).path
    local = resolve_model_or_raise(str(tiny_folder), cache_dir=tmp_path, offline=True)
    assert (local.source, local.format, local.multilingual, local.path) == ("local", "ctranslate2", False, tiny_folder)
    base_folder = resolve_model_or_raise("base", cache_dir=cache_dir, offline=True).path
    assert resolve_model_or_raise(str(base_folder), cache_dir=tmp_path, offline=True).multilingual


def test_folder_that_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ModelNotFoundError, match="is not a model folder: expected a CTranslate2 model"):
        resolve_model_or_raise(str(tmp_path), cache_dir=tmp_path, offline=True)


def test_file_that_is_not_a_model(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelNotFoundError, match="is not a ggml model file"):
        resolve_model_or_raise(str(path), cache_dir=tmp_path, offline=True)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model_or_raise(str(tmp_path / "no-such-model"), cache_dir=tmp_path, offline=True)
