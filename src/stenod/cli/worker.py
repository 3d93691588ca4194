"""``stenod worker``: a Celery worker that runs queued jobs (``[jobs] broker_url`` must be set).

It runs ``--concurrency`` jobs at once: on the default ``threads`` pool in one process over one
model copy loaded before it consumes, on ``--pool prefork`` in that many processes, each loading
its own copy after the fork (a job that crashes its process takes no other job with it). SIGTERM
hands running jobs back to the queue (they stop at the next window and another worker takes them
at once; see ``jobs/worker.py``), SIGKILL loses nothing (the jobs are delivered again). See
docs/SCALING.md.
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
                                             help="Jobs run at once (threads over one model copy, or prefork "
                                                  "processes with one copy each).")] = 1,
    pool: Annotated[str | None, typer.Option("--pool", help="threads (default: one process, one model copy) or "
                                             "prefork (a process per job; overrides STENOD_JOBS__WORKER_POOL).")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Default model (name, folder or ggml file).")] = None,
    threads: Annotated[int | None, typer.Option("--threads", "-t", min=0,
                                                help="CPU threads per job (0 = cores / concurrency).")] = None,
    broker_url: Annotated[str | None, typer.Option("--broker-url", help="Overrides STENOD_JOBS__BROKER_URL.")] = None,
    hostname: Annotated[str | None, typer.Option("--hostname", help="Celery node name (default stenod@host).")] = None,
    log_format: Annotated[str | None, typer.Option("--log-format", help="json or console.")] = None,
    config: Annotated[Path | None, ConfigOption] = None,
) -> None:
    """Run queued transcription jobs from the broker (Celery on Redis or RabbitMQ)."""
    settings = build_settings(
        config, model={"name": model, "threads": threads}, jobs={"broker_url": broker_url, "worker_pool": pool},
        log={"format": log_format}, flags={"jobs.worker_pool": "--pool"},
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
    pool_name = settings.jobs.worker_pool
    try:
        # Threads pool: the model is loaded here, once, before the worker takes a job.
        worker.configure(settings, app, concurrency=concurrency, pool=pool_name)
    except Exception as exc:
        fail(f"cannot start the worker: {type(exc).__name__}: {exc}")
    node = hostname or f"stenod@{socket.gethostname()}"
    logger.info("worker %s: %d job(s) at once on the %s pool, queue %s", node, concurrency, pool_name,
                settings.jobs.queue_name)
    app.worker_main([
        "worker", "--pool", pool_name, "--concurrency", str(concurrency), "--queues", settings.jobs.queue_name,
        "--hostname", node, "--loglevel", settings.log.level.upper(), "--without-gossip", "--without-mingle",
        "--prefetch-multiplier", "1",
    ])
