"""Decoding controls through the service layer with real tiny.en weights, on both engines:
offset/duration of the part transcribed, hotwords, fallback thresholds, VAD threshold."""

from __future__ import annotations

import pytest

from stenod.audio.decode import decode_audio
from stenod.engines import TranscriptionOptions, temperature_schedule
from stenod.errors import UnsupportedParameterError
from stenod.service.transcription import transcribe_decoded
from tests.conftest import JFK
from tests.wer_utils import normalize


@pytest.fixture(scope="module")
def jfk_decoded():  # type: ignore[no-untyped-def]
    return decode_audio(JFK)


@pytest.fixture(params=["faster-whisper", "whisper.cpp"])
def engine(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    if request.param == "faster-whisper":
        return request.getfixturevalue("tiny_engine")
    pytest.importorskip("_pywhispercpp")
    from tests.engines.test_whisper_cpp import _load

    path = request.getfixturevalue("tiny_ggml")
    cached = getattr(request.session, "_stenod_wcpp_tiny", None)
    if cached is None:
        cached = _load(path, "tiny.en", multilingual=False)
        request.session._stenod_wcpp_tiny = cached  # type: ignore[attr-defined]
    return cached


@pytest.fixture(scope="session")
def tiny_ggml(cache_dir):  # type: ignore[no-untyped-def]
    from tests.engines.test_whisper_cpp import _ggml

    return _ggml("tiny.en", cache_dir)


def test_temperature_schedule_step_and_no_fallback() -> None:
    assert temperature_schedule(0.0, 0.5) == (0.0, 0.5, 1.0)
    assert temperature_schedule(0.2, 0.0) == (0.2,)
    assert temperature_schedule(0.0) == (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def test_offset_and_duration_transcribe_only_that_part_on_the_file_timeline(engine, jfk_decoded) -> None:  # type: ignore[no-untyped-def]
    whole = transcribe_decoded(engine, jfk_decoded, TranscriptionOptions(language="en"))
    part = transcribe_decoded(engine, jfk_decoded, TranscriptionOptions(language="en", offset_s=4.0, duration_s=4.5))
    text = normalize(part.transcript.text)
    assert "fellow" not in text and "what your country" in text, text
    assert part.audio_duration_s == pytest.approx(4.5, abs=0.01)
    assert part.transcript.duration == pytest.approx(jfk_decoded.duration_s, abs=0.01)
    assert part.transcript.segments
    assert all(4.0 <= s.start <= s.end <= 8.5 + 0.05 for s in part.transcript.segments)
    assert len(normalize(whole.transcript.text)) > len(text)


def test_offset_past_the_end_is_refused(tiny_engine, jfk_decoded) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UnsupportedParameterError) as info:
        transcribe_decoded(tiny_engine, jfk_decoded, TranscriptionOptions(offset_s=60.0))
    assert info.value.param == "offset" and "past the end" in info.value.message


def test_thresholds_off_and_hotwords_still_transcribe(engine, jfk_decoded) -> None:  # type: ignore[no-untyped-def]
    options = TranscriptionOptions(
        language="en", hotwords="Kennedy Americans", compression_ratio_threshold=None,
        log_prob_threshold=None, no_speech_threshold=None, temperature=temperature_schedule(0.0, 0.0),
    )
    text = normalize(transcribe_decoded(engine, jfk_decoded, options).transcript.text)
    assert "ask not what your country can do for you" in text


def test_vad_threshold_reaches_the_detector(engine, jfk_decoded) -> None:  # type: ignore[no-untyped-def]
    heard = transcribe_decoded(engine, jfk_decoded, TranscriptionOptions(language="en", vad=True))
    deaf = transcribe_decoded(engine, jfk_decoded, TranscriptionOptions(language="en", vad=True, vad_threshold=1.0))
    assert "country" in normalize(heard.transcript.text)
    assert deaf.transcript.text == "" and deaf.transcript.segments == ()
