"""Cut long audio into independent windows at pauses, so the windows can be decoded in parallel.

Whisper's sequential long-form decoding (one 30 s window after another, each seeking from the
last timestamp of the one before) keeps one core busy per file. On a small server that leaves the
other cores idle for a single long request. Here VAD speech spans are grouped, in time order, into
windows of at most ``max_window_s`` that start and end at a pause, never mid-word; each window is
then an independent single-window decode (trimmed encoder, guard, fallback: see
:mod:`stenod.engines.window_guard`) that any free worker can run. Silence between windows is never
decoded, which is also what keeps Whisper from inventing text in long silences.

Engine-agnostic: spans in, spans out (seconds).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Span:
    """A stretch of the file, in seconds from its start."""

    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


def group_speech(
    speech: Sequence[Span], *, max_window_s: float = 28.0, max_gap_s: float = 3.0
) -> list[Span]:
    """Group time-ordered speech spans into windows.

    A window grows span by span while it stays within ``max_window_s`` and the pause before the
    next span is at most ``max_gap_s`` (a longer pause is silence not worth encoding, and a window
    boundary there cuts nothing). A single span longer than ``max_window_s`` becomes a window of
    its own; callers have the VAD split such spans first (at its last short pause).
    """
    windows: list[Span] = []
    current: Span | None = None
    for span in speech:
        if span.end <= span.start:
            continue
        if current is not None and span.end - current.start <= max_window_s and span.start - current.end <= max_gap_s:
            current = Span(current.start, max(current.end, span.end))
            continue
        if current is not None:
            windows.append(current)
        current = span
    if current is not None:
        windows.append(current)
    return windows
