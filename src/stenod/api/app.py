"""The app factory. ``create_app(settings)`` builds a self-contained app: its own model manager,
scheduler and metrics registry, so tests can run several apps in one process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import anyio.to_thread
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from stenod import __version__
from stenod.api.auth import Authenticator
from stenod.api.docs import install_docs
from stenod.api.errors import install_error_handlers
from stenod.api.middleware import (
    ProtectedPathsMiddleware,
    RequestContextMiddleware,
    UploadLimitMiddleware,
    protected_prefixes,
)
from stenod.api.ratelimit import RateLimits
from stenod.api.routers import health, jobs, openai, web, whispercpp
from stenod.api.state import AppState
from stenod.errors import StenodError
from stenod.observability.metrics import Metrics
from stenod.scheduler.memory import MemoryBudget
from stenod.scheduler.slots import SlotScheduler
from stenod.service import EngineFactory, TranscriptionService, build_model_manager, server_cpu_plan
from stenod.settings import Settings

logger = logging.getLogger(__name__)

UPLOAD_PATHS = frozenset({"/v1/audio/transcriptions", "/v1/audio/translations", "/inference", "/v1/jobs"})


def build_state(settings: Settings, *, engine_factory: EngineFactory | None = None) -> AppState:
    """The app's long-lived parts. ``engine_factory`` replaces how engines are loaded (tests use a
    fast fake engine); by default the configured engine via :func:`stenod.service.engine_factory`."""
    plan = server_cpu_plan(settings)
    metrics = Metrics()
    manager = build_model_manager(
        settings, plan, factory=engine_factory,
        on_load=lambda name, seconds: metrics.model_load_seconds.labels(manager.metrics_label(name)).observe(seconds),
        on_load_error=lambda _name: metrics.model_load_failures.inc(),
    )
    # A slot per clip a batch can hold: with batching, requests wait for a batch in the engine,
    # not for a slot here.
    scheduler = SlotScheduler(slots=plan.slots, queue_size=settings.server.queue_size)
    service = TranscriptionService(
        manager=manager, scheduler=scheduler, metrics=metrics,
        max_duration_s=settings.audio.max_duration_s, request_timeout_s=settings.server.request_timeout_s,
        print_progress=settings.server.print_progress, chunk_s=settings.audio.chunk_s,
        memory=MemoryBudget(int(settings.server.memory_budget_mb * 1024 * 1024), max_waiting=settings.server.queue_size,
                            wait_s=settings.server.memory_wait_s),
    )
    logger.info("inference plan: %d slots, %d workers x %d threads, batches of up to %d clips",
                plan.slots, plan.concurrency, plan.threads, plan.batch_size)
    return AppState(settings=settings, manager=manager, scheduler=scheduler, metrics=metrics, service=service,
                    auth=Authenticator(settings), limits=RateLimits(settings.server.rate_limit_storage_url))


async def _preload(state: AppState) -> None:
    try:
        await anyio.to_thread.run_sync(state.manager.preload, None)
        state.load_error = None
    except StenodError as exc:
        state.load_error = exc.message
        logger.error("could not load default model %s: %s", state.manager.default_name, exc.message)
    finally:
        state.preloading = False


def _jobs_explicitly_configured(settings: Settings) -> bool:
    jobs = settings.jobs
    return bool(jobs.database_url or jobs.blob_url or jobs.broker_url)


async def _start_jobs(state: AppState) -> None:
    """Open the job stores and start workers/sweeper. A configured production store that cannot
    be reached stops the server (fail fast at deploy); the embedded default failing (e.g. a
    read-only data folder) only disables the job API, so synchronous serving keeps working."""
    from stenod.jobs.runtime import build_runtime

    settings = state.settings
    try:
        runtime = await anyio.to_thread.run_sync(
            lambda: build_runtime(settings, manager=state.manager, scheduler=state.scheduler)
        )
    except Exception as exc:
        if _jobs_explicitly_configured(settings):
            raise
        state.jobs_error = f"{type(exc).__name__}: {exc}"
        logger.error("job API disabled: could not open the job store in %s: %s", settings.jobs.data_dir, exc)
        return
    await runtime.start()
    state.jobs = runtime
    logger.info("job API ready (%s mode)", runtime.mode)


async def _unload_idle_loop(state: AppState, ttl_s: float) -> None:
    while True:
        await asyncio.sleep(max(1.0, min(30.0, ttl_s / 2)))
        unloaded = await anyio.to_thread.run_sync(state.manager.unload_idle)
        if unloaded:
            logger.info("unloaded idle models: %s", ", ".join(unloaded))


def begin_drain(state: AppState) -> None:
    """Stop taking work (call on the event loop): /health and /ready turn 503, new and queued
    transcription requests get 503 + Retry-After at once, running ones get ``drain_timeout_s``."""
    state.draining = True
    state.scheduler.drain(timeout_s=state.settings.server.drain_timeout_s)
    state.service.memory.drain()  # requests waiting for memory are queued too: 503 at once
    workers = state.jobs.workers if state.jobs is not None else None
    if workers is not None:
        # Jobs are durable: hand running ones back to the queue now (they stop at the next window)
        # rather than let them use the drain time; another server or the next start resumes them.
        asyncio.get_running_loop().create_task(workers.stop(timeout_s=state.settings.server.drain_timeout_s))


def create_app(settings: Settings | None = None, *, engine_factory: EngineFactory | None = None) -> FastAPI:
    """A self-contained app for ``settings`` (default: from the environment).

    Args:
        engine_factory: how to load an engine for a resolved model; ``None`` loads the configured
            engine. Tests pass a fast fake engine here instead of patching globals.
    """
    settings = settings or Settings()
    state = build_state(settings, engine_factory=engine_factory)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks = []
        if settings.server.preload:
            state.preloading = True
            tasks.append(asyncio.create_task(_preload(state)))
        if settings.server.model_idle_ttl_s > 0:
            tasks.append(asyncio.create_task(_unload_idle_loop(state, settings.server.model_idle_ttl_s)))
        if settings.jobs.enabled:
            await _start_jobs(state)
        try:
            yield
        finally:
            state.draining = True
            for task in tasks:
                task.cancel()
            if state.jobs is not None:
                await state.jobs.stop()
            state.auth.close()
            busy = state.scheduler.stats().running
            state.scheduler.close()
            if busy:
                # Transcriptions answered 503 at the drain deadline may still be inside the engine
                # until they reach the cancel check; freeing their weights under them could crash.
                logger.info("exiting with %d cancelled transcription(s) still stopping; models not unloaded", busy)
            else:
                await anyio.to_thread.run_sync(state.manager.close)

    app = FastAPI(
        title="stenod",
        version=__version__,
        description="Whisper speech-to-text with OpenAI- and whisper.cpp-compatible APIs.",
        lifespan=lifespan,
        docs_url=None,  # served from local assets by install_docs: no CDN
        redoc_url=None,
    )
    app.state.stenod = state
    install_error_handlers(app)
    install_docs(app, title="stenod")
    app.include_router(openai.router)
    app.include_router(whispercpp.router)
    if settings.jobs.enabled:
        app.include_router(jobs.router)
    app.include_router(health.router)
    if settings.server.web_ui and settings.jobs.enabled:
        app.include_router(web.router)  # the page is a job-API client
    if settings.server.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.server.cors_origins, allow_methods=["*"],
            allow_headers=["*"], expose_headers=["X-Request-ID", "Retry-After"],
        )
    max_bytes = int(settings.audio.max_file_mb * 1_000_000)
    app.add_middleware(UploadLimitMiddleware, max_bytes=max_bytes, paths=UPLOAD_PATHS)
    protected = protected_prefixes(settings)
    if protected:
        app.add_middleware(ProtectedPathsMiddleware, auth=state.auth, prefixes=protected)
    app.add_middleware(RequestContextMiddleware)  # outermost: every response carries the id
    return app
