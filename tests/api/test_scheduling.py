"""Concurrency, backpressure, cancellation and graceful shutdown, against real server processes."""

from __future__ import annotations

import concurrent.futures
import signal
import socket
import threading
import time
from pathlib import Path

import httpx

from tests.api.conftest import ServerProcess, start_server
from tests.conftest import CORPUS, JFK

LONG = CORPUS / "longform-en" / "audio" / "ljspeech_LJ001-0001_0032_concat.flac"
MEDIUM = CORPUS / "longform-en" / "audio" / "earnings22_1_4482311_3_62.wav"


def transcribe(url: str, path: Path, timeout: float = 300) -> httpx.Response:
    with path.open("rb") as f:
        return httpx.post(f"{url}/v1/audio/transcriptions", files={"file": (path.name, f)},
                          data={"model": "whisper-1"}, timeout=timeout)


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def test_concurrent_requests_all_succeed_and_beat_sequential(server: ServerProcess) -> None:
    clips = sorted((CORPUS / "librispeech-clean100-a" / "audio").glob("*.flac"))[:8]
    transcribe(server.url, clips[0])  # warm-up
    started = time.perf_counter()
    sequential = [transcribe(server.url, c) for c in clips]
    sequential_s = time.perf_counter() - started
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        concurrent_results = list(pool.map(lambda c: transcribe(server.url, c), clips))
    concurrent_s = time.perf_counter() - started
    assert all(r.status_code == 200 for r in sequential + concurrent_results)
    assert [r.json()["text"] for r in concurrent_results] == [r.json()["text"] for r in sequential]
    # Two slots on two cores: parallel work must finish sooner than one-at-a-time (about 0.55x on
    # an idle 2-core machine; the bound leaves room for a noisy neighbour).
    assert concurrent_s < sequential_s * 0.95, (concurrent_s, sequential_s)


def test_full_queue_returns_429_with_retry_after(tmp_path: Path, cache_dir: Path) -> None:
    srv = start_server(tmp_path, cache_dir, "--model", "tiny.en", "--slots", "1", "--queue-size", "1")
    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(lambda _: transcribe(srv.url, MEDIUM), range(4)))
        statuses = sorted(r.status_code for r in responses)
        assert statuses.count(200) >= 2 and 429 in statuses, statuses
        busy = next(r for r in responses if r.status_code == 429)
        assert int(busy.headers["Retry-After"]) >= 1
        assert busy.json()["error"]["code"] == "queue_full"
        assert busy.json()["error"]["type"] == "rate_limit_error"
    finally:
        srv.stop()


def test_client_disconnect_frees_its_slot(tmp_path: Path, cache_dir: Path) -> None:
    srv = start_server(tmp_path, cache_dir, "--model", "tiny.en", "--slots", "1", "--queue-size", "4")
    try:
        # Occupy the only slot with a 4-minute file, then hang up.
        def long_request() -> None:
            try:
                transcribe(srv.url, LONG, timeout=1.5)
            except httpx.TimeoutException:
                pass

        t = threading.Thread(target=long_request)
        t.start()
        assert wait_until(lambda: httpx.get(f"{srv.url}/health").json()["running"] == 1)
        t.join()
        assert wait_until(lambda: httpx.get(f"{srv.url}/health").json()["running"] == 0, timeout=20)
        started = time.perf_counter()
        assert transcribe(srv.url, JFK).status_code == 200
        # The abandoned file alone takes far longer than this on tiny.en with one thread.
        assert time.perf_counter() - started < 10
        metrics = httpx.get(f"{srv.url}/metrics").text
        assert 'status="499"' in metrics
    finally:
        srv.stop()


def test_sigterm_lets_in_flight_requests_finish(tmp_path: Path, cache_dir: Path) -> None:
    srv = start_server(tmp_path, cache_dir, "--model", "tiny.en", "--slots", "2")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(transcribe, srv.url, MEDIUM) for _ in range(2)]
        assert wait_until(lambda: httpx.get(f"{srv.url}/health").json()["running"] == 2)
        srv.proc.send_signal(signal.SIGTERM)
        responses = [f.result() for f in futures]
    assert [r.status_code for r in responses] == [200, 200]
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


def test_a_deadline_passing_during_transcription_is_408_not_a_disconnect(tmp_path: Path, cache_dir: Path) -> None:
    """Found through nginx: a request still running at its deadline was answered 499 ("client
    closed the connection") because the disconnect watcher also stopped on the deadline's cancel."""
    srv = start_server(tmp_path, cache_dir, "--model", "tiny.en", "--slots", "1", "--threads", "1",
                       env={"STENOD_SERVER__REQUEST_TIMEOUT_S": "2"})
    try:
        r = transcribe(srv.url, LONG)  # 4 minutes of speech: far more than 2 s of work
        assert r.status_code == 408, r.text
        assert r.json()["error"]["code"] == "deadline_exceeded"
        metrics = httpx.get(f"{srv.url}/metrics").text
        assert 'status="408"' in metrics and 'status="499"' not in metrics
    finally:
        srv.stop()
