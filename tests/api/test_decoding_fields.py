"""Decoding and subtitle fields on the API, in-process (create_app + TestClient, real tiny.en /
base weights): whisper.cpp's /inference fields and OpenAI's chunking_strategy."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from stenod.api.app import create_app
from stenod.settings import Settings
from tests.conftest import CORPUS, JFK
from tests.wer_utils import normalize

GERMAN = CORPUS / "multilingual-fleurs" / "audio" / "fleurs-de-000.ogg"


def _client(cache_dir: Path, model: str) -> Iterator[TestClient]:
    settings = Settings(model={"name": model, "cache_dir": cache_dir, "threads": 1}, server={"slots": 1})
    with TestClient(create_app(settings)) as client:  # the lifespan preloads the model
        yield client


@pytest.fixture(scope="module")
def tiny(cache_dir: Path) -> Iterator[TestClient]:
    yield from _client(cache_dir, "tiny.en")


def _post(client: TestClient, path: str, audio: Path = JFK, **fields: str):  # type: ignore[no-untyped-def]
    with audio.open("rb") as f:
        return client.post(path, files={"file": (audio.name, f)}, data=fields)


def test_inference_offset_duration_and_max_len(tiny: TestClient) -> None:
    r = _post(tiny, "/inference", response_format="srt", offset_t="2000", duration="4000", max_len="1")
    assert r.status_code == 200, r.text
    cues = re.findall(r"(\d\d:\d\d:\d\d,\d\d\d) --> (\d\d:\d\d:\d\d,\d\d\d)\n(.+)\n", r.text)
    assert cues and all(len(text.split()) == 1 for _, _, text in cues)
    secs = [int(t[6:8]) + int(t[9:]) / 1000 for s, e, _ in cues for t in (s, e)]
    assert min(secs) >= 2.0 and max(secs) <= 6.01


def test_inference_thresholds_and_vad_fields(tiny: TestClient) -> None:
    heard = _post(tiny, "/inference", response_format="json", vad="true", vad_threshold="0.5", temperature_inc="0",
                  logprob_thold="-2", no_speech_thold="0.9", entropy_thold="0", beam_size="2",
                  vad_min_silence_duration_ms="500", vad_speech_pad_ms="100")
    assert heard.status_code == 200, heard.text
    assert "country" in normalize(heard.json()["text"])
    deaf = _post(tiny, "/inference", response_format="json", vad="true", vad_threshold="1.0")
    assert deaf.status_code == 200 and deaf.json()["text"] == ""


@pytest.mark.parametrize("field,value", [("offset_t", "-1"), ("vad_threshold", "2"), ("beam_size", "0"),
                                         ("no_speech_thold", "1.5"), ("max_len", "-3"), ("temperature_inc", "9")])
def test_inference_bad_fields_are_400_naming_the_field(tiny: TestClient, field: str, value: str) -> None:
    r = _post(tiny, "/inference", **{field: value})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == field


def test_openai_chunking_strategy(tiny: TestClient) -> None:
    auto = _post(tiny, "/v1/audio/transcriptions", model="whisper-1", chunking_strategy="auto")
    assert auto.status_code == 200 and "country" in normalize(auto.json()["text"])
    strict = json.dumps({"type": "server_vad", "threshold": 1.0, "prefix_padding_ms": 300, "silence_duration_ms": 200})
    deaf = _post(tiny, "/v1/audio/transcriptions", model="whisper-1", chunking_strategy=strict)
    assert deaf.status_code == 200 and deaf.json()["text"] == ""
    for bad in ("sometimes", '{"type": "server_vad", "threshold": "high"}', '{"type": "client_vad"}'):
        r = _post(tiny, "/v1/audio/transcriptions", model="whisper-1", chunking_strategy=bad)
        assert r.status_code == 400 and r.json()["error"]["param"] == "chunking_strategy", bad


def test_inference_detect_language_with_probabilities(cache_dir: Path) -> None:
    for client in _client(cache_dir, "base"):
        r = _post(client, "/inference", GERMAN, detect_language="true")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["detected_language"] == "german" and body["detected_language_code"] == "de"
        assert 0.5 < body["detected_language_probability"] <= 1.0
        probs = body["language_probabilities"]
        assert probs["de"] == pytest.approx(body["detected_language_probability"], abs=1e-3)
        assert all(0.001 < p <= 1.0 for p in probs.values()) and sum(probs.values()) <= 1.0001



@pytest.mark.parametrize("value", ["1e-300", "5e-324", "0.001", "nan", "inf"])
def test_temperature_inc_cannot_blow_up_the_fallback_schedule(tiny: TestClient, value: str) -> None:
    """A tiny step once made a schedule of astronomically many temperatures and killed the server
    (found by the schemathesis run); now it is a 400 naming the field, and the engine-level
    schedule stays short whatever it is given."""
    from stenod.engines.base import temperature_schedule

    assert len(temperature_schedule(0.0, float(value))) <= 101
    r = _post(tiny, "/inference", temperature_inc=value)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "temperature_inc"
