"""Cross-request batching of windows on one device.

Every ``transcribe`` call (from any scheduler slot, any thread) submits its 30 s windows here and
waits on futures. One worker thread per device takes whatever is waiting, groups it by decoding
mode (greedy/sampling, or beam search of one width) and runs it as one batch: one encoder pass and
one decoding loop for all of it. While a batch runs, new windows queue up and form the next one, so
batches grow with load by themselves; an idle worker waits at most ``max_wait_s`` for company.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

ARRIVAL_GAP_S = 0.002
"""A burst of submissions (clients answered by the same batch come back together) is over when
no window arrived for this long."""


@dataclass(slots=True)
class _Job:
    kind: str
    """``decode`` or ``detect``."""
    payload: Any
    rows: int
    future: Future[Any] = field(default_factory=Future)
    mode: tuple[str, int] = ("sample", 0)


@dataclass(slots=True)
class BatcherStats:
    batches: int = 0
    windows: int = 0
    busy_s: float = 0.0
    queued: int = 0
    largest_batch: int = 0


class WindowBatcher:
    """Args:
        run_decode: decodes a list of window tasks of one mode, returns one result per task.
        run_detect: language probabilities for a list of mels.
        max_rows: most decoder rows in one batch (a beam-5 window counts 5).
        max_wait_s: how long an idle worker waits for more windows before starting a batch.
        name: thread name suffix (the device).
    """

    def __init__(
        self,
        run_decode: Callable[[list[Any]], list[Any]],
        run_detect: Callable[[list[Any]], list[Any]],
        *,
        max_rows: int,
        max_wait_s: float = 0.010,
        name: str = "cpu",
    ) -> None:
        self._run_decode = run_decode
        self._run_detect = run_detect
        self.max_rows = max(1, max_rows)
        self.max_wait_s = max_wait_s
        self._queue: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.stats = BatcherStats()
        self._thread = threading.Thread(target=self._loop, name=f"stenod-batcher-{name}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------------
    def submit_decode(self, task: Any, *, rows: int, mode: tuple[str, int]) -> Future[Any]:
        return self._submit(_Job("decode", task, rows, mode=mode))

    def submit_detect(self, mel: Any) -> Future[Any]:
        return self._submit(_Job("detect", mel, 1, mode=("detect", 0)))

    def _submit(self, job: _Job) -> Future[Any]:
        with self._cond:
            if self._closed:
                raise RuntimeError("the engine is closed")
            self._queue.append(job)
            self.stats.queued = len(self._queue)
            self._cond.notify()
        return job.future

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=30)
        while self._queue:
            self._queue.popleft().future.set_exception(RuntimeError("the engine was closed"))

    # ------------------------------------------------------------------------------------------
    def _take_batch(self) -> list[_Job]:
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                return []
            # Gather a burst: keep waiting while windows keep arriving (a gap of ARRIVAL_GAP_S ends
            # it), but never longer than max_wait_s in all, so a lone window waits a few ms at most.
            deadline = time.monotonic() + self.max_wait_s
            while sum(j.rows for j in self._queue) < self.max_rows and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                before = len(self._queue)
                self._cond.wait(min(left, ARRIVAL_GAP_S))
                if len(self._queue) == before:
                    break
            mode = self._queue[0].mode
            batch: list[_Job] = []
            rows = 0
            rest: deque[_Job] = deque()
            while self._queue:
                job = self._queue.popleft()
                if job.mode == mode and (not batch or rows + job.rows <= self.max_rows):
                    batch.append(job)
                    rows += job.rows
                else:
                    rest.append(job)
            self._queue = rest
            self.stats.queued = len(self._queue)
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._take_batch()
            if not batch:
                return
            started = time.perf_counter()
            try:
                if batch[0].kind == "detect":
                    results = self._run_detect([j.payload for j in batch])
                else:
                    results = self._run_decode([j.payload for j in batch])
            except BaseException as exc:  # the callers get the error; the worker keeps serving
                logger.exception("batch of %d windows failed", len(batch))
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            for job, result in zip(batch, results, strict=False):
                job.future.set_result(result)
            self.stats.batches += 1
            self.stats.windows += len(batch)
            self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
            self.stats.busy_s += time.perf_counter() - started
