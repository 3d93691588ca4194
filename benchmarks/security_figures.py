"""The figures of issue 16, measured against a real ``stenod serve`` built from a given source tree,
so the same script measures the code before and after the fix side by side.

    python benchmarks/security_figures.py --src src -o results/after.json
    git worktree add /tmp/stenod-before 44c853c
    python benchmarks/security_figures.py --src /tmp/stenod-before/src -o results/before.json --bombs 1

Each figure is one function; results are one JSON object (``figures``), also printed as a table.
Absolute times on a shared 2-core machine are noisy; the figures here are counts, statuses and
memory, which are not.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import numpy as np

REPO = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("STENOD_TEST_CORPUS", REPO.parent / "shared" / "corpus"))
JFK = CORPUS / "en-misc-short" / "audio" / "jfk.flac"
LONG = CORPUS / "longform-en" / "audio" / "ljspeech_LJ001-0001_0032_concat.flac"
MIB = 1024 * 1024


class Server:
    def __init__(self, src: Path, tmp: Path, *args: str, env: dict[str, str] | None = None) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.log = tmp / f"server-{self.port}.log"
        full_env = {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1", **(env or {})}
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "stenod", "serve", "--port", str(self.port), *args],
                                         stdout=log, stderr=subprocess.STDOUT, env=full_env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(self.log.read_text()[-3000:])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def status(self, field: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


def silence_flac(path: Path, hours: float) -> Path:
    with av.open(str(path), "w", format="flac") as out:
        stream = out.add_stream("flac", rate=16_000, layout="mono")
        stream.codec_context.options = {"compression_level": "5", "frame_size": "32768"}
        block = np.zeros((1, 65536), dtype=np.int16)
        remaining = int(hours * 3600 * 16_000)
        while remaining:
            n = min(remaining, block.shape[1])
            frame = av.AudioFrame.from_ndarray(block[:, :n], format="s16", layout="mono")
            frame.sample_rate = 16_000
            for packet in stream.encode(frame):
                out.mux(packet)
            remaining -= n
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def post(url: str, path: Path, timeout: float = 900, **data: str) -> httpx.Response:
    with path.open("rb") as f:
        return httpx.post(url + "/v1/audio/transcriptions", files={"file": (path.name, f)},
                          data={"model": "whisper-1", **data}, timeout=timeout)


def memory_bomb(src: Path, tmp: Path, cache: Path, bombs: int) -> dict[str, object]:
    bomb = silence_flac(tmp / "silence-3.9h.flac", 3.9)
    srv = Server(src, tmp, "--model", "tiny.en", "--slots", "2", env={"STENOD_MODEL__CACHE_DIR": str(cache)})
    try:
        post(srv.url, JFK)
        before_rss, before_peak = srv.status("VmRSS"), srv.status("VmHWM")
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(bombs) as pool:
            statuses = [r.status_code for r in pool.map(lambda _: post(srv.url, bomb), range(bombs))]
        elapsed = time.perf_counter() - started
        return {"file_mb": round(bomb.stat().st_size / MIB, 3), "requests_at_once": bombs, "statuses": statuses,
                "rss_before_mb": round(before_rss / MIB), "peak_rss_mb": round(srv.status("VmHWM") / MIB),
                "peak_growth_mb": round((srv.status("VmHWM") - before_peak) / MIB),
                "rss_after_mb": round(srv.status("VmRSS") / MIB), "seconds": round(elapsed, 1)}
    finally:
        srv.stop()


def model_names(src: Path, tmp: Path, cache: Path) -> dict[str, object]:
    srv = Server(src, tmp, "--model", "tiny.en", "--lazy", env={"STENOD_MODEL__CACHE_DIR": str(cache)})
    try:
        answers = {}
        for name in ("/etc/passwd", "/root", "/nonexistent/dir", "/proc/self/environ", "/proc/self/mem", "x" * 300):
            r = httpx.post(srv.url + "/v1/audio/transcriptions", files={"file": ("jfk.flac", JFK.read_bytes())},
                           data={"model": name}, timeout=120)
            message = r.json().get("error", {}).get("message", r.text) if r.headers.get("content-type", "").startswith(
                "application/json") else r.text
            answers[name[:40]] = {"status": r.status_code, "message": message.replace(name, "<name>")[:120]}
        size_before = len(httpx.get(srv.url + "/metrics").content)
        for i in range(300):
            httpx.post(srv.url + "/v1/audio/transcriptions", files={"file": ("x.wav", b"RIFF")},
                       data={"model": f"attacker-{i}"}, timeout=60)
        metrics = httpx.get(srv.url + "/metrics").text
        distinct = len({line.split("}")[0] for line in metrics.splitlines() if "attacker-" in line})
        load = httpx.post(srv.url + "/load", data={"model": "base"}, timeout=120)
        return {"answers": answers, "distinct_messages": len({a["message"] for a in answers.values()}),
                "metrics_bytes_before": size_before, "metrics_bytes_after_300_names": len(metrics.encode()),
                "series_with_attacker_names": distinct, "load_without_admin_key": load.status_code}
    finally:
        srv.stop()


def drain(src: Path, tmp: Path, cache: Path) -> dict[str, object]:
    srv = Server(src, tmp, "--model", "tiny.en", "--slots", "2", "--threads", "1", "--queue-size", "8",
                 env={"STENOD_MODEL__CACHE_DIR": str(cache), "STENOD_SERVER__DRAIN_TIMEOUT_S": "5"})
    results: list[tuple[int, str, float]] = []

    def one() -> None:
        try:
            r = post(srv.url, LONG, timeout=300)
            kind = "json" if r.headers.get("content-type", "").startswith("application/json") else "text"
            results.append((r.status_code, kind, time.monotonic()))
        except httpx.TransportError as exc:
            results.append((0, type(exc).__name__, time.monotonic()))

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(one) for _ in range(8)]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and httpx.get(srv.url + "/health").json().get("queued", 0) < 6:
            time.sleep(0.1)
        sent = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        for f in futures:
            f.result()
    code = srv.proc.wait(timeout=120)
    return {"requests": 8, "drain_timeout_s": 5,
            "answers": sorted(f"{s} {k} after {t - sent:.1f}s" for s, k, t in results), "exit_code": code}


def oversize(src: Path, tmp: Path, cache: Path) -> dict[str, object]:
    srv = Server(src, tmp, "--model", "tiny.en", "--lazy",
                 env={"STENOD_MODEL__CACHE_DIR": str(cache), "STENOD_AUDIO__MAX_FILE_MB": "1"})
    body = b"\0" * 8_000_000

    def one(_: int) -> str:
        try:
            return str(httpx.post(srv.url + "/v1/audio/transcriptions", files={"file": ("big.wav", body)},
                                  timeout=60).status_code)
        except httpx.TransportError as exc:
            return type(exc).__name__

    try:
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            outcomes = list(pool.map(one, range(200)))
        return {"uploads": 200, "outcomes": {o: outcomes.count(o) for o in set(outcomes)}}
    finally:
        srv.stop()


OVER_LIMIT_HEAD = b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n'


def _urllib_upload(url: str, size: int, *, chunked: bool) -> str:
    """What the standard library's client reports for an over-limit upload (it does not read an
    answer that arrives while it is still sending, so a reset is all it sees)."""
    import urllib.error
    import urllib.request

    block = b"\0" * 1_000_000
    data: bytes | Iterator[bytes] = (OVER_LIMIT_HEAD + block * (size // len(block))) if not chunked else \
        iter([OVER_LIMIT_HEAD] + [block] * (size // len(block)))
    request = urllib.request.Request(url, data=data, method="POST",  # type: ignore[arg-type]
                                     headers={"Content-Type": "multipart/form-data; boundary=b"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return str(response.status)
    except urllib.error.HTTPError as exc:
        return str(exc.code)
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return type(reason).__name__


def _paced_upload(port: int, size: int, pause_s: float) -> str:
    """A raw client sending its body 1 MB at a time, ``pause_s`` apart, then reading the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        try:
            sock.sendall(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                         b"boundary=b\r\nContent-Length: %d\r\n\r\n" % (len(OVER_LIMIT_HEAD) + size) + OVER_LIMIT_HEAD)
            for _ in range(size // 1_000_000):
                sock.sendall(b"\0" * 1_000_000)
                time.sleep(pause_s)
            reply = sock.recv(64)
        except OSError as exc:
            return type(exc).__name__
    return reply.split(b" ", 2)[1].decode() if reply.startswith(b"HTTP/") else "no answer"


def oversize_plain(src: Path, tmp: Path, cache: Path) -> dict[str, object]:
    """Over-limit uploads (limit 1 MB) by clients that only read once they have sent everything:
    64 urllib uploads of 8-20 MB at once (half chunked), and 8 raw clients pacing 12 MB over 8 s."""
    srv = Server(src, tmp, "--model", "tiny.en", "--lazy",
                 env={"STENOD_MODEL__CACHE_DIR": str(cache), "STENOD_AUDIO__MAX_FILE_MB": "1"})
    url = srv.url + "/v1/audio/transcriptions"
    try:
        with concurrent.futures.ThreadPoolExecutor(64) as pool:
            fast = list(pool.map(lambda i: _urllib_upload(url, (8 + i % 13) * 1_000_000, chunked=i % 2 == 1), range(64)))
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            paced = list(pool.map(lambda _: _paced_upload(srv.port, 12_000_000, 0.7), range(8)))
        return {"urllib_8_20MB": {o: fast.count(o) for o in set(fast)}, "paced_12MB_8s": {o: paced.count(o) for o in set(paced)}}
    finally:
        srv.stop()


def idle_connections(src: Path, tmp: Path, cache: Path, count: int) -> dict[str, object]:
    srv = Server(src, tmp, "--model", "tiny.en", "--lazy", env={"STENOD_MODEL__CACHE_DIR": str(cache)})
    socks = []
    try:
        for _ in range(count):
            try:
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
                s.sendall(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\n")
                socks.append(s)
            except OSError:
                break
        time.sleep(1)
        try:  # another client (127.0.0.2 is loopback too): is the server still serving others?
            with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2")) as other:
                health = other.get(srv.url + "/health", timeout=10).status_code
        except httpx.TransportError as exc:
            health = type(exc).__name__  # type: ignore[assignment]
        time.sleep(12)  # past the default 10 s header timeout
        closed = sum(1 for s in socks if _closed(s))
        log = srv.log.read_text()
        return {"slow_connections_opened": len(socks), "health_for_another_client": health,
                "closed_by_server_after_12s": closed, "logged": "connection limit" in log}
    finally:
        for s in socks:
            s.close()
        srv.stop()


def _closed(sock: socket.socket) -> bool:
    """The server answered (a 408) or closed the connection: either way it let go of it."""
    sock.settimeout(0.2)
    try:
        sock.recv(65536)
        return True
    except (TimeoutError, BlockingIOError):
        return False
    except OSError:
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", type=Path, default=REPO / "src", help="source tree to run (its src/ folder)")
    parser.add_argument("--cache-dir", type=Path, default=Path(os.environ.get("STENOD_TEST_CACHE_DIR", "~/.cache/stenod")).expanduser())
    parser.add_argument("--bombs", type=int, default=2, help="silence bombs sent at once")
    parser.add_argument("--only", default="bomb,names,drain,oversize,oversize_plain,idle", help="comma-separated figures")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    figures: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        steps = {
            "bomb": lambda: memory_bomb(args.src, tmp, args.cache_dir, args.bombs),
            "names": lambda: model_names(args.src, tmp, args.cache_dir),
            "drain": lambda: drain(args.src, tmp, args.cache_dir),
            "oversize": lambda: oversize(args.src, tmp, args.cache_dir),
            "oversize_plain": lambda: oversize_plain(args.src, tmp, args.cache_dir),
            "idle": lambda: idle_connections(args.src, tmp, args.cache_dir, 400),
        }
        for name in args.only.split(","):
            started = time.perf_counter()
            figures[name] = steps[name]()
            print(f"{name} ({time.perf_counter() - started:.0f} s): {json.dumps(figures[name])}", flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"src": str(args.src), "figures": figures}, indent=2) + "\n")


if __name__ == "__main__":
    main()
