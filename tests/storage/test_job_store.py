"""The job store on SQLite and on the machine's PostgreSQL: migrations (also two processes at
once), idempotency, tenant-scoped lists, claims, leases, poison jobs and conditional completion."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from stenod.storage.job_store import JobStore, NewJob
from stenod.storage.sql import create_db_engine, migrate, normalize_database_url
from tests.services import postgres_database

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
    else:
        with postgres_database() as url:
            yield url


@pytest.fixture
def store(database_url: str, tmp_path: Path) -> Iterator[JobStore]:
    engine = create_db_engine(database_url, data_dir=tmp_path)
    migrate(engine)
    yield JobStore(engine)
    engine.dispose()


def _new(tenant: str = "t1", key: str | None = None) -> NewJob:
    return NewJob(tenant_id=tenant, model="tiny.en", language="en", params={"task": "transcribe"},
                  audio_key="audio/x", retention_s=3600, idempotency_key=key)


def test_urls_as_users_write_them_are_normalized(tmp_path: Path) -> None:
    assert normalize_database_url("postgresql://u@h:5432/db", data_dir=tmp_path).drivername == "postgresql+psycopg"
    assert normalize_database_url("postgres://u:p@h/db", data_dir=tmp_path).drivername == "postgresql+psycopg"
    assert normalize_database_url("", data_dir=tmp_path).database == str(tmp_path / "jobs.db")
    for bad in ("mysql://u@h/db", "sqlite://", "sqlite:///:memory:"):
        with pytest.raises(ValueError, match="jobs.database_url"):
            normalize_database_url(bad, data_dir=tmp_path)


def test_two_processes_migrating_at_once_do_not_race(database_url: str, tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from stenod.storage.sql import create_db_engine, migrate; "
        "migrate(create_db_engine(sys.argv[1], data_dir=Path(sys.argv[2])))"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, database_url, str(tmp_path)], cwd=REPO,
                         stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    errors = [p.communicate(timeout=120)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    engine = create_db_engine(database_url, data_dir=tmp_path)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == _head_revision()
        assert conn.execute(sa.text("SELECT count(*) FROM jobs")).scalar_one() == 0
    engine.dispose()


def test_idempotency_key_returns_the_same_job_per_tenant(store: JobStore) -> None:
    first, created = store.create(_new(key="k1"))
    again, created_again = store.create(_new(key="k1"))
    other, created_other = store.create(_new(tenant="t2", key="k1"))
    assert created and not created_again and created_other
    assert again.id == first.id and other.id != first.id


def test_lists_are_per_tenant_newest_first_with_cursor(store: JobStore) -> None:
    ids = [store.create(_new(), now=1000.0 + i)[0].id for i in range(5)]
    store.create(_new(tenant="intruder"))
    page, more = store.list("t1", status=None, limit=2, after=None)
    assert [j.id for j in page] == ids[::-1][:2] and more
    page2, more2 = store.list("t1", status=None, limit=10, after=page[-1].id)
    assert [j.id for j in page2] == ids[::-1][2:] and not more2
    assert store.list("intruder", status=None, limit=10, after=ids[0]) == ([], False)
    assert store.get(ids[0], tenant_id="intruder") is None


def test_claim_lease_takeover_and_single_completion(store: JobStore) -> None:
    job, _ = store.create(_new(), now=100.0)
    first = store.claim(job.id, worker_id="w1", lease_s=10, max_attempts=3, now=100.0)
    assert first.outcome == "claimed" and first.token
    held = store.claim(job.id, worker_id="w2", lease_s=10, max_attempts=3, now=105.0)
    assert held.outcome == "held" and held.retry_in_s == pytest.approx(5.0)
    # w1 dies: its lease runs out and w2 takes over, counting a second attempt.
    second = store.claim(job.id, worker_id="w2", lease_s=10, max_attempts=3, now=111.0)
    assert second.outcome == "claimed" and second.job is not None and second.job.attempts == 2
    assert first.token is not None and second.token is not None
    assert not store.heartbeat(job.id, first.token, progress=0.5, lease_s=10, now=112.0)[0]
    assert not store.complete(job.id, first.token, result_key="r1", language="en", duration=1, retention_s=10)
    assert store.complete(job.id, second.token, result_key="r2", language="en", duration=1, retention_s=10)
    done = store.get(job.id)
    assert done is not None and done.status == "completed" and done.result_key == "r2"
    assert store.claim(job.id, worker_id="w3", lease_s=10, max_attempts=3).outcome == "final"


def test_a_job_that_loses_its_worker_every_time_fails_after_max_attempts(store: JobStore) -> None:
    job, _ = store.create(_new(), now=0.0)
    now = 0.0
    for attempt in range(1, 3):
        claim = store.claim(job.id, worker_id=f"host:{attempt}", lease_s=10, max_attempts=2, now=now)
        assert claim.outcome == "claimed" and claim.job is not None and claim.job.attempts == attempt
        now += 11.0  # the worker was killed; nobody renews the lease
    assert store.claim(job.id, worker_id="host:3", lease_s=10, max_attempts=2, now=now).outcome == "poisoned"
    failed = store.get(job.id)
    assert failed is not None and failed.status == "failed" and failed.error_code == "worker_lost"
    assert "lost 2 times" in (failed.error_message or "") and "host:2" in (failed.error_message or "")


def test_cancel_queued_never_runs_and_processing_is_flagged(store: JobStore) -> None:
    queued, _ = store.create(_new())
    cancelled = store.request_cancel(queued.id, tenant_id="t1")
    assert cancelled is not None and cancelled.status == "cancelled"
    assert store.claim(queued.id, worker_id="w", lease_s=10, max_attempts=3).outcome == "final"
    running, _ = store.create(_new())
    claim = store.claim(running.id, worker_id="w", lease_s=10, max_attempts=3)
    assert store.request_cancel(running.id, tenant_id="someone-else") is None
    assert claim.token is not None
    flagged = store.request_cancel(running.id, tenant_id="t1")
    assert flagged is not None and flagged.status == "processing" and flagged.cancel_requested
    assert store.heartbeat(running.id, claim.token, progress=0.2, lease_s=10) == (True, True)


def test_lost_messages_are_found_for_republishing(store: JobStore) -> None:
    never_published, _ = store.create(_new(), now=0.0)
    published, _ = store.create(_new(), now=0.0)
    store.mark_published(published.id, now=100.0)
    running, _ = store.create(_new(), now=0.0)
    store.mark_published(running.id, now=0.0)
    store.claim(running.id, worker_id="w", lease_s=10, max_attempts=3, now=1.0)
    due = store.due_for_publish(older_than_s=50, now=120.0)
    assert set(due) == {never_published.id, running.id}


def _head_revision() -> str:
    """The newest migration shipped (each process must have brought the database to it)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", "stenod.storage:migrations")
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head
