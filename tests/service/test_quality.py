"""Transcript quality warnings with real audio and weights: German speech for an English-only
model, and a transcript that skipped most of the speech."""

from __future__ import annotations

from dataclasses import replace

import pytest

from stenod.audio.decode import decode_audio
from stenod.engines import TranscriptionOptions
from stenod.service.quality import coverage_warning, covered_seconds, detect_foreign_speech, speech_seconds
from stenod.service.transcription import transcribe_decoded
from tests.conftest import CORPUS, JFK

GERMAN = CORPUS / "multilingual-fleurs" / "audio" / "fleurs-de-000.ogg"
SPEECH_16S = CORPUS / "librispeech-clean100-a" / "audio" / "229-130880-0000.flac"


def test_german_speech_is_named_for_an_english_only_model(base_engine) -> None:  # type: ignore[no-untyped-def]
    message = detect_foreign_speech(base_engine, decode_audio(GERMAN).samples, model="tiny.en")
    assert message is not None and "German (de" in message and "tiny.en is English-only" in message
    assert detect_foreign_speech(base_engine, decode_audio(JFK).samples, model="tiny.en") is None


def test_a_transcript_missing_most_speech_is_flagged(tiny_engine) -> None:  # type: ignore[no-untyped-def]
    audio = decode_audio(SPEECH_16S)
    speech = speech_seconds(audio.samples)
    assert 12.0 < speech <= audio.duration_s + 0.01
    full = transcribe_decoded(tiny_engine, audio, TranscriptionOptions(language="en")).transcript
    assert coverage_warning(full, speech) is None
    gutted = full.with_segments(full.segments[:1])
    assert covered_seconds(gutted) < 0.5 * speech
    message = coverage_warning(gutted, speech)
    assert message is not None and "of speech found in the audio" in message
    assert coverage_warning(replace(gutted), 5.0) is None  # too little speech to judge


@pytest.mark.parametrize("spans,expected", [([(0, 2), (1, 3)], 3.0), ([(0, 1), (5, 6)], 2.0), ([], 0.0)])
def test_covered_seconds_counts_overlaps_once(spans, expected) -> None:  # type: ignore[no-untyped-def]
    from stenod.transcript import Segment, Transcript

    t = Transcript.from_segments([Segment(id=i, seek=0, start=s, end=e, text=" x") for i, (s, e) in enumerate(spans)],
                                 language="en", duration=10.0)
    assert covered_seconds(t) == expected
