"""The shipped deploy/nginx/nginx.conf, run by the real nginx (Debian package) in front of two real
`stenod serve` processes on loopback. Only the upstream `server` lines and the `listen` port are
rewritten (to loopback ports); every other directive is exactly what users copy.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import ServerProcess, free_port, start_server
from tests.conftest import CORPUS, JFK, JFK_TEXT, corpus_set
from tests.deploy.conftest import DEPLOY, tool_or_skip
from tests.wer_utils import normalize, wer

SHIPPED_CONF = DEPLOY / "nginx" / "nginx.conf"
NGINX_DEFAULT_READ_TIMEOUT_S = 60.0
SLOW_UPSTREAM_DELAY_S = NGINX_DEFAULT_READ_TIMEOUT_S + 5
LONG_AUDIO = CORPUS / "longform-en" / "audio" / "ljspeech_LJ001-0001_0032_concat.flac"  # 237 s
LIMIT_BYTES = 200_000_000 + 64 * 1024  # STENOD_AUDIO__MAX_FILE_MB default + stenod's multipart slack


def render_conf(upstream_ports: list[int], listen_port: int) -> str:
    """The shipped config with loopback upstreams and listen port; fails if either anchor moved."""
    text = SHIPPED_CONF.read_text()
    server_line = re.compile(r"^(\s*)server api:8080 (.*);$", re.MULTILINE)
    match = server_line.search(text)
    assert match, "deploy/nginx/nginx.conf: upstream line `server api:8080 ...;` not found"
    indent, params = match.group(1), match.group(2)
    servers = "\n".join(f"{indent}server 127.0.0.1:{p} {params};" for p in upstream_ports)
    text = server_line.sub(lambda _: servers, text, count=1)
    text, n = re.subn(r"^(\s*)listen 8080;$", rf"\1listen 127.0.0.1:{listen_port};", text, flags=re.MULTILINE)
    assert n == 1, "deploy/nginx/nginx.conf: `listen 8080;` not found"
    return text


@dataclass
class Nginx:
    proc: subprocess.Popen[bytes]
    port: int
    folder: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return (self.folder / "nginx.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_nginx(folder: Path, upstream_ports: list[int]) -> Nginx:
    nginx = tool_or_skip("nginx")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = folder / "nginx.conf"
    conf.write_text(render_conf(upstream_ports, port))
    globals_ = f"daemon off; pid {folder / 'nginx.pid'};"
    check = subprocess.run([nginx, "-t", "-e", "stderr", "-p", str(folder), "-c", str(conf), "-g", globals_],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    with (folder / "nginx.log").open("wb") as log:
        proc = subprocess.Popen([nginx, "-e", "stderr", "-p", str(folder), "-c", str(conf), "-g", globals_],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = Nginx(proc, port, folder)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"nginx exited:\n{server.log()}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return server
        except OSError:
            time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"nginx did not listen:\n{server.log()}")


class _SlowHandler(BaseHTTPRequestHandler):
    """An upstream that reads the request, says nothing for SLOW_UPSTREAM_DELAY_S, then answers."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        time.sleep(SLOW_UPSTREAM_DELAY_S)
        body = json.dumps({"text": "slow but whole"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class SlowCall:
    thread: threading.Thread
    result: dict[str, object]


@pytest.fixture(scope="module", autouse=True)
def slow_call(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlowCall]:
    """Start, at the beginning of the module, one request through the shipped config to an upstream
    that stays silent longer than nginx's default proxy_read_timeout; the other tests run meanwhile
    and the last one checks the answer arrived whole."""
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler)
    upstream.daemon_threads = True
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    nginx = start_nginx(tmp_path_factory.mktemp("nginx-slow"), [upstream.server_address[1]])
    result: dict[str, object] = {}

    def call() -> None:
        started = time.monotonic()
        try:
            r = httpx.post(f"{nginx.url}/v1/audio/transcriptions", files={"file": ("a.wav", b"x" * 1000)},
                           timeout=SLOW_UPSTREAM_DELAY_S + 60)
            result.update(status=r.status_code, body=r.text)
        except httpx.HTTPError as exc:
            result.update(error=repr(exc))
        result["elapsed_s"] = time.monotonic() - started

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    yield SlowCall(thread, result)
    nginx.stop()
    upstream.shutdown()
    thread.join(timeout=5)


REPLICAS = 3


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Iterator[list[ServerProcess]]:
    """Three tiny.en replicas, started in parallel. The tests below take them down one by one:
    replica 2 drains (SIGTERM), replica 1 is killed, then replica 0."""
    folders = [tmp_path_factory.mktemp("replica") for _ in range(REPLICAS)]
    with ThreadPoolExecutor(REPLICAS) as pool:
        futures = [pool.submit(start_server, f, cache_dir, "--model", "tiny.en", "--slots", "1", "--threads", "1",
                               env={"STENOD_SERVER__DRAIN_TIMEOUT_S": "300"})  # the long request must finish
                   for f in folders]
    servers = [f.result() for f in futures if f.exception() is None]
    try:
        assert len(servers) == REPLICAS, [str(f.exception()) for f in futures if f.exception()]
        yield servers
    finally:
        for s in servers:
            s.stop()


@pytest.fixture(scope="module")
def balancer(tmp_path_factory: pytest.TempPathFactory, replicas: list[ServerProcess]) -> Iterator[Nginx]:
    nginx = start_nginx(tmp_path_factory.mktemp("nginx"), [s.port for s in replicas])
    yield nginx
    nginx.stop()


def served_requests(server: ServerProcess) -> float:
    """Transcription requests a replica answered, from its own /metrics (not through nginx)."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("stenod_requests_total{"))


def transcribe(url: str, **headers: str) -> httpx.Response:
    with JFK.open("rb") as f:
        return httpx.post(f"{url}/v1/audio/transcriptions", files={"file": ("jfk.flac", f)},
                          data={"model": "whisper-1"}, headers=headers, timeout=120)


def test_requests_reach_every_replica_and_keep_their_request_id(balancer: Nginx, replicas: list[ServerProcess]) -> None:
    before = [served_requests(s) for s in replicas]
    for i in range(2 * REPLICAS):
        r = transcribe(balancer.url, **{"X-Request-ID": f"deploy-test-{i}"})
        assert r.status_code == 200, r.text
        assert normalize(r.json()["text"]) == normalize(JFK_TEXT)
        assert r.headers["x-request-id"] == f"deploy-test-{i}"
    served = [served_requests(s) - b for s, b in zip(replicas, before, strict=True)]
    assert sum(served) == 2 * REPLICAS
    assert all(n >= 1 for n in served), f"least_conn left a replica idle: {served}"
    # nginx makes an id when the caller sends none, and stenod answers with it.
    assert re.fullmatch(r"[0-9a-f]{32}", transcribe(balancer.url).headers["x-request-id"])


def test_metrics_are_not_exposed_through_the_balancer(balancer: Nginx) -> None:
    assert httpx.get(f"{balancer.url}/metrics", timeout=10).status_code == 404
    assert httpx.get(f"{balancer.url}/ready", timeout=10).status_code == 200


def test_body_over_the_limit_gets_413_in_the_api_error_shape(balancer: Nginx, replicas: list[ServerProcess]) -> None:
    before = [served_requests(s) for s in replicas]
    # A client that declares the size (curl -F, the OpenAI SDK): refused before the body is read.
    with socket.create_connection(("127.0.0.1", balancer.port), timeout=10) as sock:
        sock.sendall(f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Length: {LIMIT_BYTES + 1}\r\n"
                     "Content-Type: multipart/form-data; boundary=b\r\n\r\n".encode())
        head = sock.recv(65536).decode(errors="replace")
    assert head.startswith("HTTP/1.1 413"), head
    assert json.loads(head.split("\r\n\r\n", 1)[1])["error"]["code"] == "file_too_large"

    assert [served_requests(s) for s in replicas] == before, "a refused upload reached a replica"

    # A chunked upload (no declared size) of a valid multipart file part past the limit: refused
    # while it streams through, by nginx or by the replica behind it, never a reset or a 5xx.
    def chunks() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n'
        block = b"\0" * (1 << 20)
        for _ in range(LIMIT_BYTES // len(block) + 2):
            yield block
        yield b"\r\n--b--\r\n"

    try:
        r = httpx.post(f"{balancer.url}/v1/audio/transcriptions", content=chunks(), timeout=120,
                       headers={"Content-Type": "multipart/form-data; boundary=b"})
    except httpx.TransportError as exc:
        pytest.fail(f"connection error instead of a 413: {exc!r}")
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "file_too_large"


def test_a_draining_replica_drops_no_request(balancer: Nginx, replicas: list[ServerProcess]) -> None:
    """An upgrade: SIGTERM to a replica busy with a long request. While it drains, and after it
    exits, every transcription sent through nginx succeeds on the others."""
    draining = replicas[2]
    in_flight: list[int] = []

    def long_request() -> None:  # 237 s of speech: several seconds of work even on a fast machine
        with LONG_AUDIO.open("rb") as f:
            r = httpx.post(f"{draining.url}/v1/audio/transcriptions", files={"file": (LONG_AUDIO.name, f)}, timeout=600)
        in_flight.append(r.status_code)

    busy = threading.Thread(target=long_request)
    busy.start()
    deadline = time.monotonic() + 60
    while "stenod_slots_in_use 1.0" not in httpx.get(f"{draining.url}/metrics", timeout=10).text:
        assert time.monotonic() < deadline, "the long request never started"
        time.sleep(0.1)
    draining.proc.send_signal(signal.SIGTERM)
    responses = [transcribe(balancer.url)]
    still_draining = draining.proc.poll() is None
    responses += [transcribe(balancer.url) for _ in range(3)]
    busy.join(timeout=600)
    assert [r.status_code for r in responses] == [200] * 4, [r.text for r in responses]
    assert all(normalize(r.json()["text"]) == normalize(JFK_TEXT) for r in responses)
    assert in_flight == [200], "the in-flight request was not allowed to finish"
    assert draining.proc.wait(timeout=60) == 0
    assert still_draining, "inconclusive: the replica had exited before the first request through nginx ended"


def test_a_killed_replica_is_routed_around(balancer: Nginx, replicas: list[ServerProcess]) -> None:
    survivor, victim = replicas[0], replicas[1]
    victim.stop(signal.SIGKILL)
    before = served_requests(survivor)
    for _ in range(4):  # POSTs too: a refused connection means nothing was sent, so nginx retries
        r = transcribe(balancer.url)
        assert r.status_code == 200, r.text
        assert normalize(r.json()["text"]) == normalize(JFK_TEXT)
    assert served_requests(survivor) - before == 4

    survivor.stop(signal.SIGKILL)
    r = transcribe(balancer.url)
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "upstream_unavailable"
    assert r.headers["retry-after"] == "5"


def test_a_request_longer_than_nginx_default_timeout_is_not_cut(slow_call: SlowCall) -> None:
    slow_call.thread.join(timeout=SLOW_UPSTREAM_DELAY_S + 90)
    result = slow_call.result
    assert "error" not in result, result
    assert result["status"] == 200, result
    assert json.loads(str(result["body"])) == {"text": "slow but whole"}
    # The upstream really was silent longer than nginx's default 60 s (else this proves nothing).
    assert float(str(result["elapsed_s"])) >= SLOW_UPSTREAM_DELAY_S


@pytest.mark.slow
def test_a_real_transcription_longer_than_60s_is_not_cut(tmp_path: Path, cache_dir: Path) -> None:
    """Through the shipped config, a real stenod request that needs more than nginx's default 60 s:
    237 s of speech on the bundled base model in float32 with beam search 5 on one thread (about
    70 s of CPU time on this machine's cores; several minutes when the machine is busy, hence the
    request deadline raised to just under nginx's 660 s)."""
    (tmp_path / "stenod").mkdir()
    server = start_server(tmp_path / "stenod", cache_dir, "--model", "base", "--slots", "1", "--threads", "1",
                          "--compute-type", "float32",
                          env={"STENOD_MODEL__BEAM_SIZE": "5", "STENOD_SERVER__REQUEST_TIMEOUT_S": "650"})
    nginx = start_nginx(tmp_path / "nginx", [server.port])
    reference = corpus_set("longform-en")[1][LONG_AUDIO.stem]
    try:
        started = time.monotonic()
        with LONG_AUDIO.open("rb") as f:
            r = httpx.post(f"{nginx.url}/v1/audio/transcriptions", files={"file": (LONG_AUDIO.name, f)},
                           data={"language": "en", "response_format": "verbose_json"}, timeout=900)
        elapsed = time.monotonic() - started
    finally:
        nginx.stop()
        server.stop()
    assert r.status_code == 200, r.text
    body = r.json()
    # The whole recording, not a cut-off part.
    assert wer([reference], [body["text"]]) < 0.15
    assert body["duration"] > 230 and body["segments"][-1]["end"] > 200
    assert elapsed > NGINX_DEFAULT_READ_TIMEOUT_S, f"inconclusive: the request took only {elapsed:.0f} s"
