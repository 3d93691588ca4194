"""``stenod serve``: the HTTP API under uvicorn, with graceful drain on SIGTERM."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from stenod.api.app import create_app
from stenod.cli.common import ConfigOption, build_settings
from stenod.observability.logging import configure_logging

logger = logging.getLogger(__name__)


class _DrainingServer(uvicorn.Server):
    """Marks the app as draining the moment a signal arrives, so /health and /ready turn 503 and
    new transcription requests on kept-alive connections are refused while in-flight ones finish."""

    def __init__(self, config: uvicorn.Config, on_drain: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_drain = on_drain

    def handle_exit(self, sig: int, frame: object) -> None:
        self._on_drain()
        super().handle_exit(sig, frame)  # type: ignore[arg-type]
        # uvicorn re-raises captured signals after shutdown, so the process would die "by SIGTERM".
        # A drained shutdown is a clean one: exit 0, which is what systemd and Kubernetes expect.
        captured = getattr(self, "_captured_signals", None)
        if isinstance(captured, list) and sig == signal.SIGTERM:
            captured[:] = [s for s in captured if s != signal.SIGTERM]


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
    """Serve the OpenAI- and whisper.cpp-compatible HTTP API."""
    settings = build_settings(
        config,
        model={"name": model, "threads": threads, "engine": engine, "device": device, "compute_type": compute_type},
        server={"host": host, "port": port, "slots": slots, "queue_size": queue_size, "api_keys": api_key, "admin_api_keys": admin_key,
                "print_progress": print_progress, "preload": preload},
        log={"format": log_format},
    )
    configure_logging(settings.log.level, settings.log.format)
    app = create_app(settings)
    state = app.state.stenod

    def on_drain() -> None:
        if not state.draining:
            logger.info("signal received: draining (up to %.0f s for in-flight requests)", settings.server.drain_timeout_s)
        state.draining = True

    config_ = uvicorn.Config(
        app, host=settings.server.host, port=settings.server.port, log_config=None,
        timeout_graceful_shutdown=settings.server.drain_timeout_s, access_log=False,
    )
    _DrainingServer(config_, on_drain).run()
