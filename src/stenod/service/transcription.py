"""Transcribe one input end to end: decode with limits, run the engine, diarize, time it.

Shared by the CLI, the HTTP routes (via the scheduler) and the batch pipeline, so every entry
point applies the same limits and produces the same Transcript.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import numpy as np

from stenod.audio.decode import (
    SAMPLE_RATE,
    AudioSource,
    AudioStream,
    DecodedAudio,
    decode_audio,
    probe_audio,
    source_name,
)
from stenod.decoding import find_speech, transcribe_with_coverage
from stenod.engines.base import Engine, ProgressCallback, SegmentCallback, TranscriptionOptions
from stenod.errors import DiarizationInputError, UnsupportedParameterError
from stenod.service.diarize import diarize_by_channel
from stenod.transcript import Transcript, shift_segment


@dataclass(frozen=True, slots=True)
class TranscriptionResult:
    transcript: Transcript
    audio_duration_s: float
    decode_s: float
    processing_s: float
    """Inference time only (decode excluded)."""
    language_probabilities: dict[str, float] | None = None
    """Set by a detect-language-only request: every language's probability."""
    speech_s: float | None = None
    """Seconds of speech Silero VAD found in the transcribed audio, where the coverage check ran
    VAD (:func:`transcribe_decoded` with timestamps and VAD not off): the CLI's coverage warning
    reads it instead of running VAD again."""

    @property
    def realtime_factor(self) -> float:
        """Processing seconds per audio second: below 1 is faster than real time."""
        return self.processing_s / self.audio_duration_s if self.audio_duration_s > 0 else 0.0


def load_audio(source: AudioSource, *, diarize: bool, max_duration_s: float) -> DecodedAudio:
    """Decode ``source``; with ``diarize`` the two channels are kept and mono input is refused.

    Raises:
        DiarizationInputError: ``diarize`` on a one-channel recording.
        AudioDecodeError, EmptyAudioError, AudioTooLongError: see :func:`decode_audio`.
    """
    if diarize:
        probe = probe_audio(source)
        if probe.channels < 2:
            raise DiarizationInputError(
                f"{source_name(source)}: diarization needs a two-channel recording (one speaker per channel); "
                f"this file has {probe.channels} channel",
                param="diarize",
            )
        if not isinstance(source, (str, os.PathLike)):
            source.seek(0)  # the probe read the header of this file object
    return decode_audio(source, keep_channels=diarize, max_duration_s=max_duration_s)


def transcribe_decoded(
    engine: Engine,
    audio: DecodedAudio,
    options: TranscriptionOptions,
    *,
    diarize: bool = False,
    progress: ProgressCallback | None = None,
    on_segment: SegmentCallback | None = None,
    cancel: threading.Event | None = None,
) -> TranscriptionResult:
    """Run ``engine`` through the coverage check (:func:`transcribe_with_coverage`) on ``audio`` (or the part ``options.offset_s`` / ``duration_s`` select, with
    times put back on the whole file's timeline), then diarize.

    Raises:
        UnsupportedParameterError: the offset is past the end of the audio.
        the engine's errors.
    """
    started = time.perf_counter()
    whole_s = audio.duration_s
    clipped = options.offset_s > 0 or options.duration_s is not None
    if clipped:
        if options.offset_s >= whole_s > 0:
            raise UnsupportedParameterError(
                f"offset {options.offset_s:g} s is past the end of the audio ({whole_s:.1f} s)", param="offset")
        audio = audio.clipped(options.offset_s, options.duration_s)
        if on_segment is not None:  # streamed segments carry whole-file times too
            on_segment = _shifting(on_segment, options.offset_s, audio.duration_s)
    # The coverage check's VAD stretches, found here so the result can carry their length.
    checked = options.vad is not False and not options.without_timestamps and len(audio.samples) > 0
    speech = find_speech(audio.samples, threshold=options.vad_threshold) if checked else None
    transcript = transcribe_with_coverage(
        engine, audio.samples, options, speech=speech, progress=progress, on_segment=on_segment, cancel=cancel
    )
    if diarize and audio.channels is not None:
        transcript = diarize_by_channel(transcript, audio.channels)
    if clipped:
        transcript = transcript.shifted(options.offset_s, duration=whole_s, clip_s=audio.duration_s)
    return TranscriptionResult(
        transcript=transcript,
        audio_duration_s=audio.duration_s,
        decode_s=0.0,
        processing_s=time.perf_counter() - started,
        speech_s=None if speech is None else sum(s.duration for s in speech),
    )


def _shifting(on_segment: SegmentCallback, offset_s: float, clip_s: float) -> SegmentCallback:
    return lambda segment: on_segment(shift_segment(segment, offset_s, clip_s=clip_s))


def open_audio(source: AudioSource, *, diarize: bool, max_duration_s: float) -> AudioStream:
    """Open ``source`` as a stream (header checks done); with ``diarize`` the two channels are
    kept and mono input is refused.

    Raises:
        DiarizationInputError: ``diarize`` on a one-channel recording.
        AudioDecodeError, EmptyAudioError, AudioTooLongError: see :class:`AudioStream`.
    """
    stream = AudioStream(source, keep_channels=diarize, max_duration_s=max_duration_s)
    if diarize and stream.source_channels < 2:
        stream.close()
        raise DiarizationInputError(
            f"{stream.name}: diarization needs a two-channel recording (one speaker per channel); "
            f"this file has {stream.source_channels} channel",
            param="diarize",
        )
    return stream


def read_head(source: AudioSource, *, seconds: float, max_duration_s: float) -> tuple[np.ndarray, bool]:
    """The first ``seconds`` of ``source`` as 16 kHz mono float32 (for language detection and
    quality checks without holding a long file in memory), and whether that is the whole audio.
    A file object is read from its start and rewound.

    Raises:
        AudioDecodeError, EmptyAudioError, AudioTooLongError: see :class:`AudioStream`.
    """
    if hasattr(source, "seek"):
        source.seek(0)
    wanted = int(seconds * SAMPLE_RATE)
    pieces: list[np.ndarray] = []
    got = 0
    complete = True
    with open_audio(source, diarize=False, max_duration_s=max_duration_s) as stream:
        for block in stream.blocks():
            mono = block[0] if block.ndim == 2 else block
            pieces.append(mono[: wanted - got])
            got += len(pieces[-1])
            if got >= wanted:
                complete = False
                break
    if hasattr(source, "seek"):
        source.seek(0)
    samples = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    return samples.astype(np.float32, copy=False), complete


def transcribe_source(
    engine: Engine,
    source: AudioSource,
    options: TranscriptionOptions,
    *,
    max_duration_s: float,
    diarize: bool = False,
    progress: ProgressCallback | None = None,
    on_segment: SegmentCallback | None = None,
    cancel: threading.Event | None = None,
    chunk_s: float | None = None,
) -> TranscriptionResult:
    """Decode and transcribe in bounded memory: audio longer than ``chunk_s`` (default
    :data:`~stenod.service.long_audio.DEFAULT_CHUNK_S`) is streamed and transcribed chunk by
    chunk (:func:`~stenod.service.long_audio.transcribe_stream`).

    Raises:
        the domain errors of :func:`open_audio`, the decoder and the engine.
    """
    from stenod.service.long_audio import DEFAULT_CHUNK_S, transcribe_stream  # it imports this module

    with open_audio(source, diarize=diarize, max_duration_s=max_duration_s) as stream:
        return transcribe_stream(
            engine, stream, options, chunk_s=chunk_s or DEFAULT_CHUNK_S, diarize=diarize,
            progress=progress, on_segment=on_segment, cancel=cancel,
        )
