"""The transcription service behind the HTTP API (and, later, job workers): validate the upload
from its header, wait for an inference slot, decode and transcribe in that slot, record metrics.

Async on the outside, blocking work on the scheduler's threads inside.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

import anyio.to_thread
import numpy as np

from stenod.audio import SAMPLE_RATE, AudioFile, AudioProbe, probe_audio
from stenod.engines.base import CancelledError, Engine, ProgressCallback, SegmentCallback, TranscriptionOptions
from stenod.errors import ClientDisconnectedError, StenodError
from stenod.observability.metrics import Metrics
from stenod.scheduler.memory import MemoryBudget, request_memory_bytes
from stenod.scheduler.model_manager import OTHER_MODEL_LABEL, ModelManager
from stenod.scheduler.slots import SlotScheduler
from stenod.service.long_audio import DEFAULT_CHUNK_S
from stenod.service.transcription import TranscriptionResult, read_head, transcribe_source
from stenod.transcript import Transcript

logger = logging.getLogger(__name__)

DETECT_WINDOW_S = 30.0


class Quota(Protocol):
    """A caller's per-key allowance (:class:`stenod.api.ratelimit.KeyQuota`)."""

    def charge_audio(self, seconds: float) -> None:
        """Raises RateLimitedError when ``seconds`` more audio would pass the allowance."""

    def concurrent(self) -> AbstractContextManager[None]:
        """Hold one of the caller's concurrent-request slots; raises RateLimitedError when none is free."""


@dataclass(frozen=True, slots=True)
class TranscriptionRequest:
    """One request as the API parsed it."""

    model: str | None
    options: TranscriptionOptions
    endpoint: str
    diarize: bool = False
    detect_language_only: bool = False
    """Identify the language (first 30 s) and stop: whisper.cpp's ``detect_language``."""
    quota: Quota | None = None
    """The calling key's limits; ``None``: unlimited."""


@dataclass(frozen=True, slots=True)
class ServedTranscription:
    result: TranscriptionResult
    model: str
    queue_wait_s: float


class TranscriptionService:
    def __init__(
        self,
        *,
        manager: ModelManager,
        scheduler: SlotScheduler,
        metrics: Metrics,
        max_duration_s: float,
        request_timeout_s: float,
        print_progress: bool = False,
        chunk_s: float | None = None,
        memory: MemoryBudget | None = None,
    ) -> None:
        self.manager = manager
        self.scheduler = scheduler
        self.metrics = metrics
        self.max_duration_s = max_duration_s
        self.request_timeout_s = request_timeout_s
        self.print_progress = print_progress
        self.chunk_s = chunk_s
        self.memory = memory or MemoryBudget(0)

    async def transcribe(
        self,
        source: AudioFile,
        request: TranscriptionRequest,
        *,
        cancel: threading.Event,
        on_segment: SegmentCallback | None = None,
    ) -> ServedTranscription:
        """Transcribe an uploaded file.

        Raises:
            AudioDecodeError, EmptyAudioError, AudioTooLongError: bad upload (checked before queueing).
            QueueFullError, DeadlineExceededError: no capacity in time.
            ClientDisconnectedError: the client went away and the work was abandoned.
            UnsupportedParameterError, ModelNotFoundError, ModelLoadError: model problems.
        """
        started = time.monotonic()
        deadline = started + self.request_timeout_s
        language = request.options.language or "auto"
        model_label = OTHER_MODEL_LABEL
        try:
            # Before anything else: a name the server does not offer is a 404 that has touched
            # neither the file system nor the queue.
            requested = self.manager.check_client_model_or_raise(request.model)
            model_label = self.manager.metrics_label(requested)
            probe = await anyio.to_thread.run_sync(self._check_header, source)
            waited = 0.0

            def record_wait(seconds: float) -> None:
                nonlocal waited
                waited = seconds
                self.metrics.queue_wait.observe(seconds)

            # Reserved while queued and running: work past the key's limits is refused (429) at
            # once; work that would take the server past its memory budget waits for memory (FIFO,
            # holding no slot) and is refused only if it can never fit or waits too long.
            needed = request_memory_bytes(probe.duration_s, chunk_s=self.chunk_s or DEFAULT_CHUNK_S)
            quota = request.quota
            with quota.concurrent() if quota else contextlib.nullcontext():
                async with self.memory.reserve(needed, deadline=deadline):
                    if quota is not None and probe.duration_s is not None:
                        quota.charge_audio(probe.duration_s)
                    name, result = await self.scheduler.run(
                        lambda: self._run_in_slot(source, requested, request, cancel, on_segment),
                        deadline=deadline,
                        cancel=cancel,
                        on_wait=record_wait,
                    )
        except StenodError as exc:
            self._record_failure(request.endpoint, model_label, language, exc)
            raise
        except asyncio.CancelledError:
            self._record_failure(request.endpoint, model_label, language, ClientDisconnectedError("client disconnected"))
            raise
        if request.quota is not None and probe.duration_s is None:
            self._charge_after(request.quota, result)
        elapsed = time.monotonic() - started
        detected = result.transcript.language or language
        m = self.metrics
        label = self.manager.metrics_label(name)
        m.requests.labels(request.endpoint, label, detected, "200").inc()
        m.latency.labels(request.endpoint, label).observe(elapsed)
        m.audio_duration.labels(label).observe(result.audio_duration_s)
        m.audio_seconds.labels(label).inc(result.audio_duration_s)
        m.realtime_factor.labels(label).observe(result.realtime_factor)
        logger.info(
            "transcribed %.1f s of audio with %s in %.2f s (rtf %.3f, waited %.2f s)",
            result.audio_duration_s, name, result.processing_s, result.realtime_factor, waited,
        )
        return ServedTranscription(result=result, model=name, queue_wait_s=waited)

    @staticmethod
    def _charge_after(quota: Quota, result: TranscriptionResult) -> None:
        """Audio whose container declared no duration is charged once decoded (never refused
        afterwards: the work is done)."""
        with contextlib.suppress(StenodError):
            quota.charge_audio(result.audio_duration_s)

    def _record_failure(self, endpoint: str, model: str, language: str, exc: StenodError) -> None:
        status = str(exc.status_code)
        self.metrics.requests.labels(endpoint, model, language, status).inc()
        self.metrics.errors.labels(endpoint, model, language, status, exc.code or exc.error_type).inc()

    def _check_header(self, source: AudioFile) -> AudioProbe:
        probe = probe_audio(source, max_duration_s=self.max_duration_s)
        source.seek(0)
        return probe

    def _run_in_slot(
        self,
        source: AudioFile,
        model: str,
        request: TranscriptionRequest,
        cancel: threading.Event,
        on_segment: SegmentCallback | None,
    ) -> tuple[str, TranscriptionResult]:
        if cancel.is_set():
            raise ClientDisconnectedError("client disconnected before transcription started")
        name, engine = self.manager.acquire(model)
        try:
            if request.detect_language_only:  # Whisper detects from the first 30 s only
                samples, _ = read_head(source, seconds=DETECT_WINDOW_S, max_duration_s=self.max_duration_s)
                return name, _detect_only(engine, samples, len(samples) / SAMPLE_RATE, request)
            progress = self._progress_logger(name) if self.print_progress else None
            # Streamed and chunked: memory stays bounded whatever the audio's duration.
            return name, transcribe_source(
                engine, source, request.options, max_duration_s=self.max_duration_s, diarize=request.diarize,
                progress=progress, on_segment=on_segment, cancel=cancel, chunk_s=self.chunk_s,
            )
        except CancelledError as exc:
            raise ClientDisconnectedError("client disconnected; transcription abandoned") from exc
        finally:
            self.manager.release(name)

    @staticmethod
    def _progress_logger(model: str) -> ProgressCallback:
        def progress(done: float, total: float) -> None:
            logger.info("progress %s: %.0f%% (%.1f/%.1f s)", model, 100 * done / max(total, 1e-9), done, total)

        return progress


def _detect_only(engine: Engine, samples: np.ndarray, duration_s: float, request: TranscriptionRequest) -> TranscriptionResult:
    started = time.perf_counter()
    detection = engine.detect_language(samples)
    transcript = Transcript(text="", language=detection.language, duration=duration_s,
                            language_probability=detection.probability, task=request.options.task)
    return TranscriptionResult(transcript=transcript, audio_duration_s=duration_s, decode_s=0.0,
                               processing_s=time.perf_counter() - started,
                               language_probabilities=dict(detection.all_probabilities))
