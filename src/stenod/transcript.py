"""The one transcript type every engine returns and every renderer reads.

Field names follow OpenAI's verbose_json (and so faster-whisper's ``Segment``), so rendering is a
straight mapping and nothing has to be renamed at the API edge.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any


class Task(StrEnum):
    """What Whisper does with the speech: write it down in its own language, or translate it to
    English. A ``str`` subclass, so it compares equal to (and serializes as) ``"transcribe"`` /
    ``"translate"``."""

    TRANSCRIBE = "transcribe"
    TRANSLATE = "translate"


@dataclass(frozen=True, slots=True)
class Word:
    """One word with its time span in seconds and the model's confidence in it."""

    start: float
    end: float
    word: str
    probability: float


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of speech as the decoder produced it, times in seconds from the start of the file."""

    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: tuple[int, ...] = ()
    temperature: float = 0.0
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0
    words: tuple[Word, ...] | None = None
    speaker: str | None = None
    """Set by diarization (``"SPEAKER 1"`` ...); ``None`` when the speaker is unknown."""


@dataclass(frozen=True, slots=True)
class Transcript:
    """A whole file's transcription.

    ``text`` is the segments' texts joined as Whisper joins them (each segment text carries its own
    leading space), stripped at both ends.
    """

    text: str
    language: str
    duration: float
    segments: tuple[Segment, ...] = ()
    language_probability: float = 0.0
    task: Task = Task.TRANSCRIBE

    @classmethod
    def from_segments(
        cls,
        segments: list[Segment] | tuple[Segment, ...],
        *,
        language: str,
        duration: float,
        language_probability: float = 0.0,
        task: Task | str = Task.TRANSCRIBE,
    ) -> Transcript:
        return cls(
            text=join_segment_text(segments),
            language=language,
            duration=duration,
            segments=tuple(segments),
            language_probability=language_probability,
            task=Task(task),
        )

    def with_segments(self, segments: list[Segment] | tuple[Segment, ...]) -> Transcript:
        return replace(self, segments=tuple(segments), text=join_segment_text(segments))

    def shifted(self, offset_s: float, *, duration: float, clip_s: float) -> Transcript:
        """A transcript of a ``clip_s``-second clip put back on the whole file's timeline: times
        capped at the clip's end (Whisper may predict a little past it), then ``offset_s`` later;
        ``duration`` is the whole file's."""
        segments = tuple(shift_segment(seg, offset_s, clip_s=clip_s) for seg in self.segments)
        return replace(self, segments=segments, duration=duration)

    @property
    def words(self) -> list[Word]:
        return [w for s in self.segments for w in (s.words or ())]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["task"] = str(self.task)
        return data


def shift_segment(segment: Segment, offset_s: float, *, clip_s: float | None = None) -> Segment:
    """``segment`` and its words ``offset_s`` seconds later, times first capped at ``clip_s``."""

    def move(t: float) -> float:
        return round((t if clip_s is None else min(t, clip_s)) + offset_s, 3)

    words = None if segment.words is None else tuple(
        replace(w, start=move(w.start), end=move(w.end)) for w in segment.words)
    return replace(segment, start=move(segment.start), end=move(segment.end), words=words)


def join_segment_text(segments: list[Segment] | tuple[Segment, ...]) -> str:
    return "".join(s.text for s in segments).strip()
