"""Who is calling: Bearer keys from the settings (``[server] api_keys``, ``admin_api_keys``) and,
with ``[server] key_store = true``, keys made with ``stenod keys`` (looked up by hash in the jobs
database, each with its own policy).

A stored key is looked up on every request by default (one query on the unique hash index: about
0.35 ms of CPU on SQLite and 1.4 ms on PostgreSQL, SQLAlchemy included; docs/SECURITY.md), so revoking or expiring it takes effect on the next
request on every server sharing the database (issue 16: a 10 s cache let revoked keys work on).
``[server] key_cache_s`` > 0 trades that for fewer queries: a valid key is then remembered that
long, and that is how long a revoked one may keep working. Unknown keys are never cached, so a
key made a moment ago works at once.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from dataclasses import dataclass

from pydantic import SecretStr

from stenod.errors import AuthenticationError
from stenod.settings import Settings
from stenod.storage.key_store import ApiKeyRecord, KeyPolicy, KeyStore

logger = logging.getLogger(__name__)

MAX_CACHED_KEYS = 10_000
"""Bound on the lookup cache (only valid keys are cached; it is cleared when full)."""


@dataclass(frozen=True, slots=True)
class KeyIdentity:
    """An authenticated key: what :class:`~stenod.api.deps.Principal` is built from."""

    tenant_id: str
    admin: bool
    key_id: str | None
    policy: KeyPolicy | None


def _matching_key(token: str, keys: list[SecretStr]) -> str | None:
    # Compare against every key (no early exit), in constant time per key.
    found: str | None = None
    for key in keys:
        secret = key.get_secret_value()
        if hmac.compare_digest(token.encode(), secret.encode()):
            found = secret
    return found


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._store: KeyStore | None = None
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, ApiKeyRecord]] = {}

    @property
    def enabled(self) -> bool:
        server = self._settings.server
        return bool(server.api_keys or server.admin_api_keys or server.key_store)

    def authenticate(self, authorization: str | None) -> KeyIdentity | None:
        """``None`` when authentication is off; else the caller's identity.

        Blocking (may query the key store): call from a worker thread.

        Raises:
            AuthenticationError: no key, or one that is unknown, revoked or expired (401).
        """
        if not self.enabled:
            return None
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthenticationError("missing API key: send 'Authorization: Bearer <key>'")
        server = self._settings.server
        from stenod.api.deps import tenant_for_static_key  # deps builds Principals from this module

        secret = _matching_key(token, [*server.api_keys, *server.admin_api_keys])
        if secret is not None:
            admin = _matching_key(token, server.admin_api_keys) is not None
            return KeyIdentity(tenant_for_static_key(secret), admin, None, None)
        if server.key_store:
            record = self._lookup(token)
            if record is not None:
                return KeyIdentity(record.tenant_id, record.admin, record.id, record.policy)
        raise AuthenticationError("invalid API key")

    def _lookup(self, token: str) -> ApiKeyRecord | None:
        ttl_s = self._settings.server.key_cache_s
        if ttl_s > 0:
            now = time.monotonic()
            with self._lock:
                cached = self._cache.get(token)
            # Expiry is checked on every use, cached or not.
            if cached is not None and cached[0] > now and cached[1].usable():
                return cached[1]
        record = self._key_store().lookup(token)
        if ttl_s > 0 and record is not None:
            with self._lock:
                if len(self._cache) >= MAX_CACHED_KEYS:
                    self._cache.clear()
                self._cache[token] = (now + ttl_s, record)
        return record

    def _key_store(self) -> KeyStore:
        with self._lock:
            if self._store is None:
                from stenod.storage.sql import create_db_engine, migrate

                jobs = self._settings.jobs
                engine = create_db_engine(jobs.database_url, data_dir=jobs.data_dir)
                migrate(engine)
                self._store = KeyStore(engine)
            return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.engine.dispose()
