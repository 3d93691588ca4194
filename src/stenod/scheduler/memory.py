"""A global memory budget for transcription work (issue 16): each request reserves an estimate of
the memory its decoding and inference need before it queues for a slot. A request that does not fit
now waits, first come first served, until enough is given back; only one that can never fit (it
needs more than the whole budget), one that finds ``max_waiting`` requests already waiting, or one
still waiting after ``wait_s`` (or its deadline) is refused with 429 + Retry-After. Streaming decode
makes the estimate bounded: at most one chunk per request.

Waiting holds no inference slot (the reservation comes before the slot queue), and the order is
strict FIFO: a large request at the head is not overtaken by small ones that would fit, so it
cannot be starved. Reservations may be taken and given back from several event loops (in-process
tests run one app on several), so the state is under a thread lock and waiters are woken on their
own loop.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from stenod.audio.decode import SAMPLE_RATE
from stenod.errors import QueueFullError, ServiceUnavailableError

BASE_REQUEST_BYTES = 32 * 1024 * 1024
"""Working memory of one request besides its audio (encoder activations, upload handling)."""
COPIES_PER_CHUNK = 4
"""A chunk's float32 samples exist about this many times at the peak (decoder blocks, the joined
chunk, the mono mix, the engine's features)."""
RETRY_AFTER_S = 5.0
MIB = 1024 * 1024


def request_memory_bytes(duration_s: float | None, *, chunk_s: float) -> int:
    """Estimate for one request: audio longer than a chunk is streamed, so at most one chunk."""
    seconds = chunk_s if duration_s is None else min(duration_s, chunk_s)
    return BASE_REQUEST_BYTES + int(seconds * SAMPLE_RATE * 4 * COPIES_PER_CHUNK)


@dataclass(eq=False)
class _Waiter:
    nbytes: int
    future: asyncio.Future[None]
    granted: bool = False


class MemoryBudget:
    """FIFO reservations against ``budget_bytes`` (0 = no budget).

    Args:
        max_waiting: requests that may wait at once; one more is refused at once.
        wait_s: longest wait for memory before a 429.
        retry_after_s: Retry-After sent with the 429s.
    """

    def __init__(self, budget_bytes: int, *, max_waiting: int = 32, wait_s: float = 60.0,
                 retry_after_s: float = RETRY_AFTER_S) -> None:
        self.budget_bytes = budget_bytes
        self.max_waiting = max_waiting
        self.wait_s = wait_s
        self.retry_after_s = retry_after_s
        self._reserved = 0
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._draining = False
        self._lock = threading.Lock()

    @property
    def reserved_bytes(self) -> int:
        return self._reserved

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @asynccontextmanager
    async def reserve(self, nbytes: int, *, deadline: float | None = None) -> AsyncIterator[None]:
        """Hold ``nbytes`` for the block, waiting (FIFO) for it if need be.

        Args:
            deadline: ``time.monotonic()`` past which the request stops waiting (its own deadline).

        Raises:
            QueueFullError: it can never fit, too many already wait, or the wait ran out (429).
            ServiceUnavailableError: the server started draining (503).
        """
        if self.budget_bytes <= 0:
            yield
            return
        await self._acquire(nbytes, deadline)
        try:
            yield
        finally:
            self._release(nbytes)

    async def _acquire(self, nbytes: int, deadline: float | None) -> None:
        if nbytes > self.budget_bytes:
            raise QueueFullError(
                f"this request needs about {nbytes / MIB:.0f} MB and the server's whole memory budget is "
                f"{self.budget_bytes / MIB:.0f} MB; send shorter audio or ask the operator to raise "
                "[server] memory_budget_mb", retry_after_s=self.retry_after_s)
        with self._lock:
            if self._draining:
                raise self._draining_error()
            if not self._waiters and self._reserved + nbytes <= self.budget_bytes:
                self._reserved += nbytes
                return
            if len(self._waiters) >= self.max_waiting:
                raise QueueFullError(
                    f"server memory budget in use ({self._reserved / MIB:.0f} of {self.budget_bytes / MIB:.0f} MB "
                    f"reserved, {len(self._waiters)} requests waiting); retry later",
                    retry_after_s=self.retry_after_s)
            waiter = _Waiter(nbytes, asyncio.get_running_loop().create_future())
            self._waiters.append(waiter)
        started = time.monotonic()
        limit = started + self.wait_s if deadline is None else min(started + self.wait_s, deadline)
        try:
            await asyncio.wait_for(waiter.future, timeout=max(0.0, limit - started))
        except TimeoutError:
            if self._abandon(waiter):
                return  # admitted just as the wait ran out: keep it
            if self._draining:
                raise self._draining_error() from None
            raise QueueFullError(
                f"waited {time.monotonic() - started:.0f} s for the server's memory budget "
                f"({self.budget_bytes / MIB:.0f} MB) without getting about {nbytes / MIB:.0f} MB; retry later",
                retry_after_s=self.retry_after_s) from None
        except asyncio.CancelledError:  # the client went away
            if self._abandon(waiter):
                self._release(nbytes)
            raise
        # Woken: admitted (reservation already counted), or drained (the future holds the 503).

    def _abandon(self, waiter: _Waiter) -> bool:
        """Stop waiting; True if the reservation was granted meanwhile (the caller then owns it)."""
        with self._lock:
            if waiter.granted:
                return True
            if waiter in self._waiters:
                self._waiters.remove(waiter)
                self._grant_locked()  # a smaller request behind this one may fit now
        return False

    def _release(self, nbytes: int) -> None:
        with self._lock:
            self._reserved -= nbytes
            self._grant_locked()

    def _grant_locked(self) -> None:
        """Admit waiters from the head while they fit; stop at the first that does not (FIFO)."""
        while self._waiters and self._reserved + self._waiters[0].nbytes <= self.budget_bytes:
            waiter = self._waiters.popleft()
            waiter.granted = True
            self._reserved += waiter.nbytes
            waiter.future.get_loop().call_soon_threadsafe(_resolve, waiter.future, None)

    def drain(self) -> None:
        """Refuse new reservations and wake every waiter with a 503 (call on SIGTERM)."""
        with self._lock:
            self._draining = True
            waiters = list(self._waiters)
            self._waiters.clear()
        for waiter in waiters:
            waiter.future.get_loop().call_soon_threadsafe(_resolve, waiter.future, self._draining_error())

    def _draining_error(self) -> ServiceUnavailableError:
        return ServiceUnavailableError("server is shutting down; this request was still waiting for memory, retry",
                                       retry_after_s=self.retry_after_s)


def _resolve(future: asyncio.Future[None], error: Exception | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
