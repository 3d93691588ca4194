"""The job service behind ``/v1/jobs``: accept validated audio, persist it, queue it, and answer
status, list, cancel, delete and result requests, always scoped to the caller's tenant.

Blocking (SQL, blob I/O, header probes): routes call it through a worker thread. The queue is
whatever :class:`JobQueue` the app was built with: in-process workers or Celery.

Durability order on submit: audio blob first, then the job row, then the publish. A crash between
them leaves either an orphan blob (swept by retention) or a queued row that the sweeper publishes
again; never a queued job without its audio.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from dataclasses import asdict, dataclass
from typing import Any, BinaryIO, Protocol

from stenod.audio.decode import probe_audio
from stenod.engines.base import TranscriptionOptions
from stenod.errors import DiarizationInputError, JobNotFoundError, JobStateError
from stenod.service.builder import build_options, parse_task_or_raise
from stenod.settings import JobsSettings, ModelSettings
from stenod.storage.blobs import BlobStore
from stenod.storage.job_store import JobRecord, JobStore, NewJob
from stenod.transcript import Segment, Task, Transcript, Word

logger = logging.getLogger(__name__)

HASH_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class JobParams:
    """Everything a worker needs to run the request again, as validated by the API."""

    model: str | None
    task: Task = Task.TRANSCRIBE
    language: str | None = None
    prompt: str | None = None
    temperature: float = 0.0
    word_timestamps: bool = False
    diarize: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "task": str(self.task)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobParams:
        known = {k: data[k] for k in ("model", "language", "prompt", "temperature", "word_timestamps",
                                      "diarize") if k in data}
        return cls(**known, task=parse_task_or_raise(data.get("task") or Task.TRANSCRIBE))

    def options(self, model_settings: ModelSettings) -> TranscriptionOptions:
        """The same options the synchronous routes build (:func:`stenod.service.build_options`)."""
        return build_options(
            model_settings, language=self.language, task=self.task, temperature=self.temperature,
            prompt=self.prompt, word_timestamps=self.word_timestamps,
        )


class JobQueue(Protocol):
    """Hands job ids to workers. ``publish`` may deliver a job twice; workers claim atomically."""

    mode: str
    """``in-process``, ``redis`` or ``amqp``."""

    def publish(self, job_id: str) -> None:
        """Raises on a broker failure; the job stays queued in the store and is published again."""
        ...

    def depth(self) -> int | None:
        """Messages waiting in the broker, or ``None`` when it cannot be asked."""
        ...


class FinalStateListener(Protocol):
    def __call__(self, job_id: str) -> None: ...


def transcript_to_json(transcript: Transcript, *, model: str) -> bytes:
    return json.dumps({"model": model, "transcript": transcript.to_dict()}, ensure_ascii=False).encode()


def transcript_from_json(data: bytes) -> tuple[Transcript, str]:
    raw = json.loads(data)
    t = raw["transcript"]
    segments = tuple(
        Segment(**{**s, "tokens": tuple(s.get("tokens") or ()),
                   "words": tuple(Word(**w) for w in s["words"]) if s.get("words") is not None else None})
        for s in t.get("segments", ())
    )
    transcript = Transcript(
        text=t["text"], language=t["language"], duration=t["duration"], segments=segments,
        language_probability=t.get("language_probability", 0.0),
        task=parse_task_or_raise(t.get("task") or Task.TRANSCRIBE),
    )
    return transcript, str(raw.get("model", ""))


def _request_hash(source: BinaryIO, params: JobParams, webhook_url: str | None) -> str:
    digest = hashlib.sha256(json.dumps([params.to_dict(), webhook_url], sort_keys=True).encode())
    source.seek(0)
    while chunk := source.read(HASH_CHUNK_BYTES):
        digest.update(chunk)
    source.seek(0)
    return digest.hexdigest()


class JobService:
    """Tenant-scoped job operations (blocking; thread-safe)."""

    def __init__(self, *, store: JobStore, blobs: BlobStore, queue: JobQueue, settings: JobsSettings,
                 max_duration_s: float, on_final: FinalStateListener | None = None) -> None:
        self.store = store
        self.blobs = blobs
        self.queue = queue
        self.settings = settings
        self.max_duration_s = max_duration_s
        self.on_final = on_final

    def check_audio_or_raise(self, source: BinaryIO, *, diarize: bool, name: str) -> None:
        """The synchronous routes' checks, from the header, before anything is stored or queued.

        Raises:
            AudioDecodeError (415), AudioTooLongError (413), EmptyAudioError, DiarizationInputError.
        """
        source.seek(0)
        probe = probe_audio(source, max_duration_s=self.max_duration_s)
        source.seek(0)
        if diarize and probe.channels < 2:
            raise DiarizationInputError(
                f"{name}: diarization needs a two-channel recording (one speaker per channel); "
                f"this file has {probe.channels} channel",
                param="diarize",
            )

    def submit(self, source: BinaryIO, params: JobParams, *, tenant_id: str, model: str,
               idempotency_key: str | None, webhook_url: str | None) -> tuple[JobRecord, bool]:
        """Store the audio and queue a job; with a known idempotency key, return that job.

        Returns (job, created).

        Raises:
            JobStateError (409): the idempotency key was used for a different request.
        """
        request_hash = _request_hash(source, params, webhook_url)
        if idempotency_key is not None:
            existing = self.store.get_by_idempotency_key(tenant_id, idempotency_key)
            if existing is not None:
                return self._same_request_or_raise(existing, request_hash), False
        audio_key = f"audio/{uuid.uuid4().hex}"
        self.blobs.put_file(audio_key, source)
        try:
            job, created = self.store.create(NewJob(
                tenant_id=tenant_id, model=model, language=params.language, params=params.to_dict(),
                audio_key=audio_key, retention_s=self.settings.retention_s, idempotency_key=idempotency_key,
                request_hash=request_hash, webhook_url=webhook_url,
            ))
        except BaseException:
            # No job row points at the audio (the database is down, say): remove it, or it would
            # stay in the store with nothing to expire it.
            self._delete_quietly(audio_key)
            raise
        if not created:  # lost a race on the same idempotency key
            self.blobs.delete(audio_key)
            return self._same_request_or_raise(job, request_hash), False
        self.publish(job.id)
        return job, True

    def _delete_quietly(self, key: str) -> None:
        try:
            self.blobs.delete(key)
        except Exception as exc:  # the blob store may be down too; the caller's error is what matters
            logger.warning("could not delete orphaned audio %s (%s: %s)", key, type(exc).__name__, exc)

    @staticmethod
    def _same_request_or_raise(job: JobRecord, request_hash: str) -> JobRecord:
        if job.request_hash != request_hash:
            raise JobStateError(
                "this Idempotency-Key was already used with a different request", param="Idempotency-Key",
                code="idempotency_key_reused",
            )
        return job

    def publish(self, job_id: str) -> bool:
        try:
            self.queue.publish(job_id)
        except Exception as exc:
            logger.warning("could not publish job %s (%s: %s); it stays queued and is published again later",
                           job_id, type(exc).__name__, exc)
            return False
        self.store.mark_published(job_id)
        return True

    def get_or_raise(self, job_id: str, *, tenant_id: str) -> JobRecord:
        job = self.store.get(job_id, tenant_id=tenant_id) if len(job_id) <= 64 else None
        if job is None:
            raise JobNotFoundError(f"no job with id {job_id[:64]!r}", param="job_id")
        return job

    def list(self, *, tenant_id: str, status: str | None, limit: int, after: str | None
             ) -> tuple[list[JobRecord], bool]:
        return self.store.list(tenant_id, status=status, limit=limit, after=after)

    def cancel_or_raise(self, job_id: str, *, tenant_id: str) -> JobRecord:
        before = self.get_or_raise(job_id, tenant_id=tenant_id)
        after = self.store.request_cancel(job_id, tenant_id=tenant_id)
        if after is None:
            raise JobNotFoundError(f"no job with id {job_id[:64]!r}", param="job_id")
        if before.status == "queued" and after.status == "cancelled" and self.on_final is not None:
            self.on_final(job_id)
        return after

    def delete_or_raise(self, job_id: str, *, tenant_id: str) -> None:
        """Delete the audio, every result and the row; a running worker loses its job (its
        completion finds no row) and discards what it produced.

        Raises:
            StorageUnavailableError (503): the blob store is down; nothing was deleted from the store.
        """
        job = self.get_or_raise(job_id, tenant_id=tenant_id)
        if job.status == "processing":
            self.store.request_cancel(job_id, tenant_id=tenant_id)
        # Blobs first: with the blob store down this raises (503) and the job is still there to
        # delete again, rather than gone with its audio left behind where nothing finds it.
        delete_job_blobs(self.blobs, job)
        self.store.delete(job_id)
        if job.status == "processing":  # its worker may have stored a result in between
            delete_job_blobs(self.blobs, job)

    def result_or_raise(self, job_id: str, *, tenant_id: str) -> tuple[JobRecord, Transcript, str]:
        job = self.get_or_raise(job_id, tenant_id=tenant_id)
        if job.status != "completed" or job.result_key is None:
            raise JobStateError(f"job {job_id} is {job.status}; its result exists once it is completed",
                                param="job_id")
        transcript, model = transcript_from_json(self.blobs.get_bytes(job.result_key))
        return job, transcript, model


def delete_job_blobs(blobs: BlobStore, job: JobRecord) -> None:
    if job.audio_key:
        blobs.delete(job.audio_key)
    for key in blobs.list(f"results/{job.id}"):
        blobs.delete(key)
