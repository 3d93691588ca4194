"""``stenod worker``: a Celery worker that runs queued jobs (``[jobs] broker_url`` must be set).

Each of ``--concurrency`` processes loads the model once after the fork and runs one job at a
time; SIGTERM hands running jobs back to the queue (they stop at the next window and another
worker takes them at once; see ``jobs/worker.py``), SIGKILL loses nothing (the job is delivered
again). See docs/SCALING.md.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Annotated

import typer

from stenod.cli.common import ConfigOption, build_settings, fail
from stenod.observability import configure_logging

logger = logging.getLogger(__name__)


def worker_command(
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1,
                                             help="Worker processes, each with its own model copy.")] = 1,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Default model (name, folder or ggml file).")] = None,
    threads: Annotated[int | None, typer.Option("--threads", "-t", min=0,
                                                help="CPU threads per process (0 = cores / concurrency).")] = None,
    broker_url: Annotated[str | None, typer.Option("--broker-url", help="Overrides STENOD_JOBS__BROKER_URL.")] = None,
    hostname: Annotated[str | None, typer.Option("--hostname", help="Celery node name (default stenod@host).")] = None,
    log_format: Annotated[str | None, typer.Option("--log-format", help="json or console.")] = None,
    config: Annotated[Path | None, ConfigOption] = None,
) -> None:
    """Run queued transcription jobs from the broker (Celery on Redis or RabbitMQ)."""
    settings = build_settings(
        config, model={"name": model, "threads": threads}, jobs={"broker_url": broker_url}, log={"format": log_format},
    )
    if not settings.jobs.broker_url:
        fail("stenod worker needs a broker: set STENOD_JOBS__BROKER_URL (redis://... or amqp://...) "
             "or --broker-url; without one, `stenod serve` runs jobs itself", code=2)
    configure_logging(settings.log.level, settings.log.format)
    from stenod.jobs import worker
    from stenod.jobs.app import create_celery
    from stenod.jobs.runtime import open_backends
    from stenod.jobs.tasks import register_tasks

    try:
        app = create_celery(settings.jobs)
        # Migrate once in the parent (under the migration lock), then drop the connections: every
        # child opens its own after the fork.
        open_backends(settings).close()
    except Exception as exc:
        fail(f"cannot start the worker: {type(exc).__name__}: {exc}")
    register_tasks(app)
    worker.configure(settings, app, concurrency=concurrency)
    node = hostname or f"stenod@{socket.gethostname()}"
    logger.info("worker %s: %d process(es), queue %s", node, concurrency, settings.jobs.queue_name)
    app.worker_main([
        "worker", "--pool", "prefork", "--concurrency", str(concurrency), "--queues", settings.jobs.queue_name,
        "--hostname", node, "--loglevel", settings.log.level.upper(), "--without-gossip", "--without-mingle",
        "--prefetch-multiplier", "1",
    ])
