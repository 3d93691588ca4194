"""Concurrency, backpressure, deadlines, cancellation, loading and draining.

Assertions are on what the server reports (``/health`` running and queued counts, metrics,
statuses), never on how long something took. The fake engine (tests/api/fakes.py) can hold a
transcription after its first segment, so "still running" is a fact the test controls rather than a
race it hopes to win. Most tests run the app in this process (over ``httpx.ASGITransport``, or under
uvicorn in a thread where real HTTP matters: streaming, hang-ups, 408/503 on the wire); the two at
the end need a real ``stenod serve`` process (a signal, raw sockets).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import httpx
import pytest

from stenod.api import begin_drain, create_app
from tests.api.conftest import start_server
from tests.api.fakes import (
    WAIT_S,
    FakeEngines,
    app_client,
    fake_settings,
    fake_text,
    metric_value,
    segment_text,
    served,
)
from tests.conftest import CORPUS, JFK

MEDIUM = CORPUS / "longform-en" / "audio" / "earnings22_1_4482311_3_62.wav"
JFK_TEXT = fake_text(11.0)  # the fake engine's transcript of the 11 s JFK clip


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    """Poll with a generous deadline: a guard against a hang, not a speed assertion."""
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


async def async_wait_until(predicate: Callable[[], bool], what: str) -> None:
    with anyio.fail_after(WAIT_S):
        while not predicate():
            await anyio.sleep(0.02)


def upload(path: Path = JFK, **data: str) -> dict[str, object]:
    return {"files": {"file": (path.name, path.read_bytes())}, "data": {"model": "whisper-1", **data}}


# -- in-process (ASGI) -----------------------------------------------------------------------------
@pytest.mark.anyio
async def test_requests_beyond_the_slots_wait_in_the_queue(cache_dir: Path, tmp_path: Path) -> None:
    engines = FakeEngines()
    settings = fake_settings(cache_dir, tmp_path, server={"slots": 2, "queue_size": 8})
    async with app_client(settings, engines) as (client, state):
        engines.hold.set()
        tasks = [asyncio.create_task(client.post("/v1/audio/transcriptions", **upload())) for _ in range(3)]
        await anyio.to_thread.run_sync(engines.wait_first_segment, 2)
        await async_wait_until(lambda: state.scheduler.stats().queued == 1, "the third request to queue")
        health = (await client.get("/health")).json()
        assert (health["slots"], health["running"], health["queued"]) == (2, 2, 1)
        assert engines.completed == 0
        engines.release()
        responses = await asyncio.gather(*tasks)
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert {r.json()["text"] for r in responses} == {JFK_TEXT}
    assert engines.completed == 3


@pytest.mark.anyio
async def test_full_queue_returns_429_with_retry_after(cache_dir: Path, tmp_path: Path) -> None:
    engines = FakeEngines()
    settings = fake_settings(cache_dir, tmp_path, server={"slots": 1, "queue_size": 1})
    async with app_client(settings, engines) as (client, state):
        engines.hold.set()
        running = asyncio.create_task(client.post("/v1/audio/transcriptions", **upload()))
        await anyio.to_thread.run_sync(engines.wait_first_segment)
        waiting = asyncio.create_task(client.post("/v1/audio/transcriptions", **upload()))
        await async_wait_until(lambda: state.scheduler.stats().queued == 1, "the second request to queue")
        busy = await client.post("/v1/audio/transcriptions", **upload())
        engines.release()
        assert [(await running).status_code, (await waiting).status_code] == [200, 200]
        metrics = (await client.get("/metrics")).text
    assert busy.status_code == 429
    assert int(busy.headers["Retry-After"]) >= 1
    assert busy.json()["error"]["code"] == "queue_full" and busy.json()["error"]["type"] == "rate_limit_error"
    assert metric_value(metrics, "stenod_requests_total", status="429") == 1


# -- in-process under uvicorn: real HTTP -----------------------------------------------------------
def test_ready_and_health_are_503_while_the_default_model_loads(cache_dir: Path, tmp_path: Path) -> None:
    engines = FakeEngines()
    engines.load_gate.clear()  # the preload blocks inside the engine factory
    app = create_app(fake_settings(cache_dir, tmp_path), engine_factory=engines)
    with served(app) as srv:
        url = srv.url
        ready = httpx.get(f"{url}/ready")
        health = httpx.get(f"{url}/health")
        assert (ready.status_code, ready.json()) == (503, {"status": "loading"})
        assert health.status_code == 503 and health.json()["status"] == "loading"
        engines.load_gate.set()
        wait_until(lambda: httpx.get(f"{url}/ready").status_code == 200, "/ready after the load")
        assert httpx.get(f"{url}/health").json()["status"] == "ok"
        assert engines.loads == ["tiny.en"]


def test_deadline_exceeded_is_408(cache_dir: Path, tmp_path: Path) -> None:
    engines = FakeEngines()
    settings = fake_settings(cache_dir, tmp_path, server={"slots": 1, "queue_size": 4, "request_timeout_s": 0.5})
    app = create_app(settings, engine_factory=engines)
    with served(app) as srv, concurrent.futures.ThreadPoolExecutor(2) as pool:
        url = srv.url
        engines.hold.set()
        first = pool.submit(httpx.post, f"{url}/v1/audio/transcriptions", timeout=WAIT_S, **upload())
        engines.wait_first_segment()
        late = httpx.post(f"{url}/v1/audio/transcriptions", timeout=WAIT_S, **upload())
        engines.release()
        first_status = first.result().status_code
    assert late.status_code == 408, late.text
    assert (late.json()["error"]["code"], late.json()["error"]["type"]) == ("deadline_exceeded", "timeout_error")
    assert first_status == 408  # the running one had the same deadline; the engine was still held


def test_draining_refuses_new_and_queued_work_and_finishes_in_flight(cache_dir: Path, tmp_path: Path) -> None:
    engines = FakeEngines()
    settings = fake_settings(cache_dir, tmp_path, server={"slots": 1, "queue_size": 4, "drain_timeout_s": WAIT_S})
    app = create_app(settings, engine_factory=engines)
    state = app.state.stenod
    with served(app) as srv, concurrent.futures.ThreadPoolExecutor(2) as pool:
        url = srv.url
        engines.hold.set()
        in_flight = pool.submit(httpx.post, f"{url}/v1/audio/transcriptions", timeout=WAIT_S, **upload())
        engines.wait_first_segment()
        queued = pool.submit(httpx.post, f"{url}/v1/audio/transcriptions", timeout=WAIT_S, **upload())
        wait_until(lambda: state.scheduler.stats().queued == 1, "the second request to queue")
        srv.on_loop(lambda: begin_drain(state))  # what SIGTERM does in `stenod serve`
        refused_queued = queued.result()
        refused_new = httpx.post(f"{url}/v1/audio/transcriptions", timeout=WAIT_S, **upload())
        health, ready = httpx.get(f"{url}/health"), httpx.get(f"{url}/ready")
        assert not in_flight.done()  # still held in the engine, inside its drain time
        engines.release()
        finished = in_flight.result()
    for refused in (refused_queued, refused_new):
        assert refused.status_code == 503, refused.text
        assert set(refused.json()["error"]) == {"message", "type", "param", "code"}
        assert int(refused.headers["Retry-After"]) >= 1
    assert (health.status_code, health.json()["status"]) == (503, "draining")
    assert (ready.status_code, ready.json()) == (503, {"status": "draining"})
    assert finished.status_code == 200 and finished.json()["text"] == JFK_TEXT


def test_client_hang_up_frees_its_slot(cache_dir: Path, tmp_path: Path) -> None:
    engines = FakeEngines()
    app = create_app(fake_settings(cache_dir, tmp_path, server={"slots": 1, "queue_size": 4}), engine_factory=engines)
    with served(app) as srv:
        url = srv.url
        engines.hold.set()  # not released while the first request runs: only a cancel can end it
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            caller = pool.submit(lambda: httpx.post(f"{url}/v1/audio/transcriptions", timeout=0.5, **upload()))
            engines.wait_first_segment()
            with pytest.raises(httpx.TimeoutException):
                caller.result()  # the client gives up and closes the connection
        wait_until(lambda: httpx.get(f"{url}/health").json()["running"] == 0, "the abandoned slot to be freed")
        assert engines.completed == 0  # it was cancelled, not finished
        engines.release()
        after = httpx.post(f"{url}/v1/audio/transcriptions", timeout=WAIT_S, **upload())
        metrics = httpx.get(f"{url}/metrics").text
    assert after.status_code == 200
    assert metric_value(metrics, "stenod_requests_total", status="499") == 1


def test_first_streamed_delta_arrives_while_the_transcription_runs(cache_dir: Path, tmp_path: Path) -> None:
    engines = FakeEngines()
    app = create_app(fake_settings(cache_dir, tmp_path), engine_factory=engines)
    with served(app) as srv:
        url = srv.url
        engines.hold.set()
        try:
            _stream_while_held(url, engines)
        finally:
            engines.release()


def _stream_while_held(url: str, engines: FakeEngines) -> None:
    # A short read timeout: the first delta must come while the engine is held (it never
    # finishes on its own), not after.
    with httpx.Client(timeout=httpx.Timeout(WAIT_S, read=10.0)) as client, client.stream(
        "POST", f"{url}/v1/audio/transcriptions", **upload(stream="true")  # type: ignore[arg-type]
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = (json.loads(line[len("data: "):]) for line in response.iter_lines() if line.startswith("data: "))
        first = next(events)
        # The engine is paused after segment 0: the delta is out, the transcription is not done.
        assert first["type"] == "transcript.text.delta" and first["delta"].strip() == segment_text(0, 5.0).strip()
        assert engines.completed == 0
        assert httpx.get(f"{url}/health").json()["running"] == 1
        engines.release()
        rest = list(events)
    assert rest[-1]["type"] == "transcript.text.done"
    deltas = first["delta"] + "".join(e["delta"] for e in rest if e["type"] == "transcript.text.delta")
    assert deltas.strip() == rest[-1]["text"].strip() == JFK_TEXT


# -- a real `stenod serve` process -----------------------------------------------------------------
def test_sigterm_lets_in_flight_requests_finish(tmp_path: Path, cache_dir: Path) -> None:
    # A drain timeout well above the transcription time, so the outcome does not depend on how
    # busy the machine is (past the timeout the answer is a 503, tested in tests/security).
    srv = start_server(tmp_path, cache_dir, "--model", "tiny.en", "--slots", "2",
                       env={"STENOD_SERVER__DRAIN_TIMEOUT_S": "280"})

    def transcribe() -> httpx.Response:
        return httpx.post(f"{srv.url}/v1/audio/transcriptions", timeout=300, **upload(MEDIUM))  # type: ignore[arg-type]

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(transcribe) for _ in range(2)]
        wait_until(lambda: httpx.get(f"{srv.url}/health").json()["running"] == 2, "both requests to run")
        srv.proc.send_signal(signal.SIGTERM)
        responses = [f.result() for f in futures]
    assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses] + [srv.log()[-3000:]]
    assert all("zoom" in r.json()["text"].lower() for r in responses)
    assert srv.proc.wait(timeout=60) == 0
    assert "draining" in srv.log()


def test_oversize_upload_is_refused_before_the_body_is_read(tmp_path: Path, cache_dir: Path) -> None:
    srv = start_server(tmp_path, cache_dir, "--model", "tiny.en", env={"STENOD_AUDIO__MAX_FILE_MB": "1"})
    try:
        # Declare 500 MB, send none of it: the answer must come anyway.
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 500000000\r\n\r\n"
            )
            chunks = []
            while chunk := sock.recv(65536):  # the server closes the connection after answering
                chunks.append(chunk)
            reply = b"".join(chunks).decode()
        assert reply.startswith("HTTP/1.1 413"), reply
        assert '"code":"file_too_large"' in reply.replace(" ", "")

        # Chunked upload with no Content-Length: cut off once it passes the limit.
        sent = 0

        def body():  # type: ignore[no-untyped-def]
            nonlocal sent
            yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n'
            for _ in range(200):  # up to 12.8 MB
                sent += 65536
                yield b"\0" * 65536
            yield b"\r\n--b--\r\n"

        # The server answers 413 as soon as the limit is passed and discards the rest without
        # storing it (lingering close), so the client reads the 413 instead of a connection reset.
        r = httpx.post(f"{srv.url}/v1/audio/transcriptions", content=body(),
                       headers={"Content-Type": "multipart/form-data; boundary=b"}, timeout=30)
        assert r.status_code == 413, r.text
        assert r.json()["error"]["code"] == "file_too_large"
        assert srv.proc.poll() is None
    finally:
        srv.stop()
