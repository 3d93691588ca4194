"""A global memory budget for transcription work: each request reserves an estimate of the memory
its decoding and inference need before it queues for a slot, and a request that would take the
total past the budget is refused with 429 + Retry-After instead of risking the out-of-memory killer
(issue 16). Streaming decode makes the estimate bounded: at most one chunk per request.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from stenod.audio.decode import SAMPLE_RATE
from stenod.errors import QueueFullError

BASE_REQUEST_BYTES = 32 * 1024 * 1024
"""Working memory of one request besides its audio (encoder activations, upload handling)."""
COPIES_PER_CHUNK = 4
"""A chunk's float32 samples exist about this many times at the peak (decoder blocks, the joined
chunk, the mono mix, the engine's features)."""
RETRY_AFTER_S = 5.0


def request_memory_bytes(duration_s: float | None, *, chunk_s: float) -> int:
    """Estimate for one request: audio longer than a chunk is streamed, so at most one chunk."""
    seconds = chunk_s if duration_s is None else min(duration_s, chunk_s)
    return BASE_REQUEST_BYTES + int(seconds * SAMPLE_RATE * 4 * COPIES_PER_CHUNK)


class MemoryBudget:
    """Thread-safe reservations against ``budget_bytes`` (0 = no budget)."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._reserved = 0
        self._lock = threading.Lock()

    @property
    def reserved_bytes(self) -> int:
        return self._reserved

    @contextmanager
    def reserve(self, nbytes: int) -> Iterator[None]:
        """Hold ``nbytes`` for the block.

        Raises:
            QueueFullError: the reservation does not fit (429 + Retry-After).
        """
        if self.budget_bytes <= 0:
            yield
            return
        with self._lock:
            if self._reserved + nbytes > self.budget_bytes:
                mb = 1024 * 1024
                if nbytes > self.budget_bytes:
                    message = (f"this request needs about {nbytes / mb:.0f} MB and the server's memory budget is "
                               f"{self.budget_bytes / mb:.0f} MB")
                else:
                    message = (f"server memory budget in use ({self._reserved / mb:.0f} of "
                               f"{self.budget_bytes / mb:.0f} MB reserved); retry later")
                raise QueueFullError(message, retry_after_s=RETRY_AFTER_S)
            self._reserved += nbytes
        try:
            yield
        finally:
            with self._lock:
                self._reserved -= nbytes
