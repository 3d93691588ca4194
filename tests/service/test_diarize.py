"""Channel-energy diarization: synthetic spans for the rule, a real two-channel call for the whole path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stenod.engines import TranscriptionOptions
from stenod.errors import DiarizationInputError
from stenod.service.diarize import UNKNOWN_SPEAKER, speaker_for_span
from stenod.service.transcription import transcribe_source
from tests.conftest import CORPUS
from tests.synth import SPEAKER_A_TEXT, SPEAKER_B_TEXT, two_speaker_call
from tests.wer_utils import normalize, wer


def _channels(left: float, right: float, seconds: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(1)
    noise = rng.standard_normal((2, int(seconds * 16_000))).astype(np.float32)
    return noise * np.array([[left], [right]], dtype=np.float32)


@pytest.mark.parametrize(
    ("left", "right", "speaker"),
    [(0.5, 0.0, "SPEAKER 1"), (0.0, 0.5, "SPEAKER 2"), (0.5, 0.1, "SPEAKER 1"), (0.3, 0.3, UNKNOWN_SPEAKER), (0, 0, UNKNOWN_SPEAKER)],
)
def test_speaker_for_span(left: float, right: float, speaker: str) -> None:
    assert speaker_for_span(_channels(left, right), 0.0, 1.0) == speaker


def test_span_outside_the_audio_is_unknown() -> None:
    assert speaker_for_span(_channels(0.5, 0.0), 5.0, 6.0) == UNKNOWN_SPEAKER


TURN_GAP_S = 2.0
"""The pause between the turns in :func:`tests.synth.two_speaker_call`."""


def test_two_channel_call_gets_speaker_1_then_2(tmp_path: Path, tiny_engine: object) -> None:
    path, junction_s = two_speaker_call(tmp_path / "call.wav")
    result = transcribe_source(tiny_engine, path, TranscriptionOptions(), max_duration_s=3600, diarize=True)  # type: ignore[arg-type]
    segments = result.transcript.segments
    assert len(segments) >= 2
    # Whisper's segment ends may run into the 2 s pause between the turns (tiny.en ends the first
    # turn's segment ~1.6 s after its speech); a segment must never reach into the other
    # speaker's speech, and its label is the speaker of the turn it belongs to.
    a_speech_end, b_speech_start = junction_s - TURN_GAP_S / 2, junction_s + TURN_GAP_S / 2
    for seg in segments:
        first_turn = (seg.start + seg.end) / 2 <= junction_s
        if first_turn:
            assert seg.end <= b_speech_start, "a first-turn segment reaches into the second speaker"
        else:
            assert seg.start >= a_speech_end, "a second-turn segment reaches into the first speaker"
        assert seg.speaker == ("SPEAKER 1" if first_turn else "SPEAKER 2")
    first = normalize(" ".join(s.text for s in segments if s.speaker == "SPEAKER 1"))
    second = normalize(" ".join(s.text for s in segments if s.speaker == "SPEAKER 2"))
    # tiny.en mishears a word now and then; the turn boundaries are what is tested here
    assert wer([SPEAKER_A_TEXT], [first]) <= 0.25, first
    assert wer([SPEAKER_B_TEXT], [second]) <= 0.25, second


def test_mono_input_is_refused(tiny_engine: object) -> None:
    mono = CORPUS / "ljspeech-lj001/audio/LJ001-0002.wav"
    with pytest.raises(DiarizationInputError) as info:
        transcribe_source(tiny_engine, mono, TranscriptionOptions(), max_duration_s=3600, diarize=True)  # type: ignore[arg-type]
    assert info.value.message == (
        f"{mono}: diarization needs a two-channel recording (one speaker per channel); this file has 1 channel"
    )
