"""Wiring of the job system from settings: stores, queue, service, in-process workers, sweeper.

The API server builds one :class:`JobsRuntime` at start-up (after uvicorn forked, if it does);
``stenod worker`` builds its stores per Celery child process (``jobs/worker.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
from sqlalchemy.engine import Engine

from stenod.jobs.inprocess import InProcessQueue, InProcessWorkers, ThreadNotifier
from stenod.jobs.runner import JobRunner
from stenod.jobs.sweeper import sweep_once
from stenod.jobs.webhooks import deliver_once
from stenod.scheduler.model_manager import ModelManager
from stenod.scheduler.slots import SlotScheduler
from stenod.service.egress import EgressPolicy
from stenod.service.jobs import JobQueue, JobService
from stenod.settings import Settings
from stenod.storage.blobs import BlobStore, open_blob_store
from stenod.storage.job_store import JobStore
from stenod.storage.sql import create_db_engine, migrate

logger = logging.getLogger(__name__)

WORKER_SEEN_WINDOW_S = 60.0
"""/health lists workers that reported within this window."""


@dataclass
class JobBackends:
    engine: Engine
    store: JobStore
    blobs: BlobStore
    policy: EgressPolicy

    def close(self) -> None:
        self.engine.dispose()


def open_backends(settings: Settings) -> JobBackends:
    """Connect the stores for this process and migrate the schema (under the migration lock).

    Raises:
        ValueError: a malformed URL or network in ``[jobs]``.
        sqlalchemy.exc.OperationalError, botocore errors: a store is unreachable.
    """
    jobs = settings.jobs
    policy = EgressPolicy.from_strings(jobs.allowed_networks)
    engine = create_db_engine(jobs.database_url, data_dir=jobs.data_dir)
    try:
        migrate(engine)
        blobs = open_blob_store(jobs.blob_url, data_dir=jobs.data_dir, s3_endpoint_url=jobs.s3_endpoint_url,
                                s3_region=jobs.s3_region)
    except Exception:
        engine.dispose()
        raise
    return JobBackends(engine=engine, store=JobStore(engine), blobs=blobs, policy=policy)


def worker_identity() -> str:
    """``host:pid``: unique per process, and tells an operator where a job ran."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class JobsRuntime:
    """What the API holds for jobs."""

    settings: Settings
    backends: JobBackends
    queue: JobQueue
    service: JobService
    workers: InProcessWorkers | None = None
    notifier: ThreadNotifier | None = None
    celery: Any = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def mode(self) -> str:
        return self.queue.mode

    async def start(self) -> None:
        if self.workers is not None:
            self.workers.start()
        self._tasks.append(asyncio.create_task(self._sweep_loop(), name="job-sweeper"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.workers is not None:
            await self.workers.stop(timeout_s=self.settings.server.drain_timeout_s)
        if self.notifier is not None:
            self.notifier.close()
        self.backends.close()

    async def _sweep_loop(self) -> None:
        republish = self.mode != "in-process"
        while True:
            try:
                await anyio.to_thread.run_sync(lambda: sweep_once(self.service, republish=republish))
            except Exception:
                logger.exception("job sweep failed; retrying in %.0f s", self.settings.jobs.sweep_interval_s)
            await asyncio.sleep(self.settings.jobs.sweep_interval_s)

    def health(self) -> dict[str, object]:
        """Blocking: job counts, queue depth and workers seen (for /health)."""
        import time

        store = self.backends.store
        counts = store.counts()
        depth = self.queue.depth()
        if self.workers is not None:
            workers: list[dict[str, object]] = [{
                "id": worker_identity(), "concurrency": self.workers.count, "running": self.workers.running,
                "model": self.settings.model.name, "in_process": True,
            }]
        else:
            workers = [
                {"id": w.id, "concurrency": w.concurrency, "running": w.running, "model": w.model,
                 "seen_s_ago": round(time.time() - w.seen_at, 1)}
                for w in store.workers_seen_since(time.time() - WORKER_SEEN_WINDOW_S)
            ]
        return {
            "mode": self.mode,
            "queue_depth": depth if depth is not None else counts.get("queued", 0),
            "queued": counts.get("queued", 0),
            "processing": counts.get("processing", 0),
            "workers": workers,
        }


def build_runtime(settings: Settings, *, manager: ModelManager, scheduler: SlotScheduler) -> JobsRuntime:
    """Open the stores and pick the queue: Celery when ``broker_url`` is set, else in-process."""
    backends = open_backends(settings)
    jobs = settings.jobs
    try:
        if jobs.broker_url:
            from stenod.jobs.app import CeleryQueue, create_celery

            celery = create_celery(jobs)
            queue = CeleryQueue(celery, jobs)
            service = JobService(store=backends.store, blobs=backends.blobs, queue=queue, settings=jobs,
                                 max_duration_s=settings.audio.max_duration_s,
                                 on_final=lambda job_id: queue.publish_webhook(job_id))
            return JobsRuntime(settings=settings, backends=backends, queue=queue, service=service, celery=celery)
        notifier = ThreadNotifier(lambda job_id: deliver_once(backends.store, job_id, jobs, backends.policy))
        in_queue = InProcessQueue()
        service = JobService(store=backends.store, blobs=backends.blobs, queue=in_queue, settings=jobs,
                             max_duration_s=settings.audio.max_duration_s, on_final=notifier)
        workers = None
        if jobs.workers > 0:
            runner = JobRunner(store=backends.store, blobs=backends.blobs, manager=manager, jobs=jobs,
                               model_settings=settings.model, max_duration_s=settings.audio.max_duration_s,
                               worker_id=worker_identity(), chunk_s=settings.audio.chunk_s, on_final=notifier)
            workers = InProcessWorkers(runner=runner, scheduler=scheduler, queue=in_queue, count=jobs.workers)
        return JobsRuntime(settings=settings, backends=backends, queue=in_queue, service=service, workers=workers,
                           notifier=notifier)
    except Exception:
        backends.close()
        raise
