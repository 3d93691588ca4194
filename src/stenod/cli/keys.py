"""``stenod keys create | list | revoke``: API keys with per-key policy, stored hashed in the jobs
database (``[jobs] database_url``; SQLite in ``[jobs] data_dir`` by default), where every API
server pointed at that database accepts them (``[server] key_store = true``)."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from stenod.cli.common import ConfigOption, build_settings, fail
from stenod.settings import Settings
from stenod.storage.key_store import ApiKeyRecord, KeyExistsError, KeyPolicy, KeyStore

keys_app = typer.Typer(
    help="Create, list and revoke API keys (stored hashed in the jobs database).",
    no_args_is_help=True,
)

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration_s(text: str) -> float:
    """``90s``, ``15m``, ``12h``, ``30d``, ``2w`` -> seconds."""
    match = _DURATION.match(text.strip())
    if not match:
        raise typer.BadParameter(f"{text!r}: use a number with s, m, h, d or w, e.g. 30d")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def open_key_store(settings: Settings) -> KeyStore:
    from stenod.storage.sql import create_db_engine, migrate

    engine = create_db_engine(settings.jobs.database_url, data_dir=settings.jobs.data_dir)
    migrate(engine)
    return KeyStore(engine)


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _as_dict(record: ApiKeyRecord) -> dict[str, object]:
    state = "revoked" if record.revoked_at else ("expired" if not record.usable() else "active")
    return {
        "id": record.id, "name": record.name, "tenant_id": record.tenant_id, "admin": record.admin, "state": state,
        "created_at": _iso(record.created_at), "expires_at": _iso(record.expires_at),
        "revoked_at": _iso(record.revoked_at),
        "requests_per_minute": record.policy.requests_per_minute,
        "audio_minutes_per_hour": record.policy.audio_minutes_per_hour,
        "max_concurrency": record.policy.max_concurrency,
    }


@keys_app.command("create")
def create_command(
    name: Annotated[str, typer.Argument(help="A name to recognize the key by (unique).")],
    admin: Annotated[bool, typer.Option("--admin", help="May also use admin routes (POST /load).")] = False,
    expires_in: Annotated[str | None, typer.Option("--expires-in", help="Lifetime, e.g. 30d, 12h.")] = None,
    rpm: Annotated[int | None, typer.Option("--rpm", min=1, help="Requests per minute.")] = None,
    audio_minutes_per_hour: Annotated[float | None, typer.Option("--audio-minutes-per-hour", min=0.1,
                                                                 help="Minutes of audio per hour.")] = None,
    concurrency: Annotated[int | None, typer.Option("--concurrency", min=1, help="Requests at once.")] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="Tenant id (jobs are per tenant); default: the key id.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (with the key) instead of text.")] = False,
    config: Annotated[Path | None, ConfigOption] = None,
) -> None:
    """Create a key and print it once (it is stored only as a hash)."""
    if not name.strip() or len(name) > 128:
        raise typer.BadParameter("name must be 1-128 characters")
    expires_at = time.time() + parse_duration_s(expires_in) if expires_in else None
    store = open_key_store(build_settings(config))
    try:
        record, secret = store.create(
            name.strip(), admin=admin, expires_at=expires_at, tenant_id=tenant,
            policy=KeyPolicy(requests_per_minute=rpm, audio_minutes_per_hour=audio_minutes_per_hour,
                             max_concurrency=concurrency),
        )
    except KeyExistsError as exc:
        fail(str(exc))
    finally:
        store.engine.dispose()
    if as_json:
        typer.echo(json.dumps({**_as_dict(record), "key": secret}))
        return
    typer.echo(secret)
    typer.echo(f"created {record.id} ({record.name}); this key is shown only now", err=True)


@keys_app.command("list")
def list_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
    config: Annotated[Path | None, ConfigOption] = None,
) -> None:
    """List keys (never their secrets)."""
    store = open_key_store(build_settings(config))
    try:
        records = store.list()
    finally:
        store.engine.dispose()
    for record in records:
        data = _as_dict(record)
        if as_json:
            typer.echo(json.dumps(data))
            continue
        limits = ", ".join(f"{k}={v}" for k in ("requests_per_minute", "audio_minutes_per_hour", "max_concurrency")
                           if (v := data[k]) is not None) or "no limits"
        typer.echo(f"{record.id}  {record.name:<20} {data['state']:<8} {'admin' if record.admin else 'user':<5} "
                   f"expires {data['expires_at'] or 'never'}  {limits}")


@keys_app.command("revoke")
def revoke_command(
    key: Annotated[str, typer.Argument(help="Key id (key_...) or name.")],
    config: Annotated[Path | None, ConfigOption] = None,
) -> None:
    """Revoke a key: every server refuses it from its next request (within ``[server] key_cache_s``
    seconds when that cache is on)."""
    store = open_key_store(build_settings(config))
    try:
        record = store.revoke(key)
    finally:
        store.engine.dispose()
    if record is None:
        fail(f"no key with id or name {key!r}")
    typer.echo(f"revoked {record.id} ({record.name})")
