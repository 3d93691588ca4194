"""The Celery worker runtime (``stenod worker``): what each prefork child process holds.

Everything stateful is built in the child after the fork (``worker_process_init``): the database
engine (a pooled connection must never cross a fork), the blob store client, and the model, loaded
once per process and reused for every job it runs. Each child reports itself in the ``workers``
table every few seconds, which is how ``/health`` on any API server lists the workers it sees.

Warm shutdown (SIGTERM): Celery's own warm shutdown waits for running tasks to finish, which for
a two-hour recording is far longer than any orchestrator's grace period. So the main process
passes SIGTERM on to its pool processes (``worker_shutting_down``), and each pool process hands
its running job back: the transcription stops at its next window, the job goes back to
``queued`` without counting an attempt, and the task rejects its message with requeue, so
another worker takes it at once (no visibility timeout to wait out). A pool process that gets
SIGTERM directly (systemd and Kubernetes signal every process of the group) does the same. If the
job has not stopped within ``jobs.shutdown_timeout_s`` the process exits anyway, and the job is
run again when its lease runs out (an attempt counted). A SIGKILL loses nothing either: acks late
and reject on worker loss put the message back, and the lease hands the job over.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_process_init, worker_process_shutdown, worker_shutting_down

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
_controller: Any = None
"""The main process's Celery ``WorkController`` (to find the pool processes at shutdown)."""
_term_received = threading.Event()
"""Pool process: SIGTERM arrived; the hand-back thread does the work outside the signal handler."""


def configure(settings: Settings, app: Celery, *, concurrency: int) -> None:
    """Called by ``stenod worker`` in the parent before the pool forks."""
    global _settings, _celery, _threads_per_process
    _settings, _celery = settings, app
    _threads_per_process = threads_per_process(settings.model.threads, processes=concurrency)
    worker_process_init.connect(_init_process, weak=False)
    worker_process_shutdown.connect(_shutdown_process, weak=False)
    worker_init.connect(_remember_controller, weak=False)
    worker_shutting_down.connect(_pass_sigterm_to_pool, weak=False)


def _remember_controller(sender: Any = None, **_: object) -> None:
    global _controller
    _controller = sender


def pool_pids(controller: Any) -> list[int]:
    """Pids of the prefork pool's processes (none for another pool or before it started)."""
    pool = getattr(getattr(controller, "pool", None), "_pool", None)
    return [p.pid for p in getattr(pool, "_pool", None) or () if getattr(p, "pid", None)]


def _pass_sigterm_to_pool(sig: str = "", how: str = "", **_: object) -> None:
    """Main process, inside Celery's signal handler: ask every pool process to hand its job back.
    Only for a warm shutdown; a cold one (SIGQUIT) already terminates the pool processes."""
    if how != "Warm":
        return
    for pid in pool_pids(_controller):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _term_received.set()  # nothing else here: the handler may interrupt any code of this process


def _hand_back_on_sigterm(timeout_s: float) -> None:
    """Pool process: wait for SIGTERM, then stop the running job at its next window."""
    _term_received.wait()
    ctx = _context
    running = ctx.runner.release_all() if ctx is not None else 0
    if running:
        logger.info("worker %s: SIGTERM; handing %d running job(s) back to the queue", worker_identity(), running)
    # Bounded: a job that does not reach a window boundary in time is not waited for.
    if not _wait_idle(ctx, timeout_s):
        logger.warning("worker %s: the running job did not stop within %.0f s; exiting anyway",
                       worker_identity(), timeout_s)
        os.kill(os.getpid(), signal.SIGKILL)


def _wait_idle(ctx: WorkerContext | None, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while ctx is not None and ctx.runner.active and time.monotonic() < deadline:
        time.sleep(0.2)
    return ctx is None or not ctx.runner.active


def context() -> WorkerContext:
    """This process's context, built lazily if the pool did not send ``worker_process_init``
    (the ``solo`` pool used when concurrency is 1 under a debugger)."""
    global _context
    if _context is None:
        _init_process()
    assert _context is not None
    # Here rather than in worker_process_init: billiard resets SIGTERM to its own handler (exit at
    # once) after the pool initializer ran, and a handler can only be set from the main thread,
    # which is the one running tasks.
    if signal.getsignal(signal.SIGTERM) is not _on_sigterm:
        signal.signal(signal.SIGTERM, _on_sigterm)
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
    threading.Thread(target=_hand_back_on_sigterm, args=(settings.jobs.shutdown_timeout_s,),
                     name="warm-shutdown", daemon=True).start()


def _shutdown_process(**_: object) -> None:
    global _context
    if _context is not None:
        _context.close()
        _context = None
