"""In-process mode (no broker): ``stenod serve`` runs jobs itself.

The store is the queue: workers take the oldest queued job (or one whose worker died: its lease
ran out) with the same atomic claim Celery workers use, so a restart of ``stenod serve`` resumes
every queued job from SQLite, and a job that was running when the server was killed runs again
once its lease expires. Each job takes one of the server's inference slots (the scheduler is
shared with synchronous requests), so jobs and requests never oversubscribe the engine.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import anyio.to_thread

from stenod.errors import QueueFullError, ServiceUnavailableError
from stenod.jobs.runner import JobRunner, LeaseKeeper
from stenod.scheduler.slots import SlotScheduler

logger = logging.getLogger(__name__)

IDLE_POLL_S = 1.0
"""How often an idle worker looks at the store (a publish wakes it at once)."""
NO_DEADLINE_S = 10 * 365 * 24 * 3600.0
BUSY_BACKOFF_S = 1.0
MAX_ERROR_BACKOFF_S = 30.0


class InProcessQueue:
    """``publish`` only wakes the workers: the job row already is the queue entry."""

    mode = "in-process"

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    def bind(self, loop: asyncio.AbstractEventLoop, wake: asyncio.Event) -> None:
        self._loop, self._wake = loop, wake

    def publish(self, job_id: str) -> None:
        if self._loop is not None and self._wake is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    def depth(self) -> int | None:
        return None  # the store's queued count is the depth; /health reports it from there


class InProcessWorkers:
    """``count`` asyncio tasks, each running one job at a time in a scheduler slot."""

    def __init__(self, *, runner: JobRunner, scheduler: SlotScheduler, queue: InProcessQueue, count: int) -> None:
        self.runner = runner
        self.scheduler = scheduler
        self.queue = queue
        self.count = count
        self._tasks: list[asyncio.Task[None]] = []
        self._keepers: set[LeaseKeeper] = set()
        self._stopping = False
        self._wake = asyncio.Event()

    @property
    def running(self) -> int:
        return len(self._keepers)

    def start(self) -> None:
        self.queue.bind(asyncio.get_running_loop(), self._wake)
        self._tasks = [asyncio.create_task(self._loop(i), name=f"job-worker-{i}") for i in range(self.count)]

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Hand running jobs back to the queue (they stop at the next window) and stop."""
        self._stopping = True
        self._wake.set()
        for keeper in list(self._keepers):
            keeper.release()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=timeout_s)
            for task in pending:
                task.cancel()

    async def _loop(self, index: int) -> None:
        failures = 0
        while not self._stopping:
            try:
                ran = await self._run_next()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A store outage (the job was handed back, or its lease runs out): back off, doubling.
                failures += 1
                delay = min(MAX_ERROR_BACKOFF_S, BUSY_BACKOFF_S * 2 ** (failures - 1))
                logger.warning("job worker %d: %s: %s; retrying in %.0f s", index, type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                continue
            failures = 0
            if not ran and not self._stopping:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=IDLE_POLL_S)
                except TimeoutError:
                    pass

    async def _run_next(self) -> bool:
        job_id = await anyio.to_thread.run_sync(self.runner.store.next_runnable)
        if job_id is None:
            return False
        claim = await anyio.to_thread.run_sync(self.runner.claim, job_id)
        if claim.outcome != "claimed":
            return claim.outcome in ("raced", "poisoned", "cancelled", "final")
        keeper = self.runner.keeper(claim)
        self._keepers.add(keeper)
        try:
            with keeper:
                await self._in_slot(lambda: self.runner.execute(claim, keeper), keeper)
        finally:
            self._keepers.discard(keeper)
        return True

    async def _in_slot(self, work: Callable[[], object], keeper: LeaseKeeper) -> None:
        never = threading.Event()  # the scheduler's own cancel flag; job cancellation goes through the keeper
        while True:
            try:
                await self.scheduler.run(work, deadline=time.monotonic() + NO_DEADLINE_S, cancel=never)
                return
            except QueueFullError:
                if self._stopping:
                    keeper.release()
                    await anyio.to_thread.run_sync(self._release_unstarted, keeper)
                    return
                await asyncio.sleep(BUSY_BACKOFF_S)
            except ServiceUnavailableError:  # scheduler closed: shutting down
                await anyio.to_thread.run_sync(self._release_unstarted, keeper)
                return

    def _release_unstarted(self, keeper: LeaseKeeper) -> None:
        self.runner.store.release(keeper.job_id, keeper.token)


class ThreadNotifier:
    """Runs webhook deliveries with their backoff on a small thread pool (in-process mode)."""

    def __init__(self, deliver_once: Callable[[str], float | None], *, threads: int = 4) -> None:
        self._deliver_once = deliver_once
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="webhook")
        self._stop = threading.Event()

    def __call__(self, job_id: str) -> None:
        if not self._stop.is_set():
            self._pool.submit(self._deliver, job_id)

    def _deliver(self, job_id: str) -> None:
        while not self._stop.is_set():
            try:
                delay = self._deliver_once(job_id)
            except Exception:
                logger.exception("job %s: webhook delivery error", job_id)
                return
            if delay is None or self._stop.wait(delay):
                return

    def close(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
