"""Job stacks for the tests, as real processes: ``stenod serve`` (in-process mode), or
``stenod serve`` + ``stenod worker`` processes on Celery with Redis or RabbitMQ, PostgreSQL and
moto's S3 server. Each stack gets its own database, bucket, queue name and data folder."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.api.conftest import ServerProcess, start_server
from tests.conftest import CORPUS, JFK
from tests.services import (
    ManagedProcess,
    amqp_url,
    create_bucket,
    postgres_database,
    redis_url,
    s3_env,
    start_moto,
    unique,
)

LONG_AUDIO = CORPUS / "longform-en" / "audio" / "ljspeech_LJ001-0001_0032_concat.flac"
"""237 s: long enough to be caught mid-transcription (progress, cancel, SIGKILL)."""
WEBHOOK_SECRET = "whsec_" + "c3Rlbm9kLXRlc3Qtd2ViaG9vay1zZWNyZXQ="  # base64 of a test secret
API_KEYS = ("key-alpha", "key-beta", "key-gamma", "key-delta", "key-eps", "key-zeta", "key-eta", "key-theta")
JOB_TIMEOUT_S = 180.0
WORKER_START_TIMEOUT_S = 120.0


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def children(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes at once (a machine dying, the OOM killer)."""
        for pid in [*self.children(), self.proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def terminate(self) -> None:
        """Send SIGTERM (warm shutdown) without waiting; :meth:`stop` waits."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        self.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()


def stop_workers(workers: list[WorkerProcess]) -> None:
    """Stop them all at once: each warm shutdown takes a few seconds, in parallel."""
    for w in workers:
        w.terminate()
    for w in workers:
        w.stop()


@dataclass
class JobStack:
    mode: str
    tmp: Path
    cache_dir: Path
    env: dict[str, str]
    server: ServerProcess | None = None
    workers: list[WorkerProcess] = field(default_factory=list)
    blob_root: Path | None = None
    s3_endpoint: str | None = None
    bucket: str | None = None
    database_url: str | None = None
    moto: ManagedProcess | None = None
    server_args: tuple[str, ...] = ("--model", "tiny.en", "--slots", "2")
    worker_concurrency: int = 1
    """Jobs each ``stenod worker`` runs at once (its ``--concurrency``)."""
    worker_pool: str = "threads"

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    @property
    def celery(self) -> bool:
        return self.mode != "in-process"

    def start_server(self) -> None:
        self.server = start_server(self.tmp, self.cache_dir, *self.server_args, env=self.env)

    def restart_server(self, sig: int = signal.SIGTERM) -> None:
        assert self.server is not None
        self.server.stop(sig)
        self.start_server()

    def start_worker(self, *, concurrency: int | None = None, pool: str | None = None) -> WorkerProcess:
        index = len(list(self.tmp.glob("worker-*.log")))  # a replaced worker keeps its predecessor's log
        log_path = self.tmp / f"worker-{index}.log"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "STENOD_MODEL__CACHE_DIR": str(self.cache_dir), **self.env}
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "stenod", "worker", "--model", "tiny.en",
                 "--concurrency", str(concurrency or self.worker_concurrency), "--pool", pool or self.worker_pool,
                 "--threads", "1", "--hostname", f"w{index}@%h", "--log-format", "console"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            )
        worker = WorkerProcess(proc, log_path)
        self.workers.append(worker)
        return worker

    def wait_for_workers(self, count: int) -> None:
        deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            for w in self.workers:
                if w.proc.poll() is not None and w.proc.returncode not in (-9,):
                    raise RuntimeError(f"worker exited with {w.proc.returncode}:\n{w.log()}")
            seen = httpx.get(f"{self.url}/health", timeout=10).json()["jobs"]["workers"]
            if len(seen) >= count:
                return
            time.sleep(0.3)
        raise RuntimeError("workers did not report:\n" + "\n".join(w.log()[-3000:] for w in self.workers))

    def stop(self) -> None:
        for w in self.workers:  # workers and server shut down side by side
            w.terminate()
        if self.server is not None:
            self.server.stop()
        stop_workers(self.workers)

    # -- client helpers ------------------------------------------------------------------------

    def headers(self, key: str = API_KEYS[0], **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}", **extra}

    def submit(self, path: Path = JFK, *, key: str = API_KEYS[0], headers: dict[str, str] | None = None,
               **fields: Any) -> httpx.Response:
        data: dict[str, Any] = {k: v for k, v in fields.items() if v is not None}
        with path.open("rb") as f:
            return httpx.post(f"{self.url}/v1/jobs", files={"file": (path.name, f)}, data=data,
                              headers={**self.headers(key), **(headers or {})}, timeout=120)

    def get(self, job_id: str, *, key: str = API_KEYS[0]) -> httpx.Response:
        return httpx.get(f"{self.url}/v1/jobs/{job_id}", headers=self.headers(key), timeout=30)

    def wait(self, job_id: str, statuses: tuple[str, ...] = ("completed", "failed", "cancelled"), *,
             key: str = API_KEYS[0], timeout_s: float = JOB_TIMEOUT_S, predicate: Any = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        job: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                response = self.get(job_id, key=key)
            except httpx.TransportError:  # a server restarting
                time.sleep(0.3)
                continue
            job = response.json()
            if job.get("status") in statuses and (predicate is None or predicate(job)):
                return job
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} did not reach {statuses} in {timeout_s}s; last: {job}\n"
                             + "\n".join(w.log()[-4000:] for w in self.workers))

    def blob_keys(self, prefix: str) -> list[str]:
        if self.blob_root is not None:
            base = self.blob_root / prefix
            return sorted(str(p.relative_to(self.blob_root)) for p in base.rglob("*") if p.is_file()) \
                if base.exists() else []
        import boto3

        client = boto3.client("s3", endpoint_url=self.s3_endpoint, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        response = client.list_objects_v2(Bucket=self.bucket, Prefix=f"stack/{prefix}")
        return sorted(obj["Key"].removeprefix("stack/") for obj in response.get("Contents", []))


def base_env(tmp: Path, **overrides: str) -> dict[str, str]:
    env = {
        "STENOD_SERVER__API_KEYS": ",".join(API_KEYS),
        "STENOD_JOBS__DATA_DIR": str(tmp / "data"),
        "STENOD_JOBS__LEASE_S": "5",
        "STENOD_JOBS__SWEEP_INTERVAL_S": "1",
        "STENOD_JOBS__REPUBLISH_AFTER_S": "3",
        "STENOD_JOBS__WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STENOD_JOBS__WEBHOOK_BACKOFF_S": "0.3",
        "STENOD_JOBS__ALLOWED_NETWORKS": "127.0.0.1/32",
        "STENOD_LOG__FORMAT": "console",
    }
    env.update(overrides)
    return env


@contextlib.contextmanager
def job_stack(mode: str, tmp: Path, cache_dir: Path, *, workers: int = 1, redis: str | None = None,
              concurrency: int = 1, pool: str = "threads", moto: ManagedProcess | None = None,
              **overrides: str) -> Iterator[JobStack]:
    """``in-process``; ``celery-redis`` (PostgreSQL + S3 + Redis); ``celery-amqp`` (PostgreSQL +
    local blobs + RabbitMQ). ``workers`` ``stenod worker`` processes of ``concurrency`` jobs each.
    ``moto``: a shared S3 server (the session's ``s3_server``) instead of one of the stack's own;
    a stack whose test stops S3 needs its own."""
    env = base_env(tmp, **overrides)
    with contextlib.ExitStack() as stack:
        js = JobStack(mode=mode, tmp=tmp, cache_dir=cache_dir, env=env, worker_concurrency=concurrency,
                      worker_pool=pool)
        if mode == "in-process":
            js.blob_root = tmp / "data" / "blobs"
        else:
            js.database_url = stack.enter_context(postgres_database())
            env["STENOD_JOBS__DATABASE_URL"] = js.database_url
            env["STENOD_JOBS__QUEUE_NAME"] = unique("stenod.test")
            if mode == "celery-redis":
                if moto is not None:
                    js.moto = moto
                else:
                    js.moto = start_moto(tmp)
                    stack.callback(lambda: js.moto.stop() if js.moto is not None else None)
                js.s3_endpoint = f"http://127.0.0.1:{js.moto.port}"
                js.bucket = unique("stenod-test").replace("_", "-")
                create_bucket(js.s3_endpoint, js.bucket)
                env.update(s3_env())
                env["STENOD_JOBS__BLOB_URL"] = f"s3://{js.bucket}/stack"
                env["STENOD_JOBS__S3_ENDPOINT_URL"] = js.s3_endpoint
                env["STENOD_JOBS__BROKER_URL"] = redis or redis_url()
            elif mode == "celery-amqp":
                js.blob_root = tmp / "blobs"
                env["STENOD_JOBS__BLOB_URL"] = js.blob_root.as_uri()
                env["STENOD_JOBS__BROKER_URL"] = amqp_url()
            else:
                raise ValueError(mode)
        stack.callback(js.stop)
        if js.celery:  # the workers load their model while the server starts
            for _ in range(workers):
                js.start_worker()
        js.start_server()
        if js.celery and workers:
            js.wait_for_workers(workers)
        yield js
