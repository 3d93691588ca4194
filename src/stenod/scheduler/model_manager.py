"""Model lifecycle: load on demand or at start-up, keep a bounded set loaded, unload idle ones,
swap the default model without a restart. Inference is not this module's job.

Thread-safe: loading runs in worker threads (it takes seconds), while requests keep using the
models already loaded. A failed load leaves every loaded model serving.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from stenod.engines.base import Engine
from stenod.models.access import ModelAccess, check_client_model_or_raise, is_plain_name, model_in_dirs
from stenod.models.bundled import BUNDLED_MODELS
from stenod.models.registry import HUB_MODELS, ResolvedModel, resolve_local_model_or_raise, resolve_model_or_raise
from stenod.settings import ModelSettings

logger = logging.getLogger(__name__)

EngineFactory = Callable[[ResolvedModel], Engine]
DEFAULT_ALIASES = frozenset({"", "whisper-1", "default"})
"""Model names clients send that mean "the server's default" (the OpenAI SDK sends whisper-1)."""
OTHER_MODEL_LABEL = "other"
"""The metrics label of every model name that is not one of a bounded, operator-controlled set."""


@dataclass
class LoadedModel:
    name: str
    engine: Engine
    loaded_at: float
    last_used: float
    in_use: int = 0
    load_time_s: float = 0.0


@dataclass
class _LoadState:
    event: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class ModelManager:
    """Args:
        settings: model settings (default model name, cache folder).
        offline: never reach the model hub.
        factory: builds an engine for a resolved model (threads and concurrency bound in).
        max_loaded: models kept in memory at once; the least recently used idle one is unloaded.
        idle_ttl_s: unload non-default models idle this long (0 = never).
        on_load: called with (model name, seconds) after each successful load.
        on_load_error: called with the model name when a load fails for an operator's reason:
            weights that were found but could not be loaded (corrupt, out of memory, device
            error), or the configured default model not found. An unknown name sent by a client
            is the client's error and is not reported.
        access: which names clients may send (:mod:`stenod.models.access`); the default model
            is always allowed. :meth:`acquire` itself trusts its caller: the service checks a
            client's name with :meth:`check_client_model_or_raise` first.
        clock: monotonic seconds for idle times (tests pass a fake clock instead of sleeping).
    """

    def __init__(
        self,
        settings: ModelSettings,
        factory: EngineFactory,
        *,
        offline: bool,
        max_loaded: int = 2,
        idle_ttl_s: float = 0.0,
        on_load: Callable[[str, float], None] | None = None,
        on_load_error: Callable[[str], None] | None = None,
        access: ModelAccess | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._factory = factory
        self._offline = offline
        self._max_loaded = max_loaded
        self._idle_ttl_s = idle_ttl_s
        self._on_load = on_load
        self._on_load_error = on_load_error
        self._lock = threading.Lock()
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self._loading: dict[str, _LoadState] = {}
        self.default_name = settings.name
        self._access = access or ModelAccess()
        self._clock = clock

    # -- lookup -----------------------------------------------------------------------------
    def canonical_name(self, requested: str | None) -> str:
        name = (requested or "").strip()
        return self.default_name if name in DEFAULT_ALIASES else name

    def check_client_model_or_raise(self, requested: str | None) -> str:
        """The canonical name of a model a client asked for, if the server offers it.

        Raises:
            ModelNotFoundError: one message for every name not offered (no file-system details).
        """
        name = self.canonical_name(requested)
        if name == self.default_name:
            return name
        with self._lock:
            loaded = frozenset(self._loaded)
        check_client_model_or_raise(name, access=self._access, loaded=loaded)
        return name

    def offered_names(self) -> list[str]:
        """Names the operator configured for clients, beyond bundled and model-folder ones."""
        return [n for n in self._access.configured if n != self.default_name]

    @property
    def access(self) -> ModelAccess:
        return self._access

    def metrics_label(self, name: str) -> str:
        """``name`` when it belongs to a bounded, operator-controlled set; else ``other``, so
        client-chosen names (paths, hub repositories) never grow the number of series."""
        if name == self.default_name or name in self._access.configured or name in BUNDLED_MODELS or name in HUB_MODELS:
            return name
        if is_plain_name(name) and model_in_dirs(name, self._access.model_dirs) is not None:
            return name
        return OTHER_MODEL_LABEL

    def loaded_names(self) -> list[str]:
        with self._lock:
            return list(self._loaded)

    def is_loaded(self, name: str) -> bool:
        with self._lock:
            return name in self._loaded

    def loading(self) -> bool:
        with self._lock:
            return bool(self._loading)

    def engine_info(self) -> list[dict[str, object]]:
        with self._lock:
            models = list(self._loaded.values())
        out = []
        for m in models:
            info = m.engine.info()
            entry: dict[str, object] = {
                "model": m.name, "engine": info.engine, "device": info.device,
                "compute_type": info.compute_type, "threads": info.threads,
                "concurrency": info.max_concurrency, "in_use": m.in_use,
                "load_time_s": round(m.load_time_s, 3), "default": m.name == self.default_name,
            }
            device_stats = getattr(m.engine, "device_stats", None)
            if callable(device_stats):  # engines with per-device workers (torch): memory and load
                entry["devices"] = device_stats()
            out.append(entry)
        return out

    # -- acquire / release -------------------------------------------------------------------
    def acquire(self, requested: str | None) -> tuple[str, Engine]:
        """Return a loaded engine for ``requested`` (loading it if needed) and mark it in use.
        Pair every call with :meth:`release`. Blocking: call from a worker thread.

        Raises:
            ModelNotFoundError, ModelLoadError: the model cannot be found or loaded.
        """
        name = self.canonical_name(requested)
        while True:  # a model evicted between load and acquire is loaded again
            self._ensure_loaded(name)
            with self._lock:
                model = self._loaded.get(name)
                if model is not None:
                    model.in_use += 1
                    model.last_used = self._clock()
                    self._loaded.move_to_end(name)
                    return name, model.engine

    def release(self, name: str) -> None:
        with self._lock:
            model = self._loaded.get(name)
            if model is not None:
                model.in_use = max(0, model.in_use - 1)
                model.last_used = self._clock()

    # -- loading -------------------------------------------------------------------------------
    def _ensure_loaded(self, name: str) -> None:
        with self._lock:
            if name in self._loaded:
                return
            state = self._loading.get(name)
            owner = state is None
            if owner:
                state = _LoadState()
                self._loading[name] = state
        assert state is not None
        if not owner:
            state.event.wait()
            if state.error is not None:
                raise state.error
            return
        try:
            self._load(name)
        except BaseException as exc:
            state.error = exc
            raise
        finally:
            with self._lock:
                self._loading.pop(name, None)
            state.event.set()

    def _load(self, name: str) -> None:
        try:
            resolved = self._resolve(name)
        except BaseException:
            if name == self.default_name:
                self._report_load_error(name)
            raise
        started = time.monotonic()
        try:
            engine = self._factory(resolved)
        except BaseException:
            self._report_load_error(name)
            raise
        load_time = time.monotonic() - started
        now = self._clock()
        with self._lock:
            self._loaded[name] = LoadedModel(name, engine, now, now, load_time_s=load_time)
            evicted = self._evict_over_capacity_locked(keep=name)
        for old in evicted:
            self._close(old)
        if self._on_load is not None:
            self._on_load(name, load_time)

    def _report_load_error(self, name: str) -> None:
        if self._on_load_error is not None:
            self._on_load_error(name)

    def _resolve(self, name: str) -> ResolvedModel:
        if name not in BUNDLED_MODELS and name not in self._access.configured:
            in_dir = model_in_dirs(name, self._access.model_dirs)
            if in_dir is not None:
                return resolve_local_model_or_raise(name, in_dir)
        return resolve_model_or_raise(name, cache_dir=self._settings.cache_dir, offline=self._offline)

    def _evict_over_capacity_locked(self, *, keep: str) -> list[LoadedModel]:
        """Unload least-recently-used idle models until within capacity; never the default, a
        model in use, or ``keep`` (the one just loaded for a waiting request)."""
        evicted: list[LoadedModel] = []
        for name in list(self._loaded):
            if len(self._loaded) <= self._max_loaded:
                break
            model = self._loaded[name]
            if model.in_use == 0 and name not in (self.default_name, keep):
                evicted.append(self._loaded.pop(name))
        return evicted

    def preload(self, name: str | None = None) -> None:
        self._ensure_loaded(self.canonical_name(name))

    def switch_default(self, name: str) -> None:
        """Load ``name`` and make it the default (whisper.cpp's ``/load``). On failure the old
        default keeps serving and the error propagates."""
        self._ensure_loaded(name)
        with self._lock:
            self.default_name = name

    def unload_idle(self) -> list[str]:
        """Unload non-default models idle longer than the TTL; returns their names."""
        if self._idle_ttl_s <= 0:
            return []
        cutoff = self._clock() - self._idle_ttl_s
        with self._lock:
            idle = [
                n for n, m in self._loaded.items()
                if n != self.default_name and m.in_use == 0 and m.last_used < cutoff
            ]
            models = [self._loaded.pop(n) for n in idle]
        for model in models:
            self._close(model)
        return idle

    def close(self) -> None:
        with self._lock:
            models = list(self._loaded.values())
            self._loaded.clear()
        for model in models:
            self._close(model)

    @staticmethod
    def _close(model: LoadedModel) -> None:
        logger.info("unloading model %s", model.name)
        try:
            model.engine.close()
        except Exception:  # closing must never take the server down
            logger.exception("error while unloading %s", model.name)

