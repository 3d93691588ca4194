"""Run one job on a worker (in-process thread or Celery child): claim it, keep its lease alive,
decode and transcribe through the service layer, store the result once, record the final state.

The same code runs in both modes, so the guarantees are the same: a job is claimed atomically,
a result only counts if the worker still holds the lease when it completes (a worker that was
presumed dead and comes back discards its result), cancellation is read from the store by the
lease keeper and stops the engine at the next window.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from stenod.engines.base import CancelledError
from stenod.errors import StenodError, StorageUnavailableError
from stenod.scheduler.model_manager import ModelManager
from stenod.service.jobs import JobParams, transcript_to_json
from stenod.service.transcription import transcribe_source
from stenod.settings import JobsSettings, ModelSettings
from stenod.storage.blobs import BlobStore
from stenod.storage.job_store import Claim, JobStore

logger = logging.getLogger(__name__)

HEARTBEAT_MAX_INTERVAL_S = 2.0
"""Progress reaches the store at least this often (and the lease is renewed every third of it)."""


@dataclass(eq=False)  # identity semantics: kept in a set of running jobs
class LeaseKeeper:
    """Renews a claimed job's lease on a daemon thread, saves progress, and turns a cancel request
    (or a lost lease) into the engine's cancel event."""

    store: JobStore
    job_id: str
    token: str
    lease_s: float
    cancel: threading.Event = field(default_factory=threading.Event)
    progress: float = 0.0
    cancel_requested: bool = False
    lost: bool = False
    released: bool = False
    """Set by a shutting-down worker: stop and hand the job back to the queue, no attempt counted."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> LeaseKeeper:
        self._thread = threading.Thread(target=self._loop, name=f"lease-{self.job_id[-8:]}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def release(self) -> None:
        self.released = True
        self.cancel.set()

    def on_progress(self, done_s: float, total_s: float) -> None:
        self.progress = done_s / total_s if total_s > 0 else 0.0

    def _loop(self) -> None:
        interval = min(self.lease_s / 3, HEARTBEAT_MAX_INTERVAL_S)
        while not self._stop.wait(interval):
            try:
                owned, cancel = self.store.heartbeat(self.job_id, self.token, progress=self.progress,
                                                     lease_s=self.lease_s)
            except Exception as exc:
                logger.warning("job %s: could not renew its lease (%s); retrying", self.job_id, type(exc).__name__)
                continue
            if cancel:
                self.cancel_requested = True
                self.cancel.set()
            if not owned:
                self.lost = True
                self.cancel.set()


@dataclass(frozen=True, slots=True)
class RunOutcome:
    outcome: str
    """``completed``, ``failed``, ``cancelled``, ``lost`` (another worker owns it now), or a
    claim outcome that did not run (``held``, ``final``, ``missing``, ``poisoned``, ...)."""
    retry_in_s: float = 0.0


class JobRunner:
    """Claims and runs jobs with one :class:`ModelManager` (the model loaded once per process).

    Args:
        chunk_s: audio longer than this is decoded and transcribed chunk by chunk (bounded memory).
        on_final: called with the job id after this runner moved a job to a final state (webhooks).
    """

    def __init__(self, *, store: JobStore, blobs: BlobStore, manager: ModelManager, jobs: JobsSettings,
                 model_settings: ModelSettings, max_duration_s: float, worker_id: str,
                 chunk_s: float | None = None, on_final: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.blobs = blobs
        self.manager = manager
        self.jobs = jobs
        self.model_settings = model_settings
        self.max_duration_s = max_duration_s
        self.worker_id = worker_id
        self.chunk_s = chunk_s
        self.on_final = on_final
        self._stopping = threading.Event()
        self._running: set[LeaseKeeper] = set()
        self._lock = threading.Lock()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def active(self) -> int:
        """Jobs this runner is running now."""
        with self._lock:
            return len(self._running)

    def release_all(self) -> int:
        """Warm shutdown: every job this runner is running stops at its next window and goes back
        to the queue (no attempt counted); jobs not started yet are not claimed. Returns how many
        running jobs were asked to stop. Safe to call from a signal handler's helper thread."""
        with self._lock:
            self._stopping.set()
            keepers = list(self._running)
        for keeper in keepers:
            keeper.release()
        return len(keepers)

    def claim(self, job_id: str) -> Claim:
        claim = self.store.claim(job_id, worker_id=self.worker_id, lease_s=self.jobs.lease_s,
                                 max_attempts=self.jobs.max_attempts)
        if claim.outcome in ("poisoned", "cancelled"):
            logger.warning("job %s %s at claim (attempts %d)", job_id, claim.outcome,
                           claim.job.attempts if claim.job else 0)
            self._notify(job_id)
        return claim

    def keeper(self, claim: Claim) -> LeaseKeeper:
        assert claim.job is not None and claim.token is not None  # only for "claimed"
        return LeaseKeeper(self.store, claim.job.id, claim.token, self.jobs.lease_s)

    def process(self, job_id: str) -> RunOutcome:
        """Claim and run (Celery's path); returns what happened, ``held`` with a retry delay, or
        ``released`` when the worker is shutting down (the caller hands the message back)."""
        if self.stopping:
            return RunOutcome("released")
        claim = self.claim(job_id)
        if claim.outcome != "claimed":
            return RunOutcome(claim.outcome, retry_in_s=claim.retry_in_s)
        with self.keeper(claim) as keeper:
            with self._lock:
                self._running.add(keeper)
                if self._stopping.is_set():  # shutdown began between the claim and now
                    keeper.release()
            try:
                return self.execute(claim, keeper)
            finally:
                with self._lock:
                    self._running.discard(keeper)

    def execute(self, claim: Claim, keeper: LeaseKeeper) -> RunOutcome:
        """Run a claimed job to a final state. Domain errors fail the job with their message;
        infrastructure errors (database, blob store) propagate so the job runs again later."""
        job, token = claim.job, claim.token
        assert job is not None and token is not None
        params = JobParams.from_dict(job.params)
        retention = self.jobs.retention_s
        logger.info("job %s: attempt %d on %s (queued %.2f s)", job.id, job.attempts, self.worker_id,
                    max(0.0, time.time() - job.created_at))
        clock = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="stenod-job-") as tmp:
            path = Path(tmp) / "audio"
            try:
                self.blobs.download(job.audio_key or "", path)
            except FileNotFoundError:
                return self._finish(job.id, token, "failed", message="the job's audio is gone (deleted or expired)",
                                    code="audio_missing")
            except StorageUnavailableError:
                self._hand_back_after_storage_error(job.id, token, "read its audio")
                raise
            download_s = time.monotonic() - clock
            try:
                name, engine = self.manager.acquire(params.model)
                try:
                    with path.open("rb") as source:
                        # Streamed and chunked like the synchronous path: bounded memory for hours of audio.
                        result = transcribe_source(
                            engine, source, params.options(self.model_settings),
                            max_duration_s=self.max_duration_s, diarize=params.diarize,
                            progress=keeper.on_progress, cancel=keeper.cancel, chunk_s=self.chunk_s,
                        )
                finally:
                    self.manager.release(name)
            except CancelledError:
                if keeper.released and self.store.release(job.id, token):
                    logger.info("job %s: handed back to the queue (worker shutting down)", job.id)
                    return RunOutcome("released")
                if keeper.lost:
                    logger.warning("job %s: lease lost to another worker; stopped", job.id)
                    return RunOutcome("lost")
                return self._finish(job.id, token, "cancelled")
            except StenodError as exc:
                return self._finish(job.id, token, "failed", message=exc.message, code=exc.code or exc.error_type)
        result_key = f"results/{job.id}/{job.attempts}-{token[:12]}.json"
        clock = time.monotonic()
        try:
            self.blobs.put_bytes(result_key, transcript_to_json(result.transcript, model=name))
        except StorageUnavailableError:
            self._hand_back_after_storage_error(job.id, token, "store its result")
            raise
        if not self.store.complete(job.id, token, result_key=result_key, language=result.transcript.language,
                                   duration=result.audio_duration_s, retention_s=retention):
            # Another worker owns the job now (our lease ran out) or it was deleted: ours never counts.
            self.blobs.delete(result_key)
            logger.warning("job %s: finished after losing its lease; result discarded", job.id)
            return RunOutcome("lost")
        # The job path's own costs next to the transcription's, so an operator sees where a
        # job's time went (the queue wait is in the "attempt" line).
        logger.info("job %s: completed %.1f s of audio with %s in %.2f s (rtf %.3f); audio download %.2f s, "
                    "decode %.2f s, result store %.2f s", job.id, result.audio_duration_s, name, result.processing_s,
                    result.realtime_factor, download_s, result.decode_s, time.monotonic() - clock)
        self._notify(job.id)
        return RunOutcome("completed")

    def _hand_back_after_storage_error(self, job_id: str, token: str, what: str) -> None:
        """A blob store outage is not the job's fault: queue it again without counting the attempt
        (the caller re-raises, and the worker retries with backoff). If the job store is down too,
        the lease runs out instead and the next claim counts an attempt."""
        try:
            released = self.store.release(job_id, token)
        except Exception as exc:
            logger.warning("job %s: could not hand it back (%s); its lease will run out", job_id, type(exc).__name__)
            return
        if released:
            logger.warning("job %s: the blob store is unavailable (could not %s); queued again, retrying", job_id, what)

    def _finish(self, job_id: str, token: str, status: str, *, message: str | None = None,
                code: str | None = None) -> RunOutcome:
        assert status in ("failed", "cancelled")
        if self.store.finish(job_id, token, status=status, retention_s=self.jobs.retention_s,  # type: ignore[arg-type]
                             error_message=message, error_code=code):
            logger.info("job %s: %s%s", job_id, status, f" ({message})" if message else "")
            self._notify(job_id)
            return RunOutcome(status)
        return RunOutcome("lost")

    def _notify(self, job_id: str) -> None:
        if self.on_final is None:
            return
        try:
            self.on_final(job_id)
        except Exception:
            logger.exception("job %s: could not schedule its webhook", job_id)
