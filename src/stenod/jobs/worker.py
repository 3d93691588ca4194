"""The Celery worker runtime (``stenod worker``): the model, stores and warm shutdown of a worker.

Two pools (``jobs.worker_pool``, ``stenod worker --pool``):

- ``threads`` (the default): one process runs ``--concurrency`` jobs at once on Celery's thread
  pool, over ONE model copy loaded before the worker consumes (CTranslate2 with ``concurrency``
  workers x ``threads`` threads, as ``stenod serve``'s slots share one model). It spends less
  memory and CPU per job than a process per job (docs/BENCHMARKS.md, "Durable jobs"); a crash of
  the process (the OOM killer, a native fault on hostile audio) loses every job it ran, and each of
  them is delivered again (its attempt counted).
- ``prefork``: ``--concurrency`` processes, each with its own model copy, built in the child after
  the fork (``worker_process_init``): a job that kills its process takes no other job with it.

Everything stateful is built per process (the database engine: a pooled connection must never
cross a fork; the blob store client; the model) and reused for every job it runs. Each process
reports itself in the ``workers`` table every few seconds, which is how ``/health`` on any API
server lists the workers it sees.

Warm shutdown (SIGTERM): Celery's own warm shutdown waits for running tasks to finish, which for
a two-hour recording is far longer than any orchestrator's grace period. So every running job is
handed back: the transcription stops at its next window, the job goes back to ``queued`` without
counting an attempt, and the task rejects its message with requeue, so another worker takes it at
once (no visibility timeout to wait out). Threads pool: the main process does it itself
(``worker_shutting_down``). Prefork: the main process passes SIGTERM on to its pool processes,
and each hands its job back; a pool process that gets SIGTERM directly (systemd and Kubernetes
signal every process of the group) does the same. If the jobs have not stopped within
``jobs.shutdown_timeout_s`` the process exits anyway, and each job is run again when its lease
runs out (an attempt counted). A SIGKILL loses nothing either: acks late and reject on worker
loss put the message back, and the lease hands the job over.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from celery import Celery
from celery.signals import (
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_shutdown,
    worker_shutting_down,
)

from stenod.jobs.runner import JobRunner
from stenod.jobs.runtime import JobBackends, open_backends, worker_identity
from stenod.scheduler.model_manager import ModelManager
from stenod.service import build_model_manager, job_worker_cpu_plan, threads_per_process
from stenod.settings import Settings
from stenod.storage.job_store import WorkerRecord

logger = logging.getLogger(__name__)

WORKER_HEARTBEAT_S = 5.0
POOLS = ("threads", "prefork")


@dataclass
class WorkerContext:
    settings: Settings
    backends: JobBackends
    manager: ModelManager
    runner: JobRunner
    worker_id: str
    started_at: float
    concurrency: int = 1
    """Jobs this process runs at once (its Celery threads; 1 for a prefork child)."""
    running: int = 0
    _stop: threading.Event | None = None
    _count_lock: threading.Lock = field(default_factory=threading.Lock)

    def task_started(self) -> None:
        with self._count_lock:
            self.running += 1

    def task_done(self) -> None:
        with self._count_lock:
            self.running -= 1

    def report(self) -> None:
        self.backends.store.worker_seen(WorkerRecord(
            id=self.worker_id, hostname=self.worker_id.rsplit(":", 1)[0], pid=int(self.worker_id.rsplit(":", 1)[1]),
            concurrency=self.concurrency, model=self.manager.default_name, started_at=self.started_at,
            seen_at=time.time(), running=self.running,
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
_context_lock = threading.Lock()
_pool = "prefork"
_concurrency = 1
_threads_per_job = 1
_controller: Any = None
"""The main process's Celery ``WorkController`` (to find the pool processes at shutdown)."""
_term_received = threading.Event()
"""SIGTERM arrived (prefork: in a pool process; threads: in the worker); the hand-back thread
does the work outside the signal handler."""


def configure(settings: Settings, app: Celery, *, concurrency: int, pool: str = "threads") -> None:
    """Called by ``stenod worker`` in the main process before Celery starts. Threads pool: loads
    the model here, once, for every job of the process. Prefork: each pool process loads its own
    after the fork.

    Raises:
        ValueError: an unknown pool.
    """
    global _settings, _celery, _pool, _concurrency, _threads_per_job
    if pool not in POOLS:
        raise ValueError(f"unknown worker pool {pool!r}; use one of {', '.join(POOLS)}")
    _settings, _celery, _pool, _concurrency = settings, app, pool, concurrency
    # Threads per job: the same split of the cores either way (``model.threads``, or cores / jobs).
    _threads_per_job = threads_per_process(settings.model.threads, processes=concurrency)
    worker_init.connect(_remember_controller, weak=False)
    worker_shutting_down.connect(_on_shutting_down, weak=False)
    if pool == "prefork":
        worker_process_init.connect(_init_process, weak=False)
        worker_process_shutdown.connect(_shutdown_process, weak=False)
    else:
        worker_shutdown.connect(_shutdown_process, weak=False)
        _init_process()


def _remember_controller(sender: Any = None, **_: object) -> None:
    global _controller
    _controller = sender


def pool_pids(controller: Any) -> list[int]:
    """Pids of the prefork pool's processes (none for another pool or before it started)."""
    pool = getattr(getattr(controller, "pool", None), "_pool", None)
    return [p.pid for p in getattr(pool, "_pool", None) or () if getattr(p, "pid", None)]


def _on_shutting_down(sig: str = "", how: str = "", **_: object) -> None:
    """Main process, inside Celery's signal handler: hand every running job back (threads pool:
    this process's own; prefork: each pool process's, by passing SIGTERM on). Only for a warm
    shutdown; a cold one (SIGQUIT) stops at once (the jobs are delivered again later)."""
    if how != "Warm":
        return
    if _pool == "threads":
        _term_received.set()
        return
    for pid in pool_pids(_controller):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _term_received.set()  # nothing else here: the handler may interrupt any code of this process


def _hand_back_on_sigterm(timeout_s: float) -> None:
    """Wait for SIGTERM, then stop every running job at its next window."""
    _term_received.wait()
    ctx = _context
    running = ctx.runner.release_all() if ctx is not None else 0
    if running:
        logger.info("worker %s: SIGTERM; handing %d running job(s) back to the queue", worker_identity(), running)
    # Bounded: a job that does not reach a window boundary in time is not waited for.
    if not _wait_idle(ctx, timeout_s):
        logger.warning("worker %s: the running job(s) did not stop within %.0f s; exiting anyway",
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
    if _context is None:
        _init_process()
    assert _context is not None
    # Prefork: here rather than in worker_process_init: billiard resets SIGTERM to its own handler
    # (exit at once) after the pool initializer ran, and a handler can only be set from the main
    # thread, which is the one running tasks. (Threads pool: Celery's own handler stays; see
    # ``_on_shutting_down``.)
    if (_pool == "prefork" and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is not _on_sigterm):
        signal.signal(signal.SIGTERM, _on_sigterm)
    return _context


def _init_process(**_: object) -> None:
    global _context
    with _context_lock:
        if _context is not None or _settings is None:
            return
        _context = _build_context(_settings)
    _context.start_reporting()
    threading.Thread(target=_hand_back_on_sigterm, args=(_settings.jobs.shutdown_timeout_s,),
                     name="warm-shutdown", daemon=True).start()


def _build_context(settings: Settings) -> WorkerContext:
    backends = open_backends(settings)
    threads = _threads_per_job
    jobs_at_once = _concurrency if _pool == "threads" else 1

    # One model copy for the jobs this process runs at once (CTranslate2 workers); names were
    # checked by the API, so the manager's client policy does not come into play (the runner
    # acquires by trusted name).
    manager = build_model_manager(settings, job_worker_cpu_plan(settings, threads=threads, jobs_at_once=jobs_at_once))
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
    logger.info("worker %s: %s loaded in %.1f s (%d job(s) at once x %d threads, %s pool)", worker_id,
                manager.default_name, time.monotonic() - started, jobs_at_once, threads, _pool)
    return WorkerContext(settings=settings, backends=backends, manager=manager, runner=runner,
                         worker_id=worker_id, started_at=time.time(), concurrency=jobs_at_once)


def _shutdown_process(**_: object) -> None:
    global _context
    with _context_lock:
        ctx, _context = _context, None
    if ctx is not None:
        ctx.close()
