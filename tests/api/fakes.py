"""A fast fake engine and in-process apps, for API tests that are about HTTP behaviour rather than
speech recognition.

Everything but the engine is real: settings, the app factory, middleware, routes, the scheduler,
the model manager (which still resolves the model name to bundled weights), decoding of the
uploaded audio and rendering. The engine is injected the supported way,
``create_app(settings, engine_factory=...)``; nothing is monkeypatched.

The fake writes one segment per ``SEGMENT_S`` of audio (``" segment 0"``, ``" segment 1"`` ...),
records the options of every call, and can be paused: while ``FakeEngines.hold`` is set, each
transcription stops after its first segment (already streamed) until the test releases it, so a
test can look at a request that is provably still running.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import numpy as np
import uvicorn
from fastapi import FastAPI

from stenod.api import create_app
from stenod.api.state import AppState
from stenod.audio import SAMPLE_RATE
from stenod.engines import CancelledError, EngineInfo, LanguageDetection, TranscriptionOptions
from stenod.engines.base import ProgressCallback, SegmentCallback, check_model_supports_or_raise
from stenod.models import ResolvedModel
from stenod.settings import Settings
from stenod.transcript import Segment, Transcript, Word

SEGMENT_S = 5.0
WAIT_S = 60.0
"""Generous bound on any wait in these tests: a guard against hangs, not a speed assertion."""


class FakeEngines:
    """The engine factory handed to ``create_app``, and the test's remote control."""

    def __init__(self) -> None:
        self.calls: list[TranscriptionOptions] = []
        self.loads: list[str] = []
        self.hold = threading.Event()
        """Set: transcriptions pause after their first segment until :meth:`release`."""
        self.load_gate = threading.Event()
        """Cleared: model loads block until it is set (to observe the server while it loads)."""
        self.load_gate.set()
        self.first_segment_sent = threading.Semaphore(0)
        self.completed = 0
        self._lock = threading.Lock()

    def __call__(self, model: ResolvedModel) -> FakeEngine:
        if not self.load_gate.wait(WAIT_S):
            raise TimeoutError("load gate never opened")
        with self._lock:
            self.loads.append(model.name)
        return FakeEngine(model, self)

    def release(self) -> None:
        self.hold.clear()

    def wait_first_segment(self, count: int = 1) -> None:
        for _ in range(count):
            if not self.first_segment_sent.acquire(timeout=WAIT_S):
                raise TimeoutError("no transcription reached its first segment")


class FakeEngine:
    def __init__(self, model: ResolvedModel, control: FakeEngines) -> None:
        self._model = model
        self._control = control

    def transcribe(
        self,
        audio: np.ndarray,
        options: TranscriptionOptions,
        *,
        progress: ProgressCallback | None = None,
        on_segment: SegmentCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Transcript:
        check_model_supports_or_raise(options, model_name=self._model.name, multilingual=self._model.multilingual)
        control = self._control
        with control._lock:
            control.calls.append(options)
        duration = len(audio) / SAMPLE_RATE
        segments: list[Segment] = []
        for i in range(max(1, math.ceil(duration / SEGMENT_S))):
            if cancel is not None and cancel.is_set():
                raise CancelledError("cancelled")
            start, end = i * SEGMENT_S, min(duration, (i + 1) * SEGMENT_S)
            words = (Word(start, end, f" segment{i}", 0.9),) if options.word_timestamps else None
            segment = Segment(id=i, seek=0, start=start, end=end, text=f" segment {i}", words=words)
            segments.append(segment)
            if on_segment is not None:
                on_segment(segment)
            if progress is not None:
                progress(end, duration)
            if i == 0:
                control.first_segment_sent.release()
                while control.hold.is_set():  # paused: still running, first segment already out
                    if cancel is not None and cancel.wait(0.01):
                        raise CancelledError("cancelled")
                    if cancel is None:
                        threading.Event().wait(0.01)
        with control._lock:
            control.completed += 1
        return Transcript.from_segments(segments, language=options.language or "en", duration=duration,
                                        language_probability=1.0, task=options.task)

    def detect_language(self, audio: np.ndarray) -> LanguageDetection:
        return LanguageDetection("en", 1.0, {"en": 1.0})

    def info(self) -> EngineInfo:
        return EngineInfo(engine="fake", model=self._model.name, model_path=str(self._model.path), device="cpu",
                          compute_type="int8", threads=1, max_concurrency=8, multilingual=self._model.multilingual)

    def close(self) -> None:
        pass


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of a Prometheus metric's samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith((name + "{", name + " ")):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def fake_settings(cache_dir: Path, tmp_path: Path, **sections: dict[str, Any]) -> Settings:
    """Settings for an in-process app: bundled tiny.en, offline, no job API unless asked for."""
    model = {"name": "tiny.en", "cache_dir": cache_dir, "offline": True, **sections.pop("model", {})}
    jobs = {"enabled": False, "data_dir": tmp_path / "jobs", **sections.pop("jobs", {})}
    return Settings(model=model, jobs=jobs, **sections)


@asynccontextmanager
async def app_client(settings: Settings, engines: FakeEngines) -> AsyncIterator[tuple[httpx.AsyncClient, AppState]]:
    """The app in this process, lifespan included (preload, shutdown), over ``httpx.ASGITransport``.
    The transport delivers a response once the app has finished it, so streaming is tested over
    real HTTP with :func:`served` instead."""
    app = create_app(settings, engine_factory=engines)
    state: AppState = app.state.stenod
    async with app.router.lifespan_context(app):
        with anyio.fail_after(WAIT_S):  # the default model preloads in the background: start ready
            while state.preloading:
                await anyio.sleep(0.01)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://stenod.test", timeout=WAIT_S) as client:
            yield client, app.state.stenod


@dataclass
class Served:
    url: str
    loop: asyncio.AbstractEventLoop

    def on_loop(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the server's event loop (where the app's state lives) and wait for it."""

        async def call() -> None:
            fn()

        asyncio.run_coroutine_threadsafe(call(), self.loop).result(WAIT_S)


@contextmanager
def served(app: FastAPI) -> Iterator[Served]:
    """The app under a real uvicorn server on a free loopback port, in a thread of this process:
    real HTTP (sockets, streaming, keep-alive) without a process start or a model load."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    ready = threading.Event()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("uvicorn exited during start-up")
        ready.wait(0.01)
    listener = server.servers[0]
    port = listener.sockets[0].getsockname()[1]
    try:
        yield Served(f"http://127.0.0.1:{port}", listener.get_loop())
    finally:
        server.should_exit = True
        thread.join(WAIT_S)
