"""SQL job store plumbing: URL normalization, the SQLAlchemy 2 engine factory, the table
definitions, and Alembic migrations run at start-up under a lock.

Why a lock: ``stenod serve`` and every ``stenod worker`` migrate on start. Two processes
upgrading at once would both try to create the same tables; PostgreSQL serializes them with a
session-level advisory lock, SQLite with a file lock next to the database file. The second
process then finds the schema current and does nothing.

Engines must be created after a fork (Celery prefork children, uvicorn workers): a pooled
connection shared across processes corrupts the protocol stream. :func:`create_db_engine` is
cheap and is called per process.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

logger = logging.getLogger(__name__)

MIGRATION_LOCK_KEY = 0x5E_0D_10_B5
"""PostgreSQL advisory lock id held while migrating (any stable 64-bit number)."""
SQLITE_BUSY_TIMEOUT_S = 30.0

metadata = sa.MetaData()

jobs_table = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("tenant_id", sa.String(128), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float),
    sa.Column("completed_at", sa.Float),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("published_at", sa.Float),
    sa.Column("progress", sa.Float, nullable=False, server_default="0"),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("language", sa.String(16)),
    sa.Column("duration", sa.Float),
    sa.Column("error_message", sa.Text),
    sa.Column("error_code", sa.String(64)),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("params", sa.Text, nullable=False),
    sa.Column("audio_key", sa.String(256)),
    sa.Column("result_key", sa.String(256)),
    sa.Column("idempotency_key", sa.String(256)),
    sa.Column("request_hash", sa.String(64)),
    sa.Column("webhook_url", sa.Text),
    sa.Column("webhook_status", sa.String(16)),
    sa.Column("webhook_attempts", sa.Text, nullable=False, server_default="[]"),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("worker_id", sa.String(256)),
    sa.Column("lease_token", sa.String(64)),
    sa.Column("lease_expires_at", sa.Float),
    sa.UniqueConstraint("tenant_id", "idempotency_key", name="uq_jobs_tenant_idempotency"),
    sa.Index("ix_jobs_tenant_created", "tenant_id", "created_at", "id"),
    sa.Index("ix_jobs_status_created", "status", "created_at"),
    sa.Index("ix_jobs_expires", "expires_at"),
)

workers_table = sa.Table(
    "workers",
    metadata,
    sa.Column("id", sa.String(256), primary_key=True),
    sa.Column("hostname", sa.String(256), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("concurrency", sa.Integer, nullable=False),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("seen_at", sa.Float, nullable=False),
    sa.Column("running", sa.Integer, nullable=False, server_default="0"),
)


def default_database_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'jobs.db'}"


def normalize_database_url(url: str, *, data_dir: Path) -> URL:
    """The URL users write -> the one SQLAlchemy needs.

    ``postgres://`` and ``postgresql://`` (and ``+psycopg2``, which is not installed) get the
    psycopg 3 driver; empty means SQLite in ``data_dir``.

    Raises:
        ValueError: not a SQLite or PostgreSQL URL, or an in-memory SQLite database (jobs must
            survive a restart and be shared between threads).
    """
    parsed = make_url(url or default_database_url(data_dir))
    backend = parsed.get_backend_name()
    if backend in ("postgres", "postgresql"):
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise ValueError("jobs.database_url: SQLite needs a file (sqlite:///path/jobs.db), not memory")
        return parsed.set(drivername="sqlite")
    raise ValueError(f"jobs.database_url: unsupported database {backend!r}; use sqlite:/// or postgresql://")


def redacted(url: URL) -> str:
    """The URL with its password hidden, for logs and errors."""
    return url.render_as_string(hide_password=True)


def create_db_engine(url: str, *, data_dir: Path) -> Engine:
    """A pooled engine for this process.

    PostgreSQL: ``pool_pre_ping`` so a connection dropped by a database restart or a proxy is
    replaced on the next checkout instead of failing a request. SQLite: WAL journal (readers do
    not block the writer) and a busy timeout so concurrent writers wait instead of failing.
    """
    parsed = normalize_database_url(url, data_dir=data_dir)
    if parsed.get_backend_name() == "sqlite":
        Path(parsed.database or "").expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            parsed, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S}
        )
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return sa.create_engine(parsed, pool_pre_ping=True, pool_recycle=1800, pool_size=5, max_overflow=10)


def is_database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database cannot be reached right now (refused or dropped
    connection, failover, a full pool, SQLite busy) rather than a bug in a statement: callers
    answer 503 and retry instead of failing."""
    if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)):
        return True
    return isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision; safe to call from many processes at once."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            conn.commit()
            try:
                _upgrade(conn)
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
                conn.commit()
        return
    from filelock import FileLock

    database = Path(engine.url.database or "")
    with FileLock(str(database) + ".migrate.lock", timeout=120), engine.connect() as conn:
        _upgrade(conn)


def _upgrade(conn: sa.Connection) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "stenod.storage:migrations")
    config.attributes["connection"] = conn
    command.upgrade(config, "head")
    conn.commit()
