"""Where the speech is: Silero VAD (bundled with faster-whisper) as stretches cut at pauses.

The coverage check (:mod:`stenod.decoding.coverage`) needs finer stretches than faster-whisper's
own VAD filter, which glues speech together across pauses shorter than 2 s into chunks of up to
a whole file: a stretch here ends at every pause of :data:`MIN_PAUSE_MS` or more, and a stretch
longer than :data:`MAX_STRETCH_S` is split at its last short pause (>= 100 ms), so a stretch can
always be decoded on its own in one 30 s Whisper window and no cut falls inside a word.
"""

from __future__ import annotations

import numpy as np

from stenod.audio import SAMPLE_RATE
from stenod.engines.windows import Span

MIN_PAUSE_MS = 300
"""A silence this long ends a stretch (sentence and phrase pauses of read and spontaneous speech)."""
SPEECH_PAD_MS = 150
"""Each stretch is widened by this much on both sides (less where the pause is shorter), so
Whisper hears the first and last phonemes whole."""
MAX_STRETCH_S = 24.0
"""Longer runs of speech are split at a short pause; well below Whisper's 30 s window, leaving
room for context."""


SpeechStretch = Span
"""One run of speech between pauses, in seconds from the start of the audio: the engines' own
:class:`~stenod.engines.windows.Span`, so stretches found here and windows cut there are one type."""


def find_speech(audio: np.ndarray, *, threshold: float = 0.5) -> list[SpeechStretch]:
    """Silero VAD over 16 kHz mono float32 ``audio``: the stretches of speech, in time order.

    ``threshold`` is the speech probability of a frame that counts as speech
    (``TranscriptionOptions.vad_threshold``); pauses and padding are this module's, finer than
    the engines' VAD filter.

    Costs about 1 % of real time on one CPU core (the ONNX model runs single-threaded); the
    model is loaded once per process by faster-whisper.
    """
    if len(audio) == 0:
        return []
    from faster_whisper.vad import VadOptions, get_speech_timestamps  # onnxruntime import is slow

    options = VadOptions(
        threshold=threshold,
        min_silence_duration_ms=MIN_PAUSE_MS,
        speech_pad_ms=SPEECH_PAD_MS,
        max_speech_duration_s=MAX_STRETCH_S,
    )
    chunks = get_speech_timestamps(np.ascontiguousarray(audio, dtype=np.float32), options)
    return [SpeechStretch(c["start"] / SAMPLE_RATE, c["end"] / SAMPLE_RATE) for c in chunks]


def overlap_s(start: float, end: float, stretches: list[SpeechStretch]) -> float:
    """Seconds of ``[start, end]`` that fall inside ``stretches``."""
    return sum(max(0.0, min(end, s.end) - max(start, s.start)) for s in stretches)
