"""Bundled ``base``: assembled from its two packages into the cache folder, checked by size and
SHA-256, and never left half-written."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from stenod.engines import create_engine
from stenod.errors import ModelLoadError
from stenod.models import bundled
from stenod.models.bundled import bundled_model_path
from stenod.models.registry import ResolvedModel
from stenod.settings import ModelSettings

SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _assert_complete(folder: Path) -> None:
    model_bin = folder / "model.bin"
    assert model_bin.stat().st_size == bundled._BASE_SIZE_BYTES
    assert _sha256(model_bin) == bundled._BASE_SHA256
    for name in SIDE_FILES:
        assert (folder / name).stat().st_size > 0
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == []


def test_assembles_into_empty_cache_and_loads(tmp_path: Path) -> None:
    folder = bundled_model_path("base", tmp_path)
    assert folder.parent == tmp_path / "models"
    _assert_complete(folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(["model.bin", *SIDE_FILES])
    resolved = ResolvedModel("base", folder, "ctranslate2", "local", multilingual=True)
    engine = create_engine(resolved, ModelSettings(name=str(folder)), threads=1)
    try:
        assert engine.info().multilingual
    finally:
        engine.close()


def test_assembled_once(cache_dir: Path) -> None:
    folder = bundled_model_path("base", cache_dir)
    before = (folder / "model.bin").stat().st_mtime_ns
    assert bundled_model_path("base", cache_dir) == folder
    assert (folder / "model.bin").stat().st_mtime_ns == before


def test_truncated_model_bin_is_replaced(tmp_path: Path, cache_dir: Path) -> None:
    good = bundled_model_path("base", cache_dir)
    target = tmp_path / "models" / good.name
    target.mkdir(parents=True)
    for name in SIDE_FILES:
        (target / name).write_bytes((good / name).read_bytes())
    with (good / "model.bin").open("rb") as f:
        (target / "model.bin").write_bytes(f.read(10_000_000))  # an interrupted copy
    assert bundled_model_path("base", tmp_path) == target
    _assert_complete(target)


def test_damaged_parts_fail_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir, parts = bundled._base_parts()
    short_part = tmp_path / "model.bin.part2"
    with parts[1].open("rb") as f:
        short_part.write_bytes(f.read(1_000_000))
    monkeypatch.setattr(bundled, "_base_parts", lambda: (data_dir, [parts[0], short_part]))
    cache = tmp_path / "cache"
    with pytest.raises(ModelLoadError, match="bundled 'base' weights are damaged"):
        bundled_model_path("base", cache)
    (folder,) = (cache / "models").iterdir()
    assert not (folder / "model.bin").exists()
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []


def test_unwritable_cache_is_a_clear_error(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "cache"
    not_a_dir.write_text("a file where the cache folder should be")
    with pytest.raises(ModelLoadError, match=r"cannot assemble bundled model 'base' into .*: Not a directory; "
                                             r"set model.cache_dir \(STENOD_MODEL__CACHE_DIR\) to a writable folder"):
        bundled_model_path("base", not_a_dir)
