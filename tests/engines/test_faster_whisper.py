"""The faster-whisper engine with real weights: options, VAD, non-speech, English-only limits."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from stenod.audio.decode import decode_audio
from stenod.engines import CancelledError, TranscriptionOptions, temperature_schedule
from stenod.errors import UnsupportedParameterError
from tests.conftest import JFK, JFK_TEXT
from tests.synth import silence, white_noise
from tests.wer_utils import normalize


@pytest.fixture(scope="module")
def jfk() -> np.ndarray:
    return decode_audio(JFK).samples


def test_vad_is_on_by_default_only_for_long_audio() -> None:
    default = TranscriptionOptions()
    assert default.vad is None and default.vad_min_duration_s == 30.0
    assert not default.vad_enabled(11.0) and not default.vad_enabled(30.0)
    assert default.vad_enabled(30.5) and default.vad_enabled(3600.0)
    assert TranscriptionOptions(vad=True).vad_enabled(5.0)
    assert not TranscriptionOptions(vad=False).vad_enabled(600.0)


def test_temperature_schedule() -> None:
    assert temperature_schedule(0.0) == (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    assert temperature_schedule(0.5) == (0.5, 0.7, 0.9)
    assert temperature_schedule(1.0) == (1.0,)


@pytest.mark.parametrize(
    "signal", [silence(60.0), white_noise(60.0, amplitude=0.1)], ids=["digital-silence", "white-noise"]
)
def test_non_speech_gives_empty_text(base_engine: object, signal: np.ndarray) -> None:
    # Default options: VAD turns itself on for 60 s. Without it base says "you you" to silence.
    transcript = base_engine.transcribe(signal, TranscriptionOptions(language="en"))  # type: ignore[attr-defined]
    assert transcript.text == ""
    assert transcript.duration == pytest.approx(60.0)


def test_word_timestamps_when_requested(tiny_engine: object, jfk: np.ndarray) -> None:
    plain = tiny_engine.transcribe(jfk, TranscriptionOptions())  # type: ignore[attr-defined]
    assert all(seg.words is None for seg in plain.segments) and plain.words == []
    timed = tiny_engine.transcribe(jfk, TranscriptionOptions(word_timestamps=True))  # type: ignore[attr-defined]
    words = timed.words
    assert normalize(" ".join(w.word for w in words)) == normalize(JFK_TEXT)
    previous = 0.0
    for seg in timed.segments:
        for w in seg.words or ():
            assert previous <= w.start <= w.end <= 11.0
            # faster-whisper does not stretch a segment to its last word: allow a few frames
            assert seg.start - 0.1 <= w.start and w.end <= seg.end + 0.1
            assert 0.0 < w.probability <= 1.0
            previous = w.start


def test_decoding_options_are_applied(tiny_engine: object, jfk: np.ndarray) -> None:
    options = TranscriptionOptions(
        beam_size=3, temperature=temperature_schedule(0.2), initial_prompt="Inaugural address, 1961."
    )
    transcript = tiny_engine.transcribe(jfk, options)  # type: ignore[attr-defined]
    assert normalize(transcript.text) == normalize(JFK_TEXT)
    assert transcript.segments and all(seg.temperature >= 0.2 for seg in transcript.segments)


def test_english_only_model_refuses_translate_and_other_languages(tiny_engine: object, jfk: np.ndarray) -> None:
    with pytest.raises(UnsupportedParameterError, match="English-only and cannot translate"):
        tiny_engine.transcribe(jfk, TranscriptionOptions(task="translate"))  # type: ignore[attr-defined]
    with pytest.raises(UnsupportedParameterError, match="language 'de' needs a multilingual model"):
        tiny_engine.transcribe(jfk, TranscriptionOptions(language="de"))  # type: ignore[attr-defined]


def test_progress_reaches_the_end(tiny_engine: object, jfk: np.ndarray) -> None:
    calls: list[tuple[float, float]] = []
    tiny_engine.transcribe(jfk, TranscriptionOptions(), progress=lambda d, t: calls.append((d, t)))  # type: ignore[attr-defined]
    assert calls[-1] == (11.0, 11.0)
    done = [d for d, _ in calls]
    assert done == sorted(done) and all(t == 11.0 for _, t in calls)


def test_cancel_between_segments(tiny_engine: object, jfk: np.ndarray) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CancelledError):
        tiny_engine.transcribe(jfk, TranscriptionOptions(), cancel=cancel)  # type: ignore[attr-defined]


def test_info_and_language_detection(tiny_engine: object, base_engine: object, jfk: np.ndarray) -> None:
    tiny, base = tiny_engine.info(), base_engine.info()  # type: ignore[attr-defined]
    assert (tiny.engine, tiny.device, tiny.compute_type, tiny.multilingual) == ("faster-whisper", "cpu", "int8", False)
    assert base.multilingual and base.model == "base"
    assert tiny_engine.detect_language(jfk).language == "en"  # type: ignore[attr-defined]
    detection = base_engine.detect_language(jfk)  # type: ignore[attr-defined]
    assert detection.language == "en" and detection.probability > 0.5
