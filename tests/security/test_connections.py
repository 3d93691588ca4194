"""Connection-level defences of ``stenod serve``: header and body timeouts, caps on connections in
total and per client address (under serve's uvicorn configuration in this process), and 413s that
reach the client instead of a reset (against a real server process)."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import re
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from stenod.api import create_app
from stenod.cli.serve import uvicorn_config
from stenod.settings import Settings
from tests.api.conftest import ServerProcess, start_server

LIMITS = {"header_timeout_s": 1, "body_idle_timeout_s": 1, "max_connections": 5, "max_connections_per_client": 3}
WAIT_S = 60.0


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@dataclass
class LimitedServer:
    """The app under ``stenod serve``'s own uvicorn configuration (``cli.serve.uvicorn_config``:
    the same protocol, timeouts, caps and lingering close), in a thread of this process: no
    process start, no model load. The real process is exercised by the 413 test below."""

    port: int
    records: _Records

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return "\n".join(self.records.lines)


@contextmanager
def limited_server(cache_dir: Path, data_dir: Path, **limits: float) -> Iterator[LimitedServer]:
    settings = Settings(model={"name": "tiny.en", "cache_dir": cache_dir, "offline": True},
                        server={"port": 0, "preload": False, "slots": 1, **limits},
                        jobs={"enabled": False, "data_dir": data_dir})
    server = uvicorn.Server(uvicorn_config(create_app(settings), settings))
    records = _Records()
    logger = logging.getLogger("stenod.api.connections")
    logger.addHandler(records)
    thread = threading.Thread(target=server.run, name="uvicorn-limited", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + WAIT_S
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        yield LimitedServer(server.servers[0].sockets[0].getsockname()[1], records)
    finally:
        server.should_exit = True
        thread.join(WAIT_S)
        logger.removeHandler(records)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Iterator[LimitedServer]:
    with limited_server(cache_dir, tmp_path_factory.mktemp("limits"), **LIMITS) as srv:
        yield srv


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Iterator[LimitedServer]:
    """The caps of ``limited`` with long timeouts, so held connections stay open however slowly
    the machine runs."""
    with limited_server(cache_dir, tmp_path_factory.mktemp("caps"),
                        **{**LIMITS, "header_timeout_s": 60, "body_idle_timeout_s": 60}) as srv:
        yield srv


def refusal(srv: LimitedServer | ServerProcess, source: str, timeout_s: float = 30.0) -> str:
    """The reply to a new connection from ``source`` once the server has counted the connections
    already open. They are accepted asynchronously: a probe that slips in before them is just
    another silent connection, so it is closed and the probe tried again."""
    deadline = time.monotonic() + timeout_s
    while True:
        with connect(srv, source) as probe:
            probe.settimeout(2.0)
            try:
                return read_reply(probe)
            except TimeoutError:
                pass
        assert time.monotonic() < deadline, f"no connection cap applied to {source}"


def connect(srv: LimitedServer | ServerProcess, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=15, source_address=(source, 0))
    return sock


def read_reply(sock: socket.socket) -> str:
    """Everything the server sends until it closes the connection (the 15 s socket timeout is
    only a guard against a hang)."""
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            raise AssertionError("connection reset by the server instead of an answer") from None
        if not chunk:
            return b"".join(chunks).decode(errors="replace")
        chunks.append(chunk)


def error_code(reply: str) -> str:
    return json.loads(reply.split("\r\n\r\n", 1)[1])["error"]["code"]


def wait_for_log(srv: LimitedServer | ServerProcess, needle: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while needle not in srv.log():
        assert time.monotonic() < deadline, f"{needle!r} not logged:\n{srv.log()[-2000:]}"
        time.sleep(0.1)


def test_silent_connection_gets_408_and_is_closed(limited: LimitedServer) -> None:
    with connect(limited) as sock:
        reply = read_reply(sock)
    assert reply.startswith("HTTP/1.1 408"), reply
    assert error_code(reply) == "header_timeout"
    wait_for_log(limited, "connection limit header_timeout")


def test_slowloris_headers_are_cut_off(limited: LimitedServer) -> None:
    with connect(limited) as sock:
        sock.sendall(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\n")
        try:
            for _ in range(100):  # one header byte every 0.1 s would take 10 s; stop once answered
                sock.sendall(b"X")
                if select.select([sock], [], [], 0.1)[0]:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = read_reply(sock)
    assert reply.startswith("HTTP/1.1 408"), reply


def test_stalled_body_gets_408(limited: LimitedServer) -> None:
    with connect(limited) as sock:
        sock.sendall(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\n")
        reply = read_reply(sock)
    assert reply.startswith("HTTP/1.1 408"), reply
    assert error_code(reply) == "body_timeout"
    wait_for_log(limited, "connection limit body_timeout")


def test_connection_caps_per_client_and_in_total(capped: LimitedServer) -> None:
    # 127.0.0.0/8 is all loopback on Linux: 127.0.0.2 and .3 are other client addresses.
    limited = capped
    held = [connect(limited) for _ in range(3)]
    try:
        reply = refusal(limited, "127.0.0.1")
        assert reply.startswith("HTTP/1.1 503"), reply
        assert error_code(reply) == "max_connections_per_client"
        assert "retry-after: 1" in reply.lower()
        held += [connect(limited, "127.0.0.2") for _ in range(2)]
        reply = refusal(limited, "127.0.0.3")
        assert reply.startswith("HTTP/1.1 503"), reply
        assert error_code(reply) == "max_connections"
    finally:
        for sock in held:
            sock.close()
    wait_for_log(limited, "connection limit max_connections_per_client")
    wait_for_log(limited, "connection limit max_connections:")
    # Freed slots are usable again, and the refusals are counted by reason only.
    deadline = time.monotonic() + 10
    while True:
        try:
            metrics = httpx.get(f"{limited.url}/metrics", timeout=10)
            if metrics.status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline
        time.sleep(0.2)
    refused = dict(re.findall(r'stenod_connections_refused_total\{reason="(\w+)"\} (\d+)', metrics.text))
    assert int(float(refused["max_connections_per_client"])) >= 1 and int(float(refused["max_connections"])) >= 1


OVER_LIMIT_HEAD = b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n'


def send_over_limit(port: int, size: int, *, chunked: bool, pause_s: float = 0.0) -> str:
    """Upload ``size`` bytes as a plain client does (the whole body, then read the answer) and
    return the answer; a reset or broken pipe while sending or reading is the failure of issue 16
    (stdlib clients such as urllib raise it instead of returning the 413)."""
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % (len(OVER_LIMIT_HEAD) + size)
    block = b"\x00" * 1_000_000

    def frame(data: bytes) -> bytes:
        return b"%x\r\n%s\r\n" % (len(data), data) if chunked else data

    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        try:
            sock.sendall(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Type: multipart/form-data; boundary=b\r\n" + framing + b"\r\n\r\n")
            sock.sendall(frame(OVER_LIMIT_HEAD))
            for _ in range(size // len(block)):
                sock.sendall(frame(block))
                if pause_s:
                    time.sleep(pause_s)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        except OSError as exc:
            return f"{type(exc).__name__} while sending"
        try:
            return read_reply(sock)
        except AssertionError as exc:
            return str(exc)


def test_concurrent_uploads_over_the_limit_all_read_their_413(tmp_path: Path, cache_dir: Path) -> None:
    """Bodies far over the limit (1 MB): 8-20 MB sent at full speed, with Content-Length and chunked,
    and four clients pacing theirs over ~8 s (past uvicorn's 5 s keep-alive timer, which used to end
    the lingering close early). Bodies of a few MB fit in the kernel's socket buffers and never
    showed the reset; these do: before the lingering close every client here was reset."""
    srv = start_server(tmp_path, cache_dir, "--model", "tiny.en", "--lazy", env={"STENOD_AUDIO__MAX_FILE_MB": "1"})
    jobs = [(8_000_000 + (i * 1_000_000) % 13_000_000, i % 2 == 1, 0.0) for i in range(24)]
    jobs += [(12_000_000, i % 2 == 1, 0.7) for i in range(4)]
    try:
        with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
            replies = list(pool.map(lambda job: send_over_limit(srv.port, job[0], chunked=job[1], pause_s=job[2]), jobs))
        failures = [(job, reply[:80]) for job, reply in zip(jobs, replies, strict=True)
                    if not reply.startswith("HTTP/1.1 413")]
        assert not failures, f"{len(failures)} of {len(jobs)} clients did not read their 413: {failures[:4]}"
        assert {error_code(reply) for reply in replies} == {"file_too_large"}
        assert all("content-type: application/json" in reply.lower() for reply in replies)
    finally:
        srv.stop()
