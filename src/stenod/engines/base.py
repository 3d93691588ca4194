"""The engine protocol: what the CLI, the scheduler, the batch pipeline and (later) job workers call.

Engines know nothing about HTTP, jobs or storage. They take 16 kHz mono float32 samples and
options, and return a :class:`~stenod.transcript.Transcript`. Engines must be safe to call from
``EngineInfo.max_concurrency`` threads at once; callers bound concurrency, engines do not queue.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from stenod.errors import UnsupportedParameterError
from stenod.transcript import Segment, Transcript

Task = Literal["transcribe", "translate"]
ProgressCallback = Callable[[float, float], None]
"""Called with (seconds of audio done, total seconds) as segments complete."""
SegmentCallback = Callable[[Segment], None]
"""Called with each segment as soon as it is decoded (used for streaming responses)."""

TEMPERATURE_STEP = 0.2


def temperature_schedule(start: float) -> tuple[float, ...]:
    """Whisper's fallback: retry a window at ``start``, ``start + 0.2`` … 1.0 when decoding fails
    its compression-ratio or log-probability checks (openai-whisper's CLI does the same)."""
    if start >= 1.0:
        return (start,)
    steps = int(round((1.0 - start) / TEMPERATURE_STEP))
    return tuple(round(start + i * TEMPERATURE_STEP, 2) for i in range(steps + 1))


@dataclass(frozen=True, slots=True)
class TranscriptionOptions:
    """Decoding knobs, the same for every engine."""

    language: str | None = None
    """ISO-639-1 code; ``None`` detects the language (multilingual models only)."""
    task: Task = "transcribe"
    beam_size: int = 1
    temperature: tuple[float, ...] = temperature_schedule(0.0)
    initial_prompt: str | None = None
    word_timestamps: bool = False
    vad: bool | None = None
    """``None``: on when the audio is longer than ``vad_min_duration_s``."""
    vad_min_duration_s: float = 30.0
    condition_on_previous_text: bool = True
    without_timestamps: bool = False
    batch_size: int = 0
    """> 1 decodes up to this many VAD-cut windows of one file in one batch (faster-whisper's
    BatchedInferencePipeline): faster for long audio, at some cost in context across windows."""

    def vad_enabled(self, duration_s: float) -> bool:
        return self.vad if self.vad is not None else duration_s > self.vad_min_duration_s


@dataclass(frozen=True, slots=True)
class LanguageDetection:
    language: str
    probability: float
    all_probabilities: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EngineInfo:
    engine: str
    model: str
    model_path: str
    device: str
    compute_type: str
    threads: int
    max_concurrency: int
    """How many ``transcribe`` calls may run at once on this instance."""
    multilingual: bool


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """How to load an engine: the resolved model plus device and thread choices."""

    model_name: str
    model_path: str
    multilingual: bool
    device: str = "cpu"
    compute_type: str = "int8"
    threads: int = 1
    concurrency: int = 1
    trim_encoder: bool = True
    """Run the encoder on a short clip's audio only, with a guarded fallback to the full window
    (faster-whisper; see :mod:`stenod.engines.window_guard`)."""


def check_model_supports_or_raise(options: TranscriptionOptions, *, model_name: str, multilingual: bool) -> None:
    """English-only models (``*.en``) can neither translate nor transcribe other languages.

    Raises:
        UnsupportedParameterError: naming ``task`` or ``language`` as the offending parameter.
    """
    if multilingual:
        return
    if options.task == "translate":
        raise UnsupportedParameterError(
            f"model {model_name!r} is English-only and cannot translate; use a multilingual model such as 'base'",
            param="task",
        )
    if options.language not in (None, "en"):
        raise UnsupportedParameterError(
            f"model {model_name!r} is English-only; language {options.language!r} needs a multilingual model such as 'base'",
            param="language",
        )


class CancelledError(Exception):
    """Raised inside an engine when the caller's cancel event is set between segments."""


@runtime_checkable
class Engine(Protocol):
    def transcribe(
        self,
        audio: np.ndarray,
        options: TranscriptionOptions,
        *,
        progress: ProgressCallback | None = None,
        on_segment: SegmentCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Transcript:
        """Transcribe (or translate) 16 kHz mono float32 ``audio``.

        Raises:
            UnsupportedParameterError: e.g. translation or a non-English language on an
                English-only model.
            CancelledError: ``cancel`` was set; checked between segments.
        """
        ...

    def detect_language(self, audio: np.ndarray) -> LanguageDetection: ...

    def info(self) -> EngineInfo: ...

    def close(self) -> None:
        """Free the weights; the instance must not be used afterwards."""
        ...
