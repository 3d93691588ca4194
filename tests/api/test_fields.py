"""Request fields reach the engine as the documented options, CORS answers browsers, and /health
and /metrics describe the service: in-process, with the fake engine recording every call."""

from __future__ import annotations

from pathlib import Path

import pytest

from stenod.transcript import Task
from tests.api.fakes import FakeEngines, app_client, fake_settings, metric_value
from tests.conftest import CORPUS, JFK

pytestmark = pytest.mark.anyio

GERMAN = CORPUS / "multilingual-fleurs" / "audio" / "fleurs-de-006.ogg"
ORIGIN = "https://app.example.com"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def upload(path: Path = JFK, **data: str) -> dict[str, object]:
    return {"files": {"file": (path.name, path.read_bytes())}, "data": data}


async def test_openai_prompt_temperature_and_language(cache_dir: Path, tmp_path: Path) -> None:
    engines = FakeEngines()
    async with app_client(fake_settings(cache_dir, tmp_path), engines) as (client, _):
        r = await client.post("/v1/audio/transcriptions", **upload(
            model="base", prompt="Hongkong, Zürich.", temperature="0.4", language="DE"))
        assert r.status_code == 200, r.text
        r = await client.post("/v1/audio/translations", **upload(GERMAN, model="base", prompt="Glossary: Grammatik."))
        assert r.status_code == 200, r.text
        r = await client.post("/v1/audio/transcriptions", **upload(model="whisper-1"))
        assert r.status_code == 200, r.text
    transcribe, translate, default = engines.calls
    assert (transcribe.initial_prompt, transcribe.language, transcribe.task) == ("Hongkong, Zürich.", "de", Task.TRANSCRIBE)
    assert transcribe.temperature == (0.4, 0.6, 0.8, 1.0)
    assert (translate.initial_prompt, translate.language, translate.task) == ("Glossary: Grammatik.", None, Task.TRANSLATE)
    assert (default.initial_prompt, default.language, default.temperature[0]) == (None, None, 0.0)
    assert sorted(engines.loads) == ["base", "tiny.en"]


async def test_whispercpp_inference_fields(cache_dir: Path, tmp_path: Path) -> None:
    engines = FakeEngines()
    async with app_client(fake_settings(cache_dir, tmp_path, model={"name": "base"}), engines) as (client, _):
        r = await client.post("/inference", **upload(GERMAN, language="de", prompt="Schule", temperature="0.2",
                                                     response_format="json"))
        assert r.status_code == 200, r.text
        r = await client.post("/inference", **upload(GERMAN, language="auto", translate="true", no_timestamps="1"))
        assert r.status_code == 200, r.text
        bad = await client.post("/inference", **upload(GERMAN, language="xx"))
    german, translated = engines.calls
    assert (german.language, german.initial_prompt, german.task, german.temperature[0]) == ("de", "Schule", Task.TRANSCRIBE, 0.2)
    assert (translated.language, translated.task, translated.without_timestamps) == (None, Task.TRANSLATE, True)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "language"


async def test_cors_preflight(cache_dir: Path, tmp_path: Path) -> None:
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization"}
    settings = fake_settings(cache_dir, tmp_path, server={"cors_origins": ORIGIN})
    async with app_client(settings, FakeEngines()) as (client, _):
        allowed = await client.options("/v1/audio/transcriptions", headers=preflight)
        other = await client.options("/v1/audio/transcriptions", headers={**preflight, "Origin": "https://evil.example"})
        simple = await client.get("/health", headers={"Origin": ORIGIN})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    assert simple.headers["access-control-allow-origin"] == ORIGIN
    assert "X-Request-ID" in simple.headers["access-control-expose-headers"]

    async with app_client(fake_settings(cache_dir, tmp_path), FakeEngines()) as (client, _):  # CORS off
        closed = await client.options("/v1/audio/transcriptions", headers=preflight)
    assert "access-control-allow-origin" not in closed.headers


async def test_health_and_metrics_describe_the_service(cache_dir: Path, tmp_path: Path) -> None:
    settings = fake_settings(cache_dir, tmp_path, server={"slots": 2})
    async with app_client(settings, FakeEngines()) as (client, _):
        health = await client.get("/health")
        before = (await client.get("/metrics")).text
        ok = await client.post("/v1/audio/transcriptions", **upload(model="whisper-1"))
        bad = await client.post("/v1/audio/transcriptions", files={"file": ("x.wav", b"not audio at all")},
                                data={"model": "whisper-1"})
        after = (await client.get("/metrics")).text
        assert (await client.get("/ready")).json() == {"status": "ready"}
    body = health.json()
    assert health.status_code == 200 and body["status"] == "ok"
    assert (body["default_model"], body["engine"], body["device"]) == ("tiny.en", "fake", "cpu")
    assert (body["slots"], body["running"], body["queued"]) == (2, 0, 0)
    assert body["version"] and body["uptime_s"] >= 0 and body["memory_rss_bytes"] > 0
    assert (ok.status_code, bad.status_code) == (200, 415)
    labels = {"endpoint": "transcriptions", "model": "tiny.en", "language": "en", "status": "200"}
    assert metric_value(after, "stenod_requests_total", **labels) == metric_value(before, "stenod_requests_total", **labels) + 1
    assert metric_value(after, "stenod_errors_total", status="415") == metric_value(before, "stenod_errors_total", status="415") + 1
    assert metric_value(after, "stenod_audio_seconds_total", model="tiny.en") == pytest.approx(11.0, abs=0.01)
    assert metric_value(after, "stenod_realtime_factor_count", model="tiny.en") == 1
    assert metric_value(after, "stenod_slots_total") == 2
    assert "stenod_queue_depth" in after and "stenod_slots_in_use" in after
    assert "stenod_request_duration_seconds_bucket{" in after


async def test_response_formats_render_the_engine_transcript(cache_dir: Path, tmp_path: Path) -> None:
    async with app_client(fake_settings(cache_dir, tmp_path), FakeEngines()) as (client, _):
        text = await client.post("/v1/audio/transcriptions", **upload(model="whisper-1", response_format="text"))
        srt = await client.post("/v1/audio/transcriptions", **upload(model="whisper-1", response_format="srt"))
        verbose = await client.post("/v1/audio/transcriptions", **upload(
            model="whisper-1", response_format="verbose_json", **{"timestamp_granularities[]": "word"}))
    assert text.text.strip() == "segment 0 segment 1 segment 2"
    assert srt.text.startswith("1\n00:00:00,000 --> 00:00:05,000\nsegment 0\n")
    body = verbose.json()
    assert body["language"] == "english" and body["task"] == "transcribe"
    assert [w["word"].strip() for w in body["words"]] == ["segment0", "segment1", "segment2"]


def test_fake_engine_counts_as_an_engine() -> None:
    from stenod.engines import Engine
    from stenod.models import ResolvedModel
    from tests.api.fakes import FakeEngine

    model = ResolvedModel("tiny.en", Path("/nonexistent"), "ctranslate2", "bundled", False)
    assert isinstance(FakeEngine(model, FakeEngines()), Engine)
