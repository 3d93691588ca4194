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
from typing import Any, TypeVar

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
        # Plain flags and per-wait futures rather than asyncio.Event: an Event binds to the first
        # loop that waits on it, and in-process tests run one app on several loops.
        self._draining = False
        self._drain_expired = False
        self._drain_waiters: set[asyncio.Future[None]] = set()
        self._expiry_waiters: set[asyncio.Future[None]] = set()
        self.drain_retry_after_s = 5.0
        """Retry-After sent with draining 503s: long enough for a load balancer to notice."""

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
            ServiceUnavailableError: the server is draining: refused at once when waiting, or
                when the drain deadline passes while running (503 + Retry-After).
        """
        if self._closed or self._draining:
            raise self._draining_error("server is shutting down; retry on another instance")
        if self._sem.locked() and self._queued >= self.queue_size:
            raise QueueFullError(
                f"server busy: {self._running} requests running and {self._queued} queued",
                retry_after_s=self.retry_after_s(),
            )
        started = time.monotonic()
        await self._acquire_slot(deadline, started)
        waited = time.monotonic() - started
        if on_wait is not None:
            on_wait(waited)
        self._running += 1
        service_started = time.monotonic()
        future: asyncio.Future[T] | None = None
        try:
            if cancel.is_set():
                raise asyncio.CancelledError()
            # Copy the context so log lines from the slot thread keep the request id.
            ctx = contextvars.copy_context()
            future = asyncio.get_running_loop().run_in_executor(self._executor, ctx.run, fn)
            drained = self._waiter(self._expiry_waiters, already=self._drain_expired)
            try:
                pending: set[asyncio.Future[Any]] = {future, drained}
                done, _ = await asyncio.wait(
                    pending, timeout=max(0.0, deadline - service_started),
                    return_when=asyncio.FIRST_COMPLETED,
                )
            except asyncio.CancelledError:
                cancel.set()
                await asyncio.gather(future, return_exceptions=True)
                raise
            finally:
                self._expiry_waiters.discard(drained)
                drained.cancel()
            if future in done:
                return future.result()
            cancel.set()
            if drained in done:
                # Answer now; the slot is freed when the work notices the cancel flag.
                raise self._draining_error("server shut down before this transcription finished; retry")
            # The slot stays held until the work notices the cancel flag and returns.
            await asyncio.gather(future, return_exceptions=True)
            raise DeadlineExceededError("request deadline passed during transcription")
        finally:
            if future is not None and not future.done():
                future.add_done_callback(lambda _: self._finish(service_started, started))
            else:
                self._finish(service_started, started)

    async def _acquire_slot(self, deadline: float, started: float) -> None:
        """Wait FIFO for a slot, until the deadline or the start of a drain."""
        self._queued += 1
        acquire = asyncio.ensure_future(self._sem.acquire())
        draining = self._waiter(self._drain_waiters, already=self._draining)
        waiting: set[asyncio.Future[Any]] = {acquire, draining}
        try:
            done, _ = await asyncio.wait(
                waiting, timeout=max(0.0, deadline - started), return_when=asyncio.FIRST_COMPLETED,
            )
        except asyncio.CancelledError:
            self._give_back(acquire)
            raise
        finally:
            self._queued -= 1
            self._drain_waiters.discard(draining)
            draining.cancel()
        if acquire in done and not self._draining:
            return
        self._give_back(acquire)
        if self._draining:
            raise self._draining_error("server is shutting down; this request was still queued, retry")
        raise DeadlineExceededError("request deadline passed while waiting for a free slot")

    def _give_back(self, acquire: asyncio.Future[Any]) -> None:
        if acquire.done() and not acquire.cancelled():
            self._sem.release()
        else:
            acquire.cancel()

    def _finish(self, service_started: float, started: float) -> None:
        self._running -= 1
        self._sem.release()
        service = time.monotonic() - service_started
        self._completed += 1
        self._avg_service_s = _ewma(self._avg_service_s, service)
        self._avg_latency_s = _ewma(self._avg_latency_s, time.monotonic() - started)

    def _draining_error(self, message: str) -> ServiceUnavailableError:
        return ServiceUnavailableError(message, retry_after_s=self.drain_retry_after_s)

    def drain(self, *, timeout_s: float) -> None:
        """Start draining (call on the event loop): queued requests get 503 at once, new ones
        too, and running ones get ``timeout_s`` to finish before they are answered 503."""
        if self._draining:
            return
        self._draining = True
        _wake(self._drain_waiters)
        asyncio.get_running_loop().call_later(max(0.0, timeout_s), self._expire_drain)

    def _expire_drain(self) -> None:
        self._drain_expired = True
        _wake(self._expiry_waiters)

    @staticmethod
    def _waiter(waiters: set[asyncio.Future[None]], *, already: bool) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if already:
            future.set_result(None)
        else:
            waiters.add(future)
        return future

    @property
    def draining(self) -> bool:
        return self._draining

    def close(self) -> None:
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)


def _wake(waiters: set[asyncio.Future[None]]) -> None:
    for future in list(waiters):
        future.get_loop().call_soon_threadsafe(_resolve, future)
    waiters.clear()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _ewma(previous: float, value: float) -> float:
    return value if previous == 0.0 else (1 - _EWMA_ALPHA) * previous + _EWMA_ALPHA * value
