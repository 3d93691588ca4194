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

    @property
    def words(self) -> list[Word]:
        return [w for s in self.segments for w in (s.words or ())]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["task"] = str(self.task)
        return data


def join_segment_text(segments: list[Segment] | tuple[Segment, ...]) -> str:
    return "".join(s.text for s in segments).strip()
