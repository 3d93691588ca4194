"""SlotScheduler: bounded concurrency, bounded queue, deadlines, cancellation."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from stenod.errors import DeadlineExceededError, QueueFullError, ServiceUnavailableError
from stenod.scheduler.slots import SlotScheduler


def blocking(seconds: float, cancel: threading.Event | None = None) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cancel is not None and cancel.is_set():
            return "cancelled"
        time.sleep(0.01)
    return "done"


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_runs_at_most_slots_at_once() -> None:
    async def main() -> int:
        sched = SlotScheduler(slots=2, queue_size=10)
        active = 0
        peak = 0
        lock = threading.Lock()

        def work() -> None:
            nonlocal active, peak
            with lock:
                active += 1
                peak = max(peak, active)
            time.sleep(0.1)
            with lock:
                active -= 1

        far = time.monotonic() + 30
        await asyncio.gather(*(sched.run(work, deadline=far, cancel=threading.Event()) for _ in range(6)))
        sched.close()
        return peak

    assert run(main()) == 2


def test_full_queue_raises_with_retry_after() -> None:
    async def main() -> None:
        sched = SlotScheduler(slots=1, queue_size=1)
        far = time.monotonic() + 30
        first = asyncio.create_task(sched.run(lambda: blocking(0.3), deadline=far, cancel=threading.Event()))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(sched.run(lambda: blocking(0.1), deadline=far, cancel=threading.Event()))
        await asyncio.sleep(0.05)
        with pytest.raises(QueueFullError) as info:
            await sched.run(lambda: "x", deadline=far, cancel=threading.Event())
        assert info.value.retry_after_s >= 1
        assert info.value.status_code == 429
        assert await first == "done" and await second == "done"
        sched.close()

    run(main())


def test_deadline_while_waiting_for_a_slot() -> None:
    async def main() -> None:
        sched = SlotScheduler(slots=1, queue_size=5)
        far = time.monotonic() + 30
        busy = asyncio.create_task(sched.run(lambda: blocking(0.5), deadline=far, cancel=threading.Event()))
        await asyncio.sleep(0.05)
        with pytest.raises(DeadlineExceededError):
            await sched.run(lambda: "late", deadline=time.monotonic() + 0.1, cancel=threading.Event())
        assert sched.stats().queued == 0
        await busy
        sched.close()

    run(main())


def test_deadline_while_running_sets_cancel() -> None:
    async def main() -> None:
        sched = SlotScheduler(slots=1, queue_size=1)
        cancel = threading.Event()
        with pytest.raises(DeadlineExceededError):
            await sched.run(lambda: blocking(5, cancel), deadline=time.monotonic() + 0.2, cancel=cancel)
        assert cancel.is_set()
        assert sched.stats().running == 0  # the slot is free again
        sched.close()

    run(main())


def test_cancelling_the_caller_frees_the_slot() -> None:
    async def main() -> None:
        sched = SlotScheduler(slots=1, queue_size=1)
        cancel = threading.Event()
        task = asyncio.create_task(sched.run(lambda: blocking(5, cancel), deadline=time.monotonic() + 30, cancel=cancel))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert cancel.is_set()
        assert await sched.run(lambda: "next", deadline=time.monotonic() + 5, cancel=threading.Event()) == "next"
        sched.close()

    run(main())


def test_closed_scheduler_refuses_work() -> None:
    async def main() -> None:
        sched = SlotScheduler(slots=1, queue_size=1)
        sched.close()
        with pytest.raises(ServiceUnavailableError):
            await sched.run(lambda: "x", deadline=time.monotonic() + 1, cancel=threading.Event())

    run(main())
