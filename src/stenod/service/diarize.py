"""Channel-energy diarization for two-channel recordings (calls, interviews), as whisper.cpp's
``--diarize`` does it: a segment belongs to the channel that carries clearly more energy over its
span. It needs no extra model, and is exact when each party is recorded on its own channel.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from stenod.audio.decode import SAMPLE_RATE
from stenod.transcript import Segment, Transcript

DOMINANCE_RATIO = 1.1
"""One channel must carry 10 % more energy than the other (whisper.cpp's threshold)."""
UNKNOWN_SPEAKER = "SPEAKER ?"


def speaker_for_span(channels: np.ndarray, start_s: float, end_s: float) -> str:
    start = max(0, int(start_s * SAMPLE_RATE))
    end = min(channels.shape[1], max(start + 1, int(end_s * SAMPLE_RATE)))
    if end <= start:
        return UNKNOWN_SPEAKER
    span = channels[:2, start:end].astype(np.float64)
    energy = np.sum(span * span, axis=1)
    if energy[0] > DOMINANCE_RATIO * energy[1]:
        return "SPEAKER 1"
    if energy[1] > DOMINANCE_RATIO * energy[0]:
        return "SPEAKER 2"
    return UNKNOWN_SPEAKER


def diarize_by_channel(transcript: Transcript, channels: np.ndarray) -> Transcript:
    """Label each segment with the speaker of its dominant channel.

    Args:
        channels: ``(2, n)`` float32 samples at 16 kHz, aligned with the transcript.
    """
    labelled = [
        _with_speaker(seg, speaker_for_span(channels, seg.start, seg.end)) for seg in transcript.segments
    ]
    return transcript.with_segments(labelled)


def _with_speaker(seg: Segment, speaker: str) -> Segment:
    return replace(seg, speaker=speaker)
