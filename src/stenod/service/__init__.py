"""The service layer: what the CLI, the API, the batch pipeline, benchmarks and job workers share.

* :mod:`~stenod.service.builder`: settings + per-call choices -> ``TranscriptionOptions``; settings
  -> a loaded engine or a model manager. The one way in for building either.
* :mod:`~stenod.service.transcription`: decode + transcribe + diarize one input (blocking).
* :mod:`~stenod.service.server_transcription`: the async service behind the API (probe, slot,
  decode, transcribe, metrics).

Import from here; the modules are implementation detail.
"""

from stenod.service.builder import (
    SINGLE_CALL_MAX_THREADS,
    EngineFactory,
    build_model_manager,
    build_options,
    check_supported_or_raise,
    engine_factory,
    job_worker_cpu_plan,
    load_engine,
    model_access,
    parse_task_or_raise,
    prepare_model,
    resolve_model,
    server_cpu_plan,
    single_call_threads,
    threads_per_process,
)
from stenod.service.quality import coverage_warning, detect_foreign_speech, speech_seconds
from stenod.service.server_transcription import ServedTranscription, TranscriptionRequest, TranscriptionService
from stenod.service.transcription import (
    TranscriptionResult,
    load_audio,
    read_head,
    transcribe_decoded,
    transcribe_source,
)

__all__ = [
    "SINGLE_CALL_MAX_THREADS",
    "EngineFactory",
    "ServedTranscription",
    "TranscriptionRequest",
    "TranscriptionResult",
    "TranscriptionService",
    "build_model_manager",
    "build_options",
    "check_supported_or_raise",
    "coverage_warning",
    "detect_foreign_speech",
    "engine_factory",
    "job_worker_cpu_plan",
    "load_audio",
    "load_engine",
    "model_access",
    "parse_task_or_raise",
    "prepare_model",
    "read_head",
    "resolve_model",
    "server_cpu_plan",
    "single_call_threads",
    "speech_seconds",
    "threads_per_process",
    "transcribe_decoded",
    "transcribe_source",
]
