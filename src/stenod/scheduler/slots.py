"""Inference slots: at most ``slots`` transcriptions run at once, at most ``queue_size`` wait.

The API awaits :meth:`SlotScheduler.run`; the blocking work runs on a dedicated thread pool sized
to the slots, never on the event loop and never on Starlette's shared pool, so ``/health`` and
``/metrics`` answer while every slot is busy. Waiting is FIFO (asyncio.Semaphore), bounded by the
request's deadline, and cancellable when the client goes away.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from stenod.errors import DeadlineExceededError, QueueFullError, ServiceUnavailableError

T = TypeVar("T")

_EWMA_ALPHA = 0.2


@dataclass(frozen=True, slots=True)
class SchedulerStats:
    slots: int
    running: int
    queued: int
    queue_size: int
    completed: int
    avg_service_s: float
    """Moving average of time spent in a slot."""
    avg_latency_s: float
    """Moving average of queue wait + service time."""


class SlotScheduler:
    def __init__(self, *, slots: int, queue_size: int) -> None:
        if slots < 1:
            raise ValueError("slots must be >= 1")
        self.slots = slots
        self.queue_size = queue_size
        self._sem = asyncio.Semaphore(slots)
        self._executor = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="stenod-infer")
        self._running = 0
        self._queued = 0
        self._completed = 0
        self._avg_service_s = 0.0
        self._avg_latency_s = 0.0
        self._closed = False

    def stats(self) -> SchedulerStats:
        return SchedulerStats(
            slots=self.slots, running=self._running, queued=self._queued, queue_size=self.queue_size,
            completed=self._completed, avg_service_s=self._avg_service_s, avg_latency_s=self._avg_latency_s,
        )

    def retry_after_s(self) -> float:
        """Estimate of when a slot frees up: the queue ahead, served ``slots`` at a time."""
        per_request = self._avg_service_s or 5.0
        return max(1.0, per_request * (self._queued + 1) / self.slots)

    async def run(
        self,
        fn: Callable[[], T],
        *,
        deadline: float,
        cancel: threading.Event,
        on_wait: Callable[[float], None] | None = None,
    ) -> T:
        """Run ``fn`` in a slot.

        Args:
            fn: blocking work; it should check ``cancel`` between steps.
            deadline: ``time.monotonic()`` by which the result is due.
            cancel: set by the caller when the client disconnects; also set here on deadline.
            on_wait: called with the seconds spent waiting for a slot.

        Raises:
            QueueFullError: every slot busy and the wait queue full (429 + Retry-After).
            DeadlineExceededError: the deadline passed while waiting or running.
            ServiceUnavailableError: the scheduler is shutting down.
        """
        if self._closed:
            raise ServiceUnavailableError("server is shutting down")
        if self._sem.locked() and self._queued >= self.queue_size:
            raise QueueFullError(
                f"server busy: {self._running} requests running and {self._queued} queued",
                retry_after_s=self.retry_after_s(),
            )
        started = time.monotonic()
        self._queued += 1
        try:
            await asyncio.wait_for(self._sem.acquire(), timeout=max(0.0, deadline - started))
        except TimeoutError as exc:
            raise DeadlineExceededError("request deadline passed while waiting for a free slot") from exc
        finally:
            self._queued -= 1
        waited = time.monotonic() - started
        if on_wait is not None:
            on_wait(waited)
        self._running += 1
        service_started = time.monotonic()
        try:
            if cancel.is_set():
                raise asyncio.CancelledError()
            # Copy the context so log lines from the slot thread keep the request id.
            ctx = contextvars.copy_context()
            future = asyncio.get_running_loop().run_in_executor(self._executor, ctx.run, fn)
            try:
                return await asyncio.wait_for(asyncio.shield(future), timeout=max(0.0, deadline - service_started))
            except TimeoutError as exc:
                cancel.set()
                # The slot stays held until the work notices the cancel flag and returns.
                await asyncio.gather(future, return_exceptions=True)
                raise DeadlineExceededError("request deadline passed during transcription") from exc
            except asyncio.CancelledError:
                cancel.set()
                await asyncio.gather(future, return_exceptions=True)
                raise
        finally:
            self._running -= 1
            self._sem.release()
            service = time.monotonic() - service_started
            self._completed += 1
            self._avg_service_s = _ewma(self._avg_service_s, service)
            self._avg_latency_s = _ewma(self._avg_latency_s, time.monotonic() - started)

    def close(self) -> None:
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)


def _ewma(previous: float, value: float) -> float:
    return value if previous == 0.0 else (1 - _EWMA_ALPHA) * previous + _EWMA_ALPHA * value
