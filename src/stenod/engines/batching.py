"""Short clips from several callers decoded together: one encoder pass and one greedy (or beam)
decode for a batch of clips instead of one per clip (issue 10).

Callers (the server's slot threads) hand their clip to :meth:`WindowBatcher.submit` and block until
its result is ready. ``workers`` runner threads (one per CTranslate2 worker) each take the oldest
waiting clip plus up to ``max_batch - 1`` more with the same decode key (no more than a fair
share over all runners, so that every worker has work), preferring the clips
closest to it in length (a batch is padded to its longest clip, so mixing a 5 s and a 20 s clip
makes the short one pay for 20 s of encoder). A runner that finds fewer clips than ``max_batch``
waits at most ``max_wait_s`` for company before it runs what it has, so a lone request is delayed
by a few milliseconds at most; under load, clips pile up while the runners are busy and batches
fill without waiting. A caller that submits several windows at once (a long file's wave) marks
them as one :class:`~stenod.engines.base.WindowGroup`; they wait until all have arrived, so the
runners split the whole group evenly.

Engine-agnostic: the batch function is the engine's; this module only groups and hands back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from stenod.engines.base import WindowGroup

P = TypeVar("P")
R = TypeVar("R")


GROUP_WAIT_S = 0.25
"""Longest the clips of a group (:class:`~stenod.engines.base.WindowGroup`) wait for the rest of
it, from the first one's arrival. The members are submitted together, apart only by their feature
extraction (milliseconds), so the bound matters only if a caller announces more than it sends."""

MAX_OPEN_GROUPS = 256


@dataclass(slots=True)
class _Waiting(Generic[P, R]):
    key: Hashable
    size: int
    payload: P
    group: WindowGroup | None = None
    future: Future[R] = field(default_factory=Future)


class WindowBatcher(Generic[P, R]):
    """Args:
        run_batch: decodes payloads that share a key, returns one result per payload in order.
        max_batch: most clips in one call.
        max_wait_s: longest a runner waits for company once it has a clip.
        workers: runner threads (batches in flight at once).
    """

    def __init__(
        self,
        run_batch: Callable[[Sequence[P]], list[R]],
        *,
        max_batch: int,
        max_wait_s: float,
        workers: int,
        name: str = "stenod-batch",
    ) -> None:
        if max_batch < 1 or workers < 1:
            raise ValueError("max_batch and workers must be >= 1")
        self._run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._waiting: list[_Waiting[P, R]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._idle = 0
        """Runners waiting for clips (guarded by ``_cond``)."""
        self._arrived: dict[int, tuple[int, float]] = {}
        """Per group still arriving: clips submitted so far, and when to stop waiting for the
        rest (``time.monotonic()``; guarded by ``_cond``)."""
        self.batches = 0
        """Calls of ``run_batch`` so far (for benchmarks and logs)."""
        self.items = 0
        """Clips decoded so far."""
        self._threads = [
            threading.Thread(target=self._runner, name=f"{name}-{i}", daemon=True) for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, key: Hashable, size: int, payload: P, *, group: WindowGroup | None = None) -> R:
        """Decode ``payload`` in a batch of clips with the same ``key``; ``size`` is its length
        (frames), used to group clips of similar length. ``group``: the caller submits this many
        clips together (same key); a runner waits for all of them before it takes its share, so
        they are split evenly over the runners. Blocks until the result is ready and re-raises
        what ``run_batch`` raised."""
        waiting: _Waiting[P, R] = _Waiting(key, size, payload, group)
        with self._cond:
            if self._closed:
                raise RuntimeError("batcher is closed")
            if group is not None:
                arrived, give_up = self._arrived.pop(group.id, (0, time.monotonic() + GROUP_WAIT_S))
                if arrived + 1 < group.size:
                    self._arrived[group.id] = (arrived + 1, give_up)
                    # A group whose rest never comes (a member decoded another way) must not
                    # stay here for ever: only the most recent groups are remembered.
                    while len(self._arrived) > MAX_OPEN_GROUPS:
                        del self._arrived[next(iter(self._arrived))]
            self._waiting.append(waiting)
            self._cond.notify_all()
        return waiting.future.result()

    def _take(self) -> list[_Waiting[P, R]] | None:
        """The next batch (oldest clip first), or ``None`` once closed."""
        with self._cond:
            self._idle += 1
            try:
                return self._take_locked()
            finally:
                self._idle -= 1

    def _take_locked(self) -> list[_Waiting[P, R]] | None:
        while True:
            # The oldest clip that is not part of a group still arriving: a group's clips are
            # left where they are until all have come, so that every idle runner sees the whole
            # group when it takes its share.
            first = next((w for w in self._waiting if self._group_open(w.group) <= 0), None)
            if first is not None or (self._closed and self._waiting):
                break
            if self._closed:
                return None
            opens = [self._group_open(w.group) for w in self._waiting]
            self._cond.wait(min(opens) if opens else None)
        if first is None:
            first = self._waiting[0]
        if first.group is not None:
            return self._take_group(first)
        # Claimed at once: the lock is released while waiting, and another runner must not take
        # the same clip.
        self._waiting.remove(first)
        deadline = time.monotonic() + self.max_wait_s
        while self._count(first.key) < self.max_batch - 1 and not self._closed:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._cond.wait(left)
        candidates = [w for w in self._waiting if w.key == first.key and self._group_open(w.group) <= 0]
        # Independent clips: no more than a fair share over all runners, busy ones included
        # (-(-a // b) is ceil(a / b)). One runner decoding 8 clips while the other sits idle, or
        # frees up a moment later with nothing left to take, leaves a core unused; measured on 2
        # cores, 8 clients of short clips through the server: 17.8x real time against 15.6x when
        # a runner took everything waiting whenever the other was busy (docs/BENCHMARKS.md).
        share = min(self.max_batch, -(-(1 + len(candidates)) // len(self._threads)))
        mates = sorted(candidates, key=lambda w: abs(w.size - first.size))[: share - 1]
        batch = [first, *mates]
        chosen = {id(w) for w in batch}
        self._waiting = [w for w in self._waiting if id(w) not in chosen]
        return batch

    def _take_group(self, first: _Waiting[P, R]) -> list[_Waiting[P, R]]:
        """This runner's share of ``first``'s group, which has all come (nothing more is on its
        way): the group's clips in order of length (then of their place in the group), cut into
        as many runs as runners are free now; this runner takes the first run, the next free
        runner the first of what is left. Neighbours in length share a batch (a batch is padded
        to its longest clip), and the cut does not depend on the order in which the windows'
        threads arrived, so a file is batched, and therefore decoded, the same way every time:
        the race used to change which windows shared a batch, and with it the encoder padding,
        the text (LJ Speech WER 4.81-5.12 % between runs of the same file) and the time."""
        group = first.group
        assert group is not None
        members = sorted(
            (w for w in self._waiting if w.group is not None and w.group.id == group.id and w.key == first.key),
            key=lambda w: (w.size, w.group.member if w.group is not None else 0),
        )
        share = min(self.max_batch, -(-len(members) // max(1, self._idle)))
        batch = members[:share]
        chosen = {id(w) for w in batch}
        self._waiting = [w for w in self._waiting if id(w) not in chosen]
        return batch

    def _group_open(self, group: WindowGroup | None) -> float:
        """Seconds left to wait for the rest of ``group`` (0 once it is complete, its wait is
        over, or there is no group)."""
        if group is None or group.id not in self._arrived:
            return 0.0
        left = self._arrived[group.id][1] - time.monotonic()
        if left <= 0:
            del self._arrived[group.id]  # given up: its clips are decoded with what came
            return 0.0
        return left

    def _count(self, key: Hashable) -> int:
        return sum(1 for w in self._waiting if w.key == key)

    def _runner(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            try:
                results = self._run_batch([w.payload for w in batch])
            except BaseException as exc:  # the callers see the error, the runner keeps serving
                for w in batch:
                    w.future.set_exception(exc)
                continue
            self.batches += 1
            self.items += len(batch)
            for w, result in zip(batch, results, strict=True):
                w.future.set_result(result)

    def close(self) -> None:
        """Stop the runners once the clips already waiting are decoded."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=60)
