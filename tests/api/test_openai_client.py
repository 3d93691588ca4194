"""The official openai client, pointed at a real stenod server, for every format and streaming."""

from __future__ import annotations

import re

import httpx
import openai
import pytest
from openai.types.audio import TranscriptionVerbose

from tests.conftest import CORPUS, JFK
from tests.wer_utils import normalize

JFK_NORMALIZED = normalize("And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.")
SRT_TIME = re.compile(r"^\d\d:\d\d:\d\d,\d\d\d --> \d\d:\d\d:\d\d,\d\d\d$")
VTT_TIME = re.compile(r"^\d\d:\d\d:\d\d\.\d\d\d --> \d\d:\d\d:\d\d\.\d\d\d$")


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:  # type: ignore[no-untyped-def]
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


def test_json(client: openai.OpenAI) -> None:
    with JFK.open("rb") as f:
        result = client.audio.transcriptions.create(model="whisper-1", file=f)
    assert normalize(result.text) == JFK_NORMALIZED


def test_text(client: openai.OpenAI) -> None:
    with JFK.open("rb") as f:
        result = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="text")
    assert isinstance(result, str)
    assert normalize(result) == JFK_NORMALIZED


def test_srt(client: openai.OpenAI) -> None:
    with JFK.open("rb") as f:
        result = client.audio.transcriptions.create(model="tiny.en", file=f, response_format="srt")
    blocks = [b for b in result.strip().split("\n\n") if b]
    assert blocks, result
    for i, block in enumerate(blocks, start=1):
        lines = block.split("\n")
        assert lines[0] == str(i)
        assert SRT_TIME.match(lines[1]), lines[1]
    assert normalize(" ".join(b.split("\n", 2)[2] for b in blocks)) == JFK_NORMALIZED


def test_vtt(client: openai.OpenAI) -> None:
    with JFK.open("rb") as f:
        result = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="vtt")
    assert result.startswith("WEBVTT\n\n")
    cues = [b for b in result[len("WEBVTT\n\n"):].strip().split("\n\n") if b]
    assert all(VTT_TIME.match(c.split("\n")[0]) for c in cues)


def test_verbose_json_with_word_timestamps(client: openai.OpenAI) -> None:
    with JFK.open("rb") as f:
        result = client.audio.transcriptions.create(
            model="whisper-1", file=f, response_format="verbose_json", timestamp_granularities=["word", "segment"]
        )
    assert isinstance(result, TranscriptionVerbose)
    assert result.language == "english"
    assert result.duration == pytest.approx(11.0, abs=0.05)
    assert result.segments and result.words
    assert normalize(" ".join(w.word for w in result.words)) == JFK_NORMALIZED
    starts = [w.start for w in result.words]
    assert starts == sorted(starts) and all(w.end >= w.start for w in result.words)


def test_verbose_json_segments_only_by_default(client: openai.OpenAI) -> None:
    with JFK.open("rb") as f:
        result = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="verbose_json")
    assert result.segments and result.segments[0].end > result.segments[0].start
    assert result.words is None


def test_translation_with_multilingual_model(client: openai.OpenAI) -> None:
    clip = CORPUS / "multilingual-fleurs" / "audio" / "fleurs-de-006.ogg"
    with clip.open("rb") as f:
        result = client.audio.translations.create(model="base", file=f)
    words = set(normalize(result.text).split())
    assert {"students", "grammar"} & words, result.text


def test_streaming_deltas_then_done(client: openai.OpenAI) -> None:
    long_clip = CORPUS / "longform-en" / "audio" / "earnings22_1_4482311_3_62.wav"
    with long_clip.open("rb") as f:
        stream = client.audio.transcriptions.create(model="whisper-1", file=f, stream=True)
        events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[-1] == "transcript.text.done"
    assert kinds.count("transcript.text.delta") >= 2, kinds
    deltas = "".join(e.delta for e in events if e.type == "transcript.text.delta")
    assert deltas == events[-1].text
    assert "zoom" in normalize(events[-1].text)


def test_models_listing(client: openai.OpenAI, server) -> None:  # type: ignore[no-untyped-def]
    ids = {m.id for m in client.models.list()}
    assert {"base", "tiny.en"} <= ids
    assert client.models.retrieve("tiny.en").id == "tiny.en"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
    assert httpx.get(f"{server.url}/v1/models/whisper-1").status_code == 200


def test_unknown_model_is_404_in_openai_shape(client: openai.OpenAI) -> None:
    with JFK.open("rb") as f, pytest.raises(openai.NotFoundError) as info:
        client.audio.transcriptions.create(model="large-v9", file=f)
    body = info.value.body
    assert isinstance(body, dict) and body["code"] == "model_not_found"
