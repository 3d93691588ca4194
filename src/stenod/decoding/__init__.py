"""Decoding above the engines: the coverage check that every entry point's transcription goes
through (:func:`transcribe_with_coverage`), Silero VAD speech stretches, and the segment guards.

Sits between ``engines`` (which it calls through the :class:`~stenod.engines.base.Engine`
protocol) and ``service``; it imports nothing above it.
"""

from stenod.decoding.coverage import transcribe_with_coverage
from stenod.decoding.speech import SpeechStretch, find_speech

__all__ = ["SpeechStretch", "find_speech", "transcribe_with_coverage"]
