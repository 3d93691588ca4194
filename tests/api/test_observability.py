"""Health, readiness, metrics and request-id logging as an operator sees them."""

from __future__ import annotations

import json
import re
import time

import httpx

from tests.api.conftest import ServerProcess
from tests.conftest import JFK


def metric_value(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_health_reports_the_service(server: ServerProcess) -> None:
    r = httpx.get(f"{server.url}/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["default_model"] == "tiny.en"
    assert body["engine"] == "faster-whisper" and body["device"] == "cpu"
    assert body["slots"] == 2 and body["queued"] == 0
    assert body["memory_rss_bytes"] > 50_000_000
    assert body["version"] and body["uptime_s"] >= 0
    assert httpx.get(f"{server.url}/ready").json() == {"status": "ready"}


def test_metrics_change_after_requests(server: ServerProcess) -> None:
    before = httpx.get(f"{server.url}/metrics").text
    ok = httpx.post(f"{server.url}/v1/audio/transcriptions", files={"file": ("jfk.flac", JFK.read_bytes())},
                    data={"model": "whisper-1"}, timeout=60)
    bad = httpx.post(f"{server.url}/v1/audio/transcriptions", files={"file": ("x.wav", b"not audio at all")},
                     data={"model": "whisper-1"}, timeout=60)
    assert (ok.status_code, bad.status_code) == (200, 415)
    after = httpx.get(f"{server.url}/metrics").text
    ok_labels = {"endpoint": "transcriptions", "model": "tiny.en", "language": "en", "status": "200"}
    assert metric_value(after, "stenod_requests_total", **ok_labels) == metric_value(before, "stenod_requests_total", **ok_labels) + 1
    assert metric_value(after, "stenod_errors_total", status="415") == metric_value(before, "stenod_errors_total", status="415") + 1
    assert metric_value(after, "stenod_audio_duration_seconds_count", model="tiny.en") >= 1
    assert metric_value(after, "stenod_audio_seconds_total", model="tiny.en") - metric_value(
        before, "stenod_audio_seconds_total", model="tiny.en") == 11.0
    assert metric_value(after, "stenod_realtime_factor_count", model="tiny.en") >= 1
    assert metric_value(after, "stenod_slots_total") == 2
    assert "stenod_queue_depth" in after and "stenod_slots_in_use" in after
    assert re.search(r'stenod_request_duration_seconds_bucket\{.*le="0.5"', after)


def test_request_id_is_returned_and_logged(server: ServerProcess) -> None:
    rid = "test-req-42abc"
    r = httpx.post(f"{server.url}/v1/audio/transcriptions", files={"file": ("jfk.flac", JFK.read_bytes())},
                   data={"model": "whisper-1"}, headers={"X-Request-ID": rid}, timeout=60)
    assert r.headers["X-Request-ID"] == rid

    def logged() -> list[dict]:
        return [json.loads(line) for line in server.log().splitlines() if rid in line]

    # The access line is written just after the response is sent: poll, don't race it.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any("POST /v1" in line["event"] for line in logged()):
        time.sleep(0.05)
    lines = logged()
    events = " | ".join(line["event"] for line in lines)
    assert all(line["request_id"] == rid for line in lines)
    assert "transcribed" in events and "POST /v1/audio/transcriptions 200" in events
    # A generated id when the client sends none (or an unsafe one).
    r2 = httpx.get(f"{server.url}/health", headers={"X-Request-ID": "bad id\twith tabs"})
    assert re.fullmatch(r"[0-9a-f]{32}", r2.headers["X-Request-ID"])


def test_every_log_line_is_json(server: ServerProcess) -> None:
    for line in server.log().splitlines():
        record = json.loads(line)
        assert {"event", "level", "timestamp"} <= set(record)
