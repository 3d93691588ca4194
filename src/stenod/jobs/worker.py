"""The Celery worker runtime (``stenod worker``): what each prefork child process holds.

Everything stateful is built in the child after the fork (``worker_process_init``): the database
engine (a pooled connection must never cross a fork), the blob store client, and the model, loaded
once per process and reused for every job it runs. Each child reports itself in the ``workers``
table every few seconds, which is how ``/health`` on any API server lists the workers it sees.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown

from stenod.engines import CpuPlan
from stenod.jobs.runner import JobRunner
from stenod.jobs.runtime import JobBackends, open_backends, worker_identity
from stenod.scheduler.model_manager import ModelManager
from stenod.service import build_model_manager, threads_per_process
from stenod.settings import Settings
from stenod.storage.job_store import WorkerRecord

logger = logging.getLogger(__name__)

WORKER_HEARTBEAT_S = 5.0


@dataclass
class WorkerContext:
    settings: Settings
    backends: JobBackends
    manager: ModelManager
    runner: JobRunner
    worker_id: str
    started_at: float
    running: int = 0
    _stop: threading.Event | None = None

    def report(self) -> None:
        self.backends.store.worker_seen(WorkerRecord(
            id=self.worker_id, hostname=self.worker_id.rsplit(":", 1)[0], pid=int(self.worker_id.rsplit(":", 1)[1]),
            concurrency=1, model=self.manager.default_name, started_at=self.started_at, seen_at=time.time(),
            running=self.running,
        ))

    def start_reporting(self) -> None:
        self._stop = threading.Event()

        def loop() -> None:
            assert self._stop is not None
            while True:
                try:
                    self.report()
                except Exception as exc:
                    logger.warning("worker %s: could not report to the job store (%s)", self.worker_id,
                                   type(exc).__name__)
                if self._stop.wait(WORKER_HEARTBEAT_S):
                    return

        threading.Thread(target=loop, name="worker-report", daemon=True).start()

    def close(self) -> None:
        if self._stop is not None:
            self._stop.set()
        try:
            self.backends.store.forget_worker(self.worker_id)
        except Exception:
            pass
        self.manager.close()
        self.backends.close()


_settings: Settings | None = None
_celery: Celery | None = None
_context: WorkerContext | None = None
_threads_per_process = 1


def configure(settings: Settings, app: Celery, *, concurrency: int) -> None:
    """Called by ``stenod worker`` in the parent before the pool forks."""
    global _settings, _celery, _threads_per_process
    _settings, _celery = settings, app
    _threads_per_process = threads_per_process(settings.model.threads, processes=concurrency)
    worker_process_init.connect(_init_process, weak=False)
    worker_process_shutdown.connect(_shutdown_process, weak=False)


def context() -> WorkerContext:
    """This process's context, built lazily if the pool did not send ``worker_process_init``
    (the ``solo`` pool used when concurrency is 1 under a debugger)."""
    global _context
    if _context is None:
        _init_process()
    assert _context is not None
    return _context


def _init_process(**_: object) -> None:
    global _context
    if _context is not None or _settings is None:
        return
    settings = _settings
    backends = open_backends(settings)
    threads = _threads_per_process

    # One job at a time per process; names were checked by the API, so the manager's client policy
    # does not come into play (the runner acquires by trusted name).
    manager = build_model_manager(settings, CpuPlan(threads=threads, concurrency=1))
    worker_id = worker_identity()
    app = _celery

    def on_final(job_id: str) -> None:
        from stenod.jobs.app import DELIVER_WEBHOOK_TASK

        job = backends.store.get(job_id)
        if app is not None and job is not None and job.webhook_url:
            app.send_task(DELIVER_WEBHOOK_TASK, args=[job_id], queue=settings.jobs.queue_name)

    runner = JobRunner(store=backends.store, blobs=backends.blobs, manager=manager, jobs=settings.jobs,
                       model_settings=settings.model, max_duration_s=settings.audio.max_duration_s,
                       worker_id=worker_id, chunk_s=settings.audio.chunk_s, on_final=on_final)
    started = time.monotonic()
    manager.preload(None)  # once per process, before the first job
    logger.info("worker %s: %s loaded in %.1f s (%d threads)", worker_id, manager.default_name,
                time.monotonic() - started, threads)
    _context = WorkerContext(settings=settings, backends=backends, manager=manager, runner=runner,
                             worker_id=worker_id, started_at=time.time())
    _context.start_reporting()


def _shutdown_process(**_: object) -> None:
    global _context
    if _context is not None:
        _context.close()
        _context = None
