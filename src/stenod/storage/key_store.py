"""API keys created with ``stenod keys``, stored in the jobs database (SQLite or PostgreSQL).

Only a SHA-256 of each key is stored: keys are 32 random bytes, so a fast hash is as strong as a
slow one, and lookups stay one indexed query. The secret is shown once, at creation. A key is
``sk-stenod-`` + its public id + ``.`` + the secret part, so logs and ``keys list`` can name a key
(by its id) without ever holding the secret.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from stenod.storage.sql import metadata

KEY_PREFIX = "sk-stenod-"

api_keys_table = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False),
    sa.Column("tenant_id", sa.String(128), nullable=False),
    sa.Column("admin", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float),
    sa.Column("revoked_at", sa.Float),
    sa.Column("requests_per_minute", sa.Integer),
    sa.Column("audio_minutes_per_hour", sa.Float),
    sa.Column("max_concurrency", sa.Integer),
    sa.UniqueConstraint("key_hash", name="uq_api_keys_hash"),
    sa.UniqueConstraint("name", name="uq_api_keys_name"),
)


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    """Per-key limits; ``None`` means unlimited."""

    requests_per_minute: int | None = None
    audio_minutes_per_hour: float | None = None
    max_concurrency: int | None = None


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    id: str
    name: str
    tenant_id: str
    admin: bool
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    policy: KeyPolicy

    def usable(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


class KeyExistsError(ValueError):
    """A key with this name already exists."""


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _record(row: sa.Row) -> ApiKeyRecord:
    m = row._mapping
    return ApiKeyRecord(
        id=m["id"], name=m["name"], tenant_id=m["tenant_id"], admin=bool(m["admin"]), created_at=m["created_at"],
        expires_at=m["expires_at"], revoked_at=m["revoked_at"],
        policy=KeyPolicy(m["requests_per_minute"], m["audio_minutes_per_hour"], m["max_concurrency"]),
    )


class KeyStore:
    """Create, list, revoke and look up keys. Thread-safe (one pooled engine)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, name: str, *, admin: bool = False, expires_at: float | None = None,
               policy: KeyPolicy = KeyPolicy(), tenant_id: str | None = None) -> tuple[ApiKeyRecord, str]:
        """Create a key; returns its record and the secret (shown once, never stored).

        Raises:
            KeyExistsError: the name is taken.
        """
        key_id = "key_" + secrets.token_hex(8)
        secret = f"{KEY_PREFIX}{key_id}.{secrets.token_urlsafe(32)}"
        values = {
            "id": key_id, "name": name, "key_hash": hash_key(secret), "tenant_id": tenant_id or key_id,
            "admin": admin, "created_at": time.time(), "expires_at": expires_at, "revoked_at": None,
            "requests_per_minute": policy.requests_per_minute, "audio_minutes_per_hour": policy.audio_minutes_per_hour,
            "max_concurrency": policy.max_concurrency,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(api_keys_table.insert().values(**values))
        except sa.exc.IntegrityError as exc:
            raise KeyExistsError(f"a key named {name!r} already exists") from exc
        record = self.get(key_id)
        assert record is not None  # just inserted
        return record, secret

    def get(self, id_or_name: str) -> ApiKeyRecord | None:
        t = api_keys_table
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t).where(sa.or_(t.c.id == id_or_name, t.c.name == id_or_name))).first()
        return _record(row) if row is not None else None

    def list(self) -> list[ApiKeyRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(api_keys_table).order_by(api_keys_table.c.created_at)).all()
        return [_record(r) for r in rows]

    def revoke(self, id_or_name: str) -> ApiKeyRecord | None:
        """Revoke a key (kept in the table, marked revoked); ``None`` if there is no such key."""
        t = api_keys_table
        with self.engine.begin() as conn:
            conn.execute(t.update().where(sa.or_(t.c.id == id_or_name, t.c.name == id_or_name))
                         .where(t.c.revoked_at.is_(None)).values(revoked_at=time.time()))
        return self.get(id_or_name)

    def lookup(self, secret: str) -> ApiKeyRecord | None:
        """The usable (not revoked, not expired) key with this secret, else ``None``."""
        if not secret.startswith(KEY_PREFIX) or len(secret) > 200:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(api_keys_table).where(api_keys_table.c.key_hash == hash_key(secret))).first()
        if row is None:
            return None
        record = _record(row)
        return record if record.usable() else None
