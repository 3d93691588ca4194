"""SIGTERM on a busy server (real process): queued requests get 503 + Retry-After at once, the
running one gets the drain timeout and then a 503 in the API's error shape (never a bare 500),
/health answers 503 while draining, and the process exits 0."""

from __future__ import annotations

import concurrent.futures
import contextlib
import signal
import threading
import time
from pathlib import Path

import httpx

from tests.api.conftest import start_server
from tests.conftest import CORPUS, JFK
from tests.synth import repeated_speech

LONG = CORPUS / "longform-en" / "audio" / "ljspeech_LJ001-0001_0032_concat.flac"


def transcribe(url: str, path: Path, done: list[tuple[str, float]], tag: str) -> httpx.Response:
    with path.open("rb") as f:
        response = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": (path.name, f)},
                              data={"model": "whisper-1"}, timeout=120)
    done.append((tag, time.monotonic()))
    return response


def assert_503(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == "unavailable"
    assert int(response.headers["Retry-After"]) >= 1


def test_sigterm_refuses_queued_at_once_and_answers_running_with_503(tmp_path: Path, cache_dir: Path) -> None:
    srv = start_server(tmp_path, cache_dir, "--model", "tiny.en", "--slots", "1", "--threads", "1",
                       "--queue-size", "4", env={"STENOD_SERVER__DRAIN_TIMEOUT_S": "5"})
    done: list[tuple[str, float]] = []
    health_during_drain: list[int] = []
    try:
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            # Long enough to still be running when the 5 s drain ends, on a fast host too.
            running = pool.submit(transcribe, srv.url, repeated_speech(tmp_path / "long.flac", LONG, 4), done, "running")
            deadline = time.monotonic() + 30
            while httpx.get(f"{srv.url}/health").json()["running"] != 1:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            queued = [pool.submit(transcribe, srv.url, JFK, done, f"queued{i}") for i in range(2)]
            while httpx.get(f"{srv.url}/health").json()["queued"] != 2:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            srv.proc.send_signal(signal.SIGTERM)
            for future in queued:
                assert_503(future.result())
            # The listener stays open during the drain: /health on a new connection says 503, and a
            # new transcription request is refused at once.
            health = httpx.get(f"{srv.url}/health", timeout=10)
            health_during_drain.append(health.status_code)
            assert health.json()["status"] == "draining"
            assert_503(transcribe(srv.url, JFK, done, "late"))
            assert_503(running.result())
        order = [tag for tag, _ in sorted(done, key=lambda item: item[1])]
        assert order.index("running") > max(order.index("queued0"), order.index("queued1"), order.index("late"))
        assert health_during_drain == [503]
        assert srv.proc.wait(timeout=60) == 0
        log = srv.log()
        assert "draining" in log and "Internal Server Error" not in log and " 500 " not in log
    finally:
        srv.stop(signal.SIGKILL)


def test_sigterm_on_an_idle_server_exits_at_once_with_0(tmp_path: Path, cache_dir: Path) -> None:
    srv = start_server(tmp_path, cache_dir, "--model", "tiny.en", "--lazy")
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(timeout=30) == 0


def test_scheduler_drain_refuses_queued_and_times_out_running() -> None:
    import asyncio

    from stenod.errors import ServiceUnavailableError
    from stenod.scheduler.slots import SlotScheduler

    release = threading.Event()

    async def scenario() -> list[str]:
        scheduler = SlotScheduler(slots=1, queue_size=4)
        far = time.monotonic() + 60

        async def submit() -> str:
            try:
                await scheduler.run(lambda: release.wait(30), deadline=far, cancel=threading.Event())
                return "done"
            except ServiceUnavailableError as exc:
                assert exc.retry_after_s and exc.retry_after_s >= 1
                return "503"

        running = asyncio.create_task(submit())
        while scheduler.stats().running != 1:
            await asyncio.sleep(0.01)
        queued = [asyncio.create_task(submit()) for _ in range(2)]
        while scheduler.stats().queued != 2:
            await asyncio.sleep(0.01)
        scheduler.drain(timeout_s=0.5)
        first, _ = await asyncio.wait([running, *queued], return_when=asyncio.FIRST_COMPLETED)
        assert running not in first  # queued ones are refused before the running one times out
        results = [await q for q in queued] + [await running]
        assert scheduler.stats().running == 1  # the slot is held until the work really stops
        release.set()
        while scheduler.stats().running:
            await asyncio.sleep(0.01)
        with contextlib.suppress(ServiceUnavailableError):
            await scheduler.run(lambda: None, deadline=far, cancel=threading.Event())
            raise AssertionError("a drained scheduler accepted work")
        scheduler.close()
        return results

    assert asyncio.run(scenario()) == ["503", "503", "503"]
