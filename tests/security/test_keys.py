"""``stenod keys`` and per-key policy: keys stored hashed in the jobs database, requests per minute,
audio minutes per hour and concurrency enforced with 429 + Retry-After + X-RateLimit-*, limits
shared between API servers through Redis, revocation and expiry, admin keys, and /metrics and the
OpenAPI docs behind a key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner, Result

from stenod.api.ratelimit import RateLimits
from stenod.cli.main import app as cli
from stenod.errors import RateLimitedError
from stenod.storage.key_store import KeyPolicy, KeyStore
from stenod.storage.sql import create_db_engine, migrate
from tests.conftest import JFK
from tests.security.inprocess import assert_error, make_app, request, upload

KEY_LIFETIME_S = 4.0
"""Long enough for the requests before expiry to finish on a busy 2-core machine."""
REDIS_URL = "redis://127.0.0.1:6379/0"  # keys are prefixed and per-test unique


def store_in(data_dir: Path) -> KeyStore:
    engine = create_db_engine("", data_dir=data_dir)
    migrate(engine)
    return KeyStore(engine)


def keyed_app(cache_dir: Path, data_dir: Path, **server: object):  # type: ignore[no-untyped-def]
    """An API server on the key store of ``data_dir``, with the default key cache setting."""
    return make_app(cache_dir, server={"key_store": True, **server}, jobs={"enabled": False, "data_dir": data_dir})


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def stenod(*args: str, data_dir: Path) -> Result:
    """``stenod keys ARGS`` run in this process (the real command; a new interpreter per call took
    ~10 s each on a loaded machine and adds nothing the command itself does not)."""
    return CliRunner().invoke(cli, ["keys", *args], env={"STENOD_JOBS__DATA_DIR": str(data_dir)})


def test_keys_command_runs_as_a_program(tmp_path: Path) -> None:
    """Once through a real ``python -m stenod``: the entry point and its settings from the environment."""
    env = {**os.environ, "STENOD_JOBS__DATA_DIR": str(tmp_path)}
    run = subprocess.run([sys.executable, "-m", "stenod", "keys", "create", "prog", "--json"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert store_in(tmp_path).lookup(json.loads(run.stdout)["key"]) is not None


def test_keys_cli_creates_lists_and_revokes_storing_only_a_hash(tmp_path: Path) -> None:
    created = stenod("create", "ci", "--rpm", "60", "--audio-minutes-per-hour", "120", "--concurrency", "2",
                     "--expires-in", "30d", "--json", data_dir=tmp_path)
    assert created.exit_code == 0, created.output
    key = json.loads(created.stdout)
    secret = key.pop("key")
    assert secret.startswith("sk-stenod-key_") and key["state"] == "active" and key["max_concurrency"] == 2
    assert stenod("create", "ci", data_dir=tmp_path).exit_code == 1  # names are unique

    listed = [json.loads(line) for line in stenod("list", "--json", data_dir=tmp_path).stdout.splitlines()]
    assert [k["name"] for k in listed] == ["ci"] and "key" not in listed[0]
    with create_db_engine("", data_dir=tmp_path).connect() as conn:
        dump = json.dumps([list(r) for r in conn.execute(sa.text("SELECT * FROM api_keys")).all()])
    assert secret not in dump and secret.split(".", 1)[1] not in dump  # only the hash is stored

    assert store_in(tmp_path).lookup(secret) is not None
    revoked = stenod("revoke", "ci", data_dir=tmp_path)
    assert revoked.exit_code == 0 and key["id"] in revoked.stdout
    assert store_in(tmp_path).lookup(secret) is None
    assert "revoked" in stenod("list", data_dir=tmp_path).stdout
    assert stenod("revoke", "nope", data_dir=tmp_path).exit_code == 1


def test_key_store_keys_authenticate_and_expire(cache_dir: Path, tmp_path: Path) -> None:
    store = store_in(tmp_path)
    _, good = store.create("good")
    _, expired = store.create("old", expires_at=time.time() - 1)
    _, revoked = store.create("gone")
    store.revoke("gone")
    app = keyed_app(cache_dir, tmp_path)
    for headers in ({}, bearer(expired), bearer(revoked), bearer(good + "x"), bearer("sk-stenod-" + "a" * 500)):
        response = request(app, "GET", "/v1/models", headers=headers)
        assert_error(response, 401, "invalid_api_key")
        assert response.headers["www-authenticate"] == 'Bearer realm="stenod"'
    assert request(app, "GET", "/v1/models", headers=bearer(good)).status_code == 200


def assert_refused(response: httpx.Response) -> None:
    assert_error(response, 401, "invalid_api_key")
    assert response.headers["www-authenticate"] == 'Bearer realm="stenod"'


def test_revoked_key_is_refused_on_every_server_from_the_next_request(cache_dir: Path, tmp_path: Path) -> None:
    """Issue 16: lookups were cached for 10 s, so a revoked key kept working. Two API servers on
    one database, default settings: ``stenod keys revoke`` takes effect on both at once."""
    store = store_in(tmp_path)
    _, secret = store.create("leaked")
    _, kept = store.create("kept")
    servers = [keyed_app(cache_dir, tmp_path), keyed_app(cache_dir, tmp_path)]
    for app_ in servers:
        assert request(app_, "GET", "/v1/models", headers=bearer(secret)).status_code == 200
    revoked = stenod("revoke", "leaked", data_dir=tmp_path)
    assert revoked.exit_code == 0, revoked.output
    for app_ in servers:
        assert_refused(request(app_, "GET", "/v1/models", headers=bearer(secret)))
        assert_refused(upload(app_, JFK.read_bytes(), filename="jfk.flac", headers=bearer(secret), model="whisper-1"))
        assert request(app_, "GET", "/v1/models", headers=bearer(kept)).status_code == 200  # others unaffected
    # A key made after the servers started works at once (unknown keys are not remembered).
    made = json.loads(stenod("create", "new", "--json", data_dir=tmp_path).stdout)["key"]
    assert all(request(a, "GET", "/v1/models", headers=bearer(made)).status_code == 200 for a in servers)


def test_key_expires_on_every_server_when_its_time_comes(cache_dir: Path, tmp_path: Path) -> None:
    expires_at = time.time() + KEY_LIFETIME_S
    _, secret = store_in(tmp_path).create("short", expires_at=expires_at)
    servers = [keyed_app(cache_dir, tmp_path), keyed_app(cache_dir, tmp_path)]
    for app_ in servers:
        assert request(app_, "GET", "/v1/models", headers=bearer(secret)).status_code == 200
    while time.time() <= expires_at:  # wait for the clock, not for the server
        time.sleep(0.05)
    for app_ in servers:
        assert_refused(request(app_, "GET", "/v1/models", headers=bearer(secret)))


def test_key_cache_bounds_revocation_when_enabled(cache_dir: Path, tmp_path: Path) -> None:
    """With ``key_cache_s`` > 0 a server remembers a valid key: revocation reaches it only once its
    entry is older than that (the documented bound), while a server that never cached it refuses
    at once. Expiry is checked on every use, cached or not."""
    store = store_in(tmp_path)
    _, secret = store.create("cached")
    expires_at = time.time() + KEY_LIFETIME_S
    _, short = store.create("short", expires_at=expires_at)
    caching = keyed_app(cache_dir, tmp_path, key_cache_s=3600)
    fresh = keyed_app(cache_dir, tmp_path, key_cache_s=3600)
    for key in (secret, short):
        assert request(caching, "GET", "/v1/models", headers=bearer(key)).status_code == 200
    store.revoke("cached")
    assert request(caching, "GET", "/v1/models", headers=bearer(secret)).status_code == 200  # within the bound
    assert_refused(request(fresh, "GET", "/v1/models", headers=bearer(secret)))
    while time.time() <= expires_at:
        time.sleep(0.05)
    assert_refused(request(caching, "GET", "/v1/models", headers=bearer(short)))


def test_requests_per_minute_gets_429_with_rate_limit_headers(cache_dir: Path, tmp_path: Path) -> None:
    store = store_in(tmp_path)
    _, secret = store.create("rpm", policy=KeyPolicy(requests_per_minute=2))
    _, other = store.create("other", policy=KeyPolicy(requests_per_minute=2))
    app = keyed_app(cache_dir, tmp_path)
    first = request(app, "GET", "/v1/models", headers=bearer(secret))
    assert first.status_code == 200
    assert first.headers["X-RateLimit-Limit"] == "2" and first.headers["X-RateLimit-Remaining"] == "1"
    assert request(app, "GET", "/v1/models", headers=bearer(secret)).headers["X-RateLimit-Remaining"] == "0"
    refused = request(app, "GET", "/v1/models", headers=bearer(secret))
    error = assert_error(refused, 429, "rate_limited")
    assert error["type"] == "rate_limit_error" and "2 requests per minute" in error["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["X-RateLimit-Remaining"] == "0" and 1 <= int(refused.headers["X-RateLimit-Reset"]) <= 60
    assert request(app, "GET", "/v1/models", headers=bearer(other)).status_code == 200  # per key


def test_audio_minutes_per_hour(cache_dir: Path, tmp_path: Path) -> None:
    store = store_in(tmp_path)
    _, secret = store.create("apm", policy=KeyPolicy(audio_minutes_per_hour=0.3))  # 18 s; jfk.flac is 11 s
    app = keyed_app(cache_dir, tmp_path)
    ok = upload(app, JFK.read_bytes(), filename="jfk.flac", headers=bearer(secret), model="whisper-1")
    assert ok.status_code == 200, ok.text
    refused = upload(app, JFK.read_bytes(), filename="jfk.flac", headers=bearer(secret), model="whisper-1")
    error = assert_error(refused, 429, "rate_limited")
    assert "audio minutes per hour" in error["message"] and int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["X-RateLimit-Limit"] == "18"


@pytest.mark.parametrize("storage", ["memory://", REDIS_URL])
def test_concurrency_cap(storage: str, redis_available: None) -> None:
    limits = RateLimits(storage)
    key_id = f"key_{uuid.uuid4().hex[:12]}"
    policy = KeyPolicy(max_concurrency=2)
    with limits.concurrent(key_id, policy), limits.concurrent(key_id, policy):
        with pytest.raises(RateLimitedError) as refused, limits.concurrent(key_id, policy):
            pass
        assert refused.value.retry_after_s >= 1
    with limits.concurrent(key_id, policy), limits.concurrent(key_id, policy):  # slots given back
        pass


def test_limits_hold_across_api_servers_through_redis(cache_dir: Path, tmp_path: Path, redis_available: None) -> None:
    store = store_in(tmp_path)
    _, secret = store.create(f"fleet-{uuid.uuid4().hex[:8]}", policy=KeyPolicy(requests_per_minute=3))
    server_a = keyed_app(cache_dir, tmp_path, rate_limit_storage_url=REDIS_URL)
    server_b = keyed_app(cache_dir, tmp_path, rate_limit_storage_url=REDIS_URL)
    statuses = [request(app, "GET", "/v1/models", headers=bearer(secret)).status_code
                for app in (server_a, server_b, server_a, server_b)]
    assert statuses == [200, 200, 200, 429]
    # Without Redis each server counts alone: the same pattern would have passed four times.
    alone = [keyed_app(cache_dir, tmp_path), keyed_app(cache_dir, tmp_path)]
    _, secret2 = store.create(f"local-{uuid.uuid4().hex[:8]}", policy=KeyPolicy(requests_per_minute=3))
    assert [request(app, "GET", "/v1/models", headers=bearer(secret2)).status_code
            for app in (*alone, *alone)] == [200, 200, 200, 200]


def test_admin_keys_from_the_store(cache_dir: Path, tmp_path: Path) -> None:
    store = store_in(tmp_path)
    _, admin = store.create("root", admin=True)
    _, user = store.create("user")
    app = keyed_app(cache_dir, tmp_path)
    assert_error(request(app, "POST", "/load", data={"model": "tiny.en"}, headers=bearer(user)), 403)
    assert request(app, "POST", "/load", data={"model": "tiny.en"}, headers=bearer(admin)).status_code == 200


def test_metrics_and_docs_can_require_a_key(cache_dir: Path, tmp_path: Path) -> None:
    open_app = make_app(cache_dir, server={"api_keys": ["k1"]})
    assert request(open_app, "GET", "/metrics").status_code == 200  # default: readable without a key
    app = make_app(cache_dir, server={"api_keys": ["k1"], "protect_metrics": True, "protect_docs": True})
    for path in ("/metrics", "/openapi.json", "/docs", "/redoc", "/docs-assets/swagger-ui.css"):
        response = request(app, "GET", path)
        assert_error(response, 401, "invalid_api_key")
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert request(app, "GET", path, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert request(app, "GET", path, headers=bearer("k1")).status_code == 200, path
    assert request(app, "GET", "/health").status_code == 200  # load balancers still see health
