"""Subtitle cues from segments: line width, lines per cue, cue length, one word per cue.

The knobs follow openai-whisper's CLI (``--max_line_width``, ``--max_line_count``) and
whisper.cpp's (``-ml N``: at most N characters per segment, ``-ml 1``: one word per cue). Cues are
cut at word boundaries and timed from word timestamps; when a segment has no word times (the
caller did not ask for them), a segment's span is shared among its words by their length, which
is close for evenly paced speech and never leaves the segment's span.

Every cue is non-empty, starts no earlier than the previous cue ends, and ends no earlier than it
starts, because Whisper's segment times can overlap by a few milliseconds and strict players
reject such files.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from stenod.transcript import Segment

Cue = tuple[float, float, str]
"""(start seconds, end seconds, text)."""


@dataclass(frozen=True, slots=True)
class SubtitleOptions:
    """How segments become subtitle cues (srt, vtt; tsv uses the cue splitting, not the wrapping)."""

    max_line_width: int | None = None
    """Wrap cue text at word boundaries to lines of at most this many characters (a single longer
    word stays whole). ``None``: one line per cue."""
    max_line_count: int | None = None
    """At most this many lines per cue; a longer cue is split into several. Needs
    ``max_line_width``."""
    max_cue_chars: int | None = None
    """At most this many characters per cue, cut at word boundaries (whisper.cpp's ``-ml``);
    1 gives one word per cue."""
    word_cues: bool = False
    """One cue per word (karaoke-style timing)."""

    def __post_init__(self) -> None:
        for name in ("max_line_width", "max_line_count", "max_cue_chars"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if self.max_line_count is not None and self.max_line_width is None:
            raise ValueError("max_line_count needs max_line_width (lines are made by wrapping)")

    @property
    def splits_segments(self) -> bool:
        """Whether cues are cut below segment level (and so want word timestamps)."""
        return self.word_cues or self.max_cue_chars is not None or self.max_line_count is not None


DEFAULT_SUBTITLES = SubtitleOptions()


@dataclass(frozen=True, slots=True)
class _Word:
    start: float
    end: float
    text: str


def _words_of(segment: Segment, text: str) -> list[_Word]:
    """The segment's words with times: its own word timestamps, else its span shared by length."""
    if segment.words:
        words = [_Word(w.start, w.end, w.word.strip()) for w in segment.words if w.word.strip()]
        if words:
            return words
    parts = text.split()
    total = sum(len(p) + 1 for p in parts)
    span = max(segment.end - segment.start, 0.0)
    out: list[_Word] = []
    t = segment.start
    for part in parts:
        step = span * (len(part) + 1) / total
        out.append(_Word(round(t, 3), round(t + step, 3), part))
        t += step
    return out


def _wrap(text: str, width: int | None) -> list[str]:
    if width is None:
        return [text]
    return textwrap.wrap(text, width=width, break_long_words=False, break_on_hyphens=False) or [text]


def _fits(text: str, options: SubtitleOptions) -> bool:
    if options.max_cue_chars is not None and len(text) > options.max_cue_chars:
        return False
    if options.max_line_count is not None and len(_wrap(text, options.max_line_width)) > options.max_line_count:
        return False
    return True


def _split(words: list[_Word], prefix: str, options: SubtitleOptions) -> Iterator[Cue]:
    """Greedy: add words to the current cue while it still fits; a word that alone does not fit
    gets a cue of its own."""
    current: list[_Word] = []
    for word in words:
        candidate = prefix + " ".join(w.text for w in [*current, word])
        if current and (options.word_cues or not _fits(candidate, options)):
            yield current[0].start, current[-1].end, prefix + " ".join(w.text for w in current)
            current = []
        current.append(word)
    if current:
        yield current[0].start, current[-1].end, prefix + " ".join(w.text for w in current)


def subtitle_cues(
    segments: Sequence[Segment], options: SubtitleOptions = DEFAULT_SUBTITLES, *, wrap: bool = True
) -> list[Cue]:
    """Cues for ``segments``: split as ``options`` asks, monotonic and non-overlapping; with
    ``wrap`` the text is wrapped to ``max_line_width`` (lines joined by ``\\n``)."""
    raw: list[Cue] = []
    for seg in segments:
        text = seg.text.strip()
        if not text:
            continue
        prefix = f"[{seg.speaker}] " if seg.speaker else ""
        if options.splits_segments:
            raw.extend(_split(_words_of(seg, text), prefix, options))
        else:
            raw.append((seg.start, seg.end, prefix + text))
    cues: list[Cue] = []
    previous_end = 0.0
    for start, end, text in raw:
        start = max(start, previous_end)
        end = max(end, start)
        previous_end = end
        cues.append((start, end, "\n".join(_wrap(text, options.max_line_width)) if wrap else text))
    return cues
