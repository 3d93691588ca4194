"""The job store: one row per job in SQLite or PostgreSQL, through SQLAlchemy Core.

Every state change is a conditional UPDATE (``WHERE status = ... AND lease_token = ...``), so two
workers that got the same message (a redelivery after a crash, a republish after a broker
restart) cannot both run or both complete a job: the loser sees ``rowcount == 0`` and stops.

Leases: the worker that claims a job gets a random token and a lease it renews while working.
A job in ``processing`` whose lease ran out lost its worker; the next claim takes it over and
counts an attempt, and once ``max_attempts`` is reached the job is failed instead (a poison job
that kills every worker it touches is not retried forever).
"""

from __future__ import annotations

import builtins
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from stenod.storage.sql import jobs_table, workers_table

JobStatus = Literal["queued", "processing", "completed", "failed", "cancelled"]
FINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
ClaimOutcome = Literal["claimed", "missing", "final", "held", "cancelled", "poisoned", "raced"]

T = jobs_table


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One row of ``jobs`` as the layers above see it."""

    id: str
    tenant_id: str
    status: JobStatus
    created_at: float
    updated_at: float
    started_at: float | None
    completed_at: float | None
    expires_at: float
    published_at: float | None
    progress: float
    model: str
    language: str | None
    duration: float | None
    error_message: str | None
    error_code: str | None
    attempts: int
    params: dict[str, Any]
    audio_key: str | None
    result_key: str | None
    idempotency_key: str | None
    request_hash: str | None
    webhook_url: str | None
    webhook_status: str | None
    webhook_attempts: list[dict[str, Any]]
    cancel_requested: bool
    worker_id: str | None
    lease_token: str | None
    lease_expires_at: float | None

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES


@dataclass(frozen=True, slots=True)
class NewJob:
    """What the API knows when it creates a job."""

    tenant_id: str
    model: str
    language: str | None
    params: dict[str, Any]
    audio_key: str
    retention_s: float
    idempotency_key: str | None = None
    request_hash: str | None = None
    webhook_url: str | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    outcome: ClaimOutcome
    job: JobRecord | None = None
    token: str | None = None
    retry_in_s: float = 0.0
    """``held``: seconds until the current holder's lease runs out."""


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    id: str
    hostname: str
    pid: int
    concurrency: int
    model: str
    started_at: float
    seen_at: float
    running: int


def new_job_id() -> str:
    return f"job_{uuid.uuid4().hex}"


def _record(row: sa.Row[Any]) -> JobRecord:
    m = row._mapping
    return JobRecord(
        id=m["id"], tenant_id=m["tenant_id"], status=m["status"], created_at=m["created_at"],
        updated_at=m["updated_at"], started_at=m["started_at"], completed_at=m["completed_at"],
        expires_at=m["expires_at"], published_at=m["published_at"], progress=m["progress"], model=m["model"],
        language=m["language"], duration=m["duration"], error_message=m["error_message"],
        error_code=m["error_code"], attempts=m["attempts"], params=json.loads(m["params"]),
        audio_key=m["audio_key"], result_key=m["result_key"], idempotency_key=m["idempotency_key"],
        request_hash=m["request_hash"], webhook_url=m["webhook_url"], webhook_status=m["webhook_status"],
        webhook_attempts=json.loads(m["webhook_attempts"] or "[]"), cancel_requested=bool(m["cancel_requested"]),
        worker_id=m["worker_id"], lease_token=m["lease_token"], lease_expires_at=m["lease_expires_at"],
    )


class JobStore:
    """Blocking, thread-safe job persistence; call it off the event loop."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- creation and lookup -------------------------------------------------------------------

    def create(self, new: NewJob, *, now: float | None = None) -> tuple[JobRecord, bool]:
        """Insert a queued job. With an idempotency key already used by this tenant, returns the
        existing job and ``False`` instead (the unique constraint decides races)."""
        now = time.time() if now is None else now
        job_id = new_job_id()
        values = {
            "id": job_id, "tenant_id": new.tenant_id, "status": "queued", "created_at": now, "updated_at": now,
            "expires_at": now + new.retention_s, "progress": 0.0, "model": new.model, "language": new.language,
            "attempts": 0, "params": json.dumps(new.params, sort_keys=True), "audio_key": new.audio_key,
            "idempotency_key": new.idempotency_key, "request_hash": new.request_hash,
            "webhook_url": new.webhook_url, "webhook_status": "pending" if new.webhook_url else None,
            "webhook_attempts": "[]", "cancel_requested": False,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(T.insert().values(**values))
        except IntegrityError:
            if new.idempotency_key is None:
                raise
            existing = self.get_by_idempotency_key(new.tenant_id, new.idempotency_key)
            if existing is None:
                raise
            return existing, False
        created = self.get(job_id)
        assert created is not None  # just inserted in a committed transaction
        return created, True

    def get(self, job_id: str, *, tenant_id: str | None = None) -> JobRecord | None:
        query = sa.select(T).where(T.c.id == job_id)
        if tenant_id is not None:
            query = query.where(T.c.tenant_id == tenant_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return _record(row) if row is not None else None

    def get_by_idempotency_key(self, tenant_id: str, key: str) -> JobRecord | None:
        query = sa.select(T).where(T.c.tenant_id == tenant_id, T.c.idempotency_key == key)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return _record(row) if row is not None else None

    def list(
        self, tenant_id: str, *, status: str | None, limit: int, after: str | None
    ) -> tuple[list[JobRecord], bool]:
        """Newest first; ``after`` is the id of the last job of the previous page (of the same
        tenant; another tenant's id pages from nothing). Returns the page and ``has_more``."""
        query = sa.select(T).where(T.c.tenant_id == tenant_id)
        if status:
            query = query.where(T.c.status == status)
        with self.engine.connect() as conn:
            if after:
                cursor = conn.execute(
                    sa.select(T.c.created_at, T.c.id).where(T.c.id == after, T.c.tenant_id == tenant_id)
                ).first()
                if cursor is None:
                    return [], False
                created, cid = cursor
                query = query.where(sa.or_(T.c.created_at < created, sa.and_(T.c.created_at == created, T.c.id < cid)))
            rows = conn.execute(query.order_by(T.c.created_at.desc(), T.c.id.desc()).limit(limit + 1)).all()
        records = [_record(r) for r in rows]
        return records[:limit], len(records) > limit

    # -- API-side state changes ----------------------------------------------------------------

    def request_cancel(self, job_id: str, *, tenant_id: str, now: float | None = None) -> JobRecord | None:
        """Queued -> cancelled at once; processing -> flagged, the worker stops at its next window."""
        now = time.time() if now is None else now
        with self.engine.begin() as conn:
            conn.execute(
                T.update().where(T.c.id == job_id, T.c.tenant_id == tenant_id, T.c.status == "queued")
                .values(status="cancelled", cancel_requested=True, completed_at=now, updated_at=now)
            )
            conn.execute(
                T.update().where(T.c.id == job_id, T.c.tenant_id == tenant_id, T.c.status == "processing")
                .values(cancel_requested=True, updated_at=now)
            )
        return self.get(job_id, tenant_id=tenant_id)

    def delete(self, job_id: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(T.delete().where(T.c.id == job_id)).rowcount == 1

    def mark_published(self, job_id: str, *, now: float | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(T.update().where(T.c.id == job_id).values(published_at=time.time() if now is None else now))

    def due_for_publish(self, *, older_than_s: float, limit: int = 100, now: float | None = None) -> builtins.list[str]:
        """Jobs a broker may have lost: queued and not published for ``older_than_s``, or
        processing with a lease that ran out (their worker died with the message unacknowledged)."""
        now = time.time() if now is None else now
        stale_queued = sa.and_(
            T.c.status == "queued", sa.or_(T.c.published_at.is_(None), T.c.published_at < now - older_than_s)
        )
        lost = sa.and_(
            T.c.status == "processing", T.c.lease_expires_at < now,
            sa.or_(T.c.published_at.is_(None), T.c.published_at < T.c.lease_expires_at),
        )
        query = sa.select(T.c.id).where(sa.or_(stale_queued, lost)).order_by(T.c.created_at).limit(limit)
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(query)]

    def expired(self, *, now: float | None = None, limit: int = 500) -> builtins.list[JobRecord]:
        now = time.time() if now is None else now
        query = sa.select(T).where(T.c.expires_at < now, T.c.status != "processing").limit(limit)
        with self.engine.connect() as conn:
            return [_record(r) for r in conn.execute(query)]

    def counts(self) -> dict[str, int]:
        query = sa.select(T.c.status, sa.func.count()).group_by(T.c.status)
        with self.engine.connect() as conn:
            return {status: int(n) for status, n in conn.execute(query)}

    # -- worker-side state changes -------------------------------------------------------------

    def next_runnable(self, *, now: float | None = None) -> str | None:
        """In-process mode: the oldest queued job, or a processing one whose worker died."""
        now = time.time() if now is None else now
        query = (
            sa.select(T.c.id)
            .where(sa.or_(T.c.status == "queued", sa.and_(T.c.status == "processing", T.c.lease_expires_at < now)))
            .order_by(T.c.created_at, T.c.id).limit(1)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return row[0] if row is not None else None

    def claim(self, job_id: str, *, worker_id: str, lease_s: float, max_attempts: int,
              now: float | None = None) -> Claim:
        """Take a job for this worker, or say why not (see the module docstring)."""
        now = time.time() if now is None else now
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(T).where(T.c.id == job_id)).first()
            if row is None:
                return Claim("missing")
            job = _record(row)
            if job.final:
                return Claim("final", job)
            if job.status == "processing" and (job.lease_expires_at or 0) > now:
                return Claim("held", job, retry_in_s=(job.lease_expires_at or now) - now)
            same = sa.and_(T.c.id == job_id, T.c.status == job.status, _token_is(job.lease_token))
            if job.cancel_requested:
                conn.execute(T.update().where(same).values(
                    status="cancelled", completed_at=now, updated_at=now, lease_token=None))
                return Claim("cancelled", job)
            if job.attempts >= max_attempts:
                message = (
                    f"the worker processing this job was lost {job.attempts} times (killed, crashed or out of "
                    f"memory; last: {job.worker_id or 'unknown'}); not retried again"
                )
                conn.execute(T.update().where(same).values(
                    status="failed", error_message=message, error_code="worker_lost", completed_at=now,
                    updated_at=now, lease_token=None))
                return Claim("poisoned", job)
            token = uuid.uuid4().hex
            updated = conn.execute(T.update().where(same).values(
                status="processing", attempts=T.c.attempts + 1, worker_id=worker_id, lease_token=token,
                lease_expires_at=now + lease_s, started_at=sa.func.coalesce(T.c.started_at, now), progress=0.0,
                updated_at=now,
            ))
            if updated.rowcount != 1:
                return Claim("raced", job)
        claimed = self.get(job_id)
        return Claim("claimed", claimed, token=token)

    def heartbeat(self, job_id: str, token: str, *, progress: float, lease_s: float,
                  now: float | None = None) -> tuple[bool, bool]:
        """Renew the lease and save progress. Returns (still ours, cancel requested)."""
        now = time.time() if now is None else now
        with self.engine.begin() as conn:
            updated = conn.execute(
                T.update().where(T.c.id == job_id, T.c.lease_token == token, T.c.status == "processing")
                .values(lease_expires_at=now + lease_s, progress=min(max(progress, 0.0), 1.0), updated_at=now)
            )
            row = conn.execute(sa.select(T.c.cancel_requested).where(T.c.id == job_id)).first()
        return updated.rowcount == 1, bool(row[0]) if row is not None else True

    def complete(self, job_id: str, token: str, *, result_key: str, language: str | None, duration: float,
                 retention_s: float, now: float | None = None) -> bool:
        """Record the result; ``False`` when another worker took the job over (or it was deleted),
        in which case the caller must discard its result."""
        now = time.time() if now is None else now
        with self.engine.begin() as conn:
            return conn.execute(
                T.update().where(T.c.id == job_id, T.c.lease_token == token, T.c.status == "processing")
                .values(status="completed", result_key=result_key, language=language, duration=duration,
                        progress=1.0, completed_at=now, updated_at=now, expires_at=now + retention_s,
                        lease_token=None, lease_expires_at=None)
            ).rowcount == 1

    def finish(self, job_id: str, token: str, *, status: Literal["failed", "cancelled"], retention_s: float,
               error_message: str | None = None, error_code: str | None = None, duration: float | None = None,
               now: float | None = None) -> bool:
        now = time.time() if now is None else now
        with self.engine.begin() as conn:
            return conn.execute(
                T.update().where(T.c.id == job_id, T.c.lease_token == token, T.c.status == "processing")
                .values(status=status, error_message=error_message, error_code=error_code, duration=duration,
                        completed_at=now, updated_at=now, expires_at=now + retention_s, lease_token=None,
                        lease_expires_at=None)
            ).rowcount == 1

    def release(self, job_id: str, token: str, *, now: float | None = None) -> bool:
        """Hand a running job back to the queue without counting the attempt (graceful shutdown).

        The caller requeues its message (Celery: a reject with requeue), so the job counts as
        published now; if that message is lost anyway, the sweeper publishes the job again after
        ``republish_after_s`` like any queued job."""
        now = time.time() if now is None else now
        with self.engine.begin() as conn:
            return conn.execute(
                T.update().where(T.c.id == job_id, T.c.lease_token == token, T.c.status == "processing")
                .values(status="queued", attempts=T.c.attempts - 1, lease_token=None, lease_expires_at=None,
                        worker_id=None, progress=0.0, published_at=now, updated_at=now)
            ).rowcount == 1

    # -- webhooks --------------------------------------------------------------------------------

    def webhooks_due(self, *, idle_s: float, now: float | None = None, limit: int = 100) -> builtins.list[str]:
        """Final jobs whose webhook is still pending or retrying with nothing recorded for
        ``idle_s``: their deliverer was lost (a server restart, a lost task)."""
        now = time.time() if now is None else now
        query = (
            sa.select(T.c.id)
            .where(T.c.status.in_(tuple(FINAL_STATUSES)), T.c.webhook_status.in_(("pending", "retrying")),
                   T.c.updated_at < now - idle_s)
            .order_by(T.c.updated_at).limit(limit)
        )
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(query)]

    def record_webhook_attempt(self, job_id: str, attempt: dict[str, Any], *, status: str,
                               now: float | None = None) -> None:
        """Append one delivery attempt (a read-modify-write: only one deliverer runs per job)."""
        now = time.time() if now is None else now
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(T.c.webhook_attempts).where(T.c.id == job_id)).first()
            if row is None:
                return
            attempts = [*json.loads(row[0] or "[]"), attempt]
            conn.execute(T.update().where(T.c.id == job_id).values(
                webhook_attempts=json.dumps(attempts), webhook_status=status, updated_at=now))

    # -- workers -------------------------------------------------------------------------------

    def worker_seen(self, worker: WorkerRecord) -> None:
        values = {
            "hostname": worker.hostname, "pid": worker.pid, "concurrency": worker.concurrency,
            "model": worker.model, "started_at": worker.started_at, "seen_at": worker.seen_at,
            "running": worker.running,
        }
        with self.engine.begin() as conn:
            if conn.execute(workers_table.update().where(workers_table.c.id == worker.id).values(**values)).rowcount == 0:
                try:
                    with conn.begin_nested():
                        conn.execute(workers_table.insert().values(id=worker.id, **values))
                except IntegrityError:
                    conn.execute(workers_table.update().where(workers_table.c.id == worker.id).values(**values))

    def workers_seen_since(self, since: float) -> builtins.list[WorkerRecord]:
        query = sa.select(workers_table).where(workers_table.c.seen_at >= since).order_by(workers_table.c.id)
        with self.engine.connect() as conn:
            return [WorkerRecord(**dict(r._mapping)) for r in conn.execute(query)]

    def forget_worker(self, worker_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(workers_table.delete().where(workers_table.c.id == worker_id))


def _token_is(token: str | None) -> sa.ColumnElement[bool]:
    return T.c.lease_token.is_(None) if token is None else T.c.lease_token == token
