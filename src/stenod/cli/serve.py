"""``stenod serve``: the HTTP API under uvicorn, with graceful drain on SIGTERM."""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
import uvicorn
from fastapi import FastAPI

from stenod.api import AppState, ConnectionLimits, LimitedHttpToolsProtocol, begin_drain, create_app
from stenod.cli.checks import threads_warning
from stenod.cli.common import ConfigOption, build_settings, stderr, warn
from stenod.engines import cpu_count
from stenod.observability import configure_logging
from stenod.service import server_cpu_plan
from stenod.settings import Settings

logger = logging.getLogger(__name__)


READY_POLL_S = 0.2
SHUTDOWN_GRACE_S = 5
"""After the drain, uvicorn's own grace period for responses still being written."""


def ready_message(url: str, *, model: str, slots: int, threads: int) -> str:
    """The line a person at a terminal sees once the server answers, with a request to paste."""
    return (f"stenod ready on {url} (model {model}, {slots} slot(s) x {threads} thread(s)); try:\n"
            f"  curl {url}/v1/audio/transcriptions -F file=@audio.wav -F model=whisper-1\n"
            f"  API docs: {url}/docs   health: {url}/health   Ctrl-C stops (in-flight requests finish)")


class _DrainingServer(uvicorn.Server):
    """Drains before uvicorn shuts down, so the listener stays open while the server drains.

    The first SIGTERM (or SIGINT) marks the app draining: ``/health`` and ``/ready`` answer 503 (on
    new connections too, so a load balancer sees it), new and queued transcription requests get 503
    with Retry-After at once, and running ones get ``drain_timeout_s`` before they are answered 503
    in the API's error shape. When no request is in flight, or the drain deadline has passed and
    those answers are out, uvicorn's shutdown runs. A second signal shuts down at once.
    On a terminal, prints a "ready, try: curl ..." line once the default model is loaded.
    """

    def __init__(self, config: uvicorn.Config, state: AppState, on_ready: Callable[[str], None]) -> None:
        super().__init__(config)
        self._state = state
        self._on_ready = on_ready
        self._drain_requested_at: float | None = None
        self._drain_started = False

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            asyncio.get_running_loop().create_task(self._announce())

    async def _announce(self) -> None:
        state = self.config.app.state.stenod  # type: ignore[union-attr]
        while state.preloading and not self.should_exit:  # the preload task runs in the lifespan
            await asyncio.sleep(READY_POLL_S)
        if self.should_exit or state.load_error:
            return  # the load error is already logged
        port = self.config.port
        for server in self.servers:
            for sock in server.sockets:
                port = sock.getsockname()[1]
        host = self.config.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
        self._on_ready(f"http://{shown}:{port}")

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_requested_at is not None or sig not in (signal.SIGTERM, signal.SIGINT):
            super().handle_exit(sig, frame)
            self._forget_sigterm(sig)
            return
        # In a signal handler: only flag; the event-loop work happens in on_tick.
        self._drain_requested_at = time.monotonic()
        self._state.draining = True
        captured = getattr(self, "_captured_signals", None)
        if isinstance(captured, list):
            captured.append(sig)  # re-raised after shutdown as uvicorn does: Ctrl-C exits 130
        self._forget_sigterm(sig)

    def _forget_sigterm(self, sig: int) -> None:
        # uvicorn re-raises captured signals after shutdown, so the process would die "by SIGTERM".
        # A drained shutdown is a clean one: exit 0, which is what systemd and Kubernetes expect.
        captured = getattr(self, "_captured_signals", None)
        if isinstance(captured, list) and sig == signal.SIGTERM:
            captured[:] = [s for s in captured if s != signal.SIGTERM]

    async def on_tick(self, counter: int) -> bool:
        if self._drain_requested_at is not None and not self.should_exit:
            timeout_s = self._state.settings.server.drain_timeout_s
            if not self._drain_started:
                self._drain_started = True
                logger.info("signal received: draining (up to %.0f s for running requests)", timeout_s)
                begin_drain(self._state)
            elapsed = time.monotonic() - self._drain_requested_at
            if not self.server_state.tasks or elapsed > timeout_s + SHUTDOWN_GRACE_S:
                logger.info("drained after %.1f s; shutting down", elapsed)
                self.should_exit = True
        return await super().on_tick(counter)


def uvicorn_config(app: FastAPI, settings: Settings) -> uvicorn.Config:
    """uvicorn's configuration for ``app``: stenod's HTTP protocol with the connection limits of
    ``settings`` (timeouts, caps, lingering close), each refusal counted in the app's metrics."""
    server = settings.server
    state: AppState = app.state.stenod
    limits = ConnectionLimits(
        header_timeout_s=server.header_timeout_s, body_idle_timeout_s=server.body_idle_timeout_s,
        max_connections=server.max_connections, max_connections_per_client=server.max_connections_per_client,
        on_refused=lambda reason: state.metrics.connections_refused.labels(reason).inc(),
    )
    return uvicorn.Config(
        app, host=server.host, port=server.port, log_config=None, access_log=False,
        http=functools.partial(LimitedHttpToolsProtocol, limits=limits),  # type: ignore[arg-type]
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
    )


def serve_command(
    model: Annotated[str | None, typer.Option("--model", "-m", help="Default model (name, folder or ggml file).")] = None,
    host: Annotated[str | None, typer.Option("--host", help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port (default 8080; 0 picks a free one).")] = None,
    threads: Annotated[int | None, typer.Option("--threads", "-t", min=0, help="CPU threads per slot (0 = choose).")] = None,
    slots: Annotated[int | None, typer.Option("--slots", min=0, help="Concurrent transcriptions (0 = choose).")] = None,
    queue_size: Annotated[int | None, typer.Option("--queue-size", min=0, help="Requests that may wait for a slot.")] = None,
    engine: Annotated[str | None, typer.Option("--engine", help="auto, faster-whisper or whisper.cpp.")] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda.")] = None,
    compute_type: Annotated[str | None, typer.Option("--compute-type", help="auto, int8, float32, float16.")] = None,
    api_key: Annotated[list[str] | None, typer.Option("--api-key", help="Accepted Bearer key (repeatable).")] = None,
    admin_key: Annotated[list[str] | None, typer.Option("--admin-key", help="Bearer key that may also use /load (repeatable).")] = None,
    print_progress: Annotated[bool | None, typer.Option("--print-progress", help="Log progress of each request.")] = None,
    preload: Annotated[bool | None, typer.Option("--preload/--lazy", help="Load the default model at start-up.")] = None,
    log_format: Annotated[str | None, typer.Option("--log-format", help="json or console.")] = None,
    config: Annotated[Path | None, ConfigOption] = None,
) -> None:
    """Serve the OpenAI- and whisper.cpp-compatible HTTP API.

    Logs are JSON lines (one per request, with its id) unless --log-format console, or stderr is
    a terminal and no format was configured: then they are readable lines and a "ready, try: curl"
    line follows once the model is loaded.
    """
    settings = build_settings(
        config,
        model={"name": model, "threads": threads, "engine": engine, "device": device, "compute_type": compute_type},
        server={"host": host, "port": port, "slots": slots, "queue_size": queue_size, "api_keys": api_key, "admin_api_keys": admin_key,
                "print_progress": print_progress, "preload": preload},
        log={"format": log_format},
    )
    message = threads_warning(settings.model.threads, cpu_count())
    if message:
        warn(message)
    interactive = sys.stderr.isatty()
    if interactive and "format" not in settings.log.model_fields_set:
        settings = settings.model_copy(update={"log": settings.log.model_copy(update={"format": "console"})})
    configure_logging(settings.log.level, settings.log.format)
    app = create_app(settings)
    state = app.state.stenod

    config_ = uvicorn_config(app, settings)

    def on_ready(url: str) -> None:
        logger.info("ready on %s", url)
        if interactive:
            plan = state.scheduler
            info = ready_message(url, model=state.manager.default_name, slots=plan.slots,
                                 threads=_threads_per_slot(settings))
            stderr.print(info, markup=False, highlight=False)

    _DrainingServer(config_, state, on_ready).run()


def _threads_per_slot(settings: Settings) -> int:
    return server_cpu_plan(settings).threads
