"""Request-id logging and JSON log lines of a real ``stenod serve`` process, as an operator sees them.
(/health and /metrics are tested in-process in test_fields.py.)"""

from __future__ import annotations

import json
import re
import time

import httpx

from tests.api.conftest import ServerProcess
from tests.conftest import JFK


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
