"""``stenod bench server`` and the load client, against real HTTP servers in subprocesses."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from stenod.bench.load import LoadItem, LoadOptions, run_level
from stenod.bench.schema import ServerBenchResult, load_result_or_raise

REPO = Path(__file__).resolve().parents[2]
JFK = REPO.parent / "shared" / "corpus" / "en-misc-short" / "audio" / "jfk.flac"
JFK_REFERENCE = "And so, my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
STENOD = str(Path(sys.executable).parent / "stenod")


def _items() -> list[LoadItem]:
    return [LoadItem("jfk.flac", JFK.read_bytes(), 11.0, JFK_REFERENCE, None),
            LoadItem("other.flac", JFK.read_bytes(), 11.0, None, None)]


def _bench_server(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([STENOD, "bench", "server", *args], capture_output=True, text=True, timeout=timeout)


def _seen(url: str) -> int:
    return int(httpx.get(url + "/requests").json()["count"])


def test_dead_endpoint_is_a_one_line_error_and_exit_1(dead_url: str, tmp_path: Path) -> None:
    proc = _bench_server("--url", dead_url, "--concurrency", "1,4", "--file", str(JFK), "-o", str(tmp_path))
    assert proc.returncode == 1
    assert f"error: cannot reach {dead_url}: connection refused; is the server running?" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len(proc.stderr.strip().splitlines()) <= 2  # the "load test of ..." line and the error
    assert not (tmp_path / "result.json").exists()


def test_dead_endpoint_stops_a_level_early_with_connect_errors(dead_url: str) -> None:
    options = LoadOptions(url=dead_url, max_requests=1000, max_duration_s=30)
    level, records = asyncio.run(run_level(options, _items(), 2))
    assert level.ok == 0 and level.stopped_by == "error"
    assert set(level.status_counts) == {"connect_error"}
    assert level.requests < 20  # gave up after a streak, did not send 1000
    assert level.latency_s is None and level.throughput_audio_s_per_s == 0
    assert records[0].detail


def test_load_stops_at_the_request_bound(echo_server: Callable[..., str]) -> None:
    url = echo_server(delay_s=0.05)
    options = LoadOptions(url=url, max_requests=7, max_duration_s=60)
    level, _ = asyncio.run(run_level(options, _items(), 3))
    assert level.requests == 7 and level.ok == 7 and level.stopped_by == "requests"
    assert _seen(url) == 7  # the server saw exactly the bound, no extra request
    assert level.audio_s_ok == pytest.approx(77.0)
    assert level.throughput_audio_s_per_s == pytest.approx(level.audio_s_ok / level.wall_s)


def test_load_stops_at_the_time_bound(echo_server: Callable[..., str]) -> None:
    url = echo_server(delay_s=0.3)
    options = LoadOptions(url=url, max_requests=10_000, max_duration_s=1.0)
    level, records = asyncio.run(run_level(options, _items(), 2))
    assert level.stopped_by == "duration"
    # Each of the 2 clients has one request in flight at a time and each takes >= 0.3 s, so at most
    # 4 start within the 1 s bound per client; at least the first of each does.
    assert 2 <= level.requests <= 8 and _seen(url) == level.requests
    # No request starts after the bound (start = finish - latency, on the load client's own clock).
    level_start = max(r.finished_at for r in records) - level.wall_s
    assert all(r.finished_at - r.latency_s - level_start <= options.max_duration_s + 1e-6 for r in records)
    assert level.latency_s is not None and level.latency_s.p50 >= 0.3


def test_a_request_that_never_answers_is_cut_at_the_request_timeout(echo_server: Callable[..., str]) -> None:
    url = echo_server(delay_s=30)
    options = LoadOptions(url=url, max_requests=100, max_duration_s=0.2, request_timeout_s=0.5)
    level, records = asyncio.run(run_level(options, _items(), 2))
    assert level.status_counts == {"timeout": 2} and level.ok == 0
    assert all(r.detail == "no response within 0.5 s" for r in records)


def test_errors_are_counted_by_status_and_wer_is_scored(echo_server: Callable[..., str]) -> None:
    url = echo_server(fail_every=3, fail_status=429)
    options = LoadOptions(url=url, max_requests=9, max_duration_s=60)
    level, _ = asyncio.run(run_level(options, _items(), 1))
    assert level.status_counts == {"200": 6, "429": 3}
    assert level.ok == 6 and level.errors == 3
    assert level.audio_s_ok == pytest.approx(66.0)  # failed requests transcribed nothing
    assert level.wer == 0.0  # the echo text is JFK's, scored only on files with a reference


def test_cli_writes_json_markdown_and_plot(echo_server: Callable[..., str], tmp_path: Path) -> None:
    url = echo_server(delay_s=0.02, fail_every=5, fail_status=500)
    proc = _bench_server("--url", url, "--api", "whispercpp", "--concurrency", "1,2", "--file", str(JFK),
                         "--requests", "10", "--duration", "20", "--api-key", "sk-secret-123", "-o", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    result = load_result_or_raise((tmp_path / "result.json").read_text())
    assert isinstance(result, ServerBenchResult)
    assert [lv.concurrency for lv in result.levels] == [1, 2]
    for lv in result.levels:
        assert lv.requests == 10 and lv.status_counts == {"200": 8, "500": 2}
        assert lv.latency_s is not None and lv.latency_s.p50 <= lv.latency_s.p95 <= lv.latency_s.p99
    assert result.settings.api == "whispercpp"
    assert "| 1 | 10 | 8 | 500: 2 |" in proc.stdout
    assert (tmp_path / "load_vs_concurrency.png").read_bytes()[:4] == b"\x89PNG"
    raw = (tmp_path / "result.json").read_text()
    assert json.loads(raw)["kind"] == "server"
    assert "sk-secret-123" not in raw  # the key is sent, never recorded
    assert result.command.startswith("stenod bench server --url http://127.0.0.1:")


def test_all_requests_failing_is_an_error(echo_server: Callable[..., str], tmp_path: Path) -> None:
    url = echo_server(fail_every=1, fail_status=503)
    proc = _bench_server("--url", url, "--concurrency", "1", "--file", str(JFK), "--requests", "3", "-o", str(tmp_path))
    assert proc.returncode == 1
    assert "no request to" in proc.stderr and "503 x3" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_remote_url_needs_confirmation(tmp_path: Path) -> None:
    proc = _bench_server("--url", "http://192.0.2.1:8080", "--file", str(JFK), "-o", str(tmp_path), timeout=30)
    assert proc.returncode == 2
    assert "--allow-remote" in proc.stderr


@pytest.mark.parametrize("api", ["openai", "whispercpp"])
def test_load_against_stenod_serve(stenod_server: str, api: str, tmp_path: Path) -> None:
    proc = _bench_server("--url", stenod_server, "--api", api, "--concurrency", "1,2", "--file", str(JFK),
                         "--requests", "2", "--duration", "60", "-o", str(tmp_path), "--no-plots", timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = load_result_or_raise((tmp_path / "result.json").read_text())
    assert isinstance(result, ServerBenchResult)
    for lv in result.levels:
        assert lv.ok == lv.requests == 2
        assert lv.wer is not None and lv.wer < 0.1
        assert lv.throughput_audio_s_per_s > 0
