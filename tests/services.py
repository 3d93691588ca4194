"""Real services for integration tests: the machine's PostgreSQL, Redis and RabbitMQ (started by
scripts/services.sh), plus processes the tests start themselves (moto's S3 server, extra
redis-servers). Every test run gets its own database, Redis DB/queue names and bucket, because
other runs share the same services.

Under CI=true an unreachable service fails the test; elsewhere it skips it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from tests.conftest import skip_or_fail

PG_ADMIN_URL = os.environ.get("STENOD_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_HOST, REDIS_PORT = "127.0.0.1", int(os.environ.get("STENOD_TEST_REDIS_PORT", "6379"))
AMQP_URL = os.environ.get("STENOD_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
STARTUP_TIMEOUT_S = 60.0


def unavailable(what: str) -> NoReturn:
    """Fail under CI (the service must be there), skip elsewhere."""
    skip_or_fail(f"{what} is not reachable; run scripts/services.sh")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database on the shared server; yields its URL as a user writes it, drops it after."""
    import sqlalchemy as sa

    from stenod.storage.sql import normalize_database_url

    admin_url = normalize_database_url(PG_ADMIN_URL, data_dir=Path("."))
    try:
        admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        unavailable(f"PostgreSQL at {PG_ADMIN_URL} ({type(exc).__name__})")
    name = unique("stenod_test")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def redis_url(db: int | None = None) -> str:
    if not port_open(REDIS_HOST, REDIS_PORT):
        unavailable(f"Redis at {REDIS_HOST}:{REDIS_PORT}")
    # DB numbers are few; test runs use unique queue names instead, on a DB other helpers rarely use.
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{db if db is not None else 11}"


def amqp_url() -> str:
    if not port_open("127.0.0.1", 5672):
        unavailable("RabbitMQ at 127.0.0.1:5672")
    return AMQP_URL


@dataclass
class ManagedProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _wait_port(proc: ManagedProcess, what: str) -> ManagedProcess:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.proc.returncode}:\n{proc.log()}")
        if port_open("127.0.0.1", proc.port):
            return proc
        time.sleep(0.1)
    proc.stop()
    raise RuntimeError(f"{what} did not listen on {proc.port} in {STARTUP_TIMEOUT_S}s:\n{proc.log()}")


def start_moto(tmp_path: Path, port: int | None = None) -> ManagedProcess:
    """moto's S3-compatible server as a real process on a loopback port (``port``: restart one
    there; it starts empty, moto keeps nothing on disk)."""
    port = port or free_port()
    log_path = tmp_path / f"moto-{port}.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    return _wait_port(ManagedProcess(proc, port, log_path), "moto server")


def start_redis(tmp_path: Path, port: int | None = None) -> ManagedProcess:
    """A private redis-server (no persistence: a restart loses every message, the worst case)."""
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server binary")
    port = port or free_port()
    log_path = tmp_path / f"redis-{port}.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [binary or "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(tmp_path)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    return _wait_port(ManagedProcess(proc, port, log_path), "redis-server")


def s3_env() -> dict[str, str]:
    """Credentials moto accepts; boto3 reads them from the environment like any AWS client."""
    return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def create_bucket(endpoint_url: str, bucket: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=endpoint_url, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket=bucket)
