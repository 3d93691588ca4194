"""The delivery guarantees, each shown against real processes and services:

- SIGKILL of a worker mid-transcription: the job is delivered again, completes on the other
  worker, and its result is written exactly once (also for a batch of jobs with a worker killed);
- a job that kills its worker every time is failed after ``max_attempts`` with a reason;
- a restart of ``stenod serve`` in in-process mode resumes queued and interrupted jobs from SQLite;
- the broker restarting (a private redis-server, without persistence: every message is lost) and
  the database dropping every connection: workers and API reconnect and no job is lost;
- RabbitMQ as the broker.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import CORPUS, JFK
from tests.jobs.stack import JobStack, WorkerProcess, job_stack
from tests.services import ManagedProcess, start_redis

MEDIUM_AUDIO = CORPUS / "longform-en" / "audio" / "earnings22_1_4482311_3_62.wav"
"""60 s: long enough to kill a worker in the middle, short enough to finish quickly after."""


def _job_row(stack: JobStack, job_id: str) -> dict[str, object]:
    assert stack.database_url is not None
    engine = sa.create_engine(stack.database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            row = conn.execute(sa.text("SELECT status, worker_id, attempts FROM jobs WHERE id = :id"),
                               {"id": job_id}).mappings().first()
    finally:
        engine.dispose()
    assert row is not None
    return dict(row)


def _holder(stack: JobStack, job_id: str) -> tuple[WorkerProcess, int]:
    """The worker process group running the job, and the pool process's pid."""
    worker_id = str(_job_row(stack, job_id)["worker_id"])
    pid = int(worker_id.rsplit(":", 1)[1])
    for worker in stack.workers:
        if pid in worker.children() or pid == worker.proc.pid:
            return worker, pid
    raise AssertionError(f"no worker process owns pid {pid}")


def _results_written(stack: JobStack, job_id: str) -> list[str]:
    return stack.blob_keys(f"results/{job_id}")


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedProcess]:
    """A redis-server of this module's own, so the broker-restart test can restart it."""
    redis = start_redis(tmp_path_factory.mktemp("redis"))
    yield redis
    redis.stop()  # the restarted process, if a test restarted it (it swaps ``proc``)


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path,
                private_redis: ManagedProcess) -> Iterator[JobStack]:
    """Celery on the private Redis, PostgreSQL, S3; two ``stenod worker`` processes; a job may
    lose its worker twice."""
    with job_stack("celery-redis", tmp_path_factory.mktemp("kill"), cache_dir, workers=2,
                   redis=f"redis://127.0.0.1:{private_redis.port}/0", STENOD_JOBS__MAX_ATTEMPTS="2") as js:
        yield js


def _restore_workers(stack: JobStack, count: int = 2) -> None:
    alive = [w for w in stack.workers if w.proc.poll() is None]
    stack.workers = alive
    while len(stack.workers) < count:
        stack.start_worker()
    stack.wait_for_workers(count)


def test_sigkill_mid_transcription_redelivers_to_the_other_worker(two_workers: JobStack) -> None:
    stack = two_workers
    job = stack.submit(MEDIUM_AUDIO).json()
    stack.wait(job["id"], ("processing",), predicate=lambda j: j["progress"] > 0)
    victim, pid = _holder(stack, job["id"])
    victim.kill()
    done = stack.wait(job["id"])
    assert done["status"] == "completed" and done["attempts"] == 2, done
    finisher = str(_job_row(stack, job["id"])["worker_id"])
    assert not finisher.endswith(f":{pid}")
    assert len(_results_written(stack, job["id"])) == 1
    text = httpx.get(f"{stack.url}/v1/jobs/{job['id']}/result", params={"response_format": "text"},
                     headers=stack.headers(), timeout=30).text
    assert len(text.split()) > 50
    _restore_workers(stack)


def test_sigterm_hands_the_running_job_back_and_the_worker_exits(two_workers: JobStack) -> None:
    """Warm shutdown: the job stops at its next window, is queued again without counting an
    attempt, its message goes back to the broker at once (no visibility timeout: Redis's is
    6 h here) and the other worker completes it; the stopped worker exits 0 promptly."""
    stack = two_workers
    job = stack.submit(MEDIUM_AUDIO).json()
    stack.wait(job["id"], ("processing",), predicate=lambda j: j["progress"] > 0)
    victim, pid = _holder(stack, job["id"])
    victim.proc.send_signal(signal.SIGTERM)  # the main process only, like `kill <pid>`
    assert victim.proc.wait(timeout=60) == 0, victim.log()[-3000:]
    log = victim.log()
    assert "handing 1 running job(s) back" in log and "handed back to the queue" in log, log[-3000:]
    task_id = re.findall(r"Task stenod\.run_job\[([0-9a-f-]+)\] received", log)[-1]
    done = stack.wait(job["id"], timeout_s=120)
    assert done["status"] == "completed" and done["attempts"] == 1, done
    finisher, finisher_pid = _holder(stack, job["id"])  # the row keeps who ran it last
    assert finisher_pid != pid
    # The same message (same task id), requeued by the reject; not a republish by the sweeper.
    assert f"Task stenod.run_job[{task_id}] received" in finisher.log()
    assert len(_results_written(stack, job["id"])) == 1
    _restore_workers(stack)


@pytest.mark.slow  # 4 jobs: about 50 s on 2 busy cores; 20 jobs: minutes
@pytest.mark.parametrize("count", [pytest.param(4, id="4-jobs"), pytest.param(20, id="20-jobs")])
def test_jobs_through_two_workers_with_one_killed_all_complete_once(two_workers: JobStack, count: int) -> None:
    stack = two_workers
    ids = [stack.submit(JFK).json()["id"] for _ in range(count)]
    stack.wait(ids[0], ("processing", "completed"))
    time.sleep(1.0)
    # Kill whichever worker holds a running job (never an idle one: that would prove nothing).
    running = [i for i in ids if stack.get(i).json()["status"] == "processing"] or ids[1:2]
    stack.wait(running[0], ("processing",))
    victim, _ = _holder(stack, running[0])
    victim.kill()
    finals = [stack.wait(i, timeout_s=300) for i in ids]
    assert [j["status"] for j in finals] == ["completed"] * count
    assert any(j["attempts"] == 2 for j in finals)
    for job_id in ids:
        assert len(_results_written(stack, job_id)) == 1, job_id
    _restore_workers(stack)


@pytest.mark.slow  # each attempt waits for a pool process to fork, load the model and for the lease to lapse
def test_a_job_that_kills_its_worker_every_time_fails_after_max_attempts(two_workers: JobStack) -> None:
    stack = two_workers
    job = stack.submit(MEDIUM_AUDIO).json()
    killed: list[int] = []
    stop = threading.Event()

    def killer() -> None:
        # Stands in for audio that crashes the decoder or the engine: whichever process picks
        # the job up dies. Celery's parent process survives and forks a new pool process.
        while not stop.is_set():
            try:
                row = _job_row(stack, job["id"])
            except Exception:
                continue
            if row["status"] in ("failed", "completed", "cancelled"):
                return
            if row["status"] == "processing":
                pid = int(str(row["worker_id"]).rsplit(":", 1)[1])
                if pid not in killed:
                    killed.append(pid)
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        done = stack.wait(job["id"], timeout_s=240)
    finally:
        stop.set()
        thread.join(timeout=5)
    assert done["status"] == "failed" and done["attempts"] == 2, done
    assert done["error"]["code"] == "worker_lost"
    assert "lost 2 times" in done["error"]["message"]
    assert len(killed) == 2
    assert _results_written(stack, job["id"]) == []
    # The workers themselves are fine and keep serving.
    after = stack.submit(JFK).json()
    assert stack.wait(after["id"])["status"] == "completed"
    _restore_workers(stack)


def _sqlite_row(stack: JobStack, job_id: str) -> dict[str, object]:
    engine = sa.create_engine(f"sqlite:///{stack.tmp / 'data' / 'jobs.db'}")
    try:
        with engine.connect() as conn:
            row = conn.execute(sa.text("SELECT status, attempts, progress FROM jobs WHERE id = :id"),
                               {"id": job_id}).mappings().first()
    finally:
        engine.dispose()
    assert row is not None
    return dict(row)


def test_serve_sigterm_hands_jobs_back_and_a_restart_resumes_them(tmp_path: Path, cache_dir: Path) -> None:
    """In-process mode: SIGTERM hands the running job back to the queue in SQLite (no attempt
    counted) and the server exits 0; the next start resumes it and the queued ones. A SIGKILL
    then loses the run in flight, which counts an attempt and is resumed once its lease ran out."""
    with job_stack("in-process", tmp_path, cache_dir) as stack:
        first = stack.submit(MEDIUM_AUDIO).json()
        queued = [stack.submit(JFK).json() for _ in range(2)]
        stack.wait(first["id"], ("processing",), predicate=lambda j: j["progress"] > 0)
        assert stack.server is not None
        assert stack.server.stop(signal.SIGTERM, timeout=60) == 0, stack.server.log()[-3000:]
        assert "handed back to the queue" in stack.server.log()
        assert _sqlite_row(stack, first["id"]) == {"status": "queued", "attempts": 0, "progress": 0.0}
        assert all(_sqlite_row(stack, j["id"])["status"] == "queued" for j in queued)
        stack.start_server()
        stack.wait(first["id"], ("processing",), predicate=lambda j: j["progress"] > 0, timeout_s=240)
        stack.restart_server(signal.SIGKILL)  # no drain: the run in flight is simply lost with the process
        done = stack.wait(first["id"], timeout_s=240)
        assert done["status"] == "completed" and done["attempts"] == 2, done
        for job in queued:
            resumed = stack.wait(job["id"])
            assert resumed["status"] == "completed" and resumed["attempts"] == 1
        assert len(stack.blob_keys(f"results/{first['id']}")) == 1


def test_broker_restart_and_database_drop_lose_nothing(two_workers: JobStack, private_redis: ManagedProcess) -> None:
    stack = two_workers
    ids = [stack.submit(JFK).json()["id"] for _ in range(4)]
    stack.wait(ids[0], ("processing", "completed"))
    # The broker dies and comes back empty (no persistence): every queued message is gone.
    private_redis.proc.kill()
    private_redis.proc.wait()
    during = stack.submit(JFK)  # the API keeps accepting while the broker is down
    assert during.status_code == 202, during.text
    ids.append(during.json()["id"])
    time.sleep(2)
    restarted = start_redis(private_redis.log_path.parent, port=private_redis.port)
    private_redis.proc = restarted.proc
    # The database drops every connection (failover, restart, a proxy timing out).
    assert stack.database_url is not None
    base, name = stack.database_url.rsplit("/", 1)
    admin = sa.create_engine(base.replace("postgresql://", "postgresql+psycopg://") + "/test",
                             isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        dropped = conn.execute(sa.text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = :db "
            "AND pid <> pg_backend_pid()"), {"db": name}).scalar_one()
    admin.dispose()
    assert dropped >= 1
    ids.append(stack.submit(JFK).json()["id"])
    finals = [stack.wait(i, timeout_s=240) for i in ids]
    assert [j["status"] for j in finals] == ["completed"] * len(ids)
    for job_id in ids:
        assert len(stack.blob_keys(f"results/{job_id}")) == 1
    health = httpx.get(f"{stack.url}/health", timeout=30).json()["jobs"]
    assert health["mode"] == "redis" and len(health["workers"]) >= 2  # a killed one is listed until it goes stale


def test_rabbitmq_broker_runs_jobs_and_cancels(tmp_path: Path, cache_dir: Path) -> None:
    with job_stack("celery-amqp", tmp_path, cache_dir, workers=1) as stack:
        first = stack.submit(JFK).json()
        waiting = stack.submit(JFK).json()
        cancelled = httpx.post(f"{stack.url}/v1/jobs/{waiting['id']}/cancel", headers=stack.headers(), timeout=30)
        assert cancelled.json()["status"] == "cancelled"
        health = httpx.get(f"{stack.url}/health", timeout=30).json()["jobs"]
        assert health["mode"] == "amqp" and len(health["workers"]) == 1
        assert stack.wait(first["id"])["status"] == "completed"
        again = stack.submit(JFK).json()
        assert stack.wait(again["id"])["status"] == "completed"
        assert stack.get(waiting["id"]).json()["started_at"] is None
