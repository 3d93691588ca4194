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


def group_spans(speech: Sequence[Span], *, max_window_s: float, max_gap_s: float) -> list[tuple[Span, ...]]:
    """Group time-ordered speech spans into windows; each group holds its window's spans in order.

    A window grows span by span while it stays within ``max_window_s`` and the pause before the
    next span is at most ``max_gap_s`` (a longer pause is silence not worth encoding, and a window
    boundary there cuts nothing). A single span longer than ``max_window_s`` becomes a window of
    its own (callers have the VAD split such spans first, at its last short pause);
    ``max_window_s`` 0 puts every span alone. Empty spans are skipped.

    The one grouping of the engines' parallel windows (:func:`group_speech`) and of the coverage
    check's windows (:mod:`stenod.decoding.coverage`, which needs the spans of each window).
    """
    groups: list[list[Span]] = []
    for span in speech:
        if span.end <= span.start:
            continue
        if groups and span.end - groups[-1][0].start <= max_window_s and span.start - groups[-1][-1].end <= max_gap_s:
            groups[-1].append(span)
        else:
            groups.append([span])
    return [tuple(group) for group in groups]


def group_speech(
    speech: Sequence[Span], *, max_window_s: float = 28.0, max_gap_s: float = 3.0
) -> list[Span]:
    """:func:`group_spans`, each window as one span from its first start to its last end."""
    return [
        Span(group[0].start, max(span.end for span in group))
        for group in group_spans(speech, max_window_s=max_window_s, max_gap_s=max_gap_s)
    ]
