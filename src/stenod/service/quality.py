"""Signs that a transcript is not what the user wanted, found after (or beside) transcribing:

* an English-only model given speech in another language: Whisper ``*.en`` models do not refuse
  it, they write fluent English-sounding text that has nothing to do with the audio. A
  multilingual model's language detection (first 30 s) tells;
* a transcript that covers much less than the audio's speech: the decoder skipped windows (a
  no-speech or log-probability threshold set too strict, a hallucination loop cut short). Silero
  VAD measures the speech; the segments' spans measure what was written.

Each check returns a message or ``None``; entry points decide how to show it.
"""

from __future__ import annotations

import numpy as np

from stenod.audio import SAMPLE_RATE
from stenod.engines.base import Engine, LanguageDetection
from stenod.transcript import Transcript

FOREIGN_LANGUAGE_MIN_PROBABILITY = 0.5
"""Warn only when the detector is fairly sure the speech is not English."""
COVERAGE_MIN_SPEECH_S = 10.0
"""Too little speech to judge coverage below this."""
COVERAGE_MIN_FRACTION = 0.5
"""Warn when the transcript's segments span less than this share of the detected speech."""


def english_only_mismatch(
    detection: LanguageDetection, *, model: str
) -> str | None:
    """A warning when ``detection`` (from a multilingual model) says the speech is not English."""
    if detection.language == "en" or detection.probability < FOREIGN_LANGUAGE_MIN_PROBABILITY:
        return None
    from stenod.languages import language_name  # leaf data; kept lazy for import time

    name = language_name(detection.language).title()
    return (f"the speech sounds like {name} ({detection.language}, p={detection.probability:.2f}), but {model} "
            f"is English-only and writes English-sounding text for other languages; use a multilingual "
            f"model such as --model base")


def detect_foreign_speech(detector: Engine, audio: np.ndarray, *, model: str) -> str | None:
    """Run ``detector`` (multilingual) on the first 30 s and return :func:`english_only_mismatch`."""
    if len(audio) < SAMPLE_RATE:  # under a second: detection means nothing
        return None
    return english_only_mismatch(detector.detect_language(audio), model=model)


def speech_seconds(audio: np.ndarray) -> float:
    """Seconds of speech Silero VAD finds in 16 kHz mono ``audio`` (default thresholds)."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    if len(audio) == 0:
        return 0.0
    chunks = get_speech_timestamps(audio, VadOptions())
    return float(sum(c["end"] - c["start"] for c in chunks)) / SAMPLE_RATE


def covered_seconds(transcript: Transcript) -> float:
    """Seconds the non-empty segments span (overlaps counted once)."""
    spans = sorted((s.start, s.end) for s in transcript.segments if s.text.strip() and s.end > s.start)
    total, cursor = 0.0, 0.0
    for start, end in spans:
        start = max(start, cursor)
        if end > start:
            total += end - start
            cursor = end
    return total


def coverage_warning(transcript: Transcript, speech_s: float) -> str | None:
    """A warning when the transcript spans much less than ``speech_s`` seconds of speech."""
    if speech_s < COVERAGE_MIN_SPEECH_S:
        return None
    covered = covered_seconds(transcript)
    if covered >= COVERAGE_MIN_FRACTION * speech_s:
        return None
    return (f"the transcript covers {covered:.0f} s of the {speech_s:.0f} s of speech found in the audio; "
            f"parts were skipped (check --no-speech-threshold / --logprob-threshold, or try --vad)")
