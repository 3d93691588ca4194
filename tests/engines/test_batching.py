"""WindowBatcher: clips that wait together are decoded together, grouped by decode options and
length; a lone clip runs on its own; errors reach every caller of the failed batch."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

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
