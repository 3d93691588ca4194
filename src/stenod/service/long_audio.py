"""Transcribe audio of any length in bounded memory: decode as a stream, cut it into chunks of at
most ``chunk_s`` seconds at quiet points, and run the one per-array function
(:func:`~stenod.service.transcription.transcribe_decoded`) on each chunk, so everything that
function does (clipping, coverage checks, diarization) applies per chunk.

Across chunks, the result reads like one transcription of the whole file:

- times are put on the whole file's timeline, segment ids numbered through;
- the language is detected once, from the first chunk that has speech, and given to every later
  chunk (a later silent or noisy chunk cannot flip it);
- each chunk after the first gets the end of the previous chunk's text as its prompt (when
  ``condition_on_previous_text``), as Whisper conditions each 30 s window on the one before;
- VAD is decided from the whole file's length, not the chunk's.

Audio no longer than one chunk is one call of ``transcribe_decoded`` on the whole array: the same
result as before streaming existed. Memory is about one chunk's samples plus the engine's working
set, whatever the duration (docs/RELIABILITY.md has the measurements).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace

from stenod.audio.chunking import AudioChunk, quiet_chunks
from stenod.audio.decode import SAMPLE_RATE, AudioStream, decoded_from_pcm
from stenod.engines.base import CancelledError, Engine, ProgressCallback, SegmentCallback, TranscriptionOptions
from stenod.errors import UnsupportedParameterError
from stenod.service.transcription import TranscriptionResult, transcribe_decoded
from stenod.transcript import Segment, Transcript, shift_segment

DEFAULT_CHUNK_S = 300.0
SILENT_PEAK = 2e-4
"""A chunk whose loudest sample is below this (about -74 dBFS, a few 16-bit steps) is digital
silence: it is skipped without running the engine (a silence upload costs decoding only, and
Whisper cannot hallucinate text on it)."""
PROMPT_CONTEXT_CHARS = 200
"""Characters of the previous chunk's text given as the next chunk's prompt (Whisper keeps at most
224 prompt tokens; 200 characters is well inside that)."""


def transcribe_stream(
    engine: Engine,
    stream: AudioStream,
    options: TranscriptionOptions,
    *,
    chunk_s: float = DEFAULT_CHUNK_S,
    diarize: bool = False,
    progress: ProgressCallback | None = None,
    on_segment: SegmentCallback | None = None,
    cancel: threading.Event | None = None,
) -> TranscriptionResult:
    """Transcribe an open :class:`AudioStream` chunk by chunk.

    Memory: one chunk of at most ``chunk_s`` seconds (plus one decoder block and the quiet-point
    search tail) is held at a time, whatever the audio's duration.

    Raises:
        the stream's decode errors (possibly after some chunks were transcribed: a file truncated
        late is still reported), UnsupportedParameterError (offset past the end), the engine's
        errors, CancelledError between chunks when ``cancel`` is set.
    """
    started = time.perf_counter()
    chunks = quiet_chunks(stream.blocks(), chunk_s=chunk_s)
    first = next(chunks)
    if first.last:
        audio = decoded_from_pcm(first.pcm, stereo=stream.stereo, source_sample_rate=stream.source_sample_rate,
                                 source_channels=stream.source_channels)
        del first
        decode_s = time.perf_counter() - started
        result = transcribe_decoded(engine, audio, options, diarize=diarize, progress=progress,
                                    on_segment=on_segment, cancel=cancel)
        return replace(result, decode_s=decode_s)
    return _transcribe_chunks(engine, stream, first, chunks, options, chunk_s=chunk_s, diarize=diarize,
                              progress=progress, on_segment=on_segment, cancel=cancel, started=started)


def _transcribe_chunks(
    engine: Engine,
    stream: AudioStream,
    first: AudioChunk,
    rest: Iterator[AudioChunk],
    options: TranscriptionOptions,
    *,
    chunk_s: float,
    diarize: bool,
    progress: ProgressCallback | None,
    on_segment: SegmentCallback | None,
    cancel: threading.Event | None,
    started: float,
) -> TranscriptionResult:
    # Longer than one chunk, so at least chunk_s long: VAD follows the whole file's length.
    vad = options.vad_enabled(max(chunk_s, stream.declared_s or 0.0))
    clip_start = int(round(options.offset_s * SAMPLE_RATE))
    clip_end = None if options.duration_s is None else clip_start + int(round(options.duration_s * SAMPLE_RATE))
    base = replace(options, vad=vad, offset_s=0.0, duration_s=None)
    total_hint = stream.declared_s
    language = options.language
    detected_from: Transcript | None = None
    prompt = options.initial_prompt
    segments: list[Segment] = []
    processing_s = 0.0
    skipped_s = 0.0
    last_transcript: Transcript | None = None

    def chunks() -> Iterator[AudioChunk]:
        yield first
        yield from rest

    for chunk in chunks():
        if cancel is not None and cancel.is_set():
            raise CancelledError("transcription cancelled between chunks")
        lo = max(chunk.start_sample, clip_start)
        hi = chunk.start_sample + chunk.pcm.shape[-1]
        if clip_end is not None:
            hi = min(hi, clip_end)
        if hi <= lo:
            if clip_end is not None and chunk.start_sample >= clip_end:
                break  # past the requested part: stop decoding
            continue
        pcm = chunk.pcm[:, lo - chunk.start_sample : hi - chunk.start_sample]
        if max(float(pcm.max()), -float(pcm.min())) < SILENT_PEAK:  # no abs(): no chunk-sized copy
            skipped_s += pcm.shape[-1] / SAMPLE_RATE
            continue
        audio = decoded_from_pcm(pcm, stereo=stream.stereo, source_sample_rate=stream.source_sample_rate,
                                 source_channels=stream.source_channels)
        offset_s = lo / SAMPLE_RATE
        chunk_options = replace(base, language=language, initial_prompt=prompt)
        result = transcribe_decoded(
            engine, audio, chunk_options, diarize=diarize,
            progress=_offset_progress(progress, offset_s, total_hint),
            on_segment=_offset_segments(on_segment, offset_s, audio.duration_s, len(segments)),
            cancel=cancel,
        )
        del audio, pcm
        processing_s += result.processing_s
        transcript = result.transcript
        last_transcript = transcript
        for seg in transcript.segments:
            segments.append(replace(shift_segment(seg, offset_s, clip_s=result.audio_duration_s), id=len(segments)))
        if detected_from is None and transcript.segments:
            # The first speech decides the language for the rest of the file.
            detected_from = transcript
            language = language or transcript.language
        if options.condition_on_previous_text and transcript.text:
            prompt = transcript.text[-PROMPT_CONTEXT_CHARS:].lstrip()
    whole_s = stream.decoded_s
    if last_transcript is None and not skipped_s:
        raise UnsupportedParameterError(
            f"offset {options.offset_s:g} s is past the end of the audio ({whole_s:.1f} s)", param="offset")
    decided = detected_from or last_transcript
    transcript = Transcript.from_segments(
        segments, language=language or (decided.language if decided else "en"), duration=whole_s,
        language_probability=decided.language_probability if decided else 0.0, task=options.task,
    )
    if progress is not None:
        progress(whole_s, whole_s)
    elapsed = time.perf_counter() - started
    return TranscriptionResult(
        transcript=transcript, audio_duration_s=whole_s, decode_s=max(0.0, elapsed - processing_s),
        processing_s=processing_s,
    )


def _offset_progress(progress: ProgressCallback | None, offset_s: float, total_hint: float | None) -> ProgressCallback | None:
    if progress is None:
        return None

    def report(done: float, total: float) -> None:
        progress(offset_s + done, max(total_hint or 0.0, offset_s + total))

    return report


def _offset_segments(on_segment: SegmentCallback | None, offset_s: float, clip_s: float, first_id: int) -> SegmentCallback | None:
    if on_segment is None:
        return None
    count = 0

    def emit(segment: Segment) -> None:
        nonlocal count
        on_segment(replace(shift_segment(segment, offset_s, clip_s=clip_s), id=first_id + count))
        count += 1

    return emit
