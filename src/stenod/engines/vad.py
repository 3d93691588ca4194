"""Voice-activity detection settings shared by both engines.

Both engines run faster-whisper's bundled Silero VAD (whisper.cpp's own VAD needs a separate
model file we do not ship), so one mapping from :class:`TranscriptionOptions` serves both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stenod.engines.base import TranscriptionOptions

if TYPE_CHECKING:
    from faster_whisper.vad import VadOptions


def silero_vad_options(options: TranscriptionOptions) -> VadOptions:
    """faster-whisper's ``VadOptions`` (threshold, minimum silence, padding) from ours."""
    from faster_whisper.vad import VadOptions  # keeps CTranslate2 off the import path of callers

    return VadOptions(
        threshold=options.vad_threshold,
        min_silence_duration_ms=options.vad_min_silence_ms,
        speech_pad_ms=options.vad_speech_pad_ms,
    )
