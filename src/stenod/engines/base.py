"""The engine protocol: what the CLI, the scheduler, the batch pipeline and (later) job workers call.

Engines know nothing about HTTP, jobs or storage. They take 16 kHz mono float32 samples and
options, and return a :class:`~stenod.transcript.Transcript`. Engines must be safe to call from
``EngineInfo.max_concurrency`` threads at once; callers bound concurrency, engines do not queue.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from stenod.errors import UnsupportedParameterError
from stenod.transcript import Segment, Task, Transcript

ProgressCallback = Callable[[float, float], None]
"""Called with (seconds of audio done, total seconds) as segments complete."""
SegmentCallback = Callable[[Segment], None]
"""Called with each segment as soon as it is decoded (used for streaming responses)."""

TEMPERATURE_STEP = 0.2


MIN_TEMPERATURE_STEP = 0.01
"""The finest fallback step (temperatures are rounded to two decimals)."""


def temperature_schedule(start: float, step: float = TEMPERATURE_STEP) -> tuple[float, ...]:
    """Whisper's fallback: retry a window at ``start``, ``start + step`` … 1.0 when decoding fails
    its compression-ratio or log-probability checks (openai-whisper's CLI does the same).
    ``step`` 0 means no fallback: one temperature only."""
    if start >= 1.0 or not step > 0 or not math.isfinite(step):  # `not >` also catches NaN
        return (start,)
    # Temperatures are kept to two decimals, so a finer step only repeats them; a tiny step from a
    # client (1e-300) must not become a schedule of astronomically many entries.
    step = max(step, MIN_TEMPERATURE_STEP)
    steps = int((1.0 - start) / step + 1e-9)  # never past 1.0
    return tuple(round(start + i * step, 2) for i in range(steps + 1))


@dataclass(frozen=True, slots=True)
class WindowGroup:
    """Windows of one file that a caller decodes at the same moment, one ``transcribe`` call each
    (a wave of the coverage check's first pass). An engine that batches waits for all of them
    (briefly) and splits them evenly over its workers, instead of batching whatever arrived
    first and leaving a worker idle."""

    id: int
    """Unique among the groups in flight (the coverage check takes them from a counter)."""
    size: int
    member: int = 0
    """This window's place in the group (0 .. ``size`` - 1): with the windows' lengths it fixes
    which windows share a batch, whatever order their threads reach the engine in, so the same
    file is decoded the same way every time."""


@dataclass(frozen=True, slots=True)
class TranscriptionOptions:
    """Decoding knobs, the same for every engine."""

    language: str | None = None
    """ISO-639-1 code; ``None`` detects the language (multilingual models only)."""
    task: Task = Task.TRANSCRIBE
    beam_size: int = 1
    temperature: tuple[float, ...] = temperature_schedule(0.0)
    initial_prompt: str | None = None
    word_timestamps: bool = False
    vad: bool | None = None
    """``None``: on when the audio is longer than ``vad_min_duration_s``."""
    vad_min_duration_s: float = 30.0
    condition_on_previous_text: bool = True
    without_timestamps: bool = False
    hotwords: str | None = None
    """Words or phrases to favour (names, jargon). faster-whisper's ``hotwords`` (a prompt prefix
    kept for every window); whisper.cpp has no such field, so they are added to its prompt."""
    compression_ratio_threshold: float | None = 2.4
    """A window whose text compresses better than this (repetition loops) is decoded again at the
    next fallback temperature; ``None`` turns the check off. whisper.cpp has the same check as a
    token-entropy threshold: it stays at its default (2.4) and ``None`` turns it off."""
    log_prob_threshold: float | None = -1.0
    """A window whose average token log-probability is below this is decoded again at the next
    fallback temperature; ``None`` turns the check off."""
    no_speech_threshold: float | None = 0.6
    """A window is dropped as silence when its no-speech probability is above this and its
    log-probability is below ``log_prob_threshold``; ``None`` never drops windows."""
    vad_threshold: float = 0.5
    """Silero VAD speech probability above which a frame counts as speech."""
    vad_min_silence_ms: int = 2000
    """Silence shorter than this does not split speech (VAD)."""
    vad_speech_pad_ms: int = 400
    """Audio kept on each side of detected speech (VAD), so word edges are not clipped."""
    offset_s: float = 0.0
    """Transcribe from this many seconds into the audio. Applied by the service layer
    (:func:`stenod.service.transcription.transcribe_decoded`), which cuts the samples before the
    engine sees them and shifts the transcript's times back, so engines never see it."""
    duration_s: float | None = None
    """Transcribe at most this many seconds (after ``offset_s``); ``None``: to the end."""
    max_new_tokens: int | None = None
    """Most tokens one 30 s window may generate (faster-whisper's ``max_new_tokens``); ``None``:
    the model's limit (448 with the prompt). Set by the coverage check on its windows, whose audio
    length bounds the text, so a looping decode stops early instead of generating the limit at
    every fallback temperature; a window cut short is continued from its last timestamp as usual.
    Not exposed to users; whisper.cpp and the torch engine ignore it."""
    group: WindowGroup | None = None
    """Set by the coverage check on first-pass windows decoded together (not a user option);
    engines that do not batch ignore it."""
    batch_size: int = 0
    """> 1 decodes up to this many VAD-cut windows of one file in one batch (faster-whisper's
    BatchedInferencePipeline): faster for long audio, at some cost in context across windows."""

    def vad_enabled(self, duration_s: float) -> bool:
        return self.vad if self.vad is not None else duration_s > self.vad_min_duration_s

    def prompt_with_hotwords(self) -> str | None:
        """The initial prompt with the hotwords in front, for engines without a hotwords field."""
        parts = [p.strip() for p in (self.hotwords, self.initial_prompt) if p and p.strip()]
        return " ".join(parts) or None


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
    max_batch: int = 1
    """Most windows one worker decodes together in one call (faster-whisper's batcher on CPU);
    1 where calls never share a decode."""


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
    parallel_windows: bool = False
    """Decode long (VAD) audio as independent windows in parallel on the CTranslate2 workers
    (faster-whisper, needs ``trim_encoder``). Off by default: on 2 cores it measured slower per
    CPU second and less accurate than the sequential path (docs/BENCHMARKS.md, issue 10)."""
    batch_size: int = 1
    """Most short clips (trimmed windows) decoded together in one CTranslate2 call, from one caller
    or several (faster-whisper, needs ``trim_encoder``); 1 decodes every clip on its own."""
    batch_wait_ms: float = 3.0
    """Longest a clip waits for company when a CTranslate2 worker is free (``batch_size`` > 1)."""


def check_model_supports_or_raise(options: TranscriptionOptions, *, model_name: str, multilingual: bool) -> None:
    """English-only models (``*.en``) can neither translate nor transcribe other languages.

    Raises:
        UnsupportedParameterError: naming ``task`` or ``language`` as the offending parameter.
    """
    if multilingual:
        return
    if options.task == Task.TRANSLATE:
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
