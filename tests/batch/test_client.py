"""--server mode: what is retried, how long it waits, what a response becomes."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from stenod.batch.client import (
    ServerClient,
    ServerOptions,
    normalize_base_url,
    parse_retry_after,
    retry_delay_s,
)
from stenod.formats import render, transcript_from_verbose_json
from tests.conftest import JFK

VERBOSE = {
    "task": "transcribe", "language": "english", "duration": 11.0, "text": "And so my fellow Americans.",
    "segments": [{"id": 0, "seek": 0, "start": 0.0, "end": 3.5, "text": " And so my fellow", "tokens": [1, 2],
                  "temperature": 0.0, "avg_logprob": -0.2, "compression_ratio": 1.1, "no_speech_prob": 0.01},
                 {"id": 1, "seek": 0, "start": 3.5, "end": 11.0, "text": " Americans.", "tokens": [3],
                  "temperature": 0.0, "avg_logprob": -0.3, "compression_ratio": 1.0, "no_speech_prob": 0.02}],
}


def _client(handler, **kw) -> ServerClient:  # type: ignore[no-untyped-def]
    opts = ServerOptions(base_url="http://srv:1/v1/", model="tiny.en", backoff_s=0.01, max_backoff_s=0.05, **kw)
    return ServerClient(opts, transport=httpx.MockTransport(handler))


def test_retries_429_and_503_then_succeeds_and_sends_openai_form() -> None:
    answers = [httpx.Response(429, headers={"Retry-After": "0"}, json={"error": {"message": "queue full"}}),
               httpx.Response(503, json={"error": {"message": "loading"}}),
               httpx.Response(200, json=VERBOSE)]
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers[len(seen) - 1]

    outcome = _client(handler, language="en").transcribe(JFK)
    assert outcome.error is None and outcome.transcript is not None
    assert outcome.transcript.language == "en" and outcome.duration_s == 11.0
    assert len(seen) == 3 and seen[0].url.path == "/v1/audio/transcriptions"
    body = seen[0].read().decode("latin-1")
    for field in ('name="response_format"', "verbose_json", 'name="timestamp_granularities[]"', 'name="model"',
                  'name="language"', 'filename="jfk.flac"'):
        assert field in body


def test_client_errors_are_not_retried() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(415, json={"error": {"message": "jfk.flac: not a readable audio file"}})

    outcome = _client(handler).transcribe(JFK)
    assert calls == [1]
    assert outcome.error == "server answered 415: not a readable audio file"


def test_connection_errors_give_up_after_bounded_retries() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        raise httpx.ConnectError("connection refused")

    outcome = _client(handler, retries=2).transcribe(JFK)
    assert len(calls) == 3
    assert outcome.error is not None and outcome.error.startswith("gave up after 3 attempts: ConnectError")


def test_retry_after_is_honoured_and_capped() -> None:
    assert parse_retry_after("2.5") == 2.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
    assert parse_retry_after("soon") is None
    assert retry_delay_s(0, 7.0, backoff_s=1, max_backoff_s=60) == 7.0
    assert retry_delay_s(0, 600.0, backoff_s=1, max_backoff_s=60) == 60.0
    assert 0.75 * 4 <= retry_delay_s(2, None, backoff_s=1, max_backoff_s=60) <= 4
    assert retry_delay_s(20, None, backoff_s=1, max_backoff_s=60) <= 60


def test_verbose_json_round_trips_to_every_format() -> None:
    transcript = transcript_from_verbose_json(json.loads(json.dumps(VERBOSE)))
    assert transcript.text == "And so my fellow Americans."
    assert json.loads(render(transcript, "verbose_json"))["segments"][1]["end"] == 11.0
    assert "00:00:03,500 --> 00:00:11,000" in render(transcript, "srt")
    assert normalize_base_url("localhost:8080/v1/") == "http://localhost:8080"


def test_unreadable_file_fails_without_a_request(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request expected")

    outcome = _client(handler).transcribe(tmp_path / "missing.wav")
    assert outcome.error is not None and outcome.error.startswith("cannot read file")
