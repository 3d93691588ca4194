"""WindowBatcher: clips that wait together are decoded together, grouped by decode options and
length; a lone clip runs on its own; errors reach every caller of the failed batch."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from stenod.engines import batching
from stenod.engines.base import WindowGroup
from stenod.engines.batching import WindowBatcher, _Waiting


class _Recorder:
    """A batch function that records its batches; it blocks until released, so that clips pile
    up behind the first batch deterministically."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.release = threading.Event()
        self.started = threading.Event()

    def __call__(self, payloads: Sequence[str]) -> list[str]:
        self.started.set()
        self.release.wait(timeout=30)
        self.batches.append(list(payloads))
        return [p.upper() for p in payloads]


def _wait_for_waiting(batcher: WindowBatcher[str, str], count: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with batcher._cond:  # the test waits until the clips are queued
            if len(batcher._waiting) >= count:
                return
        time.sleep(0.001)
    raise AssertionError("clips never queued")


def test_a_lone_clip_runs_alone_and_gets_its_own_result() -> None:
    recorder = _Recorder()
    recorder.release.set()
    batcher = WindowBatcher(recorder, max_batch=8, max_wait_s=0.0, workers=1)
    try:
        assert batcher.submit("en", 500, "hello") == "HELLO"
        assert recorder.batches == [["hello"]]
    finally:
        batcher.close()


def test_clips_waiting_together_share_a_batch_by_key_and_nearest_length() -> None:
    recorder = _Recorder()
    batcher = WindowBatcher(recorder, max_batch=3, max_wait_s=0.0, workers=1)
    clips = [("en", 100, "a"), ("en", 1000, "b"), ("de", 900, "c"), ("en", 950, "d"), ("en", 120, "e"), ("en", 140, "f")]
    try:
        with ThreadPoolExecutor(len(clips) + 1) as pool:
            first = pool.submit(batcher.submit, "en", 900, "first")
            assert recorder.started.wait(timeout=30)  # the runner holds "first" alone
            futures = []
            for key, size, payload in clips:
                futures.append(pool.submit(batcher.submit, key, size, payload))
                _wait_for_waiting(batcher, len(futures))
            recorder.release.set()
            assert first.result(timeout=30) == "FIRST"
            assert [f.result(timeout=30) for f in futures] == ["A", "B", "C", "D", "E", "F"]
    finally:
        batcher.close()
    # Oldest first, mates of its key closest in length, never two keys in one batch.
    assert recorder.batches == [["first"], ["a", "e", "f"], ["b", "d"], ["c"]]


def test_an_error_reaches_every_caller_of_the_batch_and_the_runner_survives() -> None:
    calls: list[int] = []

    def flaky(payloads: Sequence[str]) -> list[str]:
        calls.append(len(payloads))
        if len(calls) == 1:
            raise RuntimeError("decoder broke")
        return list(payloads)

    batcher = WindowBatcher(flaky, max_batch=4, max_wait_s=0.0, workers=1)
    try:
        with pytest.raises(RuntimeError, match="decoder broke"):
            batcher.submit("en", 1, "x")
        assert batcher.submit("en", 1, "y") == "y"
    finally:
        batcher.close()


def test_closed_batcher_refuses_new_clips() -> None:
    batcher: WindowBatcher[str, str] = WindowBatcher(list, max_batch=2, max_wait_s=0.0, workers=2)
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit("en", 1, "x")


def test_idle_runners_share_the_waiting_clips() -> None:
    """Eight clips and two idle runners: no batch of eight while the other runner sits idle."""
    sizes: list[int] = []

    def run(payloads: Sequence[str]) -> list[str]:
        sizes.append(len(payloads))
        return list(payloads)

    batcher = WindowBatcher(run, max_batch=8, max_wait_s=0.05, workers=2)
    try:
        deadline = time.monotonic() + 60
        with batcher._cond:  # both runners idle, then eight clips arrive at once
            while batcher._idle < 2 and time.monotonic() < deadline:
                batcher._cond.wait(0.01)
            waiting = [_Waiting("en", 100, str(i)) for i in range(8)]
            batcher._waiting.extend(waiting)
            batcher._cond.notify_all()
        assert sorted(w.future.result(timeout=30) for w in waiting) == [str(i) for i in range(8)]
    finally:
        batcher.close()
    # The first runner takes its half; the rest go to whichever runner is free next.
    assert max(sizes) == 4 and sum(sizes) == 8


def test_a_group_is_split_evenly_over_the_runners_even_when_its_clips_arrive_apart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Six windows of one file, announced as a group, reach the batcher 100 ms apart (far longer
    # than max_wait_s): the runners wait for the whole group and take three each. Without the
    # group the first window runs alone and the rest in whatever order they came.
    monkeypatch.setattr(batching, "GROUP_WAIT_S", 60.0)  # the split is under test, not the bound

    def run(group: WindowGroup | None) -> list[list[str]]:
        batches: list[list[str]] = []
        started = threading.Condition()

        def decode(payloads: Sequence[str]) -> list[str]:
            # A decode holds its runner until a second batch has started, so the runner that
            # took the first batch cannot come back for the rest of the group.
            with started:
                batches.append(list(payloads))
                started.notify_all()
                started.wait_for(lambda: len(batches) >= 2, timeout=10)
            return [p.upper() for p in payloads]

        batcher = WindowBatcher(decode, max_batch=8, max_wait_s=0.0, workers=2)
        try:
            with ThreadPoolExecutor(6) as pool:
                futures = []
                for i in range(6):
                    futures.append(pool.submit(batcher.submit, "en", 2000, f"w{i}", group=group))
                    time.sleep(0.1)
                assert [f.result(timeout=30) for f in futures] == [f"W{i}" for i in range(6)]
        finally:
            batcher.close()
        return batches

    assert sorted(len(b) for b in run(WindowGroup(id=1, size=6))) == [3, 3]
    assert ["w0"] in run(None)


def test_a_group_whose_rest_never_comes_is_decoded_after_a_bounded_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batching, "GROUP_WAIT_S", 0.2)
    monkeypatch.setattr(batching, "MAX_OPEN_GROUPS", 4)
    recorder = _Recorder()
    recorder.release.set()
    batcher = WindowBatcher(recorder, max_batch=8, max_wait_s=0.0, workers=1)
    try:
        started = time.monotonic()
        # Announced as three, only two come (a member decoded another way): both are decoded.
        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(batcher.submit, "en", 900, p, group=WindowGroup(id=7, size=3)) for p in ("a", "b")]
            assert [f.result(timeout=30) for f in futures] == ["A", "B"]
        assert time.monotonic() - started < 10
        # Groups left incomplete are not remembered for ever.
        for gid in range(100, 120):
            assert batcher.submit("en", 900, "x", group=WindowGroup(id=gid, size=2)) == "X"
        assert len(batcher._arrived) <= 4
    finally:
        batcher.close()


def test_a_free_runner_leaves_a_share_of_independent_clips_for_the_busy_one() -> None:
    # One runner is busy; five clips of other requests arrive at once. The free runner takes its
    # fair share over both runners (3), not all five: the busy one frees up a moment later and
    # would otherwise find nothing to do (8 clients through the server: 17.8x against 15.6x).
    sizes: list[int] = []
    gate, busy = threading.Event(), threading.Event()

    def run(payloads: Sequence[str]) -> list[str]:
        if list(payloads) == ["busy"]:
            busy.set()
            gate.wait(timeout=30)
        sizes.append(len(payloads))
        return list(payloads)

    batcher = WindowBatcher(run, max_batch=8, max_wait_s=0.0, workers=2)
    try:
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(batcher.submit, "en", 100, "busy")
            assert busy.wait(timeout=30)
            with batcher._cond:
                waiting = [_Waiting("en", 100, str(i)) for i in range(5)]
                batcher._waiting.extend(waiting)
                batcher._cond.notify_all()
            assert [w.future.result(timeout=30) for w in waiting] == [str(i) for i in range(5)]
            gate.set()
            assert held.result(timeout=30) == "busy"
    finally:
        gate.set()
        batcher.close()
    assert sizes[0] == 3


@pytest.mark.parametrize("arrival", [(0, 1, 2, 3, 4), (4, 3, 2, 1, 0), (2, 4, 0, 3, 1)])
def test_a_group_is_batched_the_same_way_whatever_order_its_windows_arrive_in(
    monkeypatch: pytest.MonkeyPatch, arrival: tuple[int, ...]
) -> None:
    # Five windows of a wave reach the engine from five threads in any order. Which windows share
    # a batch decides their encoder padding and so their text: it must follow the windows'
    # lengths (and places in the group), never the race between the threads.
    monkeypatch.setattr(batching, "GROUP_WAIT_S", 60.0)
    sizes = {"w0": 2300, "w1": 1200, "w2": 2400, "w3": 1500, "w4": 2350}
    batches: list[list[str]] = []
    both_started = threading.Barrier(2, timeout=10)

    def decode(payloads: Sequence[str]) -> list[str]:
        batches.append(sorted(payloads))
        both_started.wait()  # two runners, two batches at once: neither comes back for more
        return [p.upper() for p in payloads]

    batcher = WindowBatcher(decode, max_batch=8, max_wait_s=0.0, workers=2)
    try:
        deadline = time.monotonic() + 30
        with batcher._cond:  # both runners waiting for clips, so the group is split in two
            while batcher._idle < 2 and time.monotonic() < deadline:
                batcher._cond.wait(0.01)  # runners entering their wait do not notify
        with ThreadPoolExecutor(5) as pool:
            futures = {}
            for i in arrival:
                name = f"w{i}"
                futures[name] = pool.submit(
                    batcher.submit, "en", sizes[name], name, group=WindowGroup(id=11, size=5, member=i)
                )
                time.sleep(0.02)
            assert {name: f.result(timeout=30) for name, f in futures.items()} == {n: n.upper() for n in sizes}
    finally:
        batcher.close()
    # The three shortest together, the two longest together.
    assert sorted(batches) == [["w0", "w1", "w3"], ["w2", "w4"]]
