"""Fixtures for the benchmark tests: real HTTP servers in subprocesses on free ports, and small
synthetic result files."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC
from pathlib import Path

import httpx
import pytest

HERE = Path(__file__).resolve().parent
STARTUP_TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready")
        try:
            if httpx.get(url + "/ready", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server at {url} not ready within {timeout_s:g} s")


@pytest.fixture
def dead_url() -> str:
    """A loopback URL with nothing listening (the port was free a moment ago)."""
    return f"http://127.0.0.1:{_free_port()}"


@pytest.fixture
def echo_server() -> Iterator[Callable[..., str]]:
    """Start ``echo_server.py`` with the given options; returns its base URL. Stopped after the test."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(*, delay_s: float = 0.0, fail_every: int = 0, fail_status: int = 500, text: str | None = None) -> str:
        port = _free_port()
        cmd = [sys.executable, str(HERE / "echo_server.py"), "--port", str(port), "--delay-s", str(delay_s),
               "--fail-every", str(fail_every), "--fail-status", str(fail_status)]
        if text is not None:
            cmd += ["--text", text]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, proc)
        return url

    yield start
    for proc in procs:
        proc.terminate()  # uvicorn waits for in-flight requests; a deliberately stuck one is killed
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def stenod_server(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Iterator[str]:
    """``stenod serve --model tiny.en`` on a free port, ready (GET /ready is 200)."""
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env_cmd = [str(Path(sys.executable).parent / "stenod"), "serve", "--model", "tiny.en", "--port", str(port),
               "--threads", "1", "--slots", "2", "--log-format", "console"]
    with log.open("wb") as out:
        proc = subprocess.Popen(env_cmd, stdout=out, stderr=subprocess.STDOUT,
                                env={**_env(), "STENOD_MODEL__CACHE_DIR": str(cache_dir)})
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc, timeout_s=120)
    except RuntimeError as exc:
        proc.kill()
        pytest.fail(f"{exc}\n{log.read_text(errors='replace')[-2000:]}")
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


def _host():  # type: ignore[no-untyped-def]
    from stenod.bench.schema import HostInfo

    return HostInfo(hostname="test", platform="Linux", python="3.11", cpu_model="Test CPU", logical_cores=2,
                    usable_cores=2, memory_total_mb=8192.0, gpu_names=[], stenod_version="0", packages={},
                    load_avg_1m=0.1)


@pytest.fixture
def engine_result() -> Callable[..., object]:
    """Build a synthetic ``EngineBenchResult`` from ``(model, compute_type, threads, rtf, peak_rss_mb, wer)`` rows
    over 100 s of audio."""
    from datetime import datetime

    from stenod.bench.schema import BenchFile, EngineBenchResult, EngineBenchSettings, EngineRun, Spread

    def build(rows: list[tuple[str, str, int, float, float, float | None]], *, cores: int = 2,
              memory_mb: float = 8192.0) -> EngineBenchResult:
        runs = []
        for model, compute, threads, rtf, rss, wer in rows:
            runs.append(EngineRun(
                model=model, engine="faster-whisper", device="cpu", compute_type=compute, threads=threads,
                status="ok", load_s=1.0, decode_s=0.1, audio_s=100.0,
                inference_s=Spread(median=100 * rtf, min=90 * rtf, max=110 * rtf, n=3),
                rtf=Spread(median=rtf, min=0.9 * rtf, max=1.1 * rtf, n=3), speed_x=1 / rtf,
                total_s=1.1 + 100 * rtf, rss_before_load_mb=100.0, rss_after_load_mb=rss - 50, peak_rss_mb=rss,
                wer=wer, wer_files=10 if wer is not None else 0, wall_s=10.0,
            ))
        host = _host().model_copy(update={"usable_cores": cores, "logical_cores": cores, "memory_total_mb": memory_mb})
        return EngineBenchResult(
            created_at=datetime(2026, 1, 1, tzinfo=UTC), command="stenod bench engines", host=host,
            settings=EngineBenchSettings(repeats=3, warmup=1, language="en", beam_size=1, timeout_s=60),
            files=[BenchFile(file="a.flac", audio_s=100.0, reference="x")], runs=runs,
        )

    return build


@pytest.fixture
def server_result() -> Callable[..., object]:
    """Build a synthetic ``ServerBenchResult`` from ``(concurrency, throughput, p95_s, errors)`` rows."""
    from datetime import datetime

    from stenod.bench.schema import LoadLevel, Percentiles, ServerBenchResult, ServerBenchSettings

    def build(rows: list[tuple[int, float, float, int]]) -> ServerBenchResult:
        levels = []
        for c, throughput, p95, errors in rows:
            levels.append(LoadLevel(
                concurrency=c, requests=100, ok=100 - errors, errors=errors,
                status_counts={"200": 100 - errors, **({"429": errors} if errors else {})}, wall_s=10.0,
                audio_s_ok=10 * throughput, throughput_audio_s_per_s=throughput, requests_per_s=10.0,
                latency_s=Percentiles(p50=p95 / 2, p95=p95, p99=p95 * 1.2, mean=p95 / 2, min=0.1, max=p95 * 1.5),
                wer=0.05, stopped_by="requests",
            ))
        return ServerBenchResult(
            created_at=datetime(2026, 1, 1, tzinfo=UTC), command="stenod bench server", host=_host(),
            settings=ServerBenchSettings(url="http://127.0.0.1:8080", api="openai", model=None, language=None,
                                         max_requests=100, max_duration_s=60, request_timeout_s=300),
            files=[], levels=levels,
        )

    return build
